//! The `detection:` section → named selections and the condition string.
//!
//! A selection is a mapping (every field item holds), a list of mappings (any of them holds),
//! or a list of plain values (keywords: any of them occurs in any field of the event).

use serde_json::{Map, Value};
use tw_detect::Condition;

use crate::modifiers::field_item;
use crate::{SigmaConfig, SigmaError};

/// Translates `detection` into selections (document order) and one condition string.
pub(crate) fn translate(
    detection: &Map<String, Value>,
    config: &SigmaConfig,
) -> Result<(Vec<(String, Condition)>, String), SigmaError> {
    if detection.contains_key("timeframe") {
        return Err(SigmaError::unsupported(
            "`timeframe` (aggregations over time; write a threshold rule)",
            "detection.timeframe",
        ));
    }
    let condition = match detection.get("condition") {
        Some(Value::String(text)) => text.clone(),
        // Several conditions: the rule matches when any of them does.
        Some(Value::Array(items)) if !items.is_empty() => {
            let texts: Vec<String> = items
                .iter()
                .enumerate()
                .map(|(index, item)| match item {
                    Value::String(text) => Ok(format!("({text})")),
                    _ => Err(SigmaError::invalid(
                        "expected a string",
                        format!("detection.condition[{index}]"),
                    )),
                })
                .collect::<Result<_, _>>()?;
            texts.join(" or ")
        }
        Some(_) => {
            return Err(SigmaError::invalid(
                "expected a string or a list of strings",
                "detection.condition",
            ));
        }
        None => {
            return Err(SigmaError::invalid(
                "required field is missing",
                "detection.condition",
            ));
        }
    };
    let mut selections = Vec::new();
    for (name, value) in detection {
        if name == "condition" {
            continue;
        }
        let place = format!("detection.{name}");
        selections.push((name.clone(), selection(value, config, &place)?));
    }
    if selections.is_empty() {
        return Err(SigmaError::invalid("no selections", "detection"));
    }
    Ok((selections, condition))
}

fn selection(value: &Value, config: &SigmaConfig, place: &str) -> Result<Condition, SigmaError> {
    match value {
        Value::Object(map) => mapping(map, config, place),
        Value::Array(items) if items.is_empty() => {
            Err(SigmaError::invalid("empty selection", place))
        }
        Value::Array(items) if items.iter().all(Value::is_object) => {
            let mut alternatives = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                if let Value::Object(map) = item {
                    alternatives.push(mapping(map, config, &format!("{place}[{index}]"))?);
                }
            }
            Ok(if alternatives.len() == 1 {
                alternatives.remove(0)
            } else {
                Condition::Any(alternatives)
            })
        }
        Value::Array(items) if items.iter().all(|i| i.is_string() || i.is_number()) => {
            field_item("", value, config, place)
        }
        Value::Array(_) => Err(SigmaError::unsupported(
            "a selection list mixing field mappings and keywords",
            place,
        )),
        Value::String(_) | Value::Number(_) => field_item("", value, config, place),
        _ => Err(SigmaError::invalid(
            "a selection must be a mapping, a list of mappings or a list of keywords",
            place,
        )),
    }
}

fn mapping(
    map: &Map<String, Value>,
    config: &SigmaConfig,
    place: &str,
) -> Result<Condition, SigmaError> {
    if map.is_empty() {
        return Err(SigmaError::invalid("empty selection", place));
    }
    let mut items = Vec::with_capacity(map.len());
    for (key, value) in map {
        items.push(field_item(key, value, config, &format!("{place}.{key}"))?);
    }
    Ok(if items.len() == 1 {
        items.remove(0)
    } else {
        Condition::All(items)
    })
}
