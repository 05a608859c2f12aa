//! Columns tested by a per-value string predicate are read as Arrow dictionaries, so that the
//! predicate is answered once per dictionary entry and spread to the rows by their keys.
//!
//! The lake's Parquet writer stores repeating strings dictionary-encoded. By default the scan
//! decodes them to `Utf8View` (`table.rs`), one 16-byte view per row, and a per-value
//! predicate (`per_value/`) finds the distinct values again by hashing every view: at 10M
//! events most of an `ILIKE '%kali%'` query. For a column under such a predicate the scan asks
//! the Parquet reader for `Dictionary(Int32, Utf8)` instead, in each file where every data
//! page of the column is dictionary-encoded (elsewhere the reader would have to build a
//! dictionary by hashing the values). The predicate then sees the page dictionary and one key
//! per row; the rows that pass reach the rest of the plan as `Utf8View`, cast by the scan's
//! projection the way any file column of another type than the table's is.
//!
//! Two pieces, put on the scan by [`read_as_dictionaries`]:
//! - [`DictionaryHints`], a Parquet reader factory whose file metadata carries the dictionary
//!   type in the Arrow schema hint (`ARROW:schema`): that is where the reader takes the Arrow
//!   type of each column from;
//! - [`PerValueAdapterFactory`], DataFusion's adapter of expressions to each file's schema,
//!   except that a per-value predicate is given the dictionary column itself instead of a
//!   cast of every row to the table's type.

use std::any::Any;
use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetMetaData;
use datafusion::datasource::physical_plan::{
    FileScanConfig, FileScanConfigBuilder, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::cache::cache_manager::{CachedFileMetadataEntry, FileMetadataCache};
use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectMeta;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ARROW_SCHEMA_META_KEY, encode_arrow_schema, parquet_to_arrow_schema};
use parquet::basic::{Encoding, PageType, Type as PhysicalType};
use parquet::file::metadata::{ColumnChunkMetaData, FileMetaData, KeyValue, ParquetMetaData};

use crate::per_value::PerValuePredicate;

