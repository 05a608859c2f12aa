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
//! first few hundred non-NULL rows. The same distinct views (`distinct.rs`) serve the security
//! functions (`functions/`) and the per-value count ([`CountPerValueRule`]).

mod count;
mod distinct;

use std::sync::{Arc, Mutex, PoisonError};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, LargeStringArray, RecordBatch, StringArray,
    StringViewArray, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{HashMap, Result, ScalarValue, internal_err};
use datafusion::logical_expr::expr::{Like, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{self as physical, Column};
use datafusion::physical_expr_common::datum::apply_cmp;

pub(crate) use count::CountPerValueRule;
pub(crate) use distinct::per_distinct_value;

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

/// `value <operator> pattern` for a `LIKE` family or regex operator, answered per distinct
/// value of a `Utf8View` batch with DataFusion's own evaluation.
///
/// One instance serves one expression of one query. It remembers the answer for every value
/// it has tested (up to [`MAX_KNOWN_ANSWERS`]): arrow compiles the pattern into a regex on
/// every call, which for a few hundred distinct values costs more than the tests themselves,
/// so a value seen in an earlier batch is not tested again.
#[derive(Debug)]
pub(crate) struct PerValuePredicate {
    operator: Operator,
    /// The case folding applied to the value before the test (`lower(x) LIKE ...`).
    fold: Option<Fold>,
    name: String,
    signature: Signature,
    known: Mutex<KnownAnswers>,
}

/// A case folding, as DataFusion's `lower` and `upper` do it (Unicode, `str::to_lowercase` and
/// `str::to_uppercase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fold {
    Lower,
    Upper,
}

impl Fold {
    fn apply(self, text: &str) -> String {
        match self {
            Self::Lower => text.to_lowercase(),
            Self::Upper => text.to_uppercase(),
        }
    }

    /// `values` folded, of the same string type.
    fn apply_to(self, values: &ArrayRef) -> Result<ArrayRef> {
        fn folded<'a, A>(texts: impl Iterator<Item = Option<&'a str>>, fold: Fold) -> ArrayRef
        where
            A: FromIterator<Option<String>> + Array + 'static,
        {
            Arc::new(
                texts
                    .map(|text| text.map(|text| fold.apply(text)))
                    .collect::<A>(),
            )
        }
        Ok(match values.data_type() {
            DataType::Utf8View => folded::<StringViewArray>(values.as_string_view().iter(), self),
            DataType::Utf8 => folded::<StringArray>(values.as_string::<i32>().iter(), self),
            DataType::LargeUtf8 => {
                folded::<LargeStringArray>(values.as_string::<i64>().iter(), self)
            }
            other => return internal_err!("cannot fold the case of {other}"),
        })
    }
}

/// Answers by value text, for one pattern.
#[derive(Debug, Default)]
struct KnownAnswers {
    pattern: Option<ScalarValue>,
    answers: HashMap<String, Option<bool>>,
}

/// Values remembered per predicate and query; past this, new values are tested per batch.
const MAX_KNOWN_ANSWERS: usize = 65_536;

// Equality and hash of the function as DataFusion compares plans: the operator and folding
// (the pattern is the second argument), not what it has remembered.
impl PartialEq for PerValuePredicate {
    fn eq(&self, other: &Self) -> bool {
        (self.operator, self.fold) == (other.operator, other.fold)
    }
}

impl Eq for PerValuePredicate {}

impl std::hash::Hash for PerValuePredicate {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.operator.hash(state);
        self.fold.hash(state);
    }
}

impl PerValuePredicate {
    fn new(operator: Operator, fold: Option<Fold>) -> Self {
        let test = match operator {
            Operator::LikeMatch => "like",
            Operator::ILikeMatch => "ilike",
            Operator::NotLikeMatch => "not_like",
            Operator::NotILikeMatch => "not_ilike",
            Operator::RegexMatch => "regex_match",
            Operator::RegexIMatch => "regex_imatch",
            Operator::RegexNotMatch => "regex_not_match",
            _ => "regex_not_imatch",
        };
        // The plan shows the folding: `lower_like_per_value(userAgent, '%kali%')`.
        let name = match fold {
            None => format!("{test}_per_value"),
            Some(Fold::Lower) => format!("lower_{test}_per_value"),
            Some(Fold::Upper) => format!("upper_{test}_per_value"),
        };
        Self {
            operator,
            fold,
            name,
            // Arguments arrive already coerced: the rule runs after type coercion.
            signature: Signature::any(2, Volatility::Immutable),
            known: Mutex::default(),
        }
    }

