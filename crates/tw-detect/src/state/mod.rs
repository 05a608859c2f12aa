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

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tw_core::{Alert, CheckedPayload, EventLocation, FieldPath, Record, SharedEvent};

use crate::alert::alert_base;
use crate::compile::CompiledRule;
use crate::limits::{Limits, RuleStats};
use crate::spec::{Kind, WindowKind};

pub(crate) use suppress::Suppressions;

/// The maps of every state. Their keys come from events (group values), so each map is seeded
/// at random against crafted collisions (foldhash), yet hashes an ARN several times faster
/// than the standard library's SipHash, which was a visible share of stateful detection.
pub(crate) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// The set of [`Map`]'s hashing.
pub(crate) type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Text of a missing (or null) group-by value.
pub(crate) const NULL_GROUP: &str = "null";
/// Separates the values of a multi-field group key inside state (never shown to users).
const KEY_SEPARATOR: char = '\u{1f}';

/// What the engine hands a state for one matching event.
pub(crate) struct Hit<'a> {
    /// The event's group key for the rule ([`key_of`] its values at the group paths).
    pub(crate) group: &'a str,
    /// The event's values at the rule's [`Kind::value_paths`] (the counted or remembered
    /// ones). Both are read from the chunk's columns, not looked up in the event again.
    pub(crate) values: &'a [Option<&'a Value>],
    /// The whole event, for what the state keeps or alerts on ([`Hit::event`]).
    pub(crate) whole: &'a WholeEvent<'a>,
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
    /// Its dedup key is `"{rule id}|{group values joined by commas}|{suffix}"`; with more than
    /// one group value, `\` and `,` within a value are escaped with `\`, so that the groups
    /// (`a,b`, `c`) and (`a`, `b,c`) keep two keys (the store would refuse the second alert).
    pub(crate) fn alert(&self, key: &str, suffix: &str, event_time_ms: i64) -> Alert {
        // Built by hand: this runs for every alert of an aggregate rule, and `format!` and a
        // vector of the split values cost more than the rest of the alert.
        let id = self.rule.id();
        let mut dedup_key = String::with_capacity(id.len() + key.len() + suffix.len() + 2);
        dedup_key.push_str(id);
        dedup_key.push('|');
        let several = key.contains(KEY_SEPARATOR);
        for (index, value) in key.split(KEY_SEPARATOR).enumerate() {
            if index > 0 {
                dedup_key.push(',');
            }
            if several && value.contains([',', '\\']) {
                for c in value.chars() {
                    if matches!(c, ',' | '\\') {
                        dedup_key.push('\\');
                    }
                    dedup_key.push(c);
                }
            } else {
                dedup_key.push_str(value);
            }
        }
        dedup_key.push('|');
        dedup_key.push_str(suffix);
        let mut alert = alert_base(self.rule, dedup_key, event_time_ms);
        let paths = self.rule.kind().map(Kind::group_paths).unwrap_or_default();
        let values = key.split(KEY_SEPARATOR);
        alert.group = Some(
            paths
                .iter()
                .zip(values)
                .map(|(path, value)| (path.as_str().to_string(), value.to_string()))
                .collect(),
        );
        alert
    }
}

/// The group key of `event` for `paths`, as one string.
pub(crate) fn group_key(paths: &[FieldPath], event: &Value) -> String {
    key_of(paths.iter().map(|path| path.get(event)))
}

/// The key of `values` (a group's, or a new-value rule's values) as one string.
pub(crate) fn key_of<'v>(values: impl IntoIterator<Item = Option<&'v Value>>) -> String {
    let mut key = String::new();
    write_key(values, &mut key);
    key
}

/// [`key_of`] into `key` (cleared first), to reuse its buffer.
pub(crate) fn write_key<'v>(values: impl IntoIterator<Item = Option<&'v Value>>, key: &mut String) {
    key.clear();
    append_key(values, key);
}

/// [`key_of`] appended to `key`.
fn append_key<'v>(values: impl IntoIterator<Item = Option<&'v Value>>, key: &mut String) {
    for (index, value) in values.into_iter().enumerate() {
        if index > 0 {
            key.push(KEY_SEPARATOR);
        }
        match value.and_then(tw_core::value_text) {
            Some(text) => key.push_str(&text),
            None => key.push_str(NULL_GROUP),
        }
    }
}

impl Hit<'_> {
    /// The whole event, to keep or put in an alert.
    pub(crate) fn event(&self) -> SharedEvent {
        self.whole.get().clone()
    }
}

/// The whole event of a record, taken from the record's bytes only when first asked for:
/// checking an event's JSON text costs more than handling most hits, and most hits of a
/// stateful rule keep nothing (a known group, a value already counted).
pub(crate) struct WholeEvent<'a> {
    record: &'a Record,
    /// The record parsed as a tree, when the caller parsed it so.
    parsed: Option<&'a Value>,
    /// The parser's word for the record's payload, when the caller has it.
    checked: Option<&'a CheckedPayload>,
    taken: OnceCell<SharedEvent>,
}

impl<'a> WholeEvent<'a> {
    /// The whole event of `record`, which parsed (maybe only in part) as `parsed` (when
    /// parsed as a tree); `checked` is the parser's word for its payload, if any.
    pub(crate) fn new(
        record: &'a Record,
        parsed: Option<&'a Value>,
        checked: Option<&'a CheckedPayload>,
    ) -> Self {
        Self {
            record,
            parsed,
            checked,
            taken: OnceCell::new(),
        }
    }

