//! [`SearchIndexer`]: the `tw_pipeline::Consumer` that adds every event to the hour index of
//! its stream and event time, and commits about every second.
//!
//! It is a consumer of its own (offsets under `search`) rather than a part of the lake
//! writer: the lake flushes by size and age (10 s by default) while search must cover events
//! within about a second, and a slow or failing index must not hold back the lake's offsets
//! (nor the reverse). Both read the same log with the same parse-once runner.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tantivy::indexer::{IndexWriterOptions, LogMergePolicy};
use tantivy::{Index, IndexWriter};
use tw_core::{Offset, PartitionId, StreamName, now_ms};
use tw_pipeline::{Consumer, ConsumerError, EventBatch, Parsed, StreamPartition};

use crate::on_demand::OnDemandDirectory;
use crate::{HourIndex, SearchError, SearchIndexes, hour_of};

mod delete;
mod document;

pub(crate) use delete::PendingDeletion;
pub use delete::{DeletionTicket, SearchDeletion};
use document::document;
pub(crate) use document::{Selection, ip_key, parse_ip};

/// Name under which the indexer's offsets are stored.
pub(crate) const CONSUMER_NAME: &str = "search";

/// Which fields of a stream's events are indexed (dotted paths, each with everything below
/// it); `None` indexes every field. Asked once per batch, so a configuration change applies
/// to the events indexed after it.
pub type FieldsOf = Arc<dyn Fn(&StreamName) -> Option<Vec<String>> + Send + Sync>;

/// How long each stream keeps its hour indexes, in milliseconds after the hour ends (`None`:
/// forever). Asked at every retention pass, so a changed setting applies at the next one.
pub type RetentionOf = Arc<dyn Fn(&StreamName) -> Option<u64> + Send + Sync>;

/// Time between two retention passes of the indexer.
const RETENTION_PASS_MS: i64 = 10_000;

/// An hour index being written.
struct OpenWriter {
    hour: Arc<HourIndex>,
    writer: IndexWriter,
    /// Per partition, the next offset below which every record of this hour is committed
    /// (the payload of the last commit, raised at each commit).
    watermarks: BTreeMap<PartitionId, Offset>,
    dirty: bool,
    last_used: u64,
}

/// Indexes handled events; see the crate documentation for the exactly-once argument.
pub struct SearchIndexer {
    indexes: SearchIndexes,
    writers: HashMap<(StreamName, i64), OpenWriter>,
    /// Next offset to index per partition (every record below it was added or skipped).
    handled: BTreeMap<StreamPartition, Offset>,
    /// `handled` as of the last commit round that committed every written index.
    durable: BTreeMap<StreamPartition, Offset>,
    pending_docs: usize,
    last_commit_ms: i64,
    uses: u64,
    fields_of: Option<FieldsOf>,
    retention_of: Option<RetentionOf>,
    last_retention_ms: i64,
    /// Rows named by a deletion before the indexer reached them (see `delete`).
    skipped: delete::Skipped,
}

impl std::fmt::Debug for SearchIndexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndexer")
            .field("open_writers", &self.writers.len())
            .field("pending_docs", &self.pending_docs)
            .finish_non_exhaustive()
    }
}

impl SearchIndexer {
    pub(crate) fn new(indexes: SearchIndexes) -> Self {
        SearchIndexer {
            indexes,
            writers: HashMap::new(),
            handled: BTreeMap::new(),
            durable: BTreeMap::new(),
            pending_docs: 0,
            last_commit_ms: now_ms(),
            uses: 0,
            fields_of: None,
            retention_of: None,
            last_retention_ms: i64::MIN,
            skipped: Default::default(),
        }
    }

    /// Indexes only the fields `fields_of` names for each stream (every field by default).
    pub fn with_fields(mut self, fields_of: FieldsOf) -> Self {
        self.fields_of = Some(fields_of);
        self
    }

    /// Deletes each stream's hour indexes once they are older than `retention_of` says
    /// (checked every 10 s; none by default).
    pub fn with_retention(mut self, retention_of: RetentionOf) -> Self {
        self.retention_of = Some(retention_of);
        self
    }

