//! `_bulk` answers every item for what happened to it: an index that cannot be written fails
//! only its own items, and a repeated `_id` is a duplicate only of a document that was stored.

mod common;

use common::Server;
use serde_json::Value;
use tw_compat::AuthConfig;

async fn bulk(server: &Server, body: &str) -> (u16, Value) {
    let answer = server
        .request(
            "POST",
            "/_bulk",
            &[("content-type", "application/x-ndjson")],
            body.as_bytes(),
        )
        .await;
    assert_eq!(
        answer.header("x-elastic-product"),
        Some("Elasticsearch"),
        "every answer carries the product header"
    );
    (answer.status, answer.json())
}

/// `(action, status, error type)` of every item.
fn items(answer: &Value) -> Vec<(String, u64, Option<String>)> {
    answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let (action, body) = item.as_object().unwrap().iter().next().unwrap();
            (
                action.clone(),
                body["status"].as_u64().unwrap(),
                body["error"]["type"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn numbers(server: &Server, stream: &str) -> Vec<u64> {
    let mut numbers: Vec<u64> = server
        .records(stream)
        .iter()
        .map(|r| r["n"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    numbers
}

#[tokio::test]
async fn an_index_that_cannot_be_written_fails_only_its_own_items() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    // `broken` cannot be created (the disk is full for it); `good` can.
    server
        .log
        .fail_creates_when(|stream| stream.as_str() == "broken");
    let body = concat!(
        "{\"index\":{\"_index\":\"good\",\"_id\":\"g1\"}}\n{\"n\":1}\n",
        "{\"index\":{\"_index\":\"broken\",\"_id\":\"b1\"}}\n{\"n\":2}\n",
        "{\"create\":{\"_index\":\"good\"}}\n{\"n\":3}\n",
        "{\"create\":{\"_index\":\"broken\",\"_id\":\"b2\"}}\n{\"n\":4}\n",
    );
    let (status, answer) = bulk(&server, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errors"], true);
    let unavailable = Some("unavailable_shards_exception".to_string());
    assert_eq!(
        items(&answer),
        [
            ("index".into(), 201, None),
            ("index".into(), 503, unavailable.clone()),
            ("create".into(), 201, None),
            ("create".into(), 503, unavailable),
        ],
        "{answer}"
    );
    assert!(
        answer["items"][1]["index"]["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("disk full"),
        "{answer}"
    );
    assert_eq!(
        numbers(&server, "good"),
        [1, 3],
        "stored exactly what was answered 201"
    );
    assert!(server.records("broken").is_empty());

    // The failed items' ids were not remembered: the retry stores them. `g1` was.
    server.log.heal();
    let (status, answer) = bulk(&server, body).await;
    assert_eq!(status, 200, "{answer}");
    let statuses: Vec<u64> = items(&answer).into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(statuses, [200, 201, 201, 201], "{answer}");
    assert_eq!(answer["items"][0]["index"]["result"], "noop");
    assert_eq!(numbers(&server, "broken"), [2, 4]);
    // Without an `_id` a document is stored again: nothing says it is the same.
    assert_eq!(numbers(&server, "good"), [1, 3, 3]);
}

#[tokio::test]
async fn a_repeated_id_is_a_duplicate_only_of_a_stored_document() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    let body = concat!(
        // First refused (not JSON): the second is tried on its own and stored.
        "{\"index\":{\"_index\":\"s\",\"_id\":\"x\"}}\nnot json\n",
        "{\"index\":{\"_index\":\"s\",\"_id\":\"x\"}}\n{\"n\":2}\n",
        // First stored: the second is a conflict.
        "{\"create\":{\"_index\":\"s\",\"_id\":\"y\"}}\n{\"n\":3}\n",
        "{\"create\":{\"_index\":\"s\",\"_id\":\"y\"}}\n{\"n\":4}\n",
        // Two refused, then a good one: only the third is stored, and a fourth is a no-op.
        "{\"index\":{\"_index\":\"s\",\"_id\":\"z\"}}\n{\"n\":\n",
        "{\"create\":{\"_index\":\"s\",\"_id\":\"z\"}}\n[5]\n",
        "{\"index\":{\"_index\":\"s\",\"_id\":\"z\"}}\n{\"n\":6}\n",
        "{\"index\":{\"_index\":\"s\",\"_id\":\"z\"}}\n{\"n\":7}\n",
    );
    let (status, answer) = bulk(&server, body).await;
    assert_eq!(status, 200, "{answer}");
    let statuses: Vec<u64> = items(&answer).into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(
        statuses,
        [400, 201, 201, 409, 400, 400, 201, 200],
        "{answer}"
    );
    assert_eq!(answer["items"][7]["index"]["result"], "noop", "{answer}");
    assert_eq!(numbers(&server, "s"), [2, 3, 6]);
    // The refused documents are in the dead-letter queue, once each.
    assert_eq!(server.dlq.len().unwrap(), 3);

    // Retried, every id is now known: nothing is stored or dead-lettered again.
    let (_, answer) = bulk(&server, body).await;
    let statuses: Vec<u64> = items(&answer).into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(
        statuses,
        [200, 200, 409, 409, 200, 409, 200, 200],
        "{answer}"
    );
    assert_eq!(numbers(&server, "s"), [2, 3, 6]);
    assert_eq!(server.dlq.len().unwrap(), 3);
}

#[tokio::test]
async fn a_dead_letter_failure_fails_only_the_refused_items() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    // The dead-letter queue cannot be written; the stream can.
    server.log.fail_appends_when(|stream, partition| {
        stream.as_str() == tw_pipeline::DLQ_STREAM && partition == 0
    });
    let body = concat!(
        "{\"index\":{\"_index\":\"s\",\"_id\":\"a\"}}\n{\"n\":1}\n",
        "{\"index\":{\"_index\":\"s\",\"_id\":\"b\"}}\nnot json\n",
        "{\"create\":{\"_index\":\"s\",\"_id\":\"c\"}}\n{\"n\":3}\n",
    );
    let (status, answer) = bulk(&server, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        items(&answer),
        [
            ("index".into(), 201, None),
            (
                "index".into(),
                503,
                Some("unavailable_shards_exception".into())
            ),
            ("create".into(), 201, None),
        ],
        "stored items are answered stored, only the refused one is retryable: {answer}"
    );
    let reason = answer["items"][1]["index"]["error"]["reason"]
        .as_str()
        .unwrap();
    assert!(
        reason.contains("dead-letter queue") && reason.contains("invalid JSON"),
        "{reason}"
    );
    assert_eq!(numbers(&server, "s"), [1, 3]);
    assert!(server.dlq.is_empty().unwrap());

    // The client retries: the stored documents are known, the refused one is kept this time.
    server.log.heal();
    let (_, answer) = bulk(&server, body).await;
    let statuses: Vec<u64> = items(&answer).into_iter().map(|(_, s, _)| s).collect();
    assert_eq!(statuses, [200, 400, 409], "{answer}");
    assert_eq!(numbers(&server, "s"), [1, 3], "nothing stored twice");
    assert_eq!(server.dlq.len().unwrap(), 1);
}
