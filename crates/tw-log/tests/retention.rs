//! Retention by size and age, and replay from a time.

mod common;

use common::*;
use tw_core::Retention;
use tw_log::Log;

/// 30 single-record appends of 100-byte payloads at ingest times 1000, 1010, ... into
/// segments of 3 records each (rolls happen once a segment reaches 300 bytes).
fn setup(dir: &std::path::Path) -> std::sync::Arc<tw_log::DiskLog> {
    let log = open(dir, 300);
    let s = stream("r");
    log.create_stream(&s, 1).unwrap();
    for i in 0..30u64 {
        append(&log, &s, 0, vec![record(i, 1000 + 10 * i as i64, 100)]);
    }
    assert_eq!(segment_files(dir, "r", 0).len(), 10);
    log
}

fn retention(max_age_secs: Option<u64>, max_bytes: Option<u64>) -> Retention {
    Retention {
        max_age_secs,
        max_bytes,
    }
}

#[test]
fn retention_by_size_deletes_oldest_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path());
    let s = stream("r");
    let sizes: Vec<u64> = segment_files(dir.path(), "r", 0)
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .collect();
    assert_eq!(log.size_bytes(&s, 0).unwrap(), sizes.iter().sum::<u64>());
    // A limit between the 4 and the 5 newest segments' total: the 6 oldest go.
    let newest_four: u64 = sizes[6..].iter().sum();
    let limit = newest_four + sizes[5] / 2;
    let deleted = log
        .apply_retention(&s, 0, &retention(None, Some(limit)), 0)
        .unwrap();
    assert_eq!(deleted, 6);
    assert_eq!(log.start_offset(&s, 0).unwrap(), 18);
    assert_eq!(log.size_bytes(&s, 0).unwrap(), newest_four);
    assert_eq!(segment_files(dir.path(), "r", 0).len(), 4);
    // Reading from a deleted offset starts at the first retained one.
    assert_eq!(log.read(&s, 0, 0, 1, usize::MAX).unwrap()[0].offset, 18);
    // Even a limit of zero never deletes the active segment.
    assert_eq!(
        log.apply_retention(&s, 0, &retention(None, Some(0)), 0)
            .unwrap(),
        3
    );
    assert_eq!(log.start_offset(&s, 0).unwrap(), 27);
    assert_eq!(log.end_offset(&s, 0).unwrap(), 30);
    drop(log);
    let log = open(dir.path(), 300);
    assert_eq!(
        log.start_offset(&s, 0).unwrap(),
        27,
        "retention survives reopen"
    );
    assert_eq!(
        read_all(&log, &s, 0)
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>(),
        vec![27, 28, 29]
    );
    assert_eq!(append(&log, &s, 0, vec![record(1, 1, 1)]), 30..31);
}

#[test]
fn retention_by_age_uses_each_segments_newest_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path());
    let s = stream("r");
    // Segment k holds ingest times 1000+30k .. 1000+30k+20. Now = 2000 s + 1080 ms, age 2000 s:
    // cutoff 1080 ms; segments whose newest record is before 1080 are 0 (1020) and 1 (1050);
    // segment 2's newest is 1080, not older than the cutoff.
    let deleted = log
        .apply_retention(&s, 0, &retention(Some(2000), None), 2_000_000 + 1080)
        .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(log.start_offset(&s, 0).unwrap(), 6);
    assert_eq!(
        log.apply_retention(&s, 0, &retention(Some(2000), None), 2_000_000 + 1080)
            .unwrap(),
        0
    );
    // Everything expired: all sealed segments go, the active one stays.
    assert_eq!(
        log.apply_retention(&s, 0, &retention(Some(1), None), 1_000_000_000)
            .unwrap(),
        7
    );
    assert_eq!(log.start_offset(&s, 0).unwrap(), 27);
    assert_eq!(
        log.apply_retention(&s, 0, &retention(None, None), i64::MAX)
            .unwrap(),
        0
    );
}

#[test]
fn offset_for_time_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path());
    let s = stream("r");
    assert_eq!(log.offset_for_time(&s, 0, i64::MIN).unwrap(), 0);
    for i in 0..30u64 {
        let t = 1000 + 10 * i as i64;
        assert_eq!(log.offset_for_time(&s, 0, t).unwrap(), i, "exact time {t}");
        assert_eq!(
            log.offset_for_time(&s, 0, t - 9).unwrap(),
            i,
            "just after the previous record"
        );
    }
    assert_eq!(
        log.offset_for_time(&s, 0, 1291).unwrap(),
        30,
        "after the last record: the end"
    );
    log.apply_retention(&s, 0, &retention(None, Some(0)), 0)
        .unwrap();
    assert_eq!(
        log.offset_for_time(&s, 0, 0).unwrap(),
        27,
        "before the first retained record"
    );
    assert_eq!(log.offset_for_time(&s, 0, 1275).unwrap(), 28);
}

#[test]
fn offset_for_time_on_an_empty_partition_is_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 300);
    let s = stream("e");
    log.create_stream(&s, 1).unwrap();
    assert_eq!(log.offset_for_time(&s, 0, 0).unwrap(), 0);
}