    /// Deletes the hour indexes of every stream whose hour ended at least the stream's
    /// retention before `now_ms` (the server passes the lake's retention, so search keeps
    /// the hours SQL keeps). The writer of such an hour is closed first, with what it had not
    /// committed: those events are past the retention too. Returns how many hour indexes
    /// were deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, SearchError> {
        let Some(retention_of) = self.retention_of.clone() else {
            return Ok(0);
        };
        let mut deleted = 0;
        for stream in self.indexes.streams()? {
            let Some(retention_ms) = retention_of(&stream) else {
                continue;
            };
            let cutoff = now_ms.saturating_sub_unsigned(retention_ms);
            let expired = |hour: i64| hour.saturating_add(crate::HOUR_MS) <= cutoff;
            let closing: Vec<_> = (self.writers.keys())
                .filter(|(s, hour)| *s == stream && expired(*hour))
                .cloned()
                .collect();
            for key in closing {
                if let Some(open) = self.writers.remove(&key) {
                    // Its merges write into the directory about to be removed: let them end.
                    open.writer
                        .wait_merging_threads()
                        .map_err(SearchError::index(&open.hour.path))?;
                }
            }
            deleted += self.indexes.remove_hours(&stream, expired)?;
        }
        if deleted > 0 {
            metrics::counter!("tidewatch_search_retention_hours_deleted_total")
                .increment(deleted as u64);
            tracing::info!(deleted, "search retention: hour indexes deleted");
        }
        Ok(deleted)
    }

    /// Resumes at the committed offsets and removes half-created indexes.
    pub fn start_at(
        &mut self,
        committed: &BTreeMap<StreamPartition, Offset>,
    ) -> Result<(), SearchError> {
        let root = self.indexes.config().root.clone();
        let entries = std::fs::read_dir(&root).map_err(SearchError::io(&root))?;
        for stream_dir in entries.flatten() {
            let Ok(inner) = std::fs::read_dir(stream_dir.path()) else {
                continue;
            };
            for entry in inner.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    std::fs::remove_dir_all(entry.path()).map_err(SearchError::io(entry.path()))?;
                }
            }
        }
        self.writers.clear();
        self.handled = committed.clone();
        self.durable = committed.clone();
        self.pending_docs = 0;
        Ok(())
    }

    /// Adds the batch's events to their hour indexes; commits early past `commit_max_docs`.
    pub fn write(&mut self, batch: &EventBatch) -> Result<(), SearchError> {
        let key = (batch.stream.clone(), batch.partition);
        let fields = self.indexes.fields();
        let selected = self
            .fields_of
            .as_ref()
            .and_then(|fields_of| fields_of(&batch.stream))
            .map(|paths| Selection::new(&paths));
        for (record, event) in batch.records.iter().zip(&batch.events) {
            let next = self.handled.get(&key).copied().unwrap_or(0);
            if record.offset < next {
                continue; // a retried batch: already added
            }
            if self.is_skipped(&key, record.offset) {
                self.handled.insert(key.clone(), record.offset + 1);
                continue; // deleted before it was indexed
            }
            let hour = hour_of(record.event_time_ms);
            let open = self.writer(&batch.stream, hour)?;
            if record.offset >= open.watermarks.get(&batch.partition).copied().unwrap_or(0) {
                let doc = document(fields, batch.partition, record, event, selected.as_ref());
                open.writer
                    .add_document(doc)
                    .map_err(SearchError::index(&open.hour.path))?;
                open.dirty = true;
                self.pending_docs += 1;
            }
            // Per record, so a batch retried after an error half-way adds nothing twice.
            self.handled.insert(key.clone(), record.offset + 1);
        }
        if self.pending_docs >= self.indexes.config().commit_max_docs {
            self.commit_all()?;
        }
        Ok(())
    }

    /// Commits when the commit interval has passed since the last commit round; with
    /// nothing to commit, shows searches the merges finished since (see
    /// [`SearchIndexer::reload_after_merges`]).
    pub fn commit_if_due(&mut self, now_ms: i64) -> Result<(), SearchError> {
        let interval = i64::try_from(self.indexes.config().commit_interval_ms).unwrap_or(i64::MAX);
        if now_ms.saturating_sub(self.last_commit_ms) < interval {
            return Ok(());
        }
        if self.handled != self.durable {
            self.commit_all()
        } else {
            self.last_commit_ms = now_ms;
            self.reload_after_merges()
        }
    }

    /// Reloads the reader of every open hour index whose segments changed since its last
    /// reload. A merge that ends after an hour's last commit replaces segments that the
    /// hour's reader would otherwise hold open, files and all, until the hour is written to
    /// again, which for a past hour may be never.
    pub fn reload_after_merges(&mut self) -> Result<(), SearchError> {
        for open in self.writers.values() {
            let hour = &open.hour;
            let mut live = hour
                .index
                .searchable_segment_ids()
                .map_err(SearchError::index(&hour.path))?;
            let mut read: Vec<_> = (hour.reader.searcher().segment_readers().iter())
                .map(|segment| segment.segment_id())
                .collect();
            live.sort_unstable();
            read.sort_unstable();
            if live != read {
                hour.reader
                    .reload()
                    .map_err(SearchError::index(&hour.path))?;
            }
        }
        Ok(())
    }

    /// Commits every index written to since its last commit, then marks everything handled
    /// as durable.
    pub fn commit_all(&mut self) -> Result<(), SearchError> {
        let started = std::time::Instant::now();
        let mut committed = 0usize;
        for ((stream, _), open) in self.writers.iter_mut() {
            if open.dirty {
                commit(open, stream, &self.handled)?;
                committed += 1;
            }
        }
        self.durable = self.handled.clone();
        self.prune_skipped();
        if self.pending_docs > 0 {
            metrics::counter!("tidewatch_search_indexed_total").increment(self.pending_docs as u64);
            metrics::histogram!("tidewatch_search_commit_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        tracing::trace!(committed, docs = self.pending_docs, "search commit");
        self.pending_docs = 0;
        self.last_commit_ms = now_ms();
        Ok(())
    }

    /// The writer of an hour index, opening it (and closing the least recently used one
    /// beyond the limit) when needed.
    fn writer(&mut self, stream: &StreamName, hour: i64) -> Result<&mut OpenWriter, SearchError> {
        self.uses += 1;
        let key = (stream.clone(), hour);
        if !self.writers.contains_key(&key) {
            while self.writers.len() >= self.indexes.config().max_open_writers.max(1) {
                let Some(oldest) = self
                    .writers
                    .iter()
                    .min_by_key(|(_, open)| open.last_used)
                    .map(|(key, _)| key.clone())
                else {
                    break;
                };
                if let Some(mut open) = self.writers.remove(&oldest)
                    && open.dirty
                {
                    commit(&mut open, &oldest.0, &self.handled)?;
                }
            }
            let Some(hour_index) = self.indexes.hour(stream, hour, true)? else {
                unreachable!("hour() with create=true returns an index");
            };
            let path = hour_index.path.clone();
            let meta = hour_index
                .index
                .load_metas()
                .map_err(SearchError::index(&path))?;
            let watermarks = match meta.payload.as_deref() {
                Some(payload) => {
                    serde_json::from_str(payload).map_err(|_| SearchError::Corrupt {
                        path: path.clone(),
                        field: "a valid offsets payload",
                    })?
                }
                None => BTreeMap::new(),
            };
            let config = self.indexes.config();
            let options = IndexWriterOptions::builder()
                .memory_budget_per_thread(config.writer_memory_bytes)
                .num_worker_threads(1)
                .num_merge_threads(1)
                .build();
            // Its own `Index` on the same directory: merges read through `OnDemandDirectory`,
            // searches through the reader's memory maps (see `on_demand`).
            let directory = OnDemandDirectory::open(&path).map_err(SearchError::index(&path))?;
            let writer = Index::open(directory)
                .and_then(|index| index.writer_with_options(options))
                .map_err(SearchError::index(&path))?;
            writer.set_merge_policy(Box::new(merge_policy()));
            self.writers.insert(
                key.clone(),
                OpenWriter {
                    hour: hour_index,
                    writer,
                    watermarks,
                    dirty: false,
                    last_used: 0,
                },
            );
        }
        let open = self.writers.get_mut(&key).expect("inserted above");
        open.last_used = self.uses;
        Ok(open)
    }
}

/// Merges of an hour index: tantivy's log-size policy, but a level is merged once it holds 16
/// segments instead of 8. Commits come about every second under load, so an hour index grows
/// by many small segments, and merging them again and again cost more CPU than indexing:
/// 1,000,000 events committed every 10,000 took 148 CPU-seconds with the default policy and
/// 119 with this one (`examples/index_bench.rs`, BENCHMARKS.md); a search reads at most about
/// twice as many segments.
fn merge_policy() -> LogMergePolicy {
    let mut policy = LogMergePolicy::default();
    policy.set_min_num_segments(16);
    policy
}

/// Commits one hour index with the stream's handled offsets as its watermarks, then makes the
/// commit visible to searches.
fn commit(
    open: &mut OpenWriter,
    stream: &StreamName,
    handled: &BTreeMap<StreamPartition, Offset>,
) -> Result<(), SearchError> {
    for ((s, partition), offset) in handled {
        if s == stream {
            let mark = open.watermarks.entry(*partition).or_insert(0);
            *mark = (*mark).max(*offset);
        }
    }
    let payload = serde_json::to_string(&open.watermarks).expect("a map of numbers serialises");
    let path = open.hour.path.clone();
    let mut prepared = open
        .writer
        .prepare_commit()
        .map_err(SearchError::index(&path))?;
    prepared.set_payload(&payload);
    prepared.commit().map_err(SearchError::index(&path))?;
    open.hour
        .reader
        .reload()
        .map_err(SearchError::index(&path))?;
    open.dirty = false;
    Ok(())
}

fn consumer_error(error: SearchError) -> ConsumerError {
    ConsumerError {
        consumer: CONSUMER_NAME.to_string(),
        message: error.to_string(),
    }
}

impl Consumer for SearchIndexer {
    fn name(&self) -> &str {
        CONSUMER_NAME
    }

    /// A record that is not a JSON object (raw text written by another tool) is still
    /// searchable: it becomes an empty event, which `document` indexes by its raw text,
    /// instead of a dead letter.
    fn parse(&self, payload: &Bytes) -> serde_json::Result<Parsed> {
        let event = match serde_json::from_slice(payload) {
            Ok(value @ Value::Object(_)) => value,
            _ => Value::Object(Default::default()),
        };
        Ok(event.into())
    }

    fn start(
        &mut self,
        committed: &BTreeMap<StreamPartition, Offset>,
    ) -> Result<(), ConsumerError> {
        self.start_at(committed).map_err(consumer_error)
    }

    fn handle(&mut self, batch: &EventBatch) -> Result<(), ConsumerError> {
        self.write(batch).map_err(consumer_error)
    }

    /// Commits when due, and applies the retention every 10 s. A failed retention pass is
    /// logged and tried again at the next one: it must not stop indexing.
    fn tick(&mut self, now_ms: i64) -> Result<(), ConsumerError> {
        if now_ms.saturating_sub(self.last_retention_ms) >= RETENTION_PASS_MS {
            self.last_retention_ms = now_ms;
            if let Err(error) = self.apply_retention(now_ms) {
                tracing::warn!(%error, "search retention failed");
            }
        }
        self.apply_deletions().map_err(consumer_error)?;
        self.commit_if_due(now_ms).map_err(consumer_error)
    }

    /// A tantivy writer is unusable after an I/O error (disk full kills it): start afresh from
    /// the committed indexes instead of retrying on it.
    fn restart_after_failure(&self) -> bool {
        true
    }

    fn forget_stream(&mut self, stream: &StreamName) -> Result<(), ConsumerError> {
        // The writers go first (uncommitted documents of the stream are dropped with them),
        // then the indexes on disk.
        self.writers.retain(|(s, _), _| s != stream);
        self.handled.retain(|(s, _), _| s != stream);
        self.durable.retain(|(s, _), _| s != stream);
        self.skipped.retain(|(s, _), _| s != stream);
        self.indexes.remove_stream(stream).map_err(consumer_error)
    }

    fn safe_offsets(&self) -> BTreeMap<StreamPartition, Offset> {
        self.durable.clone()
    }

    fn flush(&mut self) -> Result<(), ConsumerError> {
        self.commit_all().map_err(consumer_error)
    }
}
