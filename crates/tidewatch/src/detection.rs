//! The detection consumer: log → rules engine → alert store → sinks.
//!
//! Exactly-once alerts across crashes rest on one pairing: the engine's state (windows,
//! sequences, new-value history, suppression) is checkpointed in one file *together with* the
//! read positions it covers, and only positions covered by a checkpoint are reported safe to
//! commit. After a kill -9 the runner re-reads from the committed offsets, which are never
//! ahead of the checkpoint; records the checkpoint already covers are skipped (their effect is
//! in the restored state), the rest are evaluated again, and an alert raised again has the
//! same dedup key, which the alert store refuses, so nothing pages twice. Alerts are fsynced in
//! the store before the checkpoint that covers them is written.
//!
//! Records are parsed for only the fields the rules read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;
use tw_alerts::{AlertStore, Dispatcher};
use tw_core::{FieldSelection, Offset, SelectedFields, StreamName, now_ms};
use tw_detect::{Engine, EngineConfig, RuleStats};
use tw_pipeline::{Consumer, ConsumerError, EventBatch, Parsed, StreamPartition};
use tw_server::RuleSet;

/// Name under which detection stores its offsets.
pub const DETECT_CONSUMER: &str = "detect";
/// How often the state is checkpointed (when anything was read since the last one).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Least time between two eviction warnings of one rule (the metric counts every eviction).
const EVICTION_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Positions as stored in a checkpoint: (stream, partition, next offset).
type StoredPositions = Vec<(String, u32, Offset)>;

/// Evaluates every enabled rule on every batch of its stream.
pub struct DetectionConsumer {
    engine: Engine,
    rules: watch::Receiver<RuleSet>,
    /// The fields the current rules read (the engine's selection, as of the last rule
    /// change): the only ones parsed out of each record, each into the slot the engine reads.
    selection: FieldSelection,
    sinks_by_rule: HashMap<String, Vec<String>>,
    /// Rules in shadow mode: their alerts are stored, never sent.
    shadow: HashSet<String>,
    alerts: AlertStore,
    dispatcher: Arc<Dispatcher>,
    /// Next offset to evaluate per partition (everything before is in the engine's state).
    positions: BTreeMap<StreamPartition, Offset>,
    /// The positions of the last checkpoint written: what may be committed.
    checkpointed: BTreeMap<StreamPartition, Offset>,
    checkpoint_path: PathBuf,
    last_checkpoint: Instant,
    /// Counters already exported per rule (metrics are bumped by the difference).
    exported: HashMap<String, RuleStats>,
    /// Per rule, when its evictions were last logged and how many came since (logged at the
    /// first eviction, then at most once per [`EVICTION_LOG_INTERVAL`]).
    eviction_log: HashMap<String, (Option<Instant>, u64)>,
    /// Alerts raised but not yet stored (the store failed); stored before anything else.
    pending: Vec<tw_core::Alert>,
}

