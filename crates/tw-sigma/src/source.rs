//! What a correlation was translated from, kept so that it can be translated again.
//!
//! A correlation's native rule holds copies of its base rules' conditions (the `match`, the
//! sequence steps). When a base rule is a rule stored on its own, an edit of it must reach the
//! correlation: the registry keeps the [`CorrelationSource`] of every stored correlation and,
//! when a base rule changes, calls [`translate_correlation`] with the base rules' current
//! versions. Base rules of the same file that are not stored on their own (no `generate`) are
//! part of the correlation's definition: their Sigma documents are kept in the source.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tw_detect::Rule;

use crate::collection::keep_stored_settings;
use crate::stored::resolve_stored;
use crate::{SigmaConfig, SigmaError, correlation, translate_value};

/// The Sigma correlation document and where each of its references resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationSource {
    /// The correlation document (its `correlation:` section, id, title, level...), as parsed.
    pub document: Value,
    /// One entry per reference of `correlation.rules`, in the same order.
    pub bases: Vec<Base>,
}

/// Where one reference of a correlation resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Base {
    /// A rule stored on its own (a rule loaded earlier, referred to by id or by its Sigma
    /// name, or one of the same file stored with `generate: true`): its current version is
    /// used at every translation.
    Stored {
        /// The rule id.
        id: String,
    },
    /// A rule of the same file that is not stored on its own: its Sigma document.
    InFile {
        /// The detection rule's Sigma document, as parsed.
        document: Value,
    },
}

impl CorrelationSource {
    /// Ids of the stored rules the correlation refers to (a changed one means translating
    /// the correlation again), without repetitions, in reference order.
    pub fn stored_bases(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = Vec::new();
        for base in &self.bases {
            if let Base::Stored { id } = base
                && !ids.contains(&id.as_str())
            {
                ids.push(id);
            }
        }
        ids
    }
}

/// Translates a correlation again from its source, with `loaded` giving the current version of
/// each stored base rule (and of the correlation itself, whose stored `enabled`, `shadow`,
/// `sinks` and `suppress` it keeps, as when its file is loaded again). Refuses, as the first
/// translation did, a base rule that no longer exists, became stateful or moved to another
/// stream than the other base rules.
pub fn translate_correlation(
    source: &CorrelationSource,
    config: &SigmaConfig,
    loaded: &dyn Fn(&str) -> Option<Rule>,
) -> Result<Rule, SigmaError> {
    let Value::Object(document) = &source.document else {
        return Err(SigmaError::invalid("expected a mapping", "document"));
    };
    let section = correlation::read(document)?;
    if section.rules.len() != source.bases.len() {
        return Err(SigmaError::invalid(
            format!(
                "the correlation refers to {} rules but its source resolves {}",
                section.rules.len(),
                source.bases.len()
            ),
            "correlation.rules",
        ));
    }
    let mut bases = Vec::with_capacity(source.bases.len());
    for (position, (reference, base)) in section.rules.iter().zip(&source.bases).enumerate() {
        let place = format!("correlation.rules[{position}]");
        let rule = match base {
            Base::InFile { document } => translate_value(document, config)?,
            // The stored rule is found by its id (only): a reference by `name` (to a rule of the
            // same file stored with `generate`, or to a rule stored earlier) resolved to that
            // id when the correlation was stored.
            Base::Stored { id } => resolve_stored(id, place, &loaded)?,
        };
        bases.push((reference.clone(), rule));
    }
    let mut rule = correlation::build(document, &section, &bases, config)?;
    if let Some(stored) = loaded(&rule.id) {
        keep_stored_settings(&mut rule, &stored);
    }
    Ok(rule)
}
