//! The compiled form of a condition and its evaluation against one event.
//!
//! Evaluation never allocates for ASCII data: field values are borrowed from the event,
//! numbers are rendered into a stack buffer when a text comparison needs them, literals of
//! `ignore_case` operators are lowercased once at compile time. Only a case-insensitive text
//! operator on non-ASCII text falls back to lowercasing the field value into a new string.
//!
//! Arrays: when the value at a path is an array, a leaf holds if any element satisfies it
//! (nested arrays are searched too). `exists` looks at the value itself, not its elements.
//! A keyword (any-field) leaf searches every scalar of the event, objects and arrays included.

use std::fmt::Write as _;
use std::net::IpAddr;

use regex::Regex;
use serde_json::{Number, Value};

use crate::cidr::Cidr;
use crate::field_ref::{FieldRelation, field_ref_holds};
use crate::wildcard::{Wildcard, find};

/// A compiled condition; leaves refer to field paths by index into the rule's path table.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    All(Vec<Matcher>),
    Any(Vec<Matcher>),
    Not(Box<Matcher>),
    /// At least `n` of the items hold (`2 of sel*`).
    AtLeast(usize, Vec<Matcher>),
    Leaf {
        path: usize,
        test: Test,
    },
    /// `path` resolves to the whole event; any scalar anywhere in it satisfies `test`.
    AnyField {
        path: usize,
        test: Test,
    },
    /// The values at two paths relate as `relation` says ([`crate::field_ref`]).
    FieldRef {
        path: usize,
        other: usize,
        relation: FieldRelation,
        ignore_case: bool,
    },
}

/// What a leaf checks on the value it resolved.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    Equals(Literal),
    In(Vec<Literal>),
    Text {
        kind: TextKind,
        needles: Vec<Box<str>>,
        ignore_case: bool,
    },
    Regex(Regex),
    Exists(bool),
    Compare {
        op: CompareOp,
        bound: f64,
    },
    Cidr(Vec<Cidr>),
    /// One of the patterns matches the whole text.
    Wildcard(Vec<Wildcard>),
    /// The value read as a time (Unix milliseconds) compared with `bound_ms`.
    Time {
        op: CompareOp,
        bound_ms: i64,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum TextKind {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum CompareOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// An operand of `equals` / `in`, prepared for fast comparison.
#[derive(Debug, Clone)]
pub(crate) enum Literal {
    /// Lowercased already when `ignore_case`.
    Str {
        text: Box<str>,
        ignore_case: bool,
    },
    /// A number and its JSON spelling (for string fields, compared as text).
    Num {
        number: Number,
        text: Box<str>,
    },
    Bool(bool),
}

impl Literal {
    /// Prepares a scalar operand; `None` for arrays, objects and null (refused by the parser).
    pub(crate) fn new(value: &Value, ignore_case: bool) -> Option<Self> {
        match value {
            Value::String(text) if ignore_case => Some(Self::Str {
                text: text.to_lowercase().into(),
                ignore_case,
            }),
            Value::String(text) => Some(Self::Str {
                text: text.as_str().into(),
                ignore_case,
            }),
            Value::Number(number) => Some(Self::Num {
                number: number.clone(),
                text: number.to_string().into(),
            }),
            Value::Bool(flag) => Some(Self::Bool(*flag)),
            _ => None,
        }
    }

    fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Self::Str { text, ignore_case }, _) => {
                let mut buffer = TextBuffer::new();
                match scalar_text(value, &mut buffer) {
                    Some(field) if *ignore_case => eq_ignore_case(field, text),
                    Some(field) => field == &**text,
                    None => false,
                }
            }
            (Self::Num { number, .. }, Value::Number(field)) => numbers_equal(number, field),
            (Self::Num { text, .. }, Value::String(field)) => field == &**text,
            (Self::Bool(flag), Value::Bool(field)) => flag == field,
            (Self::Bool(flag), Value::String(field)) => {
                field == if *flag { "true" } else { "false" }
            }
            _ => false,
        }
    }
}

