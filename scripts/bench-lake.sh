#!/usr/bin/env bash
# The lake, SQL and search benchmark (issue 5): N CloudTrail-like events, fixed seed, a fresh
# data directory, this machine.
#   scripts/bench-lake.sh [EVENTS]        (default 10,000,000)
# BENCH_BIN=path measures an already built binary (otherwise a release build is made first);
# BENCH_DIR (default ./bench-data) holds the run directory; BENCH_KEEP=1 keeps the run's data
# (log, lake, search, NDJSON; ~25 GB at 10M events), otherwise only its results are kept.
#
# Phases (each prints JSON, all collected in RUN/results.json):
#  1. `tidewatch gen` writes the NDJSON to a file: its size is the raw NDJSON size.
#  2. `tidewatch bench ingest` sends the very same events (same generator, seed and rate; the
#     byte counts are checked to be equal) over HTTP, then waits until detection, the lake and
#     the search indexer have drained, and until every row is in a Parquet file.
#  3. One compaction pass over all hours (`min_age_secs=0`), timed; a second pass deletes the
#     superseded inputs (grace 0), so the lake size is that of live files only.
#  4. The six queries of bench/lake_queries.json over HTTP (median of 5), then DuckDB over the
#     same Parquet files (bench/duckdb_lake_queries.py, 2 threads); row counts must agree.
#     `EXPLAIN ANALYZE` of each query is saved in RUN/explain-N.txt.
#  5. `tidewatch bench search` (100 runs each): one eventID (exactly 1 event), one S3 object
#     key (a handful of events; the count is checked against grep of the NDJSON), and two
#     common terms.
#
# The generator's rate is chosen so the events span two days of event time (48 hour
# partitions at 10M events, ~58 events/s), like a busy account's CloudTrail.
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-10000000}"
[[ "$events" =~ ^[0-9]+$ && "$events" -gt 0 ]] || { echo "EVENTS must be a positive integer, got '$events'" >&2; exit 2; }
seed=42
rate=$(( (events + 172799) / 172800 ))
port="${BENCH_PORT:-7172}"
server="http://127.0.0.1:$port"
python="${TIDEWATCH_TEST_PYTHON:-$HOME/.cache/tidewatch/test-venv/bin/python}"
"$python" -c 'import duckdb' || { echo "$python cannot import duckdb (set TIDEWATCH_TEST_PYTHON)" >&2; exit 2; }

if [ -z "${BENCH_BIN:-}" ]; then
  cargo build --release -p tidewatch
fi
bin="${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/tidewatch}"
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 2; }
work="${BENCH_DIR:-$PWD/bench-data}/lake-$(date +%s)"
mkdir -p "$work"
results="$work/results.json"
ndjson="$work/events.ndjson"

# No background maintenance: the benchmark times one compaction pass itself. Grace 0: the
# second pass deletes the superseded inputs. Bloom filters on the ids, IPs and users.
cat > "$work/tidewatch.toml" <<TOML
[query]
max_result_rows = 1000000
timeout_ms = 600000

[lake.compaction]
interval_secs = 0
min_age_secs = 0
grace_secs = 0

[streams.lake]
bloom_filter_columns = ["eventID", "sourceIPAddress", "userIdentity.userName"]
TOML

server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "$work/data" "$ndjson"; fi
}
trap cleanup EXIT

# One JSON object per phase into results.json (and on the terminal).
record() { # NAME JSON
  jq -c --arg phase "$1" '{phase: $phase, result: .}' <<<"$2" | tee -a "$results"
}
# A Prometheus counter/gauge of /metrics, summed over its labels.
metric() {
  curl -sf "$server/metrics" | awk -v name="$1" '$1 == name || index($1, name "{") == 1 { s += $NF } END { printf "%.0f\n", s }'
}
wait_for() { # DESCRIPTION SECONDS COMMAND...
  local what="$1" limit="$2"; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out after ${limit}s waiting for $what" >&2; exit 1; }
    sleep 0.5
  done
}

echo "== generate $events events (seed $seed, $rate events/s of event time) =="
gen_start=$(date +%s.%N)
"$bin" gen --kind cloudtrail --count "$events" --seed "$seed" --rate "$rate" --out "$ndjson"
ndjson_bytes=$(stat -c %s "$ndjson")
record gen "$(jq -n --argjson e "$events" --argjson r "$rate" --argjson b "$ndjson_bytes" --argjson s "$(echo "$(date +%s.%N) - $gen_start" | bc)" \
  '{events: $e, rate: $r, ndjson_bytes: $b, seconds: $s}')"

"$bin" serve --config "$work/tidewatch.toml" --data-dir "$work/data" --listen "127.0.0.1:$port" > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
wait_for "the server to answer /healthz" 30 curl -sf "$server/healthz" -o /dev/null
export TIDEWATCH_SERVER="$server"

echo "== ingest =="
ingest=$("$bin" bench ingest --stream cloudtrail --events "$events" --seed "$seed" --rate "$rate")
record ingest "$ingest"
sent_bytes=$(jq .bytes <<<"$ingest")
[ "$sent_bytes" = "$ndjson_bytes" ] || { echo "bench ingest sent $sent_bytes bytes, the NDJSON file has $ndjson_bytes: not the same events" >&2; exit 1; }
[ "$(jq .events <<<"$ingest")" = "$events" ] || { echo "the server accepted $(jq .events <<<"$ingest") of $events events" >&2; exit 1; }
# Lag 0 means read, not yet flushed: wait until every row is in a Parquet file (the last
# buffers flush by age) and the search indexer has committed every event.
lake_done() { [ "$(metric tidewatch_lake_rows_written_total)" -ge "$events" ]; }
search_done() { [ "$(metric tidewatch_search_indexed_total)" -ge "$events" ]; }
wait_for "every row in Parquet" 120 lake_done
wait_for "search to index every event" 120 search_done
sleep 2 # the indexer commits about every second
grep VmHWM "/proc/$server_pid/status" | tee -a "$work/server-rss.txt"
lake_dir="$work/data/lake"
parquet_bytes() { find "$lake_dir" -name '*.parquet' -printf '%s\n' | awk '{s += $1} END {printf "%.0f", s}'; }
parquet_files() { find "$lake_dir" -name '*.parquet' | wc -l; }
before_bytes=$(parquet_bytes); before_files=$(parquet_files)

