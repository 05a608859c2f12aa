//! Parquet files on disk: naming, writing one flush (split by event-time hour), listing, and
//! the clean-up after a crash.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, RecordBatchReader, TimestampMillisecondArray};
use arrow::compute::{
    concat_batches, filter_record_batch, kernels::cmp::lt, sort_to_indices, take_record_batch,
};
use arrow::datatypes::SchemaRef;
use chrono::{DateTime, Datelike, Timelike, Utc};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use tw_core::{Offset, PartitionId};

use crate::LakeError;
use crate::catalog::{OFFSET_COLUMN, TIME_COLUMN, sync_dir, tmp_path};
use crate::compact::writer_properties;

const HOUR_MS: i64 = 3_600_000;

/// Identity of a data file, parsed from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataFile {
    /// Full path.
    pub(crate) path: PathBuf,
    /// Log partition of its rows.
    pub(crate) partition: PartitionId,
    /// Offset range of the flush that wrote it (inclusive).
    pub(crate) first: Offset,
    /// Last offset of that flush.
    pub(crate) last: Offset,
}

/// `p{partition:03}-{first:020}-{last:020}.parquet`.
pub(crate) fn file_name(partition: PartitionId, first: Offset, last: Offset) -> String {
    format!("p{partition:03}-{first:020}-{last:020}.parquet")
}

/// The inverse of [`file_name`] (and of [`crate::supersede::revised_name`]: a revision
/// suffix `-r{n}` is accepted); `None` for any other file.
pub(crate) fn parse_file_name(name: &str) -> Option<(PartitionId, Offset, Offset)> {
    let stem = name.strip_prefix('p')?.strip_suffix(".parquet")?;
    let (stem, _revision) = crate::supersede::split_revision(stem);
    let mut parts = stem.split('-');
    let partition = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((partition, first, last))
}

/// The Hive directory of the hour starting at `hour_start_ms`, relative to the stream dir.
pub(crate) fn hour_dir(hour_start_ms: i64) -> PathBuf {
    // Times chrono cannot represent (beyond year 262143) are filed under the epoch hour
    // rather than refused: the row still lands, with its real `_time`.
    let time =
        DateTime::<Utc>::from_timestamp_millis(hour_start_ms).unwrap_or(DateTime::UNIX_EPOCH);
    PathBuf::from(format!(
        "year={:04}/month={:02}/day={:02}/hour={:02}",
        time.year(),
        time.month(),
        time.day(),
        time.hour()
    ))
}

/// What one flush wrote (its files are pushed to the caller's list as they appear).
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Total size on disk of the files.
    pub(crate) bytes: u64,
    /// Rows written.
    pub(crate) rows: usize,
}

/// Writes the rows of one flush of `partition` (offsets `first..=last`, all batches already
/// aligned to `schema`) as one file per event-time hour under `stream_dir`, rows sorted by
/// `_time`. Each complete file is pushed to `files` at once, so that after an error the caller
/// knows which files of the failed flush exist.
// Each argument is one independent fact of the flush; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_flush(
    stream_dir: &Path,
    stream: &str,
    partition: PartitionId,
    (first, last): (Offset, Offset),
    schema: &SchemaRef,
    batches: &[RecordBatch],
    bloom_columns: &[String],
    files: &mut Vec<PathBuf>,
) -> Result<Written, LakeError> {
    let all = concat_batches(schema, batches).map_err(LakeError::arrow(stream))?;
    let order = sort_to_indices(all.column(0), None, None).map_err(LakeError::arrow(stream))?;
    let sorted = take_record_batch(&all, &order).map_err(LakeError::arrow(stream))?;
    let times = time_column(&sorted, stream)?;
    let name = file_name(partition, first, last);
    let mut written = Written::default();
    let mut start = 0;
    while start < sorted.num_rows() {
        let hour = times.value(start).div_euclid(HOUR_MS);
        let mut end = start + 1;
        while end < sorted.num_rows() && times.value(end).div_euclid(HOUR_MS) == hour {
            end += 1;
        }
        let dir = stream_dir.join(hour_dir(hour * HOUR_MS));
        let path = dir.join(&name);
        let rows = sorted.slice(start, end - start);
        let properties = writer_properties(&rows, bloom_columns, usize::MAX);
        written.bytes += write_file(&dir, &path, &rows, properties)?;
        written.rows += end - start;
        files.push(path);
        start = end;
    }
    Ok(written)
}

fn time_column<'b>(
    batch: &'b RecordBatch,
    stream: &str,
) -> Result<&'b TimestampMillisecondArray, LakeError> {
    batch
        .column_by_name(TIME_COLUMN)
        .and_then(|column| column.as_any().downcast_ref())
        .ok_or_else(|| LakeError::Arrow {
            stream: stream.to_string(),
            source: arrow::error::ArrowError::SchemaError(format!(
                "{TIME_COLUMN} is not a millisecond timestamp"
            )),
        })
}

