//! The evaluation engine: rules indexed by stream, single-event alerts, and the stateful kinds
//! (threshold, distinct count, sequence, new value; see [`crate::state`]) driven by a
//! per-stream event-time watermark, with suppression. The same engine runs live, in dry runs
//! and in replays.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tw_core::{
    Alert, CheckedPayload, EventLocation, FieldPath, FieldSelection, Record, SelectedFields,
};

use crate::alert::single_event_alert;
use crate::batch::{CHUNK, Chunk, Events, Hits, Mask, PathTree};
use crate::compile::CompiledRule;
use crate::limits::{EngineConfig, Limits, RuleStats};
use crate::prefilter::Prefilter;
use crate::spec::Kind;
use crate::state::{Ctx, Hit, RuleState, Suppressions, WholeEvent, write_key};

/// One enabled rule as loaded into the engine.
pub(crate) struct ActiveRule {
    pub(crate) rule: Arc<CompiledRule>,
    /// The rule's i-th field path is the stream's `path_map[i]`-th path.
    path_map: Vec<usize>,
    /// The stream's paths of the rule's group paths and value paths ([`Kind::group_paths`],
    /// [`Kind::value_paths`]).
    group_map: Vec<usize>,
    value_map: Vec<usize>,
    /// Sequences: the stream's paths of each step's condition, then of `until`'s.
    step_maps: Vec<Vec<usize>>,
    /// Sequences: which events of the current chunk satisfy each step, then `until`.
    step_masks: Vec<Mask>,
    /// The rule's own limits (its `max_keys` or the engine's), taken from the rule as loaded
    /// now: an edit that changes only `max_keys` keeps the state and applies the new limit.
    limits: Limits,
    pub(crate) stats: RuleStats,
    pub(crate) state: RuleState,
    pub(crate) suppressions: Suppressions,
}

impl ActiveRule {
    fn fresh(rule: &Arc<CompiledRule>, maps: PathMaps, limits: Limits) -> Self {
        Self {
            rule: Arc::clone(rule),
            path_map: maps.condition,
            group_map: maps.group,
            value_map: maps.value,
            step_maps: maps.steps,
            step_masks: Vec::new(),
            limits,
            stats: RuleStats {
                rule_id: rule.id().to_string(),
                ..RuleStats::default()
            },
            state: RuleState::for_rule(rule),
            suppressions: Suppressions::default(),
        }
    }

    /// Applies suppression and stamps the alerts raised by this rule.
    fn raise(&mut self, raised: Vec<Alert>, stream: &str, now_ms: i64, out: &mut Vec<Alert>) {
        for mut alert in raised {
            if !self
                .suppressions
                .admit(&self.rule, &alert, self.limits.max_groups, &mut self.stats)
            {
                continue;
            }
            alert.stream = stream.to_string();
            alert.created_at_ms = now_ms;
            self.stats.alerts += 1;
            out.push(alert);
        }
    }

    fn advance(&mut self, watermark: i64, stream: &str, now_ms: i64, out: &mut Vec<Alert>) {
        let mut ctx = Ctx {
            rule: &self.rule,
            limits: &self.limits,
            stats: &mut self.stats,
        };
        let raised = self.state.advance(&mut ctx, watermark);
        self.raise(raised, stream, now_ms, out);
        self.suppressions.advance(&self.rule, watermark);
    }
}

/// The rules of one stream and the union of their field paths (resolved once per event).
#[derive(Default)]
pub(crate) struct StreamRules {
    paths: Vec<FieldPath>,
    /// `paths[p]` is in slot `slots[p]` of the engine's selection.
    slots: Vec<usize>,
    /// `paths` as one tree, to read them all from an event in one walk.
    tree: PathTree,
    pub(crate) rules: Vec<ActiveRule>,
    /// Which of `rules` an event can match at all (built by `set_rules`).
    prefilter: Prefilter,
}

