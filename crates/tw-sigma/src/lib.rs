//! Sigma rules → native Tidewatch rules.
//!
//! This crate owns the translation of Sigma YAML (unmodified files from SigmaHQ and the like)
//! into [`tw_detect::Rule`]s: the logsource → stream table, field-name mapping, every value
//! modifier of the Sigma specification, and the condition (kept as written: it becomes the
//! condition string of named selections, which `tw-detect` evaluates); and Sigma correlation
//! rules (event_count, value_count, temporal, temporal_ordered), which become the native
//! stateful kinds over their base rules' conditions ([`translate_file`]), and translate again
//! from their [`CorrelationSource`] when a base rule stored on its own changes. A correlation
//! refers to its base rules by `id` or `name`, in its own file or among the [`StoredRules`]
//! (every rule keeps its Sigma `name` as [`Rule::sigma_name`]).
//!
//! Invariants:
//! - a translation either yields a rule that validates, or fails with an error naming the
//!   unsupported or invalid construct and where it is: nothing is ever half-loaded;
//! - Sigma's matching semantics are kept: case-insensitive strings unless `|cased`, `*`/`?`
//!   wildcards with Sigma's escapes, case-sensitive regexes unless `|re|i`;
//! - translation is pure (no I/O): the caller supplies the configuration.

mod collection;
mod config;
mod correlation;
mod detection;
mod modifiers;
mod source;
mod stored;
mod transforms;

use serde_json::{Map, Value};
use tw_core::Severity;
use tw_detect::{Condition, Rule, Selections};

pub use collection::{
    Translation, translate_file, translate_file_with_sources, translate_file_with_stored,
};
pub use config::{FieldMapping, LogsourceMapping, SigmaConfig};
pub use source::{Base, CorrelationSource, translate_correlation};
pub use stored::StoredRules;

/// Why a Sigma document could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigmaError {
    /// The text is not well-formed YAML.
    #[error("sigma rule is not valid yaml: {0}")]
    Syntax(String),
    /// The document uses something Tidewatch does not evaluate.
    #[error("sigma rule uses unsupported {feature} (at {place})")]
    Unsupported {
        /// What is unsupported (`correlation rules`, `value modifier \`minute\``).
        feature: String,
        /// Where in the document (`detection.selection.CommandLine|minute`).
        place: String,
    },
    /// The document is not a valid Sigma rule.
    #[error("invalid sigma rule: {message} (at {place})")]
    Invalid {
        /// What is wrong.
        message: String,
        /// Where in the document.
        place: String,
    },
    /// A correlation refers to a rule that is neither in its file nor stored.
    #[error(
        "correlation refers to rule `{reference}`, which is neither in the same file (by `name` or `id`) nor stored (by `id` or `name`) (at {place})"
    )]
    UnknownRule {
        /// The reference as written.
        reference: String,
        /// Where in the document (`correlation.rules[1]`).
        place: String,
    },
    /// A correlation refers by name to a rule when several stored rules have that name.
    #[error(
        "correlation refers to rule `{reference}`, a name that several stored rules have ({}): refer to one of them by id (at {place})",
        .ids.join(", ")
    )]
    AmbiguousRule {
        /// The reference as written.
        reference: String,
        /// The ids of the stored rules with that name, sorted.
        ids: Vec<String>,
        /// Where in the document (`correlation.rules[1]`).
        place: String,
    },
    /// The translation is not a valid Tidewatch rule (for example a regex the linear-time
    /// engine cannot run).
    #[error("sigma rule cannot be evaluated: {0}")]
    Rule(#[from] tw_detect::RuleError),
}

impl SigmaError {
    pub(crate) fn unsupported(feature: impl Into<String>, place: impl Into<String>) -> Self {
        Self::Unsupported {
            feature: feature.into(),
            place: place.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>, place: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            place: place.into(),
        }
    }
}

/// Whether `text` looks like a Sigma document: a YAML mapping with top-level `detection:` and
/// `logsource:` keys, or a Sigma correlation rule (top-level `correlation:`); native rules
/// have none of these, so a Sigma document is never read as a native one. A Sigma rule sent
/// as a JSON object (JSON is YAML: it translates the same) is recognised by the same keys.
pub fn is_sigma(text: &str) -> bool {
    if text.trim_start().starts_with('{') {
        return match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => {
                (object.contains_key("detection") && object.contains_key("logsource"))
                    || object.contains_key("correlation")
            }
            _ => false,
        };
    }
    let mut detection = false;
    let mut logsource = false;
    let mut correlation = false;
    for line in text.lines() {
        detection |= line.starts_with("detection:");
        logsource |= line.starts_with("logsource:");
        correlation |= line.starts_with("correlation:");
    }
    (detection && logsource) || correlation
}

/// Parses Sigma YAML text into a JSON value (YAML 1.2 booleans, duplicate keys refused).
pub fn parse_yaml(text: &str) -> Result<Value, SigmaError> {
    // A second document (`---`) means a Sigma collection (`action: global`), which this
    // crate does not merge: refuse it rather than read only the first document.
    if text
        .lines()
        .skip_while(|line| line.trim().is_empty() || line.starts_with('#'))
        .skip(1)
        .any(|line| line.trim_end() == "---")
    {
        return Err(SigmaError::unsupported(
            "multi-document YAML (Sigma rule collections / `action: global`)",
            "document",
        ));
    }
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    serde_saphyr::from_str_with_options::<Value>(text, options)
        .map_err(|error| SigmaError::Syntax(error.to_string()))
}

