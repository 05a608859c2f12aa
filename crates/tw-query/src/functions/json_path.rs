//! JSON paths for the `json_get*` SQL functions; pure, no Arrow.
//!
//! Syntax: keys separated by dots, `a.b.c`; `[n]` or a numeric key indexes an array
//! (`records[0].ip`, `records.0.ip`); `["key.with.dots"]` names a key that holds dots.
//! A leading `$` or `$.` is accepted (JSONPath habit); an empty path is the whole document.

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// An object key; on an array, a key made of digits is an index.
    Key(String),
    /// `[n]`: an array index.
    Index(usize),
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonPath(Vec<Step>);

impl JsonPath {
    /// Parses a path, or says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid JSON path '{text}': {why}");
        let mut rest = text.strip_prefix('$').unwrap_or(text);
        let mut steps = Vec::new();
        let mut expect_key = !rest.is_empty() && !rest.starts_with('[');
        if let Some(after_dot) = rest.strip_prefix('.') {
            // `$.a` and `.a` both start with a key.
            rest = after_dot;
            expect_key = true;
        }
        while expect_key || !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('[') {
                let close = inner.find(']').ok_or_else(|| bad("'[' without ']'"))?;
                let token = &inner[..close];
                let step = if let Some(quoted) = token
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .or_else(|| token.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')))
                {
                    Step::Key(quoted.to_string())
                } else {
                    token
                        .parse::<usize>()
                        .map(Step::Index)
                        .map_err(|_| bad("brackets hold an index or a quoted key"))?
                };
                steps.push(step);
                rest = &inner[close + 1..];
            } else if expect_key {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                if end == 0 {
                    return Err(bad("empty key"));
                }
                steps.push(Step::Key(rest[..end].to_string()));
                rest = &rest[end..];
            } else {
                return Err(bad("expected '.' or '['"));
            }
            expect_key = false;
            if let Some(after_dot) = rest.strip_prefix('.') {
                rest = after_dot;
                expect_key = true;
            }
        }
        Ok(Self(steps))
    }

    /// The value at this path in `document`, if there is one.
    pub(crate) fn find<'a>(&self, document: &'a Value) -> Option<&'a Value> {
        self.0
            .iter()
            .try_fold(document, |value, step| match (step, value) {
                (Step::Key(key), Value::Object(map)) => map.get(key),
                (Step::Key(key), Value::Array(items)) => {
                    key.parse::<usize>().ok().and_then(|i| items.get(i))
                }
                (Step::Index(i), Value::Array(items)) => items.get(*i),
                _ => None,
            })
    }
}

/// What a `json_get*` function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum JsonOutput {
    /// Any value as text: strings without quotes, objects and arrays as compact JSON.
    Text,
    /// Only string values.
    Str,
    /// Only integral numbers that fit an i64.
    Int,
    /// Only numbers.
    Float,
    /// Only booleans.
    Bool,
}

/// A value converted for one of the outputs; None when the value has another type.
pub(crate) enum Extracted {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl JsonOutput {
    /// Converts `value`; JSON null is SQL NULL for every output.
    pub(crate) fn extract(self, value: &Value) -> Option<Extracted> {
        match (self, value) {
            (_, Value::Null) => None,
            (Self::Text | Self::Str, Value::String(s)) => Some(Extracted::Text(s.clone())),
            (Self::Text, other) => Some(Extracted::Text(other.to_string())),
            (Self::Int, Value::Number(n)) => n.as_i64().map(Extracted::Int),
            (Self::Float, Value::Number(n)) => n.as_f64().map(Extracted::Float),
            (Self::Bool, Value::Bool(b)) => Some(Extracted::Bool(*b)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn get(document: &Value, path: &str) -> Option<Value> {
        JsonPath::parse(path).expect(path).find(document).cloned()
    }

    #[test]
    fn paths_walk_objects_and_arrays() {
        let doc = json!({"a": {"b": [10, {"c": "x"}]}, "k.dotted": 1, "0": "zero"});
        assert_eq!(get(&doc, "a.b[0]"), Some(json!(10)));
        assert_eq!(get(&doc, "a.b.1.c"), Some(json!("x")));
        assert_eq!(get(&doc, "$.a.b[1].c"), Some(json!("x")));
        assert_eq!(get(&doc, "[\"k.dotted\"]"), Some(json!(1)));
        assert_eq!(get(&doc, "$['k.dotted']"), Some(json!(1)));
        assert_eq!(
            get(&doc, "0"),
            Some(json!("zero")),
            "digits are a key on objects"
        );
        assert_eq!(get(&doc, ""), Some(doc.clone()));
        assert_eq!(get(&doc, "$"), Some(doc.clone()));
        assert_eq!(get(&doc, "a.missing"), None);
        assert_eq!(get(&doc, "a.b[5]"), None);
        assert_eq!(get(&doc, "a.b.c"), None, "a key on an array");
    }

    #[test]
    fn bad_paths_say_why() {
        for (bad, why) in [
            ("a..b", "empty key"),
            ("a.", "empty key"),
            ("a[0", "without ']'"),
            ("a[x]", "index or a quoted key"),
            ("a[0]b", "expected '.' or '['"),
        ] {
            let error = JsonPath::parse(bad).expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn outputs_keep_only_their_type() {
        let text = |v: Value| match JsonOutput::Text.extract(&v) {
            Some(Extracted::Text(s)) => Some(s),
            _ => None,
        };
        assert_eq!(text(json!("s")).as_deref(), Some("s"));
        assert_eq!(text(json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(text(json!({"a": [1]})).as_deref(), Some(r#"{"a":[1]}"#));
        assert_eq!(text(Value::Null), None);
        assert!(JsonOutput::Str.extract(&json!(1)).is_none());
        assert!(matches!(
            JsonOutput::Int.extract(&json!(7)),
            Some(Extracted::Int(7))
        ));
        assert!(JsonOutput::Int.extract(&json!(7.5)).is_none());
        assert!(JsonOutput::Int.extract(&json!("7")).is_none());
        assert!(
            matches!(JsonOutput::Float.extract(&json!(7)), Some(Extracted::Float(f)) if f == 7.0)
        );
        assert!(matches!(
            JsonOutput::Bool.extract(&json!(true)),
            Some(Extracted::Bool(true))
        ));
    }
}
