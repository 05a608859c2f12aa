//! How far a consumer has read, for readers that wait on it: queries' read-your-writes
//! barrier, readiness, and stream deletion (which waits until every consumer forgot the
//! stream). The runner (`runner.rs`) updates it; everyone else only reads it.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tw_core::{Offset, StreamName};
use tw_log::Log;

use crate::StreamPartition;

/// How far a consumer has read, shared with readers that need "caught up" barriers (queries
/// that must see everything acknowledged so far).
#[derive(Debug, Default)]
pub struct ConsumerProgress {
    positions: RwLock<HashMap<StreamPartition, Offset>>,
    pub(crate) failed: RwLock<Option<String>>,
    /// The [`Log::incarnation`] of each stream whose offsets the consumer holds.
    incarnations: RwLock<HashMap<StreamName, u64>>,
    /// Polls of every stream completed (each begins by forgetting deleted streams).
    pub(crate) polls: AtomicU64,
}

impl ConsumerProgress {
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
