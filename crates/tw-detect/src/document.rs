//! The rule document: what a user writes in YAML or JSON and what the server persists.
//!
//! The types are plain data. Reading them from text goes through one path
//! ([`crate::parse_rule`], [`Rule::from_value`] and `Deserialize` share it) so that every
//! structural problem is reported with its place in the document; [`Rule::validate`] then checks
//! what the structure cannot (identifier syntax, CIDRs, regexes, durations).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use tw_core::Severity;

use crate::stateful::{DistinctCount, NewValue, Sections, Sequence, Suppression, Threshold};

/// A detection rule.
///
/// The kind of a rule follows from which optional section it has (at most one): none makes it
/// a single-event rule; `threshold`, `distinct`, `sequence` or `new_value` a stateful rule
/// (see the `stateful` module).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Identifier, `[A-Za-z0-9_.:-]{1,128}`; stable across edits.
    pub id: String,
    /// Revision assigned by the rule registry (outside this crate); 0 when never stored.
    pub version: u64,
    /// One-line human title, copied into alerts.
    pub title: String,
    /// Longer explanation (may be empty).
    pub description: String,
    /// Severity of the alerts this rule raises.
    pub severity: Severity,
    /// The stream whose events the rule evaluates.
    pub stream: String,
    /// Disabled rules are kept but never evaluated.
    pub enabled: bool,
    /// Free-form tags, for example ATT&CK technique ids.
    pub tags: Vec<String>,
    /// The `name` of the Sigma rule this rule was translated from: a Sigma correlation
    /// stored later may refer to the rule by it. `None` for rules without one (native rules,
    /// rules stored before names were kept).
    pub sigma_name: Option<String>,
    /// Names of configured sinks to notify; empty means every sink.
    pub sinks: Vec<String>,
    /// The condition an event must satisfy; `None` matches every event of the stream.
    pub condition: Option<Condition>,
    /// Makes the rule an aggregate rule: count matching events per group and window.
    pub threshold: Option<Threshold>,
    /// Distinct values of a field per group and window.
    pub distinct: Option<DistinctCount>,
    /// Ordered steps joined by a key within a maximum span.
    pub sequence: Option<Sequence>,
    /// A value not seen for its group in the recent past.
    pub new_value: Option<NewValue>,
    /// At most one alert per group per duration.
    pub suppress: Option<Suppression>,
    /// Alerts are recorded but not sent to sinks.
    pub shadow: bool,
    /// Most keys this rule's state keeps (windows × groups, sequence keys, new-value pairs,
    /// suppression groups), 1 to [`crate::MAX_RULE_KEYS`]; `None`: the engine's
    /// `max_groups_per_rule`. Only for stateful rules and rules with `suppress`.
    pub max_keys: Option<u64>,
}

/// A boolean condition over one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Every sub-condition holds.
    All(Vec<Condition>),
    /// At least one sub-condition holds.
    Any(Vec<Condition>),
    /// The sub-condition does not hold.
    Not(Box<Condition>),
    /// A test on one field.
    Field(FieldCondition),
    /// Named selections combined by a condition string (the Sigma model).
    Selections(Selections),
}

/// Named selections and the boolean condition over their names
/// (`sel1 and not (sel2 or 1 of filter_*)`; grammar in `docs/rules.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct Selections {
    /// The selections, by name, in document order.
    pub items: Vec<(String, Condition)>,
    /// The condition string over the names.
    pub condition: String,
}

/// A comparison of an ordered value against a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
}

impl Comparison {
    /// The operator's key in the document.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gt => "gt",
            Self::Gte => "gte",
            Self::Lt => "lt",
            Self::Lte => "lte",
        }
    }
}

/// A test on the value at one field path.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldCondition {
    /// Dotted field path (`requestParameters.policyArn`); `*` tests every value of the event
    /// (keyword search: the condition holds when any string, number or boolean anywhere in the
    /// event satisfies the operator).
    pub field: String,
    /// The operator and its operand.
    pub op: FieldOp,
    /// Compare strings case-insensitively (string operators only).
    pub ignore_case: bool,
}