impl DetectionConsumer {
    /// A consumer that follows the rule set published on `rules` and checkpoints its state to
    /// `checkpoint_path`.
    pub fn new(
        config: EngineConfig,
        rules: watch::Receiver<RuleSet>,
        alerts: AlertStore,
        dispatcher: Arc<Dispatcher>,
        checkpoint_path: PathBuf,
    ) -> Self {
        Self {
            engine: Engine::new(config),
            rules,
            selection: FieldSelection::default(),
            sinks_by_rule: HashMap::new(),
            shadow: HashSet::new(),
            alerts,
            dispatcher,
            positions: BTreeMap::new(),
            checkpointed: BTreeMap::new(),
            checkpoint_path,
            last_checkpoint: Instant::now(),
            exported: HashMap::new(),
            eviction_log: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// Picks up a changed rule set (the engine keeps the state of unchanged rules). Returns
    /// whether the fields to parse changed.
    fn refresh_rules(&mut self, force: bool) -> bool {
        if !force && !self.rules.has_changed().unwrap_or(false) {
            return false;
        }
        let rules = self.rules.borrow_and_update().clone();
        self.sinks_by_rule = rules
            .iter()
            .map(|r| (r.id().to_string(), r.rule().sinks.clone()))
            .collect();
        self.shadow = rules
            .iter()
            .filter(|r| r.rule().shadow)
            .map(|r| r.id().to_string())
            .collect();
        for id in self.engine.set_rules(rules.to_vec()) {
            tracing::info!(rule = %id, "rule definition changed: its state starts afresh");
        }
        // The engine's selection: its slots are where it reads each rule's fields.
        let changed = *self.engine.selection() != self.selection;
        if changed {
            self.selection = self.engine.selection().clone();
        }
        tracing::info!(rules = rules.len(), "detection rule set loaded");
        changed
    }

    fn error(&self, message: impl std::fmt::Display) -> ConsumerError {
        ConsumerError {
            consumer: DETECT_CONSUMER.into(),
            message: message.to_string(),
        }
    }

    /// Loads the checkpoint, if any: restores the state of unchanged rules and returns the
    /// positions it covers.
    fn restore(&mut self) -> Result<BTreeMap<StreamPartition, Offset>, ConsumerError> {
        let bytes = match std::fs::read(&self.checkpoint_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => {
                return Err(self.error(format!("reading {}: {e}", self.checkpoint_path.display())));
            }
        };
        let (stored, snapshot) = match Engine::read_checkpoint::<StoredPositions>(&bytes) {
            Ok(read) => read,
            Err(error) => {
                // Written atomically, so this means a foreign or future file: say so loudly and
                // start from the committed offsets with empty state rather than not at all.
                tracing::error!(%error, path = %self.checkpoint_path.display(), "ignoring the detection checkpoint: window and sequence state starts empty");
                return Ok(BTreeMap::new());
            }
        };
        let restored = self.engine.restore(snapshot);
        tracing::info!(rules = ?restored, "detection state restored from checkpoint");
        let mut positions = BTreeMap::new();
        for (stream, partition, offset) in stored {
            match StreamName::new(&stream) {
                Ok(name) => {
                    positions.insert((name, partition), offset);
                }
                Err(error) => tracing::warn!(%error, "checkpoint names an invalid stream"),
            }
        }
        Ok(positions)
    }

    /// Writes state + positions atomically; afterwards those positions may be committed.
    fn checkpoint(&mut self) -> Result<(), ConsumerError> {
        let stored: StoredPositions = self
            .positions
            .iter()
            .map(|((stream, partition), offset)| (stream.to_string(), *partition, *offset))
            .collect();
        let bytes = self
            .engine
            .write_checkpoint(&stored)
            .map_err(|e| self.error(format!("encoding the checkpoint: {e}")))?;
        tw_pipeline::write_atomically(&self.checkpoint_path, &bytes)
            .map_err(|e| self.error(format!("writing the checkpoint: {e}")))?;
        self.checkpointed = self.positions.clone();
        self.last_checkpoint = Instant::now();
        metrics::counter!("tidewatch_detection_checkpoints_total").increment(1);
        metrics::gauge!("tidewatch_detection_checkpoint_bytes").set(bytes.len() as f64);
        Ok(())
    }

    /// Stores the pending alerts (fsynced) and sends the new ones to their sinks. When the
    /// store fails they stay pending: the runner retries the batch, and no checkpoint is
    /// written (so no offset is committed) until they are stored.
    fn deliver_pending(&mut self) -> Result<(), ConsumerError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (first, fresh) = self
            .alerts
            .insert_numbered(&mut self.pending)
            .map_err(|e| self.error(e))?;
        for (ordinal, alert) in (first..).zip(&fresh) {
            metrics::counter!("tidewatch_alerts_total", "stream" => alert.stream.clone())
                .increment(1);
            if self.shadow.contains(&alert.rule_id) {
                continue;
            }
            let sinks = self
                .sinks_by_rule
                .get(&alert.rule_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            self.dispatcher.dispatch_stored(ordinal, alert, sinks);
        }
        Ok(())
    }

    /// Exports per-rule counters (by difference, since the engine's restart on a rule change)
    /// and logs evictions.
    fn export_metrics(&mut self) {
        for stats in self.engine.stats() {
            let before = self.exported.remove(&stats.rule_id).unwrap_or_default();
            let delta = |now: u64, then: u64| if now >= then { now - then } else { now };
            let rule = stats.rule_id.clone();
            let bump = |name: &'static str, now: u64, then: u64| {
                let d = delta(now, then);
                if d > 0 {
                    metrics::counter!(name, "rule" => rule.clone()).increment(d);
                }
            };
            bump(
                "tidewatch_rule_events_evaluated_total",
                stats.evaluated,
                before.evaluated,
            );
            bump(
                "tidewatch_rule_matches_total",
                stats.matched,
                before.matched,
            );
            bump("tidewatch_rule_alerts_total", stats.alerts, before.alerts);
            bump(
                "tidewatch_rule_suppressed_total",
                stats.suppressed,
                before.suppressed,
            );
            bump(
                "tidewatch_rule_late_events_total",
                stats.late_events,
                before.late_events,
            );
            bump(
                "tidewatch_rule_evaluation_microseconds_total",
                stats.eval_nanos / 1000,
                before.eval_nanos / 1000,
            );
            let evicted = delta(stats.evicted_groups, before.evicted_groups);
            if evicted > 0 {
                metrics::counter!("tidewatch_rule_evicted_keys_total", "rule" => rule.clone())
                    .increment(evicted);
                let (last, unlogged) = self.eviction_log.entry(rule.clone()).or_default();
                *unlogged += evicted;
                if last.is_none_or(|at| at.elapsed() >= EVICTION_LOG_INTERVAL) {
                    tracing::warn!(rule = %rule, evicted = *unlogged, limit = stats.max_keys, "rule state reached its key limit (the rule's max_keys, else detect.max_keys_per_rule): the oldest keys were evicted and their windows, sequences or history forgotten");
                    *last = Some(Instant::now());
                    *unlogged = 0;
                }
            }
            metrics::gauge!("tidewatch_rule_state_keys", "rule" => rule.clone())
                .set(stats.active_groups as f64);
            self.exported.insert(rule, stats);
        }
    }
}

impl Consumer for DetectionConsumer {
    fn name(&self) -> &str {
        DETECT_CONSUMER
    }

