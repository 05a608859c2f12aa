//! Skipping rules that cannot match an event, by an index on the values they require.
//!
//! Most detections name what they look for: `eventName: ConsoleLogin`, `errorCode:
//! AccessDenied`. Such a rule can only match an event whose value at that path is one of a few
//! texts, so the engine looks that value up once per event in a table of rules by required
//! value and evaluates only the rules found there (and the rules without such a requirement);
//! over a chunk of events, each distinct value is looked up once.
//! With hundreds of rules over a few event names, most rules are never evaluated on most events.
//!
//! The requirement is a *necessary* condition derived from the compiled matcher, so skipping a
//! rule is exactly as if it had been evaluated and had not matched:
//! - `equals`/`in` of text literals on a path: the scalar's text (numbers and booleans in their
//!   JSON spelling, as the matcher compares them) must be one of the literals;
//! - `all`: the requirement of any one operand (the one with the fewest values);
//! - `any`: the union of the operands' requirements, when they are all on one path with the
//!   same case rule.
//!
//! Values the lookup cannot decide cheaply (arrays, whose elements the matcher searches,
//! and non-ASCII text under `ignore_case`, whose Unicode folding the matcher does itself)
//! make every rule of the path a candidate.

use serde_json::Value;

use crate::batch::{Chunk, Mask, NO_ID, ValueIds};
use crate::matcher::{Literal, Matcher, Test, TextBuffer, scalar_text};
use crate::state::Map;

/// A necessary condition of a matcher: it holds only if the scalar at `path` has one of
/// `values` as its text (lowercased first when `ignore_case`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Required {
    /// Index into the rule's path table.
    pub(crate) path: usize,
    pub(crate) ignore_case: bool,
    /// Lowercase already when `ignore_case`.
    pub(crate) values: Vec<Box<str>>,
}

impl Matcher {
    /// What must be true of one field for this matcher to hold, if anything simple must.
    pub(crate) fn required(&self) -> Option<Required> {
        match self {
            Self::Leaf {
                path,
                test: Test::Equals(literal),
            } => {
                let (text, ignore_case) = text_literal(literal)?;
                Some(Required {
                    path: *path,
                    ignore_case,
                    values: vec![text.into()],
                })
            }
            Self::Leaf {
                path,
                test: Test::In(literals),
            } => {
                let mut values = Vec::with_capacity(literals.len());
                let mut case = None;
                for literal in literals {
                    let (text, ignore_case) = text_literal(literal)?;
                    if *case.get_or_insert(ignore_case) != ignore_case {
                        return None;
                    }
                    values.push(text.into());
                }
                Some(Required {
                    path: *path,
                    ignore_case: case?,
                    values,
                })
            }
            Self::All(items) => items
                .iter()
                .filter_map(Self::required)
                .min_by_key(|required| required.values.len()),
            Self::Any(items) => {
                let mut union: Option<Required> = None;
                for item in items {
                    let required = item.required()?;
                    match &mut union {
                        None => union = Some(required),
                        Some(union)
                            if union.path == required.path
                                && union.ignore_case == required.ignore_case =>
                        {
                            union.values.extend(required.values);
                        }
                        Some(_) => return None,
                    }
                }
                union
            }
            _ => None,
        }
    }
}

fn text_literal(literal: &Literal) -> Option<(&str, bool)> {
    match literal {
        Literal::Str { text, ignore_case } => Some((text, *ignore_case)),
        _ => None,
    }
}

/// Rules of one path grouped by the value they require.
struct Group {
    /// The stream's path index.
    path: usize,
    ignore_case: bool,
    /// foldhash: looked up for every distinct string of a chunk; the keys are the rules'.
    by_value: Map<Box<str>, Vec<usize>>,
    /// Every rule of the group (candidates when the value cannot be looked up).
    members: Vec<usize>,
}

/// The candidate rules of an event, for one stream's rule list.
#[derive(Default)]
pub(crate) struct Prefilter {
    /// Per rule: evaluated on every event (no requirement found).
    always: Vec<bool>,
    groups: Vec<Group>,
}

