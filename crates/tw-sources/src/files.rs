//! The file watcher: a local directory or an S3 prefix, both seen as an `ObjectStore` and a
//! prefix, polled for new `.json`, `.ndjson`, `.json.gz` and `.ndjson.gz` files.
//!
//! Each file is read whole (bounded: a file larger than the ingest path's decompressed-body
//! limit, or that inflates past it, fails), decoded by the pipeline's own decoder (NDJSON,
//! JSON array, CloudTrail `{"Records": [...]}`), and appended in batches of records through
//! the [`Ingestor`]. After each durable batch the last acknowledged record number is saved;
//! before it, the log's end positions, so an interrupted batch is completed without
//! duplicates (see `recover`). A file that cannot be decoded at all is recorded as failed
//! with its reason (log, metric, dead letter) and never retried.
//!
//! Order of a poll: first the files already started (each from its own saved progress), then
//! the new settled files, oldest key first. A started file whose append was interrupted (a
//! crash, a full disk) is completed before anything else is appended: the check of what that
//! append stored reads the log past its recorded positions, and must not find other files'
//! events there. An error of the append path ends the poll; the file keeps its progress and is
//! the first resumed at the next poll.
//!
//! What cannot be listed or read (network, permissions, a key `object_store` cannot represent,
//! see `listing`) is reported (a warning with the path and the reason when it appears,
//! `tidewatch_source_errors_total` at every poll, `tidewatch_source_unreadable_paths`) and
//! retried at the next poll while the other files go on; except a started file whose append was
//! interrupted, which holds back the new files until it can be read or is removed. A started
//! file that was removed is recorded as failed: the records taken stay, the rest is gone.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use metrics::{Counter, Gauge};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::watch;
use tw_core::{StreamName, now_ms};
use tw_log::Log;
use tw_pipeline::{DeadLetter, Ingestor, ParsedEvent, Rejection};

use crate::SourceError;
use crate::config::PollConfig;
use crate::file_format::{
    Unit, decode_file, encoding, file_limits, is_candidate, split_units, take_while_line,
    units_after,
};
use crate::listing::Lister;
use crate::recover::{log_positions, remove_stored};
use crate::state::{FileOutcome, FileState, Pending, Progress, finished_entry};

/// At most this much of an undecodable file is kept in its dead letter.
const FAILED_FILE_SAMPLE_BYTES: usize = 4096;

/// One file watcher.
pub struct FileSource {
    name: String,
    stream: StreamName,
    /// For messages: `dir /path` or `s3://bucket/prefix`.
    location: String,
    store: Arc<dyn ObjectStore>,
    lister: Lister,
    prefix: Option<ObjectPath>,
    poll: PollConfig,
    ingestor: Arc<Ingestor>,
    log: Arc<dyn Log>,
    state: Arc<Mutex<FileState>>,
    seen: HashSet<String>,
    /// What could not be listed or read, by path, with the reason (a warning when it appears).
    unreadable: BTreeMap<String, String>,
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
    unreadable: Gauge,
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
            unreadable: metrics::gauge!("tidewatch_source_unreadable_paths", "source" => source.to_string()),
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
    /// The store files are read from.
    pub store: Arc<dyn ObjectStore>,
    /// How the store is listed.
    pub lister: Lister,
    /// Prefix inside the store (none: everything).
    pub prefix: Option<ObjectPath>,
    /// Polling and batching.
    pub poll: PollConfig,
    /// Opened state.
    pub state: FileState,
}

/// What became of one file.
enum FileEnd {
    /// Taken, recorded as failed, or gone before it was started: nothing left to do.
    Finished,
    /// Stopped between two batches (shutdown); resumed first at the next start.
    Interrupted,
    /// Could not be read (nothing appended since the last saved progress); retried at the
    /// next poll.
    Unreadable {
        /// The store's error.
        reason: String,
    },
}

