//! The S3 watcher against a real S3-compatible server (moto's server mode, started here),
//! with objects uploaded by boto3: every event under the prefix is queryable exactly once,
//! across a restart; objects outside the prefix and undecodable objects are not ingested.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Server, write};
use serde_json::Value;
use tw_testkit::moto::Moto;

const BUCKET: &str = "trail-bucket";

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

fn cloudtrail(prefix: &str, count: usize) -> String {
    let records: Vec<Value> = (0..count)
        .map(|i| {
            serde_json::json!({
                "eventVersion": "1.08", "id": format!("{prefix}-{i}"), "eventName": "AssumeRole",
                "eventTime": "2024-03-01T02:00:00Z", "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::to_string(&serde_json::json!({ "Records": records })).unwrap()
}

fn ndjson(prefix: &str, count: usize) -> String {
    (0..count)
        .map(|i| format!("{{\"id\":\"{prefix}-{i}\"}}\n"))
        .collect()
}

async fn counts(server: &Server) -> (u64, u64) {
    let rows = server
        .sql("SELECT count(*) AS n, count(DISTINCT id) AS d FROM trail")
        .await;
    (
        rows[0]["n"].as_u64().unwrap(),
        rows[0]["d"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_prefix_is_ingested_exactly_once_across_restarts() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let local = |name: &str, bytes: Vec<u8>| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let day = "AWSLogs/123456789012/CloudTrail/us-east-1/2024/03/01";
    let f1 = local("f1", gzip(&cloudtrail("f1", 200)));
    let f2 = local("f2", gzip(&cloudtrail("f2", 300)));
    let f3 = local("f3", ndjson("f3", 100).into_bytes());
    let outside = local("outside", ndjson("outside", 50).into_bytes());
    let bad = local("bad", b"\x1f\x8b but not really gzip".to_vec());
    let k1 = format!("{day}/f1.json.gz");
    let k2 = format!("{day}/f2.json.gz");
    moto.upload(
        BUCKET,
        &[
            (k1.as_str(), f1.as_path()),
            (k2.as_str(), f2.as_path()),
            ("AWSLogs/extra.ndjson", f3.as_path()),
            ("elsewhere/x.ndjson", outside.as_path()),
            ("AWSLogs/bad.json.gz", bad.as_path()),
        ],
    );

    let config = write(
        dir.path(),
        "tidewatch.toml",
        &format!(
            r#"
[[sources]]
kind = "s3"
name = "trail-s3"
stream = "trail"
bucket = "{BUCKET}"
prefix = "AWSLogs/"
endpoint = "{}"
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
allow_http = true
poll_interval_ms = 200
settle_ms = 0
batch_records = 128
"#,
            moto.endpoint
        ),
    );
    let data = dir.path().join("data");
    let server = Server::start(&data, Some(&config), &[]);
    server.wait_for_count("trail", "true", 600).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(counts(&server).await, (600, 600));
    let (_, dlq) = server.get("/api/v1/dlq?stream=trail").await;
    let letters = dlq["entries"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{dlq}");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("s3://trail-bucket/AWSLogs/")
    );
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains("tidewatch_source_files_ingested_total{source=\"trail-s3\"} 3"),
        "{metrics}"
    );
    assert!(server.terminate());

    let f4 = local("f4", gzip(&cloudtrail("f4", 77)));
    let k4 = format!("{day}/f4.json.gz");
    moto.upload(BUCKET, &[(k4.as_str(), f4.as_path())]);
    let server = Server::start(&data, Some(&config), &[]);
    server.wait_for_count("trail", "true", 677).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(counts(&server).await, (677, 677));
    assert!(server.terminate());
}
