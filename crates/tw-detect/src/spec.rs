//! Compilation of the stateful sections ([`crate::stateful`]) into what the engine's state
//! machines read: durations in milliseconds, field paths compiled, sequence steps compiled as
//! conditions (through the same compiler as a rule's `match`).

use tw_core::FieldPath;

use crate::RuleProblem;
use crate::document::{Condition, Rule};
use crate::duration::parse_duration_ms;
use crate::limits::MAX_RULE_KEYS;
use crate::stateful::{CountBound, CountOp, Sections};

/// Largest `count` bound of a distinct-count rule: values are kept exactly up to the bound.
pub const MAX_DISTINCT_BOUND: u64 = 10_000;
/// Most steps of a sequence.
pub const MAX_SEQUENCE_STEPS: usize = 16;
const DAY_MS: i64 = 86_400_000;

/// Window shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowKind {
    /// Aligned to the Unix epoch, `[start, start + window)`.
    Tumbling,
    /// Any span shorter than the window.
    Sliding,
}

/// The compiled stateful kind of a rule.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Threshold {
        bound: CountBound,
        window_ms: i64,
        shape: WindowKind,
        group_by: Vec<FieldPath>,
    },
    Distinct {
        field: FieldPath,
        bound: CountBound,
        window_ms: i64,
        shape: WindowKind,
        group_by: Vec<FieldPath>,
    },
    Sequence {
        by: Vec<FieldPath>,
        maxspan_ms: i64,
        steps: Vec<crate::CompiledRule>,
        until: Option<Box<crate::CompiledRule>>,
        ordered: bool,
    },
    NewValue {
        fields: Vec<FieldPath>,
        group_by: Vec<FieldPath>,
        history_days: u32,
        learn_ms: i64,
    },
}

impl Kind {
    /// Field paths whose values form the group key of the alerts.
    pub(crate) fn group_paths(&self) -> &[FieldPath] {
        match self {
            Self::Threshold { group_by, .. }
            | Self::Distinct { group_by, .. }
            | Self::NewValue { group_by, .. } => group_by,
            Self::Sequence { by, .. } => by,
        }
    }

    /// Field paths whose values the state counts or remembers (a [`crate::state::Hit`]'s
    /// `values`).
    pub(crate) fn value_paths(&self) -> &[FieldPath] {
        match self {
            Self::Distinct { field, .. } => std::slice::from_ref(field),
            Self::NewValue { fields, .. } => fields,
            Self::Threshold { .. } | Self::Sequence { .. } => &[],
        }
    }

    /// The group paths, then the value paths: every field the state reads.
    pub(crate) fn state_paths(&self) -> impl Iterator<Item = &FieldPath> {
        self.group_paths().iter().chain(self.value_paths())
    }
}

/// Compiled `suppress`.
#[derive(Debug, Clone)]
pub(crate) struct Suppress {
    pub(crate) ms: i64,
    pub(crate) by: Option<Vec<FieldPath>>,
}

fn paths(
    items: &[String],
    at: &str,
    problems: &mut Vec<RuleProblem>,
    check: &dyn Fn(&str) -> Option<String>,
) -> Vec<FieldPath> {
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match check(item) {
            Some(message) => problems.push(RuleProblem::new(format!("{at}[{index}]"), message)),
            None => out.push(FieldPath::new(item)),
        }
    }
    out
}

fn duration(text: &str, at: &str, problems: &mut Vec<RuleProblem>) -> Option<i64> {
    parse_duration_ms(text)
        .map_err(|message| problems.push(RuleProblem::new(at, message)))
        .ok()
}

/// Compiles one condition on its own (a sequence step), relocating its problems from `match`
/// to `at`.
fn step(
    rule: &Rule,
    condition: &Condition,
    at: &str,
    problems: &mut Vec<RuleProblem>,
) -> Option<crate::CompiledRule> {
    let single = Rule {
        condition: Some(condition.clone()),
        threshold: None,
        distinct: None,
        sequence: None,
        new_value: None,
        suppress: None,
        max_keys: None,
        ..rule.clone()
    };
    match single.compile() {
        Ok(compiled) => Some(compiled),
        Err(error) => {
            for problem in error.problems() {
                // Only the condition's problems: the rule's own are reported once, by the rule.
                if let Some(rest) = problem.path.strip_prefix("match") {
                    problems.push(RuleProblem::new(format!("{at}{rest}"), &problem.message));
                }
            }
            None
        }
    }
}

