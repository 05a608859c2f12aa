//! Threshold state: counts of matching events per group, on tumbling windows (aligned to the
//! Unix epoch) or a sliding window, firing above a bound as soon as it is crossed and below a
//! bound when the watermark decides the window.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use tw_core::{Alert, EventLocation, SharedEvent};

use super::{Ctx, Hit, Map};
use crate::spec::Kind;
use crate::stateful::CountBound;

fn spec(ctx: &Ctx) -> Option<(CountBound, i64)> {
    match ctx.rule.kind()? {
        Kind::Threshold {
            bound, window_ms, ..
        } => Some((*bound, *window_ms)),
        _ => None,
    }
}

/// Count and sample of one group in one tumbling window.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Group {
    count: u64,
    /// Set once the alert for this (group, window) has been raised: it is raised only once.
    fired: bool,
    /// The first matching events (at most `max_events`), released when the alert fires.
    events: Vec<SharedEvent>,
    refs: Vec<EventLocation>,
}

/// Open tumbling windows of one rule, by window start, each with its groups.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Tumbling {
    windows: BTreeMap<i64, Map<String, Group>>,
    /// "Below" rules: the groups watched in a window (those seen in the window before it).
    watched: BTreeMap<i64, Vec<String>>,
    entries: usize,
}

impl Tumbling {
    pub(crate) fn keys(&self) -> usize {
        self.entries + self.watched.values().map(Vec::len).sum::<usize>()
    }

    pub(crate) fn observe(&mut self, ctx: &mut Ctx, hit: &Hit) -> Option<Alert> {
        let (bound, window_ms) = spec(ctx)?;
        let key = hit.group;
        let (start, end) = super::window_of(hit.time, window_ms);
        super::with_window_group(
            &mut self.windows,
            &mut self.entries,
            start,
            key,
            ctx,
            |group: &mut Group, ctx| {
                group.count += 1;
                if group.fired {
                    return None;
                }
                if group.events.len() < ctx.limits.max_events {
                    group.events.push(hit.event());
                    group.refs.push(hit.location);
                }
                // "Below" bounds are decided when the window closes, not per event.
                if bound.is_below() || !bound.holds(group.count) {
                    return None;
                }
                group.fired = true;
                let mut alert = ctx.alert(key, &start.to_string(), hit.time);
                alert.window = Some((start, end));
                alert.value = Some(group.count as f64);
                alert.events = std::mem::take(&mut group.events);
                alert.event_refs = std::mem::take(&mut group.refs);
                Some(alert)
            },
        )
    }

    /// Closes every window whose end is at or before `watermark`; for "below" bounds, fires
    /// for each watched group whose count in the closed window satisfies the bound.
    pub(crate) fn advance(&mut self, ctx: &mut Ctx, watermark: i64) -> Vec<Alert> {
        let Some((bound, window_ms)) = spec(ctx) else {
            return Vec::new();
        };
        // Windows starting at or before `watermark - window_ms` end at or before `watermark`.
        let first_open = watermark.saturating_sub(window_ms).saturating_add(1);
        let open = self.windows.split_off(&first_open);
        let closed = std::mem::replace(&mut self.windows, open);
        self.entries -= closed
            .values()
            .map(Map::len)
            .sum::<usize>()
            .min(self.entries);
        if !bound.is_below() {
            return Vec::new();
        }
        let open_watched = self.watched.split_off(&first_open);
        let mut watched = std::mem::replace(&mut self.watched, open_watched);
        let mut closed = closed;
        let mut alerts = Vec::new();
        // Smallest start first; closing a window may add the (also closed) next one.
        loop {
            let start = match (closed.keys().next(), watched.keys().next()) {
                (Some(a), Some(b)) => *a.min(b),
                (Some(a), None) => *a,
                (None, Some(b)) => *b,
                (None, None) => break,
            };
            let mut groups = closed.remove(&start).unwrap_or_default();
            for key in watched.remove(&start).unwrap_or_default() {
                let group = groups.remove(&key);
                let count = group.as_ref().map_or(0, |g| g.count);
                if !bound.holds(count) {
                    if let Some(group) = group {
                        groups.insert(key, group);
                    }
                    continue;
                }
                let end = start.saturating_add(window_ms);
                let mut alert = ctx.alert(&key, &start.to_string(), end - 1);
                alert.window = Some((start, end));
                alert.value = Some(count as f64);
                if let Some(mut group) = group {
                    alert.events = std::mem::take(&mut group.events);
                    alert.event_refs = std::mem::take(&mut group.refs);
                    groups.insert(key, group);
                }
                alerts.push(alert);
            }
            // Groups seen in this window are watched in the next one.
            let next = start.saturating_add(window_ms);
            let seen: Vec<String> = groups.into_keys().collect();
            if !seen.is_empty() {
                if next < first_open {
                    watched.entry(next).or_default().extend(seen);
                } else {
                    self.watched.entry(next).or_default().extend(seen);
                }
            }
        }
        alerts
    }
}

/// One group of a sliding threshold: the times of its recent matching events, in order.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SlidingGroup {
    times: VecDeque<(i64, EventLocation)>,
    /// "Below" bounds: the first event time of the group, and whether it may fire.
    first_seen: i64,
    armed: bool,
    checked_until: Option<i64>,
}

