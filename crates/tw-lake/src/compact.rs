//! Compaction: the small flush files of a closed hour become few large files per log
//! partition, sorted by the stream's sort column, with row-group and page statistics, page
//! indexes and bloom filters on the stream's bloom-filter columns.
//!
//! How readers never see a row twice or miss one: a pass merges consecutive live files of one
//! partition and hour directory (by offset) into one file named after their whole span, stored
//! with one atomic put like a flush file. From that instant it covers its inputs,
//! which are then superseded (`supersede.rs`) and dropped from every listing the query engine
//! makes. The inputs are deleted only by a later pass, once they have been superseded for the
//! grace period, so a query that listed them before can still open them.
//!
//! Only files below the writer's `hot_start` are merged, read before listing: files of a flush
//! that failed half-way (which the writer deletes later) are never merged. A pass holds the
//! lake's maintenance lock, which the writer's crash clean-up also takes.
//!
//! Memory: inputs that are each sorted already (every file this version writes, with the
//! default sort column) are merged a small batch per input at a time (`merge.rs`); otherwise
//! the inputs of one output are held decoded once.

use std::collections::BTreeMap;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{DataType, SchemaRef};
use chrono::{NaiveDate, TimeZone, Utc};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;
use serde::Serialize;
use tw_core::{Offset, PartitionId, StreamLakeConfig, StreamName};

use crate::catalog::TIME_COLUMN;
use crate::convert::align;
use crate::files::{self, DataFile, file_name};
use crate::import::flushed;
use crate::merge::{self, GroupKeys, SortedMerge};
use crate::storage::LakeStorage;
use crate::supersede::{by_dir, range_of_path, superseded_ranges};
use crate::{Lake, LakeError};

pub(crate) const HOUR_MS: i64 = 3_600_000;

/// Settings of compaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionConfig {
    /// An hour is compacted once it ended at least this long ago: late events still land in
    /// the hour just closed, and merging it on every flush would rewrite it over and over.
    pub min_age_ms: u64,
    /// Files are merged until the inputs of one output reach about this many bytes.
    pub target_file_bytes: u64,
    /// Superseded files are deleted once they have been superseded this long: a query that
    /// listed them just before the merge may still open them meanwhile.
    pub grace_ms: u64,
    /// Rows per row group of a compacted file (bloom filters and statistics are per group).
    pub row_group_rows: usize,
}

impl Default for CompactionConfig {
    /// 10 minutes, 64 MiB, 60 s (twice the default query timeout), 128 Ki rows.
    fn default() -> Self {
        CompactionConfig {
            min_age_ms: 600_000,
            target_file_bytes: 64 << 20,
            grace_ms: 60_000,
            row_group_rows: 128 * 1024,
        }
    }
}

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactionReport {
    /// Small files merged (now superseded).
    pub files_compacted: usize,
    /// Files written by merging.
    pub files_written: usize,
    /// Bytes of the merged inputs.
    pub bytes_read: u64,
    /// Bytes of the written files.
    pub bytes_written: u64,
    /// Rows rewritten.
    pub rows: u64,
    /// Superseded files deleted after their grace period.
    pub superseded_deleted: usize,
    /// Wall-clock time of the pass.
    pub elapsed_ms: u64,
}

