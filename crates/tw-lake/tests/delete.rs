//! Delete-by-query: the files holding the named rows are rewritten without them as new
//! revisions (a batch at a time, keeping the layout compaction gives a file), files without
//! them are left alone, and the audit trail records each request before any file changes
//! and its outcome after.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::TimestampMillisecondType;
use common::compacted::*;
use common::*;
use parquet::basic::Compression;
use parquet::file::reader::FileReader;
use serde_json::{Value, json};
use tw_lake::Lake;
use tw_pipeline::Consumer;

/// Every entry of the deletion audit trail, parsed, oldest first.
fn entries(lake: &Lake) -> Vec<Value> {
    lake.deletion_audit()
        .unwrap()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The hour directory `hour` hours after T0's, under the stream `ct`.
fn hour_dir(lake: &Lake, hour: u32) -> PathBuf {
    stream_dir(lake, "ct").join(format!("year=2024/month=05/day=01/hour={}", 10 + hour))
}

/// `_time` and `_offset` of every row of `file`, in file order.
fn time_and_offset(file: &Path) -> Vec<(i64, i64)> {
    let mut rows = Vec::new();
    for batch in read_parquet(file) {
        let times = batch
            .column_by_name("_time")
            .unwrap()
            .as_primitive::<TimestampMillisecondType>();
        for (i, (_, offset)) in keys(&batch).into_iter().enumerate() {
            rows.push((times.value(i), offset));
        }
    }
    rows
}

#[test]
fn delete_rows_rewrites_files_as_new_revisions_and_audits() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_settings(dir.path(), 0);
    let mut writer = fill(&lake);
    lake.compact(LATER, 0).unwrap();
    // One more flush that stays hot: offsets 300..310 of partition 0.
    writer.handle(&events(0, 300, 10)).unwrap();
    let rows = BTreeMap::from([
        (
            0u32,
            std::collections::BTreeSet::from([3u64, 4, 5, 150, 305]),
        ),
        (1u32, std::collections::BTreeSet::from([7u64])),
    ]);
    let report = lake
        .delete_rows(&stream("ct"), &rows, "alice", "user = 'x'")
        .unwrap();
    assert_eq!(report.rows_deleted, 5, "{report:?}");
    assert_eq!(
        report.rows_not_in_files, 1,
        "offset 305 is still hot: {report:?}"
    );
    assert_eq!(report.files_rewritten.len(), 4, "{report:?}");
    assert!(
        report
            .files_rewritten
            .iter()
            .all(|f| f.ends_with("-r1.parquet")),
        "{report:?}"
    );
    let gone = [(0, 3), (0, 4), (0, 5), (0, 150), (1, 7)];
    let expected: Vec<(i32, i64)> = expected_rows()
        .into_iter()
        .filter(|row| !gone.contains(row))
        .collect();
    assert_eq!(live_rows(&lake, "ct"), expected);

    // The audit trail says who, what and how much: the request before the rewrite, the
    // outcome after, under one id.
    let audit = entries(&lake);
    assert_eq!(audit.len(), 2, "{audit:?}");
    let (started, done) = (&audit[0], &audit[1]);
    assert_eq!(started["status"], "started");
    assert_eq!(started["who"], "alice");
    assert_eq!(started["stream"], "ct");
    assert_eq!(started["predicate"], "user = 'x'");
    assert_eq!(started["rows_matched"], 6);
    assert!(started.get("rows_deleted").is_none(), "{started}");
    assert_eq!(done["status"], "done");
    assert_eq!(done["id"], started["id"]);
    assert_eq!(done["who"], "alice");
    assert_eq!(done["predicate"], "user = 'x'");
    assert_eq!(done["rows_matched"], 6);
    assert_eq!(done["rows_deleted"], 5);
    assert_eq!(done["rows_not_in_files"], 1);
    assert_eq!(done["files_rewritten"], json!(report.files_rewritten));
    assert!(done.get("error").is_none(), "{done}");

    // A second deletion in a revised file makes revision 2; compaction (grace 0) then drops
    // the superseded revisions, and the restart clean-up keeps the result.
    let again = BTreeMap::from([(0u32, std::collections::BTreeSet::from([6u64]))]);
    let report = lake
        .delete_rows(&stream("ct"), &again, "bob", "n = 6")
        .unwrap();
    assert_eq!(report.files_rewritten.len(), 1);
    assert!(
        report.files_rewritten[0].ends_with("-r2.parquet"),
        "{report:?}"
    );
    let expected: Vec<(i32, i64)> = expected.into_iter().filter(|r| *r != (0, 6)).collect();
    assert_eq!(live_rows(&lake, "ct"), expected);
    // Rewrites record their superseding time by the wall clock.
    let report = lake.compact(tw_core::now_ms() + 1000, 0).unwrap();
    assert!(report.superseded_deleted >= 5, "{report:?}");
    assert_eq!(live_rows(&lake, "ct"), expected);
    assert_eq!(
        parquet_files(&stream_dir(&lake, "ct")).len(),
        live_files(&stream_dir(&lake, "ct")).len()
    );
    let audit = entries(&lake);
    assert_eq!(audit.len(), 4);
    assert_eq!(
        (&audit[2]["status"], &audit[3]["status"]),
        (&json!("started"), &json!("done"))
    );
    assert_eq!(audit[3]["who"], "bob");
    assert_eq!(audit[3]["id"], audit[2]["id"]);
    assert_ne!(audit[2]["id"], audit[0]["id"]);
    assert_eq!(
        std::fs::read_dir(dir.path().join(tw_lake::AUDIT_DIR))
            .unwrap()
            .count(),
        4,
        "one object per entry"
    );
}