/// What an event's value tells a group.
enum Probe<'a> {
    /// Null or absent, or an object: no `equals` on this path can hold.
    Nothing,
    /// An array, or text the lookup does not fold: every rule of the group may match.
    Undecided,
    Text(&'a str),
}

impl Prefilter {
    /// `requirements[i]` is rule `i`'s requirement with its path already mapped to the
    /// stream's path index.
    pub(crate) fn new(requirements: Vec<Option<Required>>) -> Self {
        let mut always = vec![false; requirements.len()];
        let mut groups: Vec<Group> = Vec::new();
        for (rule, required) in requirements.into_iter().enumerate() {
            let Some(required) = required else {
                always[rule] = true;
                continue;
            };
            let position = groups
                .iter()
                .position(|g| g.path == required.path && g.ignore_case == required.ignore_case)
                .unwrap_or_else(|| {
                    groups.push(Group {
                        path: required.path,
                        ignore_case: required.ignore_case,
                        by_value: Map::default(),
                        members: Vec::new(),
                    });
                    groups.len() - 1
                });
            let group = &mut groups[position];
            group.members.push(rule);
            for value in required.values {
                let rules = group.by_value.entry(value).or_default();
                if rules.last() != Some(&rule) {
                    rules.push(rule);
                }
            }
        }
        Self { always, groups }
    }

    /// Sets `candidates[i]` to the events of `chunk` that rule `i` may match (the chunk's
    /// paths are the stream's). Strings that repeat are looked up once per distinct string.
    pub(crate) fn mark_chunk(
        &self,
        chunk: &mut Chunk,
        candidates: &mut Vec<Mask>,
        scratch: &mut String,
    ) {
        let everything = Mask::first(chunk.len());
        candidates.clear();
        candidates.extend(
            self.always
                .iter()
                .map(|&always| if always { everything } else { Mask::EMPTY }),
        );
        let mut known: Vec<Option<Option<&[usize]>>> = Vec::new();
        for group in &self.groups {
            let (column, ids) = chunk.column_with_ids(group.path);
            known.clear();
            known.resize(ids.map_or(0, ValueIds::distinct), None);
            let lookup = |value: Option<&Value>, scratch: &mut String| {
                let mut buffer = TextBuffer::new();
                match probe(value, group.ignore_case, &mut buffer, scratch) {
                    Probe::Nothing => None,
                    Probe::Undecided => Some(&group.members[..]),
                    Probe::Text(text) => group.by_value.get(text).map(Vec::as_slice),
                }
            };
            for (at, value) in column.iter().enumerate() {
                let id = ids.map_or(NO_ID, |ids| ids.id(at));
                let rules = if id == NO_ID {
                    lookup(*value, scratch)
                } else {
                    *known[id as usize].get_or_insert_with(|| lookup(*value, scratch))
                };
                for &rule in rules.into_iter().flatten() {
                    candidates[rule].set(at);
                }
            }
        }
    }
}

