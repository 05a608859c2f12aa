//! The file watcher: a local directory or an S3 prefix, both seen as an `ObjectStore` and a
//! prefix, polled for new `.json`, `.ndjson`, `.json.gz` and `.ndjson.gz` files.
//!
//! Each file is read whole (bounded: a file larger than the ingest path's decompressed-body
//! limit, or that inflates past it, fails), decoded by the pipeline's own decoder (NDJSON,
//! JSON array, CloudTrail `{"Records": [...]}`), and appended in batches of records through
//! the [`Ingestor`]. After each durable batch the last acknowledged record number is saved;
//! before it, the log's end positions, so an interrupted batch is completed without
//! duplicates (see `recover`). A file that cannot be decoded at all is recorded as failed
//! with its reason (log, metric, dead letter) and never retried; a file that cannot be read
//! (network, permissions) is retried at the next poll.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use metrics::{Counter, Gauge};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use tokio::sync::watch;
use tw_core::{StreamName, now_ms};
use tw_log::Log;
use tw_pipeline::{
    ContentEncoding, DeadLetter, IngestLimits, Ingestor, ParsedEvent, Rejection, StreamState,
    decode_body, split_events_selecting,
};

use crate::SourceError;
use crate::config::PollConfig;
use crate::recover::{log_positions, remove_stored};
use crate::state::{FileOutcome, FileState, Pending, Progress, finished_entry};

/// At most this much of an undecodable file is kept in its dead letter.
const FAILED_FILE_SAMPLE_BYTES: usize = 4096;

/// The suffixes a watcher picks up (compared in lowercase).
const SUFFIXES: [&str; 4] = [".json", ".ndjson", ".json.gz", ".ndjson.gz"];

/// Whether the watcher takes the object at `key`: a known suffix, and no hidden component
/// (writers commonly write `.name.tmp` and rename when complete).
pub fn is_candidate(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SUFFIXES.iter().any(|s| lower.ends_with(s)) && !key.split('/').any(|part| part.starts_with('.'))
}

/// One file watcher.
pub struct FileSource {
    name: String,
    stream: StreamName,
    /// For messages: `dir /path` or `s3://bucket/prefix`.
    location: String,
    store: Arc<dyn ObjectStore>,
    prefix: Option<ObjectPath>,
    poll: PollConfig,
    ingestor: Arc<Ingestor>,
    log: Arc<dyn Log>,
    state: Arc<Mutex<FileState>>,
    seen: HashSet<String>,
    metrics: FileMetrics,
}

struct FileMetrics {
    seen: Counter,
    ingested: Counter,
    failed: Counter,
    events: Counter,
    rejected: Counter,
    errors: Counter,
    pending: Gauge,
    lag_seconds: Gauge,
}

impl FileMetrics {
    fn new(source: &str) -> Self {
        Self {
            seen: metrics::counter!("tidewatch_source_files_seen_total", "source" => source.to_string()),
            ingested: metrics::counter!("tidewatch_source_files_ingested_total", "source" => source.to_string()),
            failed: metrics::counter!("tidewatch_source_files_failed_total", "source" => source.to_string()),
            events: metrics::counter!("tidewatch_source_events_total", "source" => source.to_string()),
            rejected: metrics::counter!("tidewatch_source_rejected_total", "source" => source.to_string()),
            errors: metrics::counter!("tidewatch_source_errors_total", "source" => source.to_string()),
            pending: metrics::gauge!("tidewatch_source_files_pending", "source" => source.to_string()),
            lag_seconds: metrics::gauge!("tidewatch_source_lag_seconds", "source" => source.to_string()),
        }
    }
}

/// Where a file source reads and keeps its state.
pub struct FileSourceParts {
    /// Source name (metric label).
    pub name: String,
    /// Target stream.
    pub stream: StreamName,
    /// Human-readable location for messages.
    pub location: String,
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Prefix inside the store (none: everything).
    pub prefix: Option<ObjectPath>,
    /// Polling and batching.
    pub poll: PollConfig,
    /// Opened state.
    pub state: FileState,
}

enum Unit {
    Event(ParsedEvent),
    Rejected(Rejection),
}

