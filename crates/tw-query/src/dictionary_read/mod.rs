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
//! - `hints.rs`: a Parquet reader factory whose file metadata carries the dictionary type in
//!   the Arrow schema hint (`ARROW:schema`), which is where the reader takes the Arrow type of
//!   each column from;
//! - `adapter.rs`: DataFusion's adapter of expressions to each file's schema, except that a
//!   per-value predicate is given the dictionary column itself instead of a cast of every row
//!   to the table's type.

mod adapter;
mod hints;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::logical_expr::{Expr, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;

use self::adapter::PerValueAdapterFactory;
use self::hints::DictionaryHints;
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
        .with_parquet_file_reader_factory(Arc::new(DictionaryHints::new(
            inner,
            columns,
            metadata_cache,
        )));
    let config = FileScanConfigBuilder::from(config.clone())
        .with_source(Arc::new(source))
        .with_expr_adapter(Some(Arc::new(PerValueAdapterFactory::around(
            config.expr_adapter_factory.clone(),
        ))))
        .build();
    Ok(DataSourceExec::from_data_source(config))
}