    /// The answers for `distinct` (non-NULL values, each once), from memory where known.
    fn answer_distinct(&self, distinct: ArrayRef, pattern: &ScalarValue) -> Result<ArrayRef> {
        let Some(values) = distinct.as_string_view_opt() else {
            return internal_err!("{}: distinct values are not string views", self.name());
        };
        let mut answers: Vec<Option<bool>> = Vec::with_capacity(values.len());
        let mut unknown: Vec<u32> = Vec::new();
        {
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            if known.pattern.as_ref() != Some(pattern) {
                *known = KnownAnswers {
                    pattern: Some(pattern.clone()),
                    answers: HashMap::default(),
                };
            }
            for (index, value) in values.iter().enumerate() {
                let answer = value.and_then(|value| known.answers.get(value).copied());
                if answer.is_none() {
                    unknown.push(index as u32);
                }
                answers.push(answer.flatten());
            }
        }
        if unknown.is_empty() {
            return Ok(Arc::new(BooleanArray::from(answers)));
        }
        // Tested outside the lock: the other partitions' batches need not wait for a compile.
        let subset = take(values, &UInt32Array::from(unknown.clone()), None)?;
        let tested = self
            .row_by_row(
                &ColumnarValue::Array(subset),
                &ColumnarValue::Scalar(pattern.clone()),
            )?
            .into_array(unknown.len())?;
        let tested = tested.as_boolean();
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        for (position, &index) in unknown.iter().enumerate() {
            let answer = tested.is_valid(position).then(|| tested.value(position));
            answers[index as usize] = answer;
            if known.answers.len() < MAX_KNOWN_ANSWERS && known.pattern.as_ref() == Some(pattern) {
                known
                    .answers
                    .insert(values.value(index as usize).to_string(), answer);
            }
        }
        Ok(Arc::new(BooleanArray::from(answers)))
    }

    /// What DataFusion computes for `value <operator> pattern`, row by row.
    fn row_by_row(&self, value: &ColumnarValue, pattern: &ColumnarValue) -> Result<ColumnarValue> {
        if let Some(fold) = self.fold {
            let folded = match value {
                ColumnarValue::Array(values) => ColumnarValue::Array(fold.apply_to(values)?),
                ColumnarValue::Scalar(scalar) => {
                    let values = fold.apply_to(&scalar.to_array()?)?;
                    ColumnarValue::Scalar(ScalarValue::try_from_array(&values, 0)?)
                }
            };
            return self.test(&folded, pattern);
        }
        self.test(value, pattern)
    }

    /// `value <operator> pattern` with DataFusion's kernels.
    fn test(&self, value: &ColumnarValue, pattern: &ColumnarValue) -> Result<ColumnarValue> {
        if !is_regex(self.operator) {
            return apply_cmp(self.operator, value, pattern);
        }
        // The regex kernels are reached through DataFusion's physical binary expression.
        let ColumnarValue::Scalar(pattern) = pattern else {
            return internal_err!("{}: the pattern is not a literal", self.name());
        };
        let values = value.to_array(1)?;
        let rows = values.len();
        let schema = Schema::new(vec![Field::new("value", values.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![values])?;
        let answers = physical::BinaryExpr::new(
            Arc::new(Column::new("value", 0)),
            self.operator,
            physical::lit(pattern.clone()),
        )
        .evaluate(&batch)?;
        match value {
            ColumnarValue::Array(_) => Ok(answers),
            ColumnarValue::Scalar(_) => Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &answers.into_array(rows)?,
                0,
            )?)),
        }
    }
}

