//! Checkpoints of the engine's state: every loaded rule's state, counters and suppression
//! groups, and the streams' newest event times, written as one versioned JSON document
//! together with the caller's read positions (the detection consumer's offsets), so that state
//! and offsets are always restored as a consistent pair.
//!
//! State is matched back to rules by id *and* definition fingerprint: a rule changed while the
//! process was down starts afresh, like a rule changed live.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::limits::RuleStats;
use crate::state::{RuleState, Suppressions};

/// Format version of checkpoints written by this build.
const CHECKPOINT_VERSION: u32 = 1;

/// The engine part of a checkpoint, read back ([`Engine::read_checkpoint`]) and handed to
/// [`Engine::restore`].
#[derive(Debug, Deserialize)]
pub struct EngineSnapshot {
    max_event_time: HashMap<String, i64>,
    rules: Vec<RuleSnapshot>,
}

#[derive(Debug, Deserialize)]
struct RuleSnapshot {
    rule_id: String,
    fingerprint: String,
    stats: RuleStats,
    state: RuleState,
    suppressions: Suppressions,
}

#[derive(Serialize)]
struct RuleSnapshotRef<'a> {
    rule_id: &'a str,
    fingerprint: String,
    stats: &'a RuleStats,
    state: &'a RuleState,
    suppressions: &'a Suppressions,
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    max_event_time: &'a HashMap<String, i64>,
    rules: Vec<RuleSnapshotRef<'a>>,
}

#[derive(Serialize)]
struct CheckpointOut<'a, P> {
    version: u32,
    positions: &'a P,
    engine: SnapshotRef<'a>,
}

#[derive(Deserialize)]
struct CheckpointIn<P> {
    version: u32,
    positions: P,
    engine: EngineSnapshot,
}

/// Why a checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Not a checkpoint this build understands.
    #[error("detection checkpoint is unreadable: {0}")]
    Malformed(String),
    /// Written by another format version.
    #[error(
        "detection checkpoint has version {found}, this build reads version {CHECKPOINT_VERSION}"
    )]
    Version {
        /// The version found.
        found: u32,
    },
}

impl Engine {
    /// The checkpoint document: `positions` (the caller's, e.g. offsets) and the state of
    /// every loaded rule, as JSON bytes.
    pub fn write_checkpoint<P: Serialize>(&self, positions: &P) -> serde_json::Result<Vec<u8>> {
        let rules = self
            .streams
            .values()
            .flat_map(|stream| stream.rules.iter())
            .filter(|active| active.rule.is_aggregate() || active.rule.suppression().is_some())
            .map(|active| RuleSnapshotRef {
                rule_id: active.rule.id(),
                fingerprint: active.rule.definition_fingerprint(),
                stats: &active.stats,
                state: &active.state,
                suppressions: &active.suppressions,
            })
            .collect();
        serde_json::to_vec(&CheckpointOut {
            version: CHECKPOINT_VERSION,
            positions,
            engine: SnapshotRef {
                max_event_time: &self.max_event_time,
                rules,
            },
        })
    }

    /// Reads a checkpoint written by [`Engine::write_checkpoint`].
    pub fn read_checkpoint<P: DeserializeOwned>(
        bytes: &[u8],
    ) -> Result<(P, EngineSnapshot), CheckpointError> {
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        if probe.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version {
                found: probe.version,
            });
        }
        let checkpoint: CheckpointIn<P> =
            serde_json::from_slice(bytes).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        debug_assert_eq!(checkpoint.version, CHECKPOINT_VERSION);
        Ok((checkpoint.positions, checkpoint.engine))
    }

    /// Puts checkpointed state back into the loaded rules that have the same id and definition
    /// (call after [`Engine::set_rules`]). Returns the ids of the rules whose state was
    /// restored; state of rules that changed or are gone is dropped.
    pub fn restore(&mut self, snapshot: EngineSnapshot) -> Vec<String> {
        // A checkpoint written before event times were capped may hold one far in the future:
        // restored as it is, it would keep every event of the stream late.
        let ahead = self.config().max_time_ahead_ms;
        let limit = (ahead >= 0).then(|| tw_core::now_ms().saturating_add(ahead));
        for (stream, time) in snapshot.max_event_time {
            let time = limit.map_or(time, |limit| time.min(limit));
            let slot = self.max_event_time.entry(stream).or_insert(time);
            *slot = (*slot).max(time);
        }
        let mut by_id: HashMap<String, RuleSnapshot> = snapshot
            .rules
            .into_iter()
            .map(|rule| (rule.rule_id.clone(), rule))
            .collect();
        let mut restored = Vec::new();
        for active in self.streams.values_mut().flat_map(|s| s.rules.iter_mut()) {
            let Some(saved) = by_id.remove(active.rule.id()) else {
                continue;
            };
            if saved.fingerprint != active.rule.definition_fingerprint()
                || !saved.state.fits(&active.rule)
            {
                continue;
            }
            active.stats = saved.stats;
            active.state = saved.state;
            active.suppressions = saved.suppressions;
            restored.push(active.rule.id().to_string());
        }
        restored.sort();
        restored
    }
}