/// Writes one complete Parquet file at `path` (via a tmp file) and returns its size.
pub(crate) fn write_file(
    dir: &Path,
    path: &Path,
    batch: &RecordBatch,
    properties: Result<WriterProperties, parquet::errors::ParquetError>,
) -> Result<u64, LakeError> {
    create_dir_synced(dir)?;
    let tmp = tmp_path(path);
    let parquet_error = |source| LakeError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let properties = properties.map_err(parquet_error)?;
    let file = File::create(&tmp).map_err(LakeError::io(&tmp))?;
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(properties)).map_err(parquet_error)?;
    writer.write(batch).map_err(parquet_error)?;
    // `into_inner` writes the footer (calling `finish` first would write it twice).
    let file = writer.into_inner().map_err(parquet_error)?;
    file.sync_all().map_err(LakeError::io(&tmp))?;
    let bytes = file.metadata().map_err(LakeError::io(&tmp))?.len();
    std::fs::rename(&tmp, path).map_err(LakeError::io(path))?;
    sync_dir(dir)?;
    Ok(bytes)
}

/// Creates `dir` and its missing ancestors, fsyncing each new entry's parent so the directory
/// survives a power loss together with the file renamed into it.
fn create_dir_synced(dir: &Path) -> Result<(), LakeError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_synced(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(LakeError::io(dir)(error)),
    }
    sync_dir(dir.parent().unwrap_or(Path::new(".")))
}

/// Every data file under `stream_dir` and every leftover tmp file, walking the Hive levels.
pub(crate) fn list(stream_dir: &Path) -> Result<(Vec<DataFile>, Vec<PathBuf>), LakeError> {
    let mut data = Vec::new();
    let mut tmp = Vec::new();
    let mut pending = vec![stream_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(LakeError::io(&dir)(error)),
        };
        for entry in entries {
            let entry = entry.map_err(LakeError::io(&dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().map_err(LakeError::io(&path))?.is_dir() {
                pending.push(path);
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                tmp.push(path);
            } else if let Some((partition, first, last)) = parse_file_name(&name) {
                data.push(DataFile {
                    path,
                    partition,
                    first,
                    last,
                });
            }
        }
    }
    data.sort_by(|a, b| (a.partition, a.first, &a.path).cmp(&(b.partition, b.first, &b.path)));
    Ok((data, tmp))
}

/// Cuts `file` back to its rows with `_offset < keep_below` (a file that straddles the
/// committed offset), renaming it after the new range. Deletes it when nothing is left.
pub(crate) fn truncate(
    file: &DataFile,
    keep_below: Offset,
    stream: &str,
    bloom_columns: &[String],
) -> Result<(), LakeError> {
    let parquet_error = |source| LakeError::Parquet {
        path: file.path.clone(),
        source,
    };
    let handle = File::open(&file.path).map_err(LakeError::io(&file.path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(handle)
        .map_err(parquet_error)?
        .build()
        .map_err(parquet_error)?;
    let schema = reader.schema();
    let limit = Int64Array::new_scalar(i64::try_from(keep_below).unwrap_or(i64::MAX));
    let mut kept = Vec::new();
    for batch in reader {
        let batch = batch.map_err(LakeError::arrow(stream))?;
        let offsets = batch
            .column_by_name(OFFSET_COLUMN)
            .map(Arc::clone)
            .ok_or_else(|| LakeError::Arrow {
                stream: stream.to_string(),
                source: arrow::error::ArrowError::SchemaError(format!(
                    "{} has no {OFFSET_COLUMN}",
                    file.path.display()
                )),
            })?;
        let mask = lt(&offsets, &limit).map_err(LakeError::arrow(stream))?;
        kept.push(filter_record_batch(&batch, &mask).map_err(LakeError::arrow(stream))?);
    }
    let kept = concat_batches(&schema, &kept).map_err(LakeError::arrow(stream))?;
    if kept.num_rows() > 0 && keep_below > file.first {
        let dir = file.path.parent().unwrap_or(Path::new("."));
        let path = dir.join(file_name(file.partition, file.first, keep_below - 1));
        write_file(
            dir,
            &path,
            &kept,
            writer_properties(&kept, bloom_columns, usize::MAX),
        )?;
    }
    remove(&file.path)
}

/// Deletes a file and makes the deletion durable.
pub(crate) fn remove(path: &Path) -> Result<(), LakeError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(LakeError::io(path)(error)),
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_offset() {
        let name = file_name(3, 42, 1_000_000);
        assert_eq!(
            name,
            "p003-00000000000000000042-00000000000001000000.parquet"
        );
        assert_eq!(parse_file_name(&name), Some((3, 42, 1_000_000)));
        assert!(
            file_name(0, 9, 9) < file_name(0, 10, 10),
            "zero padding keeps lexical = numeric order"
        );
        for other in [
            "x.parquet",
            "p003-1.parquet",
            "p003-1-2-3.parquet",
            ".p003-1-2.parquet.tmp",
            "p003-1-2.json",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn hour_dirs_are_utc_and_zero_padded() {
        // 2024-05-01T09:00:00Z
        assert_eq!(
            hour_dir(1_714_554_000_000),
            PathBuf::from("year=2024/month=05/day=01/hour=09")
        );
        assert_eq!(
            hour_dir(0),
            PathBuf::from("year=1970/month=01/day=01/hour=00")
        );
    }
}
