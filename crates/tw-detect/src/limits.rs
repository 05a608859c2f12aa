//! What bounds the engine and how it reports on it: the engine's settings ([`EngineConfig`]),
//! the limits each loaded rule's state runs under ([`Limits`]: the rule's own `max_keys`, else
//! the engine's default), and the per-rule counters ([`RuleStats`]) that show, among the rest,
//! when a limit evicted keys.

use serde::{Deserialize, Serialize};
use tw_core::Record;

use crate::compile::CompiledRule;

/// Largest `max_keys` a rule may set. A key costs up to ~800 bytes in the heaviest kinds (a
/// kept event per group; see `examples/state_memory.rs`), so this is several GiB for one rule:
/// a bound against a typo (`max_keys: 1e12`), not a recommendation.
pub const MAX_RULE_KEYS: u64 = 10_000_000;

/// Engine settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// How far behind the newest event time of a stream an event may be and still count in
    /// its window; the watermark is `max event time − allowed_lateness_ms`.
    pub allowed_lateness_ms: i64,
    /// How far ahead of the time Tidewatch received it an event's time may move the
    /// watermark. An event stamped further ahead (a producer's wrong clock, a typo'd year) is
    /// still evaluated, but it moves the watermark only to its receive time plus this much:
    /// one event dated 2099 must not make every later event late. Negative: no limit (inline
    /// dry runs, whose events carry no receive time of their own).
    pub max_time_ahead_ms: i64,
    /// Most keys one stateful rule keeps ((group, window) entries, sliding groups, sequence
    /// keys, remembered new-value pairs, suppression groups) unless the rule sets its own
    /// `max_keys`; beyond it the oldest are evicted (counted in [`RuleStats::evicted_groups`]).
    pub max_groups_per_rule: usize,
    /// Most events copied into one threshold alert.
    pub max_events_per_alert: usize,
}

fn default_allowed_lateness_ms() -> i64 {
    60_000
}
fn default_max_time_ahead_ms() -> i64 {
    300_000
}
fn default_max_groups_per_rule() -> usize {
    100_000
}
fn default_max_events_per_alert() -> usize {
    10
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            allowed_lateness_ms: default_allowed_lateness_ms(),
            max_time_ahead_ms: default_max_time_ahead_ms(),
            max_groups_per_rule: default_max_groups_per_rule(),
            max_events_per_alert: default_max_events_per_alert(),
        }
    }
}

impl EngineConfig {
    /// How far `record` moves its stream's newest event time: its event time, capped at
    /// [`Self::max_time_ahead_ms`] past its receive time.
    pub(crate) fn watermark_time(&self, record: &Record) -> i64 {
        if self.max_time_ahead_ms < 0 {
            return record.event_time_ms;
        }
        let limit = record.ingest_time_ms.saturating_add(self.max_time_ahead_ms);
        record.event_time_ms.min(limit)
    }
}

/// Counters of one loaded rule, cumulative since the rule was (re)loaded with its current
/// definition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    /// Id of the rule.
    pub rule_id: String,
    /// Events the condition was evaluated on (late events are not evaluated).
    pub evaluated: u64,
    /// Events that satisfied the condition.
    pub matched: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Events of a stateful rule's stream that came after the watermark had decided what they
    /// could change (a closed window, a passed instant); counted here and not evaluated.
    pub late_events: u64,
    /// Keys dropped because the rule hit its key limit ([`RuleStats::max_keys`]).
    pub evicted_groups: u64,
    /// Keys currently held (state size).
    pub active_groups: u64,
    /// The rule's key limit: its own `max_keys`, else the engine's
    /// [`EngineConfig::max_groups_per_rule`]. Filled in by [`crate::Engine::stats`] from the
    /// rule as loaded now (a checkpoint's copy is not used), so a log of an eviction can name
    /// the limit in force for this rule.
    #[serde(default)]
    pub max_keys: u64,
    /// Alerts not raised because of the rule's `suppress`.
    #[serde(default)]
    pub suppressed: u64,
    /// Time spent evaluating the rule's condition on each chunk of events and handling its
    /// hits (one hit in 16 timed, and scaled), in nanoseconds.
    #[serde(default)]
    pub eval_nanos: u64,
}

/// The limits one loaded rule's state runs under (fixed when the rule is loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most keys the rule's state and suppression keep each.
    pub(crate) max_groups: usize,
    /// Most events copied into one alert.
    pub(crate) max_events: usize,
}

impl Limits {
    /// The limits of `rule` under `config`: its own `max_keys` when it sets one.
    pub(crate) fn for_rule(config: &EngineConfig, rule: &CompiledRule) -> Self {
        let max_groups = rule.max_keys().map_or(config.max_groups_per_rule, |keys| {
            usize::try_from(keys).unwrap_or(usize::MAX)
        });
        Self {
            // 0 would make every new key evict the state it joins; validation refuses it in a
            // rule, and a zero engine setting is read as 1 as it always was.
            max_groups: max_groups.max(1),
            max_events: config.max_events_per_alert,
        }
    }
}