/// How far a poll went.
enum PollEnd {
    /// Every file it listed was tried.
    Complete,
    /// Stopped early (shutdown, or held back by a started file that cannot be read).
    Partial,
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
            lister: parts.lister,
            prefix: parts.prefix,
            poll: parts.poll,
            ingestor,
            log,
            state: Arc::new(Mutex::new(parts.state)),
            seen: HashSet::new(),
            unreadable: BTreeMap::new(),
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

    /// One poll: the files already started, each resumed from its saved progress, then every
    /// new settled file, oldest key first. What cannot be listed or read is reported and
    /// retried at the next poll; an error of the append path ends the poll (the file keeps
    /// its progress and is resumed first at the next one).
    pub async fn poll_once(&mut self, shutdown: &watch::Receiver<bool>) -> Result<(), SourceError> {
        let mut unreadable = BTreeMap::new();
        let end = self.poll_files(shutdown, &mut unreadable).await;
        self.report_unreadable(unreadable, matches!(end, Ok(PollEnd::Complete)));
        end.map(|_| ())
    }

    /// What could not be listed or read at the last poll (and at earlier ones, for what the
    /// last poll did not get to), by path, with the store's reason. A path ending in `/` is
    /// a directory or prefix.
    pub fn unreadable(&self) -> &BTreeMap<String, String> {
        &self.unreadable
    }

    async fn poll_files(
        &mut self,
        shutdown: &watch::Receiver<bool>,
        unreadable: &mut BTreeMap<String, String>,
    ) -> Result<PollEnd, SourceError> {
        let now = now_ms();
        let listed = self.lister.list(self.prefix.as_ref()).await;
        unreadable.extend(listed.problems.into_iter().map(|p| (p.path, p.reason)));
        // Started files, by key, the one with an interrupted append (at most one: it is always
        // resumed first) before the others.
        let mut started: Vec<(String, bool)> = self
            .lock_state()
            .started()
            .map(|p| (p.key.clone(), p.pending.is_some()))
            .collect();
        started.sort_by_key(|(_, interrupted_append)| !interrupted_append);
        let mut ready = Vec::new();
        let mut oldest_unfinished = None::<i64>;
        let mut unfinished = 0usize;
        for meta in listed.objects {
            let key = meta.location.to_string();
            if !is_candidate(&key) || self.lock_state().is_finished(&key) {
                continue;
            }
            let is_started = started.iter().any(|(k, _)| *k == key);
            if self.seen.insert(key) {
                self.metrics.seen.increment(1);
            }
            let modified = meta.last_modified.timestamp_millis();
            unfinished += 1;
            oldest_unfinished = Some(oldest_unfinished.map_or(modified, |o| o.min(modified)));
            if !is_started && now - modified >= self.poll.settle_ms as i64 {
                ready.push(meta.location);
            }
        }
        self.report_backlog(unfinished, oldest_unfinished);
        ready.sort();
        let ready = self.lister.regular_files(ready).await;

        // Started files first, wherever the listing got: one whose append was interrupted
        // must be completed before anything else is appended (see `recover`).
        for (key, interrupted_append) in started {
            if *shutdown.borrow() {
                return Ok(PollEnd::Partial);
            }
            let end = match ObjectPath::parse(&key) {
                Ok(location) => self.ingest_file(&location, shutdown).await?,
                Err(error) => FileEnd::Unreadable {
                    reason: error.to_string(),
                },
            };
            match end {
                FileEnd::Finished => self.count_finished(&mut unfinished),
                FileEnd::Interrupted => return Ok(PollEnd::Partial),
                FileEnd::Unreadable { reason } if interrupted_append => {
                    unreadable.insert(
                        key,
                        format!(
                            "{reason} (its interrupted append must be completed first: no other \
                             file is taken until it can be read or is removed)"
                        ),
                    );
                    return Ok(PollEnd::Partial);
                }
                FileEnd::Unreadable { reason } => {
                    unreadable.insert(key, reason);
                }
            }
        }
        for location in ready {
            if *shutdown.borrow() {
                return Ok(PollEnd::Partial);
            }
            match self.ingest_file(&location, shutdown).await? {
                FileEnd::Finished => self.count_finished(&mut unfinished),
                FileEnd::Interrupted => return Ok(PollEnd::Partial),
                FileEnd::Unreadable { reason } => {
                    unreadable.insert(location.to_string(), reason);
                }
            }
        }
        if unfinished == 0 {
            self.metrics.lag_seconds.set(0.0);
        }
        Ok(PollEnd::Complete)
    }

