//! Compaction: small files of closed hours become one sorted file per partition, with bloom
//! filters and page indexes; readers see every row once before, during and after; superseded
//! files go only after the grace period; the crash clean-up stays exact with them around.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::TimestampMillisecondType;
use common::compacted::*;
use common::*;
use parquet::file::reader::FileReader;
use serde_json::{Value, json};
use tw_core::StreamLakeConfig;
use tw_lake::Lake;
use tw_pipeline::Consumer;

#[test]
fn compaction_merges_sorts_and_keeps_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_settings(dir.path(), 3_600_000);
    let _writer = fill(&lake);
    let stream_dir = stream_dir(&lake, "ct");
    assert_eq!(live_files(&stream_dir).len(), 60);
    assert_eq!(live_rows(&lake, "ct"), expected_rows());

    // Hours not yet closed (now = within the last hour + min age) are left alone.
    let report = lake.compact(T0 + 3 * HOUR, 600_000).unwrap();
    assert_eq!(report.files_compacted, 40, "{report:?}");
    assert_eq!(live_files(&stream_dir).len(), 20 + 4);

    let report = lake.compact(LATER, 0).unwrap();
    assert_eq!(report.files_compacted, 20, "{report:?}");
    assert_eq!(report.files_written, 2, "{report:?}");
    // Inputs of the first pass were superseded 97 hours (of `now`) ago: past the grace.
    assert_eq!(report.superseded_deleted, 40, "{report:?}");
    assert_eq!(report.rows, 200);
    // One file per partition and hour, every row exactly once.
    let live = live_files(&stream_dir);
    assert_eq!(live.len(), 6, "{live:?}");
    assert_eq!(live_rows(&lake, "ct"), expected_rows());
    // The inputs of this pass are still there for queries that listed them.
    assert_eq!(parquet_files(&stream_dir).len(), 26);

    for file in &live {
        let name = file.file_name().unwrap().to_str().unwrap();
        let batches = read_parquet(file);
        let mut times = Vec::new();
        for batch in &batches {
            let column = batch
                .column_by_name("_time")
                .unwrap()
                .as_primitive::<TimestampMillisecondType>();
            times.extend(column.values().iter().copied());
        }
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{name} sorted by _time"
        );
        // 100 rows in row groups of 50; a page index and a bloom filter on `user` only (`n`
        // is not a string column, `missing` does not exist).
        let reader = file_reader(file);
        let metadata = reader.metadata();
        assert_eq!(metadata.num_row_groups(), 2, "{name}");
        assert!(
            metadata.column_index().is_some(),
            "{name} has a column index"
        );
        assert!(
            metadata.offset_index().is_some(),
            "{name} has an offset index"
        );
        let group = reader.get_row_group(0).unwrap();
        let columns = group.metadata().columns();
        for (index, column) in columns.iter().enumerate() {
            let name = column.column_path().string();
            let has_bloom = group.get_column_bloom_filter(index).is_some();
            assert_eq!(has_bloom, name == "user", "bloom filter on {name}");
        }
        let bloom = group
            .get_column_bloom_filter(
                columns
                    .iter()
                    .position(|c| c.column_path().string() == "user")
                    .unwrap(),
            )
            .unwrap();
        let first_user = arrow::util::display::array_value_to_string(
            batches[0].column_by_name("user").unwrap(),
            0,
        )
        .unwrap();
        assert!(bloom.check(&first_user.as_str()));
        assert!(!bloom.check(&"user-does-not-exist"));
    }

    // Nothing more to merge; after the grace period the superseded inputs are deleted.
    let report = lake.compact(LATER + 1000, 0).unwrap();
    assert_eq!(report.files_compacted, 0, "{report:?}");
    assert_eq!(report.superseded_deleted, 0, "grace not over: {report:?}");
    let report = lake.compact(LATER + 2 * HOUR, 0).unwrap();
    assert_eq!(report.superseded_deleted, 20, "{report:?}");
    assert_eq!(parquet_files(&stream_dir).len(), 6);
    assert_eq!(live_rows(&lake, "ct"), expected_rows());
}

