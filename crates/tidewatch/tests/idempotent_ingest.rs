//! `Idempotency-Key` on `POST /api/v1/streams/{stream}/events`, over HTTP against the real
//! binary: a repeat stores nothing and gets the first answer (`Idempotent-Replayed: true`),
//! another body under a used key is 422, a malformed key 400, a repeat while the first is in
//! flight 409 with `Retry-After`; and `tidewatch send`, whose first answer is lost on the way
//! back (a proxy drops it after the server stored the batch), stores every line exactly once.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Server, binary, write};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// POSTs `body` to `stream` with `key`; (status, headers, JSON body).
async fn post(
    server: &Server,
    stream: &str,
    key: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = server
        .client
        .post(format!("{}/api/v1/streams/{stream}/events", server.url))
        .header("content-type", "application/x-ndjson")
        .header("idempotency-key", key)
        .body(body)
        .send()
        .await
        .expect("POST events");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_with_the_same_key_stores_nothing_and_gets_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, &[]);
    let body = "{\"n\":1}\nnot json\n{\"n\":3}\n";

    let (status, headers, first) = post(&server, "idem", "batch-0001", body).await;
    assert_eq!(status, 200, "{first}");
    assert!(!headers.contains_key("idempotent-replayed"));
    assert_eq!(first["accepted"], 2);
    assert_eq!(first["rejected"][0]["line"], 2);
    let (status, headers, repeat) = post(&server, "idem", "batch-0001", body).await;
    assert_eq!(status, 200, "{repeat}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(repeat, first, "the first answer, reasons included");

    let (status, _, reused) = post(&server, "idem", "batch-0001", "{\"n\":9}\n").await;
    assert_eq!(status, 422, "{reused}");
    assert!(
        reused["error"]
            .as_str()
            .unwrap()
            .contains("used before for a different body"),
        "{reused}"
    );
    for (key, problem) in [
        ("has space", "' ' at position 4"),
        (&"k".repeat(256), "256 characters, at most 255"),
    ] {
        let (status, _, refused) = post(&server, "idem", key, body).await;
        assert_eq!(status, 400, "{refused}");
        let message = refused["error"].as_str().unwrap();
        assert!(
            message.contains("invalid Idempotency-Key") && message.contains(problem),
            "{message}"
        );
    }
    assert_eq!(
        server.sql_count("SELECT count(*) AS n FROM idem").await,
        2,
        "stored once"
    );
    let dlq: Value = server
        .client
        .get(format!("{}/api/v1/dlq?stream=idem", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        dlq["entries"].as_array().map(Vec::len),
        Some(1),
        "dead-lettered once: {dlq}"
    );
    assert!(server.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_while_the_first_is_in_flight_is_answered_409() {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(Server::start(dir.path(), None, &[]));
    // The first request's body is still on its way.
    let (sender, chunks) = futures::channel::mpsc::unbounded::<Result<Bytes, std::io::Error>>();
    sender
        .unbounded_send(Ok(Bytes::from_static(b"{\"n\":1}\n")))
        .unwrap();
    let first = {
        let server = server.clone();
        tokio::spawn(async move {
            post(
                &server,
                "slow",
                "in-flight-1",
                reqwest::Body::wrap_stream(chunks),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, headers, refused) = post(&server, "slow", "in-flight-1", "{\"n\":1}\n").await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(headers["retry-after"], "1");
    sender
        .unbounded_send(Ok(Bytes::from_static(b"{\"n\":2}\n")))
        .unwrap();
    drop(sender);
    let (status, _, answer) = first.await.unwrap();
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(2)));
    let (status, headers, repeat) =
        post(&server, "slow", "in-flight-1", "{\"n\":1}\n{\"n\":2}\n").await;
    assert_eq!(status, 200, "{repeat}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(server.sql_count("SELECT count(*) AS n FROM slow").await, 2);
}

/// A TCP proxy to `upstream` that, on its first `lose` connections, waits for the server's
/// answer to start (the request was processed) and closes the connection instead of passing
/// the answer on. Returns its address and the count of answers it lost.
async fn lossy_proxy(upstream: SocketAddr, lose: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let lost = Arc::new(AtomicUsize::new(0));
    let counter = lost.clone();
    tokio::spawn(async move {
        let mut connections = 0;
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            connections += 1;
            let lose_this = connections <= lose;
            let lost = counter.clone();
            tokio::spawn(async move {
                let server = TcpStream::connect(upstream).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let requests = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                if lose_this {
                    let mut first = [0u8; 1];
                    if server_read.read(&mut first).await.unwrap_or(0) > 0 {
                        lost.fetch_add(1, Ordering::SeqCst);
                    }
                    requests.abort();
                } else {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                }
            });
        }
    });
    (address, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_stores_every_line_once_when_an_answer_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None, &[]);
    let upstream: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    let (proxy, lost) = lossy_proxy(upstream, 1).await;
    let lines: String = (1..=50).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let file = write(dir.path(), "events.ndjson", &lines);
    let args = [
        "send".to_string(),
        "--server".into(),
        format!("http://{proxy}"),
        "--stream".into(),
        "lossy".into(),
        "--batch-lines".into(),
        "20".into(),
        file.display().to_string(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .args(&args)
            .env("TIDEWATCH_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        lost.load(Ordering::SeqCst),
        1,
        "the first batch's answer was lost after it was stored: {stderr}"
    );
    assert!(
        stderr.contains("sent to lossy: 50 accepted, 0 rejected"),
        "{stderr}"
    );
    assert_eq!(
        server.sql_count("SELECT count(*) AS n FROM lossy").await,
        50,
        "the retried batch was not stored twice"
    );
    assert_eq!(
        server
            .sql_count("SELECT count(DISTINCT n) AS n FROM lossy")
            .await,
        50
    );
    assert!(server.terminate());
}
