//! Dispatcher against real sinks: a local axum webhook server on an ephemeral port and files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::mpsc;
use tw_alerts::{
    AlertError, DispatchReport, Dispatcher, FAILED_DELIVERIES_FILE, FailedDelivery, FileSinkConfig,
    SinkConfig, WebhookFormat, WebhookSinkConfig, slack_text,
};
use tw_core::{Alert, Severity};

fn alert(key: &str) -> Alert {
    Alert {
        id: Alert::id_for(key),
        dedup_key: key.to_owned(),
        rule_id: "failed-logins".to_owned(),
        rule_title: "Too many failed logins".to_owned(),
        rule_version: 2,
        severity: Severity::High,
        stream: "auth".to_owned(),
        event_time_ms: 1_714_557_600_000,
        created_at_ms: 1_714_557_600_250,
        group: Some(BTreeMap::from([("user".to_owned(), "alice".to_owned())])),
        window: Some((1_714_557_540_000, 1_714_557_600_000)),
        value: Some(7.0),
        events: vec![serde_json::json!({"user": "alice", "outcome": "failure"}).into()],
        event_refs: vec![tw_core::EventLocation {
            partition: 1,
            offset: 42,
        }],
        tags: vec!["T1110".to_owned()],
    }
}

/// What the test webhook server saw.
#[derive(Default)]
struct Recorder {
    /// Requests received, accepted or not.
    hits: AtomicUsize,
    /// Answer 500 to this many requests first.
    fail_first: usize,
    /// Never answer (to keep a sink busy).
    hang: bool,
    /// Bodies of accepted requests.
    accepted: Mutex<Vec<Bytes>>,
    /// `Authorization` header of every request.
    authorization: Mutex<Vec<String>>,
    /// Told about every request as it arrives.
    arrivals: Option<mpsc::UnboundedSender<()>>,
}

async fn hook(
    State(recorder): State<Arc<Recorder>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let hit = recorder.hits.fetch_add(1, Ordering::SeqCst);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    recorder.authorization.lock().expect("lock").push(auth);
    if let Some(arrivals) = &recorder.arrivals {
        let _ = arrivals.send(());
    }
    if recorder.hang {
        std::future::pending::<()>().await;
    }
    if hit < recorder.fail_first {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    recorder.accepted.lock().expect("lock").push(body);
    StatusCode::OK
}

async fn serve(recorder: Arc<Recorder>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(recorder);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/hook")
}

fn webhook(name: &str, url: &str) -> WebhookSinkConfig {
    WebhookSinkConfig {
        name: name.to_owned(),
        url: url.to_owned(),
        format: WebhookFormat::Json,
        headers: BTreeMap::from([("Authorization".to_owned(), "Bearer s3cret".to_owned())]),
        timeout_ms: 2_000,
        max_attempts: 5,
        initial_backoff_ms: 1,
        max_backoff_ms: 5,
        allow_private_targets: true,
        queue_capacity: 16,
    }
}

fn read_failed(dir: &Path) -> Vec<FailedDelivery> {
    let text = std::fs::read_to_string(dir.join(FAILED_DELIVERIES_FILE)).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).expect("failed record parses"))
        .collect()
}

const DRAIN: Duration = Duration::from_secs(20);

#[tokio::test]
async fn webhook_retries_server_errors_then_delivers_exactly_once() {
    let recorder = Arc::new(Recorder {
        fail_first: 2,
        ..Default::default()
    });
    let url = serve(Arc::clone(&recorder)).await;
    let failed_dir = tempfile::tempdir().expect("tempdir");
    let dispatcher = Dispatcher::start(
        vec![SinkConfig::Webhook(webhook("soc", &url))],
        failed_dir.path(),
    )
    .expect("start");
    assert_eq!(dispatcher.sink_names(), ["soc"]);
    let sent = alert("k1");
    assert_eq!(
        dispatcher.dispatch(&sent, &[]),
        DispatchReport {
            queued: 1,
            diverted: 0,
            lost: 0
        }
    );
    dispatcher.shutdown(DRAIN).await;

    assert_eq!(
        recorder.hits.load(Ordering::SeqCst),
        3,
        "two 500s, then success"
    );
    let accepted = recorder.accepted.lock().expect("lock").clone();
    assert_eq!(
        accepted,
        vec![Bytes::from(serde_json::to_vec(&sent).expect("json"))]
    );
    assert_eq!(
        serde_json::from_slice::<Alert>(&accepted[0]).expect("alert"),
        sent
    );
    assert_eq!(
        *recorder.authorization.lock().expect("lock"),
        vec!["Bearer s3cret"; 3]
    );
    assert_eq!(read_failed(failed_dir.path()), vec![]);
}

