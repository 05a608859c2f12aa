#!/usr/bin/env python3
"""Times the six lake benchmark queries (`bench/lake_queries.json`, the same file
`scripts/bench-lake.sh` gives `tidewatch bench queries`) with DuckDB over the Parquet files
Tidewatch wrote, in the same run, 2 threads. A query's `duckdb` text replaces its `sql` where
the dialects differ (the percentile). Prints JSON: rows, first and median time per query, and
each query's result rows so the two engines' answers can be compared.

    python bench/duckdb_lake_queries.py LAKE_DIR [RUNS] [QUERIES_JSON]
"""
import json, os, statistics, sys, time

import duckdb

if len(sys.argv) < 2:
    sys.exit(__doc__)
lake = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
queries_file = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(__file__), "lake_queries.json")
files = f"{lake}/cloudtrail/**/*.parquet"
con = duckdb.connect()
con.execute("SET threads = 2")
file_count = con.execute(f"SELECT count(*) FROM glob('{files}')").fetchone()[0]
if file_count == 0:
    sys.exit(f"no Parquet files under {files}")
# A view named like the Tidewatch table, so both engines run the same SQL text.
con.execute(
    f"CREATE VIEW cloudtrail AS SELECT * FROM read_parquet('{files}', hive_partitioning = true, union_by_name = true)"
)
out = []
for query in json.load(open(queries_file)):
    sql = query.get("duckdb", query["sql"])
    times = []
    for _ in range(max(runs, 1)):
        started = time.perf_counter()
        rows = con.execute(sql).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    out.append({
        "query": query["name"],
        "sql": sql,
        "rows": len(rows),
        "first_ms": round(times[0], 1),
        "median_ms": round(statistics.median(times), 1),
        "result_head": [[v if isinstance(v, (int, float, str, type(None))) else str(v) for v in row] for row in rows[:3]],
    })
print(json.dumps({"duckdb": duckdb.__version__, "threads": 2, "files": file_count, "queries": out}, indent=2))
