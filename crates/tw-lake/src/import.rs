//! Import of existing files into a stream's lake (`tidewatch lake import`): NDJSON and JSON
//! documents (arrays, CloudTrail `{"Records": [...]}`) and Parquet files written by other
//! tools become lake files like those of a flush — same flattening, same catalog and widening
//! rules, same Hive hour directories — without going through the log (so neither detection
//! nor search sees them).
//!
//! `_partition` and `_offset` of imported rows: every import gets its own partition number
//! from [`IMPORT_PARTITION_BASE`] up (the catalog counts the imports of each stream; log
//! partitions are at most `tw_core::MAX_PARTITIONS`), and `_offset` is the record's number in
//! the source (1-based line of NDJSON, element of a JSON array or `Records`, row of a Parquet
//! file). So `(_partition, _offset)` names every row once, across the log's rows and every
//! import, and the rules built on it hold unchanged: imported partitions are never hot (the
//! writer never sees them, so queries neither filter nor hide their files), compaction merges
//! and delete-by-query rewrites their files like any other (their files are complete the
//! moment they are stored), superseding works per partition, and the writer's crash clean-up
//! leaves them alone (they hold no log offsets to replay).
//!
//! Exactly once: a source is identified by the SHA-256 of its (decompressed) content. Its
//! manifest `_imports/{stream}/{sha256}.json` records the import's partition, `started` before
//! the first file is stored and `done` after the last one (and after the rejected records
//! are in the dead-letter queue). Importing content whose manifest is `done` does nothing;
//! one still `started` (a crash half-way) is resumed: its files are deleted, then written
//! again under the same partition. A failed import deletes what it wrote and its manifest.
//! An import holds the lake's maintenance lock, so compaction, retention, delete-by-query and
//! other imports never see it half-way.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use serde::{Deserialize, Serialize};
use tw_core::{Offset, PartitionId, Record, StreamName, now_ms};
use tw_pipeline::{IngestLimits, ParsedEvent, RejectedRecord, Rejection, StreamState};

use crate::dictionary::DictionaryChoice;
use crate::files;
use crate::{Lake, LakeError};

/// `_partition` of the first import of a stream; import `n` (from 0) uses this plus `n`.
pub const IMPORT_PARTITION_BASE: PartitionId = 1_000_000_000;

/// Directory (relative to the lake root) of the import manifests, one per stream and source.
pub const IMPORTS_DIR: &str = "_imports";

/// Format version of the manifests.
const MANIFEST_FORMAT_VERSION: u32 = 1;

/// Whether `partition` holds imported rows rather than the log's.
pub fn is_import_partition(partition: PartitionId) -> bool {
    partition >= IMPORT_PARTITION_BASE
}

/// Whether a file of `partition` ending at `last` is completely flushed (may be merged or
/// rewritten): below the writer's `hot_start`, or imported (stored whole by the import).
pub(crate) fn flushed(
    partition: PartitionId,
    last: Offset,
    hot_start: &BTreeMap<PartitionId, Offset>,
) -> bool {
    is_import_partition(partition) || hot_start.get(&partition).is_some_and(|start| last < *start)
}

/// How the source's content is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportFormat {
    /// NDJSON, a JSON array of objects, a CloudTrail `{"Records": [...]}` file or one object.
    Json,
    /// A Parquet file.
    Parquet,
}

impl ImportFormat {
    /// Parquet when the content starts with Parquet's magic bytes, JSON otherwise.
    pub fn detect(content: &[u8]) -> Self {
        if content.starts_with(b"PAR1") {
            ImportFormat::Parquet
        } else {
            ImportFormat::Json
        }
    }
}

/// One file to import.
#[derive(Debug, Clone)]
pub struct ImportSource {
    /// Its name, for reports and the manifest (not used for identity).
    pub name: String,
    /// Its content, decompressed.
    pub content: Bytes,
    /// How the content is encoded.
    pub format: ImportFormat,
    /// Event time of records without one of their own (the file's modification time, or the
    /// time of the import).
    pub fallback_time_ms: i64,
}

