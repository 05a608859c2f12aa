//! Flattening stored JSON events into dotted column names, straight from the payload bytes:
//! the rules, and the general walk (serde_json's parser) for every event that the fast
//! scanner of [`crate::scan`] leaves to it.
//!
//! Rules: nested non-empty objects are walked (`a: {b: 1}` becomes column `a.b`); arrays and
//! empty objects are leaves stored as compact JSON text; `null` is a leaf without a type.
//! A top-level name that would collide with a Hive partition column (`year`, `month`, `day`,
//! `hour`) or a metadata column (`_time`, `_ingest_time`, `_partition`, `_offset`,
//! `_overflow`), compared case-insensitively because DuckDB and Spark resolve names that way,
//! gets a `_` appended: an event field `year` is stored as column `year_`.
//! A top-level value that is not an object is stored as a single field named `_value`.
//!
//! Why a streaming visitor rather than `serde_json::Value`: building the tree allocates a map
//! per object and a string per value, only to throw them away after one walk; that was the
//! largest cost of the lake writer. Here strings without escapes are borrowed from the payload
//! and nothing but the leaves is materialised; arrays are rewritten as compact text while they
//! are read. Keys are visited in document order; a key that repeats within one object yields
//! both values (the converter keeps the second in
//! `_overflow`, so nothing is dropped).

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::catalog::ColumnType;
use crate::compact_json::{CompactJson, Key};

/// Names that event columns must not take.
const RESERVED: [&str; 9] = [
    "year",
    "month",
    "day",
    "hour",
    "_time",
    "_ingest_time",
    "_partition",
    "_offset",
    "_overflow",
];

/// Deepest object nesting walked; deeper objects are kept whole as JSON text. Ingest bounds
/// nesting already (serde_json's recursion limit); this keeps the walk's own stack bounded.
pub(crate) const MAX_DEPTH: usize = 64;

/// One flattened value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Leaf<'a> {
    /// JSON `null`: carries no type.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string, borrowed from the payload when it has no escapes.
    Str(Cow<'a, str>),
    /// An array, an empty object or an object past the walk's depth, as compact JSON text
    /// (see [`crate::compact_json`]).
    Json(String),
}

impl Leaf<'_> {
    /// The column type this value would naturally get; `None` for `null`.
    pub(crate) fn column_type(&self) -> Option<ColumnType> {
        match self {
            Leaf::Null => None,
            Leaf::Bool(_) => Some(ColumnType::Boolean),
            Leaf::Int(_) => Some(ColumnType::Int64),
            Leaf::Float(_) => Some(ColumnType::Float64),
            Leaf::Str(_) | Leaf::Json(_) => Some(ColumnType::Utf8),
        }
    }

    /// The value as text for a string column: strings as they are, anything else as the
    /// compact JSON `serde_json` would write for it.
    pub(crate) fn to_text(&self) -> Cow<'_, str> {
        match self {
            Leaf::Str(text) => Cow::Borrowed(text),
            Leaf::Json(text) => Cow::Borrowed(text),
            other => Cow::Owned(other.to_value().to_string()),
        }
    }

    /// The value as a `serde_json::Value` (for `_overflow`, which stores an object).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Leaf::Null => Value::Null,
            Leaf::Bool(flag) => Value::Bool(*flag),
            Leaf::Int(number) => Value::from(*number),
            Leaf::Float(number) => {
                serde_json::Number::from_f64(*number).map_or(Value::Null, Value::Number)
            }
            Leaf::Str(text) => Value::String(text.to_string()),
            // Written from parsed JSON just before (`CompactJson`): it parses back.
            Leaf::Json(text) => serde_json::from_str(text).unwrap_or(Value::String(text.clone())),
        }
    }
}

/// Calls `visit(column name, leaf)` for every flattened leaf of the JSON text `payload`, in
/// document order. The name is built in `path` (reused across events) so that a known column
/// costs no allocation. Fails only when `payload` is not valid JSON.
pub(crate) fn for_each_leaf<'a>(
    payload: &'a [u8],
    path: &mut String,
    visit: &mut dyn FnMut(&str, Leaf<'a>),
) -> serde_json::Result<()> {
    path.clear();
    // One check of the whole payload is much cheaper than serde_json's check of each string
    // (many short calls): a payload that passes is read as text. One that fails is read as
    // bytes, where serde_json finds and names the problem.
    match std::str::from_utf8(payload) {
        Ok(text) => walk(serde_json::Deserializer::from_str(text), path, visit),
        Err(_) => walk(serde_json::Deserializer::from_slice(payload), path, visit),
    }
}

