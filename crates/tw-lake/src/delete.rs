//! Delete-by-query in the lake (privacy requests): the files holding given rows are rewritten
//! without them, and every deletion is recorded in the audit trail.
//!
//! The rows are named by `(partition, offset)` (the caller finds them with SQL). A file is
//! rewritten as the next revision of its range (`p000-{first}-{last}-r{n}.parquet`), stored with
//! one atomic put; from that instant it supersedes the old file, which
//! compaction deletes after the grace period like any superseded file. So a query sees the
//! file before or after the deletion, never a mix and never both.
//!
//! Not covered (the report counts them): rows still in the hot buffer (not yet flushed: they
//! reach a file later, with the row), and everything outside the lake — the log keeps the raw
//! events until its own retention, the search index keeps them, alerts keep their events.
//!
//! The audit trail is one object per deletion under [`AUDIT_DIR`] in the lake itself, written
//! with the storage's atomic put: S3 has no append, and a record kept next to the data it
//! describes goes wherever the lake goes (local disk or bucket). Each object is one JSON line,
//! named so that listing order is time order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::Int64Type;
use serde::Serialize;
use tw_core::{Offset, PartitionId, StreamName};

use bytes::Bytes;

use crate::catalog::OFFSET_COLUMN;
use crate::compact::{LASTING_ZSTD_LEVEL, read_file, writer_properties};
use crate::files::{self, DataFile};
use crate::import::flushed;
use crate::storage::LakeStorage;
use crate::supersede::{by_dir, range_of_path, revised_name, superseded_ranges};
use crate::{Lake, LakeError};

/// The directory (relative to the lake root) of the deletion audit trail: one object per
/// deletion, `{time_ms:013}-{stream}.json`, holding one JSON line.
pub const AUDIT_DIR: &str = "_audit/deletes";

/// What a deletion did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeleteReport {
    /// Rows removed from files.
    pub rows_deleted: u64,
    /// Files rewritten (their new names, relative to the stream directory).
    pub files_rewritten: Vec<String>,
    /// Named rows not found below the flushed offsets: still hot (not yet in a file).
    pub rows_not_in_files: u64,
}

/// One line of the audit log.
#[derive(Debug, Serialize)]
struct AuditRecord<'a> {
    time: String,
    who: &'a str,
    stream: &'a str,
    predicate: &'a str,
    rows_matched: u64,
    #[serde(flatten)]
    report: &'a DeleteReport,
}

impl Lake {
    /// Rewrites the files of `stream` holding the rows `rows` (offsets per partition) without
    /// them, then appends an audit record (`who`, `predicate`: what found the rows).
    pub fn delete_rows(
        &self,
        stream: &StreamName,
        rows: &BTreeMap<PartitionId, BTreeSet<Offset>>,
        who: &str,
        predicate: &str,
    ) -> Result<DeleteReport, LakeError> {
        let _maintenance = self.maintenance();
        let hot_start = self.hot_starts(stream);
        let storage = self.storage();
        let data = files::list_stream(storage, stream)?;
        let bloom = self.stream_settings(stream).bloom_filter_columns;
        let mut report = DeleteReport::default();
        for (dir, files) in by_dir(data) {
            let ranges: Vec<_> = files.iter().map(|f| range_of_path(&f.path)).collect();
            let superseded = superseded_ranges(&ranges);
            for ((file, range), gone) in files.iter().zip(&ranges).zip(superseded) {
                let Some((partition, first, last, revision)) = *range else {
                    continue;
                };
                let below_hot = flushed(partition, last, &hot_start);
                let wanted = rows
                    .get(&partition)
                    .is_some_and(|offsets| offsets.range(first..=last).next().is_some());
                if gone || !below_hot || !wanted {
                    continue;
                }
                let offsets = &rows[&partition];
                let path = format!(
                    "{dir}/{}",
                    revised_name(partition, first, last, revision + 1)
                );
                let layout = (bloom.as_slice(), self.config().compaction.row_group_rows);
                let removed =
                    rewrite_without(storage, file, offsets, &path, layout, stream.as_str())?;
                if removed > 0 {
                    self.superseded_at(&file.path, tw_core::now_ms());
                    report.rows_deleted += removed;
                    let relative = path
                        .strip_prefix(stream.as_str())
                        .and_then(|rest| rest.strip_prefix('/'))
                        .unwrap_or(&path);
                    report.files_rewritten.push(relative.to_string());
                }
            }
        }
        let named: u64 = rows.values().map(|o| o.len() as u64).sum();
        report.rows_not_in_files = named.saturating_sub(report.rows_deleted);
        self.append_audit(&AuditRecord {
            time: tw_core::format_rfc3339_ms(tw_core::now_ms()),
            who,
            stream: stream.as_str(),
            predicate,
            rows_matched: named,
            report: &report,
        })?;
        metrics::counter!("tidewatch_lake_rows_deleted_total", "stream" => stream.to_string())
            .increment(report.rows_deleted);
        Ok(report)
    }

