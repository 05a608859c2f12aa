//! Security SQL functions, registered in every query context.
//!
//! - `cidr_match(ip, cidr)` → boolean: whether the address is inside the network
//!   (IPv4 and IPv6; a bare address is a single host). NULL address → NULL; text that is
//!   not an address → false.
//! - `ip_is_private(ip)` → boolean: RFC 1918, loopback, link-local, carrier-grade NAT, IPv6
//!   unique-local and link-local. Not an address → false; NULL → NULL.
//! - `ip_version(ip)` → int: 4 or 6, NULL when the text is not an address (so
//!   `ip_version(x) IS NOT NULL` tests "is an IP").
//! - `json_get(json, path)` → text: the value at `path` (see [`json_path`]), strings
//!   unquoted, objects and arrays as compact JSON; `json_get_str`, `json_get_int`,
//!   `json_get_float`, `json_get_bool` return only values of their type. Missing path, JSON
//!   null, a value of another type or text that is not JSON → NULL.
//!
//! A CIDR or path written as a literal is checked when the query is planned: a bad one is
//! a query error (HTTP 400) that says what is wrong, not a silent all-false result. A bad
//! CIDR or path read from a column gives NULL for that row.

mod ip;
mod json_path;

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, internal_datafusion_err, plan_datafusion_err};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use crate::per_value::per_distinct_value;
use ip::{Cidr, parse_ip};
use json_path::{Extracted, JsonOutput, JsonPath};

/// Registers every function of this module in `ctx`.
pub(crate) fn register(ctx: &SessionContext) {
    let functions = [
        Function::CidrMatch,
        Function::IpIsPrivate,
        Function::IpVersion,
        Function::Json(JsonOutput::Text),
        Function::Json(JsonOutput::Str),
        Function::Json(JsonOutput::Int),
        Function::Json(JsonOutput::Float),
        Function::Json(JsonOutput::Bool),
    ];
    for function in functions {
        ctx.register_udf(ScalarUDF::from(SecurityUdf::new(function)));
    }
}

/// Which function a [`SecurityUdf`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Function {
    CidrMatch,
    IpIsPrivate,
    IpVersion,
    Json(JsonOutput),
}

impl Function {
    fn name(self) -> &'static str {
        match self {
            Self::CidrMatch => "cidr_match",
            Self::IpIsPrivate => "ip_is_private",
            Self::IpVersion => "ip_version",
            Self::Json(JsonOutput::Text) => "json_get",
            Self::Json(JsonOutput::Str) => "json_get_str",
            Self::Json(JsonOutput::Int) => "json_get_int",
            Self::Json(JsonOutput::Float) => "json_get_float",
            Self::Json(JsonOutput::Bool) => "json_get_bool",
        }
    }

    fn arity(self) -> usize {
        match self {
            Self::CidrMatch | Self::Json(_) => 2,
            Self::IpIsPrivate | Self::IpVersion => 1,
        }
    }

    fn return_type(self) -> DataType {
        match self {
            Self::CidrMatch | Self::IpIsPrivate | Self::Json(JsonOutput::Bool) => DataType::Boolean,
            Self::IpVersion => DataType::Int32,
            Self::Json(JsonOutput::Text | JsonOutput::Str) => DataType::Utf8,
            Self::Json(JsonOutput::Int) => DataType::Int64,
            Self::Json(JsonOutput::Float) => DataType::Float64,
        }
    }
}

/// One DataFusion scalar function over text arguments.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SecurityUdf {
    function: Function,
    signature: Signature,
}

impl SecurityUdf {
    fn new(function: Function) -> Self {
        Self {
            function,
            // Any string type (Utf8, LargeUtf8, Utf8View as Parquet reads them); NULL too.
            signature: Signature::string(function.arity(), Volatility::Immutable),
        }
    }

    /// Parses the second argument (CIDR or path) of `text`; the error names the function.
    fn check_pattern(&self, text: &str) -> Result<Pattern> {
        let parsed = match self.function {
            Function::CidrMatch => Cidr::parse(text).map(Pattern::Cidr),
            Function::Json(_) => JsonPath::parse(text).map(Pattern::Path),
            Function::IpIsPrivate | Function::IpVersion => Ok(Pattern::None),
        };
        parsed.map_err(|why| plan_datafusion_err!("{}: {why}", self.function.name()))
    }
}

/// The parsed second argument.
enum Pattern {
    None,
    Cidr(Cidr),
    Path(JsonPath),
}

impl ScalarUDFImpl for SecurityUdf {
    fn name(&self) -> &str {
        self.function.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.function.return_type())
    }

    /// Checks a literal CIDR or path while planning, so a typo fails the query even when no
    /// row reaches the function (and `EXPLAIN` reports it too).
    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        if let Some(Expr::Literal(value, _)) = args.get(1)
            && let Some(text) = string_scalar(value)
        {
            self.check_pattern(text)?;
        }
        Ok(ExprSimplifyResult::Original(args))
    }

    /// Per distinct value of the first argument when it is a column of repeating values and
    /// the pattern a literal (see `per_value/`): the same address or document is parsed
    /// once per batch, not once per row.
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(ColumnarValue::Array(first)) = args.args.first()
            && let Some(views) = first.as_string_view_opt()
            && args.args[1..]
                .iter()
                .all(|arg| matches!(arg, ColumnarValue::Scalar(_)))
            && let Some(answers) = per_distinct_value(views, |distinct| {
                let mut per_value = args.args.clone();
                let rows = distinct.len();
                per_value[0] = ColumnarValue::Array(distinct);
                self.row_by_row(&per_value, rows)?.into_array(rows)
            })?
        {
            return Ok(ColumnarValue::Array(answers));
        }
        self.row_by_row(&args.args, args.number_rows)
    }
}