/// Offsets 0..400 of partition 0 in four flushes: three of every four in hour 10, the fourth
/// in hour 11, by time in offset order. Compaction makes one file per hour, both named
/// after the whole range: hour 10's holds 300 rows in 6 row groups of 50.
fn two_hours(lake: &Lake) -> tw_lake::LakeWriter {
    let mut writer = lake.writer();
    writer.start(&BTreeMap::new()).unwrap();
    for flush in 0..4u64 {
        let events: Vec<(i64, Value)> = (flush * 100..flush * 100 + 100)
            .map(|o| {
                let hour = i64::from(o % 4 == 3);
                (
                    T0 + hour * HOUR + o as i64 * 1000,
                    json!({"user": format!("user-{o}"), "n": o}),
                )
            })
            .collect();
        writer
            .handle(&batch("ct", 0, flush * 100, &events))
            .unwrap();
        writer.flush().unwrap();
    }
    let report = lake.compact(LATER, 0).unwrap();
    assert_eq!(report.files_written, 2, "{report:?}");
    writer
}

#[test]
fn rows_spread_over_row_groups_are_deleted_keeping_order_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_settings(dir.path(), 3_600_000);
    let _writer = two_hours(&lake);
    let name = "p000-00000000000000000000-00000000000000000399";
    let (hour10, hour11) = (hour_dir(&lake, 0), hour_dir(&lake, 1));
    let old = hour10.join(format!("{name}.parquet"));
    assert_eq!(file_reader(&old).metadata().num_row_groups(), 6);
    let untouched = std::fs::read(hour11.join(format!("{name}.parquet"))).unwrap();

    // In row groups 0, 1, 3 and 5 of hour 10's file; none is in hour 11's, which covers the
    // same offsets.
    let gone = [0u64, 121, 250, 398];
    let rows = BTreeMap::from([(0u32, BTreeSet::from(gone))]);
    let report = lake
        .delete_rows(&stream("ct"), &rows, "dpo", "n IN (0, 121, 250, 398)")
        .unwrap();
    assert_eq!(report.rows_deleted, 4, "{report:?}");
    assert_eq!(report.rows_not_in_files, 0, "{report:?}");
    assert_eq!(
        report.files_rewritten,
        vec![format!(
            "year=2024/month=05/day=01/hour=10/{name}-r1.parquet"
        )]
    );
    // A file holding none of the rows is not rewritten.
    assert_eq!(
        std::fs::read(hour11.join(format!("{name}.parquet"))).unwrap(),
        untouched
    );
    assert!(!hour11.join(format!("{name}-r1.parquet")).exists());

    // Every other row, in the old file's order.
    let new = hour10.join(format!("{name}-r1.parquet"));
    let expected: Vec<(i64, i64)> = time_and_offset(&old)
        .into_iter()
        .filter(|(_, offset)| !gone.contains(&(*offset as u64)))
        .collect();
    assert_eq!(expected.len(), 296);
    assert_eq!(time_and_offset(&new), expected);
    let all: Vec<(i32, i64)> = (0..400)
        .filter(|o| !gone.contains(o))
        .map(|o| (0, o as i64))
        .collect();
    assert_eq!(live_rows(&lake, "ct"), all);

    // The layout of a compacted file: row groups of 50, zstd, statistics, the page index,
    // bloom filters on `user` only, which no longer know the deleted users.
    let reader = file_reader(&new);
    let metadata = reader.metadata();
    let groups: Vec<i64> = metadata.row_groups().iter().map(|g| g.num_rows()).collect();
    assert_eq!(groups, vec![50, 50, 50, 50, 50, 46]);
    assert!(metadata.column_index().is_some());
    assert!(metadata.offset_index().is_some());
    for index in 0..groups.len() {
        let group = reader.get_row_group(index).unwrap();
        let columns = group.metadata().columns();
        for (column_index, column) in columns.iter().enumerate() {
            let column_name = column.column_path().string();
            assert!(
                matches!(column.compression(), Compression::ZSTD(_)),
                "{column_name}"
            );
            assert!(column.statistics().is_some(), "{column_name}");
            let bloom = group.get_column_bloom_filter(column_index);
            assert_eq!(bloom.is_some(), column_name == "user", "{column_name}");
            if let Some(bloom) = bloom {
                for offset in gone {
                    assert!(!bloom.check(&format!("user-{offset}").as_str()));
                }
            }
        }
    }
}

