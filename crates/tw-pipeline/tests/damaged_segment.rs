//! Damage on disk inside a sealed log segment (a flipped bit the checksums catch) neither
//! stops a consumer for good nor loses records silently: the consumer gets every record before
//! the damage and every record of the next segments, and one dead letter names the skipped
//! range and the damage. Regression: the read error stopped the consumer's thread, for every
//! stream it consumed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Recorder, Seen};
use tw_core::{AppendRecord, Offset, StreamName};
use tw_log::{DiskLog, Log, LogConfig, OffsetStore};
use tw_pipeline::{DeadLetterQueue, RunnerConfig, spawn_consumer};

const RECORDS: u64 = 20;

fn open(dir: &std::path::Path) -> Arc<dyn Log> {
    // Small segments: a few records each, so that the damaged one is sealed.
    DiskLog::open(LogConfig {
        segment_max_bytes: 500,
        ..LogConfig::new(dir.join("log"))
    })
    .unwrap()
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

/// Where each frame of a segment file ends (u32 length of what follows an 8-byte header).
fn frame_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        pos += 8 + u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        ends.push(pos);
    }
    ends
}

#[test]
fn a_consumer_skips_a_damaged_segment_range_with_a_dead_letter_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let stream = StreamName::new("s").unwrap();
    {
        let log = open(dir.path());
        log.create_stream(&stream, 1).unwrap();
        // One append each: segments roll between group commits.
        for n in 0..RECORDS {
            let record = AppendRecord {
                ingest_time_ms: 1,
                event_time_ms: 1,
                key: Bytes::new(),
                payload: Bytes::from(format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(80))),
            };
            futures::executor::block_on(log.append(&stream, 0, vec![record])).unwrap();
        }
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let ends = frame_ends(&bytes);
    assert!(ends.len() >= 3, "{ends:?}");
    // A payload byte of the second frame of the first (sealed) segment.
    bytes[ends[0] + 40] ^= 1;
    std::fs::write(&files[0], &bytes).unwrap();
    let next_segment = ends.len() as Offset;

    let log = open(dir.path());
    let dlq = DeadLetterQueue::open(log.clone()).unwrap();
    let seen = Seen::default();
    let stop = Arc::new(AtomicBool::new(false));
    let running = spawn_consumer(
        Recorder::boxed(seen.clone(), Duration::ZERO),
        log.clone(),
        Arc::new(OffsetStore::open(dir.path().join("offsets")).unwrap()),
        dlq.clone(),
        RunnerConfig::default(),
        stop.clone(),
    )
    .unwrap();
    let progress = running.progress.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while progress.position(&stream, 0) != Some(RECORDS) {
        assert!(
            !running.thread.is_finished(),
            "the consumer stopped at the damage"
        );
        assert!(Instant::now() < deadline, "the consumer never got past it");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(progress.failing(), None);

    let handed: Vec<Offset> = seen.lock().unwrap().iter().map(|s| s.1).collect();
    let expected: Vec<Offset> = std::iter::once(0).chain(next_segment..RECORDS).collect();
    assert_eq!(handed, expected);
    let letters = dlq.list(0, 10, None).unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0].letter;
    assert_eq!(letter.stage, "consumer:recorder");
    assert_eq!(
        (letter.source_partition, letter.source_offset),
        (Some(0), Some(1))
    );
    assert!(
        letter.reason.starts_with(&format!(
            "records 1 to {} of s/0 cannot be read and were skipped: segment 0 of s/0 is \
             corrupted at byte {}",
            next_segment - 1,
            ends[0]
        )),
        "{}",
        letter.reason
    );
    assert!(letter.raw.is_empty());
    stop.store(true, Ordering::Relaxed);
    running.thread.join().unwrap();
}
