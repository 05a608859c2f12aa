//! The directory watcher and `tidewatch send DIR`, against the real binary: every event of
//! every file is queryable exactly once, across a graceful restart and across a kill -9 in
//! the middle of a file; undecodable files are failed with their reason, not retried.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, binary, write};
use serde_json::Value;

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

fn ndjson(prefix: &str, count: usize) -> String {
    (0..count)
        .map(|i| {
            format!(
                "{{\"id\":\"{prefix}-{i}\",\"eventTime\":\"2024-03-01T00:{:02}:{:02}Z\",\"n\":{i}}}\n",
                (i / 60) % 60,
                i % 60
            )
        })
        .collect()
}

/// A pretty-printed CloudTrail file of `count` records.
fn cloudtrail(prefix: &str, count: usize) -> String {
    let records: Vec<Value> = (0..count)
        .map(|i| serde_json::json!({"id": format!("{prefix}-{i}"), "eventName": "GetObject", "eventTime": "2024-03-01T01:00:00Z"}))
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "Records": records })).unwrap()
}

fn config(dir: &Path, watched: &Path, stream: &str, batch_records: usize) -> std::path::PathBuf {
    write(
        dir,
        "tidewatch.toml",
        &format!(
            r#"
[[sources]]
kind = "dir"
stream = "{stream}"
path = "{}"
poll_interval_ms = 100
settle_ms = 0
batch_records = {batch_records}

[query]
max_result_rows = 1000000
"#,
            watched.display()
        ),
    )
}

async fn counts(server: &Server, stream: &str) -> (u64, u64) {
    let rows = server
        .sql(&format!(
            "SELECT count(*) AS n, count(DISTINCT id) AS d FROM {stream}"
        ))
        .await;
    let row = &rows[0];
    (row["n"].as_u64().unwrap(), row["d"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_directory_is_ingested_exactly_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("incoming");
    std::fs::create_dir_all(watched.join("2024/03/01")).unwrap();
    write(&watched, "a.ndjson", &ndjson("a", 1000));
    std::fs::write(
        watched.join("2024/03/01/b.ndjson.gz"),
        gzip(&ndjson("b", 500)),
    )
    .unwrap();
    std::fs::write(
        watched.join("2024/03/01/trail.json.gz"),
        gzip(&cloudtrail("c", 300)),
    )
    .unwrap();
    std::fs::write(watched.join("broken.json.gz"), b"not gzip at all").unwrap();
    write(
        &watched,
        "one-bad-line.ndjson",
        &format!("{}{{oops\n", ndjson("d", 10)),
    );
    write(&watched, "notes.txt", "{\"id\":\"ignored\"}\n");
    let config = config(dir.path(), &watched, "dirsrc", 300);
    let data = dir.path().join("data");

    let server = Server::start(&data, Some(&config), &[]);
    let first = 1000 + 500 + 300 + 10;
    server.wait_for_count("dirsrc", "true", first).await;
    // Let a few more polls pass: nothing may be taken twice.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(counts(&server, "dirsrc").await, (first, first));
    let (_, dlq) = server.get("/api/v1/dlq?stream=dirsrc").await;
    let letters = dlq["entries"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{dlq}");
    assert!(
        letters
            .iter()
            .any(|l| l["raw"] == "{oops" && l["line"] == 11)
    );
    assert!(
        letters.iter().any(|l| l["stage"] == "source:dir-dirsrc"
            && l["reason"].as_str().unwrap().contains("broken.json.gz")
            && l["reason"].as_str().unwrap().contains("gzip")),
        "{dlq}"
    );
    let (_, metrics) = server.get_text("/metrics").await;
    for expected in [
        "tidewatch_source_files_ingested_total{source=\"dir-dirsrc\"} 4",
        "tidewatch_source_files_failed_total{source=\"dir-dirsrc\"} 1",
        "tidewatch_source_events_total{source=\"dir-dirsrc\"} 1810",
        "tidewatch_source_files_pending{source=\"dir-dirsrc\"} 0",
    ] {
        assert!(metrics.contains(expected), "{expected} not in\n{metrics}");
    }
    assert!(server.terminate(), "graceful stop failed");

    // New files while stopped; after the restart only they are added.
    write(&watched, "later/e.ndjson", &ndjson("e", 250));
    let server = Server::start(&data, Some(&config), &[]);
    server.wait_for_count("dirsrc", "true", first + 250).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(counts(&server, "dirsrc").await, (first + 250, first + 250));
    let (_, dlq) = server.get("/api/v1/dlq?stream=dirsrc").await;
    assert_eq!(
        dlq["entries"].as_array().unwrap().len(),
        2,
        "failed file retried: {dlq}"
    );
    assert!(server.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_nine_in_the_middle_of_a_file_neither_loses_nor_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("incoming");
    std::fs::create_dir_all(&watched).unwrap();
    let total = 30_000;
    write(&watched, "big.ndjson", &ndjson("big", total));
    // Small batches: many durable appends, so the kill lands inside the file.
    let config = config(dir.path(), &watched, "killed", 100);
    let data = dir.path().join("data");
    let progress_file = data.join("sources/dir-killed/progress.json");

    let server = Server::start(&data, Some(&config), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let acked = loop {
        let acked = std::fs::read(&progress_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["files"][0]["acked_line"].as_u64())
            .unwrap_or(0);
        if acked >= 2_000 {
            break acked;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the file never progressed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    server.kill9();
    assert!(
        acked < total as u64,
        "the whole file went in before the kill"
    );

    let server = Server::start(&data, Some(&config), &[]);
    server.wait_for_count("killed", "true", total as u64).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        counts(&server, "killed").await,
        (total as u64, total as u64)
    );
    let journal = std::fs::read_to_string(data.join("sources/dir-killed/files.ndjson")).unwrap();
    let entry: Value = serde_json::from_str(journal.lines().next().unwrap()).unwrap();
    assert_eq!(entry["outcome"], "done");
    assert_eq!(entry["events"], total as u64);
    assert!(server.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_a_directory_sends_every_json_file_below_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None, &[]);
    let batch = dir.path().join("batch");
    std::fs::create_dir_all(batch.join("nested/deeper")).unwrap();
    write(&batch, "a.ndjson", &ndjson("a", 1200));
    std::fs::write(batch.join("nested/b.ndjson.gz"), gzip(&ndjson("b", 700))).unwrap();
    write(&batch, "nested/trail.json", &cloudtrail("c", 40));
    std::fs::write(
        batch.join("nested/deeper/trail.json.gz"),
        gzip(&cloudtrail("d", 60)),
    )
    .unwrap();
    let array: Vec<Value> = (0..25)
        .map(|i| serde_json::json!({"id": format!("e-{i}")}))
        .collect();
    write(
        &batch,
        "nested/array.json",
        &serde_json::to_string(&array).unwrap(),
    );
    write(&batch, "lines-in.json", &ndjson("f", 30));
    write(&batch, "skip.txt", &ndjson("skip", 5));
    write(&batch, ".hidden.ndjson", &ndjson("hidden", 5));

    let output = Command::new(binary())
        .args([
            "send",
            "--stream",
            "sent",
            "--server",
            &server.url,
            "--batch-lines",
            "500",
        ])
        .arg(&batch)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "send failed: {stderr}");
    let expected = 1200 + 700 + 40 + 60 + 25 + 30;
    assert!(
        stderr.contains(&format!("{expected} accepted, 0 rejected")),
        "{stderr}"
    );
    assert_eq!(counts(&server, "sent").await, (expected, expected));
}
