//! Runs one [`Consumer`] over the log on its own thread: read, parse once, hand over, commit.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tw_core::{Offset, Record, StreamName, now_ms};
use tw_log::{Log, LogError, OffsetStore};
use tw_os::ThreadPriority;

use crate::dlq::DeadLetterQueue;
use crate::health::ConsumerHealth;
use crate::letters::PendingLetters;
use crate::progress::{ConsumerProgress, DEFAULT_UNREADY_AFTER_FAILING, Duty};
use crate::{Consumer, EventBatch, StreamPartition, UnusableRecord};

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
    /// Scheduling priority of the consumer's thread; threads it starts inherit it. A
    /// background consumer (lake, search) given a lower one yields the CPU to ingest and
    /// detection when both want it, so alert latency does not depend on how busy indexing is;
    /// it catches up when the CPU has slack.
    pub priority: ThreadPriority,
    /// When set, a stream's partitions are handed over merged by receive time, in slices of
    /// this width: a slice of every partition before the next slice of any. A consumer that
    /// orders by event time (detection's watermark) needs it: reading one partition's backlog
    /// ahead of another's would make the other's events late. Off, each partition's batch is
    /// handed over as read (the lake and search do not care about the order across
    /// partitions).
    pub merge_partitions: Option<Duration>,
    /// How long the consumer may keep failing (a batch, its dead letters, a tick) before
    /// readiness reports the node not ready ([`ConsumerProgress::unready`]).
    pub unready_after_failing: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            max_batch_records: 4096,
            max_batch_bytes: 4 << 20,
            commit_interval: Duration::from_secs(1),
            tick_interval: Duration::from_millis(200),
            idle_sleep: Duration::from_millis(2),
            priority: ThreadPriority::Normal,
            merge_partitions: None,
            unready_after_failing: DEFAULT_UNREADY_AFTER_FAILING,
        }
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
    let progress = Arc::new(ConsumerProgress::new(config.unready_after_failing));
    let shared = progress.clone();
    let name = consumer.name().to_string();
    let thread = std::thread::Builder::new()
        .name(format!("consumer-{name}"))
        .spawn(move || {
            if config.priority != ThreadPriority::Normal {
                lower_thread_priority(&name, config.priority);
            }
            let mut runner = Runner {
                health: ConsumerHealth::new(&name, shared.clone()),
                letters: PendingLetters::new(&name),
                consumer,
                log,
                offsets,
                dlq,
                config,
                shutdown,
                progress: shared.clone(),
                positions: BTreeMap::new(),
                committed: BTreeMap::new(),
                incarnations: BTreeMap::new(),
                forget_backoff: RESTART_BACKOFF_MIN,
                next_forget: Instant::now(),
                restart_backoff: RESTART_BACKOFF_MIN,
                damage_backoff: RETRY_BACKOFF_MIN,
            };
            if let Err(message) = runner.run() {
                tracing::error!(consumer = %name, %message, "consumer stopped");
                runner.health.stopped(message);
            }
        })?;
    Ok(RunningConsumer { progress, thread })
}

