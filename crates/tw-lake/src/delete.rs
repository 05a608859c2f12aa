//! Delete-by-query in the lake (privacy requests): the files holding given rows are rewritten
//! without them, and every deletion is recorded in the audit trail.
//!
//! The rows are named by `(partition, offset)` (the caller finds them with SQL). A file is
//! rewritten as the next revision of its range (`p000-{first}-{last}-r{n}.parquet`), stored with
//! one atomic put; from that instant it supersedes the old file, which
//! compaction deletes after the grace period like any superseded file. So a query sees the
//! file before or after the deletion, never a mix and never both. A file none of whose rows
//! are named is left alone; one whose rows are all named becomes an empty revision (the old
//! file must outlive the grace period like any superseded file).
//!
//! Not covered (the report counts them): rows still in the hot buffer (not yet flushed: they
//! reach a file later, with the row), and everything outside the lake — the log keeps the raw
//! events until its own retention, the search index keeps them, alerts keep their events.
//!
//! Memory: a file is never decoded whole (a 64 MiB compacted file is ~10 times that decoded,
//! and a request may touch many). A first pass reads only its `_offset` column: whether it
//! holds any named row, and how many rows stay (the new file's row groups and bloom filters are
//! sized by that, as compaction sizes them). The second decodes [`REWRITE_BATCH_ROWS`] rows at a
//! time and hands the kept ones to the Parquet writer as it goes. Held whole are only the old
//! file's bytes and the new file's, both encoded, as in compaction. (Decoding the file whole
//! and concatenating the kept rows grew the peak resident memory by 273 MB for a file of
//! 117 MB decoded; streaming, by 19 MB: `tests/delete_memory.rs`.)
//!
//! The audit trail is one object per entry under [`AUDIT_DIR`] in the lake itself, written
//! with the storage's atomic put: S3 has no append, and a record kept next to the data it
//! describes goes wherever the lake goes (local disk or bucket). Each object is one JSON line,
//! named so that listing order is time order, and never rewritten. A deletion stores a
//! `started` entry (who, stream, predicate, rows named) before it changes any file, and a
//! `done` entry (the report) or a `failed` entry (the error, and what was rewritten before
//! it) after, with the same `id`. So every deletion that changed data has an entry; a
//! `started` entry with no outcome is a deletion that was interrupted (a crash) or whose
//! outcome could not be stored, and the file revisions tell what it rewrote.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, RecordBatchReader};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Int64Type;
use serde::Serialize;
use tw_core::{Offset, PartitionId, StreamName};

use bytes::Bytes;

use crate::catalog::OFFSET_COLUMN;
use crate::compact::{LASTING_ZSTD_LEVEL, writer_properties_for};
use crate::files::{self, DataFile};
use crate::import::flushed;
use crate::merge::reader_of;
use crate::storage::LakeStorage;
use crate::supersede::{by_dir, range_of_path, revised_name, superseded_ranges};
use crate::{Lake, LakeError};

/// The directory (relative to the lake root) of the deletion audit trail: one object per
/// entry (two per deletion: `started`, then `done` or `failed`),
/// `{time_ms:013}-{stream}.json`, holding one JSON line.
pub const AUDIT_DIR: &str = "_audit/deletes";

/// Rows decoded at a time from a file being rewritten (~2 MB of CloudTrail events).
const REWRITE_BATCH_ROWS: usize = 2048;

/// Rows read at a time by the first pass over a file, which reads only `_offset` (512 KiB).
const OFFSET_BATCH_ROWS: usize = 64 * 1024;

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

/// Which step of a deletion an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum AuditStatus {
    /// Stored before any file is rewritten.
    Started,
    /// Every file holding named rows was rewritten.
    Done,
    /// An error ended the deletion (files rewritten before it stay rewritten).
    Failed,
}

/// One entry of the audit trail (one JSON line; README, "Delete by query").
#[derive(Debug, Serialize)]
struct AuditEntry<'a> {
    /// The name of the deletion's `started` entry (`{time_ms:013}-{stream}`), in each of its
    /// entries.
    id: &'a str,
    status: AuditStatus,
    time: String,
    who: &'a str,
    stream: &'a str,
    predicate: &'a str,
    /// Rows the predicate matched (named for deletion).
    rows_matched: u64,
    /// Done or failed: rows removed from files (before the error, if failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    rows_deleted: Option<u64>,
    /// Done or failed: the files rewritten (before the error, if failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    files_rewritten: Option<&'a [String]>,
    /// Done: named rows still hot.
    #[serde(skip_serializing_if = "Option::is_none")]
    rows_not_in_files: Option<u64>,
    /// Failed: what went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What a deletion was asked, as each of its audit entries repeats it.
struct DeleteRequest<'a> {
    who: &'a str,
    stream: &'a str,
    predicate: &'a str,
    rows_matched: u64,
}