/// Compiles the stateful sections of `rule`; `check` validates a field path.
pub(crate) fn compile_sections(
    rule: &Rule,
    sections: &Sections,
    problems: &mut Vec<RuleProblem>,
    check: &dyn Fn(&str) -> Option<String>,
) -> (Option<Kind>, Option<Suppress>) {
    let suppress = sections.suppress.as_ref().and_then(|s| {
        let ms = duration(&s.duration, "suppress", problems);
        let by =
            s.by.as_ref()
                .map(|by| paths(by, "suppress.by", problems, check));
        Some(Suppress { ms: ms?, by })
    });
    let kind = if let Some(t) = &sections.threshold {
        let window_ms = duration(&t.window, "threshold.window", problems);
        if t.count.is_below() && t.count.op == CountOp::Lt && t.count.value == 0 {
            problems.push(RuleProblem::new(
                "threshold.count.lt",
                "a count is never below 0",
            ));
        }
        if t.count.op == CountOp::Gte && t.count.value == 0 {
            problems.push(RuleProblem::new(
                "threshold.count.gte",
                "`gte: 0` always holds; use a single-event rule",
            ));
        }
        let group_by = paths(&t.group_by, "threshold.group_by", problems, check);
        window_ms.map(|window_ms| Kind::Threshold {
            bound: t.count,
            window_ms,
            shape: shape(t.sliding),
            group_by,
        })
    } else if let Some(d) = &sections.distinct {
        let window_ms = duration(&d.window, "distinct.window", problems);
        if let Some(message) = check(&d.field) {
            problems.push(RuleProblem::new("distinct.field", message));
        }
        if d.count.is_below() {
            problems.push(RuleProblem::new(
                format!("distinct.count.{}", d.count.op.name()),
                "a distinct count fires above a bound: use gt or gte",
            ));
        } else if d.count.firing_count() > MAX_DISTINCT_BOUND {
            problems.push(RuleProblem::new(
                format!("distinct.count.{}", d.count.op.name()),
                format!("at most {MAX_DISTINCT_BOUND} (values are kept exactly up to the bound)"),
            ));
        }
        let group_by = paths(&d.group_by, "distinct.group_by", problems, check);
        window_ms.map(|window_ms| Kind::Distinct {
            field: FieldPath::new(&d.field),
            bound: d.count,
            window_ms,
            shape: shape(d.sliding),
            group_by,
        })
    } else if let Some(s) = &sections.sequence {
        let maxspan_ms = duration(&s.maxspan, "sequence.maxspan", problems);
        let by = paths(&s.by, "sequence.by", problems, check);
        if !(2..=MAX_SEQUENCE_STEPS).contains(&s.steps.len()) {
            problems.push(RuleProblem::new(
                "sequence.steps",
                format!("a sequence has 2 to {MAX_SEQUENCE_STEPS} steps"),
            ));
        }
        let steps: Vec<Option<crate::CompiledRule>> = s
            .steps
            .iter()
            .enumerate()
            .map(|(index, c)| step(rule, c, &format!("sequence.steps[{index}]"), problems))
            .collect();
        let until = s
            .until
            .as_ref()
            .map(|c| step(rule, c, "sequence.until", problems));
        let steps: Option<Vec<crate::CompiledRule>> = steps.into_iter().collect();
        match (maxspan_ms, steps, until) {
            (Some(maxspan_ms), Some(steps), None) => Some(Kind::Sequence {
                by,
                maxspan_ms,
                steps,
                until: None,
                ordered: s.ordered,
            }),
            (Some(maxspan_ms), Some(steps), Some(Some(until))) => Some(Kind::Sequence {
                by,
                maxspan_ms,
                steps,
                until: Some(Box::new(until)),
                ordered: s.ordered,
            }),
            _ => None,
        }
    } else if let Some(n) = &sections.new_value {
        let history = duration(&n.history, "new_value.history", problems);
        if let Some(ms) = history
            && ms % DAY_MS != 0
        {
            problems.push(RuleProblem::new(
                "new_value.history",
                "history is kept per day: use whole days (e.g. 30d)",
            ));
        }
        let learn_ms = match &n.learn {
            Some(text) => duration(text, "new_value.learn", problems),
            None => Some(0),
        };
        let fields = paths(&n.fields, "new_value.field", problems, check);
        let group_by = paths(&n.group_by, "new_value.group_by", problems, check);
        match (history, learn_ms) {
            (Some(history), Some(learn_ms)) => Some(Kind::NewValue {
                fields,
                group_by,
                history_days: (history / DAY_MS) as u32,
                learn_ms,
            }),
            _ => None,
        }
    } else {
        None
    };
    if let Some(keys) = sections.max_keys {
        // From the sections as written, not as compiled: a rule whose window is mistyped still
        // keeps state, and its one problem is the window.
        let keeps_state = sections.threshold.is_some()
            || sections.distinct.is_some()
            || sections.sequence.is_some()
            || sections.new_value.is_some()
            || sections.suppress.is_some();
        max_keys_problems(keys, keeps_state, problems);
    }
    (kind, suppress)
}

/// Checks a rule's `max_keys`: in range, and on a rule that keeps keys at all.
fn max_keys_problems(keys: u64, keeps_state: bool, problems: &mut Vec<RuleProblem>) {
    if keys == 0 {
        problems.push(RuleProblem::new(
            "max_keys",
            "must be at least 1 (remove `max_keys` to use the server's limit)",
        ));
    } else if keys > MAX_RULE_KEYS {
        problems.push(RuleProblem::new(
            "max_keys",
            format!("{keys} is more than the most a rule may keep ({MAX_RULE_KEYS} keys)"),
        ));
    }
    if !keeps_state {
        problems.push(RuleProblem::new(
            "max_keys",
            "applies only to a rule that keeps state (threshold, distinct, sequence, new_value or suppress)",
        ));
    }
}

fn shape(sliding: bool) -> WindowKind {
    if sliding {
        WindowKind::Sliding
    } else {
        WindowKind::Tumbling
    }
}
