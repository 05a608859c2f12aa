//! The lake on a real S3-compatible server (moto's server mode): every acknowledged event is
//! found by SQL exactly once, the files are in the bucket under the Hive layout (listed with
//! boto3), kill -9 during ingest neither loses nor duplicates, and a lake location that does
//! not work is a clear error at start.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, generate, start_acked_sender, write};
use tw_testkit::moto::{KEY, Moto};

const BUCKET: &str = "tidewatch-lake";
const PREFIX: &str = "prod/lake";

fn config(moto: &Moto, bucket: &str) -> String {
    format!(
        r#"
[lake]
location = "s3://{bucket}/{PREFIX}"
flush_max_rows = 700
flush_max_age_ms = 200

[lake.s3]
endpoint = "{}"
region = "us-east-1"
access_key_id = "{KEY}"
secret_access_key = "{KEY}"
allow_http = true

[query]
max_result_rows = 10000000
"#,
        moto.endpoint
    )
}

/// `prod/lake/{stream}/year=YYYY/month=MM/day=DD/hour=HH/pNNN-{20 digits}-{20 digits}.parquet`
/// → the hour directory; None for any other key.
fn hive_hour(key: &str, stream: &str) -> Option<String> {
    let rest = key.strip_prefix(&format!("{PREFIX}/{stream}/"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [year, month, day, hour, file] = parts.as_slice() else {
        return None;
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let ok = year.strip_prefix("year=").is_some_and(|v| digits(v, 4))
        && month.strip_prefix("month=").is_some_and(|v| digits(v, 2))
        && day.strip_prefix("day=").is_some_and(|v| digits(v, 2))
        && hour.strip_prefix("hour=").is_some_and(|v| digits(v, 2));
    let name = file.strip_prefix('p')?.strip_suffix(".parquet")?;
    let fields: Vec<&str> = name.split('-').collect();
    let named =
        matches!(fields.as_slice(), [p, a, b] if digits(p, 3) && digits(a, 20) && digits(b, 20));
    (ok && named).then(|| format!("{year}/{month}/{day}/{hour}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_on_s3_holds_every_event_once_under_the_hive_layout() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "t.toml", &config(&moto, BUCKET));
    let data = dir.path().join("data");

    let text = generate("cloudtrail", 4_000, 5, 1);
    let ids: BTreeSet<String> = text
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            event["eventID"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 4_000, "generated event ids are unique");

    let server = Server::start(&data, Some(&config), &[]);
    let lines: Vec<&str> = text.lines().collect();
    for chunk in lines.chunks(500) {
        let (status, body) = server.send("trail", chunk.join("\n")).await;
        assert_eq!(status, 200, "{body}");
    }
    let check = async |server: &Server| {
        let stored: Vec<String> = server
            .sql("SELECT eventID FROM trail")
            .await
            .iter()
            .map(|row| row["eventID"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(stored.len(), ids.len(), "every event once, none twice");
        assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), ids);
    };
    check(&server).await;
    // Hour pruning and the padded-month wrapper work on S3 listings too.
    let hours = server
        .sql("SELECT year, month, day, hour, count(*) AS n FROM trail GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")
        .await;
    assert!(!hours.is_empty());
    let first = &hours[0];
    let in_first_hour = server
        .sql_count(&format!(
            "SELECT count(*) FROM trail WHERE year = {} AND month = {} AND day = {} AND hour = {}",
            first["year"], first["month"], first["day"], first["hour"]
        ))
        .await;
    assert_eq!(in_first_hour, first["n"].as_u64().unwrap());

    // A graceful stop flushes everything: the bucket alone then holds every event once.
    assert!(server.terminate());
    assert!(
        !data.join("lake").exists(),
        "nothing of the lake may be written locally"
    );
    let keys = moto.list(BUCKET, PREFIX);
    let mut file_hours = BTreeSet::new();
    for (key, size) in &keys {
        assert!(*size > 0, "empty object {key}");
        if key == &format!("{PREFIX}/_catalog/trail.json") {
            continue;
        }
        match hive_hour(key, "trail") {
            Some(hour) => {
                file_hours.insert(hour);
            }
            None => panic!("{key} is not a Hive-laid-out data file or a catalog"),
        }
    }
    assert!(
        keys.iter()
            .any(|(key, _)| key == &format!("{PREFIX}/_catalog/trail.json")),
        "the catalog is in the bucket: {keys:?}"
    );
    let query_hours: BTreeSet<String> = hours
        .iter()
        .map(|row| {
            format!(
                "year={:04}/month={:02}/day={:02}/hour={:02}",
                row["year"].as_u64().unwrap(),
                row["month"].as_u64().unwrap(),
                row["day"].as_u64().unwrap(),
                row["hour"].as_u64().unwrap()
            )
        })
        .collect();
    assert_eq!(file_hours, query_hours, "one directory per event hour");

    let server = Server::start(&data, Some(&config), &[]);
    check(&server).await;
    assert!(server.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_during_ingest_into_an_s3_lake_keeps_exactly_once() {
    const ROUNDS: u64 = 2;
    const BATCH: u64 = 200;
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "t.toml", &config(&moto, BUCKET));
    let data = dir.path().join("data");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut next_id = 0u64;
    for (round, delay_ms) in (0..ROUNDS).zip([700u64, 1_300]) {
        let server = Arc::new(Server::start(&data, Some(&config), &[]));
        let sender = start_acked_sender(
            server.clone(),
            "crash",
            next_id,
            BATCH,
            move |i| {
                format!(
                    r#"{{"id":{i},"round":{round},"eventTime":"2024-03-01T{:02}:{:02}:00Z"}}"#,
                    (i / 60) % 24,
                    i % 60
                )
            },
            acked.clone(),
        )
        .await;
        // Long enough for several flushes to the bucket, then kill mid-stream.
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = std::process::Command::new("kill")
            .args(["-9", &server.pid().to_string()])
            .status();
        let _ = sender.await;
        drop(server);
        next_id = acked
            .lock()
            .unwrap()
            .iter()
            .next_back()
            .map_or(next_id, |last| last + 1)
            + BATCH * 4;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() as u64 >= ROUNDS * BATCH,
        "too little traffic was acknowledged: {}",
        acked.len()
    );
    let check = async |server: &Server| {
        let ids: Vec<u64> = server
            .sql("SELECT id FROM crash")
            .await
            .iter()
            .map(|row| row["id"].as_u64().unwrap())
            .collect();
        let stored: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(ids.len(), stored.len(), "some events appear twice");
        let missing: Vec<_> = acked.difference(&stored).take(10).collect();
        assert!(missing.is_empty(), "acknowledged events lost: {missing:?}");
    };
    let server = Server::start(&data, Some(&config), &[]);
    check(&server).await;
    // After a graceful stop everything is in the bucket; the files alone hold each event once.
    assert!(server.terminate());
    let server = Server::start(&data, Some(&config), &[]);
    check(&server).await;
    assert!(server.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_location_that_does_not_work_is_a_clear_error_at_start() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // No such bucket on the server: the first listing says so.
        (
            config(&moto, "no-such-bucket"),
            "s3://no-such-bucket/prod/lake",
        ),
        (
            "[lake]\nlocation = \"s3://Bad_Bucket/x\"\n".to_string(),
            "lake.location",
        ),
        (
            "[lake]\nlocation = \"gs://bucket/x\"\n".to_string(),
            "gs:// is not supported",
        ),
        (
            "[lake]\nlocation = \"/tmp/x\"\n[lake.s3]\nregion = \"us-east-1\"\n".to_string(),
            "lake.s3 is set",
        ),
        (
            "[lake]\nlocation = \"s3://bucket/x\"\n[lake.s3]\nendpiont = \"x\"\n".to_string(),
            "endpiont",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let config = write(dir.path(), &format!("bad{i}.toml"), text);
        let output = std::process::Command::new(common::binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join(format!("data{i}")))
            .arg("--config")
            .arg(&config)
            .env("TIDEWATCH_LOG", "error")
            .output()
            .expect("run tidewatch");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "case {i} started: {stderr}");
        assert!(
            stderr.contains(expected),
            "case {i}: {expected:?} not in {stderr}"
        );
    }
}

/// Data files (not catalogs or audit records) of `stream` in the bucket.
fn data_keys(moto: &Moto, bucket: &str, stream: &str) -> Vec<String> {
    moto.list(bucket, &format!("{PREFIX}/{stream}/"))
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| key.ends_with(".parquet"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_delete_by_query_work_on_an_s3_lake() {
    let moto = Moto::start();
    let bucket = "tidewatch-compact";
    moto.create_bucket(bucket);
    let dir = tempfile::tempdir().unwrap();
    // Manual passes only; grace 0, so the second pass deletes what the first superseded.
    let settings = format!(
        "{}\n[lake.compaction]\ninterval_secs = 0\ngrace_secs = 0\n",
        config(&moto, bucket)
    );
    let config = write(dir.path(), "t.toml", &settings);
    let data = dir.path().join("data");
    let server = Server::start(&data, Some(&config), &[]);

    // 3,000 events of 2024 (closed hours), each request flushed on its own: small files.
    let text = generate("cloudtrail", 3_000, 11, 1);
    let lines: Vec<&str> = text.lines().collect();
    for chunk in lines.chunks(500) {
        let (status, body) = server.send("trail", chunk.join("\n")).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let exact = "SELECT count(*) FROM trail";
    let distinct = "SELECT count(DISTINCT eventID) FROM trail";
    assert_eq!(server.sql_count(exact).await, 3_000);
    let before = data_keys(&moto, bucket, "trail");

    let client = reqwest::Client::new();
    let compact = async || -> serde_json::Value {
        let response = client
            .post(format!("{}/api/v1/lake/compact?min_age_secs=0", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    };
    let first = compact().await;
    let merged = first["files_compacted"].as_u64().unwrap();
    assert!(merged >= 2, "small files merged: {first}");
    assert!(first["files_written"].as_u64().unwrap() < merged, "{first}");
    // Inputs stay (superseded) until the grace period ends; SQL sees every event once.
    assert_eq!(server.sql_count(exact).await, 3_000);
    assert_eq!(server.sql_count(distinct).await, 3_000);
    let second = compact().await;
    assert_eq!(
        second["superseded_deleted"].as_u64(),
        Some(merged),
        "{second}"
    );
    let after = data_keys(&moto, bucket, "trail");
    assert!(
        after.len() < before.len(),
        "fewer objects: {} → {}",
        before.len(),
        after.len()
    );
    assert_eq!(server.sql_count(exact).await, 3_000);

    // Delete-by-query rewrites objects in the bucket and stores its audit record there.
    let victim = server.sql("SELECT eventID FROM trail LIMIT 1").await[0]["eventID"]
        .as_str()
        .unwrap()
        .to_string();
    let response = client
        .post(format!("{}/api/v1/streams/trail/delete", server.url))
        .header("x-tidewatch-user", "dpo")
        .json(&serde_json::json!({ "predicate": format!("eventID = '{victim}'") }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let report: serde_json::Value = response.json().await.unwrap();
    assert_eq!(report["rows_deleted"], 1, "{report}");
    assert_eq!(server.sql_count(exact).await, 2_999);
    // Two entries: the request before the rewrite, the outcome after.
    let audit = moto.list(bucket, &format!("{PREFIX}/_audit/deletes/"));
    assert_eq!(audit.len(), 2, "{audit:?}");

    // A restart (the clean-up removes superseded objects at once) keeps the counts.
    assert!(server.terminate());
    let server = Server::start(&data, Some(&config), &[]);
    assert_eq!(server.sql_count(exact).await, 2_999);
    assert_eq!(server.sql_count(distinct).await, 2_999);
    assert!(server.terminate());
}
