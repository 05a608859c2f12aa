//! [`LakeWriter`]: the `tw_pipeline::Consumer` that buffers events as Arrow batches and flushes
//! them to Parquet by size and age.

use std::collections::{BTreeMap, HashMap};

use arrow::array::RecordBatch;
use bytes::Bytes;
use tw_core::{Offset, PartitionId, Record, StreamName, now_ms};
use tw_pipeline::{Consumer, ConsumerError, EventBatch, Parsed, StreamPartition, UnusableRecord};

use crate::catalog::Catalog;
use crate::convert::align;
use crate::dictionary::DictionaryChoice;
use crate::flatten::starts_as_object;
use crate::import::is_import_partition;
use crate::supersede::remove_superseded;
use crate::{Lake, LakeError, PartitionBuffer, StreamState, files};

/// Name under which the lake's offsets are stored.
const CONSUMER_NAME: &str = "lake";

/// Writes handled events into the lake. Runs on a blocking thread; needs no async runtime.
#[derive(Debug)]
pub struct LakeWriter {
    pub(crate) lake: Lake,
    /// Offsets given to `start`, for partitions whose stream appears only later.
    pub(crate) committed: BTreeMap<StreamPartition, Offset>,
    /// Files of failed flushes not yet deleted (paths relative to the lake root).
    orphans: Vec<String>,
    /// Records found not to be JSON while converting, until the runner takes them.
    unusable: Vec<UnusableRecord>,
    /// Per stream, which columns its flush files write with a dictionary (learned from its
    /// earlier flushes; starts over after a restart).
    dictionaries: HashMap<StreamName, DictionaryChoice>,
}

impl LakeWriter {
    pub(crate) fn new(lake: Lake) -> Self {
        LakeWriter {
            lake,
            committed: BTreeMap::new(),
            orphans: Vec::new(),
            unusable: Vec::new(),
            dictionaries: HashMap::new(),
        }
    }

    /// Removes what was written past `committed` (files of flushes whose offsets were never
    /// committed, stray tmp files) and resets the hot buffers to start there. A partition with
    /// files but no committed offset starts at 0: all its files are uncommitted.
    pub fn start_at(
        &mut self,
        committed: &BTreeMap<StreamPartition, Offset>,
    ) -> Result<(), LakeError> {
        let lake = self.lake.clone();
        let _maintenance = lake.maintenance();
        let storage = self.lake.storage().clone();
        storage.remove_incomplete()?;
        let mut starts: BTreeMap<StreamPartition, Offset> = committed.clone();
        // One listing of the whole lake: on S3, listing is the slow part of a start.
        for (stream, files) in files::list_all(&storage)? {
            // No query runs yet, so files a compaction superseded can go without a grace
            // period; the cuts below then only ever see live files.
            for file in remove_superseded(&storage, files)? {
                if is_import_partition(file.partition) {
                    // Imported files hold no log offsets: nothing to replay, nothing to cut.
                    continue;
                }
                let keep_below = *starts.entry((stream.clone(), file.partition)).or_insert(0);
                if file.first >= keep_below {
                    tracing::info!(%stream, path = %storage.describe(&file.path), "removing lake file past the committed offset");
                    storage.delete(&file.path)?;
                } else if file.last >= keep_below {
                    tracing::warn!(%stream, path = %storage.describe(&file.path), keep_below, "cutting lake file straddling the committed offset");
                    let bloom = self.lake.stream_settings(&stream).bloom_filter_columns;
                    files::truncate(&storage, &file, keep_below, stream.as_str(), &bloom)?;
                }
            }
        }

        let mut state = self.lake.lock();
        for stream_state in state.streams.values_mut() {
            stream_state.partitions.clear();
        }
        for ((stream, partition), offset) in &starts {
            if let Some(stream_state) = state.streams.get_mut(stream) {
                stream_state
                    .partitions
                    .insert(*partition, PartitionBuffer::starting_at(*offset));
            }
        }
        self.committed = starts;
        Ok(())
    }

