//! One SQL table per stream: Parquet files (cold) minus what is still hot, plus the hot rows.
//!
//! Invariant: every `(_partition, _offset)` is read once. The query's listing leaves out
//! whole files at or past the snapshot's `hot_start[partition]` (`live_files.rs`: a file is
//! entirely below it or was stored after the snapshot), so no row needs an offset filter, and
//! the hot rows are appended with UNION ALL.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Timelike};
use datafusion::arrow::array::{
    Array, ArrayRef, Int32Array, RecordBatch, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result as DfResult;
use datafusion::prelude::SessionContext;

use crate::catalog::HotData;
use crate::files::HiveFiles;

/// The Hive partition columns of the lake layout, in path order.
pub const PARTITION_COLUMNS: [&str; 4] = ["year", "month", "day", "hour"];

/// Builds the user-visible table of one stream.
///
/// `file_schema` is the lake's union schema (None if no file was ever written) and `location`
/// the stream's directory (a local path or `s3://…/`; None if it certainly holds no file). The table's columns are the union schema, then hot-only columns, then
/// the Hive columns `year, month, day, hour` (Int32).
pub fn stream_table(
    ctx: &SessionContext,
    file_schema: Option<SchemaRef>,
    location: Option<&str>,
    hot: HotData,
) -> DfResult<Arc<dyn TableProvider>> {
    let data_schema = visible_data_schema(file_schema.as_deref(), &hot.schema);
    let full_schema = with_partition_columns(&data_schema);

    let hot_batches = hot
        .batches
        .iter()
        .filter(|batch| batch.num_rows() > 0)
        .map(|batch| align_hot_batch(batch, &full_schema))
        .collect::<DfResult<Vec<_>>>()?;
    let hot_table = MemTable::try_new(Arc::clone(&full_schema), vec![hot_batches])?;
    let hot_frame = ctx.read_table(Arc::new(hot_table))?;

    // No union schema means no file was ever written; no location means the same (only hot
    // data so far). Either way there is nothing cold to read.
    let (Some(_), Some(location)) = (&file_schema, location) else {
        return Ok(hot_frame.into_view());
    };
    let listing = listing_table(ctx, location, &data_schema)?;
    let cold_frame = ctx.read_table(listing)?;
    Ok(cold_frame.union(hot_frame)?.into_view())
}

/// The union schema, extended by hot-only columns, all nullable (a file may lack any column),
/// without the names reserved for Hive partition columns.
///
/// Top-level strings are read as `Utf8View`: the Parquet reader then points into the decoded
/// pages instead of copying every value into one contiguous buffer, and DataFusion groups,
/// compares and filters views without touching strings of more than 12 bytes that differ in
/// their prefix. String columns dominate event data, so this is most of a scan's decoding.
fn visible_data_schema(file_schema: Option<&Schema>, hot_schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::new();
    let sources = file_schema
        .into_iter()
        .flat_map(|s| s.fields().iter())
        .chain(hot_schema.fields().iter());
    for field in sources {
        if PARTITION_COLUMNS.contains(&field.name().as_str()) {
            // A data field named like a partition column would be shadowed by the path value;
            // the partition column wins because it is what prunes.
            continue;
        }
        match fields.iter_mut().find(|f| f.name() == field.name()) {
            Some(existing) => {
                let widened = widen(existing.data_type(), field.data_type());
                *existing = Field::new(field.name(), widened, true);
            }
            None => fields.push(Field::new(field.name(), field.data_type().clone(), true)),
        }
    }
    for field in &mut fields {
        if matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
            *field = Field::new(field.name(), DataType::Utf8View, true);
        }
    }
    Arc::new(Schema::new(fields))
}

/// The type able to hold values of both `a` and `b` (the lake widens the same way).
fn widen(a: &DataType, b: &DataType) -> DataType {
    if a == b {
        return a.clone();
    }
    match (a, b) {
        (DataType::Null, other) | (other, DataType::Null) => other.clone(),
        (x, y) if x.is_integer() && y.is_integer() => DataType::Int64,
        (x, y) if x.is_numeric() && y.is_numeric() => DataType::Float64,
        (DataType::Timestamp(_, _), DataType::Timestamp(_, _)) => a.clone(),
        _ => DataType::Utf8,
    }
}

fn with_partition_columns(data: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = data.fields().iter().map(|f| f.as_ref().clone()).collect();
    // ListingTable declares partition columns non-nullable; hot rows derive them from `_time`.
    fields.extend(
        PARTITION_COLUMNS
            .iter()
            .map(|name| Field::new(*name, DataType::Int32, false)),
    );
    Arc::new(Schema::new(fields))
}

/// A ListingTable over `{location}year=/month=/day=/hour=/*.parquet` reading with
/// `data_schema`: columns a file lacks read as NULL and narrower file types are cast to the
/// union type.
pub(crate) fn listing_table(
    ctx: &SessionContext,
    location: &str,
    data_schema: &SchemaRef,
) -> DfResult<Arc<dyn TableProvider>> {
    let mut parquet_options = ctx.state().table_options().parquet.clone();
    parquet_options.global.pruning = true;
    parquet_options.global.enable_page_index = true;
    parquet_options.global.bloom_filter_on_read = true;
    let format = ParquetFormat::default().with_options(parquet_options);
    let options = ListingOptions::new(Arc::new(format))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            PARTITION_COLUMNS
                .iter()
                .map(|name| (name.to_string(), DataType::Int32))
                .collect(),
        );
    // `location` ends with a separator, which tells DataFusion it is a directory to list.
    let url = ListingTableUrl::parse(location)?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(Arc::clone(data_schema));
    // The engine's statistics cache (checked against each file's size and mtime): without it
    // every query would convert every file's footer into statistics again while planning.
    let table = ListingTable::try_new(config)?
        .with_cache(ctx.runtime_env().cache_manager.get_file_statistic_cache());
    Ok(Arc::new(HiveFiles::new(table)))
}