/// Offsets in time order (one hour, four flushes of 25): compaction writes the inputs through
/// without reordering, and the result is still one sorted file with every row once.
#[test]
fn compaction_of_rows_already_in_order_writes_them_through() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_settings(dir.path(), 3_600_000);
    let mut writer = lake.writer();
    writer.start(&BTreeMap::new()).unwrap();
    for flush in 0..4u64 {
        let events: Vec<(i64, Value)> = (flush * 25..flush * 25 + 25)
            .map(|o| (T0 + o as i64 * 1000, json!({"user": format!("user-{o}")})))
            .collect();
        writer.handle(&batch("ct", 0, flush * 25, &events)).unwrap();
        writer.flush().unwrap();
    }
    let stream_dir = stream_dir(&lake, "ct");
    assert_eq!(live_files(&stream_dir).len(), 4);
    let report = lake.compact(LATER, 0).unwrap();
    assert_eq!(
        (report.files_compacted, report.files_written, report.rows),
        (4, 1, 100)
    );
    let live = live_files(&stream_dir);
    assert_eq!(live.len(), 1, "{live:?}");
    let offsets: Vec<i64> = read_parquet(&live[0])
        .iter()
        .flat_map(|batch| {
            let column = batch.column_by_name("_offset").unwrap();
            column
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(offsets, (0..100).collect::<Vec<i64>>());
}

/// (`_time`, `_offset`) of every row of `file`, in file order.
fn time_and_offset(file: &Path) -> Vec<(i64, i64)> {
    let mut rows = Vec::new();
    for batch in read_parquet(file) {
        let times = batch.column_by_name("_time").unwrap();
        let offsets = batch.column_by_name("_offset").unwrap();
        let times = times.as_primitive::<TimestampMillisecondType>().values();
        let offsets = offsets
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values();
        rows.extend(times.iter().copied().zip(offsets.iter().copied()));
    }
    rows
}

/// Writes `flushes` flushes of `rows` events into partition 0 of stream `ct`, event `o` at
/// `time(o)`, compacts the hour and returns the (`_time`, `_offset`) of the merged file, having
/// checked that each flush file was in that order and that every column followed its row.
fn merged_time_and_offset(flushes: u64, rows: u64, time: impl Fn(u64) -> i64) -> Vec<(i64, i64)> {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_settings(dir.path(), 3_600_000);
    let mut writer = lake.writer();
    writer.start(&BTreeMap::new()).unwrap();
    for flush in 0..flushes {
        let events: Vec<(i64, Value)> = (flush * rows..(flush + 1) * rows)
            .map(|o| (time(o), json!({"user": format!("user-{o}"), "n": o})))
            .collect();
        writer
            .handle(&batch("ct", 0, flush * rows, &events))
            .unwrap();
        writer.flush().unwrap();
    }
    let stream_dir = stream_dir(&lake, "ct");
    for file in &live_files(&stream_dir) {
        let rows = time_and_offset(file);
        assert!(rows.windows(2).all(|w| w[0] < w[1]), "{file:?} in order");
    }
    let report = lake.compact(LATER, 0).unwrap();
    let total = flushes * rows;
    assert_eq!(
        (report.files_compacted, report.rows),
        (flushes as usize, total),
        "{report:?}"
    );
    let live = live_files(&stream_dir);
    assert_eq!(live.len(), 1, "{live:?}");
    let merged = time_and_offset(&live[0]);
    let users = column_text(&read_parquet(&live[0]), "user");
    let wanted: Vec<String> = merged.iter().map(|(_, o)| format!("user-{o}")).collect();
    assert_eq!(users, wanted);
    merged
}

/// Every event `o` of `0..count` at `time(o)`, in (`_time`, `_offset`) order.
fn sorted_rows(count: u64, time: impl Fn(u64) -> i64) -> Vec<(i64, i64)> {
    let mut rows: Vec<(i64, i64)> = (0..count).map(|o| (time(o), o as i64)).collect();
    rows.sort();
    rows
}

/// Flushes whose times overlap and repeat (three flushes of 3,000 events over the same 1,000
/// seconds, more rows per input than the merge decodes at a time): compaction merges them
/// into one file in (`_time`, `_offset`) order with every row once.
#[test]
fn compaction_merges_overlapping_sorted_flushes_in_time_then_offset_order() {
    let time = |o: u64| T0 + ((o * 7) % 1000) as i64 * 1000;
    assert_eq!(
        merged_time_and_offset(3, 3000, time),
        sorted_rows(9000, time)
    );
}

/// Flushes that each overlap the next by half, as under concurrent requests: the merge opens
/// an input only when it reaches the input's first row, and still interleaves exactly.
#[test]
fn compaction_merges_staggered_flushes_opening_each_when_reached() {
    // Flush f holds times 500f .. 500f + 1000 seconds (five events a second, shuffled).
    let time = |o: u64| {
        let (flush, within) = (o / 5000, o % 5000);
        T0 + (flush * 500_000 + (within * 3331) % 5000 * 200) as i64
    };
    assert_eq!(
        merged_time_and_offset(4, 5000, time),
        sorted_rows(20_000, time)
    );
}

/// A stream sorted by another column than `_time`: flush files are not in its order, so
/// compaction sorts the inputs in memory, and the output is in (column, `_offset`) order.
#[test]
fn compaction_sorts_by_a_configured_column() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    lake.use_stream_settings(Arc::new(|_| StreamLakeConfig {
        sort_column: Some("user".into()),
        ..StreamLakeConfig::default()
    }));
    let mut writer = lake.writer();
    writer.start(&BTreeMap::new()).unwrap();
    for flush in 0..3u64 {
        let events: Vec<(i64, Value)> = (flush * 100..flush * 100 + 100)
            .map(|o| {
                (
                    T0 + o as i64 * 1000,
                    json!({"user": format!("u{}", (o * 37) % 50)}),
                )
            })
            .collect();
        writer
            .handle(&batch("ct", 0, flush * 100, &events))
            .unwrap();
        writer.flush().unwrap();
    }
    let report = lake.compact(LATER, 0).unwrap();
    assert_eq!(
        (report.files_compacted, report.rows),
        (3, 300),
        "{report:?}"
    );
    let live = live_files(&stream_dir(&lake, "ct"));
    assert_eq!(live.len(), 1, "{live:?}");
    let batches = read_parquet(&live[0]);
    let users = column_text(&batches, "user");
    let offsets: Vec<i64> = time_and_offset(&live[0])
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    let rows: Vec<(String, i64)> = users.into_iter().zip(offsets).collect();
    let mut expected: Vec<(String, i64)> = (0..300i64)
        .map(|o| (format!("u{}", (o * 37) % 50), o))
        .collect();
    expected.sort();
    assert_eq!(rows, expected);
}

