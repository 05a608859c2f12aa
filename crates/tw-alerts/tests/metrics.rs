//! `tidewatch_alert_deliveries_total{sink,outcome}` counts every terminal outcome once.
//! Its own test binary: it installs a process-wide metrics recorder.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use tw_alerts::{Dispatcher, FileSinkConfig, SinkConfig, WebhookFormat, WebhookSinkConfig};
use tw_core::{Alert, Severity};

/// (name, sink, outcome) -> count.
type Counts = Arc<Mutex<BTreeMap<(String, String, String), Arc<Count>>>>;

#[derive(Default)]
struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::SeqCst);
    }
}

struct CountingRecorder(Counts);

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let label = |name: &str| {
            key.labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
                .unwrap_or_default()
        };
        let id = (key.name().to_owned(), label("sink"), label("outcome"));
        let mut counts = self.0.lock().expect("lock");
        Counter::from_arc(Arc::clone(counts.entry(id).or_default()))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test]
async fn every_outcome_is_counted_once_per_sink() {
    let counts = Counts::default();
    metrics::set_global_recorder(CountingRecorder(Arc::clone(&counts)))
        .expect("first recorder of this binary");

    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dead = WebhookSinkConfig {
        name: "dead".to_owned(),
        url: format!("http://127.0.0.1:{port}/"),
        format: WebhookFormat::Json,
        headers: BTreeMap::new(),
        timeout_ms: 2_000,
        max_attempts: 2,
        initial_backoff_ms: 1,
        max_backoff_ms: 1,
        allow_private_targets: true,
        queue_capacity: 4,
    };
    let file = FileSinkConfig {
        name: "file".to_owned(),
        path: dir.path().join("out.ndjson"),
        queue_capacity: 4,
    };
    let dispatcher = Dispatcher::start(
        vec![SinkConfig::Webhook(dead), SinkConfig::File(file)],
        dir.path(),
    )
    .expect("start");
    for key in ["a", "b"] {
        let alert = Alert {
            id: Alert::id_for(key),
            dedup_key: key.to_owned(),
            rule_id: "r".to_owned(),
            rule_title: "R".to_owned(),
            rule_version: 1,
            severity: Severity::Low,
            stream: "s".to_owned(),
            event_time_ms: 0,
            created_at_ms: 0,
            group: None,
            window: None,
            value: None,
            events: vec![],
            event_refs: vec![],
            tags: vec![],
        };
        dispatcher.dispatch(
            &alert,
            &["dead".to_owned(), "file".to_owned(), "ghost".to_owned()],
        );
    }
    dispatcher.shutdown(Duration::from_secs(20)).await;

    let observed: BTreeMap<(String, String), u64> = counts
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, count)| count.0.load(Ordering::SeqCst) > 0)
        .map(|((name, sink, outcome), count)| {
            assert_eq!(name, "tidewatch_alert_deliveries_total");
            (
                (sink.clone(), outcome.clone()),
                count.0.load(Ordering::SeqCst),
            )
        })
        .collect();
    let expected: BTreeMap<(String, String), u64> = [
        ("dead", "failed", 2),
        ("file", "delivered", 2),
        ("ghost", "unknown_sink", 2),
    ]
    .into_iter()
    .map(|(sink, outcome, n)| ((sink.to_owned(), outcome.to_owned()), n))
    .collect();
    assert_eq!(observed, expected);
}
