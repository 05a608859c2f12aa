//! Field-to-field comparison: how two values of the same event compare (`equals_field`,
//! `not_equals_field`, `gt_field`, `gte_field`, `lt_field`, `lte_field`).
//!
//! Both evaluation paths — one event at a time ([`crate::matcher::Matcher::eval`]) and a chunk
//! at a time (`crate::batch`) — decide through [`field_ref_holds`], so they cannot disagree.
//!
//! The rule (documented in `docs/rules.md`):
//! - both values must be present, non-null scalars; a missing, null, object or array side makes
//!   every relation false — so `not_equals_field` is not `not: {equals_field}`, which holds when
//!   a side is missing;
//! - equality: numbers by value, anything else by its text (`5` equals `"5"`), as `equals`;
//! - ordering: both values must be of the same kind, and compare within it: *numbers* (JSON
//!   numbers, or strings that read as numbers, as `gt` reads them) by value; *times* (strings
//!   that read as instants: RFC 3339, or the same without an offset meaning UTC) by instant, to
//!   the nanosecond; *text* (any other string) by Unicode code point, lowercased first with
//!   `ignore_case`. Mixed kinds (a number and a time, a time and a text, booleans) never hold.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Number, Value};

use crate::matcher::{TextBuffer, number_of, numbers_equal, scalar_text};

/// How the value of a field must relate to the value of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldRelation {
    Equal,
    NotEqual,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// Whether `a` (the field's value) relates to `b` (the other field's) as `relation` says;
/// `None` is an absent field.
pub(crate) fn field_ref_holds(
    a: Option<&Value>,
    b: Option<&Value>,
    relation: FieldRelation,
    ignore_case: bool,
) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    if !is_scalar(a) || !is_scalar(b) {
        return false;
    }
    let ordered = |wanted: fn(Ordering) -> bool| order(a, b, ignore_case).is_some_and(wanted);
    match relation {
        FieldRelation::Equal => values_equal(a, b, ignore_case),
        FieldRelation::NotEqual => !values_equal(a, b, ignore_case),
        FieldRelation::Gt => ordered(Ordering::is_gt),
        FieldRelation::Gte => ordered(Ordering::is_ge),
        FieldRelation::Lt => ordered(Ordering::is_lt),
        FieldRelation::Lte => ordered(Ordering::is_le),
    }
}

fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// Equality of two scalars: numbers by value, everything else as text.
fn values_equal(a: &Value, b: &Value, ignore_case: bool) -> bool {
    if let (Value::Number(x), Value::Number(y)) = (a, b) {
        return numbers_equal(x, y);
    }
    let (mut buffer_a, mut buffer_b) = (TextBuffer::new(), TextBuffer::new());
    match (scalar_text(a, &mut buffer_a), scalar_text(b, &mut buffer_b)) {
        (Some(x), Some(y)) if ignore_case => {
            if x.is_ascii() && y.is_ascii() {
                x.eq_ignore_ascii_case(y)
            } else {
                x.to_lowercase() == y.to_lowercase()
            }
        }
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// A scalar as ordering sees it (see the module documentation).
enum Ordered<'a> {
    /// A JSON number, kept exact for integer comparisons.
    Json(&'a Number),
    /// A string that reads as a number.
    Parsed(f64),
    Time(DateTime<Utc>),
    Text(&'a str),
    Unordered,
}

impl<'a> Ordered<'a> {
    fn of(value: &'a Value) -> Self {
        match value {
            Value::Number(number) => Self::Json(number),
            Value::String(text) => {
                if let Some(number) = number_of(value) {
                    Self::Parsed(number)
                } else if let Some(time) = instant(text) {
                    Self::Time(time)
                } else {
                    Self::Text(text)
                }
            }
            _ => Self::Unordered,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Json(number) => number.as_f64(),
            Self::Parsed(number) => Some(*number),
            _ => None,
        }
    }
}

/// How `a` orders against `b`; `None` when they are not of one ordered kind.
fn order(a: &Value, b: &Value, ignore_case: bool) -> Option<Ordering> {
    match (Ordered::of(a), Ordered::of(b)) {
        (Ordered::Json(x), Ordered::Json(y)) => compare_json_numbers(x, y),
        (
            x @ (Ordered::Json(_) | Ordered::Parsed(_)),
            y @ (Ordered::Json(_) | Ordered::Parsed(_)),
        ) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Ordered::Time(x), Ordered::Time(y)) => Some(x.cmp(&y)),
        (Ordered::Text(x), Ordered::Text(y)) => Some(compare_text(x, y, ignore_case)),
        _ => None,
    }
}

/// Integers exactly (no rounding above 2^53, as equality), other numbers as `f64`.
fn compare_json_numbers(x: &Number, y: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
        return Some(x.cmp(&y));
    }
    // One integer above i64::MAX, the other negative.
    let negative = |n: &Number| n.as_i64().is_some_and(|v| v < 0);
    if x.is_u64() && negative(y) {
        return Some(Ordering::Greater);
    }
    if negative(x) && y.is_u64() {
        return Some(Ordering::Less);
    }
    x.as_f64()?.partial_cmp(&y.as_f64()?)
}

fn compare_text(x: &str, y: &str, ignore_case: bool) -> Ordering {
    if !ignore_case {
        return x.cmp(y);
    }
    if x.is_ascii() && y.is_ascii() {
        let (x, y) = (x.bytes(), y.bytes());
        x.map(|b| b.to_ascii_lowercase())
            .cmp(y.map(|b| b.to_ascii_lowercase()))
    } else {
        x.to_lowercase().cmp(&y.to_lowercase())
    }
}

/// The instant a string spells, in the spellings the time operators accept
/// (`tw_core::parse_time_ms`), but to the nanosecond: two times in one millisecond still order.
fn instant(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    // Every accepted spelling starts with the year: most text is ruled out without parsing.
    if !text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn holds(a: Value, b: Value, relation: FieldRelation) -> bool {
        field_ref_holds(Some(&a), Some(&b), relation, false)
    }

    #[test]
    fn integers_order_exactly_beyond_f64_precision() {
        // 2^53 + 1 and 2^53 are one f64.
        let (big, bigger) = (
            json!(9_007_199_254_740_992_u64),
            json!(9_007_199_254_740_993_u64),
        );
        assert!(holds(bigger.clone(), big.clone(), FieldRelation::Gt));
        assert!(!holds(big.clone(), bigger.clone(), FieldRelation::Gte));
        assert!(holds(json!(u64::MAX), json!(-1), FieldRelation::Gt));
        assert!(holds(json!(-1), json!(u64::MAX), FieldRelation::Lt));
    }

    #[test]
    fn times_order_below_the_millisecond() {
        let (early, late) = (
            json!("2026-01-01T00:00:00.000001Z"),
            json!("2026-01-01T00:00:00.000002Z"),
        );
        assert!(holds(early.clone(), late.clone(), FieldRelation::Lt));
        assert!(!holds(early, late, FieldRelation::Gte));
    }

    #[test]
    fn only_the_spellings_of_the_time_operators_are_times() {
        for text in [
            "2026-01-01T00:00:00Z",
            "2026-01-01T02:00:00+02:00",
            "2026-01-01T00:00:00",
            "2026-01-01 00:00:00.5",
            " 2026-01-01T00:00:00Z ",
        ] {
            assert!(instant(text).is_some(), "{text}");
        }
        for text in ["2026-01-01", "yesterday", "", "T2026"] {
            assert!(instant(text).is_none(), "{text}");
        }
    }
}
