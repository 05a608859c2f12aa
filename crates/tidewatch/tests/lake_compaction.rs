//! Lake compaction on a real server: many small flush files of closed hours become one file
//! per partition and hour; SQL answers stay exact before, during and after (a query loop runs
//! concurrently); DataFusion prunes with the bloom filters; superseded files go after the
//! grace period and DuckDB then reads the compacted lake exactly; kill -9 in the middle of a
//! compaction and a restart leave exact counts.

mod common;
#[path = "common/python.rs"]
mod python;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Server, binary, generate, write};
use serde_json::Value;

const EVENTS: u64 = 12_000;

/// Small flushes (many files), manual compaction only, short grace, bloom filters on two
/// high-cardinality columns of every new stream.
const CONFIG: &str = r#"
[streams]
partitions = 2

[streams.lake]
bloom_filter_columns = ["sourceIPAddress", "userIdentity.arn"]

[lake]
flush_max_rows = 400
flush_max_age_ms = 200

[lake.compaction]
interval_secs = 0
grace_secs = 3
row_group_rows = 1000
"#;

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out
}

/// Files a reader of the lake should see (superseded ones left out).
fn live_files(dir: &Path) -> usize {
    let mut by_dir = std::collections::BTreeMap::<PathBuf, Vec<String>>::new();
    for file in parquet_files(dir) {
        by_dir
            .entry(file.parent().unwrap().to_path_buf())
            .or_default()
            .push(file.file_name().unwrap().to_string_lossy().into_owned());
    }
    by_dir
        .values()
        .map(|names| {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            tw_lake::superseded(&refs).iter().filter(|g| !**g).count()
        })
        .sum()
}