/// Reshapes a hot batch to the table schema: columns matched by name and cast, missing ones
/// NULL, and the Hive columns computed from `_time` (UTC) as the lake writer would.
fn align_hot_batch(batch: &RecordBatch, schema: &SchemaRef) -> DfResult<RecordBatch> {
    let rows = batch.num_rows();
    let data_fields = schema.fields().len() - PARTITION_COLUMNS.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields().iter().take(data_fields) {
        let column = match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Arc::clone(column),
            Some(column) => cast(column, field.data_type())?,
            None => datafusion::arrow::array::new_null_array(field.data_type(), rows),
        };
        columns.push(column);
    }
    let times = match batch.column_by_name("_time") {
        Some(column) => Some(cast(
            column,
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?),
        None => None,
    };
    let times = times
        .as_ref()
        .and_then(|t| t.as_any().downcast_ref::<TimestampMillisecondArray>());
    let parts: [fn(&DateTime<chrono::Utc>) -> i32; 4] = [
        |t| t.year(),
        |t| t.month() as i32,
        |t| t.day() as i32,
        |t| t.hour() as i32,
    ];
    for part in parts {
        // A hot row without a time cannot be placed in a partition; 0 never matches a filter
        // on a real year/month/day/hour, which is the same as the row being outside it.
        let values: Int32Array = (0..rows)
            .map(|row| {
                let ms = times.filter(|t| t.is_valid(row)).map(|t| t.value(row));
                Some(
                    ms.and_then(DateTime::from_timestamp_millis)
                        .map_or(0, |t| part(&t)),
                )
            })
            .collect();
        columns.push(Arc::new(values));
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};

    use super::*;

    /// A file's statistics are computed once per engine, not once per query: a later table
    /// over the same files (each query builds its own) finds them in the engine's cache.
    #[tokio::test]
    async fn file_statistics_are_kept_across_tables() {
        let dir = tempfile::tempdir().expect("temp dir");
        let hour = dir.path().join("year=2024/month=03/day=01/hour=09");
        std::fs::create_dir_all(&hour).expect("hour dir");
        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
        )])
        .expect("batch");
        let file = std::fs::File::create(hour.join("a.parquet")).expect("file");
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");

        let ctx = SessionContext::new();
        let location = format!("{}/", dir.path().display());
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        for _ in 0..2 {
            let table = listing_table(&ctx, &location, &schema).expect("table");
            let rows = ctx
                .read_table(table)
                .expect("frame")
                .count()
                .await
                .expect("counted");
            assert_eq!(rows, 3);
        }
        let cache = ctx
            .runtime_env()
            .cache_manager
            .get_file_statistic_cache()
            .expect("the default statistics cache");
        let entries = cache.list_entries();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(entries.values().all(|entry| entry.hits >= 1), "{entries:?}");
    }

    #[test]
    fn schemas_merge_and_widen() {
        let file = Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("year", DataType::Int64, true),
            Field::new("n", DataType::Int32, true),
        ]);
        let hot = Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("n", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
        ]);
        let merged = visible_data_schema(Some(&file), &hot);
        let expected = Schema::new(vec![
            Field::new("a", DataType::Utf8View, true),
            Field::new("n", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
        ]);
        assert_eq!(merged.as_ref(), &expected);
        assert_eq!(widen(&DataType::Int32, &DataType::Int64), DataType::Int64);
    }

    #[test]
    fn hot_batches_get_hive_columns_and_casts() {
        let hot_schema = Arc::new(Schema::new(vec![
            Field::new(
                "_time",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new("a", DataType::Int64, true),
        ]));
        // 2024-02-29T23:59:59.999Z and a row without a time.
        let batch = RecordBatch::try_new(
            Arc::clone(&hot_schema),
            vec![
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(1_709_251_199_999), None])
                        .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from(vec![Some(5), None])),
            ],
        )
        .expect("valid batch");
        let data = Schema::new(vec![
            Field::new(
                "_time",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new("a", DataType::Utf8, true),
            Field::new("missing", DataType::Float64, true),
        ]);
        let aligned = align_hot_batch(&batch, &with_partition_columns(&data)).expect("aligns");
        let strings = aligned
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("utf8");
        assert_eq!(strings.iter().collect::<Vec<_>>(), vec![Some("5"), None]);
        assert_eq!(aligned.column(2).null_count(), 2);
        let part = |i: usize| {
            let column = aligned
                .column(3 + i)
                .as_any()
                .downcast_ref::<Int32Array>()
                .expect("int32");
            column.values().to_vec()
        };
        assert_eq!(
            [part(0), part(1), part(2), part(3)],
            [vec![2024, 0], vec![2, 0], vec![29, 0], vec![23, 0]]
        );
    }
}
