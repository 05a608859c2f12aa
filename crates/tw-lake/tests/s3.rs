//! The lake on a real S3-compatible server (moto's server mode from the test venv): the
//! storage API behaves as on disk, and the writer's start deletes and cuts files past the
//! committed offsets in the bucket, so a replay ends with each offset once; compaction and
//! retention merge and delete objects in the bucket.

mod common;

use bytes::Bytes;
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tw_lake::{Lake, LakeConfig, LakeLocation, LakeStorage, S3Url, StoredObject};
use tw_pipeline::{Consumer, StreamPartition};
use tw_testkit::moto::Moto;

fn expected(partitions: &[(i32, i64)]) -> Vec<(i32, i64)> {
    let mut rows: Vec<(i32, i64)> = partitions
        .iter()
        .flat_map(|(p, n)| (0..*n).map(move |o| (*p, o)))
        .collect();
    rows.sort();
    rows
}

fn committed(entries: &[(&str, u32, u64)]) -> std::collections::BTreeMap<StreamPartition, u64> {
    entries
        .iter()
        .map(|(s, p, o)| ((stream(s), *p), *o))
        .collect()
}

/// The lake at `url` on `moto`.
fn location(moto: &Moto, url: &str) -> LakeLocation {
    LakeLocation::S3 {
        url: S3Url::parse(url).unwrap(),
        connection: moto.connection(),
    }
}

fn names(objects: &[StoredObject]) -> Vec<&str> {
    objects.iter().map(|o| o.path.as_str()).collect()
}

#[test]
fn storage_on_s3_puts_gets_lists_and_deletes_like_the_disk() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let storage = LakeStorage::open(&location(&moto, "s3://lake/some/prefix")).unwrap();
    storage
        .put(
            "ct/year=2024/hour=10/a.parquet",
            Bytes::from_static(b"aaaa"),
        )
        .unwrap();
    storage
        .put("ct/year=2024/hour=11/b.parquet", Bytes::from_static(b"bb"))
        .unwrap();
    storage
        .put("ctx/c.parquet", Bytes::from_static(b"c"))
        .unwrap();
    storage
        .put("_catalog/ct.json", Bytes::from_static(b"{}"))
        .unwrap();
    storage
        .put("_catalog/ct.json", Bytes::from_static(b"{\"v\":2}"))
        .unwrap();
    assert_eq!(
        storage.list("ct").unwrap(),
        vec![
            StoredObject {
                path: "ct/year=2024/hour=10/a.parquet".into(),
                size: 4
            },
            StoredObject {
                path: "ct/year=2024/hour=11/b.parquet".into(),
                size: 2
            },
        ],
        "whole segments only, relative to the prefix"
    );
    assert_eq!(storage.list("").unwrap().len(), 4);
    assert_eq!(
        storage.get("_catalog/ct.json").unwrap(),
        Some(Bytes::from_static(b"{\"v\":2}"))
    );
    assert_eq!(storage.get("ct/missing.parquet").unwrap(), None);
    storage.delete("ct/year=2024/hour=10/a.parquet").unwrap();
    storage
        .delete("ct/year=2024/hour=10/a.parquet")
        .expect("deleting a missing object succeeds");
    assert_eq!(
        names(&storage.list("ct").unwrap()),
        ["ct/year=2024/hour=11/b.parquet"]
    );
    assert_eq!(
        storage.describe("ct/x"),
        "s3://lake/some/prefix/ct/x",
        "messages name the full object"
    );
    assert_eq!(storage.directory_url("ct"), "s3://lake/some/prefix/ct/");

    // Callable from inside either kind of tokio runtime too (the server opens the lake in
    // async code): never a nested-runtime panic.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let inside = multi.block_on(async { storage.list("ct").unwrap().len() });
    assert_eq!(inside, 1);
    let single = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inside = single.block_on(async { storage.get("ctx/c.parquet").unwrap() });
    assert_eq!(inside, Some(Bytes::from_static(b"c")));

    // A bucket that does not exist is an error naming it, not a hang.
    let missing = LakeStorage::open(&location(&moto, "s3://no-such-bucket")).unwrap();
    let error = missing.list("").unwrap_err().to_string();
    assert!(error.contains("s3://no-such-bucket"), "{error}");
}

