//! A flipped bit in a stream's log, found at the next start, costs only the damaged event: the
//! intact records after it are kept (not cut as a torn tail), every consumer goes past it with
//! a dead letter naming it, SQL finds every other event, and a replay of the stream's dead
//! letters leaves those letters out (they hold no bytes to send again).

mod common;

use std::time::Duration;

use common::Server;
use serde_json::{Value, json};
use tw_log::testing::damage_record;

const EVENTS: u64 = 10;
const DAMAGED: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_costs_only_itself_and_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, &[]);
    let created = server
        .client
        .put(format!("{}/api/v1/streams/d", server.url))
        .json(&json!({"partitions": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let body: String = (0..EVENTS).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let (status, outcome) = server.send("d", body).await;
    assert_eq!(
        (status, &outcome["accepted"]),
        (200, &json!(EVENTS)),
        "{outcome}"
    );
    server.wait_for_count("d", "true", EVENTS).await;
    let offset = server
        .sql_count(&format!("SELECT _offset FROM d WHERE n = {DAMAGED}"))
        .await;
    assert!(server.terminate(), "graceful stop");

    // The consumers had read everything: make them read the log again from its start (the
    // lake and the index are rebuilt from the log, as when `offsets/` is lost).
    let (segment, position) = damage_record(&dir.path().join("log/d/0"), offset);
    assert!(
        segment.ends_with("00000000000000000000.log"),
        "{}",
        segment.display()
    );
    for gone in ["offsets", "lake", "search"] {
        std::fs::remove_dir_all(dir.path().join(gone)).unwrap();
    }

    let server = Server::start(dir.path(), None, &[]);
    server.wait_for_count("d", "true", EVENTS - 1).await;
    let rows = server.sql("SELECT n FROM d ORDER BY n").await;
    let numbers: Vec<u64> = rows.iter().map(|r| r["n"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (0..EVENTS).filter(|n| *n != DAMAGED).collect();
    assert_eq!(numbers, expected, "every intact event, once");

    // One letter per consumer of the stream, each naming the record and the damage.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let letters = loop {
        let (_, answer) = server.get("/api/v1/dlq?stream=d").await;
        let letters = answer["entries"].as_array().cloned().unwrap_or_default();
        if letters.len() >= 3 {
            break letters;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the consumers' letters: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stages: Vec<&str> = letters
        .iter()
        .map(|l| l["stage"].as_str().unwrap())
        .collect();
    stages.sort_unstable();
    assert_eq!(
        stages,
        ["consumer:detect", "consumer:lake", "consumer:search"]
    );
    for letter in &letters {
        let reason = letter["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!("record {offset} of d/0 cannot be read and was skipped: segment 0 of d/0 is corrupted at byte {position}")),
            "{reason}"
        );
        assert_eq!(letter["source_offset"], offset, "{letter}");
        assert_eq!(letter["raw"], "", "{letter}");
    }

    let (status, replay) = server
        .post_json("/api/v1/dlq/replay", &json!({"stream": "d"}))
        .await;
    assert_eq!(status, 200, "{replay}");
    let mut ids: Vec<&Value> = letters.iter().map(|l| &l["id"]).collect();
    ids.sort_by_key(|id| id.as_u64());
    assert_eq!(replay["replayed"], 0, "{replay}");
    assert_eq!(replay["not_replayed"], json!(ids), "{replay}");

    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tidewatch_consumer_skipped_unreadable_total")),
        "{metrics}"
    );
    assert!(server.terminate());
}
