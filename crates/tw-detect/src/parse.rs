//! Text → JSON value → [`Rule`], collecting every structural problem with its document path.
//!
//! YAML and JSON both become a `serde_json::Value` first, so there is exactly one code path
//! that interprets a rule and one set of error messages for both formats.

use serde_json::{Map, Value};

use crate::document::{
    Comparison, Condition, FieldCondition, FieldOp, OPERATORS, Rule, Selections,
};
use crate::{RuleError, RuleProblem};

/// Deepest accepted nesting of `all`/`any`/`not`: evaluation recurses, so depth is bounded here.
pub(crate) const MAX_CONDITION_DEPTH: usize = 32;

/// Which syntax a rule text is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleFormat {
    /// JSON.
    Json,
    /// YAML (1.2, via `serde-saphyr`).
    Yaml,
    /// JSON when the first non-blank character is `{`, YAML otherwise.
    #[default]
    Auto,
}

/// Parses and validates a rule written in YAML or JSON; every problem is reported at once.
pub fn parse_rule(text: &str, format: RuleFormat) -> Result<Rule, RuleError> {
    let value = parse_value(text, format)?;
    let rule = rule_from_value(&value)?;
    rule.validate()?;
    Ok(rule)
}

/// Parses the text into a JSON value without interpreting it as a rule.
pub(crate) fn parse_value(text: &str, format: RuleFormat) -> Result<Value, RuleError> {
    let format = match format {
        RuleFormat::Auto if text.trim_start().starts_with('{') => RuleFormat::Json,
        RuleFormat::Auto => RuleFormat::Yaml,
        other => other,
    };
    match format {
        RuleFormat::Json => serde_json::from_str(text).map_err(|error| RuleError::Syntax {
            format: "json",
            message: error.to_string(),
        }),
        _ => {
            // YAML 1.2 core booleans only: in YAML 1.1 an unquoted `No` (say `MFAUsed: No`)
            // or a field named `n` would silently become `false`. Duplicate keys are an error
            // rather than "last wins", so a rule never means something other than it reads.
            let options = serde_saphyr::options! {
                strict_booleans: true,
                duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
            };
            serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|error| {
                RuleError::Syntax {
                    format: "yaml",
                    message: error.to_string(),
                }
            })
        }
    }
}

const RULE_FIELDS: &[&str] = &[
    "id",
    "version",
    "title",
    "description",
    "severity",
    "stream",
    "enabled",
    "tags",
    "sigma_name",
    "sinks",
    "match",
    "threshold",
    "distinct",
    "sequence",
    "new_value",
    "suppress",
    "shadow",
    "max_keys",
];
/// Keys that make a condition mapping something other than the short form
/// `{path: {operator: operand}}`.
const RESERVED_KEYS: &[&str] = &["all", "any", "not", "field", "selections", "condition"];

/// Collects problems while walking the document.
struct Walker {
    problems: Vec<RuleProblem>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
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

impl Walker {
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

    fn unknown_fields(&mut self, object: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in object.keys().filter(|key| !known.contains(&key.as_str())) {
            self.problem(
                &join(path, key),
                format!("unknown field (expected one of {})", known.join(", ")),
            );
        }
    }

