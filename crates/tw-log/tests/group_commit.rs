//! Many concurrent appenders: every append resolves, offsets are unique and contiguous per
//! partition, and each range holds exactly the records of the call that got it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use tw_log::{DiskLog, Log, LogConfig};

const PARTITIONS: u32 = 4;
const TASKS: u64 = 8;
const APPENDS_PER_TASK: u64 = 60;

fn run(config: LogConfig) {
    let log = DiskLog::open(config).unwrap();
    let s = stream("events");
    log.create_stream(&s, PARTITIONS).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        let mut handles = Vec::new();
        for task in 0..TASKS {
            let log: Arc<DiskLog> = Arc::clone(&log);
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..APPENDS_PER_TASK {
                    let partition = ((task + i) % u64::from(PARTITIONS)) as u32;
                    let n = 1 + (task * 7 + i) % 4;
                    let tag = task * 1_000_000 + i * 10;
                    let records: Vec<_> = (0..n).map(|k| record(tag + k, tag as i64, 64)).collect();
                    let range = log.append(&s, partition, records.clone()).await.unwrap();
                    got.push((partition, range, records));
                }
                got
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all
    });
    assert_eq!(
        results.len() as u64,
        TASKS * APPENDS_PER_TASK,
        "every append resolved"
    );
    let mut by_partition: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for (partition, range, records) in results {
        assert_eq!(range.end - range.start, records.len() as u64);
        by_partition
            .entry(partition)
            .or_default()
            .push((range, records));
    }
    for (partition, mut calls) in by_partition {
        calls.sort_by_key(|(range, _)| range.start);
        let mut expected_start = 0;
        for (range, _) in &calls {
            assert_eq!(
                range.start, expected_start,
                "partition {partition}: gap or overlap"
            );
            expected_start = range.end;
        }
        assert_eq!(log.end_offset(&s, partition).unwrap(), expected_start);
        let read = read_all(&log, &s, partition);
        assert_eq!(read.len() as u64, expected_start);
        for (range, records) in &calls {
            for (k, offset) in range.clone().enumerate() {
                assert!(
                    same(&read[offset as usize], offset, &records[k]),
                    "p{partition} offset {offset}"
                );
            }
        }
    }
}

#[test]
fn concurrent_appends_get_unique_contiguous_offsets() {
    let dir = tempfile::tempdir().unwrap();
    run(config(dir.path(), 16 * 1024));
}

#[test]
fn concurrent_appends_with_a_commit_interval() {
    let dir = tempfile::tempdir().unwrap();
    run(LogConfig {
        commit_interval_ms: 2,
        ..config(dir.path(), 16 * 1024)
    });
}

#[test]
fn appends_from_plain_threads_while_readers_follow() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 8 * 1024);
    let s = stream("t");
    log.create_stream(&s, 2).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let log = &log;
            let s = &s;
            scope.spawn(move || {
                for i in 0..50 {
                    append(log, s, (t % 2) as u32, vec![record(t * 1000 + i, 1, 80)]);
                }
            });
        }
        // A reader racing the writers only ever sees a dense, durable prefix.
        let log = &log;
        let s = &s;
        scope.spawn(move || {
            for _ in 0..200 {
                for p in 0..2 {
                    let end = log.end_offset(s, p).unwrap();
                    let read = read_all(log, s, p);
                    assert!(read.len() as u64 >= end);
                    assert!(read.iter().enumerate().all(|(i, r)| r.offset == i as u64));
                }
            }
        });
    });
    assert_eq!(
        log.end_offset(&s, 0).unwrap() + log.end_offset(&s, 1).unwrap(),
        200
    );
}
