//! Sequence state: per join key, the recent events that satisfy a step or `until`, kept in
//! event-time order (arrival order breaks ties), so events that arrive out of order within the
//! allowed lateness are placed where they happened.
//!
//! A sequence is found by scanning the buffer: from each first-step event, the earliest later
//! event of each next step, all within `maxspan` of the first, with no `until` event after the
//! first step and before the last one. An unordered sequence (`ordered: false`) starts at any
//! step's event and takes each later event that satisfies a step not yet covered, until every
//! step is. Without `until`, a found sequence fires at once (later
//! arrivals cannot undo it); with `until`, it fires once the watermark passes its last step, when
//! no cancelling event can still arrive.

use std::collections::VecDeque;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use tw_core::{Alert, EventLocation, SharedEvent};

use super::{Ctx, Hit, Map};
use crate::spec::Kind;

/// Most buffered events per key; beyond it the oldest is dropped (counted as evicted).
const MAX_BUFFERED_PER_KEY: usize = 256;

/// One buffered event.
#[derive(Debug, Serialize, Deserialize)]
struct Buffered {
    time: i64,
    /// Arrival number, to order events with equal times.
    arrival: u64,
    location: EventLocation,
    steps: u32,
    until: bool,
    event: SharedEvent,
}

/// Sequence state of one rule.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Sequences {
    /// Per key, its events in order (a ring: the oldest leaves at the front as new ones come
    /// in at the back, without shifting the rest).
    keys: Map<String, VecDeque<Buffered>>,
    arrivals: u64,
    /// Horizon of the last pass that dropped expired events (none yet since load).
    #[serde(skip)]
    pruned_horizon: Option<i64>,
    /// `until` rules: the watermark up to which every key's sequences were confirmed and fired
    /// (none yet since load), so the next pass looks only at what can have changed since.
    #[serde(skip)]
    confirmed_to: Option<i64>,
    /// `until` rules: the oldest time of the events buffered since that pass.
    #[serde(skip)]
    oldest_since_confirmed: Option<i64>,
}

struct Shape {
    steps: usize,
    maxspan_ms: i64,
    has_until: bool,
    ordered: bool,
}

fn shape(ctx: &Ctx) -> Option<Shape> {
    match ctx.rule.kind()? {
        Kind::Sequence {
            steps,
            maxspan_ms,
            until,
            ordered,
            ..
        } => Some(Shape {
            steps: steps.len(),
            maxspan_ms: *maxspan_ms,
            has_until: until.is_some(),
            ordered: *ordered,
        }),
        _ => None,
    }
}

