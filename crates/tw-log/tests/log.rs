//! Behaviour of the disk log through the `Log` trait: round trips, rolls, reopen, limits.

mod common;

use bytes::Bytes;
use common::*;
use tw_core::{AppendRecord, StreamName};
use tw_log::{DiskLog, Log, LogError};

#[test]
fn round_trip_across_segment_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let web = stream("web");
    let mut appended = Vec::new();
    {
        let log = open(dir.path(), 2000);
        log.create_stream(&web, 2).unwrap();
        for batch in 0..40u64 {
            let records: Vec<_> = (0..1 + batch % 5)
                .map(|i| record(batch * 10 + i, 1000 + batch as i64, 100))
                .collect();
            let range = append(&log, &web, 1, records.clone());
            assert_eq!(range.start, appended.len() as u64, "offsets are dense");
            assert_eq!(range.end - range.start, records.len() as u64);
            appended.extend(records);
        }
        assert!(
            segment_files(dir.path(), "web", 1).len() > 5,
            "small segments rolled"
        );
        let read = read_all(&log, &web, 1);
        assert_eq!(read.len(), appended.len());
        for (i, (r, a)) in read.iter().zip(&appended).enumerate() {
            assert!(same(r, i as u64, a), "record {i}");
        }
        assert_eq!(
            log.end_offset(&web, 0).unwrap(),
            0,
            "the other partition is untouched"
        );
    }
    let log = open(dir.path(), 2000);
    assert_eq!(log.streams(), vec![(web.clone(), 2)]);
    assert_eq!(log.end_offset(&web, 1).unwrap(), appended.len() as u64);
    let read = read_all(&log, &web, 1);
    assert!(
        read.iter()
            .zip(&appended)
            .enumerate()
            .all(|(i, (r, a))| same(r, i as u64, a))
    );
    // Offsets continue after reopen: never reused.
    let range = append(&log, &web, 1, vec![record(999, 5000, 10)]);
    assert_eq!(range, appended.len() as u64..appended.len() as u64 + 1);
    // Reads from the middle of any segment start exactly there.
    for from in [0u64, 1, 17, 50, appended.len() as u64 - 2] {
        let got = log.read(&web, 1, from, 3, usize::MAX).unwrap();
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            (from..from + 3).collect::<Vec<_>>()
        );
    }
    assert!(
        log.read(&web, 1, appended.len() as u64 + 1, 10, usize::MAX)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn read_limits_by_bytes_but_returns_at_least_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20);
    let s = stream("s");
    log.create_stream(&s, 1).unwrap();
    let records: Vec<_> = (0..10).map(|i| record(i, 1, 100)).collect();
    append(&log, &s, 0, records);
    assert_eq!(
        log.read(&s, 0, 0, 100, 1).unwrap().len(),
        1,
        "one record even over max_bytes"
    );
    assert_eq!(
        log.read(&s, 0, 0, 100, 350).unwrap().len(),
        3,
        "3 x 100 payload bytes fit in 350"
    );
    assert_eq!(log.read(&s, 0, 4, 2, usize::MAX).unwrap().len(), 2);
    assert!(log.read(&s, 0, 0, 0, usize::MAX).unwrap().is_empty());
}

#[test]
fn large_records_span_read_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20);
    let s = stream("big");
    log.create_stream(&s, 1).unwrap();
    // Larger than the 256 KiB read chunk, and mixed with small ones.
    let records = vec![
        record(1, 1, 10),
        record(2, 2, 700_000),
        record(3, 3, 5),
        record(4, 4, 300_000),
    ];
    append(&log, &s, 0, records.clone());
    let read = read_all(&log, &s, 0);
    assert_eq!(read.len(), 4);
    assert!(
        read.iter()
            .zip(&records)
            .enumerate()
            .all(|(i, (r, a))| same(r, i as u64, a))
    );
}

#[test]
fn too_large_record_fails_only_its_request() {
    let dir = tempfile::tempdir().unwrap();
    let log = DiskLog::open(tw_log::LogConfig {
        max_record_bytes: 1000,
        ..config(dir.path(), 1 << 20)
    })
    .unwrap();
    let s = stream("s");
    log.create_stream(&s, 1).unwrap();
    let result =
        futures::executor::block_on(log.append(&s, 0, vec![record(1, 1, 10), record(2, 1, 2000)]));
    assert!(
        matches!(result, Err(LogError::RecordTooLarge { limit: 1000, .. })),
        "{result:?}"
    );
    assert_eq!(
        append(&log, &s, 0, vec![record(3, 1, 900)]),
        0..1,
        "nothing of the refused request stored"
    );
    assert_eq!(log.end_offset(&s, 0).unwrap(), 1);
}

#[test]
fn streams_partitions_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20);
    let web = stream("web");
    let dlq = StreamName::internal("_dlq");
    log.create_stream(&web, 4).unwrap();
    log.create_stream(&web, 4).unwrap();
    log.create_stream(&dlq, 1).unwrap();
    assert!(matches!(
        log.create_stream(&web, 2),
        Err(LogError::PartitionCountMismatch {
            existing: 4,
            requested: 2,
            ..
        })
    ));
    assert!(matches!(
        log.create_stream(&stream("zero"), 0),
        Err(LogError::NoPartitions(_))
    ));
    assert_eq!(log.partitions(&web), Some(4));
    assert_eq!(log.partitions(&stream("nope")), None);
    assert!(matches!(
        log.read(&stream("nope"), 0, 0, 1, 1),
        Err(LogError::UnknownStream(_))
    ));
    assert!(matches!(
        log.end_offset(&web, 4),
        Err(LogError::UnknownPartition { partition: 4, .. })
    ));
    let missing = futures::executor::block_on(log.append(&web, 9, vec![record(1, 1, 1)]));
    assert!(matches!(missing, Err(LogError::UnknownPartition { .. })));
    assert_eq!(
        append(&log, &web, 0, Vec::new()),
        0..0,
        "an empty append is a no-op"
    );
    append(&log, &dlq, 0, vec![record(1, 1, 1)]);
    drop(log);
    let log = open(dir.path(), 1 << 20);
    assert_eq!(
        log.streams(),
        vec![(dlq.clone(), 1), (web, 4)],
        "sorted, internal stream recovered"
    );
    assert_eq!(log.end_offset(&dlq, 0).unwrap(), 1);
}