/// Ingests 12,000 CloudTrail events (1 per simulated second: 4 closed hours of 2024) in
/// requests of 1,000, each flushed on its own (flush age 200 ms), so the lake holds many
/// small files: at least 2 per partition and hour.
async fn ingest(server: &Server) {
    let text = generate("cloudtrail", EVENTS, 7, 1);
    let lines: Vec<&str> = text.lines().collect();
    for chunk in lines.chunks(1000) {
        let (status, body) = server.send("cloudtrail", chunk.join("\n")).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Counts, sums and per-hour counts that must not change.
const FINGERPRINT: &str = "SELECT count(*) AS n, count(DISTINCT eventID) AS d, \
    sum(_offset) AS offsets, count(DISTINCT sourceIPAddress) AS ips, \
    sum(CASE WHEN hour = 1 THEN 1 ELSE 0 END) AS hour1 FROM cloudtrail";

async fn fingerprint(server: &Server) -> Value {
    let rows = server.sql(FINGERPRINT).await;
    rows.first().cloned().expect("one row")
}

/// `tidewatch lake compact` against the server; the parsed report.
fn compact_cli(url: &str) -> Value {
    let output = std::process::Command::new(binary())
        .args(["lake", "compact", "--min-age-secs", "0", "--server", url])
        .output()
        .expect("run tidewatch lake compact");
    assert!(
        output.status.success(),
        "lake compact failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("report is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_sql_exact_while_queries_run_and_prunes_with_bloom_filters() {
    let python = python::require(&["duckdb"]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write(dir.path(), "tidewatch.toml", CONFIG);
    let server = Server::start(&data, Some(&config), &[]);
    ingest(&server).await;
    assert_eq!(
        server.sql_count("SELECT count(*) FROM cloudtrail").await,
        EVENTS
    );
    let lake = data.join("lake").join("cloudtrail");
    // Let the last flush land so every file is below hot_start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = fingerprint(&server).await;
    assert_eq!(before["n"], EVENTS, "{before}");
    assert_eq!(before["d"], EVENTS, "{before}");
    let files_before = live_files(&lake);
    assert!(files_before >= 24, "many small files: {files_before}");

    // A query loop running during compaction must always see every event once.
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/query", server.url);
    let looping = {
        let (stop, runs) = (stop.clone(), runs.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let body: Value = client
                    .post(&url)
                    .json(&serde_json::json!({ "sql": "SELECT count(*) AS n, count(DISTINCT eventID) AS d FROM cloudtrail" }))
                    .send()
                    .await
                    .expect("query")
                    .json()
                    .await
                    .expect("json");
                let row = &body["rows"][0];
                assert_eq!(row["n"], EVENTS, "during compaction: {body}");
                assert_eq!(row["d"], EVENTS, "during compaction: {body}");
                runs.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = tokio::task::spawn_blocking({
        let url = server.url.clone();
        move || compact_cli(&url)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    looping.await.expect("query loop saw exact counts");
    assert!(runs.load(Ordering::Relaxed) >= 3, "the loop ran: {runs:?}");
    assert!(
        report["files_compacted"].as_u64().unwrap() >= files_before as u64 - 8,
        "{report}"
    );
    assert_eq!(report["rows"], EVENTS, "{report}");

    // 4 hours × 2 partitions (an hour may miss a partition: at most 8 files).
    let files_after = live_files(&lake);
    assert!(files_after <= 8, "{files_after} files after compaction");
    assert_eq!(fingerprint(&server).await, before);

    // The compacted files carry bloom filters on sourceIPAddress: an address inside every
    // row group's min/max range but absent from the data is pruned by them.
    let plan = server
        .sql("EXPLAIN ANALYZE SELECT count(*) AS n FROM cloudtrail WHERE sourceIPAddress = '18.247.72.999'")
        .await;
    let plan_text = plan
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    let pruned = bloom_pruned(&plan_text);
    assert!(
        pruned > 0,
        "no row group pruned by bloom filter: {plan_text}"
    );

    // After the grace period the next pass deletes the superseded files.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = compact_cli(&server.url);
    assert_eq!(report["files_compacted"], 0, "{report}");
    assert!(
        report["superseded_deleted"].as_u64().unwrap() >= files_before as u64 - 8,
        "{report}"
    );
    assert_eq!(parquet_files(&lake).len(), files_after);
    assert_eq!(fingerprint(&server).await, before);

    // DuckDB reads the compacted lake exactly.
    let root = data.join("lake").display().to_string();
    let result = python::run(&python, dir.path(), "check.py", DUCKDB, &[root], &[]).await;
    assert_eq!(result["total"], EVENTS, "{result}");
    assert_eq!(result["distinct"], EVENTS, "{result}");
    assert!(server.terminate());
}

/// The `matched`-minus-remaining count of `row_groups_pruned_bloom_filter` in an EXPLAIN
/// ANALYZE text: "row_groups_pruned_bloom_filter=N total → M matched".
fn bloom_pruned(plan: &str) -> u64 {
    let Some(start) = plan.find("row_groups_pruned_bloom_filter=") else {
        return 0;
    };
    let rest = &plan[start + "row_groups_pruned_bloom_filter=".len()..];
    let numbers: Vec<u64> = rest
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .filter_map(|s| s.parse().ok())
        .collect();
    match numbers.as_slice() {
        [total, matched] => total.saturating_sub(*matched),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_compaction_then_restart_keeps_counts_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write(dir.path(), "tidewatch.toml", CONFIG);
    let server = Server::start(&data, Some(&config), &[]);
    ingest(&server).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = fingerprint(&server).await;
    assert_eq!(before["n"], EVENTS, "{before}");

    // Ask for a compaction and kill the server while it runs.
    let url = format!("{}/api/v1/lake/compact?min_age_secs=0", server.url);
    let request = tokio::spawn(async move { reqwest::Client::new().post(url).send().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill9();
    let _ = request.await;

    let server = Server::start(&data, Some(&config), &[]);
    assert_eq!(fingerprint(&server).await, before);
    let report = compact_cli(&server.url);
    assert_eq!(fingerprint(&server).await, before, "after {report}");
    // Another crash right after compacting, before the grace period: the superseded files
    // are still there, and the restart must not count them.
    server.kill9();
    let server = Server::start(&data, Some(&config), &[]);
    assert_eq!(fingerprint(&server).await, before);
    assert!(server.terminate());
}

const DUCKDB: &str = r#"
import duckdb, json, sys
lake = sys.argv[1]
con = duckdb.connect()
rel = f"read_parquet('{lake}/cloudtrail/**/*.parquet', hive_partitioning = true, union_by_name = true)"
total, distinct = con.execute(f"SELECT count(*), count(DISTINCT eventID) FROM {rel}").fetchone()
print(json.dumps({"total": total, "distinct": distinct}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_query_removes_exactly_the_matching_rows_and_audits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write(dir.path(), "tidewatch.toml", CONFIG);
    let server = Server::start(&data, Some(&config), &[]);
    ingest(&server).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let user_filter = "\"userIdentity.userName\" LIKE 'alice.%'";
    let alice = server
        .sql_count(&format!(
            "SELECT count(*) FROM cloudtrail WHERE {user_filter}"
        ))
        .await;
    assert!(alice > 0, "the generator has events of alice");
    let others = EVENTS - alice;
    // Search finds them too (words of the user names starting with "alice").
    let search_count = |server: &Server| {
        let path = "/api/v1/streams/cloudtrail/search?q=userIdentity.userName:alice*&limit=1";
        let url = server.url.clone();
        async move {
            let body: Value = reqwest::get(format!("{url}{path}"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["total"].as_u64().unwrap_or_else(|| panic!("{body}"))
        }
    };
    // Search commits about every second and does not wait for the indexer.
    server
        .eventually(
            "search covers every event",
            Duration::from_secs(30),
            || async { search_count(&server).await >= alice },
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let searchable = search_count(&server).await;

    let client = reqwest::Client::new();
    let delete = |predicate: &str| {
        client
            .post(format!("{}/api/v1/streams/cloudtrail/delete", server.url))
            .header("x-tidewatch-user", "dpo@example.com")
            .json(&serde_json::json!({ "predicate": predicate }))
            .send()
    };
    // Bad input: a clear 400 (two expressions), a 404 (unknown stream).
    let response = delete("1 = 1; SELECT 1").await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("predicate"),
        "{body}"
    );
    let response = client
        .post(format!("{}/api/v1/streams/nope/delete", server.url))
        .json(&serde_json::json!({ "predicate": "a = 1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let response = delete("userIdentity.userName LIKE 'alice.%'")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["rows_matched"], alice, "{body}");
    assert_eq!(body["rows_deleted"], alice, "{body}");
    assert_eq!(body["rows_not_in_files"], 0, "{body}");
    assert!(!body["files_rewritten"].as_array().unwrap().is_empty());
    assert_eq!(body["search"]["docs_deleted"], alice, "{body}");
    assert_eq!(
        server
            .sql_count(&format!(
                "SELECT count(*) FROM cloudtrail WHERE {user_filter}"
            ))
            .await,
        0
    );
    // Gone from search at once (other names with a word starting "alice" stay).
    assert_eq!(search_count(&server).await, searchable - alice);
    assert_eq!(
        server.sql_count("SELECT count(*) FROM cloudtrail").await,
        others
    );
    let mut audit: Vec<_> = std::fs::read_dir(data.join("lake").join(tw_lake::AUDIT_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    audit.sort();
    // The request, stored before any file changed, then the outcome.
    let audit: Vec<Value> = audit
        .iter()
        .map(|path| {
            serde_json::from_str(std::fs::read_to_string(path).unwrap().trim_end()).unwrap()
        })
        .collect();
    assert_eq!(audit.len(), 2, "{audit:?}");
    let (started, done) = (&audit[0], &audit[1]);
    assert_eq!(started["status"], "started");
    assert_eq!(started["who"], "dpo@example.com");
    assert_eq!(started["predicate"], "userIdentity.userName LIKE 'alice.%'");
    assert_eq!(started["rows_matched"], alice);
    assert_eq!(done["status"], "done");
    assert_eq!(done["id"], started["id"]);
    assert_eq!(done["who"], "dpo@example.com");
    assert_eq!(done["rows_deleted"], alice);

    // Compaction and a restart keep the deletion.
    compact_cli(&server.url);
    assert!(server.terminate());
    let server = Server::start(&data, Some(&config), &[]);
    assert_eq!(
        server.sql_count("SELECT count(*) FROM cloudtrail").await,
        others
    );
    assert_eq!(search_count(&server).await, searchable - alice);
    assert!(server.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_pass_applies_lake_retention() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = CONFIG
        .replace("interval_secs = 0", "interval_secs = 1")
        .replace("[streams.lake]", "[streams.lake]\nretention = \"30d\"");
    let config = write(dir.path(), "tidewatch.toml", &config);
    let server = Server::start(&data, Some(&config), &[]);
    // Two events of 2024 (far past the retention) and one of now.
    let now = tw_core::format_rfc3339_ms(tw_core::now_ms());
    let body = format!(
        "{{\"eventTime\":\"2024-03-01T00:00:00Z\",\"n\":1}}\n{{\"eventTime\":\"2024-03-01T05:00:00Z\",\"n\":2}}\n{{\"eventTime\":\"{now}\",\"n\":3}}"
    );
    assert_eq!(server.send("retained", body).await.0, 200);
    assert_eq!(server.sql_count("SELECT count(*) FROM retained").await, 3);
    // Once flushed, the 2024 hours are deleted by the next pass; today's hour stays.
    server
        .eventually(
            "the old hours are deleted",
            Duration::from_secs(30),
            || async {
                server.sql("SELECT n FROM retained").await == vec![serde_json::json!({"n": 3})]
            },
        )
        .await;
    // The pass removes the emptied directories right after the files: a query can come in
    // between.
    server
        .eventually(
            "the old hours' directories are removed",
            Duration::from_secs(10),
            || async { !data.join("lake/retained/year=2024").exists() },
        )
        .await;
    // The search indexes of those hours go too (the indexer's pass runs every 10 s).
    server
        .eventually(
            "the old hours' search indexes are deleted",
            Duration::from_secs(30),
            || async {
                let (status, body) = server.get("/api/v1/streams/retained/search?q=").await;
                status == 200 && body["total"] == 1 && body["hits"][0]["event"]["n"] == 3
            },
        )
        .await;
    let hours: Vec<String> = std::fs::read_dir(data.join("search/retained"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        hours.iter().all(|hour| !hour.starts_with("2024")),
        "{hours:?}"
    );
    assert!(server.terminate());
}
