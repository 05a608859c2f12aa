//! The detection consumer: log → rules engine → alert store → sinks.
//!
//! Offsets are safe to commit as soon as a batch's alerts are in the store (fsynced there),
//! so a crash replays at most the batches after the last commit, and the store's dedup keys
//! keep a replay from paging twice. Records are parsed for only the fields the rules read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;
use tw_alerts::{AlertStore, Dispatcher};
use tw_core::{FieldSelection, Offset, now_ms};
use tw_detect::{Engine, EngineConfig};
use tw_pipeline::{Consumer, ConsumerError, EventBatch, StreamPartition};
use tw_server::RuleSet;

/// Name under which detection stores its offsets.
pub const DETECT_CONSUMER: &str = "detect";

/// Evaluates every enabled rule on every batch of its stream.
pub struct DetectionConsumer {
    engine: Engine,
    rules: watch::Receiver<RuleSet>,
    /// The fields the current rules read: the only ones parsed out of each record.
    selection: FieldSelection,
    sinks_by_rule: HashMap<String, Vec<String>>,
    alerts: AlertStore,
    dispatcher: Arc<Dispatcher>,
    positions: BTreeMap<StreamPartition, Offset>,
}

impl DetectionConsumer {
    /// A consumer that follows the rule set published on `rules`.
    pub fn new(
        config: EngineConfig,
        rules: watch::Receiver<RuleSet>,
        alerts: AlertStore,
        dispatcher: Arc<Dispatcher>,
    ) -> Self {
        Self {
            engine: Engine::new(config),
            rules,
            selection: FieldSelection::default(),
            sinks_by_rule: HashMap::new(),
            alerts,
            dispatcher,
            positions: BTreeMap::new(),
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
        self.engine.set_rules(rules.to_vec());
        let selection = FieldSelection::new(rules.iter().flat_map(|rule| rule.field_paths()));
        let changed = selection != self.selection;
        self.selection = selection;
        tracing::info!(rules = rules.len(), "detection rule set loaded");
        changed
    }

    fn error(&self, message: impl std::fmt::Display) -> ConsumerError {
        ConsumerError {
            consumer: DETECT_CONSUMER.into(),
            message: message.to_string(),
        }
    }
}

impl Consumer for DetectionConsumer {
    fn name(&self) -> &str {
        DETECT_CONSUMER
    }

    fn parse(&self, payload: &[u8]) -> serde_json::Result<Value> {
        self.selection.parse(payload)
    }

    fn start(
        &mut self,
        committed: &BTreeMap<StreamPartition, Offset>,
    ) -> Result<(), ConsumerError> {
        self.positions = committed.clone();
        self.refresh_rules(true);
        Ok(())
    }

    fn handle(&mut self, batch: &EventBatch) -> Result<(), ConsumerError> {
        // The batch was parsed for the rule set of its read; a new rule that reads other fields
        // needs them, so parse this batch again (only the first batch after such a change).
        let reparsed: Option<Vec<Value>> = self.refresh_rules(false).then(|| {
            batch
                .records
                .iter()
                .map(|r| self.selection.parse(&r.payload).unwrap_or(Value::Null))
                .collect()
        });
        let events = reparsed.as_deref().unwrap_or(&batch.events);
        let raised = self.engine.evaluate(
            batch.stream.as_str(),
            batch.partition,
            &batch.records,
            events,
            now_ms(),
        );
        if !raised.is_empty() {
            let fresh = self.alerts.insert(raised).map_err(|e| self.error(e))?;
            metrics::counter!("tidewatch_alerts_total", "stream" => batch.stream.to_string())
                .increment(fresh.len() as u64);
            for alert in &fresh {
                let sinks = self
                    .sinks_by_rule
                    .get(&alert.rule_id)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                self.dispatcher.dispatch(alert, sinks);
            }
        }
        if let Some(last) = batch.records.last() {
            self.positions
                .insert((batch.stream.clone(), batch.partition), last.offset + 1);
        }
        metrics::counter!("tidewatch_events_evaluated_total", "stream" => batch.stream.to_string())
            .increment(batch.records.len() as u64);
        Ok(())
    }

    fn tick(&mut self, _now_ms: i64) -> Result<(), ConsumerError> {
        // Between batches, so the next batch is read with the new selection.
        self.refresh_rules(false);
        Ok(())
    }

    fn safe_offsets(&self) -> BTreeMap<StreamPartition, Offset> {
        self.positions.clone()
    }

    fn flush(&mut self) -> Result<(), ConsumerError> {
        Ok(())
    }
}
