#!/usr/bin/env bash
# The benchmark: release build, fixed seed, a fresh data directory, this machine.
#   scripts/bench.sh [EVENTS]        (default 2,000,000)
# Prints JSON per phase and appends them to bench-results.jsonl. Figures go to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-2000000}"
# BENCH_BIN=path measures an already built binary instead of building one.
if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release -p tidewatch
fi
bin="${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/tidewatch}"
work="${BENCH_DIR:-$PWD/bench-data}/run-$(date +%s)"
mkdir -p "$work"
cat > "$work/tidewatch.toml" <<TOML
[query]
max_result_rows = 1000000
timeout_ms = 600000
TOML
"$bin" serve --config "$work/tidewatch.toml" --data-dir "$work/data" --listen 127.0.0.1:7171 > "$work/server.out" 2> "$work/server.err" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf localhost:7171/healthz >/dev/null && break; sleep 0.1; done
# Resident memory of the server every half second, split into anonymous (heap) and file-backed
# (memory-mapped index and Parquet pages, which the kernel can reclaim), with the phase markers.
rss="$work/rss.tsv"
echo "## seconds rss_kb anon_kb file_kb" > "$rss"
( while [ -r /proc/$server/status ]; do
    echo "$(date +%s.%N | cut -c1-14) $(awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s ", $2}' /proc/$server/status)" >> "$rss"
    sleep 0.5
  done ) &
phase() { echo "# $1" >> "$rss"; echo "== $1 =="; }
export TIDEWATCH_SERVER=http://127.0.0.1:7171

# Reference rules R01-R10, W01, W02 in the native language (see shared/bench/rules_reference.md).
for rule in bench/rules/*.yaml; do
  curl -sf -X POST localhost:7171/api/v1/rules -H 'content-type: application/yaml' --data-binary @"$rule" > /dev/null
done

phase "ingest ($events events, 4 requests in flight, 5000 events each)"
"$bin" bench ingest --stream cloudtrail --events "$events" --seed 42 | tee -a "$work/results.json"
echo "== peak RSS of the server so far =="
grep VmHWM /proc/$server/status
phase "alert latency at 50,000 events/s for 30 s"
"$bin" bench latency --rate 50000 --seconds 30 | tee -a "$work/results.json"
phase "drop-in protocols vs native NDJSON (500 x 600-byte records per request)"
"$bin" bench compat --events 500000 --concurrency 4 --server-pid $server | tee -a "$work/results.json"
phase "sustained 200,000 events/s for 15 s (stream sustained)"
"$bin" bench sustained --stream sustained --rate 200000 --seconds 15 | tee -a "$work/results.json"
phase "SQL"
# Timed on an idle server: every event read by every consumer, and no background work (flushes
# by age, index merges, compaction) for 3 s; otherwise Tidewatch's queries would share the CPUs
# with that work while DuckDB's (below) would not.
idle_since=$(date +%s); last_cpu=0; give_up=$(( idle_since + 600 ))
until [ $(( $(date +%s) - idle_since )) -ge 3 ]; do
  [ "$(date +%s)" -lt "$give_up" ] || { echo "the server did not go idle within 600 s; timing anyway" >&2; break; }
  lag=$(curl -sf localhost:7171/metrics | awk '/^tidewatch_consumer_lag_events/ { s += $NF } END { printf "%.0f", s }')
  cpu=$(awk '{ print $14 + $15 }' /proc/$server/stat)   # user + system, in clock ticks (1/100 s)
  # More than 2 ticks (4 % of a CPU) in the last half second, or lag left: not idle yet.
  if [ "$lag" != 0 ] || [ $(( cpu - last_cpu )) -gt 2 ]; then idle_since=$(date +%s); fi
  last_cpu=$cpu
  sleep 0.5
done
"$bin" bench queries --runs 5 \
  "SELECT eventName, count(*) AS n FROM cloudtrail GROUP BY eventName ORDER BY n DESC" \
  "SELECT sourceIPAddress, count(*) AS n FROM cloudtrail WHERE errorCode = 'AccessDenied' AND year = 2024 AND month = 3 AND day = 1 AND hour = 0 GROUP BY sourceIPAddress ORDER BY n DESC LIMIT 10" \
  "SELECT count(DISTINCT userIdentity.userName) AS users, awsRegion FROM cloudtrail GROUP BY awsRegion" \
  "SELECT count(*) FROM cloudtrail WHERE lower(userAgent) LIKE '%kali%' OR errorMessage LIKE '%iam:AttachUserPolicy%'" \
  | tee -a "$work/results.json"
grep VmHWM /proc/$server/status
# DuckDB right after, on the same files, with the server up and idle (stopping it first would
# flush new files into the lake).
echo "== DuckDB over the same Parquet files =="
venv="${TIDEWATCH_TEST_VENV:-$HOME/.cache/tidewatch/test-venv}"
"$venv/bin/python" -c 'import duckdb' 2>/dev/null || { python3 -m venv "$venv"; "$venv/bin/pip" install --quiet 'duckdb>=1.1'; }
"$venv/bin/python" bench/duckdb_queries.py "$work/data/lake" 5 | tee -a "$work/results.json"
phase "stop"
kill -TERM $server; wait $server || true
echo "== peak resident memory by phase (MB: total, anonymous, file-backed) =="
awk '/^# / {sub(/^# /, ""); name=$0; order[++n]=name; next}
     n>0 && NF>=4 {if ($2>t[name]) t[name]=$2; if ($3>a[name]) a[name]=$3; if ($4>f[name]) f[name]=$4}
     END {for (i=1;i<=n;i++) printf "%-70s %6d %6d %6d\n", order[i], t[order[i]]/1024, a[order[i]]/1024, f[order[i]]/1024}' "$rss"
du -sh "$work/data/log" "$work/data/lake"
echo "results in $work/results.json"
