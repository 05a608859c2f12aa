//! `count(*) … GROUP BY <one string column>`: the partial stage counted per distinct value of
//! each batch.
//!
//! The question asked of event data most often — how many of each event name, region, error
//! code — is a count grouped by one repetitive string column. DataFusion's partial aggregation
//! hashes every row's string into its group table (~13 ns a row at 10M CloudTrail events, most
//! of that query's time). Counting the distinct views of a batch (`distinct.rs`) costs a few ns
//! a row and leaves a few dozen (value, count) rows per batch for DataFusion's final
//! aggregation to add up.
//!
//! [`CountPerValueRule`] replaces a `Partial` `AggregateExec` by [`CountPerValueExec`] only when
//! the results cannot differ: one group column (no grouping sets) of type `Utf8View`, every
//! aggregate a plain `count` of non-NULL literals (`count(*)`: not distinct, no filter, no
//! ordering), no limit, no dynamic filter, input not ordered by the group. The output has the
//! partial aggregation's own schema (the value, then each count's Int64 state), so the final
//! stage is unchanged. Nothing is kept across batches, so memory is one batch; a batch whose
//! values hardly repeat comes out as (value, 1) per row, which is what DataFusion's own partial
//! stage does when it gives up on high-cardinality groups.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, RecordBatchOptions, UInt32Array,
    new_null_array,
};
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use super::distinct::{DistinctViews, distinct_views};

/// The physical optimizer rule: see the module documentation for when it applies.
#[derive(Debug, Default)]
pub(crate) struct CountPerValueRule;

impl PhysicalOptimizerRule for CountPerValueRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(match CountPerValueExec::replacing(&node)? {
                Some(count) => Transformed::yes(Arc::new(count) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "count_per_value"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The partial stage of `count(*) GROUP BY column`, per distinct value of each batch.
#[derive(Debug)]
pub(crate) struct CountPerValueExec {
    input: Arc<dyn ExecutionPlan>,
    /// Index of the group column in the input.
    column: usize,
    /// The replaced aggregation's output: the group column, then one Int64 per count.
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl CountPerValueExec {
    /// The operator that computes what `node` computes, when `node` is a partial aggregation
    /// this operator covers exactly.
    fn replacing(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Self>> {
        let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
            return Ok(None);
        };
        let group_by = aggregate.group_expr();
        let counts_only = aggregate.aggr_expr().iter().all(|function| {
            // Matched by name: `count` is DataFusion's built-in, and this engine registers no
            // function of that name.
            function.fun().name() == "count"
                && !function.is_distinct()
                && function.order_bys().is_empty()
                && function.expressions().iter().all(|argument| {
                    argument
                        .downcast_ref::<Literal>()
                        .is_some_and(|literal| !literal.value().is_null())
                })
        });
        let [(group, _name)] = group_by.expr() else {
            return Ok(None);
        };
        let Some(column) = group.downcast_ref::<Column>() else {
            return Ok(None);
        };
        let input = aggregate.input();
        let applies = *aggregate.mode() == AggregateMode::Partial
            && group_by.is_single()
            && !aggregate.aggr_expr().is_empty()
            && counts_only
            && aggregate.filter_expr().iter().all(Option::is_none)
            && aggregate.limit_options().is_none()
            && aggregate.dynamic_expressions_produced().is_empty()
            && *aggregate.input_order_mode() == InputOrderMode::Linear
            && input.schema().field(column.index()).data_type() == &DataType::Utf8View;
        if !applies {
            return Ok(None);
        }
        let schema = aggregate.schema();
        let counts_are_int64 = schema
            .fields()
            .iter()
            .skip(1)
            .all(|field| field.data_type() == &DataType::Int64);
        if schema.fields().len() != 1 + aggregate.aggr_expr().len() || !counts_are_int64 {
            return Ok(None);
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            aggregate.properties().output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Some(Self {
            input: Arc::clone(input),
            column: column.index(),
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn with_input(&self, input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            input,
            column: self.column,
            schema: Arc::clone(&self.schema),
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

/// The (value, count) rows of one batch, in `schema` (the count repeated per count column).
fn count_batch(batch: &RecordBatch, column: usize, schema: &SchemaRef) -> Result<RecordBatch> {
    let values = batch.column(column);
    let Some(views) = values.as_string_view_opt() else {
        return internal_err!(
            "count per value: the group column is {}",
            values.data_type()
        );
    };
    let (groups, counts): (ArrayRef, Int64Array) = match distinct_views(views) {
        Some(DistinctViews { ids, first_rows }) => {
            let mut counts = vec![0i64; first_rows.len()];
            for &id in &ids {
                counts[id as usize] += 1;
            }
            // NULL rows carry id 0 in `ids`: take them back out of that group.
            let nulls = views.null_count() as i64;
            counts[0] -= nulls;
            let mut groups = take(views, &UInt32Array::from(first_rows), None)?;
            if nulls > 0 {
                // NULL is a group of its own, as in SQL's GROUP BY.
                groups = concat(&[
                    groups.as_ref(),
                    new_null_array(&DataType::Utf8View, 1).as_ref(),
                ])?;
                counts.push(nulls);
            }
            (groups, Int64Array::from(counts))
        }
        // Values that hardly repeat: each row is its own partial group.
        None => (
            Arc::clone(values),
            Int64Array::from(vec![1i64; views.len()]),
        ),
    };
    let rows = groups.len();
    let counts: ArrayRef = Arc::new(counts);
    let mut columns = vec![groups];
    columns.extend((1..schema.fields().len()).map(|_| Arc::clone(&counts)));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}

impl DisplayAs for CountPerValueExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let group = self.input.schema().field(self.column).name().clone();
        write!(f, "CountPerValueExec: gby=[{group}@{}]", self.column)
    }
}

impl ExecutionPlan for CountPerValueExec {
    fn name(&self) -> &'static str {
        "CountPerValueExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(self.with_input(input))),
            _ => internal_err!("CountPerValueExec has one input"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let (column, schema) = (self.column, Arc::clone(&self.schema));
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let counted = input.map(move |batch| {
            let _timer = metrics.elapsed_compute().timer();
            let counted = count_batch(&batch?, column, &schema)?;
            metrics.record_output(counted.num_rows());
            Ok(counted)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            counted,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