#[tokio::test]
async fn webhook_to_closed_port_ends_in_failed_deliveries_after_max_attempts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    // The listener is dropped: nothing listens on `port` any more.
    let mut config = webhook("dead", &format!("http://127.0.0.1:{port}/hook"));
    config.max_attempts = 3;
    let failed_dir = tempfile::tempdir().expect("tempdir");
    let dispatcher =
        Dispatcher::start(vec![SinkConfig::Webhook(config)], failed_dir.path()).expect("start");
    let sent = alert("k1");
    assert_eq!(dispatcher.dispatch(&sent, &[]).queued, 1);
    dispatcher.shutdown(DRAIN).await;

    let failed = read_failed(failed_dir.path());
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].sink, "dead");
    assert_eq!(failed[0].attempts, 3);
    assert_eq!(failed[0].alert, sent);
    assert_eq!(failed[0].version, 1);
    assert!(
        failed[0].error.starts_with("gave up after 3 attempts: "),
        "{}",
        failed[0].error
    );
}

#[tokio::test]
async fn client_error_is_not_retried() {
    // 404: the route does not exist; retrying cannot help.
    let recorder = Arc::new(Recorder::default());
    let url = serve(Arc::clone(&recorder))
        .await
        .replace("/hook", "/missing");
    let failed_dir = tempfile::tempdir().expect("tempdir");
    let dispatcher = Dispatcher::start(
        vec![SinkConfig::Webhook(webhook("soc", &url))],
        failed_dir.path(),
    )
    .expect("start");
    dispatcher.dispatch(&alert("k1"), &[]);
    dispatcher.shutdown(DRAIN).await;
    let failed = read_failed(failed_dir.path());
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 1);
    assert!(
        failed[0].error.starts_with("http status 404 Not Found"),
        "{}",
        failed[0].error
    );
}

#[tokio::test]
async fn slack_format_posts_a_text_body() {
    let recorder = Arc::new(Recorder::default());
    let url = serve(Arc::clone(&recorder)).await;
    let mut config = webhook("slack", &url);
    config.format = WebhookFormat::Slack;
    let failed_dir = tempfile::tempdir().expect("tempdir");
    let dispatcher =
        Dispatcher::start(vec![SinkConfig::Webhook(config)], failed_dir.path()).expect("start");
    let sent = alert("k1");
    dispatcher.dispatch(&sent, &[]);
    dispatcher.shutdown(DRAIN).await;

    let accepted = recorder.accepted.lock().expect("lock").clone();
    assert_eq!(accepted.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&accepted[0]).expect("json body");
    let expected = format!(
        "[HIGH] Too many failed logins (failed-logins) on stream auth at 2024-05-01T10:00:00.000Z; group user=alice; value 7; alert {}",
        sent.id
    );
    assert_eq!(slack_text(&sent), expected);
    assert_eq!(body, serde_json::json!({ "text": expected }));
}

#[tokio::test]
async fn file_sink_writes_exact_ndjson_lines_and_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path: PathBuf = dir.path().join("out").join("alerts.ndjson");
    let sink = SinkConfig::File(FileSinkConfig {
        name: "file".to_owned(),
        path: path.clone(),
        queue_capacity: 8,
    });
    let sent: Vec<Alert> = ["a", "b", "c"].into_iter().map(alert).collect();
    for round in 0..2 {
        let dispatcher = Dispatcher::start(vec![sink.clone()], dir.path()).expect("start");
        for one in &sent {
            assert_eq!(
                dispatcher.dispatch(one, &["file".to_owned()]).queued,
                1,
                "round {round}"
            );
        }
        dispatcher.shutdown(DRAIN).await;
    }
    let expected: String = sent
        .iter()
        .map(|a| serde_json::to_string(a).expect("json") + "\n")
        .collect();
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        expected.repeat(2)
    );
    assert_eq!(read_failed(dir.path()), vec![]);
}

