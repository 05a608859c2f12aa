//! A Sigma file → the native rules it loads.
//!
//! A file holds one document or several separated by `---` (the Sigma convention for a
//! correlation and the rules it refers to). Detection documents translate one by one;
//! a correlation document refers to rules by `name` or `id`, resolved first in the same file,
//! then among the rules already stored (by rule id, which is a Sigma rule's `id`, else by the
//! Sigma `name` a rule was stored with: see [`crate::StoredRules`]). A detection
//! rule referred to by a correlation loads as a rule of its own only with `generate: true`.
//! Every document must translate, or the whole file is refused. A correlation that refers to
//! rules stored on their own comes with its source (`Translation::sources`), from which it is
//! translated again when they change.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use tw_detect::Rule;

use crate::source::{Base, CorrelationSource};
use crate::stored::{StoredRules, resolve_stored};
use crate::{SigmaConfig, SigmaError, correlation, parse_documents, translate_value};

/// The rules a Sigma file loads, and what each correlation among them was translated from.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// The rules, the file's main rule first (see [`translate_file`]).
    pub rules: Vec<Rule>,
    /// The source of each correlation that refers to rules stored on their own, by the
    /// correlation's rule id: stored with the rule, it lets the correlation be translated
    /// again when one of those rules changes ([`crate::translate_correlation`]).
    pub sources: BTreeMap<String, CorrelationSource>,
}

/// Translates every document of a Sigma file. The first rule is the file's main rule: its
/// first correlation, or its first detection rule when it has no correlation.
/// `loaded` finds a rule already loaded by id (for references the file does not resolve; see
/// [`translate_file_with_stored`] to find them by Sigma name too);
/// a rule of the file that is loaded already keeps its stored `enabled`, `shadow`, `sinks`
/// and `suppress`, which Sigma has no field for.
pub fn translate_file(
    text: &str,
    config: &SigmaConfig,
    loaded: &dyn Fn(&str) -> Option<Rule>,
) -> Result<Vec<Rule>, SigmaError> {
    translate_file_with_sources(text, config, loaded).map(|translation| translation.rules)
}

/// [`translate_file`], with the sources of the correlations that refer to rules stored on
/// their own (loaded ones, or the file's own with `generate: true`). Loaded rules are found by
/// id only: [`translate_file_with_stored`] also finds them by Sigma name.
pub fn translate_file_with_sources(
    text: &str,
    config: &SigmaConfig,
    loaded: &dyn Fn(&str) -> Option<Rule>,
) -> Result<Translation, SigmaError> {
    translate_file_with_stored(text, config, &loaded)
}

