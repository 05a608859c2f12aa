//! A lake on disk built by hand: Hive directories of Parquet files plus a hot snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use tw_core::{Offset, PartitionId, StreamName};

use crate::{HotData, LakeCatalog, QueryConfig, QueryEngine, QueryResult};

/// One stream of the fixture lake.
pub struct FixtureStream {
    pub schema: Option<SchemaRef>,
    pub hot: HotData,
}

/// A [`LakeCatalog`] over a temporary directory.
pub struct FixtureLake {
    pub dir: tempfile::TempDir,
    pub streams: BTreeMap<String, FixtureStream>,
    /// Streams whose hot snapshot was taken, in order.
    pub snapshots: Arc<Mutex<Vec<String>>>,
}

impl FixtureLake {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            streams: BTreeMap::new(),
            snapshots: Arc::default(),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Declares a stream with its union schema and hot rows.
    pub fn stream(&mut self, name: &str, schema: Option<SchemaRef>, hot: HotData) {
        self.streams
            .insert(name.to_string(), FixtureStream { schema, hot });
    }

    /// Writes `batch` as `{root}/{stream}/year=/month=/day=/hour=/{file}`, at most
    /// `row_group_rows` rows per row group.
    pub fn write_file(
        &self,
        stream: &str,
        ymdh: (i32, u32, u32, u32),
        file: &str,
        batch: &RecordBatch,
        row_group_rows: usize,
    ) -> PathBuf {
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(row_group_rows))
            .build();
        self.write_file_with(stream, ymdh, file, batch, properties)
    }

    /// [`Self::write_file`] with the writer's `properties`.
    pub fn write_file_with(
        &self,
        stream: &str,
        ymdh: (i32, u32, u32, u32),
        file: &str,
        batch: &RecordBatch,
        properties: WriterProperties,
    ) -> PathBuf {
        let (y, m, d, h) = ymdh;
        let dir = self
            .root()
            .join(stream)
            .join(format!("year={y:04}/month={m:02}/day={d:02}/hour={h:02}"));
        std::fs::create_dir_all(&dir).expect("partition dir");
        let path = dir.join(file);
        let out = std::fs::File::create(&path).expect("parquet file");
        let mut writer =
            ArrowWriter::try_new(out, batch.schema(), Some(properties)).expect("writer");
        writer.write(batch).expect("write");
        writer.close().expect("close");
        path
    }

    pub fn engine(self, config: QueryConfig) -> QueryEngine {
        QueryEngine::with_catalog(Arc::new(self), config).expect("engine")
    }
}

impl LakeCatalog for FixtureLake {
    fn streams(&self) -> Vec<StreamName> {
        self.streams
            .keys()
            .map(|name| StreamName::new(name).expect("valid name"))
            .collect()
    }

    fn table_schema(&self, stream: &StreamName) -> Option<SchemaRef> {
        self.streams
            .get(stream.as_str())
            .and_then(|s| s.schema.clone())
    }

    fn stream_location(&self, stream: &StreamName) -> Option<String> {
        let dir = self.root().join(stream.as_str());
        dir.is_dir().then(|| format!("{}/", dir.display()))
    }

    fn hot_snapshot(&self, stream: &StreamName) -> HotData {
        self.snapshots
            .lock()
            .expect("snapshot log")
            .push(stream.to_string());
        self.streams
            .get(stream.as_str())
            .map(|s| s.hot.clone())
            .expect("known stream")
    }
}

pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The system columns every lake row carries.
pub fn system_fields() -> Vec<Field> {
    vec![
        Field::new("_time", time_type(), true),
        Field::new("_partition", DataType::Int32, true),
        Field::new("_offset", DataType::Int64, true),
    ]
}

/// A batch with the system columns plus `extra` columns.
pub fn batch(
    times: &[i64],
    partition: i32,
    offsets: &[i64],
    extra: Vec<(Field, ArrayRef)>,
) -> RecordBatch {
    let mut fields = system_fields();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(times.to_vec()).with_timezone("UTC")),
        Arc::new(Int32Array::from(vec![partition; offsets.len()])),
        Arc::new(Int64Array::from(offsets.to_vec())),
    ];
    for (field, column) in extra {
        fields.push(field);
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("valid fixture batch")
}

pub fn empty_hot(schema: SchemaRef) -> HotData {
    HotData {
        schema,
        batches: Vec::new(),
        hot_start: BTreeMap::new(),
    }
}

pub fn hot(batches: Vec<RecordBatch>, hot_start: &[(PartitionId, Offset)]) -> HotData {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .expect("at least one hot batch");
    HotData {
        schema,
        batches,
        hot_start: hot_start.iter().copied().collect(),
    }
}

/// Epoch milliseconds of a UTC hour.
pub fn ms(y: i32, m: u32, d: u32, h: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|date| date.and_hms_opt(h, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .expect("valid date")
}

/// Runs `sql` and fails the test with the error if it does not succeed.
pub async fn run(engine: &QueryEngine, sql: &str) -> QueryResult {
    match engine.query(sql).await {
        Ok(result) => result,
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// The result as JSON rows, for exact comparisons.
pub async fn rows(engine: &QueryEngine, sql: &str) -> Vec<serde_json::Value> {
    let result = run(engine, sql).await;
    crate::to_json_rows(&result.batches)
        .expect("json")
        .into_iter()
        .map(serde_json::Value::Object)
        .collect()
}

/// The text of `EXPLAIN {sql}` (logical and physical plans as a table).
pub async fn explain(engine: &QueryEngine, sql: &str) -> String {
    let plan = run(engine, &format!("EXPLAIN {sql}")).await;
    crate::to_pretty_table(&plan.batches).expect("plan as text")
}
