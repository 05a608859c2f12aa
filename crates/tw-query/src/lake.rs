//! The production [`LakeCatalog`]: tw-lake's files and hot buffers.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use object_store::ObjectStore;
use tw_core::StreamName;
use tw_lake::Lake;

use crate::catalog::{HotData, LakeCatalog};
use crate::config::QueryConfig;
use crate::engine::QueryEngine;
use crate::error::QueryError;

impl LakeCatalog for Lake {
    fn streams(&self) -> Vec<StreamName> {
        Lake::streams(self)
    }

    fn table_schema(&self, stream: &StreamName) -> Option<SchemaRef> {
        Lake::table_schema(self, stream)
    }

    fn stream_location(&self, stream: &StreamName) -> Option<String> {
        let storage = self.storage();
        match storage.local_root() {
            // Unchanged from before the storage layer: a missing directory = no file yet
            // (DataFusion's local listing fails on a missing directory).
            Some(root) => {
                let dir = root.join(stream.as_str());
                dir.is_dir().then(|| format!("{}/", dir.display()))
            }
            // An empty prefix lists as no file.
            None => Some(storage.directory_url(stream.as_str())),
        }
    }

    fn object_store(&self) -> Option<(String, Arc<dyn ObjectStore>)> {
        let storage = self.storage();
        storage
            .local_root()
            .is_none()
            .then(|| storage.object_store())
    }

    fn hot_snapshot(&self, stream: &StreamName) -> HotData {
        let snapshot = Lake::hot_snapshot(self, stream);
        HotData {
            schema: snapshot.schema,
            batches: snapshot.batches,
            hot_start: snapshot.hot_start,
        }
    }
}

