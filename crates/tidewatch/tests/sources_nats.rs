//! The NATS source against the NATS server on 127.0.0.1:4222: a JetStream durable consumer
//! (every published event queryable exactly once, across a restart) and a core subscription.
//! Subjects and JetStream streams carry a per-run suffix so runs never see each other.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use common::{Server, write};

const NATS_URL: &str = "nats://127.0.0.1:4222";

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

async fn connect() -> async_nats::Client {
    async_nats::connect(NATS_URL).await.unwrap_or_else(|e| {
        panic!("this test needs the NATS server (with JetStream) on {NATS_URL}: {e}")
    })
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

async fn counts(server: &Server, stream: &str, filter: &str) -> (u64, u64) {
    let rows = server
        .sql(&format!(
            "SELECT count(*) AS n, count(DISTINCT id) AS d FROM {stream} WHERE {filter}"
        ))
        .await;
    (
        rows[0]["n"].as_u64().unwrap(),
        rows[0]["d"].as_u64().unwrap(),
    )
}

/// Publishes `count` events `{prefix}-{i}` to JetStream, waiting for each server ack: one event
/// per message, then NDJSON messages of ten, then one gzip message of ten.
async fn publish_jetstream(context: &jetstream::Context, subject: &str, prefix: &str) -> u64 {
    let mut acks = Vec::new();
    for i in 0..1_000 {
        let body = format!("{{\"id\":\"{prefix}-single-{i}\"}}");
        acks.push(
            context
                .publish(subject.to_string(), Bytes::from(body))
                .await
                .unwrap(),
        );
    }
    for batch in 0..50 {
        let body: String = (0..10)
            .map(|i| format!("{{\"id\":\"{prefix}-lines-{batch}-{i}\"}}\n"))
            .collect();
        acks.push(
            context
                .publish(subject.to_string(), Bytes::from(body))
                .await
                .unwrap(),
        );
    }
    let body: String = (0..10)
        .map(|i| format!("{{\"id\":\"{prefix}-gz-{i}\"}}\n"))
        .collect();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Encoding", "gzip");
    acks.push(
        context
            .publish_with_headers(subject.to_string(), headers, Bytes::from(gzip(&body)))
            .await
            .unwrap(),
    );
    for ack in acks {
        ack.await.expect("jetstream publish ack");
    }
    1_000 + 500 + 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_subject_is_ingested_exactly_once_across_restarts() {
    let suffix = unique();
    let subject = format!("tidewatch.test.{suffix}.events");
    let js_stream = format!("TWTEST_{suffix}");
    let client = connect().await;
    let context = jetstream::new(client);
    context
        .create_stream(jetstream::stream::Config {
            name: js_stream.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .expect("create the jetstream stream");

    let first = publish_jetstream(&context, &subject, "one").await;
    for bad in ["not json", "[1, 2", "{\"unterminated\": "] {
        context
            .publish(subject.clone(), Bytes::from(bad))
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "tidewatch.toml",
        &format!(
            r#"
[[sources]]
kind = "nats"
name = "js-source"
stream = "natsjs"
url = "{NATS_URL}"
subject = "{subject}"
jetstream_stream = "{js_stream}"
durable = "tidewatch_{suffix}"
batch_messages = 200
batch_wait_ms = 100
"#
        ),
    );
    let data = dir.path().join("data");
    let server = Server::start(&data, Some(&config), &[]);
    server.wait_for_count("natsjs", "true", first).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(counts(&server, "natsjs", "true").await, (first, first));
    let (_, dlq) = server.get("/api/v1/dlq?stream=natsjs").await;
    assert_eq!(dlq["entries"].as_array().unwrap().len(), 3, "{dlq}");
    assert!(server.terminate());

    // Published while Tidewatch is down: JetStream keeps them for the durable consumer.
    let second = publish_jetstream(&context, &subject, "two").await;
    let server = Server::start(&data, Some(&config), &[]);
    server
        .wait_for_count("natsjs", "true", first + second)
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        counts(&server, "natsjs", "true").await,
        (first + second, first + second)
    );
    assert!(server.terminate());
    let _ = context.delete_stream(&js_stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_subject_is_ingested_while_subscribed() {
    let suffix = unique();
    let subject = format!("tidewatch.test.{suffix}.core");
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "tidewatch.toml",
        &format!(
            r#"
[[sources]]
kind = "nats"
stream = "natscore"
url = "{NATS_URL}"
subject = "{subject}"
batch_wait_ms = 50
"#
        ),
    );
    let server = Server::start(&dir.path().join("data"), Some(&config), &[]);
    let client = connect().await;

    // Core NATS keeps nothing for absent subscribers: probe until the source is subscribed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut probe = 0;
    loop {
        client
            .publish(
                subject.clone(),
                Bytes::from(format!("{{\"id\":\"probe-{probe}\"}}")),
            )
            .await
            .unwrap();
        client.flush().await.unwrap();
        probe += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if server.get("/api/v1/streams/natscore").await.0 == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the core subscription never delivered"
        );
    }

    let total = 3_000u64;
    for i in 0..total {
        client
            .publish(
                subject.clone(),
                Bytes::from(format!("{{\"id\":\"ev-{i}\"}}")),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    server
        .wait_for_count("natscore", "id LIKE 'ev-%'", total)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        counts(&server, "natscore", "id LIKE 'ev-%'").await,
        (total, total)
    );
    assert!(server.terminate());
}
