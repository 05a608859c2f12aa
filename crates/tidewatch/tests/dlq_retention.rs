//! The dead-letter queue's own retention (`[log] dlq_retention`): old letters go, the rest
//! stay listed and replayable.

mod common;

use std::time::Duration;

use common::{Server, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_older_than_the_retention_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write(
        dir.path(),
        "tidewatch.toml",
        "[log]\nsegment_max_bytes = 65536\ndlq_retention = { max_age_secs = 1 }\n",
    );
    let server = Server::start(&data, Some(&config), &[]);
    // In several requests: a segment rolls between appends, and retention deletes only
    // sealed segments.
    let bad: Vec<String> = (0..2000)
        .map(|i| format!("not json {i} {}", "x".repeat(100)))
        .collect();
    for chunk in bad.chunks(200) {
        let (status, body) = server.send("web", chunk.join("\n")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["rejected"].as_array().map(Vec::len),
            Some(200),
            "{body}"
        );
    }
    let (_, listed) = server.get("/api/v1/dlq?limit=1").await;
    assert_eq!(listed["entries"][0]["id"], 0, "{listed}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Applied at start.
    assert!(server.terminate());
    let server = Server::start(&data, Some(&config), &[]);
    let (_, listed) = server.get("/api/v1/dlq?limit=10000").await;
    let letters = listed["entries"].as_array().unwrap();
    assert!(!letters.is_empty(), "the active segment stays: {listed}");
    let first = letters[0]["id"].as_u64().unwrap();
    assert!(first > 0, "sealed segments of old letters are deleted");
    assert_eq!(letters.len() as u64, 2000 - first, "the rest, each once");
    assert_eq!(letters.last().unwrap()["id"], 1999);
    assert!(server.terminate());
}
