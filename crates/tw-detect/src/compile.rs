//! Validation and compilation of a [`Rule`] into a [`CompiledRule`].
//!
//! Both are one walk: [`Rule::validate`] compiles and throws the result away, so a rule that
//! validates always compiles, and every problem is found in a single pass.

use std::collections::HashMap;

use regex::RegexBuilder;
use serde_json::Value;
use tw_core::FieldPath;

use crate::cidr::Cidr;
use crate::document::{Comparison, Condition, FieldCondition, FieldOp, Rule};
use crate::field_ref::FieldRelation;
use crate::matcher::{CompareOp, Literal, Matcher, Test, TextKind, cheapest_first};
use crate::parse::MAX_CONDITION_DEPTH;
use crate::spec::{Kind, Suppress};
use crate::wildcard::Wildcard;
use crate::{RuleError, RuleProblem};

/// Largest compiled program of a user regex, in bytes (the `regex` crate's size limit).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest accepted field path, in bytes.
const MAX_FIELD_PATH_LEN: usize = 1024;

/// A rule ready to evaluate: field paths compiled once, regexes built, CIDRs parsed.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    rule: Rule,
    paths: Vec<FieldPath>,
    matcher: Option<Matcher>,
    kind: Option<Kind>,
    suppress: Option<Suppress>,
}

/// Rules with more distinct field paths than this resolve the rest without caching.
const CACHED_PATHS: usize = 16;

impl CompiledRule {
    /// The rule this was compiled from.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// The rule id.
    pub fn id(&self) -> &str {
        &self.rule.id
    }

    /// Whether this is a stateful rule (threshold, distinct, sequence or new value).
    pub fn is_aggregate(&self) -> bool {
        self.kind.is_some()
    }

    /// The rule's own key limit (`max_keys`); `None`: the engine's default applies.
    pub fn max_keys(&self) -> Option<u64> {
        self.rule.max_keys
    }

    /// Window length of a threshold or distinct-count rule, in milliseconds.
    pub fn window_ms(&self) -> Option<i64> {
        match self.kind.as_ref()? {
            Kind::Threshold { window_ms, .. } | Kind::Distinct { window_ms, .. } => {
                Some(*window_ms)
            }
            Kind::Sequence { .. } | Kind::NewValue { .. } => None,
        }
    }

    /// Every field path an event must be parsed for so the rule can be evaluated on it: the
    /// condition's, a sequence's steps', and the fields its state reads (group keys, the
    /// counted or remembered values). The whole event is taken from the record's bytes only
    /// when the rule keeps it or alerts on it; suppression `by` fields are read from the
    /// alert's event.
    pub fn selected_paths(&self) -> Vec<FieldPath> {
        let mut all = self.paths.clone();
        if let Some(kind) = &self.kind {
            all.extend(kind.state_paths().cloned());
            if let Kind::Sequence { steps, until, .. } = kind {
                for step in steps.iter().chain(until.as_deref()) {
                    all.extend(step.selected_paths());
                }
            }
        }
        all
    }

    /// The distinct field paths the condition reads, in first-use order.
    pub fn field_paths(&self) -> &[FieldPath] {
        &self.paths
    }

    /// Whether `event` satisfies the rule's condition (always true without a condition).
    /// Each distinct field path is resolved at most once, and only when needed.
    pub fn matches(&self, event: &Value) -> bool {
        let mut cache: [Option<Option<&Value>>; CACHED_PATHS] = [None; CACHED_PATHS];
        self.matches_with(&mut |index| match cache.get_mut(index) {
            Some(slot) => *slot.get_or_insert_with(|| self.paths[index].get(event)),
            None => self.paths[index].get(event),
        })
    }

    /// Evaluates the condition with a caller-supplied resolver for the rule's `i`-th path
    /// (the engine shares one cache across all rules of a stream).
    pub(crate) fn matches_with<'a, F>(&self, resolve: &mut F) -> bool
    where
        F: FnMut(usize) -> Option<&'a Value>,
    {
        self.matcher
            .as_ref()
            .is_none_or(|matcher| matcher.eval(resolve))
    }

    /// The compiled condition (`None` matches every event).
    pub(crate) fn matcher(&self) -> Option<&Matcher> {
        self.matcher.as_ref()
    }

    /// A value some field must have for the condition to hold (see [`crate::prefilter`]).
    pub(crate) fn required(&self) -> Option<crate::prefilter::Required> {
        self.matcher.as_ref()?.required()
    }