impl Sequences {
    pub(crate) fn keys(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn observe(&mut self, ctx: &mut Ctx, hit: &Hit) -> Vec<Alert> {
        let Some(shape) = shape(ctx) else {
            return Vec::new();
        };
        if hit.steps == 0 && !hit.until {
            return Vec::new();
        }
        let key = hit.group;
        let Self {
            keys,
            arrivals,
            oldest_since_confirmed,
            ..
        } = self;
        super::with_group(
            keys,
            key,
            ctx,
            |b| b.back().map_or(i64::MIN, |e| e.time),
            VecDeque::new,
            |buffer, ctx| {
                *arrivals += 1;
                let item = Buffered {
                    time: hit.time,
                    arrival: *arrivals,
                    location: hit.location,
                    steps: hit.steps,
                    until: hit.until,
                    event: hit.event(),
                };
                let item_time = item.time;
                // Arrival numbers grow, so an event no older than the newest goes last (most
                // do).
                let mut at = if buffer.back().is_none_or(|e| e.time <= item.time) {
                    buffer.len()
                } else {
                    buffer.partition_point(|e| (e.time, e.arrival) <= (item.time, item.arrival))
                };
                buffer.insert(at, item);
                if buffer.len() > MAX_BUFFERED_PER_KEY {
                    buffer.pop_front();
                    ctx.stats.evicted_groups += 1;
                    match at.checked_sub(1) {
                        Some(shifted) => at = shifted,
                        // The new event was the oldest and went: nothing new can be complete.
                        None => return Vec::new(),
                    }
                }
                if shape.has_until {
                    let oldest = oldest_since_confirmed.get_or_insert(item_time);
                    *oldest = (*oldest).min(item_time);
                    return Vec::new();
                }
                // Without `until`, every complete sequence fires when it completes, so the
                // buffer held none before this event: a new one contains it, so it starts at or
                // before it and at most `maxspan` earlier. Other starts would be scanned for
                // nothing, and it is the scan per start that grows with a busy key's buffer.
                // The event is consumed when it fires, so one sequence at most completes.
                let earliest = item_time.saturating_sub(shape.maxspan_ms);
                let first_start = buffer.partition_point(|e| e.time < earliest);
                match find(buffer, &shape, None, first_start..at + 1) {
                    Some(found) => vec![fire(ctx, key, buffer, &found)],
                    None => Vec::new(),
                }
            },
        )
    }

    pub(crate) fn advance(&mut self, ctx: &mut Ctx, watermark: i64) -> Vec<Alert> {
        let Some(shape) = shape(ctx) else {
            return Vec::new();
        };
        let mut alerts = Vec::new();
        // A first step older than this cannot be completed by an event that is not late.
        let horizon = watermark.saturating_sub(shape.maxspan_ms);
        // Expired events are dropped in passes, once the horizon has moved on by an eighth of
        // `maxspan`, not at every batch: until then they only cost memory, since a sequence
        // they could start was either found already or needs an event earlier than any that
        // can still arrive.
        let prune = self
            .pruned_horizon
            .is_none_or(|last| horizon >= last.saturating_add(shape.maxspan_ms / 8));
        if !shape.has_until && !prune {
            return alerts;
        }
        // (Events that came since are normally not older than the last pass's watermark, but
        // one that is, after a replay's `finish` for instance, moves the bound back.)
        let since = self.confirmed_to.map(|to| {
            self.oldest_since_confirmed
                .map_or(to, |oldest| to.min(oldest))
        });
        self.keys.retain(|key, buffer| {
            if shape.has_until {
                confirm(ctx, key, buffer, &shape, since, watermark, &mut alerts);
            }
            if prune {
                buffer.retain(|e| e.time >= horizon);
            }
            !buffer.is_empty()
        });
        if prune {
            self.pruned_horizon = Some(horizon);
        }
        if shape.has_until {
            self.confirmed_to = Some(watermark);
            self.oldest_since_confirmed = None;
        }
        alerts
    }
}

/// Fires the sequences of one key's `buffer` that `watermark` confirms (`until` rules).
///
/// A pass at `since` fired every sequence confirmed then, and events that came after it are
/// not older than `since` (the caller moves `since` back to the oldest of them). So a sequence
/// confirmed now and not then ends at or after `since`: a key without events in
/// `[since, watermark]` has none, and a sequence that has one starts at most `maxspan` before
/// `since`. Each pass used to search every key's buffer from its first event. Firing removes
/// events, and removing one that is both a first step and `until` can unblock an older
/// sequence, so the search after a fire looks at every start again.
fn confirm(
    ctx: &mut Ctx,
    key: &str,
    buffer: &mut VecDeque<Buffered>,
    shape: &Shape,
    since: Option<i64>,
    watermark: i64,
    alerts: &mut Vec<Alert>,
) {
    let mut earliest_start = None;
    if let Some(since) = since {
        // The newest event first: an idle key's is older than `since`.
        if buffer.back().is_none_or(|e| e.time < since) {
            return;
        }
        let confirmed = buffer.partition_point(|e| e.time <= watermark);
        if confirmed == 0 || buffer[confirmed - 1].time < since {
            return;
        }
        earliest_start = Some(since.saturating_sub(shape.maxspan_ms));
    }
    loop {
        let from = earliest_start.map_or(0, |time| buffer.partition_point(|e| e.time < time));
        let Some(found) = find(buffer, shape, Some(watermark), from..buffer.len()) else {
            return;
        };
        alerts.push(fire(ctx, key, buffer, &found));
        earliest_start = None;
    }
}

/// Indexes into `buffer` of the earliest complete sequence whose first event is in `starts`,
/// if any. With `confirmed_until`, only a sequence whose last step is at or before it counts
/// (`until` rules).
fn find(
    buffer: &VecDeque<Buffered>,
    shape: &Shape,
    confirmed_until: Option<i64>,
    starts: Range<usize>,
) -> Option<Vec<usize>> {
    if !shape.ordered {
        return find_unordered(buffer, shape, confirmed_until, starts);
    }
    for (first, start) in indexed(buffer, starts) {
        if start.steps & 1 == 0 {
            continue;
        }
        let mut chosen = vec![first];
        // Whether the chain ran out of events it may use: the end of the buffer, or the first
        // event after the watermark (the same place for every start).
        let mut ran_out = true;
        for (index, event) in indexed(buffer, first + 1..buffer.len()) {
            if confirmed_until.is_some_and(|limit| event.time > limit) {
                break;
            }
            if event.time - start.time > shape.maxspan_ms || event.until {
                ran_out = false;
                break;
            }
            if event.steps & (1 << chosen.len()) != 0 {
                chosen.push(index);
                if chosen.len() == shape.steps {
                    return Some(chosen);
                }
            }
        }
        if ran_out {
            // A later start takes each step at the same event or a later one (the earliest
            // after its own previous step), so it would run out too: only a stop that depends
            // on the start (span, `until`) leaves later starts a chance. This keeps the search
            // linear in a busy key's buffer.
            return None;
        }
    }
    None
}

/// [`find`] for unordered steps: from each event that satisfies a step, the later events (within
/// `maxspan`, before any `until`) that each satisfy a step not yet covered.
fn find_unordered(
    buffer: &VecDeque<Buffered>,
    shape: &Shape,
    confirmed_until: Option<i64>,
    starts: Range<usize>,
) -> Option<Vec<usize>> {
    let all: u32 = if shape.steps >= 32 {
        u32::MAX
    } else {
        (1u32 << shape.steps) - 1
    };
    for (first, start) in indexed(buffer, starts) {
        if start.steps == 0 || confirmed_until.is_some_and(|limit| start.time > limit) {
            continue;
        }
        let mut covered = start.steps & all;
        let mut chosen = vec![first];
        if covered == all {
            return Some(chosen);
        }
        for (index, event) in indexed(buffer, first + 1..buffer.len()) {
            if event.time - start.time > shape.maxspan_ms
                || confirmed_until.is_some_and(|limit| event.time > limit)
                || event.until
            {
                break;
            }
            if event.steps & all & !covered != 0 {
                covered |= event.steps & all;
                chosen.push(index);
                if covered == all {
                    return Some(chosen);
                }
            }
        }
    }
    None
}

/// The events of `buffer` at `indexes` (cut to the buffer), with their indexes.
fn indexed(
    buffer: &VecDeque<Buffered>,
    indexes: Range<usize>,
) -> impl Iterator<Item = (usize, &Buffered)> {
    let end = indexes.end.min(buffer.len());
    let start = indexes.start.min(end);
    buffer
        .range(start..end)
        .enumerate()
        .map(move |(i, event)| (start + i, event))
}

/// Builds the alert of a found sequence and removes its events from the buffer.
fn fire(ctx: &mut Ctx, key: &str, buffer: &mut VecDeque<Buffered>, found: &[usize]) -> Alert {
    let first = &buffer[found[0]];
    let last = &buffer[found[found.len() - 1]];
    let suffix = format!("{}:{}", first.location.partition, first.location.offset);
    let mut alert = ctx.alert(key, &suffix, last.time);
    alert.window = Some((first.time, last.time.saturating_add(1)));
    alert.value = Some(found.len() as f64);
    alert.event_refs = found.iter().map(|&i| buffer[i].location).collect();
    alert.events = found
        .iter()
        .take(ctx.limits.max_events.max(1))
        .map(|&i| buffer[i].event.clone())
        .collect();
    for &index in found.iter().rev() {
        buffer.remove(index);
    }
    alert
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ordered search without the early end: every start scanned.
    fn find_every_start(
        buffer: &VecDeque<Buffered>,
        shape: &Shape,
        confirmed_until: Option<i64>,
        starts: Range<usize>,
    ) -> Option<Vec<usize>> {
        for first in starts {
            let start = &buffer[first];
            if start.steps & 1 == 0 {
                continue;
            }
            let mut chosen = vec![first];
            for (index, event) in buffer.iter().enumerate().skip(first + 1) {
                if event.time - start.time > shape.maxspan_ms
                    || confirmed_until.is_some_and(|limit| event.time > limit)
                    || event.until
                {
                    break;
                }
                if event.steps & (1 << chosen.len()) != 0 {
                    chosen.push(index);
                    if chosen.len() == shape.steps {
                        return Some(chosen);
                    }
                }
            }
        }
        None
    }

    /// Numbers below the argument, from a xorshift generator started at `state`.
    fn xorshift(mut state: u64) -> impl FnMut(u64) -> u64 {
        move |below| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        }
    }