impl DeleteRequest<'_> {
    /// The entry of deletion `id` at `time_ms`, saying nothing about the outcome.
    fn entry<'e>(&'e self, id: &'e str, time_ms: i64, status: AuditStatus) -> AuditEntry<'e> {
        AuditEntry {
            id,
            status,
            time: tw_core::format_rfc3339_ms(time_ms),
            who: self.who,
            stream: self.stream,
            predicate: self.predicate,
            rows_matched: self.rows_matched,
            rows_deleted: None,
            files_rewritten: None,
            rows_not_in_files: None,
            error: None,
        }
    }
}

impl Lake {
    /// Rewrites the files of `stream` holding the rows `rows` (offsets per partition) without
    /// them, recording the request (`who`, `predicate`: what found the rows) in the audit
    /// trail before and its outcome after. An error storing the `started` entry leaves every
    /// file as it was.
    pub fn delete_rows(
        &self,
        stream: &StreamName,
        rows: &BTreeMap<PartitionId, BTreeSet<Offset>>,
        who: &str,
        predicate: &str,
    ) -> Result<DeleteReport, LakeError> {
        let _maintenance = self.maintenance();
        let request = DeleteRequest {
            who,
            stream: stream.as_str(),
            predicate,
            rows_matched: rows.values().map(|o| o.len() as u64).sum(),
        };
        // Before any file changes: a deletion that changed data always has this entry.
        let (id, started_ms) = self.free_audit_name(stream.as_str(), tw_core::now_ms())?;
        self.store_audit(&id, &request.entry(&id, started_ms, AuditStatus::Started))?;
        let mut report = DeleteReport::default();
        let rewritten = self.rewrite_matching(stream, rows, &mut report);
        metrics::counter!("tidewatch_lake_rows_deleted_total", "stream" => stream.to_string())
            .increment(report.rows_deleted);
        match rewritten {
            Ok(()) => {
                report.rows_not_in_files = request.rows_matched.saturating_sub(report.rows_deleted);
                if let Err(audit) = self.audit_outcome(&request, &id, started_ms, &report, None) {
                    // The rows are gone; the started entry records the request, not this.
                    tracing::error!(%stream, %id, rows_deleted = report.rows_deleted, %audit, "the audit entry of a finished deletion could not be stored");
                    return Err(audit);
                }
                Ok(report)
            }
            Err(error) => {
                if let Err(audit) =
                    self.audit_outcome(&request, &id, started_ms, &report, Some(&error))
                {
                    tracing::error!(%stream, %id, %error, %audit, "the audit entry of a failed deletion could not be stored");
                }
                Err(error)
            }
        }
    }

