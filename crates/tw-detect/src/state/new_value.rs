//! New-value state: for each (group, value) pair seen, the day it was last seen, kept as one
//! 64-bit hash and one day number (12 bytes of payload per pair), and forgotten once older
//! than the rule's history. An event whose pair is unknown or older than the history raises
//! an alert (after the optional learning period).

use serde::{Deserialize, Serialize};
use tw_core::Alert;

use serde_json::Value;

use super::{Ctx, Hit, Map, key_of, pair_hash};
use crate::spec::Kind;

const DAY_MS: i64 = 86_400_000;

/// New-value history of one rule.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct History {
    /// hash(group, value) → day number (Unix days) it was last seen.
    seen: Map<u64, u32>,
    /// Event time of the rule's first matching event (start of the learning period).
    first_time: Option<i64>,
    /// Day of the last pruning pass.
    pruned_day: u32,
    /// Buffer for the text of each event's pair (only its hash is kept).
    #[serde(skip)]
    pair: String,
}

fn day_of(time: i64) -> u32 {
    time.div_euclid(DAY_MS).clamp(0, i64::from(u32::MAX)) as u32
}

impl History {
    pub(crate) fn keys(&self) -> usize {
        self.seen.len()
    }

    pub(crate) fn observe(&mut self, ctx: &mut Ctx, hit: &Hit) -> Option<Alert> {
        let kind = ctx.rule.kind()?;
        let Kind::NewValue {
            fields,
            history_days,
            learn_ms,
            ..
        } = kind
        else {
            return None;
        };
        let values = hit.values;
        // An event without the field(s) has no value to be new.
        if values.iter().any(|v| v.is_none_or(Value::is_null)) {
            return None;
        }
        let group = hit.group;
        let hash = pair_hash(group, values.iter().copied(), &mut self.pair);
        let day = day_of(hit.time);
        let first = *self.first_time.get_or_insert(hit.time);
        let learning = hit.time < first.saturating_add(*learn_ms);
        // One lookup for a known pair, the common case.
        let known = match self.seen.get_mut(&hash) {
            Some(last) => {
                let recent = day.saturating_sub(*last) <= *history_days;
                *last = (*last).max(day);
                recent
            }
            None => {
                if self.seen.len() >= ctx.limits.max_groups {
                    self.make_room(ctx, *history_days, day);
                }
                self.seen.insert(hash, day);
                false
            }
        };
        if known || learning {
            return None;
        }
        // The dedup suffix `"{value}|{day}"`, built in the value's own buffer.
        let mut value = key_of(values.iter().copied());
        let value_len = value.len();
        value.push('|');
        value.push_str(itoa::Buffer::new().format(day));
        let mut alert = ctx.alert(group, &value, hit.time);
        value.truncate(value_len);
        if let Some(map) = &mut alert.group {
            for (path, text) in fields.iter().zip(value.split('\u{1f}')) {
                map.insert(path.as_str().to_string(), text.to_string());
            }
        }
        alert.events = vec![hit.event()];
        alert.event_refs = vec![hit.location];
        Some(alert)
    }

    /// Drops expired pairs; if the history is still full, the pairs seen longest ago, leaving
    /// room for [`super::eviction_batch`] new ones.
    fn make_room(&mut self, ctx: &mut Ctx, history_days: u32, today: u32) {
        self.seen
            .retain(|_, last| today.saturating_sub(*last) <= history_days);
        let max = ctx.limits.max_groups;
        if self.seen.len() >= max {
            let keep = max.saturating_sub(super::eviction_batch(max));
            let excess = self.seen.len() - keep;
            let evicted = super::evict_oldest(&mut self.seen, excess, |day| *day);
            ctx.stats.evicted_groups += evicted as u64;
        }
    }

    /// Forgets pairs older than the history, once per day of watermark.
    pub(crate) fn advance(&mut self, ctx: &mut Ctx, watermark: i64) {
        let Some(Kind::NewValue { history_days, .. }) = ctx.rule.kind() else {
            return;
        };
        let today = day_of(watermark);
        if today <= self.pruned_day {
            return;
        }
        self.pruned_day = today;
        self.seen
            .retain(|_, last| today.saturating_sub(*last) <= *history_days);
    }
}