    /// Converts and buffers one batch, then flushes its partition if it is over a size limit.
    /// Records below the partition's next expected offset are skipped, so a retry after an
    /// error never buffers a row twice.
    pub fn write(&mut self, batch: &EventBatch) -> Result<(), LakeError> {
        let (stream, partition) = (&batch.stream, batch.partition);
        if batch.records.len() != batch.events.len() {
            return Err(LakeError::BatchShape {
                stream: stream.to_string(),
                partition,
                records: batch.records.len(),
                events: batch.events.len(),
            });
        }
        let start = self
            .committed
            .get(&(stream.clone(), partition))
            .copied()
            .unwrap_or(0);
        let next_offset = {
            let mut state = self.lake.lock();
            let stream_state = state.streams.entry(stream.clone()).or_insert_with(|| {
                let mut fresh = StreamState::new(Catalog::new(stream.clone()));
                fresh.persisted_revision = u64::MAX;
                fresh
            });
            stream_state
                .partitions
                .entry(partition)
                .or_insert_with(|| PartitionBuffer::starting_at(start))
                .next_offset
        };
        let records: Vec<&Record> = batch
            .records
            .iter()
            .filter(|record| record.offset >= next_offset)
            .collect();
        let now = now_ms();
        // The schema is published (inside) before the batch joins the hot buffer: a snapshot
        // in between aligns older batches to it, never a batch to an older schema.
        let converted = self
            .lake
            .convert_records(stream, partition, &records, now)?;
        // Taken before anything can fail: these records are past `next_offset` once the
        // batch is buffered below, so a retry would not find them again.
        self.unusable
            .extend(converted.unreadable.iter().map(|(index, message)| {
                let record = records[*index];
                UnusableRecord {
                    stream: stream.clone(),
                    partition,
                    offset: record.offset,
                    payload: record.payload.clone(),
                    reason: format!("stored record is not valid JSON: {message}"),
                }
            }));

        let mut state = self.lake.lock();
        let stream_state = state
            .streams
            .entry(stream.clone())
            .or_insert_with(|| StreamState::new(Catalog::new(stream.clone())));
        let buffer = stream_state
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionBuffer::starting_at(start));
        if let (Some(first), Some(last)) = (records.first(), records.last()) {
            buffer.rows += converted.batch.num_rows();
            buffer.bytes += values_size(&converted.batch);
            buffer.first_offset.get_or_insert(first.offset);
            buffer.last_offset = Some(last.offset);
            buffer.oldest_buffered_ms.get_or_insert(now);
            buffer.next_offset = last.offset + 1;
            buffer.batches.push(converted.batch);
        }
        // Checked even when every record was skipped: a retry after a failed flush flushes.
        let full = !buffer.batches.is_empty()
            && (buffer.rows >= self.lake.config().flush_max_rows
                || buffer.bytes >= self.lake.config().flush_max_bytes);
        drop(state);

