//! Runs one [`Consumer`] over the log on its own thread: read, parse once, hand over, commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tw_core::{Offset, StreamName, now_ms};
use tw_log::{Log, OffsetStore};

use crate::dlq::{DeadLetter, DeadLetterQueue};
use crate::{Consumer, EventBatch, StreamPartition};

/// Tuning of a consumer runner.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most records handed over in one batch.
    pub max_batch_records: usize,
    /// About how many payload bytes are handed over in one batch.
    pub max_batch_bytes: usize,
    /// How often safe offsets are committed.
    pub commit_interval: Duration,
    /// How often `tick` is called.
    pub tick_interval: Duration,
    /// Sleep when there is nothing to read (bounds the added latency).
    pub idle_sleep: Duration,
    /// Scheduling priority of the consumer's thread as a `nice` value (0 normal, 19 lowest);
    /// threads it starts inherit it. A background consumer (lake, search) given a positive
    /// value yields the CPU to ingest and detection when both want it, so alert latency does
    /// not depend on how busy indexing is; it catches up when the CPU has slack.
    pub nice: i32,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            max_batch_records: 4096,
            max_batch_bytes: 4 << 20,
            commit_interval: Duration::from_secs(1),
            tick_interval: Duration::from_millis(200),
            idle_sleep: Duration::from_millis(2),
            nice: 0,
        }
    }
}

/// How far a consumer has read, shared with readers that need "caught up" barriers (queries
/// that must see everything acknowledged so far).
#[derive(Debug, Default)]
pub struct ConsumerProgress {
    positions: RwLock<HashMap<StreamPartition, Offset>>,
    failed: RwLock<Option<String>>,
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

    /// Whether every partition of `stream` (all streams when `None`) has been handled up to
    /// the log's current end.
    pub fn caught_up(&self, log: &dyn Log, stream: Option<&StreamName>) -> bool {
        log.streams()
            .into_iter()
            .filter(|(name, _)| !name.is_internal() && stream.is_none_or(|s| s == name))
            .all(|(name, partitions)| {
                (0..partitions).all(|p| {
                    let end = log.end_offset(&name, p).unwrap_or(0);
                    let start = log.start_offset(&name, p).unwrap_or(0);
                    end <= start || self.position(&name, p).is_some_and(|pos| pos >= end)
                })
            })
    }

    /// Waits (polling every 2 ms) until [`caught_up`](Self::caught_up) or `timeout`.
    pub async fn wait_caught_up(
        &self,
        log: &dyn Log,
        stream: Option<&StreamName>,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.caught_up(log, stream) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn set(&self, key: StreamPartition, offset: Offset) {
        self.positions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, offset);
    }
}

/// A running consumer: its progress and the thread to join after shutdown.
pub struct RunningConsumer {
    /// Its read progress.
    pub progress: Arc<ConsumerProgress>,
    /// The thread; returns after a final flush and commit once `shutdown` is set.
    pub thread: JoinHandle<()>,
}

