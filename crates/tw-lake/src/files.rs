//! Parquet files of the lake: naming, writing one flush (split by event-time hour), listing,
//! and the clean-up after a crash. Every byte goes through [`LakeStorage`].

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, Int64Array, RecordBatch, RecordBatchReader, TimestampMillisecondArray, UInt32Array,
};
use arrow::compute::{concat_batches, filter_record_batch, kernels::cmp::lt, take_record_batch};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::properties::WriterProperties;
use tw_core::{Offset, PartitionId, StreamName};

use crate::LakeError;
use crate::catalog::{OFFSET_COLUMN, TIME_COLUMN};
use crate::compact::{FLUSH_ZSTD_LEVEL, properties_builder, writer_properties};
use crate::dictionary::DictionaryChoice;
use crate::storage::{LakeStorage, StoredObject};

const HOUR_MS: i64 = 3_600_000;

/// Identity of a data file, parsed from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataFile {
    /// Path relative to the lake root.
    pub(crate) path: String,
    /// Log partition of its rows.
    pub(crate) partition: PartitionId,
    /// Offset range of the flush that wrote it (inclusive).
    pub(crate) first: Offset,
    /// Last offset of that flush.
    pub(crate) last: Offset,
    /// Size in bytes, as listed.
    pub(crate) size: u64,
}

/// `p{partition:03}-{first:020}-{last:020}.parquet`.
pub(crate) fn file_name(partition: PartitionId, first: Offset, last: Offset) -> String {
    format!("p{partition:03}-{first:020}-{last:020}.parquet")
}

/// The inverse of [`file_name`]; `None` for any other file.
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
pub(crate) fn hour_dir(hour_start_ms: i64) -> String {
    // Times chrono cannot represent (beyond year 262143) are filed under the epoch hour
    // rather than refused: the row still lands, with its real `_time`.
    let time =
        DateTime::<Utc>::from_timestamp_millis(hour_start_ms).unwrap_or(DateTime::UNIX_EPOCH);
    format!(
        "year={:04}/month={:02}/day={:02}/hour={:02}",
        time.year(),
        time.month(),
        time.day(),
        time.hour()
    )
}

/// What one flush wrote (its files are pushed to the caller's list as they appear).
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Total size of the files.
    pub(crate) bytes: u64,
    /// Rows written.
    pub(crate) rows: usize,
}

/// Writes the rows of one flush of `partition` (offsets `first..=last`, all batches already
/// aligned to `schema`) as one file per event-time hour under the stream's directory, rows
/// sorted by `_time`, then `_offset` (the order compaction merges files in without decoding
/// them whole, see `merge.rs`). Each stored file is pushed to `files` at once, so that after
/// an error the caller knows which files of the failed flush exist. `dictionary` says which
/// columns get a Parquet dictionary, and learns from every file written.
// Each argument is one independent fact of the flush; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_flush(
    storage: &LakeStorage,
    stream: &str,
    partition: PartitionId,
    (first, last): (Offset, Offset),
    schema: &SchemaRef,
    batches: &[RecordBatch],
    bloom_columns: &[String],
    dictionary: &mut DictionaryChoice,
    files: &mut Vec<String>,
) -> Result<Written, LakeError> {
    let name = file_name(partition, first, last);
    let mut written = Written::default();
    let mut write_hour = |hour: i64, rows: &[RecordBatch]| -> Result<(), LakeError> {
        let path = format!("{stream}/{}/{name}", hour_dir(hour * HOUR_MS));
        let row_count = rows.iter().map(RecordBatch::num_rows).sum();
        let properties = properties_builder(
            schema,
            row_count,
            bloom_columns,
            usize::MAX,
            FLUSH_ZSTD_LEVEL,
        )
        .map(|builder| dictionary.apply(builder).build());
        let file = write_batches(
            storage,
            &path,
            schema,
            rows.iter().cloned().map(Ok),
            properties,
            0,
        )?;
        files.push(path);
        dictionary.learn(&file.row_groups);
        written.bytes += file.size;
        written.rows += row_count;
        Ok(())
    };
    // The rows of the current hour, as slices of the ordered batches.
    let mut hour_rows: Vec<RecordBatch> = Vec::new();
    let mut current_hour = None;
    for batch in in_flush_order(schema, batches, stream)? {
        let times = time_column(&batch, stream)?;
        let mut start = 0;
        while start < batch.num_rows() {
            let hour = times.value(start).div_euclid(HOUR_MS);
            let mut end = start + 1;
            while end < batch.num_rows() && times.value(end).div_euclid(HOUR_MS) == hour {
                end += 1;
            }
            // Rows are in time order, so an hour once left does not come back.
            if let Some(previous) = current_hour.filter(|&previous| previous != hour) {
                write_hour(previous, &hour_rows)?;
                hour_rows.clear();
            }
            current_hour = Some(hour);
            hour_rows.push(batch.slice(start, end - start));
            start = end;
        }
    }
    if let Some(hour) = current_hour {
        write_hour(hour, &hour_rows)?;
    }
    Ok(written)
}

