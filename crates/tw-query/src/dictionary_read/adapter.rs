//! The expression adapter of dictionary reads: DataFusion's, except that a per-value predicate
//! gets the dictionary column itself.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};

use super::is_per_value;

/// An expression adapter (DataFusion's unless the scan had another), then the cast of a
/// dictionary column taken back where a per-value predicate tests it: the predicate answers
/// per dictionary entry.
#[derive(Debug)]
pub(super) struct PerValueAdapterFactory {
    inner: Arc<dyn PhysicalExprAdapterFactory>,
}

impl PerValueAdapterFactory {
    /// Around the scan's adapter `inner`, or DataFusion's default when it has none.
    pub(super) fn around(inner: Option<Arc<dyn PhysicalExprAdapterFactory>>) -> Self {
        Self {
            inner: inner.unwrap_or_else(|| Arc::new(DefaultPhysicalExprAdapterFactory)),
        }
    }
}

impl PhysicalExprAdapterFactory for PerValueAdapterFactory {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let inner = self
            .inner
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
    /// The column of `expr` = `CAST(column AS <string>)` when the file holds it as a
    /// dictionary of strings. (Only string to string: any other cast could fail or change
    /// values, which the predicate's answers must not hide.)
    fn cast_dictionary_column(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
    ) -> Option<Arc<dyn PhysicalExpr>> {
        let cast = expr.downcast_ref::<CastExpr>()?;
        let column = cast.expr().downcast_ref::<Column>()?;
        let field = self.physical_file_schema.fields().get(column.index())?;
        let string_dictionary = matches!(
            field.data_type(),
            DataType::Dictionary(_, values) if is_string(values)
        );
        (field.name() == column.name() && string_dictionary && is_string(cast.cast_type()))
            .then(|| Arc::clone(cast.expr()))
    }
}

fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}
