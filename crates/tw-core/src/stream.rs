//! Stream names and stream configuration (partitions, key, event time, schema, retention).

use serde::{Deserialize, Serialize};

/// Longest accepted stream name.
const MAX_STREAM_NAME_LEN: usize = 128;

/// A validated stream name: 1–128 characters of `[A-Za-z0-9_-.]`, starting with a letter or
/// digit. Names starting with `_` are reserved for Tidewatch's own streams (the dead-letter
/// queue), which are built with [`StreamName::internal`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamName(String);

/// Why a stream name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid stream name {name:?}: {reason}")]
pub struct StreamNameError {
    /// The name as given.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl StreamName {
    /// Validates a user-supplied stream name.
    pub fn new(name: &str) -> Result<Self, StreamNameError> {
        let fail = |reason| {
            Err(StreamNameError {
                name: name.chars().take(200).collect(),
                reason,
            })
        };
        if name.is_empty() || name.len() > MAX_STREAM_NAME_LEN {
            return fail("must be 1 to 128 characters long");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return fail("may contain only letters, digits, '_', '-' and '.'");
        }
        if !name.as_bytes()[0].is_ascii_alphanumeric() {
            return fail("must start with a letter or digit");
        }
        Ok(Self(name.to_string()))
    }

    /// A reserved, Tidewatch-owned stream such as `_dlq` (not creatable through the API).
    pub fn internal(name: &str) -> Self {
        debug_assert!(name.starts_with('_'));
        Self(name.to_string())
    }

    /// Whether this is a Tidewatch-owned stream.
    pub fn is_internal(&self) -> bool {
        self.0.starts_with('_')
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for StreamName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.starts_with('_') {
            return Ok(Self(text));
        }
        StreamName::new(&text).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for StreamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Configuration of one stream. Persisted (with `version`) and editable through
/// `PUT /api/v1/streams/{stream}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Format version of this record; bumped when the meaning of a field changes.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Number of partitions (fixed once the stream holds data).
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Field path whose value chooses the partition; records without it, or streams without a
    /// key, are spread round-robin.
    #[serde(default)]
    pub partition_key: Option<String>,
    /// Field path holding the event time; ingest time when unset or when a record lacks it.
    #[serde(default)]
    pub event_time_field: Option<String>,
    /// Declared schema; when set, records that violate it go to the dead-letter queue.
    #[serde(default)]
    pub schema: Option<StreamSchema>,
    /// How long and how much the log keeps.
    #[serde(default)]
    pub retention: Retention,
    /// Lake settings: retention of the Parquet files, compaction sort column, bloom filters.
    #[serde(default)]
    pub lake: crate::StreamLakeConfig,
    /// Fields the full-text search index holds (dotted paths, each with everything below
    /// it); unset indexes every field. Applies to events indexed after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_fields: Option<Vec<String>>,
}

fn default_version() -> u32 {
    1
}

fn default_partitions() -> u32 {
    4
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            version: default_version(),
            partitions: default_partitions(),
            partition_key: None,
            event_time_field: None,
            schema: None,
            retention: Retention::default(),
            lake: crate::StreamLakeConfig::default(),
            search_fields: None,
        }
    }
}

/// Why a stream configuration was refused (every problem found, not just the first).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid stream configuration: {}", problems.join("; "))]
pub struct StreamConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

/// Most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 256;

impl StreamConfig {
    /// Checks the configuration without side effects and reports every problem at once.
    pub fn validate(&self) -> Result<(), StreamConfigError> {
        let mut problems = Vec::new();
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            problems.push(format!(
                "partitions must be 1 to {MAX_PARTITIONS}, got {}",
                self.partitions
            ));
        }
        for (name, path) in [
            ("partition_key", &self.partition_key),
            ("event_time_field", &self.event_time_field),
        ] {
            if path
                .as_deref()
                .is_some_and(|path| path.is_empty() || path.split('.').any(str::is_empty))
            {
                problems.push(format!("{name} must be a dotted field path like `a.b`"));
            }
        }
        if let Some(fields) = &self.search_fields {
            if fields.is_empty() {
                problems.push(
                    "search_fields must list at least one field (omit it to index every field)"
                        .to_string(),
                );
            }
            for field in fields {
                if field.is_empty() || field.split('.').any(str::is_empty) {
                    problems.push(format!(
                        "search_fields entry {field:?} is not a dotted field path"
                    ));
                }
            }
        }
        if let Some(schema) = &self.schema {
            for field in &schema.fields {
                if field.name.is_empty() || field.name.split('.').any(str::is_empty) {
                    problems.push(format!(
                        "schema field name {:?} is not a dotted field path",
                        field.name
                    ));
                }
            }
        }
        problems.extend(self.lake.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StreamConfigError { problems })
        }
    }
}

/// Retention of the log (the lake has its own, later). `None` keeps forever.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Delete sealed segments whose newest record is older than this many seconds.
    #[serde(default)]
    pub max_age_secs: Option<u64>,
    /// Delete the oldest sealed segments while a partition holds more than this many bytes.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// A declared schema: the fields a record must (or may) carry and their JSON types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSchema {
    /// The declared fields.
    pub fields: Vec<FieldSpec>,
}

/// One declared field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Dotted field path.
    pub name: String,
    /// Expected JSON type.
    #[serde(rename = "type", default)]
    pub field_type: FieldType,
    /// Whether a record without this field (or with `null`) is invalid.
    #[serde(default)]
    pub required: bool,
}

/// JSON types a schema can require.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Any JSON value.
    #[default]
    Any,
    /// A JSON string.
    String,
    /// A JSON integer.
    Integer,
    /// Any JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
    /// A string or number that parses as a time.
    Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_checked() {
        assert!(StreamName::new("cloudtrail").is_ok());
        assert!(StreamName::new("vpc-flow.v2_x").is_ok());
        for bad in ["", "_dlq", "-x", "a/b", "a b", "ünï", &"x".repeat(129)] {
            assert!(StreamName::new(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(StreamName::internal("_dlq").is_internal());
    }

    #[test]
    fn config_reports_every_problem_and_rejects_unknown_fields() {
        let config = StreamConfig {
            partitions: 0,
            partition_key: Some("a..b".into()),
            ..Default::default()
        };
        let error = config.validate().unwrap_err();
        assert_eq!(error.problems.len(), 2, "{error}");
        let typo = serde_json::from_str::<StreamConfig>(r#"{"partitons": 3}"#);
        assert!(typo.unwrap_err().to_string().contains("partitons"));
        let parsed: StreamConfig = serde_json::from_str(r#"{"partition_key":"user"}"#).unwrap();
        assert_eq!(parsed.partitions, 4);
        assert_eq!(parsed.search_fields, None);
        let fields: StreamConfig =
            serde_json::from_str(r#"{"search_fields":["eventName","a..b"]}"#).unwrap();
        let error = fields.validate().unwrap_err();
        assert_eq!(error.problems.len(), 1, "{error}");
        assert!(error.problems[0].contains("\"a..b\""), "{error}");
    }
}
