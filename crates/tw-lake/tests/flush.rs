//! Flushing: by rows and age, hour splitting and naming, the query contract at every moment,
//! and the clean-up on restart that makes the lake exactly-once.

mod common;

use std::collections::BTreeMap;

use arrow::array::AsArray;
use arrow::datatypes::TimestampMillisecondType;
use common::*;
use serde_json::json;
use tw_lake::{Lake, LakeConfig};
use tw_pipeline::{Consumer, StreamPartition};

fn expected(partitions: &[(i32, i64)]) -> Vec<(i32, i64)> {
    let mut rows: Vec<(i32, i64)> = partitions
        .iter()
        .flat_map(|(p, n)| (0..*n).map(move |o| (*p, o)))
        .collect();
    rows.sort();
    rows
}

fn committed(entries: &[(&str, u32, u64)]) -> BTreeMap<StreamPartition, u64> {
    entries
        .iter()
        .map(|(s, p, o)| ((stream(s), *p), *o))
        .collect()
}

#[test]
fn flushes_by_rows_and_names_files_by_offset_range() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(LakeConfig {
        flush_max_rows: 3,
        ..config(dir.path())
    })
    .unwrap();
    let mut writer = lake.writer();
    let counters = Counters::default();
    metrics::with_local_recorder(&counters, || {
        writer.start(&Default::default()).unwrap();
        writer.handle(&numbered("ct", 2, 0, 2)).unwrap();
        assert!(
            parquet_files(dir.path()).is_empty(),
            "2 rows < 3: no flush yet"
        );
        assert_eq!(writer.safe_offsets(), committed(&[("ct", 2, 0)]));
        writer.handle(&numbered("ct", 2, 2, 2)).unwrap();
    });
    let files = all_files(&stream_dir(&lake, "ct"));
    assert_eq!(
        files,
        [
            "year=2024/month=05/day=01/hour=10/p002-00000000000000000000-00000000000000000003.parquet"
        ]
    );
    assert_eq!(writer.safe_offsets(), committed(&[("ct", 2, 4)]));
    let snapshot = lake.hot_snapshot(&stream("ct"));
    assert!(snapshot.batches.is_empty());
    assert_eq!(snapshot.hot_start, BTreeMap::from([(2, 4)]));
    assert_eq!(visible(&lake, "ct", &snapshot), expected(&[(2, 4)]));
    assert_eq!(counters.get("tidewatch_lake_flushes_total{stream=ct}"), 1);
    assert_eq!(
        counters.get("tidewatch_lake_rows_written_total{stream=ct}"),
        4
    );
    let size = std::fs::metadata(stream_dir(&lake, "ct").join(&files[0]))
        .unwrap()
        .len();
    assert_eq!(
        counters.get("tidewatch_lake_bytes_written_total{stream=ct}"),
        size
    );
    let metadata = parquet::file::reader::FileReader::metadata(
        &parquet::file::serialized_reader::SerializedFileReader::new(
            std::fs::File::open(stream_dir(&lake, "ct").join(&files[0])).unwrap(),
        )
        .unwrap(),
    )
    .clone();
    let column = metadata.row_group(0).column(0);
    assert!(matches!(
        column.compression(),
        parquet::basic::Compression::ZSTD(_)
    ));
    assert!(
        column.statistics().is_some(),
        "row-group statistics are written"
    );
}

#[test]
fn flushes_by_age_on_tick() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    writer.handle(&numbered("ct", 0, 0, 5)).unwrap();
    writer.tick(tw_core::now_ms()).unwrap();
    assert!(
        parquet_files(dir.path()).is_empty(),
        "younger than 10 s: kept hot"
    );
    writer.tick(tw_core::now_ms() + 10_000).unwrap();
    assert_eq!(parquet_files(dir.path()).len(), 1);
    assert_eq!(writer.safe_offsets(), committed(&[("ct", 0, 5)]));
    assert!(lake.hot_snapshot(&stream("ct")).batches.is_empty());
}

