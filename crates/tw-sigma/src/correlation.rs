//! One Sigma correlation document → one native stateful rule over its base rules' conditions.
//!
//! The mapping (every correlation is evaluated on the stream, in event time):
//! - `event_count` → `threshold` on a sliding window of `timespan` (`gt`/`gte` fire at once,
//!   `lt`/`lte` when the watermark has passed the instant the count holds);
//! - `value_count` → `distinct` on a sliding window (`gt`/`gte`);
//! - `temporal_ordered` → `sequence` with one step per referenced rule, `maxspan: timespan`;
//! - `temporal` → the same sequence with `ordered: false` (every rule within the timespan, in
//!   any order).
//!
//! The `match` of the rule is any of the base rules' conditions, so only their events count;
//! `group-by` becomes the group key (`threshold.group_by`, `distinct.group_by`, `sequence.by`).

use serde_json::{Map, Value};
use tw_detect::{Condition, MAX_SEQUENCE_STEPS, Rule};

use crate::{SigmaConfig, SigmaError, name_of, optional_text, required_text, severity_of, tags_of};

/// Keys of the `correlation` section this crate reads.
const KNOWN_KEYS: &[&str] = &[
    "type",
    "rules",
    "group-by",
    "timespan",
    "condition",
    "aliases",
    "generate",
];

/// The correlation section, read and checked, before its references are resolved.
#[derive(Debug)]
pub(crate) struct Correlation {
    pub(crate) kind: Type,
    /// The referenced rules (`name` or `id`), in order.
    pub(crate) rules: Vec<String>,
    /// `generate: true`: the referenced rules of the same file also load as rules of their own.
    pub(crate) generate: bool,
    group_by: Vec<String>,
    /// The timespan as a native duration.
    window: String,
    bound: Option<(&'static str, u64)>,
    field: Option<String>,
}

/// The four correlation types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Type {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
}

/// Reads the `correlation` section of `document`; `Unsupported` names what Tidewatch cannot
/// evaluate.
pub(crate) fn read(document: &Map<String, Value>) -> Result<Correlation, SigmaError> {
    for key in ["detection", "logsource"] {
        if document.contains_key(key) {
            return Err(SigmaError::invalid(
                "a correlation rule has no `detection` or `logsource` (they belong to the rules it refers to)",
                key,
            ));
        }
    }
    let Some(Value::Object(section)) = document.get("correlation") else {
        return Err(SigmaError::invalid("expected a mapping", "correlation"));
    };
    if let Some(key) = section.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
        return Err(SigmaError::unsupported(
            format!("correlation attribute `{key}`"),
            format!("correlation.{key}"),
        ));
    }
    let kind = match section.get("type") {
        Some(Value::String(name)) => match name.as_str() {
            "event_count" => Type::EventCount,
            "value_count" => Type::ValueCount,
            "temporal" => Type::Temporal,
            "temporal_ordered" => Type::TemporalOrdered,
            other => {
                return Err(SigmaError::unsupported(
                    format!(
                        "correlation type `{other}` (supported: event_count, value_count, temporal, temporal_ordered)"
                    ),
                    "correlation.type",
                ));
            }
        },
        Some(_) => return Err(SigmaError::invalid("expected a string", "correlation.type")),
        None => {
            return Err(SigmaError::invalid(
                "required field is missing",
                "correlation.type",
            ));
        }
    };
    let rules = strings(section.get("rules"), "correlation.rules")?;
    if rules.is_empty() {
        return Err(SigmaError::invalid(
            "a correlation refers to at least one rule",
            "correlation.rules",
        ));
    }
    match section.get("aliases") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) if map.is_empty() => {}
        Some(_) => {
            return Err(SigmaError::unsupported(
                "field name `aliases` (a group-by field named differently per rule; every rule of a correlation is grouped by the same fields)",
                "correlation.aliases",
            ));
        }
    }
    let group_by = strings(section.get("group-by"), "correlation.group-by")?;
    let window = match section.get("timespan") {
        Some(Value::String(text)) => timespan(text)?,
        Some(_) => {
            return Err(SigmaError::invalid(
                "expected a string such as 10m",
                "correlation.timespan",
            ));
        }
        None => {
            return Err(SigmaError::invalid(
                "required field is missing",
                "correlation.timespan",
            ));
        }
    };
    // `generate` is a top-level attribute in the specification; pySigma also reads it inside
    // the correlation section.
    let generate = match (document.get("generate"), section.get("generate")) {
        (Some(Value::Bool(a)), _) => *a,
        (None, Some(Value::Bool(b))) => *b,
        (None, None) => false,
        (Some(_), _) => return Err(SigmaError::invalid("expected true or false", "generate")),
        (None, Some(_)) => {
            return Err(SigmaError::invalid(
                "expected true or false",
                "correlation.generate",
            ));
        }
    };
    let (bound, field) = condition(section.get("condition"), kind, rules.len())?;
    Ok(Correlation {
        kind,
        rules,
        generate,
        group_by,
        window,
        bound,
        field,
    })
}