    fn count_finished(&self, unfinished: &mut usize) {
        *unfinished = unfinished.saturating_sub(1);
        self.metrics.pending.set(*unfinished as f64);
    }

    /// Warns about what became unreadable (or changed reason), counts every unreadable path
    /// as a retried failure, and keeps the set for the next poll. A poll that stopped early
    /// forgets nothing it did not get to.
    fn report_unreadable(&mut self, now: BTreeMap<String, String>, complete: bool) {
        for (path, reason) in &now {
            if self.unreadable.get(path) == Some(reason) {
                tracing::debug!(source = %self.name, %path, %reason, "still cannot list or read");
            } else {
                tracing::warn!(
                    source = %self.name, location = %self.location, %path, %reason,
                    "cannot list or read; retried at every poll"
                );
            }
        }
        self.metrics.errors.increment(now.len() as u64);
        if complete {
            for path in self.unreadable.keys().filter(|p| !now.contains_key(*p)) {
                tracing::info!(source = %self.name, %path, "no longer unreadable");
            }
            self.unreadable = now;
        } else {
            self.unreadable.extend(now);
        }
        self.metrics.unreadable.set(self.unreadable.len() as f64);
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
        location: &ObjectPath,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<FileEnd, SourceError> {
        let key = location.to_string();
        let saved = self.lock_state().progress(&key).cloned();
        let object = match self.store.get(location).await {
            Ok(object) => object,
            Err(object_store::Error::NotFound { .. }) => return self.vanished(saved).await,
            Err(error) => {
                return Ok(FileEnd::Unreadable {
                    reason: error.to_string(),
                });
            }
        };
        let size = object.meta.size;
        let mut progress = saved.unwrap_or_else(|| Progress::start(&key, size));
        let limits = *self.ingestor.limits();
        let file_limits = file_limits(limits);
        if size > file_limits.max_body_bytes as u64 {
            let reason = format!(
                "file of {size} bytes exceeds the limit of {} bytes (ingest.max_decompressed_bytes)",
                file_limits.max_body_bytes
            );
            return self.fail(progress, reason, Bytes::new()).await;
        }
        let body = match object.bytes().await {
            Ok(body) => body,
            Err(error) => {
                return Ok(FileEnd::Unreadable {
                    reason: error.to_string(),
                });
            }
        };
        let encoding = encoding(&key);
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
        let units = units_after(events, rejected, progress.acked_line);

        match self.append_units(&mut progress, units, shutdown).await {
            Ok(FileEnd::Finished) => {}
            Ok(end) => return Ok(end),
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

    /// A file gone between the listing and the read. Never started: nothing to record (a file
    /// written later under its name is a new file). Started: the records taken stay and the
    /// rest cannot be read any more, so it is recorded as failed (it neither holds the other
    /// files back nor comes back).
    async fn vanished(&self, saved: Option<Progress>) -> Result<FileEnd, SourceError> {
        let Some(progress) = saved else {
            return Ok(FileEnd::Finished);
        };
        let acked = progress.acked_line;
        let reason = match &progress.pending {
            None => format!("removed after its records up to {acked} were taken"),
            Some(pending) => format!(
                "removed after its records up to {acked} were taken; whether records {} to {} \
                 were is unknown (their append was interrupted)",
                acked + 1,
                pending.upto_line
            ),
        };
        self.fail(progress, reason, Bytes::new()).await
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

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