fn walk<'a, R: serde_json::de::Read<'a>>(
    mut deserializer: serde_json::Deserializer<R>,
    path: &mut String,
    visit: &mut dyn FnMut(&str, Leaf<'a>),
) -> serde_json::Result<()> {
    Walk {
        path,
        visit,
        depth: 0,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()
}

/// Walks one JSON value whose column name so far is in `path` (empty at the top level).
struct Walk<'p, 'v, 'a> {
    path: &'p mut String,
    visit: &'v mut dyn FnMut(&str, Leaf<'a>),
    depth: usize,
}

impl<'a> Walk<'_, '_, 'a> {
    /// Hands a leaf to the visitor under the current name.
    fn emit(self, leaf: Leaf<'a>) {
        (self.visit)(column_name(self.path), leaf);
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.emit(Leaf::Null);
        Ok(())
    }

    fn visit_bool<E>(self, flag: bool) -> Result<(), E> {
        self.emit(Leaf::Bool(flag));
        Ok(())
    }

    fn visit_i64<E>(self, number: i64) -> Result<(), E> {
        self.emit(Leaf::Int(number));
        Ok(())
    }

    fn visit_u64<E>(self, number: u64) -> Result<(), E> {
        let leaf = i64::try_from(number).map_or(Leaf::Float(number as f64), Leaf::Int);
        self.emit(leaf);
        Ok(())
    }

    fn visit_f64<E>(self, number: f64) -> Result<(), E> {
        self.emit(Leaf::Float(number));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<(), E> {
        self.emit(Leaf::Str(Cow::Borrowed(text)));
        Ok(())
    }

    fn visit_str<E>(self, text: &str) -> Result<(), E> {
        self.emit(Leaf::Str(Cow::Owned(text.to_string())));
        Ok(())
    }

    fn visit_string<E>(self, text: String) -> Result<(), E> {
        self.emit(Leaf::Str(Cow::Owned(text)));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let mut text = String::with_capacity(128);
        CompactJson(&mut text).visit_seq(seq)?;
        self.emit(Leaf::Json(text));
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Walk { path, visit, depth } = self;
        if depth >= MAX_DEPTH {
            let mut text = String::new();
            CompactJson(&mut text).visit_map(map)?;
            visit(column_name(path), Leaf::Json(text));
            return Ok(());
        }
        let base = path.len();
        let mut empty = true;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            empty = false;
            path.truncate(base);
            if depth > 0 {
                path.push('.');
            }
            path.push_str(&key.0);
            if depth == 0 && is_reserved(&key.0) {
                path.push('_');
            }
            map.next_value_seed(Walk {
                path,
                visit,
                depth: depth + 1,
            })?;
        }
        path.truncate(base);
        if empty {
            visit(column_name(path), Leaf::Json("{}".to_string()));
        }
        Ok(())
    }
}

/// Whether `payload` starts as a JSON object: its first byte other than white space is `{`.
/// What follows is checked by [`for_each_leaf`].
pub(crate) fn starts_as_object(payload: &[u8]) -> bool {
    payload
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|&byte| byte == b'{')
}

/// The column of a leaf whose flattened name is `path`: a value with no name (the event
/// itself when it is not an object, or under an empty top-level key) is `_value`.
pub(crate) fn column_name(path: &str) -> &str {
    if path.is_empty() { "_value" } else { path }
}

/// Whether a top-level key must be renamed (case-insensitively reserved).
pub(crate) fn is_reserved(key: &str) -> bool {
    // Every reserved name starts with one of these: most keys are told apart by their first
    // byte, instead of by nine comparisons (every top-level key of every event comes here).
    let could_be = matches!(
        key.as_bytes().first().map(u8::to_ascii_lowercase),
        Some(b'y' | b'm' | b'd' | b'h' | b'_')
    );
    could_be
        && RESERVED
            .iter()
            .any(|reserved| reserved.eq_ignore_ascii_case(key))
}

