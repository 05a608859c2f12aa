//! Sigma correlations that follow the stored rules they refer to.
//!
//! A correlation's native rule holds copies of its base rules' conditions. For every stored
//! correlation that refers to rules stored on their own, the registry keeps its Sigma source
//! (`{dir}/correlations/{id}.json`, a [`Follower`]); when one of those rules changes, the
//! correlation is translated again from the rules' new versions and stored as a new version
//! in the same operation, and a base rule still in use cannot be deleted.
//!
//! A correlation's reference to a stored rule is by id or by the Sigma name the rule was
//! stored with (the registry is the [`StoredRules`] a Sigma file is translated over); either
//! way the source records the rule's id, so the correlation follows that rule.
//!
//! Crash safety: a follower file is written before the rules of its operation, and records the
//! correlation version it describes and the base versions it was translated from. At start, a
//! follower ahead of its correlation (or recording other base versions than the stored ones)
//! marks an operation cut short, which [`super::RuleRegistry::open`] completes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tw_detect::Rule;
use tw_sigma::{CorrelationSource, SigmaConfig, SigmaError, StoredRules, translate_correlation};

use super::{Contents, Plan, Planned, RuleRegistry, RuleRegistryError, io_error};

/// Format of the follower files this build writes.
const FORMAT: u32 = 1;

/// A stored correlation's source and what it was last translated from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Follower {
    /// Format of the file (1).
    pub format: u32,
    /// The correlation version the source was last translated into.
    pub version: u64,
    /// The version of each stored base rule at that translation.
    pub bases: BTreeMap<String, u64>,
    /// The Sigma correlation and where its references resolved.
    pub source: CorrelationSource,
}

impl Follower {
    /// A follower of `source` translated into `version` over the base rules `lookup` gives.
    pub fn new(
        source: CorrelationSource,
        version: u64,
        lookup: &dyn Fn(&str) -> Option<Rule>,
    ) -> Self {
        let bases = source
            .stored_bases()
            .into_iter()
            .filter_map(|id| lookup(id).map(|rule| (id.to_string(), rule.version)))
            .collect();
        Self {
            format: FORMAT,
            version,
            bases,
            source,
        }
    }

    /// Whether the correlation refers to the stored rule `id`.
    pub fn refers_to(&self, id: &str) -> bool {
        self.source.stored_bases().contains(&id)
    }

    /// The base rules whose stored version differs from the one translated from (missing
    /// ones included), as `lookup` gives them.
    pub fn changed_bases(&self, lookup: &dyn Fn(&str) -> Option<Rule>) -> Vec<String> {
        self.source
            .stored_bases()
            .into_iter()
            .filter(|id| lookup(id).map(|rule| rule.version) != self.bases.get(*id).copied())
            .map(str::to_string)
            .collect()
    }
}

/// The stored rules, by id and by Sigma name, for the references of a Sigma file's
/// correlations.
impl StoredRules for RuleRegistry {
    fn rule(&self, id: &str) -> Option<Rule> {
        self.get(id)
    }

    fn ids_named(&self, name: &str) -> Vec<String> {
        // A scan: names are looked up only when a correlation is stored, and rules are few.
        self.lock()
            .rules
            .values()
            .filter(|rule| rule.sigma_name.as_deref() == Some(name))
            .map(|rule| rule.id.clone())
            .collect()
    }
}

impl RuleRegistry {
    /// Adds to `plan` what its rule changes mean for Sigma correlations: each one given a new
    /// source (`sources`) is translated over the rules as they will be (one it refers to may
    /// have changed since its file was translated), and every stored correlation that refers
    /// to a changed rule is translated again, and stored again when its translation changed.
    /// Returns the ids of the latter.
    pub(super) fn follow(
        &self,
        contents: &Contents,
        plan: &mut Plan,
        sources: BTreeMap<String, CorrelationSource>,
        who: &str,
    ) -> Result<Vec<String>, RuleRegistryError> {
        let changed: BTreeSet<String> = plan.changes.iter().map(|c| c.id.clone()).collect();
        let mut sources_after = Vec::new();
        let mut translated = Vec::new();
        let mut followed = Vec::new();
        let lookup = |id: &str| plan.lookup(contents, id);
        for (id, source) in sources {
            let Some(index) = plan.changes.iter().position(|c| c.id == id) else {
                continue;
            };
            let Some(version) = plan.changes[index].after.as_ref().map(|r| r.version) else {
                continue;
            };
            let mut rule = tw_sigma::translate_correlation(&source, &self.sigma, &lookup)
                .map_err(|e| RuleRegistryError::Invalid(format!("rule {id}: {e}")))?;
            rule.version = version;
            rule.compile()
                .map_err(|e| RuleRegistryError::Invalid(format!("rule {id}: {e}")))?;
            sources_after.push((id, Some(Follower::new(source, version, &lookup))));
            translated.push((index, rule));
        }
        for (id, follower) in &contents.followers {
            // A correlation changed by the plan itself got its source above (or lost it).
            let Some(current) = contents.rules.get(id).filter(|_| !changed.contains(id)) else {
                continue;
            };
            let bases: Vec<String> = follower
                .source
                .stored_bases()
                .into_iter()
                .filter(|base| changed.contains(*base))
                .map(str::to_string)
                .collect();
            if bases.is_empty() {
                continue;
            }
            let cannot_follow = |error: SigmaError| RuleRegistryError::BreaksCorrelation {
                base: bases[0].clone(),
                correlation: id.clone(),
                error,
            };
            let (rule, stored_again) =
                retranslate(&self.sigma, follower, current, &lookup).map_err(cannot_follow)?;
            rule.compile()
                .map_err(|e| cannot_follow(SigmaError::Rule(e)))?;
            let source = follower.source.clone();
            sources_after.push((
                id.clone(),
                Some(Follower::new(source, rule.version, &lookup)),
            ));
            if stored_again {
                followed.push(Planned {
                    id: id.clone(),
                    after: Some(rule),
                    before: Some(current.clone()),
                    action: "update",
                    who: who.to_string(),
                    reason: Some(reason(&bases, &lookup)),
                });
            }
        }
        for (index, rule) in translated {
            plan.changes[index].after = Some(rule);
        }
        plan.followers.extend(sources_after);
        let ids = followed.iter().map(|change| change.id.clone()).collect();
        plan.changes.extend(followed);
        Ok(ids)
    }

