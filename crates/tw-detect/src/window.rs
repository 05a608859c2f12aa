//! Per-rule window state of threshold rules: counts per (window, group), bounded.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use tw_core::{Alert, EventLocation};

use crate::compile::CompiledRule;
use crate::engine::{Limits, RuleStats, alert_base};

/// Text of a missing (or null) group-by value.
const NULL_GROUP: &str = "null";

/// Count and sample of one group in one window.
#[derive(Debug, Default)]
struct Group {
    count: u64,
    /// Set once the alert for this (group, window) has been raised: it is raised only once.
    fired: bool,
    /// The first matching events (at most `max_events`), released when the alert fires.
    events: Vec<Value>,
    refs: Vec<EventLocation>,
}

/// Open windows of one rule, by window start, each with its groups.
#[derive(Debug, Default)]
pub(crate) struct WindowState {
    windows: BTreeMap<i64, HashMap<Vec<String>, Group>>,
    groups: usize,
}

impl WindowState {
    /// (group, window) entries currently held.
    pub(crate) fn group_count(&self) -> usize {
        self.groups
    }

    /// Counts one matching event in `window`; returns the alert when this event makes the
    /// group's count exceed the threshold for the first time in this window.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn count(
        &mut self,
        rule: &CompiledRule,
        limits: &Limits,
        (start, end): (i64, i64),
        event: &Value,
        event_time_ms: i64,
        location: EventLocation,
        stats: &mut RuleStats,
    ) -> Option<Alert> {
        let threshold = rule.threshold()?;
        let key: Vec<String> = threshold
            .group_by
            .iter()
            .map(|path| {
                path.get_text(event)
                    .unwrap_or_else(|| NULL_GROUP.to_string())
            })
            .collect();
        let is_new = self
            .windows
            .get(&start)
            .is_none_or(|groups| !groups.contains_key(&key));
        if is_new {
            while self.groups >= limits.max_groups {
                stats.evicted_groups += self.evict_one(start) as u64;
            }
            self.groups += 1;
        }
        let group = self
            .windows
            .entry(start)
            .or_default()
            .entry(key.clone())
            .or_default();
        group.count += 1;
        if group.fired {
            return None;
        }
        if group.events.len() < limits.max_events {
            group.events.push(event.clone());
            group.refs.push(location);
        }
        if group.count <= threshold.more_than {
            return None;
        }
        group.fired = true;
        let dedup_key = format!("{}|{}|{}", rule.id(), key.join(","), start);
        let mut alert = alert_base(rule, dedup_key, event_time_ms);
        alert.group = Some(
            threshold
                .group_by
                .iter()
                .map(|path| path.as_str().to_string())
                .zip(key)
                .collect(),
        );
        alert.window = Some((start, end));
        alert.value = Some(group.count as f64);
        alert.events = std::mem::take(&mut group.events);
        alert.event_refs = std::mem::take(&mut group.refs);
        Some(alert)
    }

    /// Frees room for one more entry: drops the oldest window other than `keep`, or, when
    /// `keep` is the only window, one of its groups. Returns how many entries were dropped.
    fn evict_one(&mut self, keep: i64) -> usize {
        let oldest_other = self.windows.keys().copied().find(|start| *start != keep);
        let dropped = match oldest_other {
            Some(start) => self.windows.remove(&start).map_or(0, |groups| groups.len()),
            None => match self.windows.get_mut(&keep) {
                Some(groups) => {
                    let victim = groups.keys().next().cloned();
                    victim.and_then(|key| groups.remove(&key)).map_or(0, |_| 1)
                }
                None => 0,
            },
        };
        // An empty map can only come from a bookkeeping bug; resync instead of looping forever.
        if dropped == 0 {
            self.groups = self.windows.values().map(HashMap::len).sum();
            if self.groups >= 1 {
                return 0;
            }
        }
        self.groups -= dropped.min(self.groups);
        dropped
    }

    /// Drops every window whose end is at or before `watermark`.
    pub(crate) fn close_until(&mut self, watermark: i64, window_ms: i64) {
        // Windows starting at or before `watermark - window_ms` end at or before `watermark`.
        let first_open = watermark.saturating_sub(window_ms).saturating_add(1);
        let open = self.windows.split_off(&first_open);
        let closed = std::mem::replace(&mut self.windows, open);
        self.groups -= closed
            .values()
            .map(HashMap::len)
            .sum::<usize>()
            .min(self.groups);
    }
}
