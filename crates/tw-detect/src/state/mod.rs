//! Per-rule state of the stateful kinds, one module each, behind one enum ([`RuleState`]) the
//! engine drives: `observe` a matching event, `advance` to a new watermark (closing windows,
//! expiring sequences, pruning history), report its size. Every state is serializable, so the
//! detection consumer checkpoints it with its offsets.
//!
//! Event time decides everything: windows close and sequences complete by the watermark (the
//! stream's newest event time minus the allowed lateness), never by arrival order or wall
//! clock, so a replay of the same records raises the same alerts.

mod distinct;
mod new_value;
mod sequence;
mod suppress;
mod threshold;

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tw_core::{Alert, EventLocation, FieldPath, SharedEvent};

use crate::compile::CompiledRule;
use crate::engine::{Limits, RuleStats, alert_base};
use crate::spec::{Kind, WindowKind};

pub(crate) use suppress::Suppressions;

/// Text of a missing (or null) group-by value.
pub(crate) const NULL_GROUP: &str = "null";
/// Separates the values of a multi-field group key inside state (never shown to users).
const KEY_SEPARATOR: char = '\u{1f}';

/// What the engine hands a state for one matching event.
pub(crate) struct Hit<'a> {
    /// The whole event.
    pub(crate) event: &'a SharedEvent,
    pub(crate) time: i64,
    pub(crate) location: EventLocation,
    /// Sequence rules: bit `i` set when the event satisfies step `i`.
    pub(crate) steps: u32,
    /// Sequence rules: the event satisfies `until`.
    pub(crate) until: bool,
}

/// What a state may touch while it works.
pub(crate) struct Ctx<'a> {
    pub(crate) rule: &'a CompiledRule,
    pub(crate) limits: &'a Limits,
    pub(crate) stats: &'a mut RuleStats,
}

impl Ctx<'_> {
    /// An alert of this rule with the group fields filled in.
    pub(crate) fn alert(&self, key: &str, suffix: &str, event_time_ms: i64) -> Alert {
        let values = split_key(key);
        let dedup_key = format!("{}|{}|{suffix}", self.rule.id(), values.join(","));
        let mut alert = alert_base(self.rule, dedup_key, event_time_ms);
        let paths = self.rule.kind().map(Kind::group_paths).unwrap_or_default();
        alert.group = Some(group_map(paths, &values));
        alert
    }
}

/// The group key of `event` for `paths`, as one string.
pub(crate) fn group_key(paths: &[FieldPath], event: &Value) -> String {
    let mut key = String::new();
    for (index, path) in paths.iter().enumerate() {
        if index > 0 {
            key.push(KEY_SEPARATOR);
        }
        match path.text(event) {
            Some(text) => key.push_str(&text),
            None => key.push_str(NULL_GROUP),
        }
    }
    key
}

fn split_key(key: &str) -> Vec<String> {
    if key.is_empty() {
        return Vec::new();
    }
    key.split(KEY_SEPARATOR).map(str::to_string).collect()
}

fn group_map(paths: &[FieldPath], values: &[String]) -> BTreeMap<String, String> {
    paths
        .iter()
        .map(|p| p.as_str().to_string())
        .zip(values.iter().cloned())
        .collect()
}

/// Seed of the persisted hashes.
const HASH_SEED: u64 = 0x7469_6465_7761_7463;

/// A stable 64-bit hash of a value's text (stable across builds and versions: it is persisted).
pub(crate) fn value_hash(text: &str) -> u64 {
    twox_hash::XxHash64::oneshot(HASH_SEED, text.as_bytes())
}

/// [`value_hash`] of `"{group}\u{1e}{value}"`, without building that string.
pub(crate) fn pair_hash(group: &str, value: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = twox_hash::XxHash64::with_seed(HASH_SEED);
    hasher.write(group.as_bytes());
    hasher.write("\u{1e}".as_bytes());
    hasher.write(value.as_bytes());
    hasher.finish()
}