    /// Random buffered events of a few keys, in batches, through an `until` rule's state: once
    /// as the engine drives it, and once with every pass scanning every key from its start.
    #[test]
    fn until_passes_confirm_what_a_full_scan_confirms() {
        use crate::limits::{Limits, RuleStats};
        use crate::state::{Ctx, Hit, WholeEvent};
        use tw_core::Record;

        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let limits = Limits {
            max_groups: 1_000,
            max_events: 4,
        };
        let mut fired = 0;
        for round in 0..200 {
            let steps = 2 + next(2);
            let ordered = round % 4 != 3;
            let text = format!(
                "id: q\ntitle: T\nstream: s\nsequence:\n  by: k\n  maxspan: {}s\n  ordered: {ordered}\n  steps: [{}]\n  until: {{field: u, exists: true}}\n",
                1 + next(20),
                (0..steps)
                    .map(|i| format!("{{field: s{i}, exists: true}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let rule = crate::parse_rule(&text, crate::RuleFormat::Yaml)
                .unwrap()
                .compile()
                .unwrap();
            let (mut incremental, mut full) = (Sequences::default(), Sequences::default());
            let mut stats = RuleStats::default();
            let lateness = next(3_000) as i64;
            let (mut max_time, mut offset) = (0i64, 0u64);
            for _ in 0..30 {
                let watermark_before = max_time - lateness;
                for _ in 0..next(12) {
                    // Mostly forward in time, sometimes back, never before the watermark.
                    let time = (max_time + next(2_500) as i64 - 800).max(watermark_before);
                    max_time = max_time.max(time);
                    offset += 1;
                    let (record, parsed) = (
                        Record {
                            offset,
                            ingest_time_ms: 0,
                            event_time_ms: time,
                            key: bytes::Bytes::new(),
                            payload: bytes::Bytes::new(),
                        },
                        serde_json::Value::Null,
                    );
                    let whole = WholeEvent::new(&record, Some(&parsed), None);
                    let group = ["a", "b", "c"][next(3) as usize];
                    let hit = Hit {
                        group,
                        values: &[],
                        whole: &whole,
                        time,
                        location: EventLocation {
                            partition: 0,
                            offset,
                        },
                        steps: next(1 << steps) as u32,
                        until: next(12) == 0,
                    };
                    for sequences in [&mut incremental, &mut full] {
                        let mut ctx = Ctx {
                            rule: &rule,
                            limits: &limits,
                            stats: &mut stats,
                        };
                        assert!(sequences.observe(&mut ctx, &hit).is_empty());
                    }
                }
                // Now and then a pass at the newest time, as a replay's `finish` makes: the
                // events after it may be older than that watermark.
                let watermark = if next(5) == 0 {
                    max_time
                } else {
                    max_time - lateness
                };
                let mut ctx = Ctx {
                    rule: &rule,
                    limits: &limits,
                    stats: &mut stats,
                };
                let keys_of = |alerts: Vec<Alert>| -> Vec<String> {
                    let mut keys: Vec<String> = alerts.into_iter().map(|a| a.dedup_key).collect();
                    keys.sort();
                    keys
                };
                let expected = {
                    full.confirmed_to = None;
                    keys_of(full.advance(&mut ctx, watermark))
                };
                let got = keys_of(incremental.advance(&mut ctx, watermark));
                assert_eq!(got, expected, "round {round}, watermark {watermark}");
                fired += got.len();
            }
        }
        assert!(fired > 200, "the rounds confirm sequences: {fired}");
    }

    #[test]
    fn ending_the_search_early_finds_the_same_sequences() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let mut found = 0;
        for _ in 0..3_000 {
            let steps = 1 + next(3) as usize;
            let shape = Shape {
                steps,
                maxspan_ms: 1 + next(50) as i64,
                has_until: false,
                ordered: true,
            };
            let mut time = 0;
            let buffer: VecDeque<Buffered> = (0..next(40))
                .map(|arrival| {
                    time += next(6) as i64;
                    Buffered {
                        time,
                        arrival,
                        location: EventLocation {
                            partition: 0,
                            offset: arrival,
                        },
                        steps: next(1 << steps) as u32,
                        until: next(25) == 0,
                        event: SharedEvent::new(serde_json::Value::Null),
                    }
                })
                .collect();
            let limit = (next(2) == 0).then(|| next(200) as i64);
            let from = next(buffer.len() as u64 + 1) as usize;
            let to = from + next((buffer.len() - from) as u64 + 1) as usize;
            let expected = find_every_start(&buffer, &shape, limit, from..to);
            found += usize::from(expected.is_some());
            assert_eq!(find(&buffer, &shape, limit, from..to), expected);
        }
        assert!(found > 300, "the generated buffers hold sequences: {found}");
    }
}