#[test]
fn splits_a_flush_by_event_hour_and_sorts_rows_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    let events = [
        (T0 + 2 * HOUR + 5, json!({"i": 0})),
        (T0 + 30, json!({"i": 1})),
        (T0 + 14 * HOUR, json!({"i": 2})), // next UTC day
        (T0 + 10, json!({"i": 3})),
        (T0 + 2 * HOUR + 1, json!({"i": 4})),
    ];
    writer.handle(&batch("ct", 1, 7, &events)).unwrap();
    writer.flush().unwrap();
    let name = "p001-00000000000000000007-00000000000000000011.parquet";
    let dir_of = |d: &str| format!("{d}/{name}");
    assert_eq!(
        all_files(&stream_dir(&lake, "ct")),
        [
            dir_of("year=2024/month=05/day=01/hour=10"),
            dir_of("year=2024/month=05/day=01/hour=12"),
            dir_of("year=2024/month=05/day=02/hour=00"),
        ]
    );
    let root = stream_dir(&lake, "ct");
    let hour10 = read_parquet(&root.join(dir_of("year=2024/month=05/day=01/hour=10")));
    assert_eq!(column_text(&hour10, "i"), ["3", "1"], "sorted by _time");
    let times = hour10[0]
        .column(0)
        .as_primitive::<TimestampMillisecondType>();
    assert_eq!(times.values().to_vec(), [T0 + 10, T0 + 30]);
    assert_eq!(
        column_text(
            &read_parquet(&root.join(dir_of("year=2024/month=05/day=01/hour=12"))),
            "i"
        ),
        ["4", "0"]
    );
    assert_eq!(
        column_text(
            &read_parquet(&root.join(dir_of("year=2024/month=05/day=02/hour=00"))),
            "i"
        ),
        ["2"]
    );
}

/// Several handled batches make one flush: their rows are written in (`_time`, `_offset`)
/// order whether the batches follow each other in time (written as they are, an hour's file
/// from slices of several batches) or not (sorted together).
#[test]
fn a_flush_of_many_batches_is_split_by_hour_and_ordered_across_them() {
    for (case, later_batch_goes_back) in [("in order", false), ("out of order", true)] {
        let dir = tempfile::tempdir().unwrap();
        let lake = open(dir.path());
        let mut writer = lake.writer();
        writer.start(&Default::default()).unwrap();
        let mut offset = 0u64;
        let mut sent = Vec::new();
        // Batch b holds times b*40 min + 0, 10, 20 min: hours change inside and between batches.
        for b in 0..4i64 {
            // Out of order: the last batch starts before the one it follows.
            let base = if later_batch_goes_back && b == 3 {
                20 * 60_000
            } else {
                b * 40 * 60_000
            };
            let events: Vec<_> = (0..3i64)
                .map(|k| {
                    let time = T0 + base + k * 10 * 60_000 + b;
                    sent.push((time, offset as i64 + k));
                    (time, json!({"o": offset as i64 + k}))
                })
                .collect();
            writer.handle(&batch("ct", 0, offset, &events)).unwrap();
            offset += 3;
        }
        writer.flush().unwrap();
        sent.sort();
        let root = stream_dir(&lake, "ct");
        let mut read = Vec::new();
        for file in all_files(&root) {
            let batches = read_parquet(&root.join(&file));
            let times: Vec<i64> = batches
                .iter()
                .flat_map(|b| {
                    b.column(0)
                        .as_primitive::<TimestampMillisecondType>()
                        .values()
                        .to_vec()
                })
                .collect();
            assert!(
                times.windows(2).all(|w| w[0] / HOUR == w[1] / HOUR),
                "{case}: one hour per file ({file})"
            );
            let offsets = column_text(&batches, "o");
            read.extend(
                times
                    .into_iter()
                    .zip(offsets.into_iter().map(|o| o.parse::<i64>().unwrap())),
            );
        }
        assert_eq!(
            read, sent,
            "{case}: every row once, in time order across files"
        );
        let mut hours: Vec<i64> = sent.iter().map(|(time, _)| time / HOUR).collect();
        hours.dedup();
        assert_eq!(
            all_files(&root).len(),
            hours.len(),
            "{case}: a file per hour"
        );
    }
}

#[test]
fn every_offset_is_visible_exactly_once_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(LakeConfig {
        flush_max_rows: 7,
        ..config(dir.path())
    })
    .unwrap();
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    let mut handled = [0i64; 3];
    for step in 0..40u64 {
        let partition = (step % 3) as u32;
        let count = 1 + step % 4;
        let first = handled[partition as usize] as u64;
        // A new column on some steps forces older hot batches to be aligned.
        let events: Vec<_> = (first..first + count)
            .map(|o| {
                (
                    T0 + (o as i64 % 5) * HOUR,
                    json!({"i": o, format!("c{}", step % 6): step}),
                )
            })
            .collect();
        writer
            .handle(&batch("ct", partition, first, &events))
            .unwrap();
        handled[partition as usize] += count as i64;
        if step % 9 == 8 {
            writer.tick(tw_core::now_ms() + 60_000).unwrap();
        }
        let snapshot = lake.hot_snapshot(&stream("ct"));
        let want = expected(&[(0, handled[0]), (1, handled[1]), (2, handled[2])]);
        assert_eq!(visible(&lake, "ct", &snapshot), want, "step {step}");
    }
    writer.flush().unwrap();
    let snapshot = lake.hot_snapshot(&stream("ct"));
    assert!(snapshot.batches.is_empty());
    assert_eq!(
        visible(&lake, "ct", &snapshot),
        expected(&[(0, handled[0]), (1, handled[1]), (2, handled[2])])
    );
}

