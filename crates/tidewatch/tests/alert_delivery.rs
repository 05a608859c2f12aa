//! Alerts stored but still in a sink's queue when the server is killed are delivered after the
//! restart: the delivery mark (`alerts/delivered_through`) stays before every alert a sink has
//! not delivered or recorded as failed, and the next start sends those again.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use common::Server;
use serde_json::Value;

/// A config whose one sink posts to `url`, retrying for a long time (so an alert stays in its
/// queue while the target does not answer).
fn config(dir: &Path, url: &str) -> PathBuf {
    common::write(
        dir,
        "tidewatch.toml",
        &format!(
            "[[sinks]]\ntype = \"webhook\"\nname = \"hook\"\nurl = \"{url}\"\nallow_private_targets = true\ntimeout_ms = 60000\nmax_attempts = 10\n"
        ),
    )
}

/// A webhook target that answers 200 and keeps each body.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn mark(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("alerts").join("delivered_through"))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_in_a_sink_queue_at_kill_9_is_delivered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A target that takes connections and never answers: the alert waits in the sink.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    let server = Server::start(dir.path(), Some(&config(dir.path(), &silent_url)), &[]);
    let rule = "id: root\ntitle: Root\nstream: app\nmatch: {field: kind, equals: root}\n";
    assert_eq!(server.post_rule(rule).await.0, 201);
    let events =
        "{\"kind\": \"root\", \"n\": 1}\n{\"kind\": \"other\"}\n{\"kind\": \"root\", \"n\": 2}\n";
    assert_eq!(server.send("app", events).await.0, 200);
    server
        .eventually("two alerts stored", Duration::from_secs(20), || async {
            server.alerts(Some("root")).await.len() == 2
        })
        .await;
    assert_eq!(mark(dir.path()), 0, "nothing was delivered");
    server.kill9();
    drop(silent);

    let (url, received) = receiver().await;
    let server = Server::start(dir.path(), Some(&config(dir.path(), &url)), &[]);
    server
        .eventually(
            "both alerts delivered after the restart",
            Duration::from_secs(30),
            || async { received.lock().unwrap().len() >= 2 },
        )
        .await;
    server
        .eventually("the mark past both", Duration::from_secs(10), || async {
            mark(dir.path()) == 2
        })
        .await;
    let mut numbers: Vec<u64> = received
        .lock()
        .unwrap()
        .iter()
        .map(|alert| alert["events"][0]["n"].as_u64().unwrap_or(0))
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![1, 2], "each alert once, with its event");
    // Once the mark covers them, a restart sends nothing again.
    assert!(server.terminate());
    let server = Server::start(dir.path(), Some(&config(dir.path(), &url)), &[]);
    assert_eq!(
        server
            .send("app", "{\"kind\": \"root\", \"n\": 3}\n")
            .await
            .0,
        200
    );
    server
        .eventually(
            "the third alert delivered",
            Duration::from_secs(20),
            || async { received.lock().unwrap().len() >= 3 },
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received.lock().unwrap().len(), 3);
}