/// Field operators. Operands of string operators may be one string or a list (any matches).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldOp {
    /// Equal to a string, number or boolean.
    Equals(Value),
    /// Equal to one of the listed strings, numbers or booleans.
    In(Vec<Value>),
    /// The text contains one of the strings.
    Contains(Vec<String>),
    /// The text starts with one of the strings.
    StartsWith(Vec<String>),
    /// The text ends with one of the strings.
    EndsWith(Vec<String>),
    /// The text matches the regular expression (unanchored, `regex` crate syntax).
    Regex(String),
    /// `true`: present and not null; `false`: absent or null.
    Exists(bool),
    /// Numerically greater than.
    Gt(f64),
    /// Numerically greater than or equal.
    Gte(f64),
    /// Numerically less than.
    Lt(f64),
    /// Numerically less than or equal.
    Lte(f64),
    /// An IP address inside one of the networks (`10.0.0.0/8`, `2001:db8::/32`).
    Cidr(Vec<String>),
    /// The whole text matches one of the wildcard patterns (`*`, `?`, `\` escapes).
    Wildcard(Vec<String>),
    /// The field, read as a time (RFC 3339 text or Unix seconds/milliseconds), compared with
    /// an RFC 3339 instant (written as `gt: "2026-01-01T00:00:00Z"`).
    Time {
        /// The comparison.
        comparison: Comparison,
        /// The bound as written.
        at: String,
    },
    /// Equal to the value of another field of the same event.
    EqualsField(String),
    /// Not equal to the value of another field of the same event; false, like every
    /// field-to-field operator, when either field is absent.
    NotEqualsField(String),
    /// Ordered against the value of another field of the same event (`gt_field`, ...):
    /// numbers by value, times as instants, other strings as text (both of one kind).
    CompareField {
        /// The comparison, the field's value on the left.
        comparison: Comparison,
        /// The other field's path.
        other: String,
    },
}

impl FieldOp {
    /// The operator's key in the document.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Equals(_) => "equals",
            Self::In(_) => "in",
            Self::Contains(_) => "contains",
            Self::StartsWith(_) => "startswith",
            Self::EndsWith(_) => "endswith",
            Self::Regex(_) => "regex",
            Self::Exists(_) => "exists",
            Self::Gt(_) => "gt",
            Self::Gte(_) => "gte",
            Self::Lt(_) => "lt",
            Self::Lte(_) => "lte",
            Self::Cidr(_) => "cidr",
            Self::Wildcard(_) => "wildcard",
            Self::Time { comparison, .. } => comparison.name(),
            Self::EqualsField(_) => "equals_field",
            Self::NotEqualsField(_) => "not_equals_field",
            Self::CompareField { comparison, .. } => match comparison {
                Comparison::Gt => "gt_field",
                Comparison::Gte => "gte_field",
                Comparison::Lt => "lt_field",
                Comparison::Lte => "lte_field",
            },
        }
    }

    /// Whether `ignore_case` means something for this operator.
    pub fn is_string_operator(&self) -> bool {
        matches!(
            self,
            Self::Equals(_)
                | Self::In(_)
                | Self::Contains(_)
                | Self::StartsWith(_)
                | Self::EndsWith(_)
                | Self::Regex(_)
                | Self::Wildcard(_)
                | Self::EqualsField(_)
                | Self::NotEqualsField(_)
                | Self::CompareField { .. }
        )
    }

    /// Whether the operator compares with another field of the event (and so cannot apply to a
    /// keyword search).
    pub fn is_field_reference(&self) -> bool {
        matches!(
            self,
            Self::EqualsField(_) | Self::NotEqualsField(_) | Self::CompareField { .. }
        )
    }
}

/// Every operator key, for error messages and the parser.
pub(crate) const OPERATORS: &[&str] = &[
    "equals",
    "in",
    "contains",
    "startswith",
    "endswith",
    "regex",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
    "cidr",
    "wildcard",
    "equals_field",
    "not_equals_field",
    "gt_field",
    "gte_field",
    "lt_field",
    "lte_field",
];

fn string_or_list(items: &[String]) -> Value {
    match items {
        [one] => Value::String(one.clone()),
        many => Value::Array(many.iter().cloned().map(Value::String).collect()),
    }
}

fn number(value: f64) -> Value {
    // Integral operands print as integers so a round trip keeps `gt: 5` as written.
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        Value::from(value as i64)
    } else {
        serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
    }
}

