//! The evaluation engine: rules indexed by stream, single-event alerts, and count thresholds
//! over tumbling event-time windows with a per-stream watermark.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tw_core::{Alert, EventLocation, FieldPath, Record};

use crate::compile::CompiledRule;
use crate::window::WindowState;

/// Engine settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// How far behind the newest event time of a stream an event may be and still count in
    /// its window; the watermark is `max event time − allowed_lateness_ms`.
    pub allowed_lateness_ms: i64,
    /// Most (group, window) entries one threshold rule keeps; beyond it the oldest windows are
    /// evicted (counted in [`RuleStats::evicted_groups`]).
    pub max_groups_per_rule: usize,
    /// Most events copied into one threshold alert.
    pub max_events_per_alert: usize,
}

fn default_allowed_lateness_ms() -> i64 {
    60_000
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
            max_groups_per_rule: default_max_groups_per_rule(),
            max_events_per_alert: default_max_events_per_alert(),
        }
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
    /// Events of a threshold rule's stream whose window had already closed (end ≤ watermark)
    /// when they arrived; they are counted here and not evaluated.
    pub late_events: u64,
    /// (group, window) entries dropped because the rule hit `max_groups_per_rule`.
    pub evicted_groups: u64,
    /// (group, window) entries currently held.
    pub active_groups: u64,
}

/// One enabled rule as loaded into the engine.
struct ActiveRule {
    rule: Arc<CompiledRule>,
    /// The rule's i-th field path is the stream's `path_map[i]`-th path.
    path_map: Vec<usize>,
    stats: RuleStats,
    windows: Option<WindowState>,
}

/// The rules of one stream and the union of their field paths (resolved once per event).
#[derive(Default)]
struct StreamRules {
    paths: Vec<FieldPath>,
    rules: Vec<ActiveRule>,
}

/// Evaluates batches of events against the loaded rules. Not thread-safe by itself: one engine
/// per consumer, driven by one thread at a time.
pub struct Engine {
    config: EngineConfig,
    streams: HashMap<String, StreamRules>,
    /// Newest event time seen per stream (kept across rule changes).
    max_event_time: HashMap<String, i64>,
}

