//! The cold side of a stream table: a ListingTable over the Hive directories, behind a thin
//! wrapper that keeps DataFusion's partition-prefix listing from skipping files.
//!
//! Why the wrapper: for `month = 3`, DataFusion 55 lists only the directory `month=3/`
//! (it prints the literal), but the lake writes zero-padded `month=03/`, so the query would
//! silently return no file rows. Equalities on the padded columns are handed to the
//! ListingTable as one-element IN lists, which it still evaluates against every file's
//! partition values (so files are still pruned) but does not turn into a path prefix.
//!
//! The wrapper also turns bounds on `_time` into bounds on the hour directories, so the
//! usual `WHERE _time > now() - INTERVAL '1 hour'` lists and opens only the last hours' files,
//! and has the scan read the columns of per-value string predicates as dictionaries
//! (`dictionary_read/`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Timelike};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTable;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::expr::{Between, Cast, InList, TryCast};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, ident, lit,
};
use datafusion::physical_plan::ExecutionPlan;

use crate::dictionary_read::{per_value_columns, read_as_dictionaries};
use crate::table::PARTITION_COLUMNS;

/// The event-time column the lake partitions by.
const TIME_COLUMN: &str = "_time";

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
        let given = args.filters().unwrap_or(&[]);
        let mut filters = given
            .iter()
            .map(|f| unpad_equalities(f.clone()))
            .collect::<DfResult<Vec<_>>>()?;
        // Extra filters on partition columns only prune files; they never reach the rows.
        filters.extend(given.iter().flat_map(hour_bounds));
        let args = ScanArgs::default()
            .with_projection(args.projection())
            .with_filters(Some(&filters))
            .with_limit(args.limit())
            .with_statistics_requests(args.statistics_requests());
        let scan = self.inner.scan_with_args(state, args).await?.into_inner();
        let metadata_cache = state.runtime_env().cache_manager.get_file_metadata_cache();
        Ok(read_as_dictionaries(scan, per_value_columns(given)?, metadata_cache)?.into())
    }
}

/// Files are laid out by the UTC hour of `_time`, so a bound on `_time` bounds the hour
/// directories: `_time >= t` keeps hours whose key `yyyymmddhh` is at least the key of `t`.
/// Bounds are rounded outwards, so a kept hour may hold no matching row, but a dropped hour
/// never holds one.
fn hour_bounds(filter: &Expr) -> Vec<Expr> {
    let mut bounds = Vec::new();
    for conjunct in split_conjunction(filter) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, value) = match (time_column(left), time_literal(right)) {
                    (true, Some(value)) => (*op, value),
                    _ => match (time_literal(left), time_column(right), op.swap()) {
                        (Some(value), true, Some(swapped)) => (swapped, value),
                        _ => continue,
                    },
                };
                bounds.extend(hour_bound(op, value));
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if time_column(expr) => {
                if let Some(low) = time_literal(low) {
                    bounds.extend(hour_bound(Operator::GtEq, low));
                }
                if let Some(high) = time_literal(high) {
                    bounds.extend(hour_bound(Operator::LtEq, high));
                }
            }
            _ => {}
        }
    }
    bounds
}

fn hour_bound(op: Operator, ms: i64) -> Option<Expr> {
    let (keep, at) = match op {
        Operator::GtEq => (Operator::GtEq, ms),
        Operator::Gt => (Operator::GtEq, ms.checked_add(1)?),
        Operator::LtEq => (Operator::LtEq, ms),
        Operator::Lt => (Operator::LtEq, ms.checked_sub(1)?),
        Operator::Eq => {
            return Some(hour_bound(Operator::GtEq, ms)?.and(hour_bound(Operator::LtEq, ms)?));
        }
        _ => return None,
    };
    let time = DateTime::from_timestamp_millis(at)?;
    let key = i64::from(time.year()) * 1_000_000
        + i64::from(time.month()) * 10_000
        + i64::from(time.day()) * 100
        + i64::from(time.hour());
    Some(Expr::BinaryExpr(BinaryExpr::new(
        Box::new(hour_key()),
        keep,
        Box::new(lit(key)),
    )))
}

/// `year * 1000000 + month * 10000 + day * 100 + hour`, typed Int64 throughout because these
/// expressions skip the planner's type coercion.
fn hour_key() -> Expr {
    let scaled = |name: &str, factor: i64| {
        Expr::Cast(Cast::new(Box::new(ident(name)), DataType::Int64)) * lit(factor)
    };
    scaled("year", 1_000_000) + scaled("month", 10_000) + scaled("day", 100) + scaled("hour", 1)
}

fn time_column(expr: &Expr) -> bool {
    match expr {
        Expr::Column(column) => column.name == TIME_COLUMN,
        // The planner may cast the column to the literal's unit instead of the reverse.
        Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => time_column(expr),
        _ => false,
    }
}

/// A timestamp literal as epoch milliseconds.
fn time_literal(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1000),
        ScalarValue::TimestampMillisecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(v.div_euclid(1000)),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000_000)),
        _ => None,
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
    use datafusion::logical_expr::col;

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

    #[test]
    fn time_bounds_become_hour_key_bounds() {
        // 2024-01-01T11:00:00Z
        let at = 1_704_106_800_000_i64;
        let ns = ScalarValue::TimestampNanosecond(Some(at * 1_000_000), Some("+00:00".into()));
        let time_ns = Expr::Cast(Cast::new(
            Box::new(col("_time")),
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Nanosecond, None),
        ));
        let filter = time_ns.lt(Expr::Literal(ns, None));
        // Rows before 11:00 live in hour 10 at the latest.
        assert_eq!(
            hour_bounds(&filter),
            vec![hour_key().lt_eq(lit(2024010110_i64))]
        );
        let ms = |v| Expr::Literal(ScalarValue::TimestampMillisecond(Some(v), None), None);
        assert_eq!(
            hour_bounds(
                &ms(at)
                    .lt_eq(col("_time"))
                    .and(col("eventName").eq(lit("x")))
            ),
            vec![hour_key().gt_eq(lit(2024010111_i64))]
        );
        assert!(hour_bounds(&col("_ingest_time").gt(ms(at))).is_empty());
    }
}
