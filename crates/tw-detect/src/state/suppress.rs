//! Suppression: at most one alert per rule and group per duration (event time). Suppressed
//! alerts are counted in the rule's statistics, not raised.

use serde::{Deserialize, Serialize};
use tw_core::Alert;

use super::{Map, group_key};
use crate::compile::CompiledRule;
use crate::limits::RuleStats;

/// Event time of the last alert raised per suppression group.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Suppressions {
    last: Map<String, i64>,
}

impl Suppressions {
    pub(crate) fn keys(&self) -> usize {
        self.last.len()
    }

    /// Whether `alert` may be raised; records it when so.
    pub(crate) fn admit(
        &mut self,
        rule: &CompiledRule,
        alert: &Alert,
        max_keys: usize,
        stats: &mut RuleStats,
    ) -> bool {
        let Some(suppress) = rule.suppression() else {
            return true;
        };
        let key = match (&suppress.by, alert.events.first()) {
            (Some(paths), Some(event)) => group_key(paths, event),
            (Some(_), None) => String::new(),
            (None, _) => alert
                .group
                .as_ref()
                .map(|g| g.values().cloned().collect::<Vec<_>>().join("\u{1f}"))
                .unwrap_or_default(),
        };
        // Either direction: an alert that happened (by event time) shortly before the last one
        // arrived late, and is just as much a repeat.
        if let Some(last) = self.last.get(&key)
            && alert.event_time_ms.abs_diff(*last) < suppress.ms.unsigned_abs()
        {
            stats.suppressed += 1;
            return false;
        }
        if !self.last.contains_key(&key) && self.last.len() >= max_keys {
            // Forget the groups that alerted longest ago, down to a batch below the limit (a
            // lowered `max_keys` may find more).
            let excess = self.last.len() - max_keys + super::eviction_batch(max_keys);
            let evicted = super::evict_oldest(&mut self.last, excess, |t| *t);
            stats.evicted_groups += evicted as u64;
        }
        let slot = self.last.entry(key).or_insert(alert.event_time_ms);
        *slot = (*slot).max(alert.event_time_ms);
        true
    }

    /// Forgets groups whose suppression ended before the watermark.
    pub(crate) fn advance(&mut self, rule: &CompiledRule, watermark: i64) {
        if let Some(suppress) = rule.suppression() {
            let horizon = watermark.saturating_sub(suppress.ms);
            self.last.retain(|_, t| *t > horizon);
        }
    }
}
