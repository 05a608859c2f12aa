//! Dotted field paths into JSON events (`requestParameters.policyArn`).

use std::borrow::Cow;

use serde_json::Value;

/// A field path compiled once (split on `.`) and applied to many events.
///
/// A segment that is an unsigned integer also indexes into arrays (`resources.0.ARN`).
/// When the nested walk finds nothing and the object holds a key that itself contains dots
/// (`{"a.b": 1}`), that literal key is used, so flattened and nested events are both addressed
/// by the same path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
}

impl FieldPath {
    /// Compiles `text` (for example `userIdentity.userName`). The empty path is the root: it
    /// resolves to the whole event (rules that search every field use it).
    pub fn new(text: &str) -> Self {
        let segments = if text.is_empty() {
            Vec::new()
        } else {
            text.split('.').map(str::to_string).collect()
        };
        Self {
            text: text.to_string(),
            segments,
        }
    }

    /// Whether this is the root path (the whole event).
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The path as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path, if present (a JSON `null` is returned as `Some(Null)`).
    pub fn get<'v>(&self, event: &'v Value) -> Option<&'v Value> {
        self.walk(event).or_else(|| {
            // Rare: a producer that already flattened its keys. Tried second because the walk
            // almost always succeeds and this lookup almost always misses.
            (self.segments.len() > 1)
                .then(|| event.as_object()?.get(&self.text))
                .flatten()
        })
    }

    fn walk<'v>(&self, event: &'v Value) -> Option<&'v Value> {
        walk(event, &self.segments)
    }

    /// The path's segments (none for the root).
    pub(crate) fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The value at this path rendered as text: strings as they are, numbers and booleans in
    /// their JSON spelling, objects and arrays as compact JSON; `None` when absent or null.
    pub fn get_text(&self, event: &Value) -> Option<String> {
        self.text(event).map(Cow::into_owned)
    }

    /// [`FieldPath::get_text`] borrowed from the event when the value is a string (most are),
    /// for callers that read text on a hot path and keep none of it.
    pub fn text<'v>(&self, event: &'v Value) -> Option<Cow<'v, str>> {
        value_text(self.get(event)?)
    }
}

/// The value `segments` lead to from `value`, without the flattened-key fallback.
pub(crate) fn walk<'v>(value: &'v Value, segments: &[String]) -> Option<&'v Value> {
    let mut current = value;
    for segment in segments {
        current = match current {
            Value::Object(object) => object.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// A value rendered as text the way [`FieldPath::text`] renders the value at a path: strings
/// as they are (borrowed), numbers and booleans in their JSON spelling, objects and arrays as
/// compact JSON; `None` for null.
pub fn value_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(Cow::Borrowed(text)),
        other => Some(Cow::Owned(other.to_string())),
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_nested_array_and_literal_dotted_keys() {
        let event = json!({"a": {"b": [10, {"c": "x"}]}, "d.e": 5, "n": null});
        assert_eq!(FieldPath::new("a.b.0").get(&event), Some(&json!(10)));
        assert_eq!(
            FieldPath::new("a.b.1.c").get_text(&event).as_deref(),
            Some("x")
        );
        assert_eq!(FieldPath::new("d.e").get(&event), Some(&json!(5)));
        assert_eq!(FieldPath::new("a.zz").get(&event), None);
        assert_eq!(FieldPath::new("n").get(&event), Some(&Value::Null));
        assert_eq!(FieldPath::new("n").get_text(&event), None);
        assert_eq!(FieldPath::new("a.b.7").get(&event), None);
        assert!(FieldPath::new("").is_root());
        assert_eq!(FieldPath::new("").get(&event), Some(&event));
    }
}