/// What importing one source did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// Imported now.
    Imported,
    /// An import interrupted earlier was redone.
    Resumed,
    /// The same content was imported before: nothing was written.
    AlreadyImported,
}

/// The outcome of importing one source.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The source's name.
    pub source: String,
    /// SHA-256 of its content (hex): its identity.
    pub sha256: String,
    /// What happened.
    pub status: ImportStatus,
    /// The `_partition` of its rows.
    pub partition: PartitionId,
    /// Rows stored in the lake.
    pub rows_imported: u64,
    /// Records refused (also written to the dead-letter queue).
    pub rows_rejected: u64,
    /// The refused records of this run with their line and reason (empty when already
    /// imported).
    pub rejected: Vec<RejectedRecord>,
    /// Parquet files written.
    pub files_written: usize,
}

/// Where an import stands, persisted per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ManifestState {
    /// Files may be half written.
    Started,
    /// Every file is stored.
    Done,
}

/// `_imports/{stream}/{sha256}.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format_version: u32,
    source: String,
    sha256: String,
    format: ImportFormat,
    partition: PartitionId,
    state: ManifestState,
    started_ms: i64,
    #[serde(default)]
    finished_ms: Option<i64>,
    #[serde(default)]
    rows_imported: u64,
    #[serde(default)]
    rows_rejected: u64,
    #[serde(default)]
    files_written: usize,
}

/// Receives the refused records of an import before it is marked done (the server writes
/// them to the dead-letter queue); an error fails the import.
pub type DeadLetterSink<'a> = &'a mut dyn FnMut(&[Rejection]) -> Result<(), String>;

