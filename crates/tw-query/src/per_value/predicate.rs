//! [`PerValuePredicate`]: a `LIKE` family or regex test answered per distinct value of a
//! batch, or per entry of a dictionary column (see the parent module).

use std::sync::{Arc, Mutex, PoisonError};

use datafusion::arrow::array::{
    Array, ArrayData, ArrayRef, AsArray, BooleanArray, LargeStringArray, RecordBatch, StringArray,
    StringViewArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{HashMap, Result, ScalarValue, internal_err};
use datafusion::logical_expr::{
    ColumnarValue, Operator, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{self as physical, Column};
use datafusion::physical_expr_common::datum::apply_cmp;

use super::distinct::per_distinct_value;
use super::is_regex;

/// `value <operator> pattern` for a `LIKE` family or regex operator, answered per distinct
/// value of a `Utf8View` batch, or per entry of a dictionary batch, with DataFusion's own
/// evaluation.
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
    dictionaries: Mutex<RememberedDictionaries>,
}

/// A case folding, as DataFusion's `lower` and `upper` do it (Unicode, `str::to_lowercase` and
/// `str::to_uppercase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Fold {
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

/// The answers for the last few dictionaries seen (`dictionary_read/`), by their values:
/// the Parquet reader hands every batch of one column chunk the very same dictionary values,
/// so each chunk's dictionary is answered once, whatever its size.
#[derive(Default)]
struct RememberedDictionaries(Vec<(ScalarValue, ArrayData, ArrayRef)>);

/// Dictionaries remembered per predicate and thread of the query: each thread reads its own
/// file, and each row group of a file has its own dictionary.
const DICTIONARIES_PER_THREAD: usize = 4;

impl std::fmt::Debug for RememberedDictionaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} dictionaries", self.0.len())
    }
}

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
    pub(crate) fn new(operator: Operator, fold: Option<Fold>) -> Self {
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
            dictionaries: Mutex::default(),
        }
    }

    /// The answers for every entry of `values`, a dictionary's values, remembered for the
    /// next batches of the same dictionary (up to `capacity` dictionaries, the least recently
    /// used forgotten first).
    fn answer_dictionary(
        &self,
        values: &ArrayRef,
        pattern: &ScalarValue,
        capacity: usize,
    ) -> Result<ArrayRef> {
        let data = values.to_data();
        let position = |dictionaries: &RememberedDictionaries| {
            dictionaries
                .0
                .iter()
                .position(|(seen_pattern, seen, _)| seen_pattern == pattern && seen.ptr_eq(&data))
        };
        {
            let mut dictionaries = self
                .dictionaries
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(at) = position(&dictionaries) {
                // The most recently used last: forgetting takes the first.
                let entry = dictionaries.0.remove(at);
                let answers = Arc::clone(&entry.2);
                dictionaries.0.push(entry);
                return Ok(answers);
            }
        }
        // Answered outside the lock, as for values (`answer_distinct`).
        let answers = self.answer_distinct(cast(values, &DataType::Utf8View)?, pattern)?;
        let mut dictionaries = self
            .dictionaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Another thread may have answered the same dictionary meanwhile.
        if position(&dictionaries).is_none() {
            if dictionaries.0.len() >= capacity.max(1) {
                dictionaries.0.remove(0);
            }
            dictionaries
                .0
                .push((pattern.clone(), data, Arc::clone(&answers)));
        }
        Ok(answers)
    }

    /// The answers for `distinct` (each value once; NULL answered NULL), from memory where
    /// known.
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
                // A NULL value (a dictionary may hold one) is answered NULL, never tested nor
                // remembered: its slot's bytes are no value's.
                let Some(value) = value else {
                    answers.push(None);
                    continue;
                };
                let answer = known.answers.get(value).copied();
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
        if let (ColumnarValue::Array(values), ColumnarValue::Scalar(pattern)) = (value, pattern) {
            // A column read as a dictionary (`dictionary_read/`): its entries answered, then
            // spread to the rows by key (NULL keys give NULL).
            if let Some(dictionary) = values.as_any_dictionary_opt() {
                let threads = args.config_options.execution.target_partitions;
                let answers = self.answer_dictionary(
                    dictionary.values(),
                    pattern,
                    DICTIONARIES_PER_THREAD * threads,
                )?;
                let answers = take(answers.as_ref(), dictionary.keys(), None)?;
                return Ok(ColumnarValue::Array(answers));
            }
            if let Some(views) = values.as_string_view_opt()
                && let Some(answers) =
                    per_distinct_value(views, |distinct| self.answer_distinct(distinct, pattern))?
            {
                return Ok(ColumnarValue::Array(answers));
            }
        }
        self.row_by_row(value, pattern)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        BooleanArray, DictionaryArray, Int32Array, StringArray, StringViewArray,
    };
    use datafusion::arrow::datatypes::Int32Type;

    use super::super::distinct::tests::dictionary_like_views;
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
        invoke(
            &PerValuePredicate::new(operator, None),
            Arc::new(values.clone()),
            pattern,
        )
    }

    /// `udf` called as DataFusion calls it, on a batch of `values` (views or a dictionary).
    fn invoke(udf: &PerValuePredicate, values: ArrayRef, pattern: &str) -> BooleanArray {
        let rows = values.len();
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Array(values),
                ColumnarValue::Scalar(ScalarValue::Utf8View(Some(pattern.to_string()))),
            ],
            arg_fields: vec![],
            number_rows: rows,
            return_field: Arc::new(Field::new("answer", DataType::Boolean, true)),
            config_options: Arc::default(),
        };
        udf.invoke_with_args(args)
            .and_then(|answer| answer.into_array(rows))
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
                invoke(&udf, Arc::new(column.clone()), pattern),
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
    fn dictionaries_are_answered_per_entry_once_per_dictionary() {
        let values = [
            Some("curl kali"),
            None,
            Some("aws-cli"),
            Some("KALI"),
            Some(""),
        ];
        let keys: Vec<Option<&str>> = (0..600).map(|row| values[row % values.len()]).collect();
        let column: DictionaryArray<Int32Type> = keys.iter().copied().collect();
        let udf = PerValuePredicate::new(Operator::NotILikeMatch, Some(Fold::Lower));
        // Two batches of one dictionary (slices share its values), then another pattern.
        for (batch, pattern) in [
            (column.slice(0, 300), "%kali%"),
            (column.slice(300, 300), "%kali%"),
            (column.slice(0, 300), "%cli"),
        ] {
            let answers = invoke(&udf, Arc::new(batch.clone()), pattern);
            let views = cast(&batch, &DataType::Utf8View).expect("views");
            let expected = udf
                .row_by_row(
                    &ColumnarValue::Array(views),
                    &ColumnarValue::Scalar(ScalarValue::Utf8View(Some(pattern.to_string()))),
                )
                .and_then(|answer| answer.into_array(batch.len()))
                .expect("row by row");
            assert_eq!(&answers, expected.as_boolean(), "{pattern}");
        }
        let remembered = udf.dictionaries.lock().expect("not poisoned");
        assert_eq!(remembered.0.len(), 2, "one dictionary, two patterns");
    }

    #[test]
    fn dictionaries_holding_a_null_value_answer_it_null() {
        // Parquet's dictionaries never hold NULL, Arrow's may: a NULL entry must not stand for
        // the empty string, before or after it.
        let values = StringArray::from(vec![Some(""), Some("kali"), None]);
        let keys = Int32Array::from(vec![Some(2), Some(0), None, Some(1), Some(0), Some(2)]);
        let column = DictionaryArray::try_new(keys, Arc::new(values)).expect("dictionary");
        let udf = PerValuePredicate::new(Operator::NotILikeMatch, None);
        for _ in 0..2 {
            let answers = invoke(&udf, Arc::new(column.clone()), "%kali%");
            let expected =
                BooleanArray::from(vec![None, Some(true), None, Some(false), Some(true), None]);
            assert_eq!(answers, expected);
        }
        let known = udf.known.lock().expect("not poisoned");
        assert_eq!(known.answers.get(""), Some(&Some(true)));
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
