//! Compiling named selections: each selection compiles once, the condition string
//! ([`crate::condition_parse`]) is resolved against their names into one matcher tree.

use crate::compile::Compiler;
use crate::condition_parse::{Expr, Quantifier, name_matches, parse_condition};
use crate::document::Selections;
use crate::matcher::{Matcher, cheapest_first};

impl Compiler {
    /// Compiles `selections` located at `at`; problems name the selection or the condition.
    pub(crate) fn selections(
        &mut self,
        selections: &Selections,
        at: &str,
        depth: usize,
    ) -> Option<Matcher> {
        let mut compiled = Vec::with_capacity(selections.items.len());
        let mut ok = true;
        if selections.items.is_empty() {
            self.problem(
                format!("{at}.selections"),
                "must name at least one selection",
            );
            ok = false;
        }
        for (name, condition) in &selections.items {
            match self.condition(condition, &format!("{at}.selections.{name}"), depth + 1) {
                Some(matcher) => compiled.push((name.as_str(), matcher)),
                None => ok = false,
            }
        }
        let condition_at = format!("{at}.condition");
        let expr = match parse_condition(&selections.condition) {
            Ok(expr) => expr,
            Err(message) => {
                self.problem(condition_at, message);
                return None;
            }
        };
        let names: Vec<&str> = selections.items.iter().map(|(n, _)| n.as_str()).collect();
        let resolved = resolve(&expr, &names, &mut |message| {
            self.problem(condition_at.clone(), message)
        });
        if !ok {
            return None;
        }
        resolved.map(|tree| tree.build(&compiled))
    }
}

/// The condition with names resolved to selection indexes (built into matchers only when
/// every selection compiled).
enum Resolved {
    And(Vec<Resolved>),
    Or(Vec<Resolved>),
    Not(Box<Resolved>),
    AtLeast(usize, Vec<Resolved>),
    Selection(usize),
}

impl Resolved {
    fn build(self, compiled: &[(&str, Matcher)]) -> Matcher {
        let all = |items: Vec<Resolved>| {
            let mut built: Vec<Matcher> = items.into_iter().map(|i| i.build(compiled)).collect();
            cheapest_first(&mut built);
            built
        };
        match self {
            Self::And(items) => Matcher::All(all(items)),
            Self::Or(items) => Matcher::Any(all(items)),
            Self::Not(inner) => Matcher::Not(Box::new(inner.build(compiled))),
            Self::AtLeast(1, items) => Matcher::Any(all(items)),
            Self::AtLeast(n, items) => Matcher::AtLeast(n, all(items)),
            // Compiled selections are cloned where a name is used twice: matchers are small
            // trees, and sharing would need reference counting on the hot path.
            Self::Selection(index) => compiled[index].1.clone(),
        }
    }
}

/// Resolves every item (reporting every problem, not just the first).
fn resolve_list(
    items: &[Expr],
    names: &[&str],
    problem: &mut dyn FnMut(String),
) -> Option<Vec<Resolved>> {
    let resolved: Vec<Option<Resolved>> = items
        .iter()
        .map(|item| resolve(item, names, problem))
        .collect();
    resolved.into_iter().collect()
}

fn resolve(expr: &Expr, names: &[&str], problem: &mut dyn FnMut(String)) -> Option<Resolved> {
    match expr {
        Expr::And(items) => resolve_list(items, names, problem).map(Resolved::And),
        Expr::Or(items) => resolve_list(items, names, problem).map(Resolved::Or),
        Expr::Not(inner) => resolve(inner, names, problem).map(|r| Resolved::Not(Box::new(r))),
        Expr::Name(name) => match names.iter().position(|n| n == name) {
            Some(index) => Some(Resolved::Selection(index)),
            None => {
                problem(format!(
                    "unknown selection `{name}` (defined: {})",
                    names.join(", ")
                ));
                None
            }
        },
        Expr::Of {
            quantifier,
            pattern,
        } => {
            // `them` leaves out names starting with `_`, as Sigma does.
            let matching: Vec<usize> = names
                .iter()
                .enumerate()
                .filter(|(_, name)| match pattern {
                    Some(pattern) => name_matches(pattern, name),
                    None => !name.starts_with('_'),
                })
                .map(|(index, _)| index)
                .collect();
            let target = pattern.as_deref().unwrap_or("them");
            if matching.is_empty() {
                problem(format!("`{target}` matches no selection"));
                return None;
            }
            let items = matching.into_iter().map(Resolved::Selection).collect();
            match quantifier {
                Quantifier::All => Some(Resolved::And(items)),
                Quantifier::AtLeast(n) => {
                    let n = *n as usize;
                    let available = items.len();
                    if n > available {
                        problem(format!(
                            "`{n} of {target}` can never hold: only {available} selection(s) match"
                        ));
                        return None;
                    }
                    Some(Resolved::AtLeast(n, items))
                }
            }
        }
    }
}
