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

/// DataFusion's expression adapter, then the cast of a dictionary column taken back where a
/// per-value predicate tests it: the predicate answers per dictionary entry.
#[derive(Debug)]
pub(super) struct PerValueAdapterFactory;

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