    /// Only the fields the rules read, each into its slot (no tree is built), with the
    /// parser's word that the payload is one JSON value: an event a rule keeps or alerts on is
    /// then taken as its text unread.
    fn parse(&self, payload: &Bytes) -> serde_json::Result<Parsed> {
        let (fields, checked) = self.selection.parse_fields_checked(payload)?;
        Ok(Parsed {
            event: Value::Null,
            checked: Some(checked),
            fields: Some(fields),
        })
    }

    fn start(
        &mut self,
        committed: &BTreeMap<StreamPartition, Offset>,
    ) -> Result<(), ConsumerError> {
        self.refresh_rules(true);
        let restored = self.restore()?;
        // The checkpoint is never behind the committed offsets (only checkpointed positions
        // are committed); take the furthest of both per partition.
        let mut positions = committed.clone();
        for (key, offset) in restored {
            let slot = positions.entry(key).or_insert(offset);
            *slot = (*slot).max(offset);
        }
        self.positions = positions.clone();
        self.checkpointed = positions;
        Ok(())
    }

    fn handle(&mut self, batch: &EventBatch) -> Result<(), ConsumerError> {
        // Alerts of an earlier batch the store refused (the runner retries that batch).
        self.deliver_pending()?;
        // The batch was parsed for the rule set of its read; a new rule that reads other fields
        // needs them, so parse this batch again (only the first batch after such a change).
        // (A record that parsed before parses again, unless a newly read field nests past
        // the parser's depth limit: then none of its fields are read.)
        let reparsed: Option<Vec<SelectedFields>> = self.refresh_rules(false).then(|| {
            batch
                .records
                .iter()
                .map(|r| self.selection.parse_fields(&r.payload).unwrap_or_default())
                .collect()
        });
        let fields = reparsed.as_deref().unwrap_or(&batch.fields);
        // Records before the position are already in the (restored) state: counting them
        // again would double windows.
        let key = (batch.stream.clone(), batch.partition);
        let from = self.positions.get(&key).copied().unwrap_or(0);
        let skip = batch.records.partition_point(|r| r.offset < from);
        // (The parser's word is about the bytes, so it holds for a batch parsed again too.)
        let raised = self.engine.evaluate_fields(
            batch.stream.as_str(),
            batch.partition,
            &batch.records[skip..],
            fields.get(skip..).unwrap_or_default(),
            batch.checked.get(skip..).unwrap_or_default(),
            now_ms(),
        );
        // The state already holds these records: whatever happens to the alerts, the records
        // are not evaluated again (that would count them twice).
        if let Some(last) = batch.records.last() {
            let slot = self.positions.entry(key).or_insert(0);
            *slot = (*slot).max(last.offset + 1);
        }
        metrics::counter!("tidewatch_events_evaluated_total", "stream" => batch.stream.to_string())
            .increment((batch.records.len() - skip) as u64);
        self.pending.extend(raised);
        self.deliver_pending()
    }

    fn tick(&mut self, _now_ms: i64) -> Result<(), ConsumerError> {
        // Between batches, so the next batch is read with the new selection.
        self.refresh_rules(false);
        self.export_metrics();
        if self.positions != self.checkpointed
            && self.pending.is_empty()
            && self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Drops the deleted stream's positions and checkpoints at once (a restart must not skip
    /// the records of a stream created again under the name). Rule state (windows,
    /// sequences) is the rules', not the stream's, and stays.
    fn forget_stream(&mut self, stream: &StreamName) -> Result<(), ConsumerError> {
        self.positions.retain(|(s, _), _| s != stream);
        let checkpointed = self.checkpointed.len();
        self.checkpointed.retain(|(s, _), _| s != stream);
        // Alerts not yet stored must not be covered by a checkpoint: then the next one, after
        // they are stored, drops the stream from the file.
        if self.checkpointed.len() != checkpointed && self.pending.is_empty() {
            self.checkpoint()?;
        }
        Ok(())
    }

    fn safe_offsets(&self) -> BTreeMap<StreamPartition, Offset> {
        self.checkpointed.clone()
    }

    fn flush(&mut self) -> Result<(), ConsumerError> {
        self.export_metrics();
        self.deliver_pending()?;
        self.checkpoint()
    }
}