/// How the caller parsed a batch's events.
#[derive(Clone, Copy)]
enum Input<'a> {
    Trees(&'a [Value]),
    Rows(&'a [SelectedFields]),
}

/// Evaluates batches of events against the loaded rules. Not thread-safe by itself: one engine
/// per consumer, driven by one thread at a time.
pub struct Engine {
    config: EngineConfig,
    /// Every stream's paths, each in one slot (built by `set_rules`).
    selection: FieldSelection,
    /// Buffers reused by every `evaluate` call.
    scratch: Scratch,
    pub(crate) streams: HashMap<String, StreamRules>,
    /// Newest event time seen per stream (kept across rule changes).
    pub(crate) max_event_time: HashMap<String, i64>,
}

impl Engine {
    /// An engine with no rules.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            selection: FieldSelection::default(),
            scratch: Scratch::default(),
            streams: HashMap::new(),
            max_event_time: HashMap::new(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Replaces the rule set. State and counters are kept for rules whose id and definition
    /// ([`CompiledRule::same_definition`]) are unchanged, and dropped for changed or removed
    /// rules. Disabled rules are not loaded. When an id appears twice, the last wins. Returns
    /// the ids of loaded rules whose state started afresh although they were loaded before.
    pub fn set_rules(&mut self, rules: Vec<Arc<CompiledRule>>) -> Vec<String> {
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
        let mut reset = Vec::new();
        let mut path_index: HashMap<(String, String), usize> = HashMap::new();
        for (index, rule) in rules.iter().enumerate() {
            if latest.get(rule.id()) != Some(&index) || !rule.rule().enabled {
                continue;
            }
            let limits = Limits::for_rule(&self.config, rule);
            let stream_name = rule.rule().stream.clone();
            let stream = self.streams.entry(stream_name.clone()).or_default();
            let mut index_of = |path: &FieldPath| {
                *path_index
                    .entry((stream_name.clone(), path.as_str().to_string()))
                    .or_insert_with(|| {
                        stream.paths.push(path.clone());
                        stream.paths.len() - 1
                    })
            };
            let kind = rule.kind();
            let maps = PathMaps {
                condition: rule.field_paths().iter().map(&mut index_of).collect(),
                group: kind
                    .map_or(&[][..], Kind::group_paths)
                    .iter()
                    .map(&mut index_of)
                    .collect(),
                value: kind
                    .map_or(&[][..], Kind::value_paths)
                    .iter()
                    .map(&mut index_of)
                    .collect(),
                steps: match kind {
                    Some(Kind::Sequence { steps, until, .. }) => steps
                        .iter()
                        .chain(until.as_deref())
                        .map(|step| step.field_paths().iter().map(&mut index_of).collect())
                        .collect(),
                    _ => Vec::new(),
                },
            };
            let active = match previous.remove(rule.id()) {
                Some(old) if old.rule.same_definition(rule) => ActiveRule {
                    rule: Arc::clone(rule),
                    path_map: maps.condition,
                    group_map: maps.group,
                    value_map: maps.value,
                    step_maps: maps.steps,
                    limits,
                    ..old
                },
                Some(_) => {
                    if rule.is_aggregate() {
                        reset.push(rule.id().to_string());
                    }
                    ActiveRule::fresh(rule, maps, limits)
                }
                None => ActiveRule::fresh(rule, maps, limits),
            };
            stream.rules.push(active);
        }
        for stream in self.streams.values_mut() {
            let requirements = stream
                .rules
                .iter()
                .map(|active| {
                    let mut required = active.rule.required()?;
                    required.path = active.path_map[required.path];
                    Some(required)
                })
                .collect();
            stream.prefilter = Prefilter::new(requirements);
            stream.tree = PathTree::new(&stream.paths);
        }
        // One selection for all streams (a consumer reads every stream): streams in name
        // order, so that the same rules give the same slots.
        let mut names: Vec<&String> = self.streams.keys().collect();
        names.sort();
        let paths: Vec<&FieldPath> = names
            .iter()
            .flat_map(|name| &self.streams[*name].paths)
            .collect();
        self.selection = FieldSelection::new(paths);
        for stream in self.streams.values_mut() {
            stream.slots = stream
                .paths
                .iter()
                .map(|path| self.selection.slot(path).unwrap_or(usize::MAX))
                .collect();
        }
        reset
    }

    /// Counters of every loaded rule, ordered by rule id.
    pub fn stats(&self) -> Vec<RuleStats> {
        let mut all: Vec<RuleStats> = self
            .streams
            .values()
            .flat_map(|stream| stream.rules.iter())
            .map(|active| {
                let mut stats = active.stats.clone();
                stats.active_groups = (active.state.keys() + active.suppressions.keys()) as u64;
                stats.max_keys = active.limits.max_groups as u64;
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
    /// parsed (possibly only the rules' [`CompiledRule::selected_paths`]); `records[i]
    /// .event_time_ms` is its event time (extra elements of the longer slice are ignored). An
    /// event that a rule keeps or alerts on is taken from `records[i].payload` (or is
    /// `events[i]` when the payload is empty). `now_ms` stamps `created_at_ms` of the alerts.
    ///
    /// Conditions are evaluated a chunk of events at a time (see `src/batch`); hits are then
    /// taken in event order (rules in load order within an event), so alerts and state come
    /// out exactly as if every event had been evaluated alone.
    pub fn evaluate(
        &mut self,
        stream: &str,
        partition: u32,
        records: &[Record],
        events: &[Value],
        now_ms: i64,
    ) -> Vec<Alert> {
        self.evaluate_checked(stream, partition, records, events, &[], now_ms)
    }

    /// [`evaluate`](Self::evaluate) for records whose payloads the parser vouched for:
    /// `checked[i]`, where present, is the word for `records[i].payload`
    /// ([`tw_core::FieldSelection::parse_checked`]), and an event taken whole from such a
    /// record is not read a second time ([`tw_core::SharedEvent::from_checked`]). The path of
    /// the detection consumer and of replays, which parse every record anyway.
    pub fn evaluate_checked(
        &mut self,
        stream: &str,
        partition: u32,
        records: &[Record],
        events: &[Value],
        checked: &[Option<CheckedPayload>],
        now_ms: i64,
    ) -> Vec<Alert> {
        self.evaluate_input(
            stream,
            partition,
            records,
            Input::Trees(events),
            checked,
            now_ms,
        )
    }

    /// The fields every loaded rule reads, of every stream: parse each record's payload with
    /// its [`parse_fields`](FieldSelection::parse_fields) for
    /// [`evaluate_fields`](Self::evaluate_fields). Changes with the rule set.
    pub fn selection(&self) -> &FieldSelection {
        &self.selection
    }

    /// [`evaluate_checked`](Self::evaluate_checked) for records parsed into rows by
    /// [`selection`](Self::selection) (`fields[i]` from `records[i].payload`): the detection
    /// consumer's path, which reads each rule's fields from its slot instead of walking a tree.
    /// The rows must come from the selection of the rule set loaded now.
    pub fn evaluate_fields(
        &mut self,
        stream: &str,
        partition: u32,
        records: &[Record],
        fields: &[SelectedFields],
        checked: &[Option<CheckedPayload>],
        now_ms: i64,
    ) -> Vec<Alert> {
        self.evaluate_input(
            stream,
            partition,
            records,
            Input::Rows(fields),
            checked,
            now_ms,
        )
    }

    fn evaluate_input(
        &mut self,
        stream: &str,
        partition: u32,
        records: &[Record],
        input: Input<'_>,
        checked: &[Option<CheckedPayload>],
        now_ms: i64,
    ) -> Vec<Alert> {
        // As many as the last batch raised: an alert is large, and growing the vector by
        // doubling copied each one about twice in alert-heavy workloads.
        let mut alerts = Vec::with_capacity(self.scratch.alerts_hint);
        let Scratch {
            candidates,
            lowercase,
            watermarks,
            hits,
            alerts_hint,
        } = &mut self.scratch;
        let Some(rules) = self.streams.get_mut(stream) else {
            return alerts;
        };
        let lateness = self.config.allowed_lateness_ms.max(0);
        let mut max_time = self.max_event_time.get(stream).copied();
        let StreamRules {
            tree,
            rules,
            prefilter,
            slots,
            ..
        } = rules;
        let events = match input {
            Input::Trees(events) => Events::Trees(events),
            Input::Rows(rows) => Events::Rows { rows, slots },
        };
        let count = records.len().min(events.len());
        let mut chunk = Chunk::new(tree);
        let mut state_values = Vec::new();
        // The group key of the event being handled (see `group_of`).
        let mut group = String::new();
        let mut handled = 0usize;
        for start in (0..count).step_by(CHUNK) {
            let end = (start + CHUNK).min(count);
            let (records, events) = (&records[start..end], events.slice(start..end));
            let checked = checked.get(start..end).unwrap_or_default();
            chunk.load(events);
            // The watermark each event is judged by: the newest time before it, less lateness.
            watermarks.clear();
            for record in records {
                watermarks.push(max_time.map(|max| max.saturating_sub(lateness)));
                let time = self.config.watermark_time(record);
                max_time = Some(max_time.map_or(time, |max| max.max(time)));
            }
            prefilter.mark_chunk(&mut chunk, candidates, lowercase);
            hits.clear();
            for (index, (active, candidate)) in rules.iter_mut().zip(candidates.iter()).enumerate()
            {
                let started = std::time::Instant::now();
                let mut live = Mask::first(records.len());
                if !matches!(active.state, RuleState::Stateless) {
                    for (at, record) in records.iter().enumerate() {
                        if active
                            .state
                            .is_late(&active.rule, record.event_time_ms, watermarks[at])
                        {
                            live.remove(at);
                        }
                    }
                }
                let evaluated = live.count() as u64;
                active.stats.late_events += records.len() as u64 - evaluated;
                active.stats.evaluated += evaluated;
                // Events the prefilter rules out cannot satisfy the condition.
                let mask = live.and(*candidate);
                let mut matched = match active.rule.matcher() {
                    Some(matcher) => chunk.eval(matcher, mask, &active.path_map),
                    None => mask,
                };
                if let Some(Kind::Sequence { steps, until, .. }) = active.rule.kind() {
                    // A sequence takes the events that satisfy a step or `until`.
                    active.step_masks.clear();
                    let mut any = Mask::EMPTY;
                    let conditions = steps.iter().chain(until.as_deref());
                    for (step, path_map) in conditions.zip(&active.step_maps) {
                        let holding = match step.matcher() {
                            Some(condition) => chunk.eval(condition, matched, path_map),
                            None => matched,
                        };
                        any = any.or(holding);
                        active.step_masks.push(holding);
                    }
                    matched = any;
                }
                hits.add(index, matched);
                active.stats.eval_nanos += started.elapsed().as_nanos() as u64;
            }
            let mut current: Option<(usize, WholeEvent)> = None;
            // For which event of the chunk and group paths `group` was built: the rules of an
            // event are handled one after the other, and many group by the same field.
            let mut group_of: (Option<usize>, Vec<usize>) = (None, Vec::new());
            for (at, index) in hits.by_event() {
                handled += 1;
                let started = handled
                    .is_multiple_of(TIMING_SAMPLE)
                    .then(std::time::Instant::now);
                let (record, event) = (&records[at], events.tree(at));
                let active = &mut rules[index];
                let (mut steps, mut until) = (0u32, false);
                if let Some(Kind::Sequence {
                    steps: conditions,
                    until: cancel,
                    ..
                }) = active.rule.kind()
                {
                    // Filled for this chunk by the evaluation above, one mask per step and `until`.
                    let (of_steps, of_until) = active
                        .step_masks
                        .split_at_checked(conditions.len())
                        .unwrap_or_default();
                    for (i, holding) in of_steps.iter().enumerate() {
                        if holding.has(at) {
                            steps |= 1 << i;
                        }
                    }
                    until = cancel.is_some() && of_until.first().is_some_and(|m| m.has(at));
                }
                active.stats.matched += 1;
                // `event` may hold only the fields the rules read (see
                // `tw_core::FieldSelection`); an event that a state keeps or an alert carries is
                // taken whole from its record, once, when first needed.
                if current.as_ref().is_none_or(|(seen, _)| *seen != at) {
                    let proof = checked.get(at).and_then(Option::as_ref);
                    current = Some((at, WholeEvent::new(record, event, proof)));
                }
                let Some((_, whole)) = &current else {
                    continue;
                };
                let location = EventLocation {
                    partition,
                    offset: record.offset,
                };
                let raised = match active.state {
                    RuleState::Stateless => {
                        vec![single_event_alert(
                            &active.rule,
                            stream,
                            whole.get(),
                            record.event_time_ms,
                            location,
                        )]
                    }
                    _ => {
                        let mut ctx = Ctx {
                            rule: &active.rule,
                            limits: &active.limits,
                            stats: &mut active.stats,
                        };
                        if group_of.0 != Some(at) || group_of.1 != active.group_map {
                            let values = active.group_map.iter().map(|&p| chunk.value(p, at));
                            write_key(values, &mut group);
                            group_of.0 = Some(at);
                            group_of.1.clone_from(&active.group_map);
                        }
                        state_values.clear();
                        state_values.extend(active.value_map.iter().map(|&p| chunk.value(p, at)));
                        let hit = Hit {
                            group: &group,
                            values: &state_values,
                            whole,
                            time: record.event_time_ms,
                            location,
                            steps,
                            until,
                        };
                        active.state.observe(&mut ctx, &hit)
                    }
                };
                active.raise(raised, stream, now_ms, &mut alerts);
                if let Some(started) = started {
                    let nanos = started.elapsed().as_nanos() as u64;
                    active.stats.eval_nanos += nanos.saturating_mul(TIMING_SAMPLE as u64);
                }
            }
        }
        if let Some(max) = max_time {
            self.max_event_time.insert(stream.to_string(), max);
            let watermark = max.saturating_sub(lateness);
            for active in rules.iter_mut() {
                active.advance(watermark, stream, now_ms, &mut alerts);
            }
        }
        *alerts_hint = alerts.len().min(MAX_ALERTS_HINT);
        alerts
    }

    /// Declares every event of `stream` delivered (the end of a dry run or replay): moves the
    /// watermark to the newest event time, so windows that ended by then close, "below" bounds
    /// are decided and sequences waiting on `until` are confirmed. Windows still open at the
    /// newest event stay open: they are not complete.
    pub fn finish(&mut self, stream: &str, now_ms: i64) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let (Some(max), Some(rules)) = (
            self.max_event_time.get(stream).copied(),
            self.streams.get_mut(stream),
        ) else {
            return alerts;
        };
        for active in rules.rules.iter_mut() {
            active.advance(max, stream, now_ms, &mut alerts);
        }
        alerts
    }
}
/// Where a rule's paths are among its stream's paths.
struct PathMaps {
    condition: Vec<usize>,
    group: Vec<usize>,
    value: Vec<usize>,
    steps: Vec<Vec<usize>>,
}

/// Buffers of `evaluate` that hold no borrowed data, kept between calls.
#[derive(Default)]
struct Scratch {
    candidates: Vec<Mask>,
    lowercase: String,
    watermarks: Vec<Option<i64>>,
    hits: Hits,
    /// Alerts the last `evaluate` call raised.
    alerts_hint: usize,
}

/// Most alerts `evaluate` reserves room for up front (see [`Scratch::alerts_hint`]).
const MAX_ALERTS_HINT: usize = 16_384;

/// One hit in this many is timed per rule for [`RuleStats::eval_nanos`] (and counted this many
/// times): two clock reads per hit cost more than handling a hit that raises nothing.
const TIMING_SAMPLE: usize = 16;
