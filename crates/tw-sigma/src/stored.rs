//! The rules stored already, as a correlation's references see them.
//!
//! A correlation's reference that its own file does not resolve names a stored rule: by rule
//! id (a Sigma rule's `id` is its rule id) first, else by the Sigma `name` the rule was stored
//! with ([`tw_detect::Rule::sigma_name`]). A name resolves to the one rule stored with it, and
//! the correlation then refers to that rule by id ([`crate::Base::Stored`]): it follows that
//! rule from then on, whatever later happens to names.

use tw_detect::Rule;

use crate::SigmaError;

/// The stored rules a Sigma file's correlations may refer to.
pub trait StoredRules {
    /// The stored rule with this id.
    fn rule(&self, id: &str) -> Option<Rule>;

    /// The ids of the stored rules whose Sigma name is `name`, sorted.
    fn ids_named(&self, name: &str) -> Vec<String>;
}

/// A lookup by id alone (the stored rules are not searched by name).
impl<F: Fn(&str) -> Option<Rule>> StoredRules for F {
    fn rule(&self, id: &str) -> Option<Rule> {
        self(id)
    }

    fn ids_named(&self, _name: &str) -> Vec<String> {
        Vec::new()
    }
}

/// The stored rule a reference names, by id, else by Sigma name: refused when it names none,
/// when two or more rules are stored under that name, or when the rule is itself stateful (a
/// correlation of a correlation).
pub(crate) fn resolve_stored(
    reference: &str,
    place: String,
    stored: &dyn StoredRules,
) -> Result<Rule, SigmaError> {
    let found = match stored.rule(reference) {
        Some(rule) => Some(rule),
        None => match stored.ids_named(reference).as_slice() {
            [] => None,
            [id] => stored.rule(id),
            ids => {
                let mut ids = ids.to_vec();
                ids.sort();
                return Err(SigmaError::AmbiguousRule {
                    reference: reference.to_string(),
                    ids,
                    place,
                });
            }
        },
    };
    let Some(rule) = found else {
        return Err(SigmaError::UnknownRule {
            reference: reference.to_string(),
            place,
        });
    };
    if is_stateful(&rule) {
        return Err(SigmaError::unsupported(
            format!(
                "a correlation of the stateful rule `{reference}` (chained correlations; refer to single-event rules)"
            ),
            place,
        ));
    }
    Ok(rule)
}

/// Whether a stored rule is itself an aggregate (it cannot be a correlation's base rule).
fn is_stateful(rule: &Rule) -> bool {
    rule.threshold.is_some()
        || rule.distinct.is_some()
        || rule.sequence.is_some()
        || rule.new_value.is_some()
}