/// Sliding threshold state of one rule.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Sliding {
    groups: Map<String, SlidingGroup>,
}

/// Most event times one sliding group keeps (a busier group is far above any "below" bound).
const MAX_SLIDING_TIMES: usize = 10_000;

impl Sliding {
    pub(crate) fn keys(&self) -> usize {
        self.groups.len()
    }

    pub(crate) fn observe(&mut self, ctx: &mut Ctx, hit: &Hit) -> Option<Alert> {
        let (bound, window_ms) = spec(ctx)?;
        let key = hit.group;
        // When full, the groups whose newest events are oldest go first.
        super::with_group(
            &mut self.groups,
            key,
            ctx,
            |g| g.times.back().map_or(i64::MIN, |t| t.0),
            || SlidingGroup {
                first_seen: hit.time,
                armed: true,
                ..SlidingGroup::default()
            },
            |group, ctx| {
                group.first_seen = group.first_seen.min(hit.time);
                // Sorted insert: events may arrive out of order within the allowed lateness.
                let at = group.times.partition_point(|(t, _)| *t <= hit.time);
                group.times.insert(at, (hit.time, hit.location));
                if group.times.len() > MAX_SLIDING_TIMES {
                    group.times.pop_front();
                    ctx.stats.evicted_groups += 1;
                }
                if bound.is_below() {
                    return None;
                }
                // Above: is there a run of `n` events spanning less than the window around `at`?
                let n = bound.firing_count() as usize;
                let len = group.times.len();
                if len < n {
                    return None;
                }
                let first = at.saturating_sub(n - 1);
                let last_start = at.min(len - n);
                let start = (first..=last_start)
                    .find(|&i| group.times[i + n - 1].0 - group.times[i].0 < window_ms)?;
                let begin = group.times[start].0;
                let mut alert = ctx.alert(key, &begin.to_string(), hit.time);
                alert.window = Some((begin, begin.saturating_add(window_ms)));
                alert.value = Some(n as f64);
                alert.events = vec![hit.event()];
                alert.event_refs = group
                    .times
                    .range(start..start + n)
                    .take(ctx.limits.max_events.max(1))
                    .map(|(_, location)| *location)
                    .collect();
                // Counting starts afresh after the alert: the events that fired are consumed.
                group.times.drain(..start + n);
                Some(alert)
            },
        )
    }

    pub(crate) fn advance(&mut self, ctx: &mut Ctx, watermark: i64) -> Vec<Alert> {
        let Some((bound, window_ms)) = spec(ctx) else {
            return Vec::new();
        };
        let horizon = watermark.saturating_sub(window_ms);
        let mut alerts = Vec::new();
        let mut empty = Vec::new();
        for (key, group) in &mut self.groups {
            if bound.is_below()
                && let Some(at) = below_fires(group, bound, window_ms, watermark)
            {
                let begin = at.saturating_sub(window_ms);
                let mut alert = ctx.alert(key, &format!("{at}"), at);
                alert.window = Some((begin, at));
                let count = count_in(&group.times, begin, at);
                alert.value = Some(count as f64);
                alerts.push(alert);
            }
            // Events at or before `watermark - window` can no longer share a window with an
            // event that is not late (late means before the watermark).
            while group.times.front().is_some_and(|(t, _)| *t <= horizon) {
                group.times.pop_front();
            }
            if group.times.is_empty() && (!bound.is_below() || !group.armed) {
                empty.push(key.clone());
            }
        }
        for key in empty {
            self.groups.remove(&key);
        }
        alerts
    }
}

/// Events of `times` in `(begin, end]`.
fn count_in(times: &VecDeque<(i64, EventLocation)>, begin: i64, end: i64) -> u64 {
    times
        .iter()
        .filter(|(t, _)| *t > begin && *t <= end)
        .count() as u64
}

/// "Below" on a sliding window: walks the instants in `(checked_until, watermark]` at which
/// the count in `(T - window, T]` changes, in order, and returns the first instant at which the
/// bound holds while armed (the group must have been watched for a whole window). The bound
/// re-arms once the count no longer satisfies it.
fn below_fires(
    group: &mut SlidingGroup,
    bound: CountBound,
    window_ms: i64,
    watermark: i64,
) -> Option<i64> {
    let from = group.checked_until.unwrap_or(i64::MIN);
    let watched_from = group.first_seen.saturating_add(window_ms);
    let mut instants: Vec<i64> = group
        .times
        .iter()
        .flat_map(|(t, _)| [*t, t.saturating_add(window_ms)])
        .chain([watched_from])
        .filter(|t| *t > from && *t <= watermark)
        .collect();
    instants.sort_unstable();
    instants.dedup();
    group.checked_until = Some(watermark);
    let mut fired = None;
    for at in instants {
        let count = count_in(&group.times, at.saturating_sub(window_ms), at);
        if !bound.holds(count) {
            group.armed = true;
        } else if group.armed && at >= watched_from && fired.is_none() {
            group.armed = false;
            fired = Some(at);
        }
    }
    fired
}