#[test]
fn flush_files_carry_bloom_filters_of_configured_columns() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_settings(dir.path(), 0);
    let mut writer = lake.writer();
    writer.start(&BTreeMap::new()).unwrap();
    writer.handle(&events(0, 0, 10)).unwrap();
    writer.flush().unwrap();
    for file in parquet_files(dir.path()) {
        let reader = file_reader(&file);
        let group = reader.get_row_group(0).unwrap();
        let user = group
            .metadata()
            .columns()
            .iter()
            .position(|c| c.column_path().string() == "user")
            .unwrap();
        assert!(group.get_column_bloom_filter(user).is_some(), "{file:?}");
    }
}

#[test]
fn crash_cleanup_stays_exact_with_compacted_and_superseded_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_settings(dir.path(), 3_600_000);
    let writer = fill(&lake);
    drop(writer);
    lake.compact(LATER, 0).unwrap();
    assert_eq!(live_files(&stream_dir(&lake, "ct")).len(), 6);

    // A crash before the last flushes were committed: offsets 0..=154 of partition 0 and
    // 0..=209 of partition 1 are committed. Compacted files straddle those offsets.
    let lake = lake_with_settings(dir.path(), 3_600_000);
    let mut writer = lake.writer();
    let committed = BTreeMap::from([((stream("ct"), 0), 155), ((stream("ct"), 1), 210)]);
    writer.start(&committed).unwrap();
    let expected: Vec<(i32, i64)> = (0..155)
        .map(|o| (0, o))
        .chain((0..210).map(|o| (1, o)))
        .collect();
    assert_eq!(live_rows(&lake, "ct"), expected);
    // The replay rewrites the rest; compaction again; still exact.
    writer.handle(&events(0, 155, 145)).unwrap();
    writer.handle(&events(1, 210, 90)).unwrap();
    writer.flush().unwrap();
    assert_eq!(live_rows(&lake, "ct"), expected_rows());
    lake.compact(LATER, 0).unwrap();
    assert_eq!(live_rows(&lake, "ct"), expected_rows());
    assert_eq!(live_files(&stream_dir(&lake, "ct")).len(), 6);
}

