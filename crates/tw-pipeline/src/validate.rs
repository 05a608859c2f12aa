//! Validation of events against a declared stream schema.

use serde_json::Value;
use tw_core::{FieldPath, FieldType, StreamSchema, parse_time_ms};

use crate::decode::kind;

/// A schema compiled once per stream configuration.
#[derive(Debug, Clone)]
pub struct CompiledSchema {
    fields: Vec<(FieldPath, FieldType, bool)>,
}

impl CompiledSchema {
    /// Compiles the field paths of `schema`.
    pub fn new(schema: &StreamSchema) -> Self {
        Self {
            fields: schema
                .fields
                .iter()
                .map(|f| (FieldPath::new(&f.name), f.field_type, f.required))
                .collect(),
        }
    }

    /// Checks one event; the error lists every violation.
    pub fn check(&self, event: &Value) -> Result<(), String> {
        let mut problems = Vec::new();
        for (path, expected, required) in &self.fields {
            match path.get(event) {
                None | Some(Value::Null) => {
                    if *required {
                        problems.push(format!("required field `{path}` is missing"));
                    }
                }
                Some(value) if !type_matches(*expected, value) => {
                    problems.push(format!(
                        "field `{path}` must be {expected:?} but is {}",
                        kind(value)
                    ));
                }
                Some(_) => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("schema violation: {}", problems.join("; ")))
        }
    }
}

fn type_matches(expected: FieldType, value: &Value) -> bool {
    match expected {
        FieldType::Any => true,
        FieldType::String => value.is_string(),
        FieldType::Integer => value.is_i64() || value.is_u64(),
        FieldType::Number => value.is_number(),
        FieldType::Boolean => value.is_boolean(),
        FieldType::Object => value.is_object(),
        FieldType::Array => value.is_array(),
        FieldType::Timestamp => parse_time_ms(value).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tw_core::FieldSpec;

    #[test]
    fn reports_every_violation() {
        let schema = CompiledSchema::new(&StreamSchema {
            fields: vec![
                FieldSpec {
                    name: "user.id".into(),
                    field_type: FieldType::Integer,
                    required: true,
                },
                FieldSpec {
                    name: "ts".into(),
                    field_type: FieldType::Timestamp,
                    required: true,
                },
                FieldSpec {
                    name: "tag".into(),
                    field_type: FieldType::String,
                    required: false,
                },
            ],
        });
        assert!(
            schema
                .check(&json!({"user": {"id": 4}, "ts": "2024-01-01T00:00:00Z"}))
                .is_ok()
        );
        let error = schema
            .check(&json!({"user": {"id": "x"}, "tag": 5}))
            .unwrap_err();
        assert!(
            error.contains("`user.id` must be Integer but is a string"),
            "{error}"
        );
        assert!(error.contains("required field `ts` is missing"), "{error}");
        assert!(error.contains("`tag` must be String"), "{error}");
    }
}