/// [`translate_file_with_sources`] over the stored rules, which a correlation's reference that
/// its file does not resolve finds by id, else by the Sigma name a rule was stored with (one
/// rule only: a name several stored rules have is refused, [`SigmaError::AmbiguousRule`]).
pub fn translate_file_with_stored(
    text: &str,
    config: &SigmaConfig,
    stored: &dyn StoredRules,
) -> Result<Translation, SigmaError> {
    let documents = parse_documents(text)?;
    if documents.is_empty() {
        return Err(SigmaError::invalid(
            "the file holds no document",
            "document",
        ));
    }
    let several = documents.len() > 1;
    // Errors in a file of several documents say which one.
    let locate = |index: usize, error: SigmaError| -> SigmaError {
        if !several {
            return error;
        }
        let at = |place: String| format!("document {}: {place}", index + 1);
        match error {
            SigmaError::Unsupported { feature, place } => SigmaError::Unsupported {
                feature,
                place: at(place),
            },
            SigmaError::Invalid { message, place } => SigmaError::Invalid {
                message,
                place: at(place),
            },
            SigmaError::UnknownRule { reference, place } => SigmaError::UnknownRule {
                reference,
                place: at(place),
            },
            SigmaError::AmbiguousRule {
                reference,
                ids,
                place,
            } => SigmaError::AmbiguousRule {
                reference,
                ids,
                place: at(place),
            },
            SigmaError::Rule(error) => SigmaError::Invalid {
                message: format!("cannot be evaluated: {error}"),
                place: format!("document {}", index + 1),
            },
            other => other,
        }
    };
    let mut objects: Vec<&Map<String, Value>> = Vec::with_capacity(documents.len());
    for (index, document) in documents.iter().enumerate() {
        match document {
            Value::Object(object) => objects.push(object),
            _ => {
                return Err(locate(
                    index,
                    SigmaError::invalid("expected a mapping", "document"),
                ));
            }
        }
    }
    // References: a document's `name` and `id`.
    let mut by_reference: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, object) in objects.iter().enumerate() {
        for key in ["name", "id"] {
            if let Some(Value::String(reference)) = object.get(key)
                && by_reference
                    .insert(reference, index)
                    .is_some_and(|i| i != index)
            {
                return Err(locate(
                    index,
                    SigmaError::invalid(format!("`{reference}` names two documents"), key),
                ));
            }
        }
    }
    let mut detections: BTreeMap<usize, Rule> = BTreeMap::new();
    for (index, object) in objects.iter().enumerate() {
        if !is_correlation(object) {
            let rule = translate_value(&documents[index], config).map_err(|e| locate(index, e))?;
            detections.insert(index, rule);
        }
    }
    let mut correlations = Vec::new();
    // Where each correlation's references resolved: a document of the file, or a stored rule.
    let mut resolutions: Vec<Vec<Resolved>> = Vec::new();
    // Detection documents referred to by a correlation, and whether one asks to generate them.
    let mut referred: BTreeMap<usize, bool> = BTreeMap::new();
    for (index, object) in objects.iter().enumerate() {
        if !is_correlation(object) {
            continue;
        }
        let section = correlation::read(object).map_err(|e| locate(index, e))?;
        let mut bases = Vec::with_capacity(section.rules.len());
        let mut resolved = Vec::with_capacity(section.rules.len());
        for (position, reference) in section.rules.iter().enumerate() {
            let place = format!("correlation.rules[{position}]");
            let base = match by_reference.get(reference.as_str()) {
                Some(&target) if is_correlation(objects[target]) => {
                    return Err(locate(
                        index,
                        SigmaError::unsupported(
                            format!(
                                "a correlation of the correlation `{reference}` (chained correlations)"
                            ),
                            place,
                        ),
                    ));
                }
                Some(target) => {
                    let generate = referred.entry(*target).or_default();
                    *generate |= section.generate;
                    resolved.push(Resolved::InFile(*target));
                    detections[target].clone()
                }
                None => {
                    let rule =
                        resolve_stored(reference, place, stored).map_err(|e| locate(index, e))?;
                    resolved.push(Resolved::Stored(rule.id.clone()));
                    rule
                }
            };
            bases.push((reference.clone(), base));
        }
        let rule =
            correlation::build(object, &section, &bases, config).map_err(|e| locate(index, e))?;
        correlations.push((index, rule));
        resolutions.push(resolved);
    }
    // A base rule of the file is stored on its own once any correlation generates it: every
    // correlation referring to it then follows its stored version.
    let stored_in_file = |target: usize| referred.get(&target).copied().unwrap_or(true);
    let mut sources = BTreeMap::new();
    for ((index, rule), resolved) in correlations.iter().zip(resolutions) {
        let bases: Vec<Base> = resolved
            .into_iter()
            .map(|resolved| match resolved {
                Resolved::Stored(id) => Base::Stored { id },
                Resolved::InFile(target) if stored_in_file(target) => Base::Stored {
                    id: detections[&target].id.clone(),
                },
                Resolved::InFile(target) => Base::InFile {
                    document: documents[target].clone(),
                },
            })
            .collect();
        // Without a base rule stored on its own, nothing can change under the correlation.
        if bases.iter().any(|base| matches!(base, Base::Stored { .. })) {
            let document = documents[*index].clone();
            sources.insert(rule.id.clone(), CorrelationSource { document, bases });
        }
    }
    let mut rules: Vec<Rule> = correlations.into_iter().map(|(_, rule)| rule).collect();
    for (index, rule) in detections {
        if referred.get(&index).is_none_or(|generate| *generate) {
            rules.push(rule);
        }
    }
    let mut ids = BTreeSet::new();
    for rule in &mut rules {
        if !ids.insert(rule.id.clone()) {
            return Err(SigmaError::invalid(
                format!("two rules of the file have the id `{}`", rule.id),
                "id",
            ));
        }
        // What Sigma cannot say, the stored rule keeps: a rule disabled, put in shadow mode,
        // routed to some sinks or given a suppression through the API stays so when its file
        // is loaded again (at every start with `--rules-dir`, or by `rules import`).
        if let Some(previous) = stored.rule(&rule.id) {
            keep_stored_settings(rule, &previous);
        }
    }
    Ok(Translation { rules, sources })
}

/// Where a correlation's reference resolved while its file is translated.
enum Resolved {
    /// A detection document of the file, by index.
    InFile(usize),
    /// A stored rule, by id (whether the reference was its id or its Sigma name).
    Stored(String),
}

/// Copies the settings Sigma has no field for from the stored version of a rule.
pub(crate) fn keep_stored_settings(rule: &mut Rule, stored: &Rule) {
    rule.enabled = stored.enabled;
    rule.shadow = stored.shadow;
    rule.sinks.clone_from(&stored.sinks);
    if rule.suppress.is_none() {
        rule.suppress.clone_from(&stored.suppress);
    }
}

fn is_correlation(object: &Map<String, Value>) -> bool {
    object.contains_key("correlation")
}
