//! The pipeline: everything between a request body and the log, and between the log and the
//! consumers.
//!
//! Ingest side: decode the body (NDJSON, JSON array, CloudTrail `{"Records": [...]}`,
//! optionally gzip with a bound on the decompressed size), parse each record once, validate it
//! against the stream's schema, extract the partition key and the event time, and split the
//! batch by partition for the log. Every record that fails is reported to the caller and kept
//! in the dead-letter queue with its original bytes and the reason. A request may carry an
//! idempotency key ([`Ingestor::ingest_keyed`]): it is then stored once however often it is
//! sent, its repeats get its answer, and a repeat of one that failed part-way stores only what
//! was not stored. The keys, like the compatible APIs' request ids and `_id`s, are remembered
//! in [`dedup`]'s [`DedupStore`].
//!
//! Consumer side: [`Consumer`] is the one plug-in point for stages that read the log (detection,
//! the lake). The runner reads each partition from the consumer's committed offset, parses
//! each record once into an [`EventBatch`], hands it over, and commits only the offsets the
//! consumer reports safe, and never past a record whose dead letter is not stored yet. A
//! consumer that keeps failing shows it in its [`ConsumerProgress`] (readiness) and metrics.

mod consumer;
mod decode;
pub mod dedup;
mod delete;
mod dlq;
mod error;
mod health;
mod ingest;
mod keyed;
mod letters;
mod progress;
mod registry;
mod runner;
mod split;
mod validate;

pub use consumer::{Consumer, ConsumerError, EventBatch, Parsed, StreamPartition, UnusableRecord};
pub use decode::{
    ContentEncoding, IngestLimits, ParsedEvent, Rejection, decode_body, split_events,
    split_events_selecting,
};
pub use dedup::DedupStore;
pub use delete::{DELETE_WAIT, StreamDeletion};
pub use dlq::{DLQ_STREAM, DeadLetter, DeadLetterQueue, DlqEntry};
pub use error::IngestError;
pub use ingest::{
    CompatRecord, IngestOutcome, Ingestor, LineReport, RecordOutcome, RejectedRecord,
};
pub use keyed::{IdempotencyKey, KeyedBody, KeyedOutcome, MAX_KEY_CHARS};
pub use progress::{ConsumerProgress, DEFAULT_UNREADY_AFTER_FAILING, Failing, Unready};
pub use registry::{DeletionMark, StreamDefaults, StreamRegistry, StreamState, write_atomically};
pub use runner::{RunnerConfig, RunningConsumer, spawn_consumer};
pub use split::BodySplitter;
pub use validate::CompiledSchema;
