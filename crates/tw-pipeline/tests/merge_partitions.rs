//! `RunnerConfig::merge_partitions`: a backlog spread over partitions is handed over in
//! receive-time order across partitions (within one slice), not one partition's whole batch
//! ahead of the others' — what detection's event-time watermark needs after a restart.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Recorder, Seen};
use tw_core::{AppendRecord, Offset, StreamName};
use tw_log::{DiskLog, Log, LogConfig, OffsetStore};
use tw_pipeline::{DeadLetterQueue, RunnerConfig, spawn_consumer};

/// Three partitions with a backlog received over ten minutes: a quiet one (one record every
/// 2 s) and two busy ones (every 50 ms, every 20 ms), so one batch of the quiet partition spans
/// far more time than a batch of a busy one.
async fn backlog(log: &Arc<dyn Log>, stream: &StreamName) -> usize {
    log.create_stream(stream, 3).unwrap();
    let start = 1_700_000_000_000i64;
    let mut total = 0;
    for (partition, every_ms) in [(0u32, 2_000i64), (1, 50), (2, 20)] {
        let records: Vec<AppendRecord> = (0..600_000 / every_ms)
            .map(|i| AppendRecord {
                ingest_time_ms: start + i * every_ms,
                event_time_ms: start + i * every_ms,
                key: Bytes::new(),
                payload: Bytes::from_static(b"{\"a\":1}"),
            })
            .collect();
        total += records.len();
        log.append(stream, partition, records).await.unwrap();
    }
    total
}

async fn run(merge: Option<Duration>) -> Vec<(u32, Offset, i64)> {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let stream = StreamName::new("s").unwrap();
    let total = backlog(&log, &stream).await;
    let dlq = DeadLetterQueue::open(log.clone()).unwrap();
    let offsets = Arc::new(OffsetStore::open(dir.path().join("offsets")).unwrap());
    let seen = Seen::default();
    let shutdown = Arc::new(AtomicBool::new(false));
    let consumer = spawn_consumer(
        Recorder::boxed(seen.clone(), Duration::ZERO),
        log.clone(),
        offsets,
        dlq,
        RunnerConfig {
            max_batch_records: 1000,
            merge_partitions: merge,
            ..RunnerConfig::default()
        },
        shutdown.clone(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < total {
        assert!(
            Instant::now() < deadline,
            "the consumer never read the backlog"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.store(true, Ordering::Relaxed);
    consumer.thread.join().unwrap();
    seen.lock().unwrap().clone()
}

/// How far the receive time handed over ever went back: the largest gap between the newest
/// time handed over so far and a record handed over after it.
fn largest_step_back(seen: &[(u32, Offset, i64)]) -> i64 {
    let mut newest = None::<i64>;
    let mut largest = 0;
    for &(_, _, time) in seen {
        let before = newest.unwrap_or(time);
        largest = largest.max(before - time);
        newest = Some(before.max(time));
    }
    largest
}

fn assert_each_partition_once_in_order(seen: &[(u32, Offset, i64)]) {
    for partition in 0..3 {
        let offsets: Vec<Offset> = seen
            .iter()
            .filter(|(p, _, _)| *p == partition)
            .map(|(_, offset, _)| *offset)
            .collect();
        let expected: Vec<Offset> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, expected,
            "partition {partition}: every record once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_partitions_are_handed_over_in_receive_time_order() {
    let seen = run(Some(Duration::from_millis(500))).await;
    assert_eq!(seen.len(), 300 + 12_000 + 30_000);
    assert_each_partition_once_in_order(&seen);
    let back = largest_step_back(&seen);
    assert!(
        back < 500,
        "records went back {back} ms in receive time (slice: 500 ms)"
    );
}

/// The same backlog read partition after partition goes back by most of a quiet batch's span:
/// the failure the merge exists for (and a check that the test above can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_read_in_turn_go_back_in_receive_time() {
    let seen = run(None).await;
    assert_each_partition_once_in_order(&seen);
    let back = largest_step_back(&seen);
    assert!(back > 60_000, "records went back only {back} ms");
}