/// The flattened leaves of `payload` as (column name, value), in document order.
#[cfg(test)]
pub(crate) fn flatten(payload: &str) -> Vec<(String, Leaf<'_>)> {
    let mut out = Vec::new();
    for_each_leaf(payload.as_bytes(), &mut String::new(), &mut |name, leaf| {
        out.push((name.to_string(), leaf))
    })
    .expect("test payloads are valid JSON");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> Leaf<'_> {
        Leaf::Str(Cow::Borrowed(value))
    }

    #[test]
    fn flattens_nested_objects_and_keeps_arrays_and_empty_objects_as_leaves() {
        let event = r#"{"eventName": "AttachUserPolicy",
            "requestParameters": {"policyArn": "arn:x", "tags": [1, {"k": "v"}], "empty": {}},
            "userIdentity": {"sessionContext": {"attributes": {"mfaAuthenticated": "false"}}},
            "gone": null}"#;
        assert_eq!(
            flatten(event),
            vec![
                ("eventName".to_string(), text("AttachUserPolicy")),
                ("requestParameters.policyArn".to_string(), text("arn:x")),
                (
                    "requestParameters.tags".to_string(),
                    Leaf::Json(r#"[1,{"k":"v"}]"#.into())
                ),
                (
                    "requestParameters.empty".to_string(),
                    Leaf::Json("{}".into())
                ),
                (
                    "userIdentity.sessionContext.attributes.mfaAuthenticated".to_string(),
                    text("false")
                ),
                ("gone".to_string(), Leaf::Null),
            ]
        );
    }

    #[test]
    fn every_reserved_name_is_reserved_in_any_case() {
        for name in RESERVED {
            assert!(is_reserved(name), "{name}");
            assert!(is_reserved(&name.to_ascii_uppercase()), "{name}");
        }
        assert!(!is_reserved("eventName") && !is_reserved("years") && !is_reserved(""));
    }

    #[test]
    fn reserved_top_level_names_are_renamed_nested_ones_are_not() {
        let event = r#"{"year": 2024, "Hour": 3, "_offset": 1, "date": {"year": 1}, "year_": 5}"#;
        let names: Vec<String> = flatten(event).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["year_", "Hour_", "_offset_", "date.year", "year_"]);
    }

    #[test]
    fn infers_types_like_serde_json_values() {
        let leaves = flatten(
            r#"{"a": true, "b": -3, "c": 1.5, "d": 18446744073709551615, "e": "x", "f": [1], "g": null}"#,
        );
        let types: Vec<Option<ColumnType>> =
            leaves.iter().map(|(_, leaf)| leaf.column_type()).collect();
        assert_eq!(
            types,
            [
                Some(ColumnType::Boolean),
                Some(ColumnType::Int64),
                Some(ColumnType::Float64),
                Some(ColumnType::Float64),
                Some(ColumnType::Utf8),
                Some(ColumnType::Utf8),
                None
            ]
        );
        assert_eq!(flatten("7"), vec![("_value".to_string(), Leaf::Int(7))]);
        assert_eq!(
            flatten("{}"),
            vec![("_value".to_string(), Leaf::Json("{}".into()))]
        );
    }

    #[test]
    fn text_of_non_strings_is_their_compact_json() {
        assert_eq!(Leaf::Float(1.5).to_text(), "1.5");
        assert_eq!(Leaf::Int(-2).to_text(), "-2");
        assert_eq!(Leaf::Bool(true).to_text(), "true");
        assert_eq!(text("a\"b").to_text(), "a\"b");
    }

    #[test]
    fn escaped_strings_and_keys_are_unescaped() {
        let leaves = flatten(r#"{"k\u00e9y": "line\nbreak"}"#);
        assert_eq!(
            leaves,
            vec![(
                "kéy".to_string(),
                Leaf::Str(Cow::Owned("line\nbreak".into()))
            )]
        );
    }

    #[test]
    fn deep_objects_are_kept_whole_past_the_walk_limit() {
        let mut event = String::new();
        for _ in 0..(MAX_DEPTH + 3) {
            event.push_str(r#"{"a":"#);
        }
        event.push('1');
        for _ in 0..(MAX_DEPTH + 3) {
            event.push('}');
        }
        let leaves = flatten(&event);
        assert_eq!(leaves.len(), 1);
        let (name, leaf) = &leaves[0];
        assert_eq!(name.split('.').count(), MAX_DEPTH);
        assert_eq!(leaf, &Leaf::Json(r#"{"a":{"a":{"a":1}}}"#.into()));
    }

    #[test]
    fn only_payloads_starting_as_objects_pass_the_object_check() {
        assert!(starts_as_object(br#" {"a": [1, 2]}"#));
        assert!(!starts_as_object(b"[1]"));
        assert!(!starts_as_object(b" 1"));
        assert!(!starts_as_object(b""));
    }

    #[test]
    fn text_is_borrowed_and_invalid_utf8_is_refused_by_name() {
        let mut path = String::new();
        let mut leaves = Vec::new();
        for_each_leaf(
            "{\"city\": \"Zürich\"}".as_bytes(),
            &mut path,
            &mut |name, leaf| leaves.push((name.to_string(), leaf)),
        )
        .unwrap();
        assert!(
            matches!(&leaves[..], [(name, Leaf::Str(Cow::Borrowed("Zürich")))] if name == "city")
        );

        let invalid = b"{\"city\": \"Z\xfcrich\"}";
        let error = for_each_leaf(invalid, &mut path, &mut |_, _| {}).unwrap_err();
        assert!(error.to_string().contains("invalid unicode"), "{error}");
    }
}