#[test]
fn subscribe_counts_commits_and_close_stops_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20);
    let s = stream("s");
    log.create_stream(&s, 1).unwrap();
    let rx = log.subscribe();
    let before = *rx.borrow();
    append(&log, &s, 0, vec![record(1, 1, 1)]);
    append(&log, &s, 0, vec![record(2, 1, 1)]);
    assert_eq!(*rx.borrow(), before + 2, "one bump per group commit");
    log.close();
    let closed = futures::executor::block_on(log.append(&s, 0, vec![record(3, 1, 1)]));
    assert!(matches!(closed, Err(LogError::Closed)), "{closed:?}");
    assert_eq!(
        log.read(&s, 0, 0, 10, usize::MAX).unwrap().len(),
        2,
        "reads still work after close"
    );
}

#[test]
fn queued_appends_complete_when_the_log_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = stream("s");
    let log = open(dir.path(), 4096);
    log.create_stream(&s, 1).unwrap();
    let futures: Vec<_> = (0..50)
        .map(|i| log.append(&s, 0, vec![record(i, 1, 50)]))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let handles: Vec<_> = futures.into_iter().map(|f| runtime.spawn(f)).collect();
    // Give the tasks a moment to enqueue, then drop the last handle: queued appends finish.
    std::thread::sleep(std::time::Duration::from_millis(50));
    drop(log);
    let mut ok = 0;
    for h in handles {
        match runtime.block_on(h).unwrap() {
            Ok(_) => ok += 1,
            Err(LogError::Closed) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let log = open(dir.path(), 4096);
    assert_eq!(
        log.end_offset(&s, 0).unwrap(),
        ok,
        "exactly the acknowledged appends are stored"
    );
}

#[test]
fn records_with_empty_key_and_payload_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20);
    let s = stream("s");
    log.create_stream(&s, 1).unwrap();
    let empty = AppendRecord {
        ingest_time_ms: i64::MIN,
        event_time_ms: i64::MAX,
        key: Bytes::new(),
        payload: Bytes::new(),
    };
    append(&log, &s, 0, vec![empty.clone(), empty.clone()]);
    let read = read_all(&log, &s, 0);
    assert!(read.len() == 2 && same(&read[1], 1, &empty));
}

#[test]
fn sealed_segments_get_summaries_equal_to_what_a_rescan_builds() {
    let dir = tempfile::tempdir().unwrap();
    let s = stream("s");
    let mut appended = Vec::new();
    {
        let log = open(dir.path(), 20_000);
        log.create_stream(&s, 1).unwrap();
        for i in 0..60u64 {
            let records: Vec<_> = (0..8)
                .map(|k| record(i * 8 + k, (i * 8 + k) as i64, 150))
                .collect();
            append(&log, &s, 0, records.clone());
            appended.extend(records);
        }
    }
    let segments = segment_files(dir.path(), "s", 0);
    assert!(segments.len() >= 4);
    let summaries: Vec<_> = segments.iter().map(|f| f.with_extension("idx")).collect();
    for (i, idx) in summaries.iter().enumerate() {
        assert_eq!(
            idx.exists(),
            i + 1 < segments.len(),
            "only sealed segments have a summary: {idx:?}"
        );
    }
    let written: Vec<Vec<u8>> = summaries[..summaries.len() - 1]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    // Damage every summary: the log must ignore them, rescan, and rebuild identical ones.
    for idx in &summaries[..summaries.len() - 1] {
        std::fs::write(idx, b"garbage").unwrap();
    }
    {
        let log = open(dir.path(), 20_000);
        let read = read_all(&log, &s, 0);
        assert!(
            read.len() == appended.len()
                && read
                    .iter()
                    .zip(&appended)
                    .enumerate()
                    .all(|(i, (r, a))| same(r, i as u64, a))
        );
        assert_eq!(log.offset_for_time(&s, 0, 333).unwrap(), 333);
    }
    let rebuilt: Vec<Vec<u8>> = summaries[..summaries.len() - 1]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(
        rebuilt, written,
        "scan-built summaries equal the ones written at roll time"
    );
    // With valid summaries, reads from every offset still land exactly.
    let log = open(dir.path(), 20_000);
    for from in (0..appended.len() as u64).step_by(37) {
        let got = log.read(&s, 0, from, 1, usize::MAX).unwrap();
        assert!(same(&got[0], from, &appended[from as usize]), "from {from}");
        assert_eq!(log.offset_for_time(&s, 0, from as i64).unwrap(), from);
    }
}

#[test]
fn a_directory_is_opened_by_one_log_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20);
    match DiskLog::open(config(dir.path(), 1 << 20)) {
        Err(LogError::Locked { path }) => assert_eq!(path, dir.path().join("LOCK")),
        other => panic!("expected the directory to be locked, got {other:?}"),
    }
    drop(log);
    DiskLog::open(config(dir.path(), 1 << 20)).expect("the lock is released with the log");
}