/// The type a chosen column is read as.
fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The columns that per-value predicates in `filters` test directly (`userAgent ILIKE …`,
/// `lower(userAgent) LIKE …`): the ones worth reading as dictionaries.
pub(crate) fn per_value_columns(filters: &[Expr]) -> Result<BTreeSet<String>> {
    let mut columns = BTreeSet::new();
    for filter in filters {
        filter.apply(|expr| {
            if let Expr::ScalarFunction(call) = expr
                && is_per_value(&call.func)
                && let Some(Expr::Column(column)) = call.args.first()
            {
                columns.insert(column.name.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
    }
    Ok(columns)
}

fn is_per_value(function: &ScalarUDF) -> bool {
    let inner: &dyn Any = function.inner().as_ref();
    inner.downcast_ref::<PerValuePredicate>().is_some()
}

/// `plan` (a file scan as the ListingTable plans it) reading `columns` as dictionaries where
/// the files allow; any other plan as it is.
///
/// `metadata_cache` (the engine's footer cache) also keeps each file's hinted metadata, so
/// that a query does not rebuild it for every file it opens.
pub(crate) fn read_as_dictionaries(
    plan: Arc<dyn ExecutionPlan>,
    columns: BTreeSet<String>,
    metadata_cache: Arc<FileMetadataCache>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if columns.is_empty() {
        return Ok(plan);
    }
    let Some(scan) = plan.downcast_ref::<DataSourceExec>() else {
        return Ok(plan);
    };
    let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
        return Ok(plan);
    };
    let Some(source) = config.file_source().downcast_ref::<ParquetSource>() else {
        return Ok(plan);
    };
    // The ParquetFormat always sets its factory (the one that caches file metadata); without
    // one there is nothing to wrap, and the scan stays as planned.
    let Some(inner) = source.parquet_file_reader_factory().cloned() else {
        return Ok(plan);
    };
    let source = source
        .clone()
        .with_parquet_file_reader_factory(Arc::new(DictionaryHints {
            inner,
            cache_suffix: format!(
                ":dictionaries:{}",
                Vec::from_iter(columns.iter().map(String::as_str)).join(",")
            ),
            columns: Arc::new(columns),
            metadata_cache,
        }));
    let config = FileScanConfigBuilder::from(config.clone())
        .with_source(Arc::new(source))
        .with_expr_adapter(Some(Arc::new(PerValueAdapterFactory)))
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// A Parquet reader factory whose readers report each file's metadata with `columns` hinted
/// as dictionaries where every data page of theirs is dictionary-encoded.
#[derive(Debug)]
struct DictionaryHints {
    inner: Arc<dyn ParquetFileReaderFactory>,
    columns: Arc<BTreeSet<String>>,
    metadata_cache: Arc<FileMetadataCache>,
    /// Appended to a file's path, the key of its hinted metadata in `metadata_cache`.
    cache_suffix: String,
}

impl ParquetFileReaderFactory for DictionaryHints {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let file = partitioned_file.object_meta.clone();
        let cache_key = Path::from(format!("{}{}", file.location, self.cache_suffix));
        let inner = self.inner.create_reader(
            partition_index,
            partitioned_file,
            metadata_size_hint,
            metrics,
        )?;
        Ok(Box::new(HintedReader {
            inner,
            columns: Arc::clone(&self.columns),
            metadata_cache: Arc::clone(&self.metadata_cache),
            file,
            cache_key,
        }))
    }
}

struct HintedReader {
    inner: Box<dyn AsyncFileReader + Send>,
    columns: Arc<BTreeSet<String>>,
    metadata_cache: Arc<FileMetadataCache>,
    /// The file read: its size and mtime tell whether a cached entry is still its own.
    file: ObjectMeta,
    cache_key: Path,
}

impl HintedReader {
    /// The hinted metadata cached for this file, if it is still valid and holds the page
    /// index whenever `metadata` does.
    fn cached(&self, metadata: &ParquetMetaData) -> Option<Arc<ParquetMetaData>> {
        let entry = self.metadata_cache.get(&self.cache_key)?;
        let hinted = entry
            .file_metadata
            .as_any()
            .downcast_ref::<CachedParquetMetaData>()?
            .parquet_metadata();
        let has_page_index = hinted.column_index().is_some() || metadata.column_index().is_none();
        (entry.is_valid_for(&self.file) && has_page_index).then(|| Arc::clone(hinted))
    }
}

impl AsyncFileReader for HintedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let metadata = self.inner.get_metadata(options).await?;
            if let Some(hinted) = self.cached(&metadata) {
                return Ok(hinted);
            }
            let hinted = with_dictionary_hints(metadata, &self.columns)?;
            let entry = CachedFileMetadataEntry::new(
                self.file.clone(),
                Arc::new(CachedParquetMetaData::new(Arc::clone(&hinted))),
            );
            self.metadata_cache.put(&self.cache_key, entry);
            Ok(hinted)
        }
        .boxed()
    }
}

/// `metadata` whose Arrow schema hint says `Dictionary(Int32, Utf8)` for each of `columns`
/// that is a top-level string column dictionary-encoded on every data page of the file;
/// `metadata` itself when none is.
pub(crate) fn with_dictionary_hints(
    metadata: Arc<ParquetMetaData>,
    columns: &BTreeSet<String>,
) -> parquet::errors::Result<Arc<ParquetMetaData>> {
    let file = metadata.file_metadata();
    let descriptor = file.schema_descr();
    let chosen: BTreeSet<&str> = descriptor
        .columns()
        .iter()
        .enumerate()
        .filter_map(|(leaf, column)| match column.path().parts() {
            [name]
                if columns.contains(name)
                    && column.physical_type() == PhysicalType::BYTE_ARRAY
                    && metadata
                        .row_groups()
                        .iter()
                        .all(|group| all_pages_dictionary_encoded(group.column(leaf))) =>
            {
                Some(name.as_str())
            }
            _ => None,
        })
        .collect();
    if chosen.is_empty() {
        return Ok(metadata);
    }
    let schema = parquet_to_arrow_schema(descriptor, file.key_value_metadata())?;
    let mut hinted_any = false;
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|field| {
            let is_text = matches!(field.data_type(), DataType::Utf8 | DataType::Utf8View);
            if is_text && chosen.contains(field.name().as_str()) {
                hinted_any = true;
                Arc::new(field.as_ref().clone().with_data_type(dictionary_type()))
            } else {
                Arc::clone(field)
            }
        })
        .collect();
    if !hinted_any {
        return Ok(metadata);
    }
    let hinted = Schema::new_with_metadata(fields, schema.metadata().clone());
    let mut key_values: Vec<KeyValue> = file
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|pair| pair.key != ARROW_SCHEMA_META_KEY)
        .cloned()
        .collect();
    key_values.push(KeyValue::new(
        ARROW_SCHEMA_META_KEY.to_string(),
        encode_arrow_schema(&hinted),
    ));
    let file_metadata = FileMetaData::new(
        file.version(),
        file.num_rows(),
        file.created_by().map(str::to_string),
        Some(key_values),
        file.schema_descr_ptr(),
        file.column_orders().cloned(),
    );
    let rebuilt = ParquetMetaData::new(file_metadata, metadata.row_groups().to_vec())
        .into_builder()
        .set_column_index(metadata.column_index().cloned())
        .set_offset_index(metadata.offset_index().cloned())
        .build();
    Ok(Arc::new(rebuilt))
}

