//! The stateful sections of a rule document — `threshold`, `distinct`, `sequence`,
//! `new_value` — with `suppress` and `max_keys` (the bound on the state of all of them): their
//! types, how they are read from a JSON value (every problem located), and how they are
//! written back.
//!
//! A rule has at most one of the four kinds; without any it is a single-event rule.

use serde_json::{Map, Value};

use crate::RuleProblem;
use crate::document::Condition;

/// Comparison of a count with a bound: `{gt: 3}`, `{gte: 4}`, `{lt: 1}`, `{lte: 0}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountOp {
    /// More than.
    Gt,
    /// At least.
    Gte,
    /// Fewer than.
    Lt,
    /// At most.
    Lte,
}

impl CountOp {
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

/// `count: {gt: 3}`: when a count fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountBound {
    /// The comparison.
    pub op: CountOp,
    /// The bound.
    pub value: u64,
}

impl CountBound {
    /// Whether the bound fires on low counts (`lt`, `lte`): decided when a window closes.
    pub fn is_below(&self) -> bool {
        matches!(self.op, CountOp::Lt | CountOp::Lte)
    }

    /// Whether `count` satisfies the bound.
    pub fn holds(&self, count: u64) -> bool {
        match self.op {
            CountOp::Gt => count > self.value,
            CountOp::Gte => count >= self.value,
            CountOp::Lt => count < self.value,
            CountOp::Lte => count <= self.value,
        }
    }

    /// For an "above" bound: the smallest count that fires.
    pub(crate) fn firing_count(&self) -> u64 {
        match self.op {
            CountOp::Gt => self.value.saturating_add(1),
            CountOp::Gte => self.value.max(1),
            CountOp::Lt | CountOp::Lte => 0,
        }
    }

    fn to_value(self) -> Value {
        let mut object = Map::new();
        object.insert(self.op.name().into(), Value::from(self.value));
        Value::Object(object)
    }
}

/// Count of matching events per group in an event-time window, above or below a bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// When the count fires (`more_than: N` is `count: {gt: N}`).
    pub count: CountBound,
    /// Window length as written (`500ms`, `30s`, `5m`, `1h`, `1d`).
    pub window: String,
    /// `false`: tumbling windows aligned to the Unix epoch; `true`: a sliding window (any span
    /// shorter than `window`).
    pub sliding: bool,
    /// Field paths whose values form the group key; a missing value groups as `null`.
    pub group_by: Vec<String>,
}

/// Distinct values of a field per group in an event-time window, above a bound.
#[derive(Debug, Clone, PartialEq)]
pub struct DistinctCount {
    /// The field whose distinct values are counted (events without it are not counted).
    pub field: String,
    /// When the number of distinct values fires (`gt` or `gte`).
    pub count: CountBound,
    /// Window length.
    pub window: String,
    /// Tumbling (default) or sliding.
    pub sliding: bool,
    /// Group key fields.
    pub group_by: Vec<String>,
}

/// Ordered steps joined by a key within a maximum span.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// Fields joining the steps (`process.pid`); events without them join as `null`.
    pub by: Vec<String>,
    /// Longest time from the first to the last step.
    pub maxspan: String,
    /// The steps, in order; each is a condition.
    pub steps: Vec<Condition>,
    /// An event matching this between the first and the last step cancels the sequence.
    pub until: Option<Condition>,
    /// `true` (default): the steps must happen in the listed order, each by its own event.
    /// `false`: every step must be satisfied within `maxspan`, in any order (an event that
    /// satisfies several steps counts for each; Sigma's `temporal` correlation).
    pub ordered: bool,
}

/// A value not seen for its group in the last `history`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewValue {
    /// The field(s) whose (combined) value must be new.
    pub fields: Vec<String>,
    /// Group key fields (the value is new *for this group*).
    pub group_by: Vec<String>,
    /// How long a value stays known after it was last seen, in whole days (`30d`).
    pub history: String,
    /// Optional learning period from the rule's first event: values are recorded, not alerted.
    pub learn: Option<String>,
}

/// At most one alert per group per duration.
#[derive(Debug, Clone, PartialEq)]
pub struct Suppression {
    /// The duration (`10m`).
    pub duration: String,
    /// Fields forming the suppression group; `None`: the alert's own group (aggregate rules)
    /// or the whole rule (single-event rules).
    pub by: Option<Vec<String>>,
}

