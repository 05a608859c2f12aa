//! Helpers shared by the lake's integration tests.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use bytes::Bytes;
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use tw_core::{Record, StreamName};
use tw_lake::{HotSnapshot, Lake, LakeConfig, LakeLocation};
use tw_pipeline::EventBatch;

pub mod compacted;

/// 2024-05-01T10:00:00Z.
pub const T0: i64 = 1_714_557_600_000;
pub const HOUR: i64 = 3_600_000;

pub fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}

pub fn config(root: &Path) -> LakeConfig {
    LakeConfig {
        location: LakeLocation::Local(root.to_path_buf()),
        flush_max_rows: 1_000_000,
        flush_max_bytes: usize::MAX,
        flush_max_age_ms: 10_000,
        compaction: Default::default(),
    }
}

/// The local directory of a stream's files.
pub fn stream_dir(lake: &Lake, name: &str) -> PathBuf {
    lake.storage()
        .local_root()
        .expect("a local lake")
        .join(name)
}

pub fn open(root: &Path) -> Lake {
    Lake::open(config(root)).unwrap()
}

/// A batch of `events` (event time, JSON) of one partition starting at offset `first`.
pub fn batch(stream_name: &str, partition: u32, first: u64, events: &[(i64, Value)]) -> EventBatch {
    let records = events
        .iter()
        .enumerate()
        .map(|(i, (time, event))| Record {
            offset: first + i as u64,
            ingest_time_ms: T0 + 5,
            event_time_ms: *time,
            key: Bytes::new(),
            payload: Bytes::from(event.to_string()),
        })
        .collect();
    EventBatch {
        stream: stream(stream_name),
        partition,
        records,
        events: events.iter().map(|(_, e)| e.clone()).collect(),
        checked: Vec::new(),
        fields: Vec::new(),
    }
}

/// A batch of raw `payloads` (at T0, not necessarily valid JSON) of one partition starting at
/// offset `first`, as the runner hands them over once each passed its first-byte check.
pub fn raw_batch(stream_name: &str, partition: u32, first: u64, payloads: &[&[u8]]) -> EventBatch {
    let records: Vec<Record> = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| Record {
            offset: first + i as u64,
            ingest_time_ms: T0,
            event_time_ms: T0,
            key: Bytes::new(),
            payload: Bytes::copy_from_slice(payload),
        })
        .collect();
    EventBatch {
        stream: stream(stream_name),
        partition,
        events: vec![Value::Object(Default::default()); records.len()],
        records,
        checked: Vec::new(),
        fields: Vec::new(),
    }
}

/// `count` simple events `{"i": offset}` at T0 + offset seconds.
pub fn numbered(stream_name: &str, partition: u32, first: u64, count: u64) -> EventBatch {
    let events: Vec<(i64, Value)> = (first..first + count)
        .map(|o| {
            (
                T0 + o as i64 * 1000,
                serde_json::json!({"i": o, "p": partition}),
            )
        })
        .collect();
    batch(stream_name, partition, first, &events)
}

/// Every `.parquet` file under `dir`, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every file (any name) under `dir`, relative, sorted.
pub fn all_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    reader.map(|b| b.unwrap()).collect()
}

/// (partition, offset) of every row.
pub fn keys(batch: &RecordBatch) -> Vec<(i32, i64)> {
    let partitions = batch
        .column_by_name("_partition")
        .unwrap()
        .as_primitive::<Int32Type>();
    let offsets = batch
        .column_by_name("_offset")
        .unwrap()
        .as_primitive::<Int64Type>();
    (0..batch.num_rows())
        .map(|i| (partitions.value(i), offsets.value(i)))
        .collect()
}

/// What a query sees under the contract: file rows with `_offset < hot_start[_partition]`
/// plus the hot batches, as sorted (partition, offset) pairs (duplicates kept).
pub fn visible(lake: &Lake, name: &str, snapshot: &HotSnapshot) -> Vec<(i32, i64)> {
    let mut rows = Vec::new();
    for file in parquet_files(&stream_dir(lake, name)) {
        for batch in read_parquet(&file) {
            for (p, o) in keys(&batch) {
                match snapshot.hot_start.get(&(p as u32)) {
                    Some(start) if o as u64 >= *start => {}
                    _ => rows.push((p, o)),
                }
            }
        }
    }
    for batch in &snapshot.batches {
        assert_eq!(
            batch.schema(),
            snapshot.schema,
            "hot batch does not conform to the snapshot schema"
        );
        rows.extend(keys(batch));
    }
    rows.sort();
    rows
}

/// Column `name` of the concatenation of `batches`, rendered as strings ("null" for nulls).
pub fn column_text(batches: &[RecordBatch], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        let column = batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"));
        for i in 0..column.len() {
            if column.is_null(i) {
                out.push("null".to_string());
            } else {
                out.push(arrow::util::display::array_value_to_string(column, i).unwrap());
            }
        }
    }
    out
}

/// A metrics recorder that keeps counters as `name{label=value,...}` → total.
#[derive(Default, Clone)]
pub struct Counters(Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>);

struct Cell(Arc<AtomicU64>);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl Counters {
    pub fn get(&self, key: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let cell = self.0.lock().unwrap().entry(name).or_default().clone();
        Counter::from_arc(Arc::new(Cell(cell)))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