impl SecurityUdf {
    fn row_by_row(&self, args: &[ColumnarValue], rows: usize) -> Result<ColumnarValue> {
        let first = strings(&args[0], rows)?;
        let second = match args.get(1) {
            None => Second::Const(Some(Pattern::None)),
            Some(ColumnarValue::Scalar(value)) => match string_scalar(value) {
                Some(text) => Second::Const(Some(self.check_pattern(text)?)),
                None => Second::Const(None),
            },
            Some(column) => Second::PerRow(strings(column, rows)?),
        };
        let output: ArrayRef = match self.function {
            Function::CidrMatch => Arc::new(
                (0..rows)
                    .map(|i| {
                        let ip = value(&first, i)?;
                        second.with(self, i, |pattern| match pattern {
                            Pattern::Cidr(cidr) => parse_ip(ip).is_some_and(|ip| cidr.contains(ip)),
                            _ => false,
                        })
                    })
                    .collect::<BooleanArray>(),
            ),
            Function::IpIsPrivate => Arc::new(
                (0..rows)
                    .map(|i| value(&first, i).map(|ip| parse_ip(ip).is_some_and(ip::is_private)))
                    .collect::<BooleanArray>(),
            ),
            Function::IpVersion => Arc::new(
                (0..rows)
                    .map(|i| value(&first, i).and_then(parse_ip).map(ip::version))
                    .collect::<Int32Array>(),
            ),
            Function::Json(output) => json_column(self, output, &first, &second, rows),
        };
        Ok(ColumnarValue::Array(output))
    }
}

/// The second argument: one parsed literal (None = SQL NULL) or a column parsed per row.
enum Second {
    Const(Option<Pattern>),
    PerRow(StringArray),
}

impl Second {
    /// Applies `f` to row `i`'s pattern; NULL when the pattern is NULL or (per row) invalid.
    fn with<T>(&self, udf: &SecurityUdf, i: usize, f: impl FnOnce(&Pattern) -> T) -> Option<T> {
        match self {
            Self::Const(pattern) => pattern.as_ref().map(f),
            Self::PerRow(column) => {
                let parsed = udf.check_pattern(value(column, i)?).ok()?;
                Some(f(&parsed))
            }
        }
    }
}

fn json_column(
    udf: &SecurityUdf,
    output: JsonOutput,
    documents: &StringArray,
    paths: &Second,
    rows: usize,
) -> ArrayRef {
    let extracted = (0..rows).map(|i| {
        let text = value(documents, i)?;
        // Text that is not JSON is NULL: `_overflow` and JSON-text columns hold other
        // values too, and one odd row must not fail a whole hunt.
        let document: serde_json::Value = serde_json::from_str(text).ok()?;
        paths
            .with(udf, i, |pattern| match pattern {
                Pattern::Path(path) => path.find(&document).and_then(|v| output.extract(v)),
                _ => None,
            })
            .flatten()
    });
    match output {
        JsonOutput::Text | JsonOutput::Str => Arc::new(
            extracted
                .map(|v| match v {
                    Some(Extracted::Text(s)) => Some(s),
                    _ => None,
                })
                .collect::<StringArray>(),
        ),
        JsonOutput::Int => Arc::new(
            extracted
                .map(|v| match v {
                    Some(Extracted::Int(n)) => Some(n),
                    _ => None,
                })
                .collect::<Int64Array>(),
        ),
        JsonOutput::Float => Arc::new(
            extracted
                .map(|v| match v {
                    Some(Extracted::Float(f)) => Some(f),
                    _ => None,
                })
                .collect::<Float64Array>(),
        ),
        JsonOutput::Bool => Arc::new(
            extracted
                .map(|v| match v {
                    Some(Extracted::Bool(b)) => Some(b),
                    _ => None,
                })
                .collect::<BooleanArray>(),
        ),
    }
}

/// The text of a string literal; None for NULL or a non-string literal.
fn string_scalar(value: &ScalarValue) -> Option<&str> {
    match value {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => s.as_deref(),
        ScalarValue::Dictionary(_, inner) => string_scalar(inner),
        _ => None,
    }
}

/// An argument as `rows` Utf8 values, whatever string type it arrived as.
fn strings(value: &ColumnarValue, rows: usize) -> Result<StringArray> {
    let array = value.to_array(rows)?;
    let utf8 = cast(&array, &DataType::Utf8)?;
    utf8.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| internal_datafusion_err!("cast to Utf8 gave {}", utf8.data_type()))
}

fn value(column: &StringArray, i: usize) -> Option<&str> {
    column.is_valid(i).then(|| column.value(i))
}