/// Numeric equality: exact for two integers (no precision loss above 2^53), else as f64.
pub(crate) fn numbers_equal(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// A stack buffer for the text of a number, so comparing numbers as text does not allocate.
pub(crate) struct TextBuffer {
    bytes: [u8; 64],
    len: usize,
}

impl TextBuffer {
    pub(crate) fn new() -> Self {
        Self {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl std::fmt::Write for TextBuffer {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let end = self.len + text.len();
        if end > self.bytes.len() {
            return Err(std::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The text of a scalar: strings as they are, numbers and booleans in JSON spelling.
pub(crate) fn scalar_text<'a>(value: &'a Value, buffer: &'a mut TextBuffer) -> Option<&'a str> {
    match value {
        Value::String(text) => Some(text),
        Value::Bool(true) => Some("true"),
        Value::Bool(false) => Some("false"),
        Value::Number(number) => {
            write!(buffer, "{number}").ok()?;
            std::str::from_utf8(&buffer.bytes[..buffer.len]).ok()
        }
        _ => None,
    }
}

/// `field` equals `lowered` (already lowercase) ignoring case.
fn eq_ignore_case(field: &str, lowered: &str) -> bool {
    // Byte-wise ASCII folding first: it answers most comparisons (different lengths, or equal
    // up to ASCII case) without scanning the text for non-ASCII bytes.
    if field.eq_ignore_ascii_case(lowered) {
        return true;
    }
    if field.is_ascii() {
        false
    } else {
        field
            .chars()
            .flat_map(char::to_lowercase)
            .eq(lowered.chars())
    }
}

/// `ignore_case` requires an ASCII `field` (the caller lowers non-ASCII text first) and a
/// lowercased `needle`.
fn text_test(kind: TextKind, field: &str, needle: &str, ignore_case: bool) -> bool {
    if !ignore_case {
        return match kind {
            TextKind::Contains => field.contains(needle),
            TextKind::StartsWith => field.starts_with(needle),
            TextKind::EndsWith => field.ends_with(needle),
        };
    }
    if !needle.is_ascii() {
        // An ASCII text cannot hold a non-ASCII needle.
        return false;
    }
    let (hay, pin) = (field.as_bytes(), needle.as_bytes());
    if pin.len() > hay.len() {
        return false;
    }
    match kind {
        TextKind::Contains => find(hay, pin, true).is_some(),
        TextKind::StartsWith => hay[..pin.len()].eq_ignore_ascii_case(pin),
        TextKind::EndsWith => hay[hay.len() - pin.len()..].eq_ignore_ascii_case(pin),
    }
}

/// A number, or a string that reads as one (what `gt`/`lt` compare).
pub(crate) fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok().filter(|n| !n.is_nan()),
        _ => None,
    }
}

impl Test {
    /// Whether the value at the leaf's path (`None` when absent) satisfies the test.
    pub(crate) fn holds(&self, value: Option<&Value>) -> bool {
        match (self, value) {
            (Self::Exists(wanted), value) => value.is_some_and(|v| !v.is_null()) == *wanted,
            (_, None | Some(Value::Null)) => false,
            (_, Some(value)) => self.holds_on(value),
        }
    }

    fn holds_on(&self, value: &Value) -> bool {
        match value {
            Value::Array(items) => items.iter().any(|item| self.holds_on(item)),
            Value::Object(_) | Value::Null => false,
            scalar => self.holds_on_scalar(scalar),
        }
    }

    fn holds_on_scalar(&self, value: &Value) -> bool {
        match self {
            Self::Equals(literal) => literal.matches(value),
            Self::In(literals) => literals.iter().any(|literal| literal.matches(value)),
            Self::Text {
                kind,
                needles,
                ignore_case,
            } => {
                let mut buffer = TextBuffer::new();
                let Some(text) = scalar_text(value, &mut buffer) else {
                    return false;
                };
                if *ignore_case && !text.is_ascii() {
                    // Rare: Unicode lowercasing can change lengths; lower the text once.
                    let lowered = text.to_lowercase();
                    return needles
                        .iter()
                        .any(|needle| text_test(*kind, &lowered, needle, false));
                }
                needles
                    .iter()
                    .any(|needle| text_test(*kind, text, needle, *ignore_case))
            }
            Self::Regex(regex) => {
                let mut buffer = TextBuffer::new();
                scalar_text(value, &mut buffer).is_some_and(|text| regex.is_match(text))
            }
            Self::Compare { op, bound } => {
                number_of(value).is_some_and(|n| compare(*op, n, *bound))
            }
            Self::Cidr(networks) => match value {
                Value::String(text) => text
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| networks.iter().any(|network| network.contains(ip))),
                _ => false,
            },
            Self::Wildcard(patterns) => {
                let mut buffer = TextBuffer::new();
                scalar_text(value, &mut buffer)
                    .is_some_and(|text| patterns.iter().any(|pattern| pattern.matches(text)))
            }
            Self::Time { op, bound_ms } => {
                tw_core::parse_time_ms(value).is_some_and(|t| compare(*op, t, *bound_ms))
            }
            Self::Exists(_) => true,
        }
    }

    /// Whether any scalar anywhere inside `value` satisfies the test (keyword search).
    pub(crate) fn holds_anywhere(&self, value: &Value) -> bool {
        match value {
            Value::Object(fields) => fields.values().any(|v| self.holds_anywhere(v)),
            Value::Array(items) => items.iter().any(|v| self.holds_anywhere(v)),
            Value::Null => false,
            scalar => self.holds_on_scalar(scalar),
        }
    }
}

fn compare<T: PartialOrd>(op: CompareOp, value: T, bound: T) -> bool {
    match op {
        CompareOp::Gt => value > bound,
        CompareOp::Gte => value >= bound,
        CompareOp::Lt => value < bound,
        CompareOp::Lte => value <= bound,
    }
}

impl Test {
    /// Rough relative cost of one evaluation (see [`Matcher::cost`]).
    pub(crate) fn cost(&self) -> u32 {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).min(1000);
        match self {
            Self::Exists(_) | Self::Equals(_) | Self::Compare { .. } => 2,
            Self::In(items) => 2 + count(items.len()) / 4,
            Self::Time { .. } | Self::Cidr(_) => 4,
            Self::Text { kind, needles, .. } => {
                let each = if matches!(kind, TextKind::Contains) {
                    4
                } else {
                    2
                };
                each * count(needles.len())
            }
            Self::Wildcard(patterns) => 5 * count(patterns.len()),
            Self::Regex(_) => 25,
        }
    }
}

/// Orders the operands of `all`/`any` cheapest first. Evaluation has no side effects, so the
/// order changes only how soon a result is known: a cheap `equals` that fails spares the
/// `regex` next to it.
pub(crate) fn cheapest_first(items: &mut [Matcher]) {
    items.sort_by_key(Matcher::cost);
}

impl Matcher {
    /// Rough relative cost of evaluating this matcher (bounded, so sums cannot overflow).
    pub(crate) fn cost(&self) -> u32 {
        match self {
            Self::All(items) | Self::Any(items) | Self::AtLeast(_, items) => items
                .iter()
                .map(Self::cost)
                .fold(0u32, u32::saturating_add)
                .min(100_000),
            Self::Not(inner) => inner.cost(),
            Self::Leaf { test, .. } => test.cost(),
            // Walks the whole event.
            Self::AnyField { test, .. } => 50 + 10 * test.cost(),
            Self::FieldRef { relation, .. } => match relation {
                FieldRelation::Equal | FieldRelation::NotEqual => 4,
                // May parse numbers or times on both sides.
                _ => 8,
            },
        }
    }

    /// Evaluates the condition; `resolve(i)` returns the value at the rule's `i`-th path.
    pub(crate) fn eval<'a, F>(&self, resolve: &mut F) -> bool
    where
        F: FnMut(usize) -> Option<&'a Value>,
    {
        match self {
            Self::All(items) => items.iter().all(|item| item.eval(resolve)),
            Self::Any(items) => items.iter().any(|item| item.eval(resolve)),
            Self::Not(inner) => !inner.eval(resolve),
            Self::AtLeast(n, items) => {
                let mut left = *n;
                items.iter().any(|item| {
                    if item.eval(resolve) {
                        left -= 1;
                    }
                    left == 0
                })
            }
            Self::Leaf { path, test } => test.holds(resolve(*path)),
            Self::AnyField { path, test } => resolve(*path).is_some_and(|v| test.holds_anywhere(v)),
            Self::FieldRef {
                path,
                other,
                relation,
                ignore_case,
            } => field_ref_holds(resolve(*path), resolve(*other), *relation, *ignore_case),
        }
    }
}