impl Lake {
    /// Imports `source` into `stream` (see the module doc): records get their event time and
    /// schema check from `rules` (the stream's configuration), JSON records are split with
    /// `limits`, and refused records go to `dead_letter`.
    pub fn import(
        &self,
        stream: &StreamName,
        rules: &StreamState,
        source: ImportSource,
        limits: &IngestLimits,
        dead_letter: DeadLetterSink<'_>,
    ) -> Result<ImportReport, LakeError> {
        let sha256 = sha256_hex(&source.content);
        let _maintenance = self.maintenance();
        let storage = self.storage();
        let path = format!("{IMPORTS_DIR}/{stream}/{sha256}.json");
        let previous = match storage.get(&path)? {
            Some(bytes) => Some(parse_manifest(&bytes, &storage.describe(&path))?),
            None => None,
        };
        if let Some(done) = previous.as_ref().filter(|m| m.state == ManifestState::Done) {
            return Ok(ImportReport {
                source: source.name,
                sha256,
                status: ImportStatus::AlreadyImported,
                partition: done.partition,
                rows_imported: done.rows_imported,
                rows_rejected: done.rows_rejected,
                rejected: Vec::new(),
                files_written: 0,
            });
        }
        // Everything that can refuse the whole file does so before anything is written.
        let chunk_rows = self.config().flush_max_rows.max(1);
        let rows = SourceRows::open(&source, rules, limits, chunk_rows)?;
        let (partition, status) = match &previous {
            Some(started) => {
                self.remove_import_files(stream, started.partition)?;
                (started.partition, ImportStatus::Resumed)
            }
            None => {
                let number = self.next_import_number(stream)?;
                let partition = IMPORT_PARTITION_BASE.checked_add(number).ok_or_else(|| {
                    LakeError::ImportSource {
                        source_name: source.name.clone(),
                        reason: format!("stream {stream} has no import number left"),
                    }
                })?;
                (partition, ImportStatus::Imported)
            }
        };
        let mut manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            source: source.name.clone(),
            sha256: sha256.clone(),
            format: source.format,
            partition,
            state: ManifestState::Started,
            started_ms: now_ms(),
            finished_ms: None,
            rows_imported: 0,
            rows_rejected: 0,
            files_written: 0,
        };
        save_manifest(self, &path, &manifest)?;
        let written = self
            .write_import(stream, partition, rows, rules, &source, dead_letter)
            .and_then(|written| {
                manifest.state = ManifestState::Done;
                manifest.finished_ms = Some(now_ms());
                manifest.rows_imported = written.rows;
                manifest.rows_rejected = written.rejected.len() as u64;
                manifest.files_written = written.files;
                save_manifest(self, &path, &manifest)?;
                Ok(written)
            });
        let written = match written {
            Ok(written) => written,
            Err(error) => {
                // Leave nothing half-visible; if even that fails, the manifest stays
                // `started` and the next import of the same content cleans up.
                let cleanup = self
                    .remove_import_files(stream, partition)
                    .and_then(|()| storage.delete(&path));
                if let Err(cleanup) = cleanup {
                    tracing::warn!(%stream, source = %source.name, error = %cleanup, "could not remove a failed import");
                }
                return Err(error);
            }
        };
        tracing::info!(%stream, source = %source.name, partition, rows = written.rows, rejected = written.rejected.len(), "lake import");
        metrics::counter!("tidewatch_lake_import_rows_total", "stream" => stream.to_string())
            .increment(written.rows);
        Ok(ImportReport {
            source: source.name,
            sha256,
            status,
            partition,
            rows_imported: written.rows,
            rows_rejected: written.rejected.len() as u64,
            rejected: written
                .rejected
                .into_iter()
                .map(|r| RejectedRecord {
                    line: r.line,
                    reason: r.reason,
                })
                .collect(),
            files_written: written.files,
        })
    }

    /// Converts and stores the rows of one source under `partition`, chunk by chunk.
    fn write_import(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        mut rows: SourceRows,
        rules: &StreamState,
        source: &ImportSource,
        dead_letter: DeadLetterSink<'_>,
    ) -> Result<Written, LakeError> {
        let bloom = self.stream_settings(stream).bloom_filter_columns;
        // Learned over this import's files, as the writer learns over a stream's flushes.
        let mut dictionary = DictionaryChoice::default();
        let mut written = Written::default();
        while let Some((events, rejected)) = rows.next_chunk(rules, source)? {
            written.rejected.extend(rejected);
            let now = now_ms();
            let mut records = Vec::with_capacity(events.len());
            for event in events {
                if let Err(reason) = rules.check_schema(&event.value) {
                    written.rejected.push(Rejection {
                        line: event.line,
                        reason,
                        raw: event.raw,
                    });
                    continue;
                }
                records.push(Record {
                    offset: event.line as Offset,
                    ingest_time_ms: now,
                    event_time_ms: rules.event_time_of(&event.value, source.fallback_time_ms),
                    key: Bytes::new(),
                    payload: event.raw,
                });
            }
            let (Some(first), Some(last)) = (records.first(), records.last()) else {
                continue;
            };
            let range = (first.offset, last.offset);
            let refs: Vec<&Record> = records.iter().collect();
            let converted = self.convert_records(stream, partition, &refs, now)?;
            let schema = converted.batch.schema();
            let mut paths = Vec::new();
            files::write_flush(
                self.storage(),
                stream.as_str(),
                partition,
                range,
                &schema,
                &[converted.batch],
                &bloom,
                &mut dictionary,
                &mut paths,
            )?;
            written.rows += records.len() as u64;
            written.files += paths.len();
        }
        written.rejected.sort_by_key(|r| r.line);
        if !written.rejected.is_empty() {
            dead_letter(&written.rejected).map_err(|message| LakeError::ImportSource {
                source_name: source.name.clone(),
                reason: format!("the refused records could not be dead-lettered: {message}"),
            })?;
        }
        Ok(written)
    }

    /// Deletes every data file of `partition` in `stream` (a half-written import).
    fn remove_import_files(
        &self,
        stream: &StreamName,
        partition: PartitionId,
    ) -> Result<(), LakeError> {
        for file in files::list_stream(self.storage(), stream)? {
            if file.partition == partition {
                self.storage().delete(&file.path)?;
            }
        }
        Ok(())
    }
}

