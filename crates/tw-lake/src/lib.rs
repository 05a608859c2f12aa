//! The lake: every event of every stream as Hive-partitioned, zstd-compressed Parquet files
//! under `{root}/{stream}/year=YYYY/month=MM/day=DD/hour=HH/` (by event time, UTC), where the
//! root is a local directory or an S3 bucket prefix (every object goes through
//! [`LakeStorage`]), plus the
//! not-yet-flushed ("hot") rows kept in memory as Arrow batches and shared with the query
//! engine.
//!
//! Table shape: metadata columns `_time`, `_ingest_time` (timestamp ms UTC), `_partition`
//! (Int32) and `_offset` (Int64), then the event's fields flattened to dotted names
//! (`requestParameters.policyArn`) in order of first appearance. Arrays and empty objects are
//! stored as compact JSON text. A top-level field named like a Hive partition column (`year`,
//! `month`, `day`, `hour`) or a metadata column, compared case-insensitively, gets a `_`
//! appended: an event field `year` is stored as column `year_`. A top-level value that is not
//! an object is stored in a column `_value`. Types are inferred and only ever widen
//! (Int64 + Float64 = Float64; any other conflict = Utf8 holding the JSON text, counted in
//! `tidewatch_lake_type_conflicts_total`). Beyond the column limit ([`MAX_EVENT_COLUMNS`]), or
//! when two fields of one event flatten to the same name, the extra fields are kept in a
//! `_overflow` JSON-object column. Nothing is ever dropped; a field that is only ever `null`
//! gets no column.
//!
//! Invariants:
//! - a Parquet file is named `p{partition:03}-{first:020}-{last:020}.parquet` after the offset
//!   range of the flush that wrote it, and appears only complete ([`LakeStorage::put`]: tmp
//!   file, fsync, rename, fsync of the directory locally; one whole PUT on S3);
//! - the catalog `{root}/_catalog/{stream}.json` is written (atomically) before any Parquet file
//!   using a column or type it introduces;
//! - `hot_start[p]` is the first offset not covered by flushed files; a flush stores its files
//!   first (each put has returned, so the object exists) and only then, under the lock [`Lake::hot_snapshot`] takes, removes its rows from
//!   the hot buffer and advances `hot_start`. File rows with `_offset < hot_start[p]` plus the
//!   hot batches therefore hold each handled offset exactly once at any moment;
//! - [`LakeWriter`]'s `start` deletes files at or past the committed offsets (and cuts a file
//!   straddling one), so a replay after a crash rewrites them instead of duplicating them
//!   (exactly-once into the lake); files of a flush that failed half-way are deleted before
//!   any later flush succeeds;
//! - a file whose offset range another file of the same partition in the same directory
//!   covers is superseded (compaction merged it, see `compact.rs`): readers skip it, and it is
//!   deleted after a grace period (at once by the writer's start).
//!
//! - imported files (`import.rs`, `tidewatch lake import`) use partitions from
//!   [`IMPORT_PARTITION_BASE`] up, one per imported source, which the log never has: they are
//!   never hot, never cut by the writer's start, and otherwise handled like flushed files.
//!
//! One [`LakeWriter`] per [`Lake`]: the writer is the only mutator of the hot buffers; the
//! catalog is changed by the writer and by imports, one at a time.

mod builder;
mod catalog;
mod compact;
mod compact_json;
mod convert;
mod delete;
mod dictionary;
mod error;
mod files;
mod flatten;
mod forget;
mod import;
mod merge;
mod retention;
mod scan;
mod schema_view;
mod storage;
mod supersede;
mod unflatten;
mod writer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use tw_core::{Offset, PartitionId, StreamLakeConfig, StreamName};

use crate::catalog::Catalog;
pub use crate::compact::{CompactionConfig, CompactionReport};
pub use crate::delete::{AUDIT_DIR, DeleteReport};
pub use crate::error::LakeError;
pub use crate::forget::DELETED_DIR;
pub use crate::import::{
    DeadLetterSink, IMPORT_PARTITION_BASE, IMPORTS_DIR, ImportFormat, ImportReport, ImportSource,
    ImportStatus, is_import_partition,
};
pub use crate::retention::RetentionReport;
pub use crate::schema_view::{ColumnInfo, StreamSchema, WideningInfo};
pub use crate::storage::{LakeLocation, LakeStorage, StoredObject};
pub use crate::supersede::superseded;
pub use crate::unflatten::{LakeRow, rows_to_events};
pub use crate::writer::LakeWriter;
pub use tw_s3::{S3Connection, S3Url};

/// The partition and offset range (inclusive) of a lake data file name
/// (`p{partition}-{first}-{last}[-r{n}].parquet`); `None` for any other name.
pub fn data_file_range(name: &str) -> Option<(PartitionId, Offset, Offset)> {
    files::parse_file_name(name)
}