/// Whether every data page of `chunk` is dictionary-encoded (so that the reader keeps the
/// dictionary rather than building one), as the page encoding statistics say; a chunk
/// without them is taken as not.
fn all_pages_dictionary_encoded(chunk: &ColumnChunkMetaData) -> bool {
    if chunk.dictionary_page_offset().is_none() {
        return false;
    }
    // The metadata reader's default: the data pages' encodings as a bit mask.
    if let Some(mask) = chunk.page_encoding_stats_mask() {
        return mask.is_only(Encoding::RLE_DICTIONARY) || mask.is_only(Encoding::PLAIN_DICTIONARY);
    }
    chunk.page_encoding_stats().is_some_and(|pages| {
        pages.iter().all(|page| {
            let is_data = matches!(page.page_type, PageType::DATA_PAGE | PageType::DATA_PAGE_V2);
            !is_data
                || matches!(
                    page.encoding,
                    Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY
                )
        })
    })
}

/// DataFusion's expression adapter, then the cast of a dictionary column taken back where a
/// per-value predicate tests it: the predicate answers per dictionary entry.
#[derive(Debug)]
struct PerValueAdapterFactory;

impl PhysicalExprAdapterFactory for PerValueAdapterFactory {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let inner = DefaultPhysicalExprAdapterFactory
            .create(logical_file_schema, Arc::clone(&physical_file_schema))?;
        Ok(Arc::new(PerValueAdapter {
            inner,
            physical_file_schema,
        }))
    }
}

#[derive(Debug)]
struct PerValueAdapter {
    inner: Arc<dyn PhysicalExprAdapter>,
    physical_file_schema: SchemaRef,
}

impl PhysicalExprAdapter for PerValueAdapter {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
        self.inner
            .rewrite(expr)?
            .transform_up(|expr| {
                let Some(call) = expr.downcast_ref::<ScalarFunctionExpr>() else {
                    return Ok(Transformed::no(expr));
                };
                let Some(column) = call
                    .args()
                    .first()
                    .and_then(|arg| self.cast_dictionary_column(arg))
                    .filter(|_| is_per_value(call.fun()))
                else {
                    return Ok(Transformed::no(expr));
                };
                let mut args = call.args().to_vec();
                args[0] = column;
                Ok(Transformed::yes(Arc::clone(&expr).with_new_children(args)?))
            })
            .data()
    }
}