impl Unit {
    fn line(&self) -> usize {
        match self {
            Unit::Event(e) => e.line,
            Unit::Rejected(r) => r.line,
        }
    }
}

/// What became of one file.
enum FileEnd {
    Finished,
    /// Stopped between two batches (shutdown); resumed at the next start.
    Interrupted,
}

impl FileSource {
    /// A watcher over `parts`, appending through `ingestor` (no I/O, no tasks).
    pub fn new(parts: FileSourceParts, ingestor: Arc<Ingestor>, log: Arc<dyn Log>) -> Self {
        let metrics = FileMetrics::new(&parts.name);
        Self {
            name: parts.name,
            stream: parts.stream,
            location: parts.location,
            store: parts.store,
            prefix: parts.prefix,
            poll: parts.poll,
            ingestor,
            log,
            state: Arc::new(Mutex::new(parts.state)),
            seen: HashSet::new(),
            metrics,
        }
    }

    /// Polls until `shutdown` turns true; stops between two batches.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(source = %self.name, location = %self.location, stream = %self.stream, "file source started");
        let interval = Duration::from_millis(self.poll.poll_interval_ms);
        while !*shutdown.borrow() {
            if let Err(error) = self.poll_once(&shutdown).await {
                self.metrics.errors.increment(1);
                tracing::warn!(source = %self.name, %error, "file source poll failed; retrying at the next poll");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!(source = %self.name, "file source stopped");
    }

    /// One listing and the ingestion of every new settled file, oldest key first.
    pub async fn poll_once(&mut self, shutdown: &watch::Receiver<bool>) -> Result<(), SourceError> {
        let now = now_ms();
        let mut listing = self.store.list(self.prefix.as_ref());
        let mut ready = Vec::new();
        let mut oldest_unfinished = None::<i64>;
        let mut unfinished = 0usize;
        while let Some(item) = listing.next().await {
            let meta = item.map_err(|e| SourceError::store(&self.location, e))?;
            let key = meta.location.to_string();
            if !is_candidate(&key) || self.lock_state().is_finished(&key) {
                continue;
            }
            if self.seen.insert(key) {
                self.metrics.seen.increment(1);
            }
            let modified = meta.last_modified.timestamp_millis();
            unfinished += 1;
            oldest_unfinished = Some(oldest_unfinished.map_or(modified, |o| o.min(modified)));
            if now - modified >= self.poll.settle_ms as i64 {
                ready.push(meta);
            }
        }
        drop(listing);
        self.report_backlog(unfinished, oldest_unfinished);
        ready.sort_by(|a, b| a.location.cmp(&b.location));
        for meta in ready {
            if *shutdown.borrow() {
                return Ok(());
            }
            match self.ingest_file(&meta, shutdown).await? {
                FileEnd::Finished => {
                    unfinished -= 1;
                    self.metrics.pending.set(unfinished as f64);
                }
                FileEnd::Interrupted => return Ok(()),
            }
        }
        if unfinished == 0 {
            self.metrics.lag_seconds.set(0.0);
        }
        Ok(())
    }

    fn report_backlog(&self, unfinished: usize, oldest_modified_ms: Option<i64>) {
        self.metrics.pending.set(unfinished as f64);
        let lag_ms = oldest_modified_ms.map_or(0, |t| (now_ms() - t).max(0));
        self.metrics.lag_seconds.set(lag_ms as f64 / 1000.0);
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs blocking state I/O off the async workers.
    async fn with_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut FileState) -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, SourceError> {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || f(&mut state.lock().unwrap_or_else(|p| p.into_inner())))
            .await
            .map_err(|e| SourceError::state("(state task)", e))?
    }

