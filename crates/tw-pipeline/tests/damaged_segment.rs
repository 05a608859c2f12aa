//! Damage on disk inside the log (a flipped bit the checksums catch) neither stops a consumer
//! for good nor loses records silently: the consumer gets every record but the damaged one,
//! and one dead letter names it and the damage. Regression: the read error stopped the
//! consumer's thread, for every stream it consumed; later, the consumer skipped the rest of
//! the damaged segment, and stopped at damage in the segment being written.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Recorder, Seen};
use tw_core::{AppendRecord, Offset, StreamName};
use tw_log::testing::damage_record;
use tw_log::{DiskLog, Log, LogConfig, OffsetStore};
use tw_pipeline::{DeadLetterQueue, RunnerConfig, spawn_consumer};

const RECORDS: u64 = 20;

fn open(dir: &std::path::Path, segment_max_bytes: u64) -> Arc<dyn Log> {
    DiskLog::open(LogConfig {
        segment_max_bytes,
        ..LogConfig::new(dir.join("log"))
    })
    .unwrap()
}

/// Appends records `from..to` of `s/0` (creating the stream), one append each (segments roll
/// between them).
fn append(log: &dyn Log, stream: &StreamName, from: u64, to: u64) {
    log.create_stream(stream, 1).unwrap();
    for n in from..to {
        let record = AppendRecord {
            ingest_time_ms: 1,
            event_time_ms: 1,
            key: Bytes::new(),
            payload: Bytes::from(format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(80))),
        };
        futures::executor::block_on(log.append(stream, 0, vec![record])).unwrap();
    }
}

/// The segment files of partition 0 of `s`, oldest first.
fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("log/s/0"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Flips a bit of the record at `offset` of `s/0`, which must be in the first segment file;
/// returns its frame's byte position.
fn damage(dir: &std::path::Path, offset: Offset) -> u64 {
    let (file, position) = damage_record(&dir.join("log/s/0"), offset);
    assert_eq!(file, segment_files(dir)[0]);
    position
}

struct Consumer {
    running: tw_pipeline::RunningConsumer,
    seen: Seen,
    dlq: DeadLetterQueue,
    stop: Arc<AtomicBool>,
}

impl Consumer {
    fn spawn(dir: &std::path::Path, log: Arc<dyn Log>) -> Consumer {
        let dlq = DeadLetterQueue::open(log.clone()).unwrap();
        let seen = Seen::default();
        let stop = Arc::new(AtomicBool::new(false));
        let running = spawn_consumer(
            Recorder::boxed(seen.clone(), Duration::ZERO),
            log,
            Arc::new(OffsetStore::open(dir.join("offsets")).unwrap()),
            dlq.clone(),
            RunnerConfig::default(),
            stop.clone(),
        )
        .unwrap();
        Consumer {
            running,
            seen,
            dlq,
            stop,
        }
    }

    fn wait_for(&self, stream: &StreamName, position: Offset) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.running.progress.position(stream, 0) != Some(position) {
            assert!(
                !self.running.thread.is_finished(),
                "the consumer stopped at the damage"
            );
            assert!(Instant::now() < deadline, "the consumer never got past it");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(self.running.progress.failing(), None);
    }

    fn handed(&self) -> Vec<Offset> {
        self.seen.lock().unwrap().iter().map(|s| s.1).collect()
    }

    /// The one dead letter, checked to name `offset` and the damage at byte `position`.
    fn check_letter(&self, offset: Offset, position: u64) {
        let letters = self.dlq.list(0, 10, None).unwrap();
        assert_eq!(letters.len(), 1, "{letters:?}");
        let letter = &letters[0].letter;
        assert_eq!(letter.stage, "consumer:recorder");
        assert_eq!(
            (letter.source_partition, letter.source_offset),
            (Some(0), Some(offset))
        );
        let expected = format!(
            "record {offset} of s/0 cannot be read and was skipped: segment 0 of s/0 is \
             corrupted at byte {position}"
        );
        assert!(letter.reason.starts_with(&expected), "{}", letter.reason);
        assert!(letter.raw.is_empty());
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.running.thread.join().unwrap();
    }
}

#[test]
fn a_consumer_skips_a_damaged_record_of_a_sealed_segment_with_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let stream = StreamName::new("s").unwrap();
    // Small segments: a few records each, so that the damaged one is sealed.
    append(&*open(dir.path(), 500), &stream, 0, RECORDS);
    assert!(segment_files(dir.path()).len() >= 3);
    // The second record, in the first (sealed) segment.
    let position = damage(dir.path(), 1);

    let consumer = Consumer::spawn(dir.path(), open(dir.path(), 500));
    consumer.wait_for(&stream, RECORDS);
    let expected: Vec<Offset> = (0..RECORDS).filter(|n| *n != 1).collect();
    assert_eq!(consumer.handed(), expected);
    consumer.check_letter(1, position);
    consumer.stop();
}

/// Damage in the segment being written, found while the log runs and appends go on.
#[test]
fn a_consumer_skips_a_damaged_record_of_the_active_segment_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let stream = StreamName::new("s").unwrap();
    let log = open(dir.path(), 1 << 20);
    append(&*log, &stream, 0, 5);
    let position = damage(dir.path(), 2);

    let consumer = Consumer::spawn(dir.path(), log.clone());
    consumer.wait_for(&stream, 5);
    append(&*log, &stream, 5, 8);
    consumer.wait_for(&stream, 8);
    assert_eq!(consumer.handed(), [0, 1, 3, 4, 5, 6, 7]);
    consumer.check_letter(2, position);
    consumer.stop();
}