/// The tumbling window `[start, end)` holding `time`, aligned to the Unix epoch.
pub(crate) fn window_of(time: i64, window_ms: i64) -> (i64, i64) {
    // `time - rem` instead of `div * window`: the product can overflow near i64::MIN, the
    // saturating subtraction cannot panic for any event time a record may carry.
    let start = time.saturating_sub(time.rem_euclid(window_ms));
    (start, start.saturating_add(window_ms))
}

/// How many keys a full state frees at once: a sixteenth of the limit. Finding the oldest keys
/// scans the whole state, so evicting one key per new key would cost a scan of up to
/// `max_groups` entries for every event once a high-cardinality rule is full; in batches the
/// scan is paid once per that many new keys.
pub(crate) fn eviction_batch(max_groups: usize) -> usize {
    (max_groups / 16).max(1)
}

/// Removes the `count` entries of `map` with the smallest `age` (the oldest; ties in any
/// order). Returns how many went.
pub(crate) fn evict_oldest<K, V, A>(
    map: &mut HashMap<K, V>,
    count: usize,
    age: impl Fn(&V) -> A,
) -> usize
where
    K: Clone + Eq + Hash,
    A: Ord,
{
    let count = count.min(map.len());
    if count == 0 {
        return 0;
    }
    let mut aged: Vec<(A, &K)> = map.iter().map(|(key, value)| (age(value), key)).collect();
    if count < aged.len() {
        aged.select_nth_unstable_by(count - 1, |a, b| a.0.cmp(&b.0));
    }
    let victims: Vec<K> = aged[..count]
        .iter()
        .map(|(_, key)| (*key).clone())
        .collect();
    for key in &victims {
        map.remove(key);
    }
    count
}

/// Frees room in a full windowed state: drops the oldest window other than `keep`, or, when
/// `keep` is the only window, [`eviction_batch`] of its groups. Returns how many entries went.
pub(crate) fn evict_window<G>(
    windows: &mut BTreeMap<i64, HashMap<String, G>>,
    keep: i64,
    max_groups: usize,
) -> usize {
    let oldest_other = windows.keys().copied().find(|start| *start != keep);
    match oldest_other {
        Some(start) => windows.remove(&start).map_or(0, |groups| groups.len()),
        None => match windows.get_mut(&keep) {
            Some(groups) => {
                let victims: Vec<String> = groups
                    .keys()
                    .take(eviction_batch(max_groups))
                    .cloned()
                    .collect();
                for key in &victims {
                    groups.remove(key);
                }
                victims.len()
            }
            None => 0,
        },
    }
}

/// The state of one rule.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RuleState {
    /// Single-event rules keep nothing.
    Stateless,
    /// Threshold on tumbling windows.
    Tumbling(threshold::Tumbling),
    /// Threshold on a sliding window.
    Sliding(threshold::Sliding),
    /// Distinct count on tumbling windows.
    Distinct(distinct::TumblingDistinct),
    /// Distinct count on a sliding window.
    SlidingDistinct(distinct::SlidingDistinct),
    /// Sequences.
    Sequence(sequence::Sequences),
    /// New values.
    NewValue(new_value::History),
}

impl RuleState {
    /// Fresh state for `rule`.
    pub(crate) fn for_rule(rule: &CompiledRule) -> Self {
        match rule.kind() {
            None => Self::Stateless,
            Some(Kind::Threshold { shape, .. }) => match shape {
                WindowKind::Tumbling => Self::Tumbling(Default::default()),
                WindowKind::Sliding => Self::Sliding(Default::default()),
            },
            Some(Kind::Distinct { shape, .. }) => match shape {
                WindowKind::Tumbling => Self::Distinct(Default::default()),
                WindowKind::Sliding => Self::SlidingDistinct(Default::default()),
            },
            Some(Kind::Sequence { .. }) => Self::Sequence(Default::default()),
            Some(Kind::NewValue { .. }) => Self::NewValue(Default::default()),
        }
    }

