//! Work done once per distinct value of a batch instead of once per row: string predicates
//! here, `count(*) GROUP BY` one string column in `count.rs`.
//!
//! Event data repeats itself: a user agent, an event name or an error code takes a few hundred
//! values over millions of rows, and the lake's Parquet writer stores such columns
//! dictionary-encoded. Tables read strings as `Utf8View` (`table.rs`), and the Parquet reader
//! gives every row of one dictionary entry the very same 16-byte view within a batch (it points
//! into the dictionary page). So a predicate that costs a regex per row — arrow evaluates
//! `ILIKE '%kali%'` with one — can be answered per distinct view and spread to the rows: at
//! 10M CloudTrail events that is a few hundred evaluations per batch instead of 8,192.
//!
//! [`PerValuePredicates`] is the logical optimizer rule that puts this in place: in filters
//! (`WHERE`, and the copies pushed into table scans and from there into the Parquet reader) it
//! replaces `LIKE`, `ILIKE`, the regex operators `~ ~* !~ !~*` and their negations that have
//! a literal pattern by [`PerValuePredicate`], which answers with the very kernel DataFusion
//! would use, only on the distinct values. The value may be `lower(column)` or
//! `upper(column)` (how many users spell a case-insensitive match): the case is then folded
//! per distinct value too, instead of building a folded copy of every row before the test.
//! A case-sensitive `LIKE` pattern with a literal prefix (`LIKE 'Get%'`) is left as it is:
//! DataFusion prunes row groups by its prefix, and a prefix test per row is cheap. A batch
//! whose values hardly repeat (plain-encoded pages, hot rows, a sparse column whose present
//! values are all different) falls back to the kernel row by row, usually after hashing its
//! first few hundred non-NULL rows. Where the scan reads the column as the file's dictionary
//! (`dictionary_read/`), the predicate answers the dictionary's entries instead, once per
//! dictionary, and each row looks up its key's answer. The same distinct views (`distinct.rs`)
//! serve the security functions (`functions/`) and the per-value count
//! ([`CountPerValueRule`]).

mod count;
mod distinct;
mod predicate;

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::{Like, ScalarFunction};
use datafusion::logical_expr::{Expr, LogicalPlan, Operator, ScalarUDF};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

pub(crate) use count::CountPerValueRule;
pub(crate) use distinct::per_distinct_value;
pub(crate) use predicate::{Fold, PerValuePredicate};

/// The optimizer rule: string predicates with a literal pattern in filters →
/// [`PerValuePredicate`].
///
/// Only `Filter` and `TableScan` nodes are rewritten: their expressions name no output
/// column, so the plan's schema stays as it was, and they are where a predicate meets every
/// row.
#[derive(Debug, Default)]
pub(crate) struct PerValuePredicates;

impl OptimizerRule for PerValuePredicates {
    fn name(&self) -> &str {
        "string_predicates_per_value"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !matches!(plan, LogicalPlan::Filter(_) | LogicalPlan::TableScan(_)) {
            return Ok(Transformed::no(plan));
        }
        plan.map_expressions(|expr| expr.transform_up(predicate_per_value))
    }
}

/// `expr` with a rewritable string predicate replaced by a call of [`PerValuePredicate`].
fn predicate_per_value(expr: Expr) -> Result<Transformed<Expr>> {
    let (operator, value, pattern) = match expr {
        Expr::Like(like) => match like_operator(&like) {
            Some(operator) => (operator, like.expr, like.pattern),
            None => return Ok(Transformed::no(Expr::Like(like))),
        },
        Expr::BinaryExpr(binary)
            if is_regex(binary.op) && literal_text(&binary.right).is_some() =>
        {
            (binary.op, binary.left, binary.right)
        }
        other => return Ok(Transformed::no(other)),
    };
    let (fold, value) = match case_folded(&value) {
        Some((fold, inner)) => (Some(fold), inner.clone()),
        None => (None, *value),
    };
    let function = ScalarUDF::from(PerValuePredicate::new(operator, fold));
    Ok(Transformed::yes(Expr::ScalarFunction(
        ScalarFunction::new_udf(Arc::new(function), vec![value, *pattern]),
    )))
}

/// `lower(x)` or `upper(x)` as the fold and `x`.
fn case_folded(expr: &Expr) -> Option<(Fold, &Expr)> {
    let Expr::ScalarFunction(call) = expr else {
        return None;
    };
    let fold = match call.func.name() {
        "lower" => Fold::Lower,
        "upper" => Fold::Upper,
        _ => return None,
    };
    match call.args.as_slice() {
        [inner] => Some((fold, inner)),
        _ => None,
    }
}

/// The comparison operator of `like`, when it is worth and safe to answer per value.
fn like_operator(like: &Like) -> Option<Operator> {
    // DataFusion's kernels know only the backslash escape; anything else stays its error.
    if like.escape_char.is_some_and(|escape| escape != '\\') {
        return None;
    }
    let pattern = literal_text(&like.pattern)?;
    // A literal prefix on a plain column prunes row groups by statistics (left to DataFusion);
    // on a folded column nothing prunes.
    if !like.case_insensitive
        && !pattern.starts_with(['%', '_'])
        && case_folded(&like.expr).is_none()
    {
        return None;
    }
    Some(match (like.negated, like.case_insensitive) {
        (false, false) => Operator::LikeMatch,
        (false, true) => Operator::ILikeMatch,
        (true, false) => Operator::NotLikeMatch,
        (true, true) => Operator::NotILikeMatch,
    })
}

fn is_regex(operator: Operator) -> bool {
    matches!(
        operator,
        Operator::RegexMatch
            | Operator::RegexIMatch
            | Operator::RegexNotMatch
            | Operator::RegexNotIMatch
    )
}

/// The text of a non-NULL string literal.
fn literal_text(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Literal(
            ScalarValue::Utf8(Some(text))
            | ScalarValue::Utf8View(Some(text))
            | ScalarValue::LargeUtf8(Some(text)),
            _,
        ) => Some(text),
        _ => None,
    }
}