/// What [`Lake::write_import`] stored and refused.
#[derive(Debug, Default)]
struct Written {
    rows: u64,
    files: usize,
    rejected: Vec<Rejection>,
}

fn parse_manifest(bytes: &[u8], location: &str) -> Result<Manifest, LakeError> {
    let invalid = |message: String| LakeError::ImportManifest {
        path: location.to_string(),
        message,
    };
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|error| invalid(error.to_string()))?;
    if manifest.format_version != MANIFEST_FORMAT_VERSION {
        return Err(invalid(format!(
            "unsupported format version {}",
            manifest.format_version
        )));
    }
    Ok(manifest)
}

fn save_manifest(lake: &Lake, path: &str, manifest: &Manifest) -> Result<(), LakeError> {
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|error| LakeError::ImportManifest {
        path: lake.storage().describe(path),
        message: error.to_string(),
    })?;
    lake.storage().put(path, Bytes::from(bytes))
}

fn sha256_hex(content: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, content);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Records of one chunk and the records refused while reading it.
type Chunk = (Vec<ParsedEvent>, Vec<Rejection>);

/// The records of a source, handed out in chunks of at most the lake's `flush_max_rows`
/// (an import chunk is written like one flush; this bounds the memory of one step).
enum SourceRows {
    /// Split JSON records (already parsed as far as the stream's rules read) and the
    /// records refused while splitting; drained from the front.
    Json {
        events: std::vec::IntoIter<ParsedEvent>,
        rejected: Vec<Rejection>,
        chunk_rows: usize,
    },
    /// A Parquet reader (batches of the chunk size) and the number of rows read so far.
    Parquet(ParquetRecordBatchReader, usize),
}

impl SourceRows {
    /// Splits JSON, or opens Parquet and checks that every column converts.
    fn open(
        source: &ImportSource,
        rules: &StreamState,
        limits: &IngestLimits,
        chunk_rows: usize,
    ) -> Result<Self, LakeError> {
        let refuse = |reason: String| LakeError::ImportSource {
            source_name: source.name.clone(),
            reason,
        };
        match source.format {
            ImportFormat::Json => {
                let (events, rejected) = tw_pipeline::split_events_selecting(
                    &source.content,
                    limits,
                    Some(rules.selection()),
                )
                .map_err(|error| refuse(error.to_string()))?;
                Ok(SourceRows::Json {
                    events: events.into_iter(),
                    rejected,
                    chunk_rows,
                })
            }
            ImportFormat::Parquet => {
                let reader = unless_panicking(source, || {
                    // The Arrow schema some writers embed (`ARROW:schema`) is not read: its decoder
                    // panics on some damaged files (arrow-ipc 59, found by fuzzing), and the
                    // Parquet schema gives every type the import turns into JSON.
                    let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
                    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
                        source.content.clone(),
                        options,
                    )
                    .map_err(|error| refuse(format!("not a readable Parquet file: {error}")))?;
                    for field in builder.schema().fields() {
                        if !convertible(field.data_type()) {
                            return Err(refuse(format!(
                                "column {} has type {}, which has no JSON form to import",
                                field.name(),
                                field.data_type()
                            )));
                        }
                    }
                    let reader = builder
                        .with_batch_size(chunk_rows)
                        .build()
                        .map_err(|error| refuse(format!("not a readable Parquet file: {error}")))?;
                    Ok(reader)
                })?;
                Ok(SourceRows::Parquet(reader, 0))
            }
        }
    }

    /// The next chunk of records and refusals; `None` at the end.
    fn next_chunk(
        &mut self,
        rules: &StreamState,
        source: &ImportSource,
    ) -> Result<Option<Chunk>, LakeError> {
        match self {
            SourceRows::Json {
                events,
                rejected,
                chunk_rows,
            } => {
                let chunk: Vec<ParsedEvent> = events.by_ref().take(*chunk_rows).collect();
                let rejected = std::mem::take(rejected);
                Ok((!chunk.is_empty() || !rejected.is_empty()).then_some((chunk, rejected)))
            }
            SourceRows::Parquet(reader, rows_read) => {
                let Some(batch) = unless_panicking(source, || Ok(reader.next()))? else {
                    return Ok(None);
                };
                let batch = batch.map_err(|error| LakeError::ImportSource {
                    source_name: source.name.clone(),
                    reason: format!("reading rows after row {rows_read}: {error}"),
                })?;
                let first_row = *rows_read + 1;
                *rows_read += batch.num_rows();
                parquet_rows(&batch, first_row, rules, source).map(Some)
            }
        }
    }
}