/// Lowers the calling thread's priority. Failing is not fatal: the consumer then runs at
/// normal priority, which is logged.
fn lower_thread_priority(consumer: &str, priority: ThreadPriority) {
    if let Err(error) = tw_os::set_current_thread_priority(priority) {
        tracing::warn!(consumer, ?priority, %error, "could not lower the consumer thread's priority");
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
    /// Metrics and failure state operators and readiness see.
    health: ConsumerHealth,
    /// Dead letters found but not yet stored in the queue.
    letters: PendingLetters,
    positions: BTreeMap<StreamPartition, Offset>,
    committed: BTreeMap<StreamPartition, Offset>,
    /// The incarnation of each stream being read: when the log's differs (or the stream is
    /// gone), the stream was deleted and its offsets mean nothing any more.
    incarnations: BTreeMap<StreamName, u64>,
    /// Pause before retrying a `forget_stream` that failed, and when that retry is due.
    forget_backoff: Duration,
    next_forget: Instant,
    /// Pause before the next restart of a consumer that restarts after failures; doubles while
    /// failures repeat, reset by a handled batch.
    restart_backoff: Duration,
    /// Pause after the queue refused the letter of records damage makes unreadable, before
    /// the next poll finds the damage again; doubles while refusals repeat.
    damage_backoff: Duration,
}

const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Pause before retrying a failed batch (or its dead letters) in place; doubles while the
/// failures repeat.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(10);

impl Runner {
    fn run(&mut self) -> Result<(), String> {
        let name = self.consumer.name().to_string();
        self.committed = self.offsets.load(&name).map_err(|e| e.to_string())?;
        // Offsets of streams deleted while the consumer was not running (a crash during a
        // deletion) are forgotten by the first poll (`forget_deleted`).
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
                match self.consumer.tick(now_ms()) {
                    Ok(()) => self.health.succeeded(&Duty::Tick),
                    Err(error) => {
                        if !self.consumer.restart_after_failure() {
                            return Err(error.to_string());
                        }
                        tracing::error!(%error, "consumer failed a tick");
                        self.failed(Duty::Tick, &error.to_string());
                        self.restart();
                    }
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
        // Letters of records the flush made safe; one last try for any still pending. Those
        // the queue refuses hold the commit back (`commit`), so the next start finds them again.
        self.letters.add(self.consumer.take_unusable());
        if let Err(error) = self.letters.store(&self.dlq) {
            tracing::error!(%error, consumer = self.consumer.name(), "could not store dead letters at shutdown; their records will be read again at the next start");
        }
        self.commit()
    }

    /// Notes a failed attempt at `duty` (metrics, readiness, lag gauges).
    fn failed(&self, duty: Duty, error: &str) {
        self.health
            .failed(duty, error, self.log.as_ref(), &self.positions);
    }

    /// Whether to give up retrying a batch of `stream`: shutting down, or the stream was
    /// deleted meanwhile (the next poll forgets it rather than retrying forever).
    fn abandoning(&self, stream: &StreamName, incarnation: u64) -> bool {
        self.shutdown.load(Ordering::Relaxed) || self.log.incarnation(stream) != Some(incarnation)
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
        let streams: Vec<(StreamName, u32, u64)> = self
            .log
            .streams()
            .into_iter()
            .filter(|(stream, _)| !stream.is_internal())
            .filter_map(|(stream, partitions)| {
                let incarnation = self.log.incarnation(&stream)?;
                Some((stream, partitions, incarnation))
            })
            .collect();
        self.forget_deleted(&streams)?;
        for (stream, partitions, incarnation) in streams {
            if self.incarnations.get(&stream) != Some(&incarnation) {
                continue; // an older stream of this name is not forgotten yet
            }
            if let Some(slice) = self.config.merge_partitions {
                did_work |= self.poll_merged(&stream, partitions, incarnation, slice)?;
                continue;
            }
            for partition in 0..partitions {
                if self.shutdown.load(Ordering::Relaxed) {
                    return Ok(did_work);
                }
                if let Some(records) = self.read_partition(&stream, partition)? {
                    did_work |= self.handle_partition(&stream, partition, incarnation, records)?;
                }
            }
        }
        self.progress.polls.fetch_add(1, Ordering::Release);
        Ok(did_work)
    }

    /// Forgets every stream whose offsets this consumer holds but which the log deleted or
    /// replaced by a new stream of the same name, then notes the incarnation of each stream.
    /// A consumer that fails to forget is asked again after a growing pause; until then the
    /// new stream of that name is not read.
    fn forget_deleted(&mut self, streams: &[(StreamName, u32, u64)]) -> Result<(), String> {
        let current: BTreeMap<&StreamName, u64> = streams.iter().map(|(s, _, i)| (s, *i)).collect();
        let mut gone: Vec<StreamName> = self
            .incarnations
            .iter()
            .filter(|(stream, incarnation)| current.get(stream) != Some(incarnation))
            .map(|(stream, _)| stream.clone())
            .collect();
        for (stream, _) in self.positions.keys() {
            if !self.incarnations.contains_key(stream) && !gone.contains(stream) {
                // Offsets from before a restart of a stream deleted since.
                if !current.contains_key(stream) {
                    gone.push(stream.clone());
                }
            }
        }
        if !gone.is_empty() && Instant::now() >= self.next_forget {
            for stream in &gone {
                self.forget(stream)?;
            }
        }
        for (stream, _, incarnation) in streams {
            if !self.incarnations.contains_key(stream) {
                self.incarnations.insert(stream.clone(), *incarnation);
                self.progress.set_incarnation(stream, *incarnation);
            }
        }
        Ok(())
    }

    /// Has the consumer forget a deleted stream, then drops and uncommits its offsets. Keeps
    /// the stream for a later retry when the consumer fails.
    fn forget(&mut self, stream: &StreamName) -> Result<(), String> {
        if let Err(error) = self.consumer.forget_stream(stream) {
            tracing::error!(%error, %stream, "consumer failed to forget a deleted stream; retrying");
            self.failed(Duty::Forget(stream.clone()), &error.to_string());
            self.next_forget = Instant::now() + self.forget_backoff;
            self.forget_backoff = (self.forget_backoff * 2).min(RESTART_BACKOFF_MAX);
            return Ok(());
        }
        self.health.forgot(stream);
        self.forget_backoff = RESTART_BACKOFF_MIN;
        self.letters.forget(stream);
        self.positions.retain(|(s, _), _| s != stream);
        self.incarnations.remove(stream);
        self.progress.forget(stream);
        if self.committed.keys().any(|(s, _)| s == stream) {
            self.committed.retain(|(s, _), _| s != stream);
            // At once: after a restart, these offsets would apply to a new stream of the name.
            self.offsets
                .commit(self.consumer.name(), &self.committed)
                .map_err(|e| e.to_string())?;
        }
        tracing::info!(consumer = self.consumer.name(), %stream, "forgot a deleted stream");
        Ok(())
    }

    /// Reads the next batch of one partition from the consumer's position: `None` when there
    /// is nothing to read (or the stream is gone).
    fn read_partition(
        &mut self,
        stream: &StreamName,
        partition: u32,
    ) -> Result<Option<Vec<Record>>, String> {
        let key = (stream.clone(), partition);
        let position = match self.positions.get(&key) {
            Some(position) => *position,
            None => match self.log.start_offset(stream, partition) {
                Ok(start) => start,
                Err(error) => return gone_or_fatal(error).map(|_| None),
            },
        };
        let records = match self.log.read(
            stream,
            partition,
            position,
            self.config.max_batch_records,
            self.config.max_batch_bytes,
        ) {
            Ok(records) => records,
            Err(damage @ LogError::Corrupt { resume_at, .. }) if resume_at > position => {
                self.skip_damage(key, position, resume_at, &damage);
                return Ok(None);
            }
            Err(error) => return gone_or_fatal(error).map(|_| None),
        };
        let Some(first) = records.first() else {
            if position > self.log.end_offset(stream, partition).unwrap_or(position) {
                // Offsets past the end belong to records this log does not have: another
                // stream of this name (the log directory replaced). Start this one afresh
                // rather than wait for offsets that may never come.
                tracing::warn!(consumer = self.consumer.name(), %stream, partition, position, "committed offset past the log's end: forgetting the stream's offsets");
                self.forget(stream)?;
            }
            return Ok(None);
        };
        if first.offset > position {
            tracing::warn!(consumer = self.consumer.name(), %stream, partition, skipped = first.offset - position, "records deleted by retention before they were consumed");
            metrics::counter!("tidewatch_consumer_skipped_by_retention_total", "consumer" => self.consumer.name().to_string())
                .increment(first.offset - position);
        }
        Ok(Some(records))
    }

    /// Moves a partition's position past damage on disk (log frames failing their checks)
    /// once the dead-letter queue has the letter naming the unreadable records, so that
    /// damage neither stops the consumer for good nor loses records silently. Until the letter is stored the position stays, and the next poll finds the
    /// damage again.
    fn skip_damage(
        &mut self,
        key: StreamPartition,
        position: Offset,
        resume_at: Offset,
        damage: &LogError,
    ) {
        tracing::error!(consumer = self.consumer.name(), stream = %key.0, partition = key.1, position, resume_at, %damage, "records on damaged disk cannot be read: skipping them, with a dead letter naming them");
        self.letters
            .add_unreadable(&key, position, resume_at, damage);
        if let Err(error) = self.letters.store(&self.dlq) {
            self.failed(Duty::Batch(key), &error.to_string());
            std::thread::sleep(self.damage_backoff);
            self.damage_backoff = (self.damage_backoff * 2).min(RETRY_BACKOFF_MAX);
            return;
        }
        self.damage_backoff = RETRY_BACKOFF_MIN;
        metrics::counter!("tidewatch_consumer_skipped_unreadable_total", "consumer" => self.consumer.name().to_string())
            .increment(resume_at - position);
        self.health.succeeded(&Duty::Batch(key.clone()));
        self.positions.insert(key.clone(), resume_at);
        self.progress.set(key, resume_at);
    }

    /// Reads a batch of every partition of `stream` and hands them over merged by receive
    /// time (see [`RunnerConfig::merge_partitions`]). Only records received up to the
    /// earliest end of a partition that has more to read are handed over; the rest are read
    /// again by the next poll. True when anything was handled.
    fn poll_merged(
        &mut self,
        stream: &StreamName,
        partitions: u32,
        incarnation: u64,
        slice: Duration,
    ) -> Result<bool, String> {
        let mut reads: Vec<(u32, VecDeque<Record>)> = Vec::new();
        let mut horizon = i64::MAX;
        for partition in 0..partitions {
            if self.shutdown.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let Some(records) = self.read_partition(stream, partition)? else {
                continue;
            };
            if let Some(last) = records.last() {
                let end = self.log.end_offset(stream, partition).unwrap_or(0);
                if last.offset + 1 < end {
                    horizon = horizon.min(last.ingest_time_ms);
                }
            }
            reads.push((partition, records.into()));
        }
        // Prefixes only: a partition's position must move past exactly what was handed over.
        for (_, records) in &mut reads {
            let kept = records
                .iter()
                .take_while(|r| r.ingest_time_ms <= horizon)
                .count();
            records.truncate(kept);
        }
        let slice_ms = i64::try_from(slice.as_millis()).unwrap_or(i64::MAX).max(1);
        let mut did_work = false;
        // Each round hands over at least the record received first, so the loop ends.
        while let Some(start) = reads
            .iter()
            .filter_map(|(_, records)| records.front().map(|r| r.ingest_time_ms))
            .min()
        {
            let until = start.saturating_add(slice_ms);
            for (partition, records) in &mut reads {
                let count = records
                    .iter()
                    .take_while(|r| r.ingest_time_ms < until)
                    .count();
                if count == 0 {
                    continue;
                }
                let handed: Vec<Record> = records.drain(..count).collect();
                if !self.handle_partition(stream, *partition, incarnation, handed)? {
                    return Ok(did_work); // stopping, deleted or restarted: positions moved
                }
                did_work = true;
            }
        }
        Ok(did_work)
    }

    /// Hands one partition's records (read from its position on) to the consumer, retrying
    /// failures; true when they were handled and the position moved past them.
    fn handle_partition(
        &mut self,
        stream: &StreamName,
        partition: u32,
        incarnation: u64,
        records: Vec<Record>,
    ) -> Result<bool, String> {
        let key = (stream.clone(), partition);
        let Some(last) = records.last() else {
            return Ok(false);
        };
        let (next, last_ingest_ms) = (last.offset + 1, last.ingest_time_ms);
        let batch = self.parse(stream, partition, records);
        let mut backoff = RETRY_BACKOFF_MIN;
        while let Err(error) = self.consumer.handle(&batch) {
            tracing::error!(%error, %stream, partition, "consumer failed a batch; retrying");
            self.failed(Duty::Batch(key.clone()), &error.to_string());
            if self.abandoning(stream, incarnation) {
                return Ok(false);
            }
            if self.consumer.restart_after_failure() {
                self.restart();
                return Ok(false);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
        self.restart_backoff = RESTART_BACKOFF_MIN;
        self.letters.add(self.consumer.take_unusable());
        // The batch is done only once its dead letters are stored: moving past it before would
        // lose them if the queue never takes them. Only the write is retried: the consumer has
        // the batch, and handing it over again would repeat its effects.
        while let Err(error) = self.letters.store(&self.dlq) {
            tracing::error!(%error, %stream, partition, "could not store dead letters; holding the batch until the queue takes them");
            self.failed(Duty::Batch(key.clone()), &error.to_string());
            if self.abandoning(stream, incarnation) {
                return Ok(false);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
        self.health.succeeded(&Duty::Batch(key.clone()));
        self.positions.insert(key.clone(), next);
        self.progress.set(key, next);
        self.health
            .batch_lag(self.log.as_ref(), stream, partition, next, last_ingest_ms);
        Ok(true)
    }

    /// Parses each payload once. A payload that is not a JSON object (only possible for data
    /// written by other tools or damaged on disk, since ingest validates) goes to the
    /// dead-letter queue (with the batch's other letters, once handled) instead of the batch.
    fn parse(
        &mut self,
        stream: &StreamName,
        partition: u32,
        records: Vec<tw_core::Record>,
    ) -> EventBatch {
        let mut events = Vec::with_capacity(records.len());
        let mut checked = Vec::with_capacity(records.len());
        let mut fields = Vec::new();
        let mut kept = Vec::with_capacity(records.len());
        let mut unusable = Vec::new();
        for record in records {
            match self.consumer.parse(&record.payload) {
                Ok(parsed) if parsed.is_object() => {
                    match parsed.fields {
                        Some(row) => fields.push(row),
                        None => events.push(parsed.event),
                    }
                    checked.push(parsed.checked);
                    kept.push(record);
                }
                other => {
                    let reason = match other {
                        Err(error) => format!("stored record is not valid JSON: {error}"),
                        Ok(_) => "stored record is not a JSON object".to_string(),
                    };
                    unusable.push(UnusableRecord {
                        stream: stream.clone(),
                        partition,
                        offset: record.offset,
                        payload: record.payload,
                        reason,
                    });
                }
            }
        }
        self.letters.add(unusable);
        EventBatch {
            stream: stream.clone(),
            partition,
            records: kept,
            events,
            checked,
            fields,
        }
    }

    fn commit(&mut self) -> Result<(), String> {
        let mut merged = self.committed.clone();
        merged.extend(self.consumer.safe_offsets());
        self.letters.cap(&mut merged);
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

/// A read of a stream the log deleted meanwhile finds nothing (the next poll forgets the
/// stream); any other log error stops the consumer.
fn gone_or_fatal(error: LogError) -> Result<bool, String> {
    match error {
        LogError::UnknownStream(_) | LogError::UnknownPartition { .. } => Ok(false),
        other => Err(other.to_string()),
    }
}