impl Condition {
    /// The condition as a JSON value in document form.
    pub fn to_value(&self) -> Value {
        let mut object = Map::new();
        match self {
            Self::All(items) => {
                object.insert(
                    "all".into(),
                    Value::Array(items.iter().map(Self::to_value).collect()),
                );
            }
            Self::Any(items) => {
                object.insert(
                    "any".into(),
                    Value::Array(items.iter().map(Self::to_value).collect()),
                );
            }
            Self::Not(inner) => {
                object.insert("not".into(), inner.to_value());
            }
            Self::Selections(selections) => {
                let items = selections
                    .items
                    .iter()
                    .map(|(name, condition)| (name.clone(), condition.to_value()))
                    .collect();
                object.insert("selections".into(), Value::Object(items));
                object.insert(
                    "condition".into(),
                    Value::String(selections.condition.clone()),
                );
            }
            Self::Field(leaf) => {
                object.insert("field".into(), Value::String(leaf.field.clone()));
                let operand = match &leaf.op {
                    FieldOp::Equals(value) => value.clone(),
                    FieldOp::In(values) => Value::Array(values.clone()),
                    FieldOp::Contains(items)
                    | FieldOp::StartsWith(items)
                    | FieldOp::EndsWith(items) => string_or_list(items),
                    FieldOp::Cidr(items) | FieldOp::Wildcard(items) => string_or_list(items),
                    FieldOp::Time { at, .. } => Value::String(at.clone()),
                    FieldOp::EqualsField(other)
                    | FieldOp::NotEqualsField(other)
                    | FieldOp::CompareField { other, .. } => Value::String(other.clone()),
                    FieldOp::Regex(text) => Value::String(text.clone()),
                    FieldOp::Exists(flag) => Value::Bool(*flag),
                    FieldOp::Gt(n) | FieldOp::Gte(n) | FieldOp::Lt(n) | FieldOp::Lte(n) => {
                        number(*n)
                    }
                };
                object.insert(leaf.op.name().into(), operand);
                if leaf.ignore_case {
                    object.insert("ignore_case".into(), Value::Bool(true));
                }
            }
        }
        Value::Object(object)
    }
}

impl Rule {
    /// The rule as a JSON value in document form (what [`Serialize`] writes).
    pub fn to_value(&self) -> Value {
        let mut object = Map::new();
        object.insert("id".into(), Value::String(self.id.clone()));
        object.insert("version".into(), Value::from(self.version));
        object.insert("title".into(), Value::String(self.title.clone()));
        object.insert(
            "description".into(),
            Value::String(self.description.clone()),
        );
        object.insert(
            "severity".into(),
            serde_json::to_value(self.severity).unwrap_or(Value::Null),
        );
        object.insert("stream".into(), Value::String(self.stream.clone()));
        object.insert("enabled".into(), Value::Bool(self.enabled));
        object.insert(
            "tags".into(),
            Value::Array(self.tags.iter().cloned().map(Value::String).collect()),
        );
        // Written only when set: the stored form of rules without one is unchanged.
        if let Some(name) = &self.sigma_name {
            object.insert("sigma_name".into(), Value::String(name.clone()));
        }
        object.insert(
            "sinks".into(),
            Value::Array(self.sinks.iter().cloned().map(Value::String).collect()),
        );
        if let Some(condition) = &self.condition {
            object.insert("match".into(), condition.to_value());
        }
        crate::stateful::write_sections(&self.sections(), &mut object);
        Value::Object(object)
    }

    /// The stateful sections, gathered (for writing and comparing).
    pub(crate) fn sections(&self) -> Sections {
        Sections {
            threshold: self.threshold.clone(),
            distinct: self.distinct.clone(),
            sequence: self.sequence.clone(),
            new_value: self.new_value.clone(),
            suppress: self.suppress.clone(),
            shadow: self.shadow,
            max_keys: self.max_keys,
        }
    }

    /// Builds a rule from a JSON value (already parsed from YAML or JSON), checking structure
    /// only; unknown fields are refused. Use [`crate::parse_rule`] to also validate.
    pub fn from_value(value: &Value) -> Result<Self, crate::RuleError> {
        crate::parse::rule_from_value(value)
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Rule {
    /// Structure is checked exactly as [`crate::parse_rule`] does (unknown fields refused), but
    /// not the semantics: call [`Rule::validate`] after deserializing untrusted input.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        crate::parse::rule_from_value(&value).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}
