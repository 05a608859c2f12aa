//! Errors of the log.

use std::path::PathBuf;

/// What can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("log i/o error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The disk is full: the append was not stored (and nothing stored before was harmed).
    #[error("disk full while writing {path}")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// A frame failed its CRC, length or offset check where no torn tail can be (below the
    /// durable end of a running log, inside a sealed segment after a restart).
    #[error(
        "segment {segment} of {stream}/{partition} is corrupted at byte {position} (readable \
         again from offset {resume_at})"
    )]
    Corrupt {
        /// Stream name.
        stream: String,
        /// Partition.
        partition: u32,
        /// Base offset of the segment.
        segment: u64,
        /// Byte position of the bad frame inside the segment file.
        position: u64,
        /// The first offset a read can continue from, always past the offset that failed: the
        /// next intact frame after the damage (found by scanning, since the bad frame's
        /// length cannot be trusted), else the next segment's base or, for damage reaching the
        /// end of the last segment, that segment's end.
        resume_at: u64,
    },
    /// The stream does not exist.
    #[error("stream {0} does not exist")]
    UnknownStream(String),
    /// The partition does not exist in the stream.
    #[error("stream {stream} has no partition {partition}")]
    UnknownPartition {
        /// Stream name.
        stream: String,
        /// Requested partition.
        partition: u32,
    },
    /// The stream exists with another partition count.
    #[error("stream {stream} already exists with {existing} partitions (asked for {requested})")]
    PartitionCountMismatch {
        /// Stream name.
        stream: String,
        /// Partition count on disk.
        existing: u32,
        /// Partition count asked for.
        requested: u32,
    },
    /// A record is larger than the log accepts.
    #[error("record of {size} bytes exceeds the log's limit of {limit} bytes")]
    RecordTooLarge {
        /// Size of the record.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The log is shutting down or its writer stopped after a fatal error.
    #[error("the log is closed")]
    Closed,
    /// Another process (or another `DiskLog` in this one) has the log directory open.
    #[error("log directory {path} is already in use by another log instance")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A stream needs at least one partition.
    #[error("stream {0} needs at least one partition")]
    NoPartitions(String),
    /// A stream's `meta.json` is missing, unreadable or of an unknown version.
    #[error("bad stream metadata {path}: {reason}")]
    BadMeta {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A consumer offsets file is torn, garbage or of an unknown version: it is never silently
    /// treated as "no offsets", which would replay (or skip) a whole stream.
    #[error("bad consumer offsets file {path}: {reason}")]
    BadOffsetFile {
        /// The offsets file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl LogError {
    /// Wraps an i/o error on `path`, recognising a full disk (`ENOSPC`).
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if is_disk_full(&source) {
            LogError::DiskFull { path }
        } else {
            LogError::Io { path, source }
        }
    }
}

/// Whether an i/o error means "no space left on device" (`ENOSPC`, or a quota: `EDQUOT`).
pub(crate) fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(28) | Some(122))
        || error.kind() == std::io::ErrorKind::StorageFull
}
