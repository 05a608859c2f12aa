//! The cold side of a stream table: a ListingTable over the Hive directories, behind a thin
//! wrapper that keeps DataFusion's partition-prefix listing from skipping files.
//!
//! Why the wrapper: for `month = 3`, DataFusion 55 lists only the directory `month=3/`
//! (it prints the literal), but the lake writes zero-padded `month=03/`, so the query would
//! silently return no file rows. Equalities on the padded columns are handed to the
//! ListingTable as one-element IN lists, which it still evaluates against every file's
//! partition values (so files are still pruned) but does not turn into a path prefix.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTable;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use crate::table::PARTITION_COLUMNS;

/// A [`ListingTable`] whose zero-padded partition equalities never become listing prefixes.
#[derive(Debug)]
pub struct HiveFiles {
    inner: Arc<ListingTable>,
}

impl HiveFiles {
    /// Wraps a ListingTable partitioned by [`PARTITION_COLUMNS`].
    pub fn new(inner: ListingTable) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }
}

#[async_trait]
impl TableProvider for HiveFiles {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let rewritten = filters
            .iter()
            .map(|f| unpad_equalities((*f).clone()))
            .collect::<DfResult<Vec<_>>>()?;
        let refs: Vec<&Expr> = rewritten.iter().collect();
        self.inner.supports_filters_pushdown(&refs)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let args = ScanArgs::default()
            .with_projection(projection.map(Vec::as_slice))
            .with_filters(Some(filters))
            .with_limit(limit);
        Ok(self.scan_with_args(state, args).await?.into_inner())
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> DfResult<ScanResult> {
        let filters = args
            .filters()
            .unwrap_or(&[])
            .iter()
            .map(|f| unpad_equalities(f.clone()))
            .collect::<DfResult<Vec<_>>>()?;
        let args = ScanArgs::default()
            .with_projection(args.projection())
            .with_filters(Some(&filters))
            .with_limit(args.limit())
            .with_statistics_requests(args.statistics_requests());
        self.inner.scan_with_args(state, args).await
    }
}

/// `month = 3` → `month IN (3)` for the partition columns whose directory names are padded.
/// `year` keeps its equality when four digits print the same as the directory name, so a
/// year filter still lists only that year's directory.
fn unpad_equalities(filter: Expr) -> DfResult<Expr> {
    filter
        .transform_up(|expr| {
            let Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) = &expr
            else {
                return Ok(Transformed::no(expr));
            };
            let (column, value) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => {
                    (c, v)
                }
                _ => return Ok(Transformed::no(expr)),
            };
            if !PARTITION_COLUMNS.contains(&column.name.as_str())
                || prints_as_directory(&column.name, value)
            {
                return Ok(Transformed::no(expr));
            }
            let column = Expr::Column(column.clone());
            let value = Expr::Literal(value.clone(), None);
            Ok(Transformed::yes(Expr::InList(InList::new(
                Box::new(column),
                vec![value],
                false,
            ))))
        })
        .map(|t| t.data)
}

fn prints_as_directory(column: &str, value: &ScalarValue) -> bool {
    column == "year" && matches!(value, ScalarValue::Int32(Some(y)) if (1000..=9999).contains(y))
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    #[test]
    fn padded_equalities_become_in_lists() {
        let filter = col("year")
            .eq(lit(2024))
            .and(lit(3).eq(col("month")))
            .and(col("eventName").eq(lit("x")));
        let rewritten = unpad_equalities(filter).expect("rewrites");
        assert_eq!(
            rewritten,
            col("year")
                .eq(lit(2024))
                .and(col("month").in_list(vec![lit(3)], false))
                .and(col("eventName").eq(lit("x")))
        );
    }
}
