//! Lake retention: the Parquet files of a stream's hour partitions whose hour ended longer
//! ago than the stream's `lake.retention` are deleted, then the emptied directories.
//!
//! Whole hours only, decided from the directory name (event time), never from file contents:
//! an hour is either kept whole or deleted whole. Offsets are untouched, so nothing is
//! replayed into a deleted hour; late events still arriving for it land in a new file that
//! the next pass deletes.
//!
//! Through the lake storage, so on S3 too; emptied directories exist (and are removed) only on
//! a local disk.

use std::path::Path;

use serde::Serialize;
use tw_core::StreamName;

use crate::compact::{HOUR_MS, hour_start_of};
use crate::files;
use crate::{Lake, LakeError};

/// What one retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Hour partitions emptied.
    pub hours_deleted: usize,
    /// Parquet files deleted.
    pub files_deleted: usize,
    /// Their bytes.
    pub bytes_deleted: u64,
}

impl Lake {
    /// Deletes, for every stream with a lake retention, the hours that ended before
    /// `now_ms - retention`.
    pub fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport, LakeError> {
        let _maintenance = self.maintenance();
        let mut report = RetentionReport::default();
        for stream in self.streams() {
            let Some(retention_ms) = self.stream_settings(&stream).retention_ms() else {
                continue;
            };
            let cutoff = now_ms.saturating_sub_unsigned(retention_ms);
            self.expire_stream(&stream, cutoff, &mut report)?;
        }
        if report.files_deleted > 0 {
            metrics::counter!("tidewatch_lake_retention_files_deleted_total")
                .increment(report.files_deleted as u64);
            metrics::counter!("tidewatch_lake_retention_bytes_deleted_total")
                .increment(report.bytes_deleted);
        }
        Ok(report)
    }

    /// Deletes the hours of `stream` that ended at or before `cutoff_ms`.
    fn expire_stream(
        &self,
        stream: &StreamName,
        cutoff_ms: i64,
        report: &mut RetentionReport,
    ) -> Result<(), LakeError> {
        let storage = self.storage();
        let data = files::list_stream(storage, stream)?;
        let expired = |path: &str| {
            hour_start_of(stream.as_str(), files::parent(path))
                .is_some_and(|start| start.saturating_add(HOUR_MS) <= cutoff_ms)
        };
        let mut dirs: Vec<&str> = Vec::new();
        for file in data.iter().filter(|file| expired(&file.path)) {
            storage.delete(&file.path)?;
            report.files_deleted += 1;
            report.bytes_deleted += file.size;
            dirs.push(files::parent(&file.path));
        }
        dirs.sort_unstable();
        dirs.dedup();
        report.hours_deleted += dirs.len();
        if let Some(root) = storage.local_root() {
            let stream_dir = root.join(stream.as_str());
            for dir in dirs {
                remove_empty_dirs(&root.join(dir), &stream_dir);
            }
        }
        tracing::debug!(%stream, ?report, "lake retention");
        Ok(())
    }
}

/// Removes `dir` and its emptied ancestors up to (not including) `stop`. A directory that is
/// not empty (a flush of late events is writing or just put a file in it) is kept, which is
/// why errors are ignored.
fn remove_empty_dirs(dir: &Path, stop: &Path) {
    let mut current = Some(dir);
    while let Some(dir) = current {
        if dir == stop || !dir.starts_with(stop) || std::fs::remove_dir(dir).is_err() {
            return;
        }
        current = dir.parent();
    }
}