/// Starts `consumer` on its own thread. It stops, after flushing and committing, when
/// `shutdown` becomes true.
pub fn spawn_consumer(
    consumer: Box<dyn Consumer>,
    log: Arc<dyn Log>,
    offsets: Arc<OffsetStore>,
    dlq: DeadLetterQueue,
    config: RunnerConfig,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<RunningConsumer> {
    let progress = Arc::new(ConsumerProgress::default());
    let shared = progress.clone();
    let name = consumer.name().to_string();
    let thread = std::thread::Builder::new()
        .name(format!("consumer-{name}"))
        .spawn(move || {
            if config.nice != 0 {
                lower_thread_priority(&name, config.nice);
            }
            let mut runner = Runner {
                consumer,
                log,
                offsets,
                dlq,
                config,
                shutdown,
                progress: shared.clone(),
                positions: BTreeMap::new(),
                committed: BTreeMap::new(),
                restart_backoff: RESTART_BACKOFF_MIN,
            };
            if let Err(message) = runner.run() {
                tracing::error!(consumer = %name, %message, "consumer stopped");
                *shared.failed.write().unwrap_or_else(|p| p.into_inner()) = Some(message);
            }
        })?;
    Ok(RunningConsumer { progress, thread })
}

/// Lowers the calling thread's priority. Failing is not fatal: the consumer then runs at
/// normal priority, which is logged.
fn lower_thread_priority(consumer: &str, nice: i32) {
    if let Err(error) = tw_os::set_current_thread_nice(nice) {
        tracing::warn!(consumer, nice, %error, "could not lower the consumer thread's priority");
    }
}

struct Runner {
    consumer: Box<dyn Consumer>,
    log: Arc<dyn Log>,
    offsets: Arc<OffsetStore>,
    dlq: DeadLetterQueue,
    config: RunnerConfig,
    shutdown: Arc<AtomicBool>,
    progress: Arc<ConsumerProgress>,
    positions: BTreeMap<StreamPartition, Offset>,
    committed: BTreeMap<StreamPartition, Offset>,
    /// Pause before the next restart of a consumer that restarts after failures; doubles while
    /// failures repeat, reset by a handled batch.
    restart_backoff: Duration,
}

const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);

impl Runner {
    fn run(&mut self) -> Result<(), String> {
        let name = self.consumer.name().to_string();
        self.committed = self.offsets.load(&name).map_err(|e| e.to_string())?;
        self.consumer
            .start(&self.committed)
            .map_err(|e| e.to_string())?;
        self.positions = self.committed.clone();
        for (key, offset) in &self.positions {
            self.progress.set(key.clone(), *offset);
        }
        let mut last_tick = Instant::now();
        let mut last_commit = Instant::now();
        let mut commits = self.log.subscribe();
        while !self.shutdown.load(Ordering::Relaxed) {
            let did_work = self.poll_once()?;
            if last_tick.elapsed() >= self.config.tick_interval {
                if let Err(error) = self.consumer.tick(now_ms()) {
                    if !self.consumer.restart_after_failure() {
                        return Err(error.to_string());
                    }
                    tracing::error!(%error, "consumer failed a tick");
                    self.restart();
                }
                last_tick = Instant::now();
            }
            if last_commit.elapsed() >= self.config.commit_interval {
                self.commit()?;
                last_commit = Instant::now();
            }
            if !did_work && !commits.has_changed().unwrap_or(false) {
                std::thread::sleep(self.config.idle_sleep);
            }
            commits.borrow_and_update();
        }
        self.consumer.flush().map_err(|e| e.to_string())?;
        self.commit()
    }

    /// Starts the consumer again from its committed and safe offsets, as a process restart
    /// would, after a pause that grows while failures repeat. Whatever it handled past its safe
    /// offsets is read again. When `start` fails too, the next failure tries again.
    fn restart(&mut self) {
        std::thread::sleep(self.restart_backoff);
        self.restart_backoff = (self.restart_backoff * 2).min(RESTART_BACKOFF_MAX);
        let mut from = self.committed.clone();
        from.extend(self.consumer.safe_offsets());
        match self.consumer.start(&from) {
            Ok(()) => {
                for (key, offset) in &from {
                    self.progress.set(key.clone(), *offset);
                }
                tracing::warn!(
                    consumer = self.consumer.name(),
                    "consumer restarted after a failure"
                );
                self.positions = from;
            }
            Err(error) => {
                tracing::error!(%error, consumer = self.consumer.name(), "consumer failed to restart");
            }
        }
    }

    /// Reads one batch from every partition that has data; true when anything was handled.
    fn poll_once(&mut self) -> Result<bool, String> {
        let mut did_work = false;
        for (stream, partitions) in self.log.streams() {
            if stream.is_internal() {
                continue;
            }
            for partition in 0..partitions {
                if self.shutdown.load(Ordering::Relaxed) {
                    return Ok(did_work);
                }
                did_work |= self.poll_partition(&stream, partition)?;
            }
        }
        Ok(did_work)
    }