/// Every (partition, offset) in the stream's Parquet objects, sorted, duplicates kept.
fn stored_keys(lake: &Lake, stream_name: &str) -> Vec<(i32, i64)> {
    let storage = lake.storage();
    let mut rows = Vec::new();
    for object in storage.list(stream_name).unwrap() {
        let bytes = storage.get(&object.path).unwrap().unwrap();
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
        {
            rows.extend(keys(&batch.unwrap()));
        }
    }
    rows.sort();
    rows
}

#[test]
fn start_deletes_and_cuts_s3_files_past_the_committed_offsets() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let config = || LakeConfig {
        flush_max_rows: 5,
        location: location(&moto, "s3://lake/t"),
        ..config(std::path::Path::new("unused"))
    };
    {
        let lake = Lake::open(config()).unwrap();
        let mut writer = lake.writer();
        writer.start(&Default::default()).unwrap();
        writer.handle(&numbered("ct", 0, 0, 5)).unwrap(); // file 0-4
        writer.handle(&numbered("ct", 0, 5, 5)).unwrap(); // file 5-9
        writer.handle(&numbered("ct", 1, 0, 5)).unwrap(); // file 0-4 of partition 1
        writer.handle(&numbered("ct", 3, 0, 5)).unwrap(); // partition 3: never committed
        writer.handle(&numbered("ct", 0, 10, 2)).unwrap(); // hot only: lost by the "crash"
        assert_eq!(lake.storage().list("ct").unwrap().len(), 4);
    }

    // Partition 0 committed the first file only; partition 1 in the middle of its file.
    let lake = Lake::open(config()).unwrap();
    assert!(
        lake.table_schema(&stream("ct")).is_some(),
        "the catalog is read back from the bucket"
    );
    let mut writer = lake.writer();
    writer
        .start(&committed(&[("ct", 0, 5), ("ct", 1, 3)]))
        .unwrap();
    assert_eq!(
        names(&lake.storage().list("ct").unwrap()),
        [
            "ct/year=2024/month=05/day=01/hour=10/p000-00000000000000000000-00000000000000000004.parquet",
            "ct/year=2024/month=05/day=01/hour=10/p001-00000000000000000000-00000000000000000002.parquet",
        ]
    );
    assert_eq!(stored_keys(&lake, "ct"), expected(&[(0, 5), (1, 3)]));

    writer.handle(&numbered("ct", 0, 5, 7)).unwrap();
    writer.handle(&numbered("ct", 1, 3, 2)).unwrap();
    writer.handle(&numbered("ct", 3, 0, 5)).unwrap();
    writer.flush().unwrap();
    assert!(lake.hot_snapshot(&stream("ct")).batches.is_empty());
    assert_eq!(
        stored_keys(&lake, "ct"),
        expected(&[(0, 12), (1, 5), (3, 5)]),
        "each offset once in the bucket"
    );
}

#[test]
fn compaction_and_retention_work_in_the_bucket() {
    let moto = Moto::start();
    moto.create_bucket("lake");
    let lake = Lake::open(LakeConfig {
        flush_max_rows: 5,
        location: location(&moto, "s3://lake/t"),
        compaction: tw_lake::CompactionConfig {
            grace_ms: 0,
            ..Default::default()
        },
        ..config(std::path::Path::new("unused"))
    })
    .unwrap();
    lake.use_stream_settings(std::sync::Arc::new(|_| tw_core::StreamLakeConfig {
        retention: Some("30d".to_string()),
        ..Default::default()
    }));
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    for first in [0, 5, 10, 15] {
        writer.handle(&numbered("ct", 0, first, 5)).unwrap();
    }
    assert_eq!(lake.storage().list("ct").unwrap().len(), 4);
    let now = tw_core::now_ms();

    // The first pass merges (inputs superseded), the second deletes the inputs (grace 0).
    let report = lake.compact(now, 0).unwrap();
    assert_eq!((report.files_compacted, report.files_written), (4, 1));
    assert_eq!(lake.compact(now, 0).unwrap().superseded_deleted, 4);
    assert_eq!(
        names(&lake.storage().list("ct").unwrap()),
        [
            "ct/year=2024/month=05/day=01/hour=10/p000-00000000000000000000-00000000000000000019.parquet"
        ]
    );
    assert_eq!(stored_keys(&lake, "ct"), expected(&[(0, 20)]));

    // 2024 is older than 30 days: retention empties the stream's objects, not the catalog.
    let report = lake.apply_retention(now).unwrap();
    assert_eq!((report.hours_deleted, report.files_deleted), (1, 1));
    assert!(lake.storage().list("ct").unwrap().is_empty());
    assert!(!lake.storage().list("_catalog").unwrap().is_empty());
}