    async fn ingest_file(
        &self,
        meta: &ObjectMeta,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<FileEnd, SourceError> {
        let key = meta.location.to_string();
        let mut progress = self
            .lock_state()
            .progress(&key)
            .cloned()
            .unwrap_or_else(|| Progress::start(&key, meta.size));
        let limits = *self.ingestor.limits();
        // A file did not come over HTTP: the bound is on what it holds, the decompressed size
        // (a plain file is its own decompressed content).
        let file_limits = IngestLimits {
            max_body_bytes: limits.max_decompressed_bytes,
            ..limits
        };
        if meta.size > file_limits.max_body_bytes as u64 {
            let reason = format!(
                "file of {} bytes exceeds the limit of {} bytes (ingest.max_decompressed_bytes)",
                meta.size, file_limits.max_body_bytes
            );
            return self.fail(progress, reason, Bytes::new()).await;
        }
        let body = match self.store.get(&meta.location).await {
            Ok(result) => result.bytes().await,
            Err(error) => Err(error),
        };
        let body = match body {
            Ok(body) => body,
            // Deleted between the listing and the read: nothing to ingest, nothing to record.
            Err(object_store::Error::NotFound { .. }) => return Ok(FileEnd::Finished),
            Err(error) => {
                return Err(SourceError::store(
                    format!("{}/{key}", self.location),
                    error,
                ));
            }
        };
        let encoding = if key.to_ascii_lowercase().ends_with(".gz") {
            ContentEncoding::Gzip
        } else {
            ContentEncoding::Identity
        };
        let stream_state = self.ingestor.registry().get_or_create(&self.stream)?;
        // Inflating and parsing a whole file is CPU work: off the async workers.
        let split = tokio::task::spawn_blocking(move || {
            decode_file(body, encoding, &file_limits, &limits, &stream_state)
        })
        .await
        .map_err(|e| SourceError::state("(decode task)", e))?;
        let (events, rejected) = match split {
            Ok(split) => split,
            Err((reason, sample)) => return self.fail(progress, reason, sample).await,
        };
        let mut units: Vec<Unit> = events
            .into_iter()
            .map(Unit::Event)
            .chain(rejected.into_iter().map(Unit::Rejected))
            .filter(|unit| unit.line() > progress.acked_line)
            .collect();
        units.sort_by_key(Unit::line);

        match self.append_units(&mut progress, units, shutdown).await {
            Ok(FileEnd::Finished) => {}
            Ok(FileEnd::Interrupted) => return Ok(FileEnd::Interrupted),
            // Retrying cannot help (e.g. a record the log refuses as too large): what was
            // appended stays, the file is recorded as failed.
            Err(SourceError::Ingest(error)) if error.is_client_error() => {
                return self.fail(progress, error.to_string(), Bytes::new()).await;
            }
            Err(error) => return Err(error),
        }
        let entry = finished_entry(&progress, FileOutcome::Done, None);
        self.with_state(move |state| state.finish(entry)).await?;
        self.metrics.ingested.increment(1);
        tracing::info!(source = %self.name, file = %key, events = progress.events, rejected = progress.rejected, "file ingested");
        Ok(FileEnd::Finished)
    }

    /// Appends the records after the acknowledged line, batch by batch.
    async fn append_units(
        &self,
        progress: &mut Progress,
        units: Vec<Unit>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<FileEnd, SourceError> {
        let mut units = units.into_iter().peekable();
        if let Some(pending) = progress.pending.clone() {
            let batch = take_while_line(&mut units, |line| line <= pending.upto_line);
            self.complete_interrupted(progress, pending, batch).await?;
        }
        while units.peek().is_some() {
            if *shutdown.borrow() {
                return Ok(FileEnd::Interrupted);
            }
            let batch: Vec<Unit> = units.by_ref().take(self.poll.batch_records).collect();
            let upto = batch.last().map_or(progress.acked_line, Unit::line);
            let (events, rejected) = split_units(batch);
            self.append_batch(progress, events, rejected, upto).await?;
        }
        Ok(FileEnd::Finished)
    }

    /// Finishes a batch whose append was interrupted: what the log already holds is counted,
    /// the rest appended.
    async fn complete_interrupted(
        &self,
        progress: &mut Progress,
        pending: Pending,
        batch: Vec<Unit>,
    ) -> Result<(), SourceError> {
        let (mut events, mut rejected) = split_units(batch);
        let (log, stream, checked) = (self.log.clone(), self.stream.clone(), pending.clone());
        let (events, rejected, found) = tokio::task::spawn_blocking(move || {
            remove_stored(&*log, &stream, &checked, &mut events, &mut rejected)
                .map(|found| (events, rejected, found))
        })
        .await
        .map_err(|e| SourceError::state("(recovery task)", e))??;
        tracing::info!(
            source = %self.name, file = %progress.key, already_stored = found.events,
            already_dead_lettered = found.rejected, to_append = events.len() + rejected.len(),
            "completing an interrupted append"
        );
        progress.events += found.events;
        progress.rejected += found.rejected;
        self.append_batch(progress, events, rejected, pending.upto_line)
            .await
    }

    /// Records the log positions, appends, records the new acknowledged line.
    async fn append_batch(
        &self,
        progress: &mut Progress,
        events: Vec<ParsedEvent>,
        rejected: Vec<Rejection>,
        upto_line: usize,
    ) -> Result<(), SourceError> {
        let partitions = self
            .ingestor
            .registry()
            .get_or_create(&self.stream)?
            .config
            .partitions;
        let (log, stream) = (self.log.clone(), self.stream.clone());
        let (log_ends, dlq_end) =
            tokio::task::spawn_blocking(move || log_positions(&*log, &stream, partitions))
                .await
                .map_err(|e| SourceError::state("(log positions task)", e))??;
        progress.pending = Some(Pending {
            upto_line,
            log_ends,
            dlq_end,
        });
        let saved = progress.clone();
        self.with_state(move |state| state.save_progress(saved))
            .await?;
        // On error the pending positions stay recorded: the next attempt checks the log first.
        let outcome = self
            .ingestor
            .ingest_events(&self.stream, events, rejected)
            .await?;
        self.metrics.events.increment(outcome.accepted as u64);
        self.metrics
            .rejected
            .increment(outcome.rejected.len() as u64);
        progress.events += outcome.accepted as u64;
        progress.rejected += outcome.rejected.len() as u64;
        progress.acked_line = upto_line;
        progress.pending = None;
        let saved = progress.clone();
        self.with_state(move |state| state.save_progress(saved))
            .await
    }

    /// Records a file that cannot be decoded: journal, metric, log line and a dead letter
    /// carrying the start of its bytes.
    async fn fail(
        &self,
        progress: Progress,
        reason: String,
        sample: Bytes,
    ) -> Result<FileEnd, SourceError> {
        let reason = format!("file {}/{}: {reason}", self.location, progress.key);
        tracing::warn!(source = %self.name, %reason, "file failed; it will not be retried");
        let letter = DeadLetter::new(
            self.stream.as_str(),
            &format!("source:{}", self.name),
            reason.clone(),
            &sample[..sample.len().min(FAILED_FILE_SAMPLE_BYTES)],
        );
        self.ingestor
            .dlq()
            .push(vec![letter])
            .await
            .map_err(SourceError::Log)?;
        let entry = finished_entry(&progress, FileOutcome::Failed, Some(reason));
        self.with_state(move |state| state.finish(entry)).await?;
        self.metrics.failed.increment(1);
        Ok(FileEnd::Finished)
    }
}

/// Inflates (bounded) and splits a file like an HTTP body; on failure, the reason and the
/// bytes to sample in the dead letter.
fn decode_file(
    body: Bytes,
    encoding: ContentEncoding,
    file_limits: &IngestLimits,
    limits: &IngestLimits,
    stream: &StreamState,
) -> Result<(Vec<ParsedEvent>, Vec<Rejection>), (String, Bytes)> {
    let decoded =
        decode_body(body.clone(), encoding, file_limits).map_err(|e| (e.to_string(), body))?;
    split_events_selecting(&decoded, limits, Some(stream.selection()))
        .map_err(|e| (e.to_string(), decoded.clone()))
}

fn take_while_line(
    units: &mut std::iter::Peekable<std::vec::IntoIter<Unit>>,
    keep: impl Fn(usize) -> bool,
) -> Vec<Unit> {
    let mut batch = Vec::new();
    while let Some(unit) = units.next_if(|unit| keep(unit.line())) {
        batch.push(unit);
    }
    batch
}

fn split_units(units: Vec<Unit>) -> (Vec<ParsedEvent>, Vec<Rejection>) {
    let mut events = Vec::with_capacity(units.len());
    let mut rejected = Vec::new();
    for unit in units {
        match unit {
            Unit::Event(event) => events.push(event),
            Unit::Rejected(rejection) => rejected.push(rejection),
        }
    }
    (events, rejected)
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