/// The rows of `batches` in (`_time`, `_offset`) order: the batches themselves when they are
/// in that order already (events that arrive in time order), which saves copying every
/// column; otherwise one sorted batch.
fn in_flush_order(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    stream: &str,
) -> Result<Vec<RecordBatch>, LakeError> {
    let mut previous = None;
    let mut ordered = true;
    'batches: for batch in batches {
        let (times, offsets) = order_columns(batch, stream)?;
        for key in times.iter().zip(offsets) {
            if previous.is_some_and(|previous| previous > key) {
                ordered = false;
                break 'batches;
            }
            previous = Some(key);
        }
    }
    if ordered {
        return Ok(batches.to_vec());
    }
    let all = concat_batches(schema, batches).map_err(LakeError::arrow(stream))?;
    let (times, offsets) = order_columns(&all, stream)?;
    let rows = u32::try_from(all.num_rows()).map_err(|_| LakeError::Arrow {
        stream: stream.to_string(),
        source: arrow::error::ArrowError::ComputeError("a flush of over 4 Gi rows".into()),
    })?;
    let mut order: Vec<u32> = (0..rows).collect();
    // Stable and quick on the long ordered runs a log partition holds.
    order.sort_by_key(|&row| (times[row as usize], offsets[row as usize]));
    let sorted =
        take_record_batch(&all, &UInt32Array::from(order)).map_err(LakeError::arrow(stream))?;
    Ok(vec![sorted])
}

