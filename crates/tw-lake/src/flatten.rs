//! Flattening JSON events into dotted column names.
//!
//! Rules: nested non-empty objects are walked (`a: {b: 1}` becomes column `a.b`); arrays and
//! empty objects are leaves stored as compact JSON text; `null` is a leaf without a type.
//! A top-level name that would collide with a Hive partition column (`year`, `month`, `day`,
//! `hour`) or a metadata column (`_time`, `_ingest_time`, `_partition`, `_offset`,
//! `_overflow`), compared case-insensitively because DuckDB and Spark resolve names that way,
//! gets a `_` appended: an event field `year` is stored as column `year_`.
//! A top-level value that is not an object is stored as a single field named `_value`.
//! Keys are visited in the order of `serde_json`'s map (sorted, unless its `preserve_order`
//! feature is on), so "order of first appearance" is that order within one event.

use serde_json::Value;

use crate::catalog::ColumnType;

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

/// The column type a JSON value would naturally get; `None` for `null`.
pub(crate) fn value_type(value: &Value) -> Option<ColumnType> {
    match value {
        Value::Null => None,
        Value::Bool(_) => Some(ColumnType::Boolean),
        Value::Number(number) if number.is_i64() => Some(ColumnType::Int64),
        Value::Number(_) => Some(ColumnType::Float64),
        Value::String(_) | Value::Array(_) | Value::Object(_) => Some(ColumnType::Utf8),
    }
}

/// Calls `visit(column name, value)` for every flattened leaf of `event`, in map order. The
/// name is built in `path` (reused across events) so a known column costs no allocation.
pub(crate) fn for_each_leaf<'v>(
    event: &'v Value,
    path: &mut String,
    mut visit: impl FnMut(&str, &'v Value),
) {
    match event {
        Value::Object(object) => {
            for (key, value) in object {
                path.clear();
                path.push_str(key);
                if is_reserved(key) {
                    path.push('_');
                }
                walk(path, value, &mut visit);
            }
        }
        other => visit("_value", other),
    }
}

fn walk<'v>(path: &mut String, value: &'v Value, visit: &mut impl FnMut(&str, &'v Value)) {
    match value {
        Value::Object(object) if !object.is_empty() => {
            for (key, child) in object {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                walk(path, child, visit);
                path.truncate(len);
            }
        }
        leaf => visit(path, leaf),
    }
}

/// The flattened leaves of `event` as (column name, value).
#[cfg(test)]
pub(crate) fn flatten(event: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for_each_leaf(event, &mut String::new(), |name, value| {
        out.push((name.to_string(), value))
    });
    out
}

/// Whether a top-level key must be renamed (case-insensitively reserved).
fn is_reserved(key: &str) -> bool {
    RESERVED
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattens_nested_objects_and_keeps_arrays_and_empty_objects_as_leaves() {
        let event = json!({
            "eventName": "AttachUserPolicy",
            "requestParameters": {"policyArn": "arn:x", "tags": [1, {"k": "v"}], "empty": {}},
            "userIdentity": {"sessionContext": {"attributes": {"mfaAuthenticated": "false"}}},
            "gone": null
        });
        // Sorted: serde_json's map order depends on its `preserve_order` feature.
        let mut flat: Vec<(String, Value)> = flatten(&event)
            .into_iter()
            .map(|(name, value)| (name, value.clone()))
            .collect();
        flat.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            flat,
            vec![
                ("eventName".to_string(), json!("AttachUserPolicy")),
                ("gone".to_string(), Value::Null),
                ("requestParameters.empty".to_string(), json!({})),
                ("requestParameters.policyArn".to_string(), json!("arn:x")),
                ("requestParameters.tags".to_string(), json!([1, {"k": "v"}])),
                (
                    "userIdentity.sessionContext.attributes.mfaAuthenticated".to_string(),
                    json!("false")
                ),
            ]
        );
    }

    #[test]
    fn reserved_top_level_names_are_renamed_nested_ones_are_not() {
        let event = json!({"year": 2024, "Hour": 3, "_offset": 1, "date": {"year": 1}, "year_": 5});
        let mut names: Vec<String> = flatten(&event).into_iter().map(|(name, _)| name).collect();
        names.sort();
        assert_eq!(names, ["Hour_", "_offset_", "date.year", "year_", "year_"]);
    }

    #[test]
    fn infers_types() {
        assert_eq!(value_type(&json!(true)), Some(ColumnType::Boolean));
        assert_eq!(value_type(&json!(-3)), Some(ColumnType::Int64));
        assert_eq!(value_type(&json!(1.5)), Some(ColumnType::Float64));
        assert_eq!(
            value_type(&json!(u64::MAX)),
            Some(ColumnType::Float64),
            "beyond i64 is not Int64"
        );
        assert_eq!(value_type(&json!("x")), Some(ColumnType::Utf8));
        assert_eq!(value_type(&json!([1])), Some(ColumnType::Utf8));
        assert_eq!(value_type(&Value::Null), None);
        assert_eq!(flatten(&json!(7)), vec![("_value".to_string(), &json!(7))]);
    }
}