impl QueryEngine {
    /// Creates an engine over the lake's Parquet files and hot buffers.
    pub fn new(lake: Lake, config: QueryConfig) -> Result<Self, QueryError> {
        Self::with_catalog(Arc::new(lake), config)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use serde_json::{Value, json};
    use tw_core::{Record, StreamName};
    use tw_lake::{Lake, LakeConfig};
    use tw_pipeline::{Consumer, EventBatch};

    use super::*;

    fn event_batch(
        stream: &StreamName,
        partition: u32,
        offsets: std::ops::Range<u64>,
        time_ms: i64,
    ) -> EventBatch {
        let mut records = Vec::new();
        let mut events = Vec::new();
        for offset in offsets {
            let event = if offset % 2 == 0 {
                json!({"eventName": "ConsoleLogin", "userIdentity": {"userName": format!("u{offset}")}})
            } else {
                json!({"eventName": "AttachUserPolicy", "requestParameters": {"policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}, "n": offset})
            };
            records.push(Record {
                offset,
                ingest_time_ms: time_ms,
                event_time_ms: time_ms,
                key: Bytes::new(),
                payload: Bytes::from(event.to_string()),
            });
            events.push(event);
        }
        EventBatch {
            stream: stream.clone(),
            partition,
            records,
            events,
            checked: Vec::new(),
            fields: Vec::new(),
        }
    }

    #[tokio::test]
    async fn lake_writer_output_is_queryable_end_to_end() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lake = Lake::open(LakeConfig::new(dir.path())).expect("lake opens");
        let stream = StreamName::new("cloudtrail").expect("name");
        let mut writer = lake.writer();
        writer.start(&BTreeMap::new()).expect("writer starts");
        let t = 1_704_103_200_000; // 2024-01-01T10:00:00Z
        writer
            .handle(&event_batch(&stream, 0, 0..6, t))
            .expect("first batch");
        writer.flush().expect("flush to parquet");
        writer
            .handle(&event_batch(&stream, 0, 6..10, t + 1000))
            .expect("hot batch");
        writer
            .handle(&event_batch(&stream, 1, 0..3, t + 2000))
            .expect("other partition");

        let engine = QueryEngine::new(lake, QueryConfig::default()).expect("engine");
        let result = engine
            .query("SELECT _partition, _offset, eventName, userIdentity.userName AS who FROM cloudtrail WHERE year = 2024 AND month = 1 AND hour = 10 ORDER BY _partition, _offset")
            .await
            .expect("query runs");
        let rows: Vec<Value> = crate::to_json_rows(&result.batches)
            .expect("json")
            .into_iter()
            .map(Value::Object)
            .collect();
        let expected: Vec<Value> = (0..10u64)
            .map(|o| (0, o))
            .chain((0..3u64).map(|o| (1, o)))
            .map(|(p, o)| {
                let (name, who) = if o % 2 == 0 {
                    ("ConsoleLogin", json!(format!("u{o}")))
                } else {
                    ("AttachUserPolicy", Value::Null)
                };
                json!({"_partition": p, "_offset": o, "eventName": name, "who": who})
            })
            .collect();
        assert_eq!(rows, expected);

        let admins = engine
            .query("SELECT count(*) AS n FROM cloudtrail WHERE requestParameters.policyArn LIKE '%Admin%'")
            .await
            .expect("query runs");
        let admins = crate::to_json_rows(&admins.batches).expect("json");
        assert_eq!(admins[0].get("n"), Some(&json!(6)));
    }

    #[tokio::test]
    async fn files_flushed_between_queries_are_seen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lake = Lake::open(LakeConfig::new(dir.path())).expect("lake opens");
        let stream = StreamName::new("cloudtrail").expect("name");
        let mut writer = lake.writer();
        writer.start(&BTreeMap::new()).expect("writer starts");
        let t = 1_704_103_200_000;
        writer
            .handle(&event_batch(&stream, 0, 0..4, t))
            .expect("first batch");
        writer.flush().expect("first flush");
        let engine = QueryEngine::new(lake.clone(), QueryConfig::default()).expect("engine");
        let count = "SELECT count(*) AS n, count(DISTINCT _offset) AS d FROM cloudtrail";
        let first = engine.query(count).await.expect("query runs");
        assert_eq!(
            crate::to_json_rows(&first.batches).expect("json")[0],
            json!({"n": 4, "d": 4})
                .as_object()
                .cloned()
                .expect("object")
        );

        // A second flush moves rows from the hot buffer into a new file in the same directory.
        writer
            .handle(&event_batch(&stream, 0, 4..9, t + 60_000))
            .expect("second batch");
        writer.flush().expect("second flush");
        let second = engine.query(count).await.expect("query runs");
        assert_eq!(
            crate::to_json_rows(&second.batches).expect("json")[0],
            json!({"n": 9, "d": 9})
                .as_object()
                .cloned()
                .expect("object")
        );
    }

    /// The lake, with a flush (and a compaction merging it) run right after every hot
    /// snapshot: files stored between the snapshot and the listing.
    struct RacingLake {
        lake: Lake,
        writer: std::sync::Mutex<tw_lake::LakeWriter>,
    }

    impl LakeCatalog for RacingLake {
        fn streams(&self) -> Vec<StreamName> {
            self.lake.streams()
        }
        fn table_schema(&self, stream: &StreamName) -> Option<SchemaRef> {
            self.lake.table_schema(stream)
        }
        fn stream_location(&self, stream: &StreamName) -> Option<String> {
            LakeCatalog::stream_location(&self.lake, stream)
        }
        fn hot_snapshot(&self, stream: &StreamName) -> HotData {
            let snapshot = LakeCatalog::hot_snapshot(&self.lake, stream);
            self.writer.lock().expect("writer").flush().expect("flush");
            let far_future = 1_800_000_000_000;
            self.lake.compact(far_future, 0).expect("compaction");
            snapshot
        }
    }

    #[tokio::test]
    async fn files_stored_between_snapshot_and_listing_are_not_read_twice() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lake = Lake::open(LakeConfig::new(dir.path())).expect("lake opens");
        let stream = StreamName::new("cloudtrail").expect("name");
        let mut writer = lake.writer();
        writer.start(&BTreeMap::new()).expect("writer starts");
        let t = 1_704_103_200_000;
        writer
            .handle(&event_batch(&stream, 0, 0..4, t))
            .expect("first batch");
        writer.flush().expect("first flush");
        writer
            .handle(&event_batch(&stream, 0, 4..9, t + 1000))
            .expect("hot batch");
        let catalog = RacingLake {
            lake: lake.clone(),
            writer: std::sync::Mutex::new(writer),
        };
        let engine =
            QueryEngine::with_catalog(Arc::new(catalog), QueryConfig::default()).expect("engine");
        let count = "SELECT count(*) AS n, count(DISTINCT _offset) AS d FROM cloudtrail";
        let result = engine.query(count).await.expect("query runs");
        assert_eq!(
            crate::to_json_rows(&result.batches).expect("json")[0],
            json!({"n": 9, "d": 9})
                .as_object()
                .cloned()
                .expect("object"),
            "rows 4..9 are hot in the snapshot and in a file flushed (then merged) after it"
        );
        let files: Vec<String> = walk(dir.path());
        assert!(
            files
                .iter()
                .any(|f| f.ends_with("p000-00000000000000000000-00000000000000000008.parquet")),
            "the compaction straddling hot_start ran: {files:?}"
        );
        // Now everything is flushed: all of it comes from files, once.
        let again = engine.query(count).await.expect("query runs");
        assert_eq!(
            crate::to_json_rows(&again.batches).expect("json")[0],
            json!({"n": 9, "d": 9})
                .as_object()
                .cloned()
                .expect("object")
        );

        // No per-row offset filter is planned any more.
        let plan = engine
            .query("EXPLAIN SELECT eventName, count(*) FROM cloudtrail GROUP BY eventName")
            .await
            .expect("explain runs");
        let text = crate::to_pretty_table(&plan.batches).expect("table");
        // (`input_partitions` is DataFusion's own word; the column never appears.)
        assert!(!text.contains("_partition@"), "{text}");
        assert!(!text.contains("_partition <>"), "{text}");
        assert!(!text.contains("_offset"), "{text}");
    }

    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path.display().to_string());
            }
        }
        out
    }
}