    /// Whether the state still belongs to `rule`'s kind (a checkpoint restored into a rule).
    pub(crate) fn fits(&self, rule: &CompiledRule) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(&Self::for_rule(rule))
    }

    /// Whether an event at `time` comes too late: the watermark has passed what it could
    /// still change. Late events are counted, not evaluated.
    pub(crate) fn is_late(&self, rule: &CompiledRule, time: i64, watermark: Option<i64>) -> bool {
        let Some(watermark) = watermark else {
            return false;
        };
        match (self, rule.kind()) {
            (Self::Tumbling(_) | Self::Distinct(_), Some(kind)) => {
                let window_ms = match kind {
                    Kind::Threshold { window_ms, .. } | Kind::Distinct { window_ms, .. } => {
                        *window_ms
                    }
                    _ => return false,
                };
                window_of(time, window_ms).1 <= watermark
            }
            (Self::Sliding(_) | Self::SlidingDistinct(_) | Self::Sequence(_), _) => {
                time < watermark
            }
            _ => false,
        }
    }

    /// Takes one matching event; returns the alerts it completes.
    pub(crate) fn observe(&mut self, ctx: &mut Ctx, hit: &Hit) -> Vec<Alert> {
        match self {
            Self::Stateless => Vec::new(),
            Self::Tumbling(state) => state.observe(ctx, hit).into_iter().collect(),
            Self::Sliding(state) => state.observe(ctx, hit).into_iter().collect(),
            Self::Distinct(state) => state.observe(ctx, hit).into_iter().collect(),
            Self::SlidingDistinct(state) => state.observe(ctx, hit).into_iter().collect(),
            Self::Sequence(state) => state.observe(ctx, hit),
            Self::NewValue(state) => state.observe(ctx, hit).into_iter().collect(),
        }
    }

    /// Moves to a new watermark: closes windows (firing "below" bounds), confirms or expires
    /// sequences, prunes history. Returns the alerts this decides.
    pub(crate) fn advance(&mut self, ctx: &mut Ctx, watermark: i64) -> Vec<Alert> {
        match self {
            Self::Stateless => Vec::new(),
            Self::Tumbling(state) => state.advance(ctx, watermark),
            Self::Sliding(state) => state.advance(ctx, watermark),
            Self::Distinct(state) => {
                state.advance(ctx, watermark);
                Vec::new()
            }
            Self::SlidingDistinct(state) => {
                state.advance(ctx, watermark);
                Vec::new()
            }
            Self::Sequence(state) => state.advance(ctx, watermark),
            Self::NewValue(state) => {
                state.advance(ctx, watermark);
                Vec::new()
            }
        }
    }

    /// Keys held (groups, windows × groups, sequence keys, remembered values).
    pub(crate) fn keys(&self) -> usize {
        match self {
            Self::Stateless => 0,
            Self::Tumbling(state) => state.keys(),
            Self::Sliding(state) => state.keys(),
            Self::Distinct(state) => state.keys(),
            Self::SlidingDistinct(state) => state.keys(),
            Self::Sequence(state) => state.keys(),
            Self::NewValue(state) => state.keys(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evict_oldest_removes_exactly_the_oldest() {
        let mut ages: HashMap<String, i64> = (0..100)
            .map(|i| (format!("k{i}"), (i * 37) % 100))
            .collect();
        assert_eq!(evict_oldest(&mut ages, 10, |age| *age), 10);
        assert_eq!(ages.len(), 90);
        assert!(ages.values().all(|age| *age >= 10), "ages 0..10 went");
        assert_eq!(evict_oldest(&mut ages, 1_000, |age| *age), 90);
        assert!(ages.is_empty());
        assert_eq!(evict_oldest(&mut ages, 1, |age| *age), 0);
    }

    #[test]
    fn eviction_batches_are_a_sixteenth_of_the_limit() {
        assert_eq!(eviction_batch(1), 1);
        assert_eq!(eviction_batch(3), 1);
        assert_eq!(eviction_batch(64), 4);
        assert_eq!(eviction_batch(100_000), 6_250);
    }

    #[test]
    fn pair_hash_is_the_hash_of_the_joined_text() {
        // Persisted in checkpoints: must not change with how it is computed.
        for (group, value) in [
            ("", ""),
            ("alice", "DE"),
            ("a\u{1f}b", "ü"),
            ("x".repeat(100).as_str(), "y"),
        ] {
            assert_eq!(
                pair_hash(group, value),
                value_hash(&format!("{group}\u{1e}{value}"))
            );
        }
    }
}