    /// Every audit record of deletions, oldest first (one JSON object per entry).
    pub fn deletion_audit(&self) -> Result<Vec<String>, LakeError> {
        let storage = self.storage();
        let mut records = Vec::new();
        for object in storage.list(AUDIT_DIR)? {
            if let Some(bytes) = storage.get(&object.path)? {
                records.push(String::from_utf8_lossy(&bytes).trim_end().to_string());
            }
        }
        Ok(records)
    }

    /// Stores one audit record as a new object under [`AUDIT_DIR`] (atomic and durable).
    fn append_audit(&self, record: &AuditRecord<'_>) -> Result<(), LakeError> {
        let storage = self.storage();
        let mut line = serde_json::to_vec(record).map_err(|source| LakeError::Io {
            path: storage.describe(AUDIT_DIR).into(),
            source: std::io::Error::other(source),
        })?;
        line.push(b'\n');
        // Never overwrite a record: two deletions of one stream in the same millisecond get
        // successive names (deletions are serialised by the maintenance lock).
        let mut time_ms = tw_core::now_ms();
        let path = loop {
            let path = format!("{AUDIT_DIR}/{time_ms:013}-{}.json", record.stream);
            if storage.get(&path)?.is_none() {
                break path;
            }
            time_ms += 1;
        };
        storage.put(&path, Bytes::from(line))
    }
}

/// Writes `file`'s rows whose offset is not in `offsets` to `path`; returns how many were
/// left out (0: nothing written).
fn rewrite_without(
    storage: &LakeStorage,
    file: &DataFile,
    offsets: &BTreeSet<Offset>,
    path: &str,
    (bloom, row_group_rows): (&[String], usize),
    stream: &str,
) -> Result<u64, LakeError> {
    let batches = read_file(storage, &file.path, stream)?;
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Ok(0);
    };
    let mut kept = Vec::with_capacity(batches.len());
    let mut removed = 0u64;
    for batch in &batches {
        let column = batch
            .column_by_name(OFFSET_COLUMN)
            .ok_or_else(|| LakeError::Arrow {
                stream: stream.to_string(),
                source: arrow::error::ArrowError::SchemaError(format!(
                    "{} has no {OFFSET_COLUMN}",
                    storage.describe(&file.path)
                )),
            })?
            .as_primitive::<Int64Type>();
        let keep: BooleanArray = (0..column.len())
            .map(|i| {
                let hit = column.is_valid(i)
                    && u64::try_from(column.value(i)).is_ok_and(|o| offsets.contains(&o));
                Some(!hit)
            })
            .collect();
        removed += keep.false_count() as u64;
        kept.push(filter_record_batch(batch, &keep).map_err(LakeError::arrow(stream))?);
    }
    if removed == 0 {
        return Ok(0);
    }
    let kept = concat_batches(&Arc::clone(&schema), &kept).map_err(LakeError::arrow(stream))?;
    let properties = writer_properties(&kept, bloom, row_group_rows, LASTING_ZSTD_LEVEL);
    files::write_file(storage, path, &kept, properties)?;
    tracing::info!(%stream, old = %file.path, new = %path, removed, "lake rows deleted");
    Ok(removed)
}