fn strings(value: Option<&Value>, place: &str) -> Result<Vec<String>, SigmaError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::String(text) if !text.is_empty() => Ok(text.clone()),
                _ => Err(SigmaError::invalid(
                    "expected a non-empty string",
                    format!("{place}[{index}]"),
                )),
            })
            .collect(),
        Some(_) => Err(SigmaError::invalid(
            "expected a string or a list of strings",
            place,
        )),
    }
}

/// A Sigma timespan (`number + unit`: s, m, h, d, and pySigma's w) as a native duration.
fn timespan(text: &str) -> Result<String, SigmaError> {
    let place = "correlation.timespan";
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let amount: u64 = digits.parse().map_err(|_| {
        SigmaError::invalid(
            format!("invalid timespan {text:?} (expected a number and a unit: s, m, h, d or w)"),
            place,
        )
    })?;
    let native = match unit {
        "s" | "m" | "h" | "d" => format!("{amount}{unit}"),
        "w" => format!("{}d", amount.saturating_mul(7)),
        "M" | "y" => {
            return Err(SigmaError::unsupported(
                format!("timespan unit `{unit}` (months and years have no fixed length; use d)"),
                place,
            ));
        }
        _ => {
            return Err(SigmaError::invalid(
                format!(
                    "invalid timespan {text:?} (expected a number and a unit: s, m, h, d or w)"
                ),
                place,
            ));
        }
    };
    tw_detect::parse_duration_ms(&native).map_err(|message| SigmaError::invalid(message, place))?;
    Ok(native)
}

