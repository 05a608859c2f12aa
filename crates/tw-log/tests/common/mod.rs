//! Helpers shared by the integration tests.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tw_core::{AppendRecord, Offset, Record, StreamName};
use tw_log::{DiskLog, Log, LogConfig};

/// A tiny deterministic RNG (SplitMix64) so failures replay from the printed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

pub fn stream(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}

/// A record whose content is derived from `tag`, with a recognisable key and payload.
pub fn record(tag: u64, ingest_time_ms: i64, payload_len: usize) -> AppendRecord {
    let mut payload = format!("{{\"tag\":{tag},\"pad\":\"").into_bytes();
    payload.resize(payload_len.max(payload.len()), b'x');
    AppendRecord {
        ingest_time_ms,
        event_time_ms: ingest_time_ms - 7,
        key: Bytes::from(format!("key-{}", tag % 13)),
        payload: Bytes::from(payload),
    }
}

/// Whether a read record equals what was appended at `offset`.
pub fn same(read: &Record, offset: Offset, appended: &AppendRecord) -> bool {
    read.offset == offset
        && read.ingest_time_ms == appended.ingest_time_ms
        && read.event_time_ms == appended.event_time_ms
        && read.key == appended.key
        && read.payload == appended.payload
}

pub fn config(dir: &Path, segment_max_bytes: u64) -> LogConfig {
    LogConfig {
        segment_max_bytes,
        ..LogConfig::new(dir)
    }
}

pub fn open(dir: &Path, segment_max_bytes: u64) -> Arc<DiskLog> {
    DiskLog::open(config(dir, segment_max_bytes)).unwrap()
}

pub fn append(
    log: &DiskLog,
    s: &StreamName,
    p: u32,
    records: Vec<AppendRecord>,
) -> std::ops::Range<Offset> {
    futures::executor::block_on(log.append(s, p, records)).unwrap()
}

/// Every durable record of a partition, read in small batches.
pub fn read_all(log: &DiskLog, s: &StreamName, p: u32) -> Vec<Record> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let batch = log.read(s, p, from, 7, usize::MAX).unwrap();
        let Some(last) = batch.last() else { return out };
        from = last.offset + 1;
        out.extend(batch);
    }
}

/// Segment files of a partition, oldest first.
pub fn segment_files(dir: &Path, s: &str, p: u32) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(s).join(p.to_string()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Byte positions where each complete frame of a segment file ends, computed independently
/// of the crate from the documented layout (u32 length of what follows the 8-byte header).
pub fn frame_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if pos + 8 + len > bytes.len() {
            break;
        }
        pos += 8 + len;
        ends.push(pos);
    }
    ends
}
