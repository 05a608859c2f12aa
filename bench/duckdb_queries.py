#!/usr/bin/env python3
"""Times the benchmark queries with DuckDB over the Parquet files Tidewatch wrote (same run,
same files), for a side-by-side with `tidewatch bench queries`. Prints JSON.

    python bench/duckdb_queries.py LAKE_DIR [RUNS]
"""
import json, statistics, sys, time

import duckdb

lake, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5
rel = f"read_parquet('{lake}/cloudtrail/**/*.parquet', hive_partitioning = true, union_by_name = true)"
QUERIES = {
    "count by eventName": f"SELECT eventName, count(*) AS n FROM {rel} GROUP BY eventName ORDER BY n DESC",
    "top IPs AccessDenied, one hour": f"SELECT sourceIPAddress, count(*) AS n FROM {rel} WHERE errorCode = 'AccessDenied' AND year = 2024 AND month = 3 AND day = 1 AND hour = 0 GROUP BY sourceIPAddress ORDER BY n DESC LIMIT 10",
    "distinct users per region": f'SELECT count(DISTINCT "userIdentity.userName") AS users, awsRegion FROM {rel} GROUP BY awsRegion',
    "substring search": f"SELECT count(*) FROM {rel} WHERE lower(userAgent) LIKE '%kali%' OR errorMessage LIKE '%iam:AttachUserPolicy%'",
}
con = duckdb.connect()
con.execute("SET threads = 2")
out = []
for name, sql in QUERIES.items():
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        rows = con.execute(sql).fetchall()
        times.append((time.perf_counter() - t) * 1000)
    out.append({"query": name, "rows": len(rows), "first_ms": round(times[0], 1), "median_ms": round(statistics.median(times), 1)})
print(json.dumps(out, indent=2))
