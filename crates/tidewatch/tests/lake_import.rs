//! `tidewatch lake import`: NDJSON (plain, gzip, a CloudTrail `{"Records": [...]}` file) and
//! a Parquet file written by DuckDB go into a stream's lake next to events ingested through
//! the log. SQL and DuckDB see every row exactly once, a second import adds nothing, a refused
//! record fails the command with its file and line (and lands in the dead-letter queue), a
//! restart keeps the imported files, and compaction and delete-by-query handle them.

mod common;
#[path = "common/python.rs"]
mod python;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use common::{Server, binary, generate, write};
use serde_json::{Value, json};

/// Small flushes and import chunks (300 rows), so that every hour gets several files to merge;
/// no background compaction, so the test decides when it runs.
const CONFIG: &str = r#"
[lake]
flush_max_rows = 300
flush_max_age_ms = 200

[lake.compaction]
interval_secs = 0
grace_secs = 0
"#;

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).expect("gzip");
    encoder.finish().expect("gzip")
}

fn import(server: &Server, source: &Path) -> Output {
    Command::new(binary())
        .args(["lake", "import", "--stream", "ct", "--server", &server.url])
        .arg(source)
        .output()
        .expect("run tidewatch lake import")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_files_are_queryable_once_and_survive_restart_and_compaction() {
    let python = python::require(&["duckdb"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write(dir.path(), "tidewatch.toml", CONFIG);
    let source = dir.path().join("history");

    // NDJSON with one broken line (line 101), gzip NDJSON in a subdirectory, a gzip
    // CloudTrail file, and Parquet written by DuckDB from a fourth set of events.
    let ndjson = generate("cloudtrail", 4000, 1, 1);
    let mut lines: Vec<&str> = ndjson.lines().collect();
    lines.insert(100, "{\"eventName\": not json");
    write(&source, "a.ndjson", &(lines.join("\n") + "\n"));
    let gz = generate("cloudtrail", 1500, 2, 1);
    std::fs::create_dir_all(source.join("2024/03")).unwrap();
    std::fs::write(source.join("2024/03/b.ndjson.gz"), gzip(&gz)).unwrap();
    let records: Vec<Value> = generate("cloudtrail", 500, 3, 1)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cloudtrail = json!({ "Records": records }).to_string();
    std::fs::write(source.join("c.json.gz"), gzip(&cloudtrail)).unwrap();
    let for_parquet = write(
        dir.path(),
        "for-parquet.ndjson",
        &generate("cloudtrail", 800, 4, 1),
    );
    let parquet = source.join("d.parquet");
    let written = python::run(
        &python,
        dir.path(),
        "to_parquet.py",
        TO_PARQUET,
        &[
            for_parquet.display().to_string(),
            parquet.display().to_string(),
        ],
        &[],
    )
    .await;
    assert_eq!(written["rows"], 800, "{written}");
    assert!(
        written["struct_columns"].as_u64().unwrap_or(0) > 0,
        "DuckDB wrote nested structs: {written}"
    );

    let server = Server::start(&data, Some(&config), &[]);
    // Live events of the same stream, through the log.
    let live = generate("cloudtrail", 600, 5, 1);
    assert_eq!(server.send("ct", live).await.0, 200);

    let first = import(&server, &source);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(
        first.status.code(),
        Some(2),
        "a rejected line fails: {stderr}"
    );
    assert!(
        stderr.contains("a.ndjson:101: invalid JSON"),
        "the rejected line is named: {stderr}"
    );
    assert!(
        stderr.contains("4 file(s), 6800 row(s); 0 already imported; 1 record(s) rejected"),
        "{stderr}"
    );

    let total = 4000 + 1500 + 500 + 800 + 600;
    assert_eq!(server.sql_count("SELECT count(*) FROM ct").await, total);
    assert_exactly_once(&server, total).await;
    let imports = server
        .sql("SELECT _partition, count(*) AS n FROM ct WHERE _partition >= 1000000000 GROUP BY _partition ORDER BY _partition")
        .await;
    let counts: Vec<u64> = imports.iter().map(|r| r["n"].as_u64().unwrap()).collect();
    let mut sorted = counts.clone();
    sorted.sort();
    assert_eq!(sorted, [500, 800, 1500, 4000], "{imports:?}");
    // The Parquet file's structs are flattened into the lake's dotted columns.
    let parquet_partition = imports
        .iter()
        .find(|r| r["n"] == 800)
        .map(|r| r["_partition"].as_u64().unwrap())
        .unwrap();
    let (status, schema) = server.get("/api/v1/streams/ct/schema").await;
    assert_eq!(status, 200, "{schema}");
    let columns: Vec<&str> = schema["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for column in [
        "eventName",
        "eventTime",
        "userIdentity.type",
        "sourceIPAddress",
    ] {
        assert!(columns.contains(&column), "{column} missing: {columns:?}");
    }
    let nested = format!(
        "SELECT count(*) FROM ct WHERE _partition = {parquet_partition} AND \"userIdentity.type\" IS NOT NULL AND _time >= '2024-03-01T00:00:00Z' AND _time < '2024-03-02T00:00:00Z'"
    );
    assert_eq!(server.sql_count(&nested).await, 800);

    // The refused line is in the dead-letter queue with its bytes.
    let (_, dlq) = server.get("/api/v1/dlq?stream=ct").await;
    let letters = dlq["entries"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{dlq}");
    assert_eq!(letters[0]["stage"], "import");
    assert_eq!(letters[0]["line"], 101);
    assert_eq!(letters[0]["raw"], "{\"eventName\": not json");

    // Again: every file is known by its content, nothing is added.
    let second = import(&server, &source);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("0 file(s), 0 row(s); 4 already imported; 0 record(s) rejected"),
        "{stderr}"
    );
    assert_eq!(server.sql_count("SELECT count(*) FROM ct").await, total);

    // DuckDB reads the lake as it is (after a graceful stop flushed the live events).
    assert!(server.terminate(), "graceful stop");
    let lake = data.join("lake").display().to_string();
    let duck = python::run(&python, dir.path(), "check.py", CHECK, &[lake], &[]).await;
    assert_eq!(duck["total"], total, "{duck}");
    assert_eq!(duck["distinct"], total, "{duck}");
    assert_eq!(duck["keys"], total, "{duck}");

    // A restart keeps the imported files (the writer cuts only the log's partitions), then
    // compaction merges them without changing what SQL sees.
    let server = Server::start(&data, Some(&config), &[]);
    assert_eq!(server.sql_count("SELECT count(*) FROM ct").await, total);
    let response = server
        .client
        .post(format!("{}/api/v1/lake/compact?min_age_secs=0", server.url))
        .send()
        .await
        .unwrap();
    let report: Value = response.json().await.unwrap();
    assert!(
        report["files_compacted"].as_u64().unwrap() > 4,
        "imported chunks are merged: {report}"
    );
    assert_eq!(server.sql_count("SELECT count(*) FROM ct").await, total);
    assert_exactly_once(&server, total).await;

    // Delete-by-query reaches imported rows.
    let response = server
        .client
        .post(format!("{}/api/v1/streams/ct/delete", server.url))
        .json(
            &json!({ "predicate": format!("_partition = {parquet_partition} AND _offset <= 10") }),
        )
        .send()
        .await
        .unwrap();
    let deleted: Value = response.json().await.unwrap();
    assert_eq!(deleted["rows_deleted"], 10, "{deleted}");
    assert_eq!(
        server.sql_count("SELECT count(*) FROM ct").await,
        total - 10
    );
    assert!(server.terminate());
}

async fn assert_exactly_once(server: &Server, total: u64) {
    assert_eq!(
        server
            .sql_count("SELECT count(DISTINCT eventID) FROM ct")
            .await,
        total
    );
    assert_eq!(
        server
            .sql_count("SELECT count(*) FROM (SELECT DISTINCT _partition, _offset FROM ct)")
            .await,
        total
    );
}

/// NDJSON → Parquet with DuckDB's own type inference (structs, lists, timestamps).
const TO_PARQUET: &str = r#"
import duckdb, json, sys
source, target = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute(f"COPY (SELECT * FROM read_json_auto('{source}')) TO '{target}' (FORMAT parquet)")
rows = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()[0]
types = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{target}')").fetchall()
structs = sum(1 for t in types if str(t[1]).startswith("STRUCT"))
print(json.dumps({"rows": rows, "struct_columns": structs}))
"#;

/// Reads the lake with DuckDB and prints the counts as one JSON line.
const CHECK: &str = r#"
import duckdb, json, sys
lake = sys.argv[1]
con = duckdb.connect()
rel = f"read_parquet('{lake}/ct/**/*.parquet', hive_partitioning = true, union_by_name = true)"
total, distinct = con.execute(f"SELECT count(*), count(DISTINCT eventID) FROM {rel}").fetchone()
keys = con.execute(f"SELECT count(*) FROM (SELECT DISTINCT _partition, _offset FROM {rel})").fetchone()[0]
print(json.dumps({"total": total, "distinct": distinct, "keys": keys}))
"#;
