//! The rule registry: rules persisted as JSON, every change versioned and recorded, and the
//! compiled set published to the detection consumer through a watch channel.
//!
//! Invariants: an operation is planned in full (every rule it stores compiles, every Sigma
//! correlation it touches translates) before anything is written, so a refused operation
//! changes nothing; a stored Sigma correlation over stored rules is always the translation of
//! their current versions ([`followers`]), and none of those rules can be deleted under it.

mod followers;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tw_core::now_ms;
use tw_detect::{CompiledRule, Rule};
use tw_sigma::{CorrelationSource, SigmaConfig, SigmaError};

use followers::Follower;

/// The compiled rules in force, as published to detection.
pub type RuleSet = Arc<Vec<Arc<CompiledRule>>>;

/// One recorded change of a rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleChange {
    /// Version of the rule after the change (the deleted version for a delete).
    pub version: u64,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// Who made the change (the authenticated user or the `X-Tidewatch-User` header).
    pub who: String,
    /// `create`, `update`, `enable`, `disable` or `delete`.
    pub action: String,
    /// Why, when nobody asked for this change itself: a Sigma correlation stored again
    /// because a rule it refers to changed (`base rule x (now version 3) changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The rule before the change.
    pub before: Option<Rule>,
    /// The rule after the change.
    pub after: Option<Rule>,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuleRegistryError {
    /// The rule is invalid.
    #[error("{0}")]
    Invalid(String),
    /// No rule with that id.
    #[error("rule {0} does not exist")]
    NotFound(String),
    /// A rule with that id exists already (POST creates, PUT replaces).
    #[error("rule {0} already exists; use PUT /api/v1/rules/{0} to change it")]
    Exists(String),
    /// The rule is a base rule of stored Sigma correlations, which would lose it.
    #[error(
        "rule {id} cannot be deleted: the Sigma correlation(s) {} refer to it; delete them, or change them to refer to other rules, first",
        .correlations.join(", ")
    )]
    InUse {
        /// The rule that was to be deleted.
        id: String,
        /// The correlations that refer to it.
        correlations: Vec<String>,
    },
    /// A Sigma correlation that refers to the rule cannot be translated with its new version
    /// (it became stateful, moved to another stream, lost its condition...).
    #[error(
        "rule {base} cannot be changed so: the Sigma correlation {correlation} refers to it and cannot follow: {error}"
    )]
    BreaksCorrelation {
        /// The rule being changed.
        base: String,
        /// The correlation that cannot follow.
        correlation: String,
        /// Why its translation fails.
        #[source]
        error: SigmaError,
    },
    /// Persisting failed.
    #[error("rule storage error on {path}: {message}")]
    Io {
        /// File involved.
        path: String,
        /// What failed.
        message: String,
    },
}

/// Rules by id, persisted under `{dir}/{id}.json` with `{dir}/{id}.history.ndjson`; the
/// sources of Sigma correlations over stored rules under `{dir}/correlations/`.
pub struct RuleRegistry {
    dir: PathBuf,
    /// How correlations are translated again when a rule they refer to changes.
    sigma: Arc<SigmaConfig>,
    contents: Mutex<Contents>,
    published: watch::Sender<RuleSet>,
}

/// The rules, and the correlations among them that follow some of the others.
struct Contents {
    rules: BTreeMap<String, Rule>,
    followers: BTreeMap<String, Follower>,
}

/// What an upsert stored.
#[derive(Debug)]
pub struct Upserted {
    /// Each rule given, as stored, with its version before (`None` when created).
    pub rules: Vec<(Rule, Option<Rule>)>,
    /// The Sigma correlations stored again because a rule they refer to changed.
    pub followed: Vec<String>,
}

/// The writes of one operation, planned in full before any is made.
#[derive(Default)]
struct Plan {
    /// Correlation sources to write (or remove), before any rule: see `followers`.
    followers: Vec<(String, Option<Follower>)>,
    /// Rule changes, in order.
    changes: Vec<Planned>,
    /// Correlation sources to remove after the rule changes (of deleted correlations: a
    /// source without its rule is dropped at start).
    forget: Vec<String>,
}