type Bound = (Option<(&'static str, u64)>, Option<String>);

/// The condition: one bound (and `field` for value_count). Temporal types take only "all of
/// the rules", their default.
fn condition(value: Option<&Value>, kind: Type, rules: usize) -> Result<Bound, SigmaError> {
    let place = "correlation.condition";
    let temporal = matches!(kind, Type::Temporal | Type::TemporalOrdered);
    let map = match value {
        None | Some(Value::Null) if temporal => return Ok((None, None)),
        None | Some(Value::Null) => {
            return Err(SigmaError::invalid("required field is missing", place));
        }
        Some(Value::String(_)) if temporal => {
            return Err(SigmaError::unsupported(
                "extended (boolean expression) temporal conditions",
                place,
            ));
        }
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(SigmaError::invalid(
                "expected a mapping such as {gte: 10}",
                place,
            ));
        }
    };
    let mut bounds = Vec::new();
    let mut field = None;
    for (key, operand) in map {
        let at = format!("{place}.{key}");
        match key.as_str() {
            "gt" | "gte" | "lt" | "lte" | "eq" => {
                let name = match key.as_str() {
                    "gt" => "gt",
                    "gte" => "gte",
                    "lt" => "lt",
                    "lte" => "lte",
                    _ => "eq",
                };
                let count = operand.as_u64().ok_or_else(|| {
                    SigmaError::invalid(
                        format!("expected a non-negative integer, found {operand}"),
                        &at,
                    )
                })?;
                bounds.push((name, count));
            }
            "field" => {
                let fields = strings(Some(operand), &at)?;
                match fields.as_slice() {
                    [one] => field = Some(one.clone()),
                    [] => return Err(SigmaError::invalid("names no field", at)),
                    _ => {
                        return Err(SigmaError::unsupported(
                            "counting the combined values of several fields",
                            at,
                        ));
                    }
                }
            }
            "neq" | "percentile" => {
                return Err(SigmaError::unsupported(format!("condition `{key}`"), at));
            }
            other => {
                return Err(SigmaError::invalid(
                    format!("unknown condition `{other}` (expected gt, gte, lt, lte or eq)"),
                    at,
                ));
            }
        }
    }
    let bound = match bounds.as_slice() {
        [one] => *one,
        [] => {
            return Err(SigmaError::invalid(
                "expected one of gt, gte, lt, lte, eq",
                place,
            ));
        }
        _ => {
            return Err(SigmaError::unsupported(
                "a range condition (two bounds); chain two correlations or use one bound",
                place,
            ));
        }
    };
    match kind {
        Type::EventCount | Type::ValueCount if field.is_some() != (kind == Type::ValueCount) => {
            Err(if kind == Type::ValueCount {
                SigmaError::invalid(
                    "a value_count condition names the counted `field`",
                    format!("{place}.field"),
                )
            } else {
                SigmaError::invalid(
                    "`field` belongs to value_count conditions",
                    format!("{place}.field"),
                )
            })
        }
        Type::EventCount | Type::ValueCount if bound.0 == "eq" => Err(SigmaError::unsupported(
            "condition `eq` on a count (an exact count is only known once a window has closed; correlations run on sliding windows: use gte/gt or lt/lte)",
            format!("{place}.eq"),
        )),
        Type::ValueCount if matches!(bound.0, "lt" | "lte") => Err(SigmaError::unsupported(
            format!(
                "condition `{}` on value_count (a distinct count fires above a bound: use gt or gte)",
                bound.0
            ),
            format!("{place}.{}", bound.0),
        )),
        Type::EventCount | Type::ValueCount => Ok((Some(bound), field)),
        Type::Temporal | Type::TemporalOrdered => {
            let rules = rules as u64;
            let all = matches!(bound, ("gte" | "eq", n) if n == rules)
                || matches!(bound, ("gt", n) if n + 1 == rules);
            if field.is_some() {
                return Err(SigmaError::invalid(
                    "`field` belongs to value_count conditions",
                    format!("{place}.field"),
                ));
            }
            if !all {
                return Err(SigmaError::unsupported(
                    format!(
                        "a temporal condition other than all {rules} referenced rules (`{}: {}`)",
                        bound.0, bound.1
                    ),
                    format!("{place}.{}", bound.0),
                ));
            }
            Ok((None, None))
        }
    }
}

/// Builds the native rule of a correlation whose references resolved to `bases`
/// (`(reference, rule)`, in the order of `correlation.rules`).
pub(crate) fn build(
    document: &Map<String, Value>,
    correlation: &Correlation,
    bases: &[(String, Rule)],
    config: &SigmaConfig,
) -> Result<Rule, SigmaError> {
    let id = match document.get("id") {
        None | Some(Value::Null) => match document.get("name") {
            Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
            _ => {
                return Err(SigmaError::invalid(
                    "a correlation rule needs an `id` (or a `name`): it becomes the rule id",
                    "id",
                ));
            }
        },
        Some(_) => required_text(document, "id")?,
    };
    let title = required_text(document, "title")?;
    let description = optional_text(document, "description")?;
    let severity = severity_of(document)?;
    let tags = tags_of(document)?;
    let name = name_of(document)?;
    let first_stream = &bases[0].1.stream;
    if let Some((reference, other)) = bases.iter().find(|(_, r)| &r.stream != first_stream) {
        return Err(SigmaError::unsupported(
            format!(
                "a correlation over rules of different streams (`{}` reads stream `{first_stream}`, `{reference}` reads `{}`): a correlation is evaluated on one stream",
                bases[0].0, other.stream
            ),
            "correlation.rules",
        ));
    }
    let mut conditions = Vec::with_capacity(bases.len());
    for (index, (reference, rule)) in bases.iter().enumerate() {
        match &rule.condition {
            Some(condition) => conditions.push(condition.clone()),
            None => {
                return Err(SigmaError::unsupported(
                    format!("a referenced rule without a condition (`{reference}`)"),
                    format!("correlation.rules[{index}]"),
                ));
            }
        }
    }
    let group_by: Vec<Value> = correlation
        .group_by
        .iter()
        .map(|field| Value::String(config.fields.path_for(field)))
        .collect();
    let mut native = Map::new();
    let bound = |(op, value): (&str, u64)| {
        let mut count = Map::new();
        count.insert(op.to_string(), Value::from(value));
        Value::Object(count)
    };
    match correlation.kind {
        Type::EventCount | Type::ValueCount => {
            let Some(count) = correlation.bound else {
                return Err(SigmaError::invalid(
                    "required field is missing",
                    "correlation.condition",
                ));
            };
            let mut section = Map::new();
            section.insert("count".into(), bound(count));
            section.insert("window".into(), Value::String(correlation.window.clone()));
            section.insert("sliding".into(), Value::Bool(true));
            section.insert("group_by".into(), Value::Array(group_by));
            let key = if correlation.kind == Type::ValueCount {
                let field = correlation.field.as_deref().unwrap_or_default();
                section.insert("field".into(), Value::String(config.fields.path_for(field)));
                "distinct"
            } else {
                "threshold"
            };
            native.insert(key.into(), Value::Object(section));
        }
        Type::Temporal | Type::TemporalOrdered => {
            if !(2..=MAX_SEQUENCE_STEPS).contains(&conditions.len()) {
                return Err(SigmaError::invalid(
                    format!(
                        "a temporal correlation refers to 2 to {MAX_SEQUENCE_STEPS} rules, found {}",
                        conditions.len()
                    ),
                    "correlation.rules",
                ));
            }
            let mut section = Map::new();
            section.insert("by".into(), Value::Array(group_by));
            section.insert("maxspan".into(), Value::String(correlation.window.clone()));
            section.insert(
                "steps".into(),
                Value::Array(conditions.iter().map(Condition::to_value).collect()),
            );
            if correlation.kind == Type::Temporal {
                section.insert("ordered".into(), Value::Bool(false));
            }
            native.insert("sequence".into(), Value::Object(section));
        }
    }
    // Only events of the referenced rules count (and are evaluated against the steps).
    let matched = if conditions.len() == 1 {
        conditions.remove(0)
    } else {
        Condition::Any(conditions)
    };
    native.insert("id".into(), Value::String(id));
    native.insert("title".into(), Value::String(title));
    native.insert("description".into(), Value::String(description));
    native.insert(
        "severity".into(),
        serde_json::to_value(severity).unwrap_or(Value::Null),
    );
    native.insert("stream".into(), Value::String(first_stream.clone()));
    native.insert("enabled".into(), Value::Bool(true));
    native.insert(
        "tags".into(),
        Value::Array(tags.into_iter().map(Value::String).collect()),
    );
    if let Some(name) = name {
        native.insert("sigma_name".into(), Value::String(name));
    }
    native.insert("match".into(), matched.to_value());
    let rule = Rule::from_value(&Value::Object(native))?;
    rule.validate()?;
    Ok(rule)
}