#[tokio::test]
async fn unknown_sink_names_are_recorded_as_failures_and_duplicates_served_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("alerts.ndjson");
    let sink = SinkConfig::File(FileSinkConfig {
        name: "file".to_owned(),
        path: path.clone(),
        queue_capacity: 8,
    });
    let dispatcher = Dispatcher::start(vec![sink], dir.path()).expect("start");
    let sent = alert("k1");
    let names = ["nope".to_owned(), "file".to_owned(), "file".to_owned()];
    assert_eq!(
        dispatcher.dispatch(&sent, &names),
        DispatchReport {
            queued: 1,
            diverted: 1,
            lost: 0
        }
    );
    dispatcher.shutdown(DRAIN).await;
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        serde_json::to_string(&sent).expect("json") + "\n"
    );
    let failed = read_failed(dir.path());
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (
            failed[0].sink.as_str(),
            failed[0].error.as_str(),
            failed[0].attempts
        ),
        ("nope", "unknown sink \"nope\"", 0)
    );
    assert_eq!(failed[0].alert, sent);
}

#[tokio::test]
async fn full_queue_diverts_to_failed_deliveries_and_shutdown_deadline_keeps_the_rest() {
    let (arrivals, mut arrived) = mpsc::unbounded_channel();
    let recorder = Arc::new(Recorder {
        hang: true,
        arrivals: Some(arrivals),
        ..Default::default()
    });
    let url = serve(Arc::clone(&recorder)).await;
    let mut config = webhook("slow", &url);
    config.queue_capacity = 1;
    config.timeout_ms = 60_000;
    config.max_attempts = 1;
    let failed_dir = tempfile::tempdir().expect("tempdir");
    let dispatcher =
        Dispatcher::start(vec![SinkConfig::Webhook(config)], failed_dir.path()).expect("start");
    let (first, second, third) = (alert("k1"), alert("k2"), alert("k3"));

    assert_eq!(dispatcher.dispatch(&first, &[]).queued, 1);
    // The sink task now holds `first` in a request that never completes, so its queue is empty.
    tokio::time::timeout(DRAIN, arrived.recv())
        .await
        .expect("request arrives")
        .expect("sender alive");
    assert_eq!(
        dispatcher.dispatch(&second, &[]),
        DispatchReport {
            queued: 1,
            diverted: 0,
            lost: 0
        }
    );
    assert_eq!(
        dispatcher.dispatch(&third, &[]),
        DispatchReport {
            queued: 0,
            diverted: 1,
            lost: 0
        }
    );
    let failed = read_failed(failed_dir.path());
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].sink.as_str(), failed[0].attempts), ("slow", 0));
    assert_eq!(
        failed[0].error,
        "queue of sink \"slow\" is full (1 alerts waiting)"
    );
    assert_eq!(failed[0].alert, third);

    let started = std::time::Instant::now();
    dispatcher.shutdown(Duration::from_millis(200)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown honours its deadline"
    );
    let failed = read_failed(failed_dir.path());
    let summary: Vec<(&str, &str, u32)> = failed
        .iter()
        .map(|f| (f.alert.dedup_key.as_str(), f.error.as_str(), f.attempts))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("k3", "queue of sink \"slow\" is full (1 alerts waiting)", 0),
            ("k1", "dispatcher shut down during the request", 1),
            ("k2", "dispatcher shut down before delivery", 0),
        ]
    );
    assert_eq!(recorder.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn start_refuses_invalid_sinks_listing_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut private = webhook("internal", "http://169.254.169.254/latest");
    private.allow_private_targets = false;
    let mut zero = webhook("zero", "https://hooks.example.com/x");
    zero.max_attempts = 0;
    match Dispatcher::start(
        vec![SinkConfig::Webhook(private), SinkConfig::Webhook(zero)],
        dir.path(),
    ) {
        Err(AlertError::InvalidSinks(problems)) => {
            let sinks: Vec<&str> = problems.iter().map(|p| p.sink.as_str()).collect();
            assert_eq!(sinks, ["internal", "zero"]);
            let message = AlertError::InvalidSinks(problems).to_string();
            assert!(
                message.contains("sink \"internal\": url")
                    && message.contains("allow_private_targets"),
                "{message}"
            );
            assert!(
                message.contains("sink \"zero\": max_attempts must be at least 1"),
                "{message}"
            );
        }
        other => panic!("expected InvalidSinks, got {other:?}"),
    }
    assert!(
        !dir.path().join(FAILED_DELIVERIES_FILE).exists(),
        "validation happens before any I/O"
    );
}