#[test]
fn a_file_whose_rows_all_go_becomes_an_empty_revision() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_settings(dir.path(), 3_600_000);
    let _writer = two_hours(&lake);
    let hour11: BTreeSet<u64> = (0..400).filter(|o| o % 4 == 3).collect();
    let rows = BTreeMap::from([(0u32, hour11.clone())]);
    let report = lake
        .delete_rows(&stream("ct"), &rows, "dpo", "n % 4 = 3")
        .unwrap();
    assert_eq!(report.rows_deleted, 100, "{report:?}");
    assert_eq!(report.files_rewritten.len(), 1, "{report:?}");
    let revision =
        hour_dir(&lake, 1).join("p000-00000000000000000000-00000000000000000399-r1.parquet");
    assert!(read_parquet(&revision).iter().all(|b| b.num_rows() == 0));
    let left: Vec<(i32, i64)> = (0..400u64)
        .filter(|o| !hour11.contains(o))
        .map(|o| (0, o as i64))
        .collect();
    assert_eq!(live_rows(&lake, "ct"), left);
}

#[test]
fn a_deletion_failing_half_way_is_audited_before_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake_with_settings(dir.path(), 0);
    let _writer = fill(&lake);
    lake.compact(LATER, 0).unwrap();
    // Offset 3 of partition 0 is in hour 10, offset 4 in hour 11, whose file is unreadable:
    // the directories are taken in order, so the first is rewritten, then the second fails.
    let name = "p000-00000000000000000000-00000000000000000299";
    let broken = hour_dir(&lake, 1).join(format!("{name}.parquet"));
    std::fs::write(&broken, b"not parquet").unwrap();
    let rows = BTreeMap::from([(0u32, BTreeSet::from([3u64, 4]))]);
    let error = lake
        .delete_rows(
            &stream("ct"),
            &rows,
            "carol",
            "user IN ('user-3', 'user-4')",
        )
        .unwrap_err();
    assert!(error.to_string().contains(name), "{error}");

    let audit = entries(&lake);
    assert_eq!(audit.len(), 2, "{audit:?}");
    let (started, failed) = (&audit[0], &audit[1]);
    assert_eq!(started["status"], "started");
    assert_eq!(started["who"], "carol");
    assert_eq!(started["rows_matched"], 2);
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["id"], started["id"]);
    assert_eq!(failed["who"], "carol");
    assert_eq!(failed["predicate"], "user IN ('user-3', 'user-4')");
    assert_eq!(failed["error"], error.to_string());
    // What changed before the error: offset 3 is gone, and the entry says so.
    let rewritten = format!("year=2024/month=05/day=01/hour=10/{name}-r1.parquet");
    assert_eq!(failed["rows_deleted"], 1, "{failed}");
    assert_eq!(failed["files_rewritten"], json!([rewritten]));
    assert!(failed.get("rows_not_in_files").is_none(), "{failed}");
    let revision = stream_dir(&lake, "ct").join(&rewritten);
    let offsets: Vec<i64> = time_and_offset(&revision)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    assert_eq!(offsets.len(), 99);
    assert!(!offsets.contains(&3));
}
