//! The consumer plug-in point: what detection and the lake implement.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;
use tw_core::{CheckedPayload, Offset, PartitionId, Record, SelectedFields, StreamName};

/// A (stream, partition) pair, the unit of offsets.
pub type StreamPartition = (StreamName, PartitionId);

/// Records of one partition, in offset order, each parsed once.
#[derive(Debug, Clone)]
pub struct EventBatch {
    /// Stream the records belong to.
    pub stream: StreamName,
    /// Partition the records belong to.
    pub partition: PartitionId,
    /// The records as stored in the log.
    pub records: Vec<Record>,
    /// `events[i]` is `records[i].payload` parsed as JSON; empty when the consumer's parse
    /// gives `fields` instead.
    pub events: Vec<Value>,
    /// `checked[i]`, where present, is tw-core's word that `records[i].payload` is one JSON
    /// value ([`Parsed::checked`]); empty when the consumer's parse gives none.
    pub checked: Vec<Option<CheckedPayload>>,
    /// `fields[i]` is `records[i]`'s values at the consumer's field paths, when its parse gives
    /// them ([`Parsed::fields`]); empty otherwise.
    pub fields: Vec<SelectedFields>,
}

/// One record as a consumer parsed it ([`Consumer::parse`]).
#[derive(Debug)]
pub struct Parsed {
    /// The event, maybe with only the fields the consumer reads (`Null` when it took `fields`
    /// instead).
    pub event: Value,
    /// tw-core's word that the payload is one JSON value, when the consumer parsed with
    /// tw-core's parser (`FieldSelection::parse_checked`): a consumer that keeps events whole
    /// then keeps their text without reading it again (`SharedEvent::from_checked`).
    pub checked: Option<CheckedPayload>,
    /// The values at the consumer's field paths, for a consumer that reads a few fields by
    /// slot (`FieldSelection::parse_fields`: detection) rather than from a tree.
    pub fields: Option<SelectedFields>,
}

impl Parsed {
    /// Whether the record is a JSON object, as every event must be.
    pub fn is_object(&self) -> bool {
        match &self.fields {
            Some(fields) => fields.is_object(),
            None => self.event.is_object(),
        }
    }
}

impl From<Value> for Parsed {
    fn from(event: Value) -> Self {
        Self {
            event,
            checked: None,
            fields: None,
        }
    }
}

/// A record a consumer found unusable while handling it ([`Consumer::take_unusable`]): the
/// runner sends it to the dead-letter queue with the reason.
#[derive(Debug, Clone)]
pub struct UnusableRecord {
    /// Stream of the record.
    pub stream: StreamName,
    /// Partition of the record.
    pub partition: PartitionId,
    /// Offset of the record.
    pub offset: Offset,
    /// The record's payload as stored.
    pub payload: Bytes,
    /// Why the consumer could not use it.
    pub reason: String,
}

/// An error of a consumer stage; the runner logs it, backs off and retries the same batch.
#[derive(Debug, thiserror::Error)]
#[error("{consumer}: {message}")]
pub struct ConsumerError {
    /// Name of the consumer.
    pub consumer: String,
    /// What failed.
    pub message: String,
}

/// A stage that reads the log. Runs on a blocking thread owned by the runner: it may do
/// blocking I/O but must not assume a tokio context.
pub trait Consumer: Send + 'static {
    /// Stable name: offsets are stored under it.
    fn name(&self) -> &str;

    /// Parses one stored record. The default builds the whole JSON tree; a stage that reads
    /// only some fields (detection) parses just those (`tw_core::FieldSelection`).
    fn parse(&self, payload: &Bytes) -> serde_json::Result<Parsed> {
        serde_json::from_slice::<Value>(payload).map(Parsed::from)
    }

    /// Called once before the first batch with the committed offsets (the next offset to read
    /// per partition; partitions not in the map start at the log's first offset). A consumer
    /// that writes output (the lake) removes here anything it wrote past these offsets.
    fn start(&mut self, committed: &BTreeMap<StreamPartition, Offset>)
    -> Result<(), ConsumerError>;

    /// Handles one batch. Returning an error makes the runner retry the same batch later.
    fn handle(&mut self, batch: &EventBatch) -> Result<(), ConsumerError>;

    /// Takes the records found unusable by the `handle` calls since the last take. For a
    /// consumer that reads the JSON inside `handle` rather than in `parse` (the lake: one pass
    /// over each payload instead of two); the runner sends them to the dead-letter queue after
    /// each handled batch. Kept by the consumer until taken, so that a `handle` that failed
    /// after finding some loses none. The default finds none.
    fn take_unusable(&mut self) -> Vec<UnusableRecord> {
        Vec::new()
    }

    /// Called regularly (about every 200 ms, and when idle): time-based work such as flushing
    /// by age.
    fn tick(&mut self, now_ms: i64) -> Result<(), ConsumerError>;

    /// Whether the runner should restart this consumer after a failed `handle` or `tick`
    /// (`start` again from its committed and safe offsets, as a process restart would) rather
    /// than retry the same batch on it. For consumers whose state may be unusable after an
    /// error (a tantivy writer is dead after an I/O error); the default retries in place.
    fn restart_after_failure(&self) -> bool {
        false
    }

    /// Forgets a deleted stream: whatever the consumer holds or wrote for it (buffered rows,
    /// indexes, state, its offsets in `safe_offsets`) goes, so that a stream created later
    /// under the same name starts from nothing. The runner
    /// calls it after the log deleted the stream (or replaced it by a new one), between
    /// batches; an error makes it try again later. The default holds nothing per stream.
    fn forget_stream(&mut self, stream: &StreamName) -> Result<(), ConsumerError> {
        let _ = stream;
        Ok(())
    }

    /// The offsets (next offset to read) whose effects are durable, so they may be committed.
    /// A consumer that buffers (the lake) reports the end of what it has flushed.
    fn safe_offsets(&self) -> BTreeMap<StreamPartition, Offset>;

    /// Makes everything handled so far durable (graceful shutdown): after this,
    /// `safe_offsets` covers every handled record.
    fn flush(&mut self) -> Result<(), ConsumerError>;
}
