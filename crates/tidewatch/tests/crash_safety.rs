//! kill -9 during sustained ingest, twenty times: no acknowledged event is ever lost, and no
//! event appears twice — in SQL over hot + lake, and in the lake alone after a final flush.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, start_acked_sender, write};

const ROUNDS: u64 = 20;
const BATCH: u64 = 250;

const CONFIG: &str = r#"
[lake]
flush_max_rows = 1500
flush_max_age_ms = 150

[query]
max_result_rows = 10000000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_during_ingest_loses_nothing_acknowledged_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "t.toml", CONFIG);
    let data = dir.path().join("data");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut next_id = 0u64;
    let mut seed = 0x1234_5678_u64;
    for round in 0..ROUNDS {
        let server = Arc::new(Server::start(&data, Some(&config), &[]));
        let sender = start_acked_sender(
            server.clone(),
            "crash",
            next_id,
            BATCH,
            move |i| format!(r#"{{"id":{i},"round":{round},"eventTime":"2024-03-01T{:02}:{:02}:00Z","pad":"{}"}}"#, (i / 60) % 24, i % 60, "x".repeat(200)),
            acked.clone(),
        )
        .await;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(100 + (seed >> 33) % 900)).await;
        Arc::try_unwrap(server)
            .map(Server::kill9)
            .unwrap_or_else(|server| {
                // The sender still holds a reference: kill through the pid.
                let _ = std::process::Command::new("kill")
                    .args(["-9", &server.pid().to_string()])
                    .status();
            });
        let _ = sender.await;
        // Ids of requests in flight at the kill may or may not be stored; never reuse them.
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

    let server = Server::start(&data, Some(&config), &[]);
    check(&server, &acked).await;
    // After a graceful stop everything is in Parquet; the lake alone must hold each event once.
    assert!(server.terminate());
    let server = Server::start(&data, Some(&config), &[]);
    check(&server, &acked).await;
}

async fn check(server: &Server, acked: &BTreeSet<u64>) {
    let total = server.sql_count("SELECT count(*) FROM crash").await;
    let distinct = server
        .sql_count("SELECT count(DISTINCT id) FROM crash")
        .await;
    assert_eq!(total, distinct, "some events appear twice");
    let stored: BTreeSet<u64> = server
        .sql("SELECT id FROM crash")
        .await
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    let missing: Vec<_> = acked.difference(&stored).take(10).collect();
    assert!(
        missing.is_empty(),
        "acknowledged events lost (first ones): {missing:?}"
    );
}