impl Lake {
    /// One compaction pass over every stream: merges the small files of hours that ended at
    /// least `min_age_ms` before `now_ms`, and deletes superseded files past their grace.
    pub fn compact(&self, now_ms: i64, min_age_ms: u64) -> Result<CompactionReport, LakeError> {
        let _maintenance = self.maintenance();
        let started = Instant::now();
        let mut report = CompactionReport::default();
        for stream in self.streams() {
            self.compact_stream(&stream, now_ms, min_age_ms, &mut report)?;
        }
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        metrics::counter!("tidewatch_lake_compaction_files_total")
            .increment(report.files_compacted as u64);
        metrics::counter!("tidewatch_lake_compaction_bytes_written_total")
            .increment(report.bytes_written);
        metrics::counter!("tidewatch_lake_superseded_deleted_total")
            .increment(report.superseded_deleted as u64);
        metrics::histogram!("tidewatch_lake_compaction_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(report)
    }

    fn compact_stream(
        &self,
        stream: &StreamName,
        now_ms: i64,
        min_age_ms: u64,
        report: &mut CompactionReport,
    ) -> Result<(), LakeError> {
        // Before listing: a file listed later and ending below it was completely written by
        // a flush that succeeded (see the module doc).
        let hot_start = self.hot_starts(stream);
        let storage = self.storage();
        let data = files::list_stream(storage, stream)?;
        let Some(schema) = self.table_schema(stream) else {
            return Ok(());
        };
        let settings = self.stream_settings(stream);
        let config = &self.config().compaction;
        for (dir, files) in by_dir(data) {
            let ranges: Vec<_> = files.iter().map(|f| range_of_path(&f.path)).collect();
            let superseded = superseded_ranges(&ranges);
            let grace_ms = i64::try_from(config.grace_ms).unwrap_or(i64::MAX);
            for (file, _) in files.iter().zip(&superseded).filter(|(_, gone)| **gone) {
                let since = self.superseded_at(&file.path, now_ms);
                if now_ms.saturating_sub(since) >= grace_ms {
                    storage.delete(&file.path)?;
                    self.forget_superseded(&file.path);
                    report.superseded_deleted += 1;
                }
            }
            let closed = hour_start_of(stream.as_str(), &dir).is_some_and(|start| {
                start.saturating_add(HOUR_MS) <= now_ms.saturating_sub_unsigned(min_age_ms)
            });
            if !closed {
                continue;
            }
            let mut by_partition: BTreeMap<PartitionId, Vec<(&DataFile, u64)>> = BTreeMap::new();
            for (index, file) in files.iter().enumerate() {
                let below_hot = flushed(file.partition, file.last, &hot_start);
                if !superseded[index] && below_hot {
                    by_partition
                        .entry(file.partition)
                        .or_default()
                        .push((file, file.size));
                }
            }
            for (partition, mut live) in by_partition {
                live.sort_by_key(|(file, _)| file.first);
                for group in pack(&live, config.target_file_bytes) {
                    if group.len() < 2 {
                        continue;
                    }
                    let taken = |path: &str| files.iter().any(|file| file.path == path);
                    let target = (dir.as_str(), partition);
                    let output = self.merge(stream, &schema, &settings, target, group, taken)?;
                    if let Some((bytes, rows)) = output {
                        for (file, _) in group {
                            self.superseded_at(&file.path, now_ms);
                        }
                        report.files_compacted += group.len();
                        report.files_written += 1;
                        report.bytes_read += group.iter().map(|(_, size)| size).sum::<u64>();
                        report.bytes_written += bytes;
                        report.rows += rows;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the rows of `group` (consecutive files of one partition and directory) as one
    /// sorted file named after their span. `None` when that name already exists.
    fn merge(
        &self,
        stream: &StreamName,
        schema: &SchemaRef,
        settings: &StreamLakeConfig,
        (dir, partition): (&str, PartitionId),
        group: &[(&DataFile, u64)],
        taken: impl Fn(&str) -> bool,
    ) -> Result<Option<(u64, u64)>, LakeError> {
        let (Some((first, _)), Some((last, _))) = (group.first(), group.last()) else {
            return Ok(None);
        };
        let path = format!("{dir}/{}", file_name(partition, first.first, last.last));
        // Decided from the listing (a GET would download the file from S3).
        if taken(&path) {
            tracing::warn!(%stream, %path, "compaction output exists already; group skipped");
            return Ok(None);
        }
        let name = stream.as_str();
        let sort_column = sort_column_of(schema, settings, name);
        let paths: Vec<&str> = group.iter().map(|(file, _)| file.path.as_str()).collect();
        let storage = self.storage();
        let input_bytes: u64 = group.iter().map(|(_, size)| size).sum();
        // A guess at the merged file's size, a little over the inputs' (same rows, fewer
        // footers); capped, since sizes come from a listing.
        let expected_bytes = usize::try_from(input_bytes.saturating_add(input_bytes / 16))
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        // First pass: only the sort keys, one input at a time.
        let keys = GroupKeys::read(storage, &paths, schema, sort_column, name)?;
        let rows = keys.rows;
        let properties = writer_properties_for(
            schema,
            rows,
            &settings.bloom_filter_columns,
            self.config().compaction.row_group_rows,
            LASTING_ZSTD_LEVEL,
        );
        let bytes = if keys.inputs_sorted {
            // The usual case: a small batch of each open input decoded at a time.
            let merged = SortedMerge::new(
                storage,
                &paths,
                keys,
                schema,
                sort_column,
                SORTED_CHUNK_ROWS,
                name,
            )?;
            files::write_batches(storage, &path, schema, merged, properties, expected_bytes)?.size
        } else {
            // An input out of order: the inputs are held decoded once and the sorted rows go
            // to the writer a chunk at a time.
            let order = keys.order(name)?;
            drop(keys);
            let mut batches = Vec::new();
            for path in &paths {
                for batch in read_file(storage, path, name)? {
                    batches.push(align(&batch, schema, name)?);
                }
            }
            let pairs = batch_and_row(&order, &batches);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            let chunks = pairs
                .chunks(SORTED_CHUNK_ROWS)
                .map(|chunk| interleave_record_batch(&refs, chunk).map_err(LakeError::arrow(name)));
            files::write_batches(storage, &path, schema, chunks, properties, expected_bytes)?.size
        };
        tracing::info!(%stream, %path, inputs = group.len(), rows, "lake files compacted");
        Ok(Some((bytes, rows as u64)))
    }

    /// When `path` became superseded (recorded as `now_ms` the first time it is asked).
    pub(crate) fn superseded_at(&self, path: &str, now_ms: i64) -> i64 {
        let mut since = self
            .shared
            .superseded_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *since.entry(path.to_string()).or_insert(now_ms)
    }

    fn forget_superseded(&self, path: &str) {
        self.shared
            .superseded_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(path);
    }

    /// Per partition, the first offset not yet covered by flushed files.
    pub(crate) fn hot_starts(&self, stream: &StreamName) -> BTreeMap<PartitionId, Offset> {
        self.lock()
            .streams
            .get(stream)
            .map(|state| {
                state
                    .partitions
                    .iter()
                    .map(|(p, buffer)| (*p, buffer.hot_start))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Groups consecutive files whose sizes add up to at most `target` (a file larger than it
/// stays alone).
fn pack<'f, 'd>(live: &'f [(&'d DataFile, u64)], target: u64) -> Vec<&'f [(&'d DataFile, u64)]> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (index, (_, size)) in live.iter().enumerate() {
        if index > start && bytes.saturating_add(*size) > target {
            groups.push(&live[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes = bytes.saturating_add(*size);
    }
    if start < live.len() {
        groups.push(&live[start..]);
    }
    groups
}

/// Rows per batch handed to the Parquet writer by compaction.
const SORTED_CHUNK_ROWS: usize = 8192;

/// Rows per batch of [`read_file`] (the Parquet reader's default).
const READ_BATCH_ROWS: usize = 1024;

/// The column compaction sorts by: the stream's sort column (`_time` unless configured), or
/// `_time` while the configured column does not exist yet in the stream's data.
fn sort_column_of<'s>(schema: &SchemaRef, settings: &'s StreamLakeConfig, stream: &str) -> &'s str {
    let wanted = settings.sort_column.as_deref().unwrap_or(TIME_COLUMN);
    if schema.field_with_name(wanted).is_ok() {
        return wanted;
    }
    tracing::debug!(%stream, column = wanted, "sort column absent; sorting by _time");
    TIME_COLUMN
}

/// Global row numbers → (batch, row within it) over `batches`.
fn batch_and_row(order: &[usize], batches: &[RecordBatch]) -> Vec<(usize, usize)> {
    let mut starts = Vec::with_capacity(batches.len());
    let mut total = 0usize;
    for batch in batches {
        starts.push(total);
        total += batch.num_rows();
    }
    order
        .iter()
        .map(|&row| {
            let batch = starts
                .partition_point(|&start| start <= row)
                .saturating_sub(1);
            (batch, row - starts.get(batch).copied().unwrap_or(0))
        })
        .collect()
}

/// Every row of the Parquet file at `path` (fetched whole: lake files are at most a merge
/// target in size).
pub(crate) fn read_file(
    storage: &LakeStorage,
    path: &str,
    stream: &str,
) -> Result<Vec<RecordBatch>, LakeError> {
    merge::open_reader(storage, path, None, READ_BATCH_ROWS)?
        .map(|batch| batch.map_err(LakeError::arrow(stream)))
        .collect()
}

/// zstd level of flush files. They live until their hour is compacted, and the flush is on
/// the lake consumer's path: level 1 let the `lake_throughput` example write ~17 % more events
/// per second than level 3 (and its files came out no larger; BENCHMARKS.md, session 21).
pub(crate) const FLUSH_ZSTD_LEVEL: i32 = 1;
/// zstd level of the files that stay: compacted hours and rewrites (row deletion).
pub(crate) const LASTING_ZSTD_LEVEL: i32 = 3;

/// How the lake writes every Parquet file: zstd at `zstd_level`, Parquet 1.0 pages with
/// dictionaries, statistics per row group and per page (so a column index and an offset index:
/// the page index), and a bloom filter on each string column of `bloom_columns` present in
/// `batch`. What DuckDB, Spark, Trino and Athena all read, and what lets DataFusion prune.
pub(crate) fn writer_properties(
    batch: &RecordBatch,
    bloom_columns: &[String],
    max_row_group_rows: usize,
    zstd_level: i32,
) -> Result<WriterProperties, ParquetError> {
    writer_properties_for(
        &batch.schema(),
        batch.num_rows(),
        bloom_columns,
        max_row_group_rows,
        zstd_level,
    )
}

/// [`writer_properties`] for a file of `rows` rows of `schema` written in several batches.
pub(crate) fn writer_properties_for(
    schema: &SchemaRef,
    rows: usize,
    bloom_columns: &[String],
    max_row_group_rows: usize,
    zstd_level: i32,
) -> Result<WriterProperties, ParquetError> {
    Ok(properties_builder(schema, rows, bloom_columns, max_row_group_rows, zstd_level)?.build())
}

/// The builder of [`writer_properties_for`], for a caller that changes more (the flush turns
/// some dictionaries off, see [`crate::dictionary`]).
pub(crate) fn properties_builder(
    schema: &SchemaRef,
    rows: usize,
    bloom_columns: &[String],
    max_row_group_rows: usize,
    zstd_level: i32,
) -> Result<WriterPropertiesBuilder, ParquetError> {
    let group_rows = rows.clamp(1, max_row_group_rows.max(1));
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(group_rows));
    for name in bloom_columns {
        let is_text = schema.field_with_name(name).is_ok_and(|field| {
            matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        });
        if is_text {
            // One path element: flattened names keep their dots (`userIdentity.arn`).
            let column = ColumnPath::new(vec![name.clone()]);
            builder = builder
                .set_column_bloom_filter_enabled(column.clone(), true)
                .set_column_bloom_filter_fpp(column.clone(), 0.01)
                // Filters are sized for the worst case, then folded to the values seen.
                .set_column_bloom_filter_max_ndv(column, group_rows as u64);
        }
    }
    Ok(builder)
}

/// The start (epoch ms) of the hour of `dir` = `{stream}/year=/month=/day=/hour=` (relative
/// to the lake root).
pub(crate) fn hour_start_of(stream: &str, dir: &str) -> Option<i64> {
    let relative = dir.strip_prefix(stream)?.strip_prefix('/')?;
    let mut values = [0u32; 4];
    let mut parts = relative.split('/');
    for (value, key) in values.iter_mut().zip(["year", "month", "day", "hour"]) {
        let part = parts.next()?;
        *value = part.strip_prefix(key)?.strip_prefix('=')?.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    let [year, month, day, hour] = values;
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    let time = date.and_hms_opt(hour, 0, 0)?;
    Some(Utc.from_utc_datetime(&time).timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_dirs_parse_back_to_their_start() {
        let stream = "cloudtrail";
        let dir = format!("{stream}/{}", crate::files::hour_dir(1_714_554_000_000));
        assert_eq!(hour_start_of(stream, &dir), Some(1_714_554_000_000));
        assert_eq!(hour_start_of(stream, "cloudtrail/year=2024"), None);
        assert_eq!(hour_start_of("cloud", &dir), None);
        assert_eq!(
            hour_start_of(stream, "cloudtrail/year=2024/month=13/day=01/hour=00"),
            None
        );
    }

    #[test]
    fn packing_keeps_order_and_target() {
        let file = |first| DataFile {
            path: format!("f{first}"),
            partition: 0,
            first,
            last: first,
            size: 0,
        };
        let files: Vec<DataFile> = (0..5).map(file).collect();
        let live: Vec<(&DataFile, u64)> = files.iter().zip([10, 10, 100, 5, 5]).collect();
        let sizes: Vec<Vec<u64>> = pack(&live, 30)
            .iter()
            .map(|g| g.iter().map(|(_, s)| *s).collect())
            .collect();
        assert_eq!(sizes, vec![vec![10, 10], vec![100], vec![5, 5]]);
    }
}
