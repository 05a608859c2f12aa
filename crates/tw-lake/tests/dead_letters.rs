//! The lake behind the real consumer runner: a stored record that is not JSON goes to the
//! dead-letter queue with its offset and the reason, whether the runner's object check
//! catches it or the lake finds it while converting, and the records around it are written.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use tw_core::AppendRecord;
use tw_log::{DiskLog, Log, LogConfig, OffsetStore};
use tw_pipeline::{DeadLetterQueue, RunnerConfig, spawn_consumer};

#[test]
fn unreadable_stored_records_become_dead_letters_and_the_rest_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let ct = stream("ct");
    log.create_stream(&ct, 1).unwrap();
    let payloads: [&[u8]; 4] = [
        br#"{"user": "alice"}"#,
        // Starts as an object, so only the lake's one read of the JSON can tell.
        br#"{"user": "bob", "new": "#,
        br#"{"user": "carol"}"#,
        // Caught by the runner's check before the lake sees it.
        b"not json",
    ];
    let records = payloads
        .iter()
        .map(|payload| AppendRecord {
            ingest_time_ms: T0,
            event_time_ms: T0,
            key: Bytes::new(),
            payload: Bytes::copy_from_slice(payload),
        })
        .collect();
    futures::executor::block_on(log.append(&ct, 0, records)).unwrap();

    let dlq = DeadLetterQueue::open(log.clone()).unwrap();
    let offsets = Arc::new(OffsetStore::open(dir.path().join("offsets")).unwrap());
    let lake = open(&dir.path().join("lake"));
    let shutdown = Arc::new(AtomicBool::new(false));
    let consumer = spawn_consumer(
        Box::new(lake.writer()),
        log.clone(),
        offsets,
        dlq.clone(),
        RunnerConfig::default(),
        shutdown.clone(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.progress.position(&ct, 0) != Some(4) || dlq.len().unwrap() < 2 {
        assert!(Instant::now() < deadline, "the lake never read the records");
        std::thread::sleep(Duration::from_millis(5));
    }

    let mut letters: Vec<_> = dlq
        .list(0, 10, Some("ct"))
        .unwrap()
        .into_iter()
        .map(|entry| entry.letter)
        .collect();
    letters.sort_by_key(|letter| letter.source_offset);
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (letter, offset) in letters.iter().zip([1, 3]) {
        assert_eq!(letter.stage, "consumer:lake");
        assert_eq!(letter.source_partition, Some(0));
        assert_eq!(letter.source_offset, Some(offset));
        assert!(
            letter
                .reason
                .starts_with("stored record is not valid JSON: "),
            "{}",
            letter.reason
        );
        assert_eq!(letter.raw_bytes(), payloads[offset as usize]);
    }

    let snapshot = lake.hot_snapshot(&ct);
    assert_eq!(visible(&lake, "ct", &snapshot), [(0, 0), (0, 2)]);
    assert!(
        lake.table_schema(&ct)
            .unwrap()
            .column_with_name("new")
            .is_none()
    );
    shutdown.store(true, Ordering::Relaxed);
    consumer.thread.join().unwrap();
}
