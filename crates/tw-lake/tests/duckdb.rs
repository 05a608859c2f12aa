//! The files as DuckDB sees them with hive partitioning. Needs `python3` with the `duckdb`
//! module, so it only runs when `TIDEWATCH_DUCKDB_TEST=1` (the CI script installs duckdb with
//! `python3 -m pip install duckdb` first; `TIDEWATCH_PYTHON` picks another interpreter).
//! Otherwise it returns early and passes: cargo test never needs the network.

mod common;

use common::*;
use serde_json::json;
use tw_pipeline::Consumer;

#[test]
fn duckdb_reads_the_lake_with_hive_partitioning() {
    if std::env::var("TIDEWATCH_DUCKDB_TEST").as_deref() != Ok("1") {
        eprintln!("skipped: set TIDEWATCH_DUCKDB_TEST=1 (needs python3 -m pip install duckdb)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    let events: Vec<_> = (0..10)
        .map(|i| {
            let event = json!({
                "eventName": if i % 2 == 0 { "AttachUserPolicy" } else { "ConsoleLogin" },
                "requestParameters": {"policyArn": format!("arn:aws:iam::aws:policy/P{i}")},
                "userIdentity": {"sessionContext": {"attributes": {"mfaAuthenticated": "false"}}},
                "year": 1990 + i,
                "resources": [{"ARN": "x"}],
            });
            (T0 + (i % 3) * HOUR, event)
        })
        .collect();
    writer.handle(&batch("ct", 0, 0, &events[..6])).unwrap();
    writer.flush().unwrap();
    // A widening between two flushes: `year` becomes text in the second file only.
    writer.handle(&batch("ct", 0, 6, &events[6..])).unwrap();
    writer
        .handle(&batch("ct", 0, 10, &[(T0, json!({"year": "MMXXIV"}))]))
        .unwrap();
    writer.flush().unwrap();

    let glob = format!("{}/ct/**/*.parquet", dir.path().display());
    let script = format!(
        r#"
import duckdb, json
rows = duckdb.sql("""
  SELECT count(*), count(DISTINCT _offset), min(year), max(hour),
         count(*) FILTER (WHERE "requestParameters.policyArn" LIKE 'arn:aws:iam::aws:policy/P%'),
         count(*) FILTER (WHERE eventName = 'ConsoleLogin'),
         max("userIdentity.sessionContext.attributes.mfaAuthenticated"),
         typeof(max(_time)), max(CAST(year_ AS VARCHAR)), min(resources)
  FROM read_parquet('{glob}', hive_partitioning = true, union_by_name = true)
""").fetchall()
print(json.dumps([str(v) for v in rows[0]]))
"#
    );
    let python = std::env::var("TIDEWATCH_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let output = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let values: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        values,
        [
            "11",
            "11",
            "2024",
            "12",
            "10",
            "5",
            "false",
            "TIMESTAMP WITH TIME ZONE",
            "MMXXIV",
            r#"[{"ARN":"x"}]"#,
        ]
    );
}