/// Parses every document of Sigma YAML text (documents separated by `---`).
pub fn parse_documents(text: &str) -> Result<Vec<Value>, SigmaError> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    serde_saphyr::from_multiple_with_options::<Value>(text, options)
        .map_err(|error| SigmaError::Syntax(error.to_string()))
}

/// Translates Sigma YAML text that yields exactly one native rule: one detection rule, or one
/// correlation with the rules it refers to in the same file (without `generate`). Files that
/// yield several rules, or refer to loaded rules, go through [`translate_file`].
pub fn translate(text: &str, config: &SigmaConfig) -> Result<Rule, SigmaError> {
    let mut rules = translate_file(text, config, &|_| None)?;
    if rules.len() != 1 {
        return Err(SigmaError::unsupported(
            format!(
                "a file that yields {} rules where one is expected",
                rules.len()
            ),
            "document",
        ));
    }
    Ok(rules.remove(0))
}

/// Top-level keys that mark a document kind Tidewatch does not load, with the name used in
/// the refusal.
const REFUSED_KINDS: &[(&str, &str)] = &[
    (
        "correlation",
        "correlation rules here (they are translated with the rules they refer to, by `translate_file`)",
    ),
    ("action", "rule collections (`action`)"),
    ("filter", "Sigma filter rules (`filter`)"),
];

/// Translates an already parsed Sigma document into a validated native rule.
pub fn translate_value(value: &Value, config: &SigmaConfig) -> Result<Rule, SigmaError> {
    let Value::Object(document) = value else {
        return Err(SigmaError::invalid("expected a mapping", "document"));
    };
    for (key, feature) in REFUSED_KINDS {
        if document.contains_key(*key) {
            return Err(SigmaError::unsupported(*feature, *key));
        }
    }
    let id = required_text(document, "id")?;
    let title = required_text(document, "title")?;
    let description = optional_text(document, "description")?;
    let severity = severity_of(document)?;
    let tags = tags_of(document)?;
    let name = name_of(document)?;
    let logsource = match document.get("logsource") {
        Some(Value::Object(logsource)) => logsource,
        _ => return Err(SigmaError::invalid("expected a mapping", "logsource")),
    };
    let stream = config.stream_for(logsource)?;
    let detection = match document.get("detection") {
        Some(Value::Object(detection)) => detection,
        _ => return Err(SigmaError::invalid("expected a mapping", "detection")),
    };
    let (items, condition) = detection::translate(detection, config)?;
    let condition = Condition::Selections(Selections { items, condition });
    // Built through the rule's document form rather than a struct literal, so sections the
    // native format gains later (stateful kinds, suppression) keep their defaults here.
    let mut document = Map::new();
    document.insert("id".into(), Value::String(id));
    document.insert("title".into(), Value::String(title));
    document.insert("description".into(), Value::String(description));
    document.insert(
        "severity".into(),
        serde_json::to_value(severity).unwrap_or(Value::Null),
    );
    document.insert("stream".into(), Value::String(stream));
    document.insert("enabled".into(), Value::Bool(true));
    document.insert(
        "tags".into(),
        Value::Array(tags.into_iter().map(Value::String).collect()),
    );
    if let Some(name) = name {
        document.insert("sigma_name".into(), Value::String(name));
    }
    document.insert("match".into(), condition.to_value());
    let rule = Rule::from_value(&Value::Object(document))?;
    rule.validate()?;
    Ok(rule)
}

/// The `level` as a severity (the default when absent).
pub(crate) fn severity_of(document: &Map<String, Value>) -> Result<Severity, SigmaError> {
    match document.get("level") {
        None | Some(Value::Null) => Ok(Severity::default()),
        Some(Value::String(level)) => level
            .parse::<Severity>()
            .map_err(|message| SigmaError::invalid(message, "level")),
        Some(_) => Err(SigmaError::invalid("expected a string", "level")),
    }
}

/// The `name` (by which correlations refer to the rule), when the document has one; a blank
/// one is none (no reference can use it).
pub(crate) fn name_of(document: &Map<String, Value>) -> Result<Option<String>, SigmaError> {
    match document.get("name") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) if name.trim().is_empty() => Ok(None),
        Some(Value::String(name)) => Ok(Some(name.clone())),
        Some(_) => Err(SigmaError::invalid("expected a string", "name")),
    }
}

/// The `tags`, as strings.
pub(crate) fn tags_of(document: &Map<String, Value>) -> Result<Vec<String>, SigmaError> {
    match document.get("tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::String(tag) => Ok(tag.clone()),
                _ => Err(SigmaError::invalid(
                    "expected a string",
                    format!("tags[{index}]"),
                )),
            })
            .collect(),
        Some(_) => Err(SigmaError::invalid("expected a list of strings", "tags")),
    }
}

pub(crate) fn required_text(
    document: &Map<String, Value>,
    key: &str,
) -> Result<String, SigmaError> {
    match document.get(key) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text.clone()),
        Some(Value::String(_)) => Err(SigmaError::invalid("must not be empty", key)),
        Some(_) => Err(SigmaError::invalid("expected a string", key)),
        None => Err(SigmaError::invalid("required field is missing", key)),
    }
}

pub(crate) fn optional_text(
    document: &Map<String, Value>,
    key: &str,
) -> Result<String, SigmaError> {
    match document.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.trim_end().to_string()),
        Some(_) => Err(SigmaError::invalid("expected a string", key)),
    }
}
