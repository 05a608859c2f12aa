//! How far a consumer has read, for readers that wait on it: queries' read-your-writes
//! barrier, readiness, and stream deletion (which waits until every consumer forgot the
//! stream). The runner (`runner.rs`) updates it; everyone else only reads it.
//!
//! Readiness also needs to know whether a running consumer is stuck: a consumer retrying a
//! failing batch is alive but makes no progress, and only says so here.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use tw_core::{Offset, StreamName};
use tw_log::Log;

use crate::StreamPartition;

/// How long a consumer may keep failing before readiness reports it, unless its
/// [`RunnerConfig`](crate::RunnerConfig) says otherwise. Short failures (a flush retried once)
/// are normal and must not take a node out of a load balancer.
pub const DEFAULT_UNREADY_AFTER_FAILING: Duration = Duration::from_secs(30);

/// What a consumer does that can fail while it keeps running. Each recovers only by its own
/// success: a search consumer whose commits fail in `tick` still handles batches between its
/// restarts, and a consumer restarted after a partition's batch failed handles other
/// partitions before failing on that one again; neither must look healthy meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Duty {
    /// Handling a batch of a partition, including storing its dead letters.
    Batch(StreamPartition),
    /// The periodic `tick` (flushes, commits).
    Tick,
    /// Forgetting a deleted stream.
    Forget(StreamName),
}

impl Duty {
    fn of_stream(&self, stream: &StreamName) -> bool {
        match self {
            Duty::Batch((s, _)) | Duty::Forget(s) => s == stream,
            Duty::Tick => false,
        }
    }
}

/// A running consumer's current run of failures (see [`ConsumerProgress::failing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    /// When the first failure of the run happened.
    pub since: Instant,
    /// Failed attempts since then.
    pub attempts: u64,
    /// When the most recent failure happened.
    pub last_at: Instant,
    /// The most recent error.
    pub last_error: String,
}

/// Why a consumer makes the node not ready (see [`ConsumerProgress::unready`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unready {
    /// The consumer stopped on an error and will not resume until the process restarts.
    Stopped {
        /// Why it stopped.
        error: String,
    },
    /// The consumer runs but has been failing for longer than its threshold.
    Failing {
        /// How long it has been failing.
        failing_for: Duration,
        /// Failed attempts in that time.
        attempts: u64,
        /// The most recent error.
        last_error: String,
    },
}

/// How far a consumer has read, shared with readers that need "caught up" barriers (queries
/// that must see everything acknowledged so far), and whether it is failing, for readiness.
#[derive(Debug)]
pub struct ConsumerProgress {
    positions: RwLock<HashMap<StreamPartition, Offset>>,
    pub(crate) failed: RwLock<Option<String>>,
    /// The [`Log::incarnation`] of each stream whose offsets the consumer holds.
    incarnations: RwLock<HashMap<StreamName, u64>>,
    /// Polls of every stream completed (each begins by forgetting deleted streams).
    pub(crate) polls: AtomicU64,
    /// The duties failing now, each with its run of failures.
    failing: Mutex<BTreeMap<Duty, Failing>>,
    /// How long the consumer may fail before [`unready`](Self::unready) reports it.
    unready_after: Duration,
}

impl Default for ConsumerProgress {
    fn default() -> Self {
        Self::new(DEFAULT_UNREADY_AFTER_FAILING)
    }
}

impl ConsumerProgress {
    /// Progress of a consumer that is reported not ready once it has been failing for longer
    /// than `unready_after`.
    pub fn new(unready_after: Duration) -> Self {
        Self {
            positions: RwLock::default(),
            failed: RwLock::default(),
            incarnations: RwLock::default(),
            polls: AtomicU64::default(),
            failing: Mutex::default(),
            unready_after,
        }
    }