#[test]
fn concurrent_snapshots_never_see_a_gap_or_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(LakeConfig {
        flush_max_rows: 5,
        ..config(dir.path())
    })
    .unwrap();
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (lake, done) = (lake.clone(), done.clone());
        std::thread::spawn(move || {
            let mut checks = 0;
            let mut last_len = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) || checks == 0 {
                let snapshot = lake.hot_snapshot(&stream("ct"));
                let rows = visible(&lake, "ct", &snapshot);
                let n = rows.len() as i64;
                assert_eq!(
                    rows,
                    (0..n).map(|o| (0, o)).collect::<Vec<_>>(),
                    "gap or duplicate"
                );
                assert!(rows.len() >= last_len, "rows disappeared");
                last_len = rows.len();
                checks += 1;
            }
            checks
        })
    };
    for first in (0..300).step_by(3) {
        writer.handle(&numbered("ct", 0, first, 3)).unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.join().unwrap() > 0);
    let snapshot = lake.hot_snapshot(&stream("ct"));
    assert_eq!(visible(&lake, "ct", &snapshot), expected(&[(0, 300)]));
}

#[test]
fn a_retried_batch_is_buffered_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    writer.handle(&numbered("ct", 0, 0, 4)).unwrap();
    writer.handle(&numbered("ct", 0, 0, 4)).unwrap();
    writer.handle(&numbered("ct", 0, 2, 4)).unwrap();
    let snapshot = lake.hot_snapshot(&stream("ct"));
    assert_eq!(visible(&lake, "ct", &snapshot), expected(&[(0, 6)]));
}

#[test]
fn start_deletes_uncommitted_files_and_replay_gives_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let lake = Lake::open(LakeConfig {
            flush_max_rows: 5,
            ..config(dir.path())
        })
        .unwrap();
        let mut writer = lake.writer();
        writer.start(&Default::default()).unwrap();
        writer.handle(&numbered("ct", 0, 0, 5)).unwrap(); // file 0-4
        writer.handle(&numbered("ct", 0, 5, 5)).unwrap(); // file 5-9
        writer.handle(&numbered("ct", 1, 0, 5)).unwrap(); // file 0-4 of partition 1
        writer.handle(&numbered("ct", 3, 0, 5)).unwrap(); // partition 3: never committed
        writer.handle(&numbered("ct", 0, 10, 2)).unwrap(); // hot only: lost by the "crash"
    }
    let stream_dir = dir.path().join("ct");
    let hour = stream_dir.join("year=2024/month=05/day=01/hour=10");
    std::fs::write(
        hour.join(".p000-00000000000000000010-00000000000000000014.parquet.tmp"),
        b"torn",
    )
    .unwrap();
    std::fs::write(dir.path().join("_catalog/.ct.json.tmp"), b"torn").unwrap();
    assert_eq!(parquet_files(&stream_dir).len(), 4);

    // Partition 0 committed the first file only; partition 1 committed in the middle of its file.
    let lake = Lake::open(LakeConfig {
        flush_max_rows: 5,
        ..config(dir.path())
    })
    .unwrap();
    let mut writer = lake.writer();
    writer
        .start(&committed(&[("ct", 0, 5), ("ct", 1, 3)]))
        .unwrap();
    assert_eq!(
        all_files(&stream_dir),
        [
            "year=2024/month=05/day=01/hour=10/p000-00000000000000000000-00000000000000000004.parquet",
            "year=2024/month=05/day=01/hour=10/p001-00000000000000000000-00000000000000000002.parquet",
        ]
    );
    assert!(!dir.path().join("_catalog/.ct.json.tmp").exists());
    assert_eq!(
        writer.safe_offsets(),
        committed(&[("ct", 0, 5), ("ct", 1, 3), ("ct", 3, 0)])
    );
    assert_eq!(
        lake.hot_snapshot(&stream("ct")).hot_start,
        BTreeMap::from([(0, 5), (1, 3), (3, 0)])
    );

    // The runner replays from the committed offsets; the lake ends with each offset once.
    writer.handle(&numbered("ct", 0, 5, 7)).unwrap();
    writer.handle(&numbered("ct", 1, 3, 2)).unwrap();
    writer.handle(&numbered("ct", 3, 0, 5)).unwrap();
    let snapshot = lake.hot_snapshot(&stream("ct"));
    assert_eq!(
        visible(&lake, "ct", &snapshot),
        expected(&[(0, 12), (1, 5), (3, 5)])
    );
    writer.flush().unwrap();
    let snapshot = lake.hot_snapshot(&stream("ct"));
    assert!(snapshot.batches.is_empty());
    assert_eq!(
        visible(&lake, "ct", &snapshot),
        expected(&[(0, 12), (1, 5), (3, 5)])
    );
    // And without any filter, the files alone hold each offset once.
    let mut raw: Vec<(i32, i64)> = parquet_files(&stream_dir)
        .iter()
        .flat_map(|f| read_parquet(f))
        .flat_map(|b| keys(&b))
        .collect();
    raw.sort();
    assert_eq!(raw, expected(&[(0, 12), (1, 5), (3, 5)]));
}