        if full {
            self.flush_partition(stream, partition)?;
        }
        Ok(())
    }

    /// Flushes every partition whose oldest buffered row was buffered at least
    /// `flush_max_age_ms` before `now_ms`.
    pub fn flush_older_than_age(&mut self, now_ms: i64) -> Result<(), LakeError> {
        let max_age = i64::try_from(self.lake.config().flush_max_age_ms).unwrap_or(i64::MAX);
        let due = self.partitions_where(|buffer| {
            buffer
                .oldest_buffered_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= max_age)
        });
        for (stream, partition) in due {
            self.flush_partition(&stream, partition)?;
        }
        Ok(())
    }

    /// Flushes every partition holding rows.
    pub fn flush_all(&mut self) -> Result<(), LakeError> {
        for (stream, partition) in self.partitions_where(|buffer| !buffer.batches.is_empty()) {
            self.flush_partition(&stream, partition)?;
        }
        Ok(())
    }

    fn partitions_where(&self, due: impl Fn(&PartitionBuffer) -> bool) -> Vec<StreamPartition> {
        let state = self.lake.lock();
        state
            .streams
            .iter()
            .flat_map(|(stream, s)| {
                s.partitions
                    .iter()
                    .filter(|(_, b)| due(b))
                    .map(|(p, _)| (stream.clone(), *p))
            })
            .collect()
    }

    /// Writes the buffered rows of one partition, then (and only then) drops them from the
    /// hot buffer and advances `hot_start`, under the lock snapshots take.
    fn flush_partition(
        &mut self,
        stream: &StreamName,
        partition: PartitionId,
    ) -> Result<(), LakeError> {
        let taken: Option<(
            arrow::datatypes::SchemaRef,
            Vec<RecordBatch>,
            Offset,
            Offset,
        )> = {
            let state = self.lake.lock();
            state.streams.get(stream).and_then(|s| {
                let buffer = s.partitions.get(&partition)?;
                Some((
                    s.schema.clone(),
                    buffer.batches.clone(),
                    buffer.first_offset?,
                    buffer.last_offset?,
                ))
            })
        };
        let Some((schema, batches, first, last)) = taken else {
            return Ok(());
        };
        let aligned = batches
            .iter()
            .map(|batch| align(batch, &schema, stream.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        self.remove_orphans()?;
        let bloom = self.lake.stream_settings(stream).bloom_filter_columns;
        let mut paths = Vec::new();
        let written = files::write_flush(
            self.lake.storage(),
            stream.as_str(),
            partition,
            (first, last),
            &schema,
            &aligned,
            &bloom,
            self.dictionaries.entry(stream.clone()).or_default(),
            &mut paths,
        );
        let written = match written {
            Ok(written) => written,
            Err(error) => {
                // Files of a failed flush are invisible to queries (their offsets are not below
                // hot_start yet) but would duplicate rows once a later flush with another
                // offset range advances hot_start: they must go before any flush succeeds.
                self.orphans.extend(paths);
                self.remove_orphans()?;
                return Err(error);
            }
        };
        {
            let mut state = self.lake.lock();
            if let Some(buffer) = state
                .streams
                .get_mut(stream)
                .and_then(|s| s.partitions.get_mut(&partition))
            {
                let next_offset = buffer.next_offset;
                *buffer = PartitionBuffer::starting_at(last + 1);
                buffer.next_offset = next_offset;
            }
        }
        tracing::debug!(%stream, partition, first, last, files = paths.len(), "lake flush");
        let label = stream.to_string();
        metrics::counter!("tidewatch_lake_flushes_total", "stream" => label.clone()).increment(1);
        metrics::counter!("tidewatch_lake_rows_written_total", "stream" => label.clone())
            .increment(written.rows as u64);
        metrics::counter!("tidewatch_lake_bytes_written_total", "stream" => label)
            .increment(written.bytes);
        Ok(())
    }
}

impl LakeWriter {
    /// Deletes the files of failed flushes; an error stops the flush that needed the clean-up.
    fn remove_orphans(&mut self) -> Result<(), LakeError> {
        while let Some(path) = self.orphans.last() {
            self.lake.storage().delete(path)?;
            self.orphans.pop();
        }
        Ok(())
    }
}

fn consumer_error(error: LakeError) -> ConsumerError {
    ConsumerError {
        consumer: CONSUMER_NAME.to_string(),
        message: error.to_string(),
    }
}

impl Consumer for LakeWriter {
    fn name(&self) -> &str {
        CONSUMER_NAME
    }

    /// Only checks that the payload starts as a JSON object: the writer reads the JSON once,
    /// flattening it straight from the bytes (see `flatten`), and reports a payload that
    /// turns out invalid there ([`Consumer::take_unusable`]).
    fn parse(&self, payload: &Bytes) -> serde_json::Result<Parsed> {
        if starts_as_object(payload) {
            Ok(serde_json::Value::Object(serde_json::Map::new()).into())
        } else {
            // Reproduce the parser's own message for the dead letter.
            serde_json::from_slice::<serde_json::Value>(payload).map(Parsed::from)
        }
    }

    fn take_unusable(&mut self) -> Vec<UnusableRecord> {
        std::mem::take(&mut self.unusable)
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
        self.flush_older_than_age(now_ms).map_err(consumer_error)
    }

    fn forget_stream(&mut self, stream: &StreamName) -> Result<(), ConsumerError> {
        LakeWriter::forget_stream(self, stream)
            .map(|_| ())
            .map_err(consumer_error)
    }

    fn safe_offsets(&self) -> BTreeMap<StreamPartition, Offset> {
        let state = self.lake.lock();
        let mut offsets = self.committed.clone();
        for (stream, stream_state) in &state.streams {
            for (partition, buffer) in &stream_state.partitions {
                offsets.insert((stream.clone(), *partition), buffer.hot_start);
            }
        }
        offsets
    }

    fn flush(&mut self) -> Result<(), ConsumerError> {
        self.flush_all().map_err(consumer_error)
    }
}

/// The bytes of `batch`'s values, offsets and null masks, without the room its buffers have
/// left: builders are sized ahead from a batch's first values (see `builder`), and room never
/// written to takes address space, not memory. What bounds the hot buffer (`flush_max_bytes`)
/// is the data.
fn values_size(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| {
            column
                .to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| column.get_array_memory_size())
        })
        .sum()
}