impl Engine {
    /// An engine with no rules.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            streams: HashMap::new(),
            max_event_time: HashMap::new(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Replaces the rule set. Window state and counters are kept for rules whose id and
    /// definition ([`CompiledRule::same_definition`]) are unchanged, and dropped for changed
    /// or removed rules. Disabled rules are not loaded. When an id appears twice, the last wins.
    pub fn set_rules(&mut self, rules: Vec<Arc<CompiledRule>>) {
        let mut previous: HashMap<String, ActiveRule> = self
            .streams
            .drain()
            .flat_map(|(_, stream)| stream.rules)
            .map(|active| (active.rule.id().to_string(), active))
            .collect();
        let mut latest: HashMap<&str, usize> = HashMap::new();
        for (index, rule) in rules.iter().enumerate() {
            latest.insert(rule.id(), index);
        }
        let mut path_index: HashMap<(String, String), usize> = HashMap::new();
        for (index, rule) in rules.iter().enumerate() {
            if latest.get(rule.id()) != Some(&index) || !rule.rule().enabled {
                continue;
            }
            let stream_name = rule.rule().stream.clone();
            let stream = self.streams.entry(stream_name.clone()).or_default();
            let path_map = rule
                .field_paths()
                .iter()
                .map(|path| {
                    *path_index
                        .entry((stream_name.clone(), path.as_str().to_string()))
                        .or_insert_with(|| {
                            stream.paths.push(path.clone());
                            stream.paths.len() - 1
                        })
                })
                .collect();
            let kept = previous
                .remove(rule.id())
                .filter(|old| old.rule.same_definition(rule));
            let (stats, windows) = match kept {
                Some(old) => (old.stats, old.windows),
                None => (
                    RuleStats {
                        rule_id: rule.id().to_string(),
                        ..RuleStats::default()
                    },
                    rule.is_aggregate().then(WindowState::default),
                ),
            };
            stream.rules.push(ActiveRule {
                rule: Arc::clone(rule),
                path_map,
                stats,
                windows,
            });
        }
    }

    /// Counters of every loaded rule, ordered by rule id.
    pub fn stats(&self) -> Vec<RuleStats> {
        let mut all: Vec<RuleStats> = self
            .streams
            .values()
            .flat_map(|stream| stream.rules.iter())
            .map(|active| {
                let mut stats = active.stats.clone();
                stats.active_groups = active
                    .windows
                    .as_ref()
                    .map_or(0, |w| w.group_count() as u64);
                stats
            })
            .collect();
        all.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
        all
    }

    /// The watermark of a stream (`max event time − allowed lateness`), once it has events.
    pub fn watermark_ms(&self, stream: &str) -> Option<i64> {
        self.max_event_time
            .get(stream)
            .map(|max| max.saturating_sub(self.config.allowed_lateness_ms.max(0)))
    }

    /// Evaluates one batch of one partition of `stream`. `events[i]` is `records[i].payload`
    /// parsed; `records[i].event_time_ms` is its event time (extra elements of the longer slice
    /// are ignored). `now_ms` stamps `created_at_ms` of the alerts.
    pub fn evaluate(
        &mut self,
        stream: &str,
        partition: u32,
        records: &[Record],
        events: &[Value],
        now_ms: i64,
    ) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let Some(rules) = self.streams.get_mut(stream) else {
            return alerts;
        };
        let lateness = self.config.allowed_lateness_ms.max(0);
        let mut max_time = self.max_event_time.get(stream).copied();
        let StreamRules { paths, rules } = rules;
        // One cache slot per distinct path of the stream, reused for every event of the batch.
        let mut cache: Vec<Option<Option<&Value>>> = vec![None; paths.len()];
        let limits = Limits {
            max_groups: self.config.max_groups_per_rule.max(1),
            max_events: self.config.max_events_per_alert,
        };
        for (record, event) in records.iter().zip(events) {
            cache.fill(None);
            // `event` may hold only the fields the rules read (see `tw_core::FieldSelection`);
            // an event that goes into an alert is parsed whole from its record, once.
            let mut whole: Option<Value> = None;
            let event_time = record.event_time_ms;
            let watermark = max_time.map(|max| max.saturating_sub(lateness));
            let location = EventLocation {
                partition,
                offset: record.offset,
            };
            for active in rules.iter_mut() {
                let window = active
                    .rule
                    .threshold()
                    .map(|t| window_of(event_time, t.window_ms));
                if let (Some((_, end)), Some(watermark)) = (window, watermark)
                    && end <= watermark
                {
                    active.stats.late_events += 1;
                    continue;
                }
                active.stats.evaluated += 1;
                let path_map = &active.path_map;
                let matched = active.rule.matches_with(&mut |local| {
                    let global = path_map[local];
                    *cache[global].get_or_insert_with(|| paths[global].get(event))
                });
                if !matched {
                    continue;
                }
                active.stats.matched += 1;
                let event = &*whole.get_or_insert_with(|| whole_event(record, event));
                let alert = match (&mut active.windows, window) {
                    (Some(windows), Some(window)) => windows.count(
                        &active.rule,
                        &limits,
                        window,
                        event,
                        event_time,
                        location,
                        &mut active.stats,
                    ),
                    _ => Some(single_event_alert(
                        &active.rule,
                        stream,
                        event,
                        event_time,
                        location,
                    )),
                };
                if let Some(mut alert) = alert {
                    alert.stream = stream.to_string();
                    alert.created_at_ms = now_ms;
                    active.stats.alerts += 1;
                    alerts.push(alert);
                }
            }
            max_time = Some(max_time.map_or(event_time, |max| max.max(event_time)));
        }
        if let Some(max) = max_time {
            self.max_event_time.insert(stream.to_string(), max);
            let watermark = max.saturating_sub(lateness);
            for active in rules.iter_mut() {
                if let Some(windows) = &mut active.windows {
                    windows.close_until(watermark, active.rule.window_ms().unwrap_or(1));
                }
            }
        }
        alerts
    }
}

/// The complete event of `record`: its payload parsed, or `parsed` itself when the record
/// carries no payload (dry runs over inline events) or the payload does not parse.
fn whole_event(record: &Record, parsed: &Value) -> Value {
    if record.payload.is_empty() {
        return parsed.clone();
    }
    serde_json::from_slice(&record.payload).unwrap_or_else(|_| parsed.clone())
}

/// Limits the window state needs from the configuration.
pub(crate) struct Limits {
    pub(crate) max_groups: usize,
    pub(crate) max_events: usize,
}

/// The tumbling window `[start, end)` holding `time`, aligned to the Unix epoch.
pub(crate) fn window_of(time: i64, window_ms: i64) -> (i64, i64) {
    // `time - rem` instead of `div * window`: the product can overflow near i64::MIN, the
    // saturating subtraction cannot panic for any event time a record may carry.
    let start = time.saturating_sub(time.rem_euclid(window_ms));
    (start, start.saturating_add(window_ms))
}

/// Fields every alert of `rule` shares; the caller sets `stream` and `created_at_ms`.
pub(crate) fn alert_base(rule: &CompiledRule, dedup_key: String, event_time_ms: i64) -> Alert {
    let definition = rule.rule();
    Alert {
        id: Alert::id_for(&dedup_key),
        dedup_key,
        rule_id: definition.id.clone(),
        rule_title: definition.title.clone(),
        rule_version: definition.version,
        severity: definition.severity,
        stream: String::new(),
        event_time_ms,
        created_at_ms: 0,
        group: None,
        window: None,
        value: None,
        events: Vec::new(),
        event_refs: Vec::new(),
        tags: definition.tags.clone(),
    }
}

fn single_event_alert(
    rule: &CompiledRule,
    stream: &str,
    event: &Value,
    event_time_ms: i64,
    location: EventLocation,
) -> Alert {
    let key = format!(
        "{}|{}|{}|{}",
        rule.id(),
        stream,
        location.partition,
        location.offset
    );
    let mut alert = alert_base(rule, key, event_time_ms);
    alert.events = vec![event.clone()];
    alert.event_refs = vec![location];
    alert
}