impl ScalarUDFImpl for PerValuePredicate {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value, pattern] = args.args.as_slice() else {
            return internal_err!("{} takes 2 arguments, got {}", self.name(), args.args.len());
        };
        if let (ColumnarValue::Array(values), ColumnarValue::Scalar(pattern)) = (value, pattern)
            && let Some(views) = values.as_string_view_opt()
            && let Some(answers) =
                per_distinct_value(views, |distinct| self.answer_distinct(distinct, pattern))?
        {
            return Ok(ColumnarValue::Array(answers));
        }
        self.row_by_row(value, pattern)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{BooleanArray, StringArray, StringViewArray};
    use datafusion::arrow::compute::cast;

    use super::distinct::tests::dictionary_like_views;
    use super::*;

    fn row_by_row(operator: Operator, values: &StringViewArray, pattern: &str) -> BooleanArray {
        let pattern = ColumnarValue::Scalar(ScalarValue::Utf8View(Some(pattern.to_string())));
        let values = ColumnarValue::Array(Arc::new(values.clone()));
        PerValuePredicate::new(operator, None)
            .row_by_row(&values, &pattern)
            .and_then(|answer| answer.into_array(1))
            .expect("kernel")
            .as_boolean()
            .clone()
    }

    fn per_value(operator: Operator, values: &StringViewArray, pattern: &str) -> BooleanArray {
        invoke(&PerValuePredicate::new(operator, None), values, pattern)
    }

    fn invoke(udf: &PerValuePredicate, values: &StringViewArray, pattern: &str) -> BooleanArray {
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Array(Arc::new(values.clone())),
                ColumnarValue::Scalar(ScalarValue::Utf8View(Some(pattern.to_string()))),
            ],
            arg_fields: vec![],
            number_rows: values.len(),
            return_field: Arc::new(datafusion::arrow::datatypes::Field::new(
                "answer",
                DataType::Boolean,
                true,
            )),
            config_options: Arc::default(),
        };
        udf.invoke_with_args(args)
            .and_then(|answer| answer.into_array(values.len()))
            .expect("per value")
            .as_boolean()
            .clone()
    }

    #[test]
    fn answers_equal_the_kernel_row_by_row() {
        let values = [
            Some("Mozilla/5.0 (X11; Kali Linux x86_64) curl"),
            Some("aws-cli/2.15.0 Python/3.11"),
            None,
            Some(""),
            Some("KALI"),
            Some("short kali"),
            Some("Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#kali"),
        ];
        let column = dictionary_like_views(&values, 1000);
        let like_patterns = ["%kali%", "%Kali%", "%", "", "_", "%#kali", "K%I"];
        let regex_patterns = [
            "kali",
            "^K",
            "linux#kali$",
            "(?i)python",
            "^$",
            "x86_64\\)$",
        ];
        let cases = [
            (Operator::LikeMatch, &like_patterns[..]),
            (Operator::ILikeMatch, &like_patterns[..]),
            (Operator::NotLikeMatch, &like_patterns[..]),
            (Operator::NotILikeMatch, &like_patterns[..]),
            (Operator::RegexMatch, &regex_patterns[..]),
            (Operator::RegexIMatch, &regex_patterns[..]),
            (Operator::RegexNotMatch, &regex_patterns[..]),
            (Operator::RegexNotIMatch, &regex_patterns[..]),
        ];
        for (operator, patterns) in cases {
            for &pattern in patterns {
                assert_eq!(
                    per_value(operator, &column, pattern),
                    row_by_row(operator, &column, pattern),
                    "{operator} {pattern:?}"
                );
            }
        }
        assert_eq!(
            per_value(Operator::RegexIMatch, &column, "KALI").true_count(),
            (0..1000)
                .filter(|row| values[row % values.len()]
                    .is_some_and(|v| v.to_lowercase().contains("kali")))
                .count()
        );
        // NULL rows stay NULL, the empty string is a value.
        let answer = per_value(Operator::NotILikeMatch, &column, "%kali%");
        assert!(answer.is_null(2));
        assert!(answer.value(3));
    }

    #[test]
    fn remembered_answers_follow_the_pattern() {
        let udf = PerValuePredicate::new(Operator::ILikeMatch, None);
        let first = dictionary_like_views(&[Some("kali one"), Some("other"), None], 100);
        let second =
            dictionary_like_views(&[Some("other"), Some("KALI two"), Some("kali one")], 99);
        for (column, pattern) in [
            (&first, "%kali%"),
            (&second, "%kali%"),
            (&second, "%other%"),
            (&first, "%kali%"),
        ] {
            assert_eq!(
                invoke(&udf, column, pattern),
                row_by_row(Operator::ILikeMatch, column, pattern),
                "{pattern}"
            );
        }
        // The last pattern change started afresh: the first column's two values.
        let known = udf.known.lock().expect("not poisoned");
        assert_eq!(known.answers.len(), 2);
        assert_eq!(known.answers.get("kali one"), Some(&Some(true)));
    }

    #[test]
    fn views_of_plain_strings_are_answered_right() {
        // Hot rows cast to views from plain strings: equal values get different views, so a
        // batch of distinct views is answered row by row (and right).
        let hot = cast(
            &StringArray::from_iter_values((0..1000).map(|i| format!("curl kali {}", i % 3))),
            &DataType::Utf8View,
        )
        .expect("cast");
        assert_eq!(
            per_value(Operator::ILikeMatch, hot.as_string_view(), "%KALI 1"),
            row_by_row(Operator::ILikeMatch, hot.as_string_view(), "%KALI 1")
        );
    }
}