    /// Next offset the consumer will read in a partition (every record before it is handled).
    pub fn position(&self, stream: &StreamName, partition: u32) -> Option<Offset> {
        self.positions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(stream.clone(), partition))
            .copied()
    }

    /// Why the consumer stopped, if it failed.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The consumer's current run of failures, if it is failing: since the earliest failure of
    /// any duty still failing, with their attempts added up and the latest error. `None` once
    /// every failing duty succeeded again.
    pub fn failing(&self) -> Option<Failing> {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let latest = failing.values().max_by_key(|f| f.last_at)?;
        Some(Failing {
            since: failing.values().map(|f| f.since).min()?,
            attempts: failing.values().map(|f| f.attempts).sum(),
            last_at: latest.last_at,
            last_error: latest.last_error.clone(),
        })
    }

    /// Why the consumer should make the node not ready: it stopped, or it has been failing for
    /// longer than its threshold. `None` when it runs, or fails only since recently.
    pub fn unready(&self) -> Option<Unready> {
        self.unready_at(Instant::now())
    }

    fn unready_at(&self, now: Instant) -> Option<Unready> {
        if let Some(error) = self.failure() {
            return Some(Unready::Stopped { error });
        }
        let failing = self.failing()?;
        let failing_for = now.saturating_duration_since(failing.since);
        (failing_for > self.unready_after).then_some(Unready::Failing {
            failing_for,
            attempts: failing.attempts,
            last_error: failing.last_error,
        })
    }

    /// Notes a failure of `duty`; true when the consumer was not failing at all before.
    pub(crate) fn fail(&self, duty: Duty, error: &str) -> bool {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let was_healthy = failing.is_empty();
        let now = Instant::now();
        let entry = failing.entry(duty).or_insert_with(|| Failing {
            since: now,
            attempts: 0,
            last_at: now,
            last_error: String::new(),
        });
        entry.attempts += 1;
        entry.last_at = now;
        entry.last_error = error.to_string();
        was_healthy
    }

    /// Notes a success of `duty`; true when that ended the consumer's last failing duty.
    pub(crate) fn recover(&self, duty: &Duty) -> bool {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing.remove(duty).is_some() && failing.is_empty()
    }

    /// Ends every failure about a stream the consumer forgot (deleted): its batches will never
    /// be retried. True when that ended the consumer's last failing duty.
    pub(crate) fn recover_stream(&self, stream: &StreamName) -> bool {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let before = failing.len();
        failing.retain(|duty, _| !duty.of_stream(stream));
        failing.len() < before && failing.is_empty()
    }

    /// The end of every non-empty partition of `stream` (all streams when `None`), as of now.
    fn ends(log: &dyn Log, stream: Option<&StreamName>) -> Vec<(StreamName, u32, Offset)> {
        let mut ends = Vec::new();
        for (name, partitions) in log.streams() {
            if name.is_internal() || stream.is_some_and(|s| *s != name) {
                continue;
            }
            for partition in 0..partitions {
                let end = log.end_offset(&name, partition).unwrap_or(0);
                let start = log.start_offset(&name, partition).unwrap_or(0);
                if end > start {
                    ends.push((name.clone(), partition, end));
                }
            }
        }
        ends
    }

    /// Whether every partition of `stream` (all streams when `None`) has been handled up to
    /// the log's current end.
    pub fn caught_up(&self, log: &dyn Log, stream: Option<&StreamName>) -> bool {
        self.reached(&Self::ends(log, stream))
    }

    fn reached(&self, ends: &[(StreamName, u32, Offset)]) -> bool {
        ends.iter()
            .all(|(name, p, end)| self.position(name, *p).is_some_and(|pos| pos >= *end))
    }

    /// Waits (polling every 2 ms) until the consumer has handled every record the log held
    /// when the call began (of `stream`, or of all streams when `None`), or `timeout`. The ends
    /// are taken once: under steady ingest, chasing the ends of records appended meanwhile
    /// would never catch up, and every wait would last the whole `timeout`.
    pub async fn wait_caught_up(
        &self,
        log: &dyn Log,
        stream: Option<&StreamName>,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let ends = Self::ends(log, stream);
        loop {
            if self.reached(&ends) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Whether the consumer still holds offsets of this incarnation of `stream`.
    pub fn holds(&self, stream: &StreamName, incarnation: u64) -> bool {
        self.incarnations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            == Some(&incarnation)
    }

    /// How many polls over every stream the consumer has completed.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Acquire)
    }

    /// Waits until the consumer has forgotten `incarnation` of the deleted `stream` (see
    /// [`Consumer::forget_stream`](crate::Consumer::forget_stream)), has stopped, or `timeout`
    /// passed; true when it has forgotten it (or stopped). Two completed polls: the first may
    /// have begun before the deletion, the second began after it and so saw it.
    pub async fn wait_forgotten(
        &self,
        stream: &StreamName,
        incarnation: u64,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let polls = self.polls();
        loop {
            if self.failure().is_some()
                || (self.polls() >= polls + 2 && !self.holds(stream, incarnation))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub(crate) fn set_incarnation(&self, stream: &StreamName, incarnation: u64) {
        self.incarnations
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stream.clone(), incarnation);
    }

    /// Drops what is known of a deleted stream.
    pub(crate) fn forget(&self, stream: &StreamName) {
        self.positions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(s, _), _| s != stream);
        self.incarnations
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(stream);
    }

    pub(crate) fn set(&self, key: StreamPartition, offset: Offset) {
        self.positions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(stream: &str, partition: u32) -> Duty {
        Duty::Batch((StreamName::new(stream).unwrap(), partition))
    }

    #[test]
    fn failing_makes_unready_only_past_the_threshold() {
        let progress = ConsumerProgress::new(Duration::from_secs(30));
        assert_eq!(progress.unready(), None);
        assert!(progress.fail(batch("s", 0), "disk full"));
        assert!(!progress.fail(batch("s", 0), "disk still full"));
        let since = progress.failing().unwrap().since;
        assert_eq!(
            progress.unready_at(since + Duration::from_secs(30)),
            None,
            "30 s of failures are not yet an outage"
        );
        assert_eq!(
            progress.unready_at(since + Duration::from_secs(31)),
            Some(Unready::Failing {
                failing_for: Duration::from_secs(31),
                attempts: 2,
                last_error: "disk still full".into(),
            })
        );
        assert!(progress.recover(&batch("s", 0)));
        assert_eq!(progress.failing(), None);
        assert_eq!(progress.unready_at(since + Duration::from_secs(60)), None);
    }

    #[test]
    fn a_duty_recovers_only_by_its_own_success() {
        let progress = ConsumerProgress::new(Duration::from_secs(30));
        progress.fail(Duty::Tick, "commit failed");
        let since = progress.failing().unwrap().since;
        // Between restarts the batches go through; the commits still fail.
        assert!(!progress.recover(&batch("s", 0)));
        // A partition's failing batch is not redeemed by another partition's.
        progress.fail(batch("s", 1), "handle failed");
        assert!(!progress.recover(&batch("s", 0)));
        let failing = progress.failing().unwrap();
        assert_eq!(failing.since, since, "failing since the first tick failure");
        assert_eq!(failing.attempts, 2);
        assert_eq!(failing.last_error, "handle failed");
        assert!(!progress.recover(&Duty::Tick));
        assert_eq!(progress.failing().unwrap().last_error, "handle failed");
        // Its stream deleted, the batch will never be retried: no longer failing.
        assert!(!progress.recover_stream(&StreamName::new("t").unwrap()));
        assert!(progress.recover_stream(&StreamName::new("s").unwrap()));
        assert_eq!(progress.failing(), None);
    }

    #[test]
    fn a_stopped_consumer_is_unready_at_once() {
        let progress = ConsumerProgress::default();
        *progress.failed.write().unwrap() = Some("offsets unreadable".into());
        assert_eq!(
            progress.unready(),
            Some(Unready::Stopped {
                error: "offsets unreadable".into()
            })
        );
    }
}
