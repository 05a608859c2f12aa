//! Distinct-count state: the distinct values of a field per group, on tumbling windows or a
//! sliding window, firing as soon as the count reaches the bound. Values are kept as 64-bit
//! hashes and only up to the bound (at most `MAX_DISTINCT_BOUND`), so the count is exact and
//! memory per group is bounded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tw_core::{Alert, EventLocation, SharedEvent, value_text};

use super::{Ctx, Hit, Map, Set, value_hash};
use crate::spec::Kind;

/// The firing count and window of the rule.
fn spec(ctx: &Ctx) -> Option<(u64, i64)> {
    match ctx.rule.kind()? {
        Kind::Distinct {
            bound, window_ms, ..
        } => Some((bound.firing_count(), *window_ms)),
        _ => None,
    }
}

/// The distinct values of one group in one tumbling window.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Group {
    values: Set<u64>,
    fired: bool,
    events: Vec<SharedEvent>,
    refs: Vec<EventLocation>,
}

/// Tumbling distinct-count state of one rule.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct TumblingDistinct {
    windows: BTreeMap<i64, Map<String, Group>>,
    entries: usize,
}

impl TumblingDistinct {
    pub(crate) fn keys(&self) -> usize {
        self.entries
    }

    pub(crate) fn observe(&mut self, ctx: &mut Ctx, hit: &Hit) -> Option<Alert> {
        let (firing, window_ms) = spec(ctx)?;
        let value = hit.values.first().copied().flatten().and_then(value_text)?;
        let key = hit.group;
        let (start, end) = super::window_of(hit.time, window_ms);
        super::with_window_group(
            &mut self.windows,
            &mut self.entries,
            start,
            key,
            ctx,
            |group: &mut Group, ctx| {
                if group.fired || !group.values.insert(value_hash(&value)) {
                    return None;
                }
                if group.events.len() < ctx.limits.max_events {
                    group.events.push(hit.event());
                    group.refs.push(hit.location);
                }
                if (group.values.len() as u64) < firing {
                    return None;
                }
                group.fired = true;
                // The values are no longer needed once the window has fired.
                let count = group.values.len();
                group.values = Set::default();
                let mut alert = ctx.alert(key, &start.to_string(), hit.time);
                alert.window = Some((start, end));
                alert.value = Some(count as f64);
                alert.events = std::mem::take(&mut group.events);
                alert.event_refs = std::mem::take(&mut group.refs);
                Some(alert)
            },
        )
    }

    pub(crate) fn advance(&mut self, ctx: &mut Ctx, watermark: i64) {
        let Some((_, window_ms)) = spec(ctx) else {
            return;
        };
        let first_open = watermark.saturating_sub(window_ms).saturating_add(1);
        let open = self.windows.split_off(&first_open);
        let closed = std::mem::replace(&mut self.windows, open);
        self.entries -= closed
            .values()
            .map(Map::len)
            .sum::<usize>()
            .min(self.entries);
    }
}

/// One group of a sliding distinct count: each value's newest event time.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SlidingGroup {
    latest: Map<u64, (i64, EventLocation)>,
}

/// Sliding distinct-count state of one rule.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SlidingDistinct {
    groups: Map<String, SlidingGroup>,
    /// Horizon of the last pass that dropped expired values (none yet since load).
    #[serde(skip)]
    pruned_horizon: Option<i64>,
}

impl SlidingDistinct {
    pub(crate) fn keys(&self) -> usize {
        self.groups.len()
    }

    /// Counts, at the event's time `t`, the values whose newest occurrence is in
    /// `(t - window, t]`.
    pub(crate) fn observe(&mut self, ctx: &mut Ctx, hit: &Hit) -> Option<Alert> {
        let (firing, window_ms) = spec(ctx)?;
        let value = hit.values.first().copied().flatten().and_then(value_text)?;
        let key = hit.group;
        super::with_group(
            &mut self.groups,
            key,
            ctx,
            |g| g.latest.values().map(|v| v.0).max().unwrap_or(i64::MIN),
            SlidingGroup::default,
            |group, ctx| {
                let slot = group
                    .latest
                    .entry(value_hash(&value))
                    .or_insert((hit.time, hit.location));
                if hit.time >= slot.0 {
                    *slot = (hit.time, hit.location);
                }
                let begin = hit.time.saturating_sub(window_ms);
                let is_inside = |(t, _): &&(i64, EventLocation)| *t > begin && *t <= hit.time;
                // Counted first, collected only when it fires: most events do not fire.
                let inside = group.latest.values().filter(is_inside).count();
                if (inside as u64) < firing {
                    return None;
                }
                let mut alert = ctx.alert(key, &hit.time.to_string(), hit.time);
                alert.window = Some((begin.saturating_add(1), hit.time.saturating_add(1)));
                alert.value = Some(inside as f64);
                alert.events = vec![hit.event()];
                // In event-time order (the map's order is random), so a replay raises the same
                // alert.
                let mut inside: Vec<(i64, EventLocation)> =
                    group.latest.values().filter(is_inside).copied().collect();
                inside.sort_unstable_by_key(|(time, location)| {
                    (*time, location.partition, location.offset)
                });
                alert.event_refs = inside
                    .into_iter()
                    .take(ctx.limits.max_events.max(1))
                    .map(|(_, location)| location)
                    .collect();
                // Counting starts afresh after the alert. The emptied group stays (until the
                // next pass drops empty groups) with its table, which the group's next event
                // would otherwise allocate again.
                group.latest.clear();
                Some(alert)
            },
        )
    }

    pub(crate) fn advance(&mut self, ctx: &mut Ctx, watermark: i64) {
        let Some((_, window_ms)) = spec(ctx) else {
            return;
        };
        let horizon = watermark.saturating_sub(window_ms);
        // Expired values are not counted (`observe` counts inside the window only); they are
        // dropped in passes, once the horizon has moved on by an eighth of the window, rather
        // than by a walk over every group at every batch.
        if self
            .pruned_horizon
            .is_some_and(|last| horizon < last.saturating_add(window_ms / 8))
        {
            return;
        }
        self.pruned_horizon = Some(horizon);
        self.groups.retain(|_, group| {
            group.latest.retain(|_, (t, _)| *t > horizon);
            !group.latest.is_empty()
        });
    }
}