#[test]
fn a_failed_flush_keeps_rows_hot_and_the_retried_batch_flushes_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(LakeConfig {
        flush_max_rows: 4,
        ..config(dir.path())
    })
    .unwrap();
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    // A plain file where the stream directory should be makes the flush fail.
    std::fs::write(dir.path().join("ct"), b"in the way").unwrap();
    writer.handle(&numbered("ct", 0, 0, 2)).unwrap();
    let failed = numbered("ct", 0, 2, 3);
    let error = writer.handle(&failed).unwrap_err();
    assert_eq!(error.consumer, "lake");
    assert!(error.message.contains("lake i/o on"), "{}", error.message);
    assert_eq!(
        writer.safe_offsets(),
        committed(&[("ct", 0, 0)]),
        "nothing durable yet"
    );
    let snapshot = lake.hot_snapshot(&stream("ct"));
    assert_eq!(
        visible(&lake, "ct", &snapshot),
        expected(&[(0, 5)]),
        "rows stay hot, once"
    );

    std::fs::remove_file(dir.path().join("ct")).unwrap();
    writer.handle(&failed).unwrap();
    assert_eq!(
        all_files(&stream_dir(&lake, "ct")),
        [
            "year=2024/month=05/day=01/hour=10/p000-00000000000000000000-00000000000000000004.parquet"
        ]
    );
    assert_eq!(writer.safe_offsets(), committed(&[("ct", 0, 5)]));
    let snapshot = lake.hot_snapshot(&stream("ct"));
    assert!(snapshot.batches.is_empty());
    assert_eq!(visible(&lake, "ct", &snapshot), expected(&[(0, 5)]));
}

#[test]
fn files_of_a_half_failed_flush_are_removed_so_a_wider_flush_does_not_duplicate_them() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    // Hour 10 can be written, hour 11 cannot (a plain file holds its directory's name).
    let blocked = dir.path().join("ct/year=2024/month=05/day=01/hour=11");
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    std::fs::write(&blocked, b"in the way").unwrap();
    writer
        .handle(&batch(
            "ct",
            0,
            0,
            &[(T0, json!({"i": 0})), (T0 + HOUR, json!({"i": 1}))],
        ))
        .unwrap();
    assert!(writer.flush().is_err());
    assert_eq!(
        parquet_files(dir.path()),
        Vec::<std::path::PathBuf>::new(),
        "the hour-10 file of the failed flush is gone"
    );

    std::fs::remove_file(&blocked).unwrap();
    writer
        .handle(&batch("ct", 0, 2, &[(T0, json!({"i": 2}))]))
        .unwrap();
    writer.flush().unwrap();
    let mut raw: Vec<(i32, i64)> = parquet_files(dir.path())
        .iter()
        .flat_map(|f| read_parquet(f))
        .flat_map(|b| keys(&b))
        .collect();
    raw.sort();
    assert_eq!(raw, expected(&[(0, 3)]));
    let snapshot = lake.hot_snapshot(&stream("ct"));
    assert_eq!(visible(&lake, "ct", &snapshot), expected(&[(0, 3)]));
}