/// Default number of event columns per stream before new fields go to `_overflow`.
pub const MAX_EVENT_COLUMNS: usize = 2000;

/// Settings of the lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeConfig {
    /// Where the streams' files and `_catalog/` live.
    pub location: LakeLocation,
    /// Flush a partition once it buffers this many rows.
    pub flush_max_rows: usize,
    /// Flush a partition once its buffered batches take about this many bytes in memory.
    pub flush_max_bytes: usize,
    /// Flush a partition whose oldest buffered row was buffered this long ago (wall clock).
    pub flush_max_age_ms: u64,
    /// How small files are merged (see [`Lake::compact`]).
    pub compaction: CompactionConfig,
}

impl LakeConfig {
    /// The defaults (100,000 rows, 16 MiB, 10 s) for a lake under the local directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LakeConfig {
            location: LakeLocation::Local(root.into()),
            flush_max_rows: 100_000,
            flush_max_bytes: 16 << 20,
            flush_max_age_ms: 10_000,
            compaction: CompactionConfig::default(),
        }
    }
}

/// Where the lake finds each stream's [`StreamLakeConfig`] (read on every flush and pass, so
/// changed settings apply to the next file written).
pub type StreamSettings = Arc<dyn Fn(&StreamName) -> StreamLakeConfig + Send + Sync>;

/// A handle on the lake: catalog and hot buffers, cheap to clone and shared between the
/// writer and the query engine.
#[derive(Clone)]
pub struct Lake {
    shared: Arc<Shared>,
}

/// The rows of a stream not yet in Parquet files, taken atomically with respect to flushes.
#[derive(Debug, Clone)]
pub struct HotSnapshot {
    /// The table schema at the moment of the snapshot.
    pub schema: SchemaRef,
    /// Every handled-but-not-yet-flushed row; every batch conforms to `schema`.
    pub batches: Vec<RecordBatch>,
    /// Per partition the writer has seen: the first offset not covered by flushed files.
    /// Read files keeping only `_offset < hot_start[_partition]` (no filter for partitions
    /// absent from the map), then add `batches`.
    pub hot_start: BTreeMap<PartitionId, Offset>,
}

struct Shared {
    config: LakeConfig,
    storage: LakeStorage,
    max_columns: usize,
    state: Mutex<LakeState>,
    /// Where per-stream lake settings come from (defaults when unset or unknown).
    settings: OnceLock<StreamSettings>,
    /// Held while the catalog is taken out of the state to convert a batch (the writer and
    /// imports both convert), so that one conversion never starts from a catalog another
    /// one is still changing.
    catalog_writer: Mutex<()>,
    /// Held by whatever rewrites or deletes existing files (the writer's crash clean-up,
    /// compaction, retention, delete-by-query), so they never work on the same files at once.
    maintenance: Mutex<()>,
    /// When each superseded file was first known superseded (wall clock, ms): it is deleted a
    /// grace period later. In memory: after a restart the grace starts again, which is safe.
    superseded_since: Mutex<std::collections::HashMap<String, i64>>,
}

#[derive(Default)]
struct LakeState {
    streams: BTreeMap<StreamName, StreamState>,
}

struct StreamState {
    catalog: Catalog,
    /// Catalog revision last written to disk (`u64::MAX`: never written).
    persisted_revision: u64,
    /// The table schema, rebuilt from the catalog when its revision moves past this one.
    schema: SchemaRef,
    schema_revision: u64,
    /// The catalog as of `schema_revision`, for readers: `catalog` itself leaves the lock
    /// while the writer converts a batch.
    published: Catalog,
    /// Values stored as text after a type conflict, per column, since the lake was opened.
    type_conflicts: BTreeMap<String, u64>,
    partitions: BTreeMap<PartitionId, PartitionBuffer>,
}

impl StreamState {
    fn new(catalog: Catalog) -> Self {
        StreamState {
            schema: catalog.schema(),
            schema_revision: catalog.revision,
            persisted_revision: catalog.revision,
            published: catalog.clone(),
            type_conflicts: BTreeMap::new(),
            catalog,
            partitions: BTreeMap::new(),
        }
    }
}

/// The hot rows of one partition.
#[derive(Debug, Default)]
struct PartitionBuffer {
    /// Batches in offset order, each conforming to the schema of its time.
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
    /// Offsets of the first and last buffered rows.
    first_offset: Option<Offset>,
    last_offset: Option<Offset>,
    /// Wall-clock time the oldest buffered row was buffered.
    oldest_buffered_ms: Option<i64>,
    /// First offset not covered by flushed files.
    hot_start: Offset,
    /// Next offset to accept: records below it are already buffered or flushed, which makes a
    /// retried `handle` idempotent.
    next_offset: Offset,
}