/// The stateful sections of one rule, as parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sections {
    pub(crate) threshold: Option<Threshold>,
    pub(crate) distinct: Option<DistinctCount>,
    pub(crate) sequence: Option<Sequence>,
    pub(crate) new_value: Option<NewValue>,
    pub(crate) suppress: Option<Suppression>,
    pub(crate) shadow: bool,
    /// The rule's own key limit (range checked when compiled).
    pub(crate) max_keys: Option<u64>,
}

const THRESHOLD_FIELDS: &[&str] = &["count", "more_than", "window", "sliding", "group_by"];
const DISTINCT_FIELDS: &[&str] = &["field", "count", "window", "sliding", "group_by"];
const SEQUENCE_FIELDS: &[&str] = &["by", "maxspan", "steps", "until", "ordered"];
const NEW_VALUE_FIELDS: &[&str] = &["field", "group_by", "history", "learn"];
const SUPPRESS_FIELDS: &[&str] = &["for", "by"];

/// Reads conditions (the match language is parsed in `parse.rs`).
pub(crate) type ConditionReader<'a> =
    dyn FnMut(&Value, &str, &mut Vec<RuleProblem>) -> Option<Condition> + 'a;

struct Reader<'p> {
    problems: &'p mut Vec<RuleProblem>,
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl Reader<'_> {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(RuleProblem::new(path, message));
    }

    fn object<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(object) => Some(object),
            other => {
                self.problem(path, format!("expected a mapping, found {}", kind(other)));
                None
            }
        }
    }

    fn unknown(&mut self, object: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in object.keys().filter(|k| !known.contains(&k.as_str())) {
            self.problem(
                &format!("{path}.{key}"),
                format!("unknown field (expected one of {})", known.join(", ")),
            );
        }
    }

    fn string(&mut self, object: &Map<String, Value>, path: &str, key: &str) -> String {
        match object.get(key) {
            Some(Value::String(text)) => text.clone(),
            Some(other) => {
                self.problem(
                    &format!("{path}.{key}"),
                    format!("expected a string, found {}", kind(other)),
                );
                String::new()
            }
            None => {
                self.problem(&format!("{path}.{key}"), "required field is missing");
                String::new()
            }
        }
    }

    fn optional_string(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<String> {
        match object.get(key) {
            None | Some(Value::Null) => None,
            Some(_) => Some(self.string(object, path, key)),
        }
    }

    fn flag(&mut self, object: &Map<String, Value>, path: &str, key: &str) -> bool {
        match object.get(key) {
            None => false,
            Some(Value::Bool(flag)) => *flag,
            Some(other) => {
                let at = if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                self.problem(
                    &at,
                    format!("expected true or false, found {}", kind(other)),
                );
                false
            }
        }
    }

    /// One field path or a list of them.
    fn paths(&mut self, value: Option<&Value>, at: &str) -> Vec<String> {
        match value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(text)) => vec![text.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| match item {
                    Value::String(text) => Some(text.clone()),
                    other => {
                        self.problem(
                            &format!("{at}[{index}]"),
                            format!("expected a string, found {}", kind(other)),
                        );
                        None
                    }
                })
                .collect(),
            Some(other) => {
                self.problem(
                    at,
                    format!(
                        "expected a field path or a list of them, found {}",
                        kind(other)
                    ),
                );
                Vec::new()
            }
        }
    }

    fn count(&mut self, object: &Map<String, Value>, path: &str) -> CountBound {
        let fallback = CountBound {
            op: CountOp::Gt,
            value: 0,
        };
        let integer = |this: &mut Self, value: &Value, at: &str| {
            value.as_u64().unwrap_or_else(|| {
                this.problem(
                    at,
                    format!("expected a non-negative integer, found {value}"),
                );
                0
            })
        };
        match (object.get("count"), object.get("more_than")) {
            (Some(_), Some(_)) => {
                self.problem(path, "give either `count` or `more_than`, not both");
                fallback
            }
            (None, Some(value)) => CountBound {
                op: CountOp::Gt,
                value: integer(self, value, &format!("{path}.more_than")),
            },
            (Some(value), None) => {
                let at = format!("{path}.count");
                let Some(bound) = self.object(value, &at) else {
                    return fallback;
                };
                let ops: Vec<(&String, &Value)> = bound.iter().collect();
                let [(name, operand)] = ops.as_slice() else {
                    self.problem(
                        &at,
                        "expected exactly one of gt, gte, lt, lte (e.g. `count: {gt: 3}`)",
                    );
                    return fallback;
                };
                let op = match name.as_str() {
                    "gt" => CountOp::Gt,
                    "gte" => CountOp::Gte,
                    "lt" => CountOp::Lt,
                    "lte" => CountOp::Lte,
                    other => {
                        self.problem(
                            &format!("{at}.{other}"),
                            "unknown comparison (expected gt, gte, lt or lte)",
                        );
                        return fallback;
                    }
                };
                CountBound {
                    op,
                    value: integer(self, operand, &format!("{at}.{name}")),
                }
            }
            (None, None) => {
                self.problem(
                    &format!("{path}.count"),
                    "required field is missing (e.g. `count: {gt: 3}`)",
                );
                fallback
            }
        }
    }

    fn threshold(&mut self, value: &Value) -> Option<Threshold> {
        let path = "threshold";
        let object = self.object(value, path)?;
        self.unknown(object, path, THRESHOLD_FIELDS);
        Some(Threshold {
            count: self.count(object, path),
            window: self.string(object, path, "window"),
            sliding: self.flag(object, path, "sliding"),
            group_by: self.paths(object.get("group_by"), "threshold.group_by"),
        })
    }

    fn distinct(&mut self, value: &Value) -> Option<DistinctCount> {
        let path = "distinct";
        let object = self.object(value, path)?;
        self.unknown(object, path, DISTINCT_FIELDS);
        Some(DistinctCount {
            field: self.string(object, path, "field"),
            count: self.count(object, path),
            window: self.string(object, path, "window"),
            sliding: self.flag(object, path, "sliding"),
            group_by: self.paths(object.get("group_by"), "distinct.group_by"),
        })
    }

    fn sequence(&mut self, value: &Value, conditions: &mut ConditionReader) -> Option<Sequence> {
        let path = "sequence";
        let object = self.object(value, path)?;
        self.unknown(object, path, SEQUENCE_FIELDS);
        let by = self.paths(object.get("by"), "sequence.by");
        let maxspan = self.string(object, path, "maxspan");
        let steps = match object.get("steps") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| {
                    conditions(item, &format!("sequence.steps[{index}]"), self.problems)
                })
                .collect(),
            Some(other) => {
                self.problem(
                    "sequence.steps",
                    format!("expected a list of conditions, found {}", kind(other)),
                );
                Vec::new()
            }
            None => {
                self.problem("sequence.steps", "required field is missing");
                Vec::new()
            }
        };
        let until = match object.get("until") {
            None | Some(Value::Null) => None,
            Some(value) => conditions(value, "sequence.until", self.problems),
        };
        // Absent means ordered: only an explicit `ordered: false` relaxes the order.
        let ordered = !object.contains_key("ordered") || self.flag(object, path, "ordered");
        Some(Sequence {
            by,
            maxspan,
            steps,
            until,
            ordered,
        })
    }

    fn new_value(&mut self, value: &Value) -> Option<NewValue> {
        let path = "new_value";
        let object = self.object(value, path)?;
        self.unknown(object, path, NEW_VALUE_FIELDS);
        let fields = self.paths(object.get("field"), "new_value.field");
        if fields.is_empty() && object.contains_key("field") {
            self.problem("new_value.field", "must name at least one field");
        } else if !object.contains_key("field") {
            self.problem("new_value.field", "required field is missing");
        }
        Some(NewValue {
            fields,
            group_by: self.paths(object.get("group_by"), "new_value.group_by"),
            history: self.string(object, path, "history"),
            learn: self.optional_string(object, path, "learn"),
        })
    }

    fn suppress(&mut self, value: &Value) -> Option<Suppression> {
        match value {
            Value::String(text) => Some(Suppression {
                duration: text.clone(),
                by: None,
            }),
            other => {
                let path = "suppress";
                let object = self.object(other, path)?;
                self.unknown(object, path, SUPPRESS_FIELDS);
                Some(Suppression {
                    duration: self.string(object, path, "for"),
                    by: object
                        .contains_key("by")
                        .then(|| self.paths(object.get("by"), "suppress.by")),
                })
            }
        }
    }

    fn max_keys(&mut self, value: &Value) -> Option<u64> {
        let keys = value.as_u64();
        if keys.is_none() {
            self.problem(
                "max_keys",
                format!("expected a positive whole number of keys, found {value}"),
            );
        }
        keys
    }
}