/// The values of a batch's `_time` and `_offset` columns.
fn order_columns<'b>(
    batch: &'b RecordBatch,
    stream: &str,
) -> Result<(&'b [i64], &'b [i64]), LakeError> {
    let times = time_column(batch, stream)?.values();
    let offsets = batch
        .column_by_name(OFFSET_COLUMN)
        .and_then(|column| column.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| LakeError::Arrow {
            stream: stream.to_string(),
            source: arrow::error::ArrowError::SchemaError(format!(
                "{OFFSET_COLUMN} is not a 64-bit integer"
            )),
        })?
        .values();
    Ok((times, offsets))
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

/// One Parquet file stored by [`write_batches`].
pub(crate) struct WrittenFile {
    pub(crate) size: u64,
    /// Its row groups' metadata, as in its footer.
    pub(crate) row_groups: Vec<RowGroupMetaData>,
}

/// Encodes `batch` as one Parquet file in memory (with `properties`, see
/// [`writer_properties`]) and puts it whole at `path`.
pub(crate) fn write_file(
    storage: &LakeStorage,
    path: &str,
    batch: &RecordBatch,
    properties: Result<WriterProperties, parquet::errors::ParquetError>,
) -> Result<WrittenFile, LakeError> {
    let batches = std::iter::once(Ok(batch.clone()));
    write_batches(storage, path, &batch.schema(), batches, properties, 0)
}

/// Writes `batches` (each of `schema`) as one Parquet file at `path`. The
/// encoded file is built in memory (one put, so it appears whole), the rows a batch at a time,
/// in a buffer of `expected_bytes` to start with (growing it doubles and copies: for a merged
/// file, the inputs' total size is a close guess).
pub(crate) fn write_batches(
    storage: &LakeStorage,
    path: &str,
    schema: &SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, LakeError>>,
    properties: Result<WriterProperties, parquet::errors::ParquetError>,
    expected_bytes: usize,
) -> Result<WrittenFile, LakeError> {
    let parquet_error = |source| LakeError::Parquet {
        path: storage.describe(path),
        source,
    };
    let properties = properties.map_err(parquet_error)?;
    let buffer = Vec::with_capacity(expected_bytes);
    let mut writer = ArrowWriter::try_new(buffer, Arc::clone(schema), Some(properties))
        .map_err(parquet_error)?;
    for batch in batches {
        writer.write(&batch?).map_err(parquet_error)?;
    }
    writer.flush().map_err(parquet_error)?;
    let row_groups = writer.flushed_row_groups().to_vec();
    // `into_inner` writes the footer (calling `finish` first would write it twice).
    let bytes = writer.into_inner().map_err(parquet_error)?;
    let size = bytes.len() as u64;
    storage.put(path, Bytes::from(bytes))?;
    Ok(WrittenFile { size, row_groups })
}

/// Every data file of the lake by stream (the first path segment; `_catalog` and other
/// objects that are not data files are ignored), sorted by partition and first offset.
pub(crate) fn list_all(
    storage: &LakeStorage,
) -> Result<BTreeMap<StreamName, Vec<DataFile>>, LakeError> {
    let mut streams: BTreeMap<StreamName, Vec<DataFile>> = BTreeMap::new();
    for object in storage.list("")? {
        if let Some((stream, file)) = data_file(object) {
            streams.entry(stream).or_default().push(file);
        }
    }
    for files in streams.values_mut() {
        sort_files(files);
    }
    Ok(streams)
}

/// Every data file of `stream` (one listing of its prefix), sorted like [`list_all`].
pub(crate) fn list_stream(
    storage: &LakeStorage,
    stream: &StreamName,
) -> Result<Vec<DataFile>, LakeError> {
    let mut files: Vec<DataFile> = storage
        .list(stream.as_str())?
        .into_iter()
        .filter_map(data_file)
        .filter(|(of, _)| of == stream)
        .map(|(_, file)| file)
        .collect();
    sort_files(&mut files);
    Ok(files)
}

fn sort_files(files: &mut [DataFile]) {
    files.sort_by(|a, b| (a.partition, a.first, &a.path).cmp(&(b.partition, b.first, &b.path)));
}

/// The stream and identity of a listed object, if it is a data file.
fn data_file(object: StoredObject) -> Option<(StreamName, DataFile)> {
    let (stream, _) = object.path.split_once('/')?;
    let name = object.path.rsplit('/').next().unwrap_or_default();
    let (partition, first, last) = parse_file_name(name)?;
    // Deserialising (unlike `StreamName::new`) also admits Tidewatch's own `_` streams.
    let stream =
        serde_json::from_value::<StreamName>(serde_json::Value::String(stream.to_string())).ok()?;
    let file = DataFile {
        path: object.path,
        partition,
        first,
        last,
        size: object.size,
    };
    Some((stream, file))
}

/// The directory part of a relative path (`""` at the root).
pub(crate) fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Cuts `file` back to its rows with `_offset < keep_below` (a file that straddles the
/// committed offset), renaming it after the new range. Deletes it when nothing is left.
/// The new file is stored before the old one is deleted, so a crash in between leaves both,
/// and the next start cuts the old one again (writing the same new file).
pub(crate) fn truncate(
    storage: &LakeStorage,
    file: &DataFile,
    keep_below: Offset,
    stream: &str,
    bloom_columns: &[String],
) -> Result<(), LakeError> {
    let parquet_error = |source| LakeError::Parquet {
        path: storage.describe(&file.path),
        source,
    };
    let Some(bytes) = storage.get(&file.path)? else {
        return Err(LakeError::Vanished {
            path: storage.describe(&file.path),
        });
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
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
                    storage.describe(&file.path)
                )),
            })?;
        let mask = lt(&offsets, &limit).map_err(LakeError::arrow(stream))?;
        kept.push(filter_record_batch(&batch, &mask).map_err(LakeError::arrow(stream))?);
    }
    let kept = concat_batches(&schema, &kept).map_err(LakeError::arrow(stream))?;
    if kept.num_rows() > 0 && keep_below > file.first {
        let dir = parent(&file.path);
        let name = file_name(file.partition, file.first, keep_below - 1);
        let properties = writer_properties(&kept, bloom_columns, usize::MAX, FLUSH_ZSTD_LEVEL);
        write_file(storage, &format!("{dir}/{name}"), &kept, properties)?;
    }
    storage.delete(&file.path)
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
            "year=2024/month=05/day=01/hour=09"
        );
        assert_eq!(hour_dir(0), "year=1970/month=01/day=01/hour=00");
    }
}
