//! Firehose HTTP-endpoint delivery: a request that fails on one partition is answered 503, and
//! its retry (same `X-Amz-Firehose-Request-Id`, even after a restart) stores only the records
//! that were not stored — no record twice, none lost, no dead letter twice.

mod common;

use base64::Engine as _;
use common::Server;
use tw_compat::AuthConfig;

fn delivery(request_id: &str) -> String {
    let encode = |data: &str| base64::engine::general_purpose::STANDARD.encode(data);
    let mut records: Vec<String> = (0..10)
        .map(|n| format!("{{\"data\":\"{}\"}}", encode(&format!("{{\"n\":{n}}}\n"))))
        .collect();
    records.insert(4, format!("{{\"data\":\"{}\"}}", encode("not json")));
    format!(
        "{{\"requestId\":\"{request_id}\",\"timestamp\":1,\"records\":[{}]}}",
        records.join(",")
    )
}

async fn deliver(server: &Server, request_id: &str) -> u16 {
    let answer = server
        .request(
            "POST",
            "/firehose/fh",
            &[
                ("content-type", "application/json"),
                ("x-amz-firehose-request-id", request_id),
            ],
            delivery(request_id).as_bytes(),
        )
        .await;
    assert_eq!(answer.json()["requestId"], request_id);
    answer.status
}

fn numbers(server: &Server) -> Vec<u64> {
    let mut numbers: Vec<u64> = server
        .records("fh")
        .iter()
        .map(|r| r["n"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    numbers
}

#[tokio::test]
async fn a_retry_after_a_partial_failure_stores_only_what_was_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    server.create_stream("fh", 2);
    server
        .log
        .fail_appends_when(|stream, partition| stream.as_str() == "fh" && partition == 1);

    assert_eq!(deliver(&server, "req-1").await, 503);
    let first = numbers(&server);
    assert!(
        !first.is_empty() && first.len() < 10,
        "one partition stored, the other failed: {first:?}"
    );
    assert_eq!(
        server.dlq.len().unwrap(),
        1,
        "the bad record is dead-lettered"
    );

    // The retry comes after a restart (Firehose retries for up to two hours), with the disk
    // healthy again.
    server.stop().await;
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    assert_eq!(deliver(&server, "req-1").await, 200);
    assert_eq!(
        numbers(&server),
        (0..10).collect::<Vec<_>>(),
        "each record once"
    );
    assert_eq!(server.dlq.len().unwrap(), 1, "not dead-lettered twice");

    // Once complete, the request is a plain duplicate.
    assert_eq!(deliver(&server, "req-1").await, 200);
    assert_eq!(numbers(&server), (0..10).collect::<Vec<_>>());
    // Another request id with the same records is another delivery.
    assert_eq!(deliver(&server, "req-2").await, 200);
    assert_eq!(numbers(&server).len(), 20);
}

#[tokio::test]
async fn a_retry_after_a_dead_letter_failure_does_not_store_the_records_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    // Every record is stored, but the bad one's dead letter cannot be written.
    server.log.fail_appends_when(|stream, partition| {
        stream.as_str() == tw_pipeline::DLQ_STREAM && partition == 0
    });
    assert_eq!(deliver(&server, "req-dlq").await, 503);
    assert_eq!(numbers(&server), (0..10).collect::<Vec<_>>());
    assert!(server.dlq.is_empty().unwrap());

    server.log.heal();
    assert_eq!(deliver(&server, "req-dlq").await, 200);
    assert_eq!(
        numbers(&server),
        (0..10).collect::<Vec<_>>(),
        "the stored records are not stored again"
    );
    assert_eq!(server.dlq.len().unwrap(), 1, "the bad record is kept now");
}
