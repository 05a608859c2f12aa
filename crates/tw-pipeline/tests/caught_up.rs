//! `ConsumerProgress::wait_caught_up` waits for what the log held when it was called, not for
//! records appended meanwhile: under steady ingest a query's read-your-writes wait ends as
//! soon as the lake has what was acknowledged before the query, instead of always timing out.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Recorder, Seen};
use tw_core::{AppendRecord, StreamName};
use tw_log::{DiskLog, Log, LogConfig, OffsetStore};
use tw_pipeline::{DeadLetterQueue, RunnerConfig, spawn_consumer};

fn record() -> AppendRecord {
    AppendRecord {
        ingest_time_ms: 1,
        event_time_ms: 1,
        key: Bytes::new(),
        payload: Bytes::from_static(b"{\"a\":1}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_ends_once_what_was_there_at_the_call_is_handled() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let stream = StreamName::new("s").unwrap();
    log.create_stream(&stream, 1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = spawn_consumer(
        // Takes its time over every batch, like a lake writing Parquet.
        Recorder::boxed(Seen::default(), Duration::from_millis(20)),
        log.clone(),
        Arc::new(OffsetStore::open(dir.path().join("offsets")).unwrap()),
        DeadLetterQueue::open(log.clone()).unwrap(),
        RunnerConfig::default(),
        stop.clone(),
    )
    .unwrap();
    // Steady ingest: a record every millisecond, while the consumer takes 20 ms per batch, so it is
    // always a few records behind the log's end.
    let appending = Arc::new(AtomicBool::new(true));
    let appender = {
        let (log, stream, appending) = (log.clone(), stream.clone(), appending.clone());
        tokio::spawn(async move {
            while appending.load(Ordering::Relaxed) {
                log.append(&stream, 0, vec![record()]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let end = log.end_offset(&stream, 0).unwrap();
        let started = Instant::now();
        let caught_up = consumer
            .progress
            .wait_caught_up(log.as_ref(), None, Duration::from_secs(5))
            .await;
        assert!(caught_up, "timed out after {:?}", started.elapsed());
        assert!(consumer.progress.position(&stream, 0).unwrap() >= end);
        // One or two of the consumer's batches (20 ms each), not a chase after every append.
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }
    appending.store(false, Ordering::Relaxed);
    appender.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    consumer.thread.join().unwrap();
}