impl PerValueAdapter {
    /// The column of `expr` = `CAST(column AS …)` when the file holds it as a dictionary.
    fn cast_dictionary_column(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
    ) -> Option<Arc<dyn PhysicalExpr>> {
        let cast = expr.downcast_ref::<CastExpr>()?;
        let column = cast.expr().downcast_ref::<Column>()?;
        let field = self.physical_file_schema.fields().get(column.index())?;
        (field.name() == column.name() && matches!(field.data_type(), DataType::Dictionary(_, _)))
            .then(|| Arc::clone(cast.expr()))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Int64Array, RecordBatch,
        StringArray,
    };
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{Field, Int32Type};
    use datafusion::common::ScalarValue;
    use datafusion::common::config::ConfigOptions;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, lit};
    use datafusion::prelude::{SessionConfig, SessionContext};
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
    use parquet::file::metadata::ParquetMetaDataReader;
    use parquet::file::properties::WriterProperties;

    use super::*;
    use crate::per_value::PerValuePredicates;

    const AGENTS: [&str; 3] = [
        "curl/8.5.0 kali",
        "aws-cli/2.15.0",
        "Mozilla/5.0 (X11; Kali)",
    ];
    const ROWS: usize = 4000;

    /// A Parquet file of [`ROWS`] rows: `agent` repeating (dictionary-encoded on every page),
    /// `id` unique (its dictionary outgrows the writer's limit, so later pages are plain),
    /// `n` an integer, and `name` repeating but never asked for.
    fn file() -> Bytes {
        let agent: StringArray = (0..ROWS).map(|i| Some(AGENTS[i % 3])).collect();
        let id: StringArray = (0..ROWS).map(|i| Some(format!("request-{i:08}"))).collect();
        let n: Int64Array = (0..ROWS as i64).map(Some).collect();
        let batch = RecordBatch::try_from_iter([
            ("agent", Arc::new(agent.clone()) as ArrayRef),
            ("id", Arc::new(id)),
            ("n", Arc::new(n)),
            ("name", Arc::new(agent)),
        ])
        .expect("batch");
        let properties = WriterProperties::builder()
            .set_dictionary_page_size_limit(1024)
            .build();
        let mut out = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut out, batch.schema(), Some(properties)).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
        Bytes::from(out)
    }

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn only_columns_dictionary_encoded_on_every_page_are_hinted() {
        let bytes = file();
        let metadata = Arc::new(
            ParquetMetaDataReader::new()
                .parse_and_finish(&bytes)
                .expect("metadata"),
        );
        let hinted = with_dictionary_hints(
            Arc::clone(&metadata),
            &names(&["agent", "id", "n", "absent"]),
        )
        .expect("hinted");
        let reader = ArrowReaderMetadata::try_new(hinted, Default::default()).expect("schema");
        let types: Vec<(&str, &DataType)> = reader
            .schema()
            .fields()
            .iter()
            .map(|field| (field.name().as_str(), field.data_type()))
            .collect();
        assert_eq!(
            types,
            [
                ("agent", &dictionary_type()),
                ("id", &DataType::Utf8),
                ("n", &DataType::Int64),
                ("name", &DataType::Utf8),
            ]
        );
        // The reader keeps the file's dictionary: the same values, as keys into it.
        let batches = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, reader)
            .build()
            .expect("reader")
            .collect::<std::result::Result<Vec<_>, _>>()
            .expect("rows");
        let mut row = 0;
        for batch in &batches {
            let agents = batch.column(0);
            assert_eq!(agents.data_type(), &dictionary_type());
            let agents = cast(agents, &DataType::Utf8).expect("cast");
            for value in agents.as_string::<i32>().iter() {
                assert_eq!(value, Some(AGENTS[row % 3]));
                row += 1;
            }
        }
        assert_eq!(row, ROWS);
        // Nothing asked for can be read as a dictionary: the very same metadata.
        let same =
            with_dictionary_hints(Arc::clone(&metadata), &names(&["id", "n"])).expect("unchanged");
        assert!(Arc::ptr_eq(&same, &metadata));
    }

    #[test]
    fn per_value_predicates_get_the_dictionary_other_expressions_a_cast() {
        let logical = Arc::new(Schema::new(vec![Field::new(
            "agent",
            DataType::Utf8View,
            true,
        )]));
        let physical = Arc::new(Schema::new(vec![Field::new(
            "agent",
            dictionary_type(),
            true,
        )]));
        let agent: Arc<dyn PhysicalExpr> = Arc::new(Column::new("agent", 0));
        let ilike = ScalarFunctionExpr::try_new(
            Arc::new(ScalarUDF::from(PerValuePredicate::new(
                Operator::ILikeMatch,
                None,
            ))),
            vec![
                Arc::clone(&agent),
                lit(ScalarValue::Utf8View(Some("%kali%".into()))),
            ],
            &logical,
            Arc::new(ConfigOptions::default()),
        )
        .expect("call");
        let equal = BinaryExpr::new(
            agent,
            Operator::Eq,
            lit(ScalarValue::Utf8View(Some(AGENTS[1].into()))),
        );
        let expr: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(ilike),
            Operator::Or,
            Arc::new(equal),
        ));

        let rewritten = PerValueAdapterFactory
            .create(logical, Arc::clone(&physical))
            .and_then(|adapter| adapter.rewrite(expr))
            .expect("rewrite");
        let or = rewritten.downcast_ref::<BinaryExpr>().expect("OR");
        let call = or
            .left()
            .downcast_ref::<ScalarFunctionExpr>()
            .expect("the predicate");
        assert!(call.args()[0].downcast_ref::<Column>().is_some(), "{call}");
        let compared = or.right().downcast_ref::<BinaryExpr>().expect("=");
        assert!(
            compared.left().downcast_ref::<CastExpr>().is_some(),
            "{compared}"
        );

        // Evaluated over a dictionary column, NULL rows included.
        let values: Vec<Option<&str>> = (0..100)
            .map(|i| (i % 7 != 0).then_some(AGENTS[i % 3]))
            .collect();
        let column: DictionaryArray<Int32Type> = values.iter().copied().collect();
        let batch = RecordBatch::try_new(physical, vec![Arc::new(column)]).expect("batch");
        let answers = rewritten
            .evaluate(&batch)
            .and_then(|answers| answers.into_array(batch.num_rows()))
            .expect("evaluates");
        let expected: BooleanArray = values
            .iter()
            .map(|value| value.map(|v| v.to_lowercase().contains("kali") || v == AGENTS[1]))
            .collect();
        assert_eq!(answers.as_boolean(), &expected);
    }

    /// Whether a Parquet scan of `plan` reads through [`DictionaryHints`].
    fn reads_as_dictionaries(plan: &Arc<dyn ExecutionPlan>) -> bool {
        let mut found = false;
        plan.apply(|node| {
            if let Some(scan) = node.downcast_ref::<DataSourceExec>()
                && let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>()
                && let Some(source) = config.file_source().downcast_ref::<ParquetSource>()
                && let Some(factory) = source.parquet_file_reader_factory()
            {
                found |= format!("{factory:?}").starts_with("DictionaryHints");
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .expect("visits");
        found
    }

    /// Through DataFusion's planning: a per-value predicate puts the hints and the adapter
    /// on the lake scan and answers right; a plain comparison leaves the scan as planned.
    #[tokio::test]
    async fn lake_scans_read_per_value_columns_as_dictionaries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let hour = dir.path().join("year=2024/month=03/day=01/hour=09");
        std::fs::create_dir_all(&hour).expect("hour dir");
        std::fs::write(hour.join("a.parquet"), file()).expect("file");
        // As the engine sets it: filters evaluated in the scan, where the adapter is.
        let mut config = SessionConfig::new();
        config.options_mut().execution.parquet.pushdown_filters = true;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_optimizer_rule(Arc::new(PerValuePredicates))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let schema = Arc::new(Schema::new(vec![
            Field::new("agent", DataType::Utf8View, true),
            Field::new("id", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, true),
            Field::new("name", DataType::Utf8View, true),
        ]));
        let location = format!("{}/", dir.path().display());
        let table = crate::table::listing_table(&ctx, &location, &schema).expect("table");
        ctx.register_table("t", table).expect("registered");
        let kali = (0..ROWS)
            .filter(|i| AGENTS[i % 3].to_lowercase().contains("kali"))
            .count();
        for (sql, expected, reads_dictionaries) in [
            (
                "SELECT count(*) FROM t WHERE agent ILIKE '%kali%'",
                kali,
                true,
            ),
            (
                "SELECT count(*) FROM t WHERE lower(agent) NOT LIKE '%kali%' OR id = 'request-00000000'",
                ROWS - kali + 1,
                true,
            ),
            (
                "SELECT count(*) FROM t WHERE agent = 'aws-cli/2.15.0'",
                ROWS / 3,
                false,
            ),
        ] {
            let frame = ctx.sql(sql).await.expect("planned");
            let plan = frame.clone().create_physical_plan().await.expect("plan");
            assert_eq!(reads_as_dictionaries(&plan), reads_dictionaries, "{sql}");
            let batches = frame.collect().await.expect("runs");
            let count = batches[0]
                .column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0);
            assert_eq!(count as usize, expected, "{sql}");
        }
        // The file's hinted metadata is kept in the engine's footer cache, beside the file's own
        // metadata, and found again by later opens.
        let cached: Vec<_> = ctx
            .runtime_env()
            .cache_manager
            .get_file_metadata_cache()
            .list_entries()
            .into_iter()
            .filter(|(key, _)| key.as_ref().ends_with("a.parquet:dictionaries:agent"))
            .collect();
        assert_eq!(cached.len(), 1, "{cached:?}");
        assert!(cached[0].1.hits >= 1);
    }
}
