//! The rule registry: rules persisted as JSON, every change versioned and recorded, and the
//! compiled set published to the detection consumer through a watch channel.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tw_core::now_ms;
use tw_detect::{CompiledRule, Rule};

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
    /// Persisting failed.
    #[error("rule storage error on {path}: {message}")]
    Io {
        /// File involved.
        path: String,
        /// What failed.
        message: String,
    },
}

/// Rules by id, persisted under `{dir}/{id}.json` with `{dir}/{id}.history.ndjson`.
pub struct RuleRegistry {
    dir: PathBuf,
    rules: Mutex<BTreeMap<String, Rule>>,
    published: watch::Sender<RuleSet>,
}

impl RuleRegistry {
    /// Loads the persisted rules. A stored rule that no longer compiles is an error naming it.
    pub fn open(dir: &Path) -> Result<Self, RuleRegistryError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let mut rules = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
            let path = entry.map_err(|e| io_error(dir, e))?.path();
            let is_rule = path.extension().is_some_and(|e| e == "json");
            if !is_rule {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
            let rule: Rule = serde_json::from_str(&text)
                .map_err(|e| RuleRegistryError::Invalid(format!("{}: {e}", path.display())))?;
            rules.insert(rule.id.clone(), rule);
        }
        let compiled = compile_all(&rules)?;
        let (published, _) = watch::channel(compiled);
        Ok(Self {
            dir: dir.to_path_buf(),
            rules: Mutex::new(rules),
            published,
        })
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
        self.lock().values().cloned().collect()
    }

    /// One rule.
    pub fn get(&self, id: &str) -> Option<Rule> {
        self.lock().get(id).cloned()
    }

    /// Creates a rule (error if the id exists) or, with `replace`, creates or replaces it.
    /// Returns the stored rule and whether it existed before.
    pub fn upsert(
        &self,
        mut rule: Rule,
        who: &str,
        replace: bool,
    ) -> Result<(Rule, Option<Rule>), RuleRegistryError> {
        rule.compile()
            .map_err(|e| RuleRegistryError::Invalid(e.to_string()))?;
        let mut rules = self.lock();
        let before = rules.get(&rule.id).cloned();
        if before.is_some() && !replace {
            return Err(RuleRegistryError::Exists(rule.id));
        }
        rule.version = before.as_ref().map_or(1, |b| b.version + 1);
        let action = if before.is_some() { "update" } else { "create" };
        self.store(&mut rules, rule.clone(), before.clone(), who, action)?;
        Ok((rule, before))
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
        let mut stored = self.lock();
        if !replace && let Some(existing) = rules.iter().find(|r| stored.contains_key(&r.id)) {
            return Err(RuleRegistryError::Exists(existing.id.clone()));
        }
        let mut out = Vec::with_capacity(rules.len());
        for mut rule in rules {
            let before = stored.get(&rule.id).cloned();
            rule.version = match &before {
                Some(before) => before.version + 1,
                // A rule created again after a deletion continues its history's numbering:
                // two "version 1"s in one history (and in alerts' `rule_version`) would be
                // two different rules under one name.
                None => self.history(&rule.id)?.last().map_or(1, |c| c.version + 1),
            };
            let action = if before.is_some() { "update" } else { "create" };
            self.store(&mut stored, rule.clone(), before.clone(), who, action)?;
            out.push((rule, before));
        }
        Ok(out)
    }

    /// Enables or disables a rule (a new version).
    pub fn set_enabled(
        &self,
        id: &str,
        enabled: bool,
        who: &str,
    ) -> Result<Rule, RuleRegistryError> {
        let mut rules = self.lock();
        let before = rules
            .get(id)
            .cloned()
            .ok_or_else(|| RuleRegistryError::NotFound(id.to_string()))?;
        let mut rule = before.clone();
        rule.enabled = enabled;
        rule.version += 1;
        let action = if enabled { "enable" } else { "disable" };
        self.store(&mut rules, rule.clone(), Some(before), who, action)?;
        Ok(rule)
    }

    /// Deletes a rule; its history stays.
    pub fn delete(&self, id: &str, who: &str) -> Result<Rule, RuleRegistryError> {
        let mut rules = self.lock();
        let before = rules
            .remove(id)
            .ok_or_else(|| RuleRegistryError::NotFound(id.to_string()))?;
        let path = self.rule_path(id);
        std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        self.record(&RuleChange {
            version: before.version,
            at_ms: now_ms(),
            who: who.into(),
            action: "delete".into(),
            before: Some(before.clone()),
            after: None,
        })?;
        self.publish(&rules)?;
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

    fn store(
        &self,
        rules: &mut BTreeMap<String, Rule>,
        rule: Rule,
        before: Option<Rule>,
        who: &str,
        action: &str,
    ) -> Result<(), RuleRegistryError> {
        let path = self.rule_path(&rule.id);
        let bytes = serde_json::to_vec_pretty(&rule)
            .map_err(|e| RuleRegistryError::Invalid(e.to_string()))?;
        tw_pipeline::write_atomically(&path, &bytes).map_err(|e| RuleRegistryError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        self.record(&RuleChange {
            version: rule.version,
            at_ms: now_ms(),
            who: who.into(),
            action: action.into(),
            before,
            after: Some(rule.clone()),
        })?;
        rules.insert(rule.id.clone(), rule);
        self.publish(rules)
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

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Rule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }
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

fn io_error(path: &Path, error: std::io::Error) -> RuleRegistryError {
    RuleRegistryError::Io {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}