    /// Rewrites every live, flushed file of `stream` holding some of `rows`, adding what it did
    /// to `report` as it goes (so that after an error it says what changed before it).
    fn rewrite_matching(
        &self,
        stream: &StreamName,
        rows: &BTreeMap<PartitionId, BTreeSet<Offset>>,
        report: &mut DeleteReport,
    ) -> Result<(), LakeError> {
        let hot_start = self.hot_starts(stream);
        let storage = self.storage();
        let data = files::list_stream(storage, stream)?;
        let bloom = self.stream_settings(stream).bloom_filter_columns;
        let layout = (bloom.as_slice(), self.config().compaction.row_group_rows);
        for (dir, files) in by_dir(data) {
            let ranges: Vec<_> = files.iter().map(|f| range_of_path(&f.path)).collect();
            let superseded = superseded_ranges(&ranges);
            for ((file, range), gone) in files.iter().zip(&ranges).zip(superseded) {
                let Some((partition, first, last, revision)) = *range else {
                    continue;
                };
                let below_hot = flushed(partition, last, &hot_start);
                let Some(offsets) = rows.get(&partition) else {
                    continue;
                };
                let wanted = offsets.range(first..=last).next().is_some();
                if gone || !below_hot || !wanted {
                    continue;
                }
                let path = format!(
                    "{dir}/{}",
                    revised_name(partition, first, last, revision + 1)
                );
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
        Ok(())
    }

    /// Every entry of the deletion audit trail, oldest first (one JSON object each).
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

    /// Stores the `done` entry of deletion `id` (started at `started_ms`), or its `failed`
    /// entry when `error` is given (`report`: what changed before the error).
    fn audit_outcome(
        &self,
        request: &DeleteRequest<'_>,
        id: &str,
        started_ms: i64,
        report: &DeleteReport,
        error: Option<&LakeError>,
    ) -> Result<(), LakeError> {
        // Named after the started entry even if the clock stepped back: listing order stays
        // the order of the steps.
        let (name, time_ms) = self.free_audit_name(request.stream, started_ms.saturating_add(1))?;
        let status = match error {
            None => AuditStatus::Done,
            Some(_) => AuditStatus::Failed,
        };
        let entry = AuditEntry {
            rows_deleted: Some(report.rows_deleted),
            files_rewritten: Some(&report.files_rewritten),
            rows_not_in_files: error.is_none().then_some(report.rows_not_in_files),
            error: error.map(ToString::to_string),
            ..request.entry(id, time_ms, status)
        };
        self.store_audit(&name, &entry)
    }

    /// The first unused audit entry name of `stream` at or after `not_before_ms`:
    /// (`{time_ms:013}-{stream}`, its `time_ms`). Entries are never overwritten, and two in
    /// the same millisecond get successive names (deletions are serialised by the
    /// maintenance lock, so the name stays free until the caller stores it).
    fn free_audit_name(
        &self,
        stream: &str,
        not_before_ms: i64,
    ) -> Result<(String, i64), LakeError> {
        let storage = self.storage();
        let mut time_ms = not_before_ms.max(tw_core::now_ms());
        loop {
            let name = format!("{time_ms:013}-{stream}");
            if storage.get(&audit_path(&name))?.is_none() {
                return Ok((name, time_ms));
            }
            time_ms += 1;
        }
    }

    /// Stores `entry` as the object `name` under [`AUDIT_DIR`] (atomic and durable).
    fn store_audit(&self, name: &str, entry: &AuditEntry<'_>) -> Result<(), LakeError> {
        let storage = self.storage();
        let mut line = serde_json::to_vec(entry).map_err(|source| LakeError::Io {
            path: storage.describe(AUDIT_DIR).into(),
            source: std::io::Error::other(source),
        })?;
        line.push(b'\n');
        storage.put(&audit_path(name), Bytes::from(line))
    }
}

/// The object of the audit entry `name`.
fn audit_path(name: &str) -> String {
    format!("{AUDIT_DIR}/{name}.json")
}

/// Writes `file`'s rows whose offset is not in `offsets` to `path`, a batch at a time (see the
/// module doc); returns how many were left out (0: the file holds none of them, and nothing
/// is written).
fn rewrite_without(
    storage: &LakeStorage,
    file: &DataFile,
    offsets: &BTreeSet<Offset>,
    path: &str,
    (bloom, row_group_rows): (&[String], usize),
    stream: &str,
) -> Result<u64, LakeError> {
    let Some(bytes) = storage.get(&file.path)? else {
        return Err(LakeError::Vanished {
            path: storage.describe(&file.path),
        });
    };
    // First pass, `_offset` alone: whether the file holds any of the rows, and how many stay
    // (what the new file's row groups and bloom filters are sized by).
    let (mut rows, mut matching) = (0usize, 0usize);
    let columns = [OFFSET_COLUMN];
    let offsets_only = reader_of(
        storage,
        &file.path,
        bytes.clone(),
        Some(&columns),
        OFFSET_BATCH_ROWS,
    )?;
    for batch in offsets_only {
        let batch = batch.map_err(LakeError::arrow(stream))?;
        rows += batch.num_rows();
        matching += keep_mask(&batch, offsets, storage, file, stream)?.false_count();
    }
    if matching == 0 {
        return Ok(0);
    }
    let reader = reader_of(storage, &file.path, bytes, None, REWRITE_BATCH_ROWS)?;
    let schema = reader.schema();
    let properties = writer_properties_for(
        &schema,
        rows - matching,
        bloom,
        row_group_rows,
        LASTING_ZSTD_LEVEL,
    );
    let mut removed = 0u64;
    let kept = reader.map(|batch| {
        let batch = batch.map_err(LakeError::arrow(stream))?;
        let keep = keep_mask(&batch, offsets, storage, file, stream)?;
        removed += keep.false_count() as u64;
        filter_record_batch(&batch, &keep).map_err(LakeError::arrow(stream))
    });
    // The new file is about the old one's size: its buffer starts there rather than doubling
    // its way up.
    let expected_bytes = usize::try_from(file.size)
        .unwrap_or(usize::MAX)
        .min(1 << 30);
    files::write_batches(storage, path, &schema, kept, properties, expected_bytes)?;
    tracing::info!(%stream, old = %file.path, new = %path, removed, "lake rows deleted");
    Ok(removed)
}

/// Per row of `batch` (a batch of `file`), whether it stays: its `_offset` is not one of
/// `offsets`.
fn keep_mask(
    batch: &RecordBatch,
    offsets: &BTreeSet<Offset>,
    storage: &LakeStorage,
    file: &DataFile,
    stream: &str,
) -> Result<BooleanArray, LakeError> {
    let column = batch
        .column_by_name(OFFSET_COLUMN)
        .and_then(|column| column.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| LakeError::Arrow {
            stream: stream.to_string(),
            source: arrow::error::ArrowError::SchemaError(format!(
                "{} has no 64-bit integer {OFFSET_COLUMN}",
                storage.describe(&file.path)
            )),
        })?;
    Ok((0..column.len())
        .map(|i| {
            let hit = column.is_valid(i)
                && u64::try_from(column.value(i)).is_ok_and(|o| offsets.contains(&o));
            Some(!hit)
        })
        .collect())
}
