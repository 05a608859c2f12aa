//! The lake is plain Parquet in Hive-style partitions: DuckDB reads it as it is, with the
//! partition columns and the dotted column names, and finds every event exactly once.

mod common;
#[path = "common/python.rs"]
mod python;

use common::{Server, generate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_reads_the_lake_as_it_is() {
    let python = python::require(&["duckdb"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None, &[]);
    let text = generate("cloudtrail", 12_000, 3, 1);
    let expected_admin = text
        .lines()
        .filter(|l| l.contains("policy/AdministratorAccess"))
        .count();
    assert_eq!(server.send("cloudtrail", text).await.0, 200);
    assert_eq!(
        server.sql_count("SELECT count(*) FROM cloudtrail").await,
        12_000
    );
    assert!(server.terminate(), "graceful stop flushes the lake");

    let lake = data.join("lake").display().to_string();
    let result = python::run(&python, dir.path(), "check.py", CHECK, &[lake], &[]).await;
    assert_eq!(result["total"], 12_000, "{result}");
    assert_eq!(result["distinct"], 12_000, "{result}");
    // 12,000 events at 1 event per simulated second span 4 hours: 4 hourly partitions.
    assert_eq!(result["hours"], 4, "{result}");
    assert_eq!(result["admin"], expected_admin, "{result}");
}

/// Reads the lake with the peer and prints the counts as one JSON line.
const CHECK: &str = r#"
import duckdb, json, sys
lake = sys.argv[1]
con = duckdb.connect()
rel = f"read_parquet('{lake}/cloudtrail/**/*.parquet', hive_partitioning = true, union_by_name = true)"
total, distinct = con.execute(f"SELECT count(*), count(DISTINCT eventID) FROM {rel}").fetchone()
hours = con.execute(f"SELECT count(DISTINCT (year, month, day, hour)) FROM {rel}").fetchone()[0]
admin = con.execute(f"""SELECT count(*) FROM {rel} WHERE "requestParameters.policyArn" LIKE '%AdministratorAccess%'""").fetchone()[0]
print(json.dumps({"total": total, "distinct": distinct, "hours": hours, "admin": admin}))
"#;