    fn poll_partition(&mut self, stream: &StreamName, partition: u32) -> Result<bool, String> {
        let key = (stream.clone(), partition);
        let position = match self.positions.get(&key) {
            Some(position) => *position,
            None => self
                .log
                .start_offset(stream, partition)
                .map_err(|e| e.to_string())?,
        };
        let records = self
            .log
            .read(
                stream,
                partition,
                position,
                self.config.max_batch_records,
                self.config.max_batch_bytes,
            )
            .map_err(|e| e.to_string())?;
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(false);
        };
        if first.offset > position {
            tracing::warn!(consumer = self.consumer.name(), %stream, partition, skipped = first.offset - position, "records deleted by retention before they were consumed");
            metrics::counter!("tidewatch_consumer_skipped_by_retention_total", "consumer" => self.consumer.name().to_string())
                .increment(first.offset - position);
        }
        let next = last.offset + 1;
        let batch = self.parse(stream, partition, records);
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = self.consumer.handle(&batch) {
            tracing::error!(%error, %stream, partition, "consumer failed a batch; retrying");
            metrics::counter!("tidewatch_consumer_errors_total", "consumer" => self.consumer.name().to_string()).increment(1);
            if self.shutdown.load(Ordering::Relaxed) {
                return Ok(false);
            }
            if self.consumer.restart_after_failure() {
                self.restart();
                return Ok(false);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        self.restart_backoff = RESTART_BACKOFF_MIN;
        self.positions.insert(key.clone(), next);
        self.progress.set(key, next);
        let lag = self
            .log
            .end_offset(stream, partition)
            .unwrap_or(next)
            .saturating_sub(next);
        let labels = [
            ("consumer", self.consumer.name().to_string()),
            ("stream", stream.to_string()),
            ("partition", partition.to_string()),
        ];
        metrics::gauge!("tidewatch_consumer_lag_events", &labels).set(lag as f64);
        let behind_ms = if lag == 0 {
            0
        } else {
            now_ms() - batch.records.last().map_or(0, |r| r.ingest_time_ms)
        };
        metrics::gauge!("tidewatch_consumer_lag_seconds", &labels)
            .set(behind_ms.max(0) as f64 / 1000.0);
        Ok(true)
    }

    /// Parses each payload once. A payload that is not a JSON object (only possible for data
    /// written by other tools or damaged on disk, since ingest validates) goes to the
    /// dead-letter queue instead of the batch.
    fn parse(
        &self,
        stream: &StreamName,
        partition: u32,
        records: Vec<tw_core::Record>,
    ) -> EventBatch {
        let mut events = Vec::with_capacity(records.len());
        let mut kept = Vec::with_capacity(records.len());
        let mut letters = Vec::new();
        for record in records {
            match self.consumer.parse(&record.payload) {
                Ok(value @ Value::Object(_)) => {
                    events.push(value);
                    kept.push(record);
                }
                other => {
                    let reason = match other {
                        Err(error) => format!("stored record is not valid JSON: {error}"),
                        Ok(_) => "stored record is not a JSON object".to_string(),
                    };
                    let stage = format!("consumer:{}", self.consumer.name());
                    letters.push(DeadLetter {
                        source_partition: Some(partition),
                        source_offset: Some(record.offset),
                        ..DeadLetter::new(stream.as_str(), &stage, reason, &record.payload)
                    });
                }
            }
        }
        if !letters.is_empty()
            && let Err(error) = futures::executor::block_on(self.dlq.push(letters))
        {
            tracing::error!(%error, "could not write dead letters");
        }
        EventBatch {
            stream: stream.clone(),
            partition,
            records: kept,
            events,
        }
    }

    fn commit(&mut self) -> Result<(), String> {
        let mut merged = self.committed.clone();
        merged.extend(self.consumer.safe_offsets());
        // Only when something moved: each commit is a write, an fsync and a rename.
        if merged != self.committed {
            self.offsets
                .commit(self.consumer.name(), &merged)
                .map_err(|e| e.to_string())?;
            self.committed = merged;
        }
        Ok(())
    }
}
