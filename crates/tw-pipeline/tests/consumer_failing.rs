//! A consumer stuck retrying a failing batch is visible: its lag gauges keep following the
//! log's end, `tidewatch_consumer_failing` says 1, and its progress reports it unready once it
//! has failed for longer than its threshold; all of it clears when the batch goes through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use tw_core::{AppendRecord, StreamName, now_ms};
use tw_log::{DiskLog, Log, LogConfig, OffsetStore};
use tw_pipeline::{DeadLetterQueue, RunnerConfig, Unready, spawn_consumer};
use tw_testkit::consumer::Flaky;

/// The last value of every counter and gauge, by `name{label=value,...}` (labels in the order
/// given).
#[derive(Default)]
struct Values(Mutex<HashMap<String, Arc<Value>>>);

/// An f64 as bits, so that counters and gauges share one cell type.
#[derive(Default)]
struct Value(AtomicU64);

impl Value {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::SeqCst))
    }
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
    }
}

impl CounterFn for Value {
    fn increment(&self, value: u64) {
        self.update(|v| v + value as f64);
    }
    fn absolute(&self, value: u64) {
        self.update(|_| value as f64);
    }
}

impl GaugeFn for Value {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

impl Values {
    fn cell(&self, key: &Key) -> Arc<Value> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.0.lock().unwrap().entry(name).or_default().clone()
    }

    fn get(&self, name: &str) -> Option<f64> {
        self.0.lock().unwrap().get(name).map(|v| v.get())
    }
}

struct TestRecorder(&'static Values);

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn values() -> &'static Values {
    static VALUES: OnceLock<&'static Values> = OnceLock::new();
    VALUES.get_or_init(|| {
        let values: &'static Values = Box::leak(Box::default());
        metrics::set_global_recorder(TestRecorder(values)).expect("one recorder per test binary");
        values
    })
}

/// `count` records received a minute ago.
fn minute_old(count: usize) -> Vec<AppendRecord> {
    let received = now_ms() - 60_000;
    (0..count)
        .map(|_| AppendRecord {
            ingest_time_ms: received,
            event_time_ms: received,
            key: Bytes::new(),
            payload: Bytes::from_static(b"{\"a\":1}"),
        })
        .collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_consumer_shows_growing_lag_and_failing_until_it_recovers() {
    let values = values();
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let stream = StreamName::new("s").unwrap();
    log.create_stream(&stream, 1).unwrap();
    log.append(&stream, 0, minute_old(3)).await.unwrap();
    let broken = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let running = spawn_consumer(
        Flaky::boxed("stuck", broken.clone()),
        log.clone(),
        Arc::new(OffsetStore::open(dir.path().join("offsets")).unwrap()),
        DeadLetterQueue::open(log.clone()).unwrap(),
        RunnerConfig {
            unready_after_failing: Duration::from_millis(300),
            ..RunnerConfig::default()
        },
        stop.clone(),
    )
    .unwrap();
    let progress = running.progress.clone();
    let lag = "tidewatch_consumer_lag_events{consumer=stuck,stream=s,partition=0}";
    let lag_seconds = "tidewatch_consumer_lag_seconds{consumer=stuck,stream=s,partition=0}";
    let failing = "tidewatch_consumer_failing{consumer=stuck}";

    eventually("the first failure", || progress.failing().is_some()).await;
    assert_eq!(values.get(failing), Some(1.0));
    // More arrives while it is stuck: the lag follows the log's end, not the last success.
    log.append(&stream, 0, minute_old(5)).await.unwrap();
    eventually("a lag of 8", || values.get(lag) == Some(8.0)).await;
    let behind = values.get(lag_seconds).unwrap();
    assert!((59.0..120.0).contains(&behind), "lag of {behind} s");
    let errors = values
        .get("tidewatch_consumer_errors_total{consumer=stuck}")
        .unwrap();
    assert!(errors >= 2.0, "{errors} errors counted");
    eventually("unready", || {
        matches!(progress.unready(), Some(Unready::Failing { last_error, .. }) if last_error == "stuck: disk full")
    })
    .await;
    assert_eq!(progress.position(&stream, 0), None);

    broken.store(false, Ordering::Relaxed);
    eventually("caught up", || progress.position(&stream, 0) == Some(8)).await;
    // The gauges are set just after the position moves.
    eventually("no lag", || values.get(lag) == Some(0.0)).await;
    assert_eq!(values.get(lag_seconds), Some(0.0));
    assert_eq!(values.get(failing), Some(0.0));
    assert_eq!(progress.unready(), None);
    assert_eq!(progress.failing(), None);

    stop.store(true, Ordering::Relaxed);
    running.thread.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_of_a_deleted_stream_stops_counting_as_a_failure() {
    let values = values();
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let stream = StreamName::new("doomed").unwrap();
    log.create_stream(&stream, 1).unwrap();
    log.append(&stream, 0, minute_old(2)).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let running = spawn_consumer(
        Flaky::boxed("orphaned", Arc::new(AtomicBool::new(true))),
        log.clone(),
        Arc::new(OffsetStore::open(dir.path().join("offsets")).unwrap()),
        DeadLetterQueue::open(log.clone()).unwrap(),
        RunnerConfig::default(),
        stop.clone(),
    )
    .unwrap();
    let progress = running.progress.clone();
    eventually("the first failure", || progress.failing().is_some()).await;
    // Nothing else will ever be handled: only the deletion can end this failure.
    log.delete_stream(&stream).unwrap();
    eventually("the failure to end", || {
        progress.failing().is_none()
            && values.get("tidewatch_consumer_failing{consumer=orphaned}") == Some(0.0)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    running.thread.join().unwrap();
}