echo "== compaction of every hour =="
compact_start=$(date +%s.%N)
compaction=$(curl -sf -X POST "$server/api/v1/lake/compact?min_age_secs=0") || { echo "compaction request failed" >&2; exit 1; }
compact_secs=$(echo "$(date +%s.%N) - $compact_start" | bc)
with_superseded_bytes=$(parquet_bytes)
# Grace 0: this pass deletes the inputs superseded by the first one.
cleanup_pass=$(curl -sf -X POST "$server/api/v1/lake/compact?min_age_secs=0") || { echo "second compaction request failed" >&2; exit 1; }
live_bytes=$(parquet_bytes); live_files=$(parquet_files)
lake_du=$(du -sb "$lake_dir" | cut -f1)
record compaction "$(jq -n --argjson first "$compaction" --argjson second "$cleanup_pass" --argjson wall "$compact_secs" \
  --argjson bf "$before_files" --argjson bb "$before_bytes" --argjson ws "$with_superseded_bytes" \
  --argjson lf "$live_files" --argjson lb "$live_bytes" --argjson du "$lake_du" --argjson nd "$ndjson_bytes" \
  '{pass: $first, wall_seconds: $wall, cleanup_pass: $second,
    before: {files: $bf, parquet_bytes: $bb}, after_pass_with_superseded_bytes: $ws,
    live: {files: $lf, parquet_bytes: $lb, lake_dir_bytes: $du},
    ndjson_bytes: $nd, ndjson_per_lake_byte: ($nd / $du)}')"

echo "== SQL: Tidewatch over HTTP, median of 5 =="
mapfile -t statements < <(jq -r '.[].sql' bench/lake_queries.json)
tidewatch_sql=$("$bin" bench queries --runs 5 "${statements[@]}")
record tidewatch_sql "$tidewatch_sql"
for i in "${!statements[@]}"; do
  "$bin" query --format json "EXPLAIN ANALYZE ${statements[$i]}" 2>/dev/null | jq -r .plan > "$work/explain-$((i + 1)).txt"
done

echo "== SQL: DuckDB over the same Parquet files, 2 threads, median of 5 =="
duckdb_sql=$("$python" bench/duckdb_lake_queries.py "$lake_dir" 5)
record duckdb_sql "$duckdb_sql"
comparison=$(jq -n --argjson t "$tidewatch_sql" --argjson d "$duckdb_sql" '
  [range(0; $t | length) as $i | {
    query: $d.queries[$i].query,
    tidewatch_ms: $t[$i].median_ms, duckdb_ms: $d.queries[$i].median_ms,
    ratio: ($t[$i].median_ms / $d.queries[$i].median_ms),
    within_1_5x: ($t[$i].median_ms <= 1.5 * $d.queries[$i].median_ms),
    rows: $t[$i].rows, duckdb_rows: $d.queries[$i].rows }]')
record sql_comparison "$comparison"
if jq -e 'any(.[]; .rows != .duckdb_rows)' <<<"$comparison" > /dev/null; then
  echo "Tidewatch and DuckDB disagree on the number of result rows (above)" >&2; exit 1
fi

echo "== search: rare and common terms, 100 runs each =="
# The rare terms come from the event in the middle of the NDJSON: its eventID (unique) and an
# S3 object key (requestParameters.key; ~40 events at 10M) of the first S3 event from there.
middle=$(( (events + 1) / 2 ))
event_id=$(awk -v n="$middle" 'NR == n { print; exit }' "$ndjson" | jq -r .eventID)
s3_key=$(awk -v n="$middle" 'NR >= n && /"eventSource":"s3.amazonaws.com"/ { print; exit }' "$ndjson" | jq -r .requestParameters.key)
key_events=$(grep -c -F "\"key\":\"$s3_key\"" "$ndjson")
search=$("$bin" bench search --stream cloudtrail --runs 100 \
  --query "\"$event_id\"" --query "\"$s3_key\"" --query AccessDenied --query GetObject)
record search "$(jq --arg id "$event_id" --arg key "$s3_key" --argjson k "$key_events" \
  '{queries: ., rare_terms: {eventID: $id, s3_key: $key, s3_key_events_in_ndjson: $k}}' <<<"$search")"
[ "$(jq '.[0].total' <<<"$search")" = 1 ] || { echo "search for eventID $event_id found $(jq '.[0].total' <<<"$search") events, expected 1" >&2; exit 1; }
[ "$(jq '.[1].total' <<<"$search")" = "$key_events" ] || { echo "search for key $s3_key found $(jq '.[1].total' <<<"$search") events, the NDJSON has $key_events" >&2; exit 1; }

grep VmHWM "/proc/$server_pid/status" | tee -a "$work/server-rss.txt"
du -sb "$work/data/log" "$work/data/search" | tee -a "$work/disk.txt"
echo "results in $results (explain plans: $work/explain-*.txt)"
