//! [`SearchIndexer`]: the `tw_pipeline::Consumer` that adds every event to the hour index of
//! its stream and event time, and commits about every second.
//!
//! It is a consumer of its own (offsets under `search`) rather than a part of the lake
//! writer: the lake flushes by size and age (10 s by default) while search must cover events
//! within about a second, and a slow or failing index must not hold back the lake's offsets
//! (nor the reverse). Both read the same log with the same parse-once runner.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;
use tantivy::indexer::IndexWriterOptions;
use tantivy::schema::OwnedValue;
use tantivy::{IndexWriter, TantivyDocument};
use tw_core::{Offset, PartitionId, Record, StreamName, now_ms};
use tw_pipeline::{Consumer, ConsumerError, EventBatch, StreamPartition};

use crate::{Fields, HourIndex, SearchError, SearchIndexes, hour_of};

/// Name under which the indexer's offsets are stored.
const CONSUMER_NAME: &str = "search";

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
        }
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
        for (record, event) in batch.records.iter().zip(&batch.events) {
            let next = self.handled.get(&key).copied().unwrap_or(0);
            if record.offset < next {
                continue; // a retried batch: already added
            }
            let hour = hour_of(record.event_time_ms);
            let open = self.writer(&batch.stream, hour)?;
            if record.offset >= open.watermarks.get(&batch.partition).copied().unwrap_or(0) {
                let doc = document(fields, batch.partition, record, event);
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

    /// Commits when the commit interval has passed since the last commit round.
    pub fn commit_if_due(&mut self, now_ms: i64) -> Result<(), SearchError> {
        let interval = i64::try_from(self.indexes.config().commit_interval_ms).unwrap_or(i64::MAX);
        let moved = self.handled != self.durable;
        if moved && now_ms.saturating_sub(self.last_commit_ms) >= interval {
            self.commit_all()?;
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
                if let Some(mut open) = self.writers.remove(&oldest) {
                    if open.dirty {
                        commit(&mut open, &oldest.0, &self.handled)?;
                    }
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
            let writer = hour_index
                .index
                .writer_with_options(options)
                .map_err(SearchError::index(&path))?;
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

/// The document of one event.
fn document(
    fields: Fields,
    partition: PartitionId,
    record: &Record,
    event: &Value,
) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_i64(fields.time, record.event_time_ms);
    doc.add_u64(fields.partition, u64::from(partition));
    doc.add_u64(fields.offset, record.offset);
    doc.add_text(fields.raw, String::from_utf8_lossy(&record.payload));
    let mut strings = Vec::new();
    collect_strings(event, &mut strings);
    for text in strings {
        doc.add_text(fields.all, text);
    }
    doc.add_field_value(fields.event, &OwnedValue::from(event.clone()));
    doc
}

/// Every string value of an event, depth first.
fn collect_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(text) => out.push(text),
        Value::Array(items) => items.iter().for_each(|item| collect_strings(item, out)),
        Value::Object(map) => map.values().for_each(|item| collect_strings(item, out)),
        _ => {}
    }
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

    fn start(
        &mut self,
        committed: &BTreeMap<StreamPartition, Offset>,
    ) -> Result<(), ConsumerError> {
        self.start_at(committed).map_err(consumer_error)
    }

    fn handle(&mut self, batch: &EventBatch) -> Result<(), ConsumerError> {
        self.write(batch).map_err(consumer_error)
    }

    fn tick(&mut self, now_ms: i64) -> Result<(), ConsumerError> {
        self.commit_if_due(now_ms).map_err(consumer_error)
    }

    /// A tantivy writer is unusable after an I/O error (disk full kills it): start afresh from
    /// the committed indexes instead of retrying on it.
    fn restart_after_failure(&self) -> bool {
        true
    }

    fn safe_offsets(&self) -> BTreeMap<StreamPartition, Offset> {
        self.durable.clone()
    }

    fn flush(&mut self) -> Result<(), ConsumerError> {
        self.commit_all().map_err(consumer_error)
    }
}