/// Runs a step of the Parquet reader, turning a panic into a refusal of the file. The
/// `parquet` crate asserts on some impossible values instead of returning an error (a negative
/// column chunk offset in 59.3, found by fuzzing), and a file from another tool must be
/// refused with a reason, not take the import down. Nothing of the lake is touched inside:
/// the reader only decodes, so the unwound state is the reader's own, dropped with the error.
fn unless_panicking<T>(
    source: &ImportSource,
    step: impl FnOnce() -> Result<T, LakeError>,
) -> Result<T, LakeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|m| m.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(LakeError::ImportSource {
            source_name: source.name.clone(),
            reason: format!("not a readable Parquet file: the Parquet reader failed ({message})"),
        })
    })
}

/// Whether arrow's JSON writer has a form for values of `data_type` (everything Parquet
/// stores has one; unions, which Parquet cannot hold, have none).
fn convertible(data_type: &DataType) -> bool {
    match data_type {
        DataType::Union(_, _) => false,
        DataType::List(field)
        | DataType::LargeList(field)
        | DataType::ListView(field)
        | DataType::LargeListView(field)
        | DataType::FixedSizeList(field, _)
        | DataType::Map(field, _) => convertible(field.data_type()),
        DataType::Struct(fields) => fields.iter().all(|f| convertible(f.data_type())),
        DataType::Dictionary(_, values) => convertible(values),
        DataType::RunEndEncoded(_, values) => convertible(values.data_type()),
        _ => true,
    }
}

/// The rows of one Parquet batch as JSON objects (structs nested, lists as arrays, times as
/// RFC 3339 text, nulls left out), numbered from `first_row`: from here on they take the
/// JSON path, so flattening and typing are the lake's own.
fn parquet_rows(
    batch: &RecordBatch,
    first_row: usize,
    rules: &StreamState,
    source: &ImportSource,
) -> Result<Chunk, LakeError> {
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    writer
        .write(batch)
        .and_then(|()| writer.finish())
        .map_err(|error| LakeError::ImportSource {
            source_name: source.name.clone(),
            reason: format!("rows from row {first_row} cannot be converted to JSON: {error}"),
        })?;
    let text = Bytes::from(writer.into_inner());
    let mut events = Vec::with_capacity(batch.num_rows());
    let mut rejected = Vec::new();
    let mut start = 0;
    for (index, line) in text.split(|byte| *byte == b'\n').enumerate() {
        if index >= batch.num_rows() {
            break;
        }
        let raw = text.slice(start..start + line.len());
        start += line.len() + 1;
        let row = first_row + index;
        match rules.selection().parse(&raw) {
            Ok(value) => events.push(ParsedEvent {
                line: row,
                value,
                raw,
            }),
            // The writer's own output: unreachable unless it has a bug, but never dropped.
            Err(error) => rejected.push(Rejection {
                line: row,
                reason: format!("row converted to invalid JSON: {error}"),
                raw,
            }),
        }
    }
    Ok((events, rejected))
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