#[test]
fn files_of_a_flush_not_yet_below_hot_start_are_never_merged() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_settings(dir.path(), 0);
    let _writer = fill(&lake);
    // A file that appeared without its flush advancing hot_start (a flush that failed
    // half-way leaves such files until the writer deletes them).
    let hour_dir = live_files(&stream_dir(&lake, "ct"))[0]
        .parent()
        .unwrap()
        .to_path_buf();
    let orphan = hour_dir.join("p000-00000000000000000300-00000000000000000309.parquet");
    std::fs::copy(live_files(&hour_dir)[0].clone(), &orphan).unwrap();
    lake.compact(LATER, 0).unwrap();
    assert!(orphan.exists());
    let names: Vec<String> = live_files(&hour_dir)
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"p000-00000000000000000300-00000000000000000309.parquet".to_string()),
        "{names:?}"
    );
}

#[test]
fn retention_deletes_whole_hours_that_ended_before_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(config(dir.path())).unwrap();
    lake.use_stream_settings(Arc::new(|stream| StreamLakeConfig {
        // Only `ct` has a retention; `keep` is kept forever.
        retention: (stream.as_str() == "ct").then(|| "2h".to_string()),
        ..StreamLakeConfig::default()
    }));
    let mut writer = lake.writer();
    writer.start(&BTreeMap::new()).unwrap();
    for name in ["ct", "keep"] {
        let mut batch = events(0, 0, 300);
        batch.stream = stream(name);
        writer.handle(&batch).unwrap();
    }
    writer.flush().unwrap();
    let ct_dir = stream_dir(&lake, "ct");
    assert_eq!(live_files(&ct_dir).len(), 3);

    // Hours T0, T0+1h, T0+2h. At T0+3h+30m with 2h retention, only hour T0 (ended T0+1h) is
    // older than the cutoff T0+1h30m.
    let report = lake.apply_retention(T0 + 3 * HOUR + HOUR / 2).unwrap();
    assert_eq!(report.hours_deleted, 1, "{report:?}");
    assert_eq!(report.files_deleted, 1, "{report:?}");
    let rows = live_rows(&lake, "ct");
    assert_eq!(rows.len(), 200);
    assert!(
        rows.iter().all(|(_, o)| o % 3 != 0),
        "hour T0 held offsets 0, 3, 6, ..."
    );
    assert!(!ct_dir.join("year=2024/month=05/day=01/hour=10").exists());
    assert!(ct_dir.join("year=2024/month=05/day=01/hour=11").exists());
    // Much later, everything of `ct` goes, `keep` stays whole.
    let report = lake.apply_retention(T0 + 100 * HOUR).unwrap();
    assert_eq!(report.hours_deleted, 2, "{report:?}");
    assert!(live_rows(&lake, "ct").is_empty());
    assert_eq!(live_rows(&lake, "keep").len(), 300);
    assert!(
        !ct_dir.join("year=2024").exists(),
        "emptied directories are removed"
    );
}