    /// Completes what a stop in the middle of an operation left half-written: a correlation
    /// whose source records other versions of its base rules than the stored ones, or a
    /// version ahead of the stored correlation, is translated again (and stored again, by
    /// `system`, when that changes it). A correlation that cannot be translated keeps its
    /// stored version (logged); a source without its correlation is dropped.
    pub(super) fn complete_interrupted(&self) -> Result<(), RuleRegistryError> {
        let mut contents = self.lock();
        let mut plan = Plan::default();
        let lookup = |id: &str| contents.rules.get(id).cloned();
        for (id, follower) in &contents.followers {
            let Some(current) = contents.rules.get(id) else {
                plan.forget.push(id.clone());
                continue;
            };
            let bases = follower.changed_bases(&lookup);
            if bases.is_empty() && follower.version <= current.version {
                continue;
            }
            match retranslate(&self.sigma, follower, current, &lookup) {
                Ok((rule, stored_again)) => {
                    let source = follower.source.clone();
                    let after = Follower::new(source, rule.version, &lookup);
                    plan.followers.push((id.clone(), Some(after)));
                    if stored_again {
                        let why = if bases.is_empty() {
                            "the correlation was being stored".to_string()
                        } else {
                            reason(&bases, &lookup)
                        };
                        plan.changes.push(Planned {
                            id: id.clone(),
                            after: Some(rule),
                            before: Some(current.clone()),
                            action: "update",
                            who: "system".into(),
                            reason: Some(format!(
                                "{why} (completed at start: the server stopped during the change)"
                            )),
                        });
                    }
                }
                Err(error) => tracing::warn!(
                    correlation = %id,
                    %error,
                    "a Sigma correlation cannot follow the rules it refers to; it keeps its stored version"
                ),
            }
        }
        if plan.followers.is_empty() && plan.forget.is_empty() {
            return Ok(());
        }
        self.commit(&mut contents, plan)
    }
}

/// The correlation translated again over the base rules `lookup` gives, with the version it is
/// stored under: `current`'s when the translation is what is stored already (nothing to
/// store), the next one otherwise.
pub(crate) fn retranslate(
    sigma: &SigmaConfig,
    follower: &Follower,
    current: &Rule,
    lookup: &dyn Fn(&str) -> Option<Rule>,
) -> Result<(Rule, bool), SigmaError> {
    let mut rule = translate_correlation(&follower.source, sigma, lookup)?;
    rule.version = current.version;
    let changed = rule != *current;
    if changed {
        rule.version += 1;
    }
    Ok((rule, changed))
}

/// Why a correlation is stored again: which of its base rules changed, as history shows it.
pub(crate) fn reason(bases: &[String], lookup: &dyn Fn(&str) -> Option<Rule>) -> String {
    let named: Vec<String> = bases
        .iter()
        .map(|id| match lookup(id) {
            Some(rule) => format!("{id} (now version {})", rule.version),
            None => format!("{id} (deleted)"),
        })
        .collect();
    if named.len() == 1 {
        format!("base rule {} changed", named[0])
    } else {
        format!("base rules {} changed", named.join(", "))
    }
}

/// Where followers are kept: a subdirectory, so the rules directory's `*.json` stay rules.
pub(crate) fn dir_of(rules_dir: &Path) -> PathBuf {
    rules_dir.join("correlations")
}

fn path_of(rules_dir: &Path, id: &str) -> PathBuf {
    dir_of(rules_dir).join(format!("{id}.json"))
}

/// Every follower file, by correlation id.
pub(crate) fn load(rules_dir: &Path) -> Result<BTreeMap<String, Follower>, RuleRegistryError> {
    let dir = dir_of(rules_dir);
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let mut followers = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| io_error(&dir, e))? {
        let path = entry.map_err(|e| io_error(&dir, e))?.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
        let follower: Follower = serde_json::from_str(&text)
            .map_err(|e| RuleRegistryError::Invalid(format!("{}: {e}", path.display())))?;
        if follower.format != FORMAT {
            return Err(RuleRegistryError::Invalid(format!(
                "{}: format {} is not supported (this build reads {FORMAT})",
                path.display(),
                follower.format
            )));
        }
        followers.insert(id.to_string(), follower);
    }
    Ok(followers)
}

/// Writes (atomically) or removes the follower of correlation `id`.
pub(crate) fn save(
    rules_dir: &Path,
    id: &str,
    follower: Option<&Follower>,
) -> Result<(), RuleRegistryError> {
    let path = path_of(rules_dir, id);
    match follower {
        Some(follower) => {
            let bytes = serde_json::to_vec_pretty(follower)
                .map_err(|e| RuleRegistryError::Invalid(e.to_string()))?;
            tw_pipeline::write_atomically(&path, &bytes).map_err(|e| RuleRegistryError::Io {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        }
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&path, e)),
            _ => Ok(()),
        },
    }
}