    pub(crate) fn kind(&self) -> Option<&Kind> {
        self.kind.as_ref()
    }

    pub(crate) fn suppression(&self) -> Option<&Suppress> {
        self.suppress.as_ref()
    }

    /// Whether two compiled rules evaluate identically (same id, stream, condition and
    /// stateful section, suppression included); title, description, severity, tags,
    /// `sigma_name`, sinks, shadow, version and `max_keys` may differ. The engine keeps state
    /// across a rule update exactly when this holds (a new `max_keys` applies to the kept
    /// state: a lower one evicts the oldest keys beyond it at the next new key).
    pub fn same_definition(&self, other: &CompiledRule) -> bool {
        self.definition_fingerprint() == other.definition_fingerprint()
    }

    /// The parts of the rule that decide what it evaluates, as canonical JSON text: equal
    /// texts mean the same evaluation (checkpointed state is matched to rules by it).
    pub fn definition_fingerprint(&self) -> String {
        let mut value = self.rule.to_value();
        if let serde_json::Value::Object(object) = &mut value {
            for key in [
                "version",
                "title",
                "description",
                "severity",
                "enabled",
                "tags",
                "sigma_name",
                "sinks",
                "shadow",
                // A bound on the state, not on what the rule detects: raising it after an
                // eviction warning must not throw away the windows it is meant to protect.
                "max_keys",
            ] {
                object.remove(key);
            }
        }
        value.to_string()
    }
}

fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn field_path_problem(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("field path must not be empty".into());
    }
    if text.len() > MAX_FIELD_PATH_LEN {
        return Some(format!(
            "field path is longer than {MAX_FIELD_PATH_LEN} bytes"
        ));
    }
    if text.split('.').any(str::is_empty) {
        return Some(format!("invalid field path {text:?} (empty segment)"));
    }
    None
}

/// The field name that makes a field condition a keyword (any-field) search.
pub const ANY_FIELD: &str = "*";

pub(crate) struct Compiler {
    problems: Vec<RuleProblem>,
    paths: Vec<FieldPath>,
    index: HashMap<String, usize>,
}

impl Compiler {
    pub(crate) fn problem(&mut self, path: String, message: impl Into<String>) {
        self.problems.push(RuleProblem::new(path, message));
    }

    fn path_index(&mut self, text: &str) -> usize {
        if let Some(index) = self.index.get(text) {
            return *index;
        }
        self.paths.push(FieldPath::new(text));
        self.index.insert(text.to_string(), self.paths.len() - 1);
        self.paths.len() - 1
    }

    pub(crate) fn condition(
        &mut self,
        condition: &Condition,
        at: &str,
        depth: usize,
    ) -> Option<Matcher> {
        if depth > MAX_CONDITION_DEPTH {
            self.problem(
                at.to_string(),
                format!("conditions nest deeper than {MAX_CONDITION_DEPTH} levels"),
            );
            return None;
        }
        let list = |this: &mut Self, items: &[Condition], key: &str| -> Option<Vec<Matcher>> {
            let at = format!("{at}.{key}");
            if items.is_empty() {
                this.problem(at.clone(), "list must not be empty");
            }
            let compiled: Vec<Option<Matcher>> = items
                .iter()
                .enumerate()
                .map(|(index, item)| this.condition(item, &format!("{at}[{index}]"), depth + 1))
                .collect();
            let mut compiled: Vec<Matcher> = compiled.into_iter().collect::<Option<_>>()?;
            cheapest_first(&mut compiled);
            Some(compiled)
        };
        match condition {
            Condition::All(items) => list(self, items, "all").map(Matcher::All),
            Condition::Any(items) => list(self, items, "any").map(Matcher::Any),
            Condition::Not(inner) => self
                .condition(inner, &format!("{at}.not"), depth + 1)
                .map(|m| Matcher::Not(Box::new(m))),
            Condition::Field(leaf) => self.leaf(leaf, at),
            Condition::Selections(selections) => self.selections(selections, at, depth),
        }
    }

