//! A lake of small files compacted into larger ones, as the compaction and delete-by-query
//! tests use it, and readers of its live files.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::file::properties::ReaderProperties;
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
use serde_json::{Value, json};
use tw_core::StreamLakeConfig;
use tw_lake::{CompactionConfig, Lake, LakeConfig};
use tw_pipeline::Consumer;

use super::*;

/// Live (not superseded) parquet files under `dir`.
pub fn live_files(dir: &Path) -> Vec<PathBuf> {
    let mut by_dir: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for file in parquet_files(dir) {
        by_dir
            .entry(file.parent().unwrap().to_path_buf())
            .or_default()
            .push(file);
    }
    let mut live = Vec::new();
    for files in by_dir.into_values() {
        let names: Vec<&str> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap())
            .collect();
        let gone = tw_lake::superseded(&names);
        live.extend(
            files
                .iter()
                .zip(gone)
                .filter(|(_, g)| !g)
                .map(|(f, _)| f.clone()),
        );
    }
    live
}

/// (partition, offset) of every row of the live files, sorted (duplicates kept).
pub fn live_rows(lake: &Lake, name: &str) -> Vec<(i32, i64)> {
    let mut rows = Vec::new();
    for file in live_files(&stream_dir(lake, name)) {
        for batch in read_parquet(&file) {
            rows.extend(keys(&batch));
        }
    }
    rows.sort();
    rows
}

pub fn lake_with_settings(root: &Path, grace_ms: u64) -> Lake {
    let lake = Lake::open(LakeConfig {
        compaction: CompactionConfig {
            grace_ms,
            row_group_rows: 50,
            ..CompactionConfig::default()
        },
        ..config(root)
    })
    .unwrap();
    lake.use_stream_settings(Arc::new(|_| StreamLakeConfig {
        bloom_filter_columns: vec!["user".into(), "missing".into(), "n".into()],
        ..StreamLakeConfig::default()
    }));
    lake
}

/// `count` events of partition `p` from offset `first`, spread over hours 0..3 after T0.
pub fn events(p: u32, first: u64, count: u64) -> tw_pipeline::EventBatch {
    let events: Vec<(i64, Value)> = (first..first + count)
        .map(|o| {
            // Later offsets get earlier times within an hour, so sorting has work to do.
            let hour = (o % 3) as i64;
            let time = T0 + hour * HOUR + (10_000 - o as i64) * 100;
            (time, json!({"user": format!("user-{o}"), "n": o, "p": p}))
        })
        .collect();
    batch("ct", p, first, &events)
}

/// Writes 10 flushes of 30 events into 2 partitions: 20 flushes × 3 hours = 60 files.
pub fn fill(lake: &Lake) -> tw_lake::LakeWriter {
    let mut writer = lake.writer();
    writer.start(&BTreeMap::new()).unwrap();
    for flush in 0..10u64 {
        for p in 0..2 {
            writer.handle(&events(p, flush * 30, 30)).unwrap();
        }
        writer.flush().unwrap();
    }
    writer
}

pub fn expected_rows() -> Vec<(i32, i64)> {
    (0..2).flat_map(|p| (0..300).map(move |o| (p, o))).collect()
}

/// A reader that loads the page index and the bloom filters.
pub fn file_reader(path: &Path) -> SerializedFileReader<File> {
    let properties = ReaderProperties::builder()
        .set_read_bloom_filter(true)
        .build();
    let options = ReadOptionsBuilder::new()
        .with_page_index()
        .with_reader_properties(properties)
        .build();
    SerializedFileReader::new_with_options(File::open(path).unwrap(), options).unwrap()
}

pub const LATER: i64 = T0 + 100 * HOUR;