    fn string(&mut self, value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(text) => Some(text.clone()),
            other => {
                self.problem(path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    fn required_string(&mut self, object: &Map<String, Value>, path: &str, key: &str) -> String {
        match object.get(key) {
            Some(value) => self.string(value, &join(path, key)).unwrap_or_default(),
            None => {
                self.problem(&join(path, key), "required field is missing");
                String::new()
            }
        }
    }

    fn bool(&mut self, value: &Value, path: &str) -> Option<bool> {
        match value {
            Value::Bool(flag) => Some(*flag),
            other => {
                self.problem(
                    path,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn string_list(&mut self, value: &Value, path: &str) -> Vec<String> {
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| self.string(item, &format!("{path}[{index}]")))
                .collect(),
            other => {
                self.problem(
                    path,
                    format!("expected a list of strings, found {}", kind(other)),
                );
                Vec::new()
            }
        }
    }

    /// One string or a list of strings (string operators and `cidr`).
    fn one_or_many(&mut self, value: &Value, path: &str) -> Vec<String> {
        match value {
            Value::String(text) => vec![text.clone()],
            Value::Array(_) => {
                let items = self.string_list(value, path);
                if items.is_empty() {
                    self.problem(path, "list must not be empty");
                }
                items
            }
            other => {
                self.problem(
                    path,
                    format!(
                        "expected a string or a list of strings, found {}",
                        kind(other)
                    ),
                );
                Vec::new()
            }
        }
    }

    fn scalar(&mut self, value: &Value, path: &str) -> Option<Value> {
        match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Some(value.clone()),
            other => {
                self.problem(
                    path,
                    format!(
                        "expected a string, number or boolean, found {}",
                        kind(other)
                    ),
                );
                None
            }
        }
    }

    fn number(&mut self, value: &Value, path: &str) -> Option<f64> {
        match value.as_f64() {
            Some(number) if value.is_number() => Some(number),
            _ => {
                self.problem(path, format!("expected a number, found {}", kind(value)));
                None
            }
        }
    }

    fn rule(&mut self, value: &Value) -> Option<Rule> {
        let object = self.object(value, "")?;
        self.unknown_fields(object, "", RULE_FIELDS);
        let id = self.required_string(object, "", "id");
        let title = self.required_string(object, "", "title");
        let stream = self.required_string(object, "", "stream");
        let description = match object.get("description") {
            Some(Value::Null) | None => String::new(),
            Some(value) => self.string(value, "description").unwrap_or_default(),
        };
        let version = match object.get("version") {
            None => 0,
            Some(value) => value.as_u64().unwrap_or_else(|| {
                self.problem(
                    "version",
                    format!("expected a non-negative integer, found {}", kind(value)),
                );
                0
            }),
        };
        let severity = match object.get("severity") {
            None => tw_core::Severity::default(),
            Some(value) => match self.string(value, "severity").map(|text| text.parse()) {
                Some(Ok(severity)) => severity,
                Some(Err(message)) => {
                    self.problem("severity", message);
                    tw_core::Severity::default()
                }
                None => tw_core::Severity::default(),
            },
        };
        let enabled = object
            .get("enabled")
            .map_or(Some(true), |value| self.bool(value, "enabled"))
            .unwrap_or(true);
        let tags = object
            .get("tags")
            .map(|value| self.string_list(value, "tags"))
            .unwrap_or_default();
        let sinks = object
            .get("sinks")
            .map(|value| self.string_list(value, "sinks"))
            .unwrap_or_default();
        let sigma_name = match object.get("sigma_name") {
            None | Some(Value::Null) => None,
            Some(value) => self.string(value, "sigma_name").filter(|name| {
                let empty = name.trim().is_empty();
                if empty {
                    self.problem("sigma_name", "must not be empty (leave it out instead)");
                }
                !empty
            }),
        };
        let condition = match object.get("match") {
            None | Some(Value::Null) => None,
            Some(value) => self.condition(value, "match", 1),
        };
        let sections = crate::stateful::read_sections(
            object,
            &mut self.problems,
            &mut |value, path, problems| condition_from_value(value, path, problems),
        );
        Some(Rule {
            id,
            version,
            title,
            description,
            severity,
            stream,
            enabled,
            tags,
            sigma_name,
            sinks,
            condition,
            threshold: sections.threshold,
            distinct: sections.distinct,
            sequence: sections.sequence,
            new_value: sections.new_value,
            suppress: sections.suppress,
            shadow: sections.shadow,
            max_keys: sections.max_keys,
        })
    }

    fn condition(&mut self, value: &Value, path: &str, depth: usize) -> Option<Condition> {
        if depth > MAX_CONDITION_DEPTH {
            self.problem(
                path,
                format!("conditions nest deeper than {MAX_CONDITION_DEPTH} levels"),
            );
            return None;
        }
        let object = self.object(value, path)?;
        if object.contains_key("field") {
            return self.field_condition(object, path);
        }
        if object.contains_key("selections") || object.contains_key("condition") {
            return self.selections(object, path, depth);
        }
        if !object.is_empty()
            && !object
                .keys()
                .any(|key| RESERVED_KEYS.contains(&key.as_str()))
        {
            return self.shorthand(object, path);
        }
        let combinators: Vec<&String> = object
            .keys()
            .filter(|key| matches!(key.as_str(), "all" | "any" | "not"))
            .collect();
        if combinators.len() != 1 || object.len() != 1 {
            self.problem(
                path,
                "expected exactly one of `all`, `any`, `not`, `selections` with `condition`, or a field condition (`field` with one operator)",
            );
            return None;
        }
        let key = combinators[0].as_str();
        let inner_path = join(path, key);
        let inner = &object[key];
        if key == "not" {
            return self
                .condition(inner, &inner_path, depth + 1)
                .map(|c| Condition::Not(Box::new(c)));
        }
        let Value::Array(items) = inner else {
            self.problem(
                &inner_path,
                format!("expected a list of conditions, found {}", kind(inner)),
            );
            return None;
        };
        if items.is_empty() {
            self.problem(&inner_path, "list must not be empty");
        }
        let before = self.problems.len();
        let children: Vec<Condition> = items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| {
                self.condition(item, &format!("{inner_path}[{index}]"), depth + 1)
            })
            .collect();
        if self.problems.len() != before {
            return None;
        }
        Some(if key == "all" {
            Condition::All(children)
        } else {
            Condition::Any(children)
        })
    }

    /// `{amount: {gt: 1000}, eventName: ConsoleLogin}`: each key a field path, each value an
    /// operator mapping (with optional `ignore_case`) or a scalar meaning `equals`; several
    /// keys must all hold.
    fn shorthand(&mut self, object: &Map<String, Value>, path: &str) -> Option<Condition> {
        let before = self.problems.len();
        let mut items = Vec::with_capacity(object.len());
        for (field, spec) in object {
            let at = join(path, field);
            let mut long = Map::new();
            long.insert("field".into(), Value::String(field.clone()));
            match spec {
                Value::Object(operators) => {
                    if let Some(key) = operators.keys().find(|k| k.as_str() == "field") {
                        self.problem(&join(&at, key), "unknown field in a short-form condition");
                        continue;
                    }
                    long.extend(operators.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    long.insert("equals".into(), spec.clone());
                }
                other => {
                    self.problem(
                        &at,
                        format!(
                            "expected an operator mapping (`{{gt: 1000}}`) or a value, found {}",
                            kind(other)
                        ),
                    );
                    continue;
                }
            }
            if let Some(condition) = self.field_condition(&long, &at) {
                items.push(condition);
            }
        }
        if self.problems.len() != before {
            return None;
        }
        Some(if items.len() == 1 {
            items.remove(0)
        } else {
            Condition::All(items)
        })
    }

    /// `selections: {name: condition, ...}` with `condition: "name and not other"`.
    fn selections(
        &mut self,
        object: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Option<Condition> {
        self.unknown_fields(object, path, &["selections", "condition"]);
        let condition = self.required_string(object, path, "condition");
        let selections_path = join(path, "selections");
        let Some(map) = object.get("selections") else {
            self.problem(&selections_path, "required field is missing");
            return None;
        };
        let map = self.object(map, &selections_path)?;
        if map.is_empty() {
            self.problem(&selections_path, "must name at least one selection");
        }
        let before = self.problems.len();
        let items: Vec<(String, Condition)> = map
            .iter()
            .filter_map(|(name, value)| {
                let inner = self.condition(value, &join(&selections_path, name), depth + 1)?;
                Some((name.clone(), inner))
            })
            .collect();
        (self.problems.len() == before)
            .then_some(Condition::Selections(Selections { items, condition }))
    }

    fn field_condition(&mut self, object: &Map<String, Value>, path: &str) -> Option<Condition> {
        let field = self.string(&object["field"], &join(path, "field"))?;
        let mut ignore_case = false;
        let mut operators = Vec::new();
        for (key, value) in object {
            match key.as_str() {
                "field" => {}
                "ignore_case" => ignore_case = self.bool(value, &join(path, key)).unwrap_or(false),
                name if OPERATORS.contains(&name) => operators.push((name, value)),
                _ => self.problem(
                    &join(path, key),
                    format!(
                        "unknown field (expected `ignore_case` or one operator of {})",
                        OPERATORS.join(", ")
                    ),
                ),
            }
        }
        let [(name, operand)] = operators.as_slice() else {
            let found: Vec<&str> = operators.iter().map(|(name, _)| *name).collect();
            let message = if found.is_empty() {
                format!("missing operator (one of {})", OPERATORS.join(", "))
            } else {
                format!(
                    "exactly one operator per field condition, found {}",
                    found.join(", ")
                )
            };
            self.problem(path, message);
            return None;
        };
        let at = join(path, name);
        let op = match *name {
            "equals" => FieldOp::Equals(self.scalar(operand, &at)?),
            "in" => {
                let Value::Array(items) = operand else {
                    self.problem(&at, format!("expected a list, found {}", kind(operand)));
                    return None;
                };
                if items.is_empty() {
                    self.problem(&at, "list must not be empty");
                }
                let values: Vec<Value> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(index, item)| self.scalar(item, &format!("{at}[{index}]")))
                    .collect();
                FieldOp::In(values)
            }
            "contains" => FieldOp::Contains(self.one_or_many(operand, &at)),
            "startswith" => FieldOp::StartsWith(self.one_or_many(operand, &at)),
            "endswith" => FieldOp::EndsWith(self.one_or_many(operand, &at)),
            "cidr" => FieldOp::Cidr(self.one_or_many(operand, &at)),
            "wildcard" => FieldOp::Wildcard(self.one_or_many(operand, &at)),
            "equals_field" => FieldOp::EqualsField(self.string(operand, &at)?),
            "not_equals_field" => FieldOp::NotEqualsField(self.string(operand, &at)?),
            "gt_field" | "gte_field" | "lt_field" | "lte_field" => FieldOp::CompareField {
                comparison: match *name {
                    "gt_field" => Comparison::Gt,
                    "gte_field" => Comparison::Gte,
                    "lt_field" => Comparison::Lt,
                    _ => Comparison::Lte,
                },
                other: self.string(operand, &at)?,
            },
            "gt" | "gte" | "lt" | "lte" if operand.is_string() => FieldOp::Time {
                comparison: match *name {
                    "gt" => Comparison::Gt,
                    "gte" => Comparison::Gte,
                    "lt" => Comparison::Lt,
                    _ => Comparison::Lte,
                },
                at: self.string(operand, &at)?,
            },
            "regex" => FieldOp::Regex(self.string(operand, &at)?),
            "exists" => FieldOp::Exists(self.bool(operand, &at)?),
            "gt" => FieldOp::Gt(self.number(operand, &at)?),
            "gte" => FieldOp::Gte(self.number(operand, &at)?),
            "lt" => FieldOp::Lt(self.number(operand, &at)?),
            _ => FieldOp::Lte(self.number(operand, &at)?),
        };
        Some(Condition::Field(FieldCondition {
            field,
            op,
            ignore_case,
        }))
    }
}

/// Builds a [`Rule`] from a JSON value, checking structure only (types, required and unknown
/// fields); every structural problem is reported.
pub(crate) fn rule_from_value(value: &Value) -> Result<Rule, RuleError> {
    let mut walker = Walker {
        problems: Vec::new(),
    };
    let rule = walker.rule(value);
    match rule {
        Some(rule) if walker.problems.is_empty() => Ok(rule),
        _ => Err(RuleError::Invalid {
            problems: walker.problems,
        }),
    }
}

/// Reads one condition (a sequence step) at `path`, appending its problems to `problems`.
pub(crate) fn condition_from_value(
    value: &Value,
    path: &str,
    problems: &mut Vec<RuleProblem>,
) -> Option<Condition> {
    let mut walker = Walker {
        problems: std::mem::take(problems),
    };
    let condition = walker.condition(value, path, 1);
    *problems = walker.problems;
    condition
}