/// One planned rule change.
struct Planned {
    id: String,
    /// `None`: the rule is deleted.
    after: Option<Rule>,
    before: Option<Rule>,
    action: &'static str,
    who: String,
    reason: Option<String>,
}

impl Plan {
    /// A rule as it will be once the plan is written.
    fn lookup(&self, contents: &Contents, id: &str) -> Option<Rule> {
        match self.changes.iter().rev().find(|change| change.id == id) {
            Some(change) => change.after.clone(),
            None => contents.rules.get(id).cloned(),
        }
    }
}

impl RuleRegistry {
    /// Loads the persisted rules, and completes an operation a stop cut short (a correlation
    /// not yet stored again after a rule it refers to changed). A stored rule that no longer
    /// compiles is an error naming it. `sigma` translates correlations again.
    pub fn open(dir: &Path, sigma: Arc<SigmaConfig>) -> Result<Self, RuleRegistryError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let mut rules = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
            let path = entry.map_err(|e| io_error(dir, e))?.path();
            let is_rule = path.extension().is_some_and(|e| e == "json") && path.is_file();
            if !is_rule {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
            let rule: Rule = serde_json::from_str(&text)
                .map_err(|e| RuleRegistryError::Invalid(format!("{}: {e}", path.display())))?;
            rules.insert(rule.id.clone(), rule);
        }
        let followers = followers::load(dir)?;
        let compiled = compile_all(&rules)?;
        let (published, _) = watch::channel(compiled);
        let registry = Self {
            dir: dir.to_path_buf(),
            sigma,
            contents: Mutex::new(Contents { rules, followers }),
            published,
        };
        registry.complete_interrupted()?;
        Ok(registry)
    }

    /// Receives every new compiled rule set (the current one first).
    pub fn subscribe(&self) -> watch::Receiver<RuleSet> {
        self.published.subscribe()
    }

    /// The current compiled rule set.
    pub fn current(&self) -> RuleSet {
        self.published.borrow().clone()
    }

    /// Every rule, sorted by id.
    pub fn list(&self) -> Vec<Rule> {
        self.lock().rules.values().cloned().collect()
    }

    /// One rule.
    pub fn get(&self, id: &str) -> Option<Rule> {
        self.lock().rules.get(id).cloned()
    }

    /// Whether rule `id` is a Sigma correlation that follows the stored rules it refers to.
    pub fn follows(&self, id: &str) -> bool {
        self.lock().followers.contains_key(id)
    }

    /// Creates a rule (error if the id exists) or, with `replace`, creates or replaces it.
    /// Returns the stored rule and whether it existed before.
    pub fn upsert(
        &self,
        rule: Rule,
        who: &str,
        replace: bool,
    ) -> Result<(Rule, Option<Rule>), RuleRegistryError> {
        let mut stored = self.upsert_all(vec![rule], who, replace)?;
        Ok(stored.remove(0))
    }

    /// Creates (or, with `replace`, creates or replaces) several rules together: every rule
    /// must compile and, without `replace`, no id may exist, or none is stored (a Sigma file
    /// with a correlation and the rules it generates is never half-loaded). Returns each
    /// stored rule and whether it existed before.
    pub fn upsert_all(
        &self,
        rules: Vec<Rule>,
        who: &str,
        replace: bool,
    ) -> Result<Vec<(Rule, Option<Rule>)>, RuleRegistryError> {
        self.upsert_all_with_sources(rules, BTreeMap::new(), who, replace)
            .map(|upserted| upserted.rules)
    }

    /// [`Self::upsert_all`] for a translated Sigma file: each correlation with a source in
    /// `sources` (by rule id) follows the stored rules it refers to from now on. A rule stored
    /// without a source stops following (a correlation replaced by a native rule). Every
    /// stored correlation that refers to one of `rules` is translated again and, when its
    /// translation changed, stored as a new version; one that cannot be refuses the whole
    /// upsert.
    pub fn upsert_all_with_sources(
        &self,
        rules: Vec<Rule>,
        sources: BTreeMap<String, CorrelationSource>,
        who: &str,
        replace: bool,
    ) -> Result<Upserted, RuleRegistryError> {
        for rule in &rules {
            rule.compile().map_err(|e| {
                // One rule: the message of `upsert`; several: say which.
                RuleRegistryError::Invalid(if rules.len() == 1 {
                    e.to_string()
                } else {
                    format!("rule {}: {e}", rule.id)
                })
            })?;
        }
        let mut contents = self.lock();
        if !replace
            && let Some(existing) = rules.iter().find(|r| contents.rules.contains_key(&r.id))
        {
            return Err(RuleRegistryError::Exists(existing.id.clone()));
        }
        let given = rules.len();
        let mut plan = Plan::default();
        for mut rule in rules {
            let before = contents.rules.get(&rule.id).cloned();
            rule.version = match &before {
                Some(before) => before.version + 1,
                // A rule created again after a deletion continues its history's numbering:
                // two "version 1"s in one history (and in alerts' `rule_version`) would be
                // two different rules under one name.
                None => self.history(&rule.id)?.last().map_or(1, |c| c.version + 1),
            };
            if contents.followers.contains_key(&rule.id) && !sources.contains_key(&rule.id) {
                plan.followers.push((rule.id.clone(), None));
            }
            plan.changes.push(Planned {
                id: rule.id.clone(),
                action: if before.is_some() { "update" } else { "create" },
                after: Some(rule),
                before,
                who: who.to_string(),
                reason: None,
            });
        }
        let followed = self.follow(&contents, &mut plan, sources, who)?;
        let stored = plan.changes[..given]
            .iter()
            .filter_map(|change| Some((change.after.clone()?, change.before.clone())))
            .collect();
        self.commit(&mut contents, plan)?;
        Ok(Upserted {
            rules: stored,
            followed,
        })
    }

    /// Enables or disables a rule (a new version). Correlations referring to it keep
    /// evaluating its condition either way, as Sigma's do.
    pub fn set_enabled(
        &self,
        id: &str,
        enabled: bool,
        who: &str,
    ) -> Result<Rule, RuleRegistryError> {
        let mut contents = self.lock();
        let before = contents
            .rules
            .get(id)
            .cloned()
            .ok_or_else(|| RuleRegistryError::NotFound(id.to_string()))?;
        let mut rule = before.clone();
        rule.enabled = enabled;
        rule.version += 1;
        let mut plan = Plan::default();
        plan.changes.push(Planned {
            id: id.to_string(),
            after: Some(rule.clone()),
            before: Some(before),
            action: if enabled { "enable" } else { "disable" },
            who: who.to_string(),
            reason: None,
        });
        self.follow(&contents, &mut plan, BTreeMap::new(), who)?;
        self.commit(&mut contents, plan)?;
        Ok(rule)
    }

    /// Deletes a rule; its history stays. A rule stored Sigma correlations refer to is not
    /// deleted ([`RuleRegistryError::InUse`]): the correlations would silently stop meaning
    /// what their authors wrote.
    pub fn delete(&self, id: &str, who: &str) -> Result<Rule, RuleRegistryError> {
        let mut contents = self.lock();
        let before = contents
            .rules
            .get(id)
            .cloned()
            .ok_or_else(|| RuleRegistryError::NotFound(id.to_string()))?;
        let correlations = users_of(&contents, id);
        if !correlations.is_empty() {
            return Err(RuleRegistryError::InUse {
                id: id.to_string(),
                correlations,
            });
        }
        let mut plan = Plan::default();
        plan.changes.push(Planned {
            id: id.to_string(),
            after: None,
            before: Some(before.clone()),
            action: "delete",
            who: who.to_string(),
            reason: None,
        });
        if contents.followers.contains_key(id) {
            plan.forget.push(id.to_string());
        }
        self.commit(&mut contents, plan)?;
        Ok(before)
    }

    /// Every recorded change of a rule, oldest first.
    pub fn history(&self, id: &str) -> Result<Vec<RuleChange>, RuleRegistryError> {
        let path = self.history_path(id);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&path, e)),
        };
        // A torn last line (crash mid-write) is skipped; every complete line is kept.
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }

    /// Writes a plan: correlation sources first, then the rules (file, then history), then
    /// the sources of deleted correlations go; the new rule set is published once, so
    /// detection never sees a rule changed without the correlations that follow it.
    fn commit(&self, contents: &mut Contents, plan: Plan) -> Result<(), RuleRegistryError> {
        for (id, follower) in plan.followers {
            followers::save(&self.dir, &id, follower.as_ref())?;
            match follower {
                Some(follower) => contents.followers.insert(id, follower),
                None => contents.followers.remove(&id),
            };
        }
        for change in plan.changes {
            let path = self.rule_path(&change.id);
            match &change.after {
                Some(rule) => {
                    let bytes = serde_json::to_vec_pretty(rule)
                        .map_err(|e| RuleRegistryError::Invalid(e.to_string()))?;
                    tw_pipeline::write_atomically(&path, &bytes).map_err(|e| {
                        RuleRegistryError::Io {
                            path: path.display().to_string(),
                            message: e.to_string(),
                        }
                    })?;
                }
                None => std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?,
            }
            let version = change
                .after
                .as_ref()
                .or(change.before.as_ref())
                .map_or(0, |rule| rule.version);
            self.record(&RuleChange {
                version,
                at_ms: now_ms(),
                who: change.who,
                action: change.action.into(),
                reason: change.reason,
                before: change.before,
                after: change.after.clone(),
            })?;
            match change.after {
                Some(rule) => contents.rules.insert(change.id, rule),
                None => contents.rules.remove(&change.id),
            };
        }
        for id in plan.forget {
            followers::save(&self.dir, &id, None)?;
            contents.followers.remove(&id);
        }
        self.publish(&contents.rules)
    }

    fn publish(&self, rules: &BTreeMap<String, Rule>) -> Result<(), RuleRegistryError> {
        self.published.send_replace(compile_all(rules)?);
        Ok(())
    }

    fn record(&self, change: &RuleChange) -> Result<(), RuleRegistryError> {
        let id = change
            .after
            .as_ref()
            .or(change.before.as_ref())
            .map(|r| r.id.clone())
            .unwrap_or_default();
        let path = self.history_path(&id);
        let mut line =
            serde_json::to_vec(change).map_err(|e| RuleRegistryError::Invalid(e.to_string()))?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        file.write_all(&line)
            .and_then(|_| file.sync_data())
            .map_err(|e| io_error(&path, e))
    }

    fn rule_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn history_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.history.ndjson"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Contents> {
        self.contents.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The stored correlations (other than `id` itself) that refer to rule `id`.
fn users_of(contents: &Contents, id: &str) -> Vec<String> {
    contents
        .followers
        .iter()
        .filter(|(correlation, follower)| {
            correlation.as_str() != id
                && follower.refers_to(id)
                && contents.rules.contains_key(*correlation)
        })
        .map(|(correlation, _)| correlation.clone())
        .collect()
}

fn compile_all(rules: &BTreeMap<String, Rule>) -> Result<RuleSet, RuleRegistryError> {
    rules
        .values()
        .map(|rule| {
            rule.compile()
                .map(Arc::new)
                .map_err(|e| RuleRegistryError::Invalid(format!("rule {}: {e}", rule.id)))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Arc::new)
}

pub(crate) fn io_error(path: &Path, error: std::io::Error) -> RuleRegistryError {
    RuleRegistryError::Io {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}
