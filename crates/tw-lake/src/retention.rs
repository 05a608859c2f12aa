//! Lake retention: the Parquet files of a stream's hour partitions whose hour ended longer
//! ago than the stream's `lake.retention` are deleted, then the emptied directories.
//!
//! Whole hours only, decided from the directory name (event time), never from file contents:
//! an hour is either kept whole or deleted whole. Offsets are untouched, so nothing is
//! replayed into a deleted hour; late events still arriving for it land in a new file that
//! the next pass deletes.

use std::path::{Path, PathBuf};

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
        let stream_dir = self.stream_dir(stream);
        let (data, tmp) = files::list(&stream_dir)?;
        let expired = |path: &Path| {
            path.parent()
                .and_then(|dir| hour_start_of(&stream_dir, dir))
                .is_some_and(|start| start.saturating_add(HOUR_MS) <= cutoff_ms)
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        for file in data.iter().filter(|file| expired(&file.path)) {
            let bytes = std::fs::metadata(&file.path).map_or(0, |meta| meta.len());
            files::remove(&file.path)?;
            report.files_deleted += 1;
            report.bytes_deleted += bytes;
            if let Some(dir) = file.path.parent() {
                dirs.push(dir.to_path_buf());
            }
        }
        // Tmp files are left alone: one may be a flush of late events being written now.
        let busy: Vec<&Path> = tmp.iter().filter_map(|path| path.parent()).collect();
        dirs.sort();
        dirs.dedup();
        report.hours_deleted += dirs.len();
        for dir in dirs {
            if !busy.contains(&dir.as_path()) {
                remove_empty_dirs(&dir, &stream_dir);
            }
        }
        tracing::debug!(%stream, ?report, "lake retention");
        Ok(())
    }
}

/// Removes `dir` and its emptied ancestors up to (not including) `stop`. A directory that is
/// not empty (a flush just created a file in it) is kept, which is why errors are ignored.
fn remove_empty_dirs(dir: &Path, stop: &Path) {
    let mut current = Some(dir);
    while let Some(dir) = current {
        if dir == stop || !dir.starts_with(stop) || std::fs::remove_dir(dir).is_err() {
            return;
        }
        current = dir.parent();
    }
}