    fn leaf(&mut self, leaf: &FieldCondition, at: &str) -> Option<Matcher> {
        let mut ok = true;
        let any_field = leaf.field == ANY_FIELD;
        if !any_field && let Some(message) = field_path_problem(&leaf.field) {
            self.problem(format!("{at}.field"), message);
            ok = false;
        }
        let op_at = format!("{at}.{}", leaf.op.name());
        if any_field && (matches!(leaf.op, FieldOp::Exists(_)) || leaf.op.is_field_reference()) {
            self.problem(
                op_at.clone(),
                format!(
                    "`{}` does not apply to a keyword search (`field: \"*\"`)",
                    leaf.op.name()
                ),
            );
            ok = false;
        }
        if leaf.ignore_case && !leaf.op.is_string_operator() {
            self.problem(
                format!("{at}.ignore_case"),
                format!("does not apply to `{}`", leaf.op.name()),
            );
            ok = false;
        }
        let ignore_case = leaf.ignore_case;
        let text = |this: &mut Self, kind: TextKind, needles: &[String]| {
            if needles.is_empty() {
                this.problem(op_at.clone(), "list must not be empty");
                return None;
            }
            let needles = needles
                .iter()
                .map(|n| {
                    if ignore_case {
                        n.to_lowercase().into()
                    } else {
                        n.as_str().into()
                    }
                })
                .collect();
            Some(Test::Text {
                kind,
                needles,
                ignore_case,
            })
        };
        let compare = |this: &mut Self, op: CompareOp, bound: f64| {
            if bound.is_finite() {
                Some(Test::Compare { op, bound })
            } else {
                this.problem(op_at.clone(), "bound must be a finite number");
                None
            }
        };
        let test = match &leaf.op {
            FieldOp::Equals(value) => match Literal::new(value, ignore_case) {
                Some(literal) => Some(Test::Equals(literal)),
                None => {
                    self.problem(op_at.clone(), "expected a string, number or boolean");
                    None
                }
            },
            FieldOp::In(values) => {
                if values.is_empty() {
                    self.problem(op_at.clone(), "list must not be empty");
                }
                let mut literals = Vec::with_capacity(values.len());
                for (index, value) in values.iter().enumerate() {
                    match Literal::new(value, ignore_case) {
                        Some(literal) => literals.push(literal),
                        None => self.problem(
                            format!("{op_at}[{index}]"),
                            "expected a string, number or boolean",
                        ),
                    }
                }
                (literals.len() == values.len() && !values.is_empty()).then_some(Test::In(literals))
            }
            FieldOp::Contains(needles) => text(self, TextKind::Contains, needles),
            FieldOp::StartsWith(needles) => text(self, TextKind::StartsWith, needles),
            FieldOp::EndsWith(needles) => text(self, TextKind::EndsWith, needles),
            FieldOp::Regex(pattern) => {
                match RegexBuilder::new(pattern)
                    .case_insensitive(ignore_case)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                {
                    Ok(regex) => Some(Test::Regex(regex)),
                    Err(error) => {
                        let reason = error.to_string().replace('\n', " ");
                        self.problem(
                            op_at.clone(),
                            format!("invalid regex {pattern:?}: {reason}"),
                        );
                        None
                    }
                }
            }
            FieldOp::Exists(flag) => Some(Test::Exists(*flag)),
            FieldOp::Gt(bound) => compare(self, CompareOp::Gt, *bound),
            FieldOp::Gte(bound) => compare(self, CompareOp::Gte, *bound),
            FieldOp::Lt(bound) => compare(self, CompareOp::Lt, *bound),
            FieldOp::Lte(bound) => compare(self, CompareOp::Lte, *bound),
            FieldOp::Cidr(texts) => {
                if texts.is_empty() {
                    self.problem(op_at.clone(), "list must not be empty");
                }
                let mut networks = Vec::with_capacity(texts.len());
                for (index, text) in texts.iter().enumerate() {
                    // A single CIDR is written as a string, so its place has no index.
                    let place = if texts.len() == 1 {
                        op_at.clone()
                    } else {
                        format!("{op_at}[{index}]")
                    };
                    match Cidr::parse(text) {
                        Ok(network) => networks.push(network),
                        Err(message) => self.problem(place, message),
                    }
                }
                (networks.len() == texts.len() && !texts.is_empty()).then_some(Test::Cidr(networks))
            }
            FieldOp::Wildcard(patterns) => {
                if patterns.is_empty() {
                    self.problem(op_at.clone(), "list must not be empty");
                }
                let mut compiled = Vec::with_capacity(patterns.len());
                for pattern in patterns {
                    match Wildcard::new(pattern, ignore_case) {
                        Ok(wildcard) => compiled.push(wildcard),
                        Err(message) => self.problem(op_at.clone(), message),
                    }
                }
                (compiled.len() == patterns.len() && !patterns.is_empty())
                    .then_some(Test::Wildcard(compiled))
            }
            FieldOp::Time { comparison, at } => {
                match tw_core::parse_time_ms(&Value::String(at.clone())) {
                    Some(bound_ms) => Some(Test::Time {
                        op: match comparison {
                            Comparison::Gt => CompareOp::Gt,
                            Comparison::Gte => CompareOp::Gte,
                            Comparison::Lt => CompareOp::Lt,
                            Comparison::Lte => CompareOp::Lte,
                        },
                        bound_ms,
                    }),
                    None => {
                        self.problem(
                            op_at.clone(),
                            format!(
                                "invalid time {at:?} (expected RFC 3339 such as 2026-01-31T12:00:00Z, or Unix seconds/milliseconds)"
                            ),
                        );
                        None
                    }
                }
            }
            FieldOp::EqualsField(other) => {
                return self.field_ref(leaf, other, FieldRelation::Equal, ok, op_at);
            }
            FieldOp::NotEqualsField(other) => {
                return self.field_ref(leaf, other, FieldRelation::NotEqual, ok, op_at);
            }
            FieldOp::CompareField { comparison, other } => {
                let relation = match comparison {
                    Comparison::Gt => FieldRelation::Gt,
                    Comparison::Gte => FieldRelation::Gte,
                    Comparison::Lt => FieldRelation::Lt,
                    Comparison::Lte => FieldRelation::Lte,
                };
                return self.field_ref(leaf, other, relation, ok, op_at);
            }
        }?;
        if !ok {
            return None;
        }
        if any_field {
            return Some(Matcher::AnyField {
                path: self.path_index(""),
                test,
            });
        }
        Some(Matcher::Leaf {
            path: self.path_index(&leaf.field),
            test,
        })
    }