fn probe<'a>(
    value: Option<&'a Value>,
    ignore_case: bool,
    buffer: &'a mut TextBuffer,
    scratch: &'a mut String,
) -> Probe<'a> {
    let value = match value {
        None | Some(Value::Null | Value::Object(_)) => return Probe::Nothing,
        Some(Value::Array(_)) => return Probe::Undecided,
        Some(value) => value,
    };
    let Some(text) = scalar_text(value, buffer) else {
        return Probe::Undecided;
    };
    if !ignore_case {
        return Probe::Text(text);
    }
    if !text.is_ascii() {
        return Probe::Undecided;
    }
    scratch.clear();
    scratch.push_str(text);
    scratch.make_ascii_lowercase();
    Probe::Text(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::PathTree;
    use crate::{RuleFormat, parse_rule};
    use serde_json::json;

    fn rule(condition: &str) -> crate::CompiledRule {
        let text = format!("id: r\ntitle: r\nstream: s\nmatch: {condition}\n");
        parse_rule(&text, RuleFormat::Yaml)
            .unwrap()
            .compile()
            .unwrap()
    }

    /// Whether the prefilter of `rule` alone lets `event` through.
    fn candidate(rule: &crate::CompiledRule, event: &Value) -> bool {
        let prefilter = Prefilter::new(vec![rule.required()]);
        let tree = PathTree::new(rule.field_paths());
        let mut chunk = Chunk::new(&tree);
        let events = [event.clone()];
        chunk.load(crate::batch::Events::Trees(&events));
        let mut candidates = Vec::new();
        prefilter.mark_chunk(&mut chunk, &mut candidates, &mut String::new());
        candidates[0] == Mask::first(1)
    }

    #[test]
    fn requirements_follow_the_shape_of_the_condition() {
        let required = |c: &str| rule(c).required();
        assert_eq!(
            required("{field: a, equals: X}").unwrap().values,
            vec!["X".into()]
        );
        let lowered = required("{field: a, equals: X, ignore_case: true}").unwrap();
        assert!(lowered.ignore_case);
        assert_eq!(lowered.values, vec!["x".into()]);
        assert_eq!(
            required("{all: [{field: a, in: [A, B]}, {field: b, equals: C}]}")
                .unwrap()
                .values,
            vec!["C".into()],
            "all: the operand with the fewest values"
        );
        let union = required("{any: [{field: a, equals: A}, {field: a, in: [B, C]}]}").unwrap();
        assert_eq!(union.values.len(), 3);
        for unindexable in [
            "{any: [{field: a, equals: A}, {field: b, equals: B}]}",
            "{any: [{field: a, equals: A}, {field: a, equals: b, ignore_case: true}]}",
            "{not: {field: a, equals: A}}",
            "{field: a, contains: A}",
            "{field: a, equals: 5}",
            "{field: a, in: [A, 5]}",
            "{field: '*', contains: A}",
        ] {
            assert_eq!(required(unindexable), None, "{unindexable}");
        }
    }

    /// The prefilter may only skip a rule that would not have matched.
    #[test]
    fn never_skips_a_rule_that_matches() {
        let conditions = [
            "{field: a, equals: X}",
            "{field: a, equals: '5'}",
            "{field: a, equals: 'true'}",
            "{field: a, equals: x, ignore_case: true}",
            "{field: a, equals: 'straße', ignore_case: true}",
            "{field: a, in: [X, Y]}",
            "{all: [{field: a, equals: X}, {field: b.c, equals: Z}]}",
            "{any: [{field: a, equals: X}, {field: a, equals: Y}]}",
            "{field: b.c, equals: Z}",
        ];
        let events = [
            json!({"a": "X", "b": {"c": "Z"}}),
            json!({"a": "x"}),
            json!({"a": "Y"}),
            json!({"a": 5}),
            json!({"a": true}),
            json!({"a": ["Q", "X"]}),
            json!({"a": [["X"]]}),
            json!({"a": "STRASSE"}),
            json!({"a": "STRAßE"}),
            json!({"a": null}),
            json!({"a": {"X": 1}}),
            json!({"b.c": "Z"}),
            json!({}),
        ];
        for condition in conditions {
            let compiled = rule(condition);
            assert!(compiled.required().is_some(), "{condition} is indexed");
            for event in &events {
                if compiled.matches(event) {
                    assert!(candidate(&compiled, event), "{condition} on {event}");
                }
            }
        }
    }

    #[test]
    fn skips_what_cannot_match() {
        let compiled = rule("{field: a, in: [X, Y]}");
        assert!(!candidate(&compiled, &json!({"a": "Z"})));
        assert!(!candidate(&compiled, &json!({"a": "x"})));
        assert!(!candidate(&compiled, &json!({"b": "X"})));
        assert!(candidate(&compiled, &json!({"a": "Y"})));
        let lowered = rule("{field: a, equals: x, ignore_case: true}");
        assert!(candidate(&lowered, &json!({"a": "X"})));
        assert!(!candidate(&lowered, &json!({"a": "y"})));
    }
}
