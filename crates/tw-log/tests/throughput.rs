//! Ingest throughput, run by hand: `cargo test -p tw-log --release --test throughput -- --ignored --nocapture`.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use tw_log::{DiskLog, Log};

#[test]
#[ignore = "a measurement, not a check; run by hand in release mode"]
fn durable_append_throughput_with_four_partitions() {
    const PARTITIONS: u32 = 4;
    const BATCH: usize = 100;
    const BATCHES_PER_TASK: usize = 250;
    const TASKS_PER_PARTITION: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 << 20);
    let s = stream("bench");
    log.create_stream(&s, PARTITIONS).unwrap();
    let batch: Vec<_> = (0..BATCH as u64)
        .map(|i| record(i, 1_700_000_000_000, 650))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let started = Instant::now();
    runtime.block_on(async {
        let mut handles = Vec::new();
        for task in 0..PARTITIONS as usize * TASKS_PER_PARTITION {
            let log: Arc<DiskLog> = Arc::clone(&log);
            let s = s.clone();
            let batch = batch.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..BATCHES_PER_TASK {
                    log.append(&s, (task % PARTITIONS as usize) as u32, batch.clone())
                        .await
                        .unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let records = (PARTITIONS as usize * TASKS_PER_PARTITION * BATCHES_PER_TASK * BATCH) as f64;
    let bytes: u64 = (0..PARTITIONS)
        .map(|p| log.size_bytes(&s, p).unwrap())
        .sum();
    println!(
        "{records} records in {elapsed:.2}s: {:.0} records/s, {:.1} MB/s durable",
        records / elapsed,
        bytes as f64 / elapsed / 1e6
    );
    let started = Instant::now();
    let mut read = 0;
    for p in 0..PARTITIONS {
        let mut from = 0;
        loop {
            let got = log.read(&s, p, from, 1000, 1 << 20).unwrap();
            let Some(last) = got.last() else { break };
            from = last.offset + 1;
            read += got.len();
        }
    }
    println!(
        "read back {read} records in {:.2}s",
        started.elapsed().as_secs_f64()
    );
}
