//! Durable, partitioned, append-only event log, and the consumer offsets kept beside it.
//!
//! Every stream has a fixed number of partitions; each partition is a sequence of records
//! addressed by dense offsets. Two backends sit behind the [`Log`] trait: the embedded disk
//! log ([`DiskLog`], the default) and, later, NATS JetStream.
//!
//! Invariants:
//! - an offset is never reused, also by a stream created again after a deletion (the log
//!   keeps the deleted stream's end offsets in a tombstone);
//! - every frame carries a length and a CRC32C; a torn or corrupted tail is cut on open;
//!   damage elsewhere is never cut, and costs readers only the damaged records (`resync`);
//! - an append resolves only after the group commit that covers it has fsynced, and readers
//!   never see a record before it is durable (`end_offset` moves only after fsync);
//! - retention deletes whole sealed segments, never the active one;
//! - a partition rolls to a new segment only between group commits, after the old one was
//!   fully fsynced, so only the last segment of a partition can have a torn tail;
//! - one `DiskLog` per directory at a time (an exclusive lock on `{dir}/LOCK`).
//!
//! Also here: [`OffsetStore`], the consumers' committed offsets, written atomically.
//!
//! Code map: `disk` (the [`DiskLog`] and its directory layout), `partition` (reads, time
//! lookup, retention), `segment` (segment files, sparse index, recovery), `resync` (the next
//! intact frame after damage), `index_file` (persisted summaries of sealed segments), `writer`
//! (the group commit thread), `frame` (the record frame), `offsets` ([`OffsetStore`]); with
//! the `testing` feature, `testing` (a log that fails chosen appends, for the tests of other
//! crates).

mod disk;
mod error;
mod frame;
mod fsutil;
mod index_file;
mod offsets;
mod partition;
mod resync;
mod segment;
#[cfg(feature = "testing")]
pub mod testing;
mod writer;

pub use disk::{DEFAULT_MAX_RECORD_BYTES, DiskLog, LogConfig};
pub use error::LogError;
pub use fsutil::write_file_atomically;
pub use offsets::OffsetStore;

use std::ops::Range;

use futures::future::BoxFuture;
use tw_core::{AppendRecord, Offset, PartitionId, Record, Retention, StreamName};

/// The durable log seen by every stage. Implementations are shared as `Arc<dyn Log>`.
///
/// Read methods do blocking file I/O: call them from a blocking context
/// (`tokio::task::spawn_blocking` or a dedicated thread), not from an async task's poll.
pub trait Log: Send + Sync + 'static {
    /// Creates a stream with `partitions` partitions. Idempotent when the stream already exists
    /// with the same count; an error when it exists with a different count.
    fn create_stream(&self, stream: &StreamName, partitions: u32) -> Result<(), LogError>;

    /// Deletes a stream: its records, files and partitions. Appends still queued for it fail
    /// with [`LogError::UnknownStream`]. A stream created later under the same name starts
    /// empty, with another [`Log::incarnation`], each partition at the offset where the
    /// deleted stream's ended: offsets are never reused, also across a deletion.
    fn delete_stream(&self, stream: &StreamName) -> Result<(), LogError>;

    /// An id of this creation of `stream` (`None` when it does not exist): it differs between
    /// a stream and one of the same name created after its deletion, so a reader holding
    /// offsets of the old one can tell them apart. Not persisted: ids are only compared within
    /// one process.
    fn incarnation(&self, stream: &StreamName) -> Option<u64>;

    /// Partition count of a stream, `None` when it does not exist.
    fn partitions(&self, stream: &StreamName) -> Option<u32>;

    /// Every stream with its partition count, sorted by name.
    fn streams(&self) -> Vec<(StreamName, u32)>;

    /// Appends `records` to one partition. Resolves, with the offsets assigned, only once the
    /// records are durable (fsynced by a group commit). Records of one call get consecutive
    /// offsets and become visible to readers together.
    fn append(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        records: Vec<AppendRecord>,
    ) -> BoxFuture<'static, Result<Range<Offset>, LogError>>;

    /// Reads durable records starting at `from` (or at the first retained offset if `from` was
    /// deleted by retention), up to `max_records` records and about `max_bytes` payload bytes
    /// (at least one record is returned when any is available). Empty at the end. Damage on
    /// disk ends a read at the records before it; a read starting at it fails with
    /// [`LogError::Corrupt`], which says where reading can resume.
    fn read(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError>;

    /// First retained offset of a partition.
    fn start_offset(&self, stream: &StreamName, partition: PartitionId)
    -> Result<Offset, LogError>;

    /// One past the last durable offset of a partition (the offset the next append gets).
    fn end_offset(&self, stream: &StreamName, partition: PartitionId) -> Result<Offset, LogError>;

    /// First offset whose ingest time is at or after `ingest_time_ms` (end offset if none):
    /// where a replay "from a time" starts.
    fn offset_for_time(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        ingest_time_ms: i64,
    ) -> Result<Offset, LogError>;

    /// Deletes sealed segments that fall outside `retention`; returns how many were deleted.
    fn apply_retention(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<usize, LogError>;

    /// Bytes on disk of one partition.
    fn size_bytes(&self, stream: &StreamName, partition: PartitionId) -> Result<u64, LogError>;

    /// Largest record (key + payload bytes) [`Log::append`] accepts; a larger one fails the
    /// append with [`LogError::RecordTooLarge`].
    fn max_record_bytes(&self) -> usize;

    /// A counter bumped after every group commit: consumers wait on it for new data.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;
}