impl PartitionBuffer {
    fn starting_at(offset: Offset) -> Self {
        PartitionBuffer {
            hot_start: offset,
            next_offset: offset,
            ..Default::default()
        }
    }
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Lake {
    /// Opens the lake at `config.location`, loading every catalog from `_catalog/`.
    pub fn open(config: LakeConfig) -> Result<Lake, LakeError> {
        Self::open_with_column_limit(config, MAX_EVENT_COLUMNS)
    }

    /// Like [`Lake::open`], with a different limit of event columns per stream.
    pub fn open_with_column_limit(
        config: LakeConfig,
        max_columns: usize,
    ) -> Result<Lake, LakeError> {
        let storage = LakeStorage::open(&config.location)?;
        let mut state = LakeState::default();
        for catalog in Catalog::load_all(&storage)? {
            state
                .streams
                .insert(catalog.stream.clone(), StreamState::new(catalog));
        }
        Ok(Lake {
            shared: Arc::new(Shared {
                config,
                storage,
                max_columns,
                state: Mutex::new(state),
                settings: OnceLock::new(),
                catalog_writer: Mutex::new(()),
                maintenance: Mutex::new(()),
                superseded_since: Mutex::new(std::collections::HashMap::new()),
            }),
        })
    }

    /// The writer feeding this lake (a `tw_pipeline::Consumer` named `lake`).
    pub fn writer(&self) -> LakeWriter {
        LakeWriter::new(self.clone())
    }

    /// The lake's objects (files and catalogs), relative to its root.
    pub fn storage(&self) -> &LakeStorage {
        &self.shared.storage
    }

    /// The settings the lake was opened with.
    pub fn config(&self) -> &LakeConfig {
        &self.shared.config
    }

    /// Streams that have a schema (data has been seen), sorted by name.
    pub fn streams(&self) -> Vec<StreamName> {
        self.lock().streams.keys().cloned().collect()
    }

    /// The union schema of `stream` (metadata columns, then event columns), if it has data.
    pub fn table_schema(&self, stream: &StreamName) -> Option<SchemaRef> {
        self.lock()
            .streams
            .get(stream)
            .map(|state| state.schema.clone())
    }

    /// The columns of `stream` with their history, if it has data.
    pub fn stream_schema(&self, stream: &StreamName) -> Option<StreamSchema> {
        let state = self.lock();
        let stream_state = state.streams.get(stream)?;
        Some(schema_view::stream_schema(
            &stream_state.published,
            &stream_state.type_conflicts,
        ))
    }

    /// The hot rows of `stream` and the matching `hot_start`, consistent with the files on disk
    /// at the same instant (a flush never happens half-way through a snapshot).
    pub fn hot_snapshot(&self, stream: &StreamName) -> HotSnapshot {
        let (schema, raw, hot_start) = {
            let state = self.lock();
            let Some(stream_state) = state.streams.get(stream) else {
                return HotSnapshot {
                    schema: Arc::new(Schema::new(catalog::metadata_fields())),
                    batches: Vec::new(),
                    hot_start: BTreeMap::new(),
                };
            };
            let raw: Vec<RecordBatch> = stream_state
                .partitions
                .values()
                .flat_map(|buffer| buffer.batches.iter().cloned())
                .collect();
            let hot_start = stream_state
                .partitions
                .iter()
                .map(|(p, buffer)| (*p, buffer.hot_start))
                .collect();
            (stream_state.schema.clone(), raw, hot_start)
        };
        // Batches are immutable, so aligning them outside the lock is still consistent.
        let batches = raw
            .iter()
            .filter_map(|batch| match convert::align(batch, &schema, stream.as_str()) {
                Ok(aligned) => Some(aligned),
                Err(error) => {
                    // Only widenings the catalog allows happen, and arrow casts all of them.
                    tracing::error!(%stream, %error, "hot batch could not be aligned to the table schema");
                    None
                }
            })
            .collect();
        HotSnapshot {
            schema,
            batches,
            hot_start,
        }
    }

    /// Reads per-stream lake settings (bloom-filter columns, sort column, retention) from
    /// `settings` from now on (the server passes the stream registry's). Only the first call
    /// counts.
    pub fn use_stream_settings(&self, settings: StreamSettings) {
        let _ = self.shared.settings.set(settings);
    }

    /// The lake settings of `stream` (the defaults until [`Lake::use_stream_settings`]).
    pub fn stream_settings(&self, stream: &StreamName) -> StreamLakeConfig {
        self.shared
            .settings
            .get()
            .map(|settings| settings(stream))
            .unwrap_or_default()
    }

    /// The lock of file maintenance (see `Shared::maintenance`); poisoning is ignored, the
    /// guard protects no data.
    pub(crate) fn maintenance(&self) -> MutexGuard<'_, ()> {
        self.shared
            .maintenance
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Locks the state; a panic elsewhere while holding it leaves data that is still valid
    /// (every mutation is a whole-value replacement), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, LakeState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