/// Reads the stateful sections of a rule object; problems are appended to `problems`.
pub(crate) fn read_sections(
    object: &Map<String, Value>,
    problems: &mut Vec<RuleProblem>,
    conditions: &mut ConditionReader,
) -> Sections {
    let mut reader = Reader { problems };
    let present = |key: &str| !matches!(object.get(key), None | Some(Value::Null));
    let sections = Sections {
        threshold: present("threshold")
            .then(|| reader.threshold(&object["threshold"]))
            .flatten(),
        distinct: present("distinct")
            .then(|| reader.distinct(&object["distinct"]))
            .flatten(),
        sequence: present("sequence")
            .then(|| reader.sequence(&object["sequence"], conditions))
            .flatten(),
        new_value: present("new_value")
            .then(|| reader.new_value(&object["new_value"]))
            .flatten(),
        suppress: present("suppress")
            .then(|| reader.suppress(&object["suppress"]))
            .flatten(),
        shadow: reader.flag(object, "", "shadow"),
        max_keys: present("max_keys")
            .then(|| reader.max_keys(&object["max_keys"]))
            .flatten(),
    };
    let kinds: Vec<&str> = ["threshold", "distinct", "sequence", "new_value"]
        .into_iter()
        .filter(|key| present(key))
        .collect();
    if kinds.len() > 1 {
        reader.problem(
            "",
            format!(
                "a rule has at most one of threshold, distinct, sequence, new_value; found {}",
                kinds.join(", ")
            ),
        );
    }
    sections
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

/// Writes the stateful sections into a rule object (the inverse of [`read_sections`]).
pub(crate) fn write_sections(sections: &Sections, object: &mut Map<String, Value>) {
    if let Some(t) = &sections.threshold {
        let mut m = Map::new();
        m.insert("count".into(), t.count.to_value());
        m.insert("window".into(), Value::String(t.window.clone()));
        if t.sliding {
            m.insert("sliding".into(), Value::Bool(true));
        }
        m.insert("group_by".into(), strings(&t.group_by));
        object.insert("threshold".into(), Value::Object(m));
    }
    if let Some(d) = &sections.distinct {
        let mut m = Map::new();
        m.insert("field".into(), Value::String(d.field.clone()));
        m.insert("count".into(), d.count.to_value());
        m.insert("window".into(), Value::String(d.window.clone()));
        if d.sliding {
            m.insert("sliding".into(), Value::Bool(true));
        }
        m.insert("group_by".into(), strings(&d.group_by));
        object.insert("distinct".into(), Value::Object(m));
    }
    if let Some(s) = &sections.sequence {
        let mut m = Map::new();
        m.insert("by".into(), strings(&s.by));
        m.insert("maxspan".into(), Value::String(s.maxspan.clone()));
        m.insert(
            "steps".into(),
            Value::Array(s.steps.iter().map(Condition::to_value).collect()),
        );
        if let Some(until) = &s.until {
            m.insert("until".into(), until.to_value());
        }
        // Written only when relaxed, so the fingerprint of ordered sequences is unchanged.
        if !s.ordered {
            m.insert("ordered".into(), Value::Bool(false));
        }
        object.insert("sequence".into(), Value::Object(m));
    }
    if let Some(n) = &sections.new_value {
        let mut m = Map::new();
        m.insert("field".into(), strings(&n.fields));
        m.insert("group_by".into(), strings(&n.group_by));
        m.insert("history".into(), Value::String(n.history.clone()));
        if let Some(learn) = &n.learn {
            m.insert("learn".into(), Value::String(learn.clone()));
        }
        object.insert("new_value".into(), Value::Object(m));
    }
    if let Some(s) = &sections.suppress {
        let mut m = Map::new();
        m.insert("for".into(), Value::String(s.duration.clone()));
        if let Some(by) = &s.by {
            m.insert("by".into(), strings(by));
        }
        object.insert("suppress".into(), Value::Object(m));
    }
    if sections.shadow {
        object.insert("shadow".into(), Value::Bool(true));
    }
    // Written only when set, so the documents (and fingerprints) of other rules are unchanged.
    if let Some(keys) = sections.max_keys {
        object.insert("max_keys".into(), Value::from(keys));
    }
}