    /// The event: its record's payload as JSON text (checked here unless the parser vouched
    /// for it; parsed only if something reads it; alerts write it as it is), or the parsed
    /// event itself when the record carries no payload (dry runs over inline events) or the
    /// payload is not JSON.
    pub(crate) fn get(&self) -> &SharedEvent {
        self.taken.get_or_init(|| {
            // (Records parsed into rows always have a payload, which parsed: they never
            // come to the tree.)
            let parsed = || SharedEvent::new(self.parsed.cloned().unwrap_or(Value::Null));
            let text = match self.checked {
                // (A word for other bytes, from a caller's misaligned slices, is not used.)
                Some(checked) if checked.is_for(&self.record.payload) => {
                    SharedEvent::from_checked(checked)
                }
                _ if self.record.payload.is_empty() => return parsed(),
                _ => SharedEvent::from_json(&self.record.payload),
            };
            text.unwrap_or_else(|_| parsed())
        })
    }
}

/// Seed of the persisted hashes.
const HASH_SEED: u64 = 0x7469_6465_7761_7463;

/// A stable 64-bit hash of a value's text (stable across builds and versions: it is persisted).
pub(crate) fn value_hash(text: &str) -> u64 {
    twox_hash::XxHash64::oneshot(HASH_SEED, text.as_bytes())
}

/// [`value_hash`] of `"{group}\u{1e}{value}"`, the value being [`key_of`] `values`: the
/// persisted identity of a new-value pair. The text is built in `buffer` (reused), since
/// hashing it in one piece costs a third of hashing it in pieces.
pub(crate) fn pair_hash<'v>(
    group: &str,
    values: impl IntoIterator<Item = Option<&'v Value>>,
    buffer: &mut String,
) -> u64 {
    buffer.clear();
    buffer.push_str(group);
    buffer.push('\u{1e}');
    append_key(values, buffer);
    value_hash(buffer)
}

/// The tumbling window `[start, end)` holding `time`, aligned to the Unix epoch.
pub(crate) fn window_of(time: i64, window_ms: i64) -> (i64, i64) {
    // `time - rem` instead of `div * window`: the product can overflow near i64::MIN, the
    // saturating subtraction cannot panic for any event time a record may carry.
    let start = time.saturating_sub(time.rem_euclid(window_ms));
    (start, start.saturating_add(window_ms))
}

/// Runs `work` on the value of `key` in `map`, made by `make` when absent. When the map
/// already holds the rule's most keys, the oldest by `age` go first ([`evict_oldest`],
/// counted). A hit on a known group, the common case, costs one lookup and allocates nothing;
/// the key is copied only when inserted. (A closure rather than a returned `&mut V`: the borrow
/// checker does not let a function return the borrow of one lookup or else insert.)
pub(crate) fn with_group<'c, V, A: Ord, R>(
    map: &mut Map<String, V>,
    key: &str,
    ctx: &mut Ctx<'c>,
    age: impl Fn(&V) -> A,
    make: impl FnOnce() -> V,
    work: impl FnOnce(&mut V, &mut Ctx<'c>) -> R,
) -> R {
    if let Some(value) = map.get_mut(key) {
        return work(value, ctx);
    }
    let max = ctx.limits.max_groups;
    if map.len() >= max {
        // Down to a batch below the limit, whatever the size: an edit that lowered the rule's
        // `max_keys` kept a state that may hold more.
        let excess = map.len() - max + eviction_batch(max);
        let evicted = evict_oldest(map, excess, age);
        ctx.stats.evicted_groups += evicted as u64;
    }
    work(map.entry(key.to_string()).or_insert_with(make), ctx)
}

/// [`with_group`] for the groups of tumbling windows: runs `work` on group `key` of the window
/// starting at `start`, made when absent. `entries` counts the groups of all windows; when it
/// has reached the rule's most keys, [`evict_window`] frees room first (counted).
pub(crate) fn with_window_group<'c, G: Default, R>(
    windows: &mut BTreeMap<i64, Map<String, G>>,
    entries: &mut usize,
    start: i64,
    key: &str,
    ctx: &mut Ctx<'c>,
    work: impl FnOnce(&mut G, &mut Ctx<'c>) -> R,
) -> R {
    if let Some(group) = windows
        .get_mut(&start)
        .and_then(|groups| groups.get_mut(key))
    {
        return work(group, ctx);
    }
    while *entries >= ctx.limits.max_groups {
        let dropped = evict_window(windows, start, ctx.limits.max_groups);
        *entries -= dropped.min(*entries);
        ctx.stats.evicted_groups += dropped as u64;
        if dropped == 0 {
            break;
        }
    }
    *entries += 1;
    let groups = windows.entry(start).or_default();
    work(groups.entry(key.to_string()).or_default(), ctx)
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
    map: &mut Map<K, V>,
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
    windows: &mut BTreeMap<i64, Map<String, G>>,
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
        let mut ages: Map<String, i64> = (0..100)
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
        let mut buffer = String::from("left over");
        for (group, value) in [
            ("", ""),
            ("alice", "DE"),
            ("a\u{1f}b", "ü"),
            ("x".repeat(100).as_str(), "y"),
        ] {
            let text = Value::String(value.to_string());
            assert_eq!(
                pair_hash(group, [Some(&text)], &mut buffer),
                value_hash(&format!("{group}\u{1e}{value}"))
            );
        }
        let (country, city) = (Value::from("DE"), Value::from(7));
        assert_eq!(
            pair_hash("bob", [Some(&country), None, Some(&city)], &mut buffer),
            value_hash("bob\u{1e}DE\u{1f}null\u{1f}7")
        );
    }
}