    /// A field-to-field comparison of `leaf`'s field with `other` (`ok`: the rest of the leaf
    /// is valid).
    fn field_ref(
        &mut self,
        leaf: &FieldCondition,
        other: &str,
        relation: FieldRelation,
        ok: bool,
        op_at: String,
    ) -> Option<Matcher> {
        if let Some(message) = field_path_problem(other) {
            self.problem(op_at, message);
            return None;
        }
        if !ok {
            return None;
        }
        Some(Matcher::FieldRef {
            path: self.path_index(&leaf.field),
            other: self.path_index(other),
            relation,
            ignore_case: leaf.ignore_case,
        })
    }
}

impl Rule {
    /// Checks everything about the rule and reports every problem at once, each located by its
    /// path in the document (`match.all[2].cidr: invalid CIDR "10.0.0.0/33"`).
    pub fn validate(&self) -> Result<(), RuleError> {
        self.compile().map(|_| ())
    }

    /// Compiles the rule for evaluation (validating it first; same problems as `validate`).
    pub fn compile(&self) -> Result<CompiledRule, RuleError> {
        let mut compiler = Compiler {
            problems: Vec::new(),
            paths: Vec::new(),
            index: HashMap::new(),
        };
        if !valid_id(&self.id) {
            compiler.problem(
                "id".into(),
                format!("invalid id {:?} (1 to 128 of A-Z a-z 0-9 _ . : -)", self.id),
            );
        }
        if self.title.trim().is_empty() {
            compiler.problem("title".into(), "must not be empty");
        }
        if let Err(error) = tw_core::StreamName::new(&self.stream) {
            compiler.problem("stream".into(), error.to_string());
        }
        for (key, items) in [("tags", &self.tags), ("sinks", &self.sinks)] {
            for (index, item) in items.iter().enumerate() {
                if item.trim().is_empty() {
                    compiler.problem(format!("{key}[{index}]"), "must not be empty");
                }
            }
        }
        let matcher = self
            .condition
            .as_ref()
            .and_then(|condition| compiler.condition(condition, "match", 1));
        let (kind, suppress) = crate::spec::compile_sections(
            self,
            &self.sections(),
            &mut compiler.problems,
            &field_path_problem,
        );
        if !compiler.problems.is_empty() {
            return Err(RuleError::Invalid {
                problems: compiler.problems,
            });
        }
        Ok(CompiledRule {
            rule: self.clone(),
            paths: compiler.paths,
            matcher,
            kind,
            suppress,
        })
    }
}
