//! The lake's error type.

use std::path::PathBuf;

use arrow::error::ArrowError;
use parquet::errors::ParquetError;

/// Everything that can fail in the lake. Messages are lowercase and name the thing that failed.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// A file-system operation failed.
    #[error("lake i/o on {path} failed: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A lake object path that is empty, absolute or climbs out of the root (a bug).
    #[error("lake path {path:?} is not a relative path inside the lake")]
    InvalidPath {
        /// The refused path.
        path: String,
    },
    /// An object listed a moment before was gone when read (something else deleted it).
    #[error("lake object {path} disappeared while being read")]
    Vanished {
        /// The object.
        path: String,
    },
    /// An object store operation (S3) failed or the store could not be set up.
    #[error("lake {operation} of {location} failed: {message}")]
    Storage {
        /// What was being done (`put`, `get`, `list`, `delete`, `configuration`).
        operation: &'static str,
        /// The object or prefix (`s3://bucket/key`).
        location: String,
        /// What the store said.
        message: String,
    },
    /// A catalog file could not be parsed.
    #[error("catalog {path} is not valid: {source}")]
    CatalogInvalid {
        /// The catalog file (a local path or an object URL).
        path: String,
        /// What the JSON parser said.
        source: serde_json::Error,
    },
    /// A catalog file was written by a newer, unknown format.
    #[error("catalog {path} has unsupported format version {version}")]
    CatalogVersion {
        /// The catalog file (a local path or an object URL).
        path: String,
        /// The version found in it.
        version: u32,
    },
    /// Building or reshaping Arrow data failed.
    #[error("arrow conversion for stream {stream} failed: {source}")]
    Arrow {
        /// The stream being converted.
        stream: String,
        /// The underlying error.
        source: ArrowError,
    },
    /// Writing or reading a Parquet file failed.
    #[error("parquet file {path} failed: {source}")]
    Parquet {
        /// The file involved (a local path or an object URL).
        path: String,
        /// The underlying error.
        source: ParquetError,
    },
    /// A record's offset does not fit the signed `_offset` column.
    #[error(
        "offset {offset} of stream {stream} partition {partition} does not fit in a signed 64-bit column"
    )]
    OffsetRange {
        /// The stream.
        stream: String,
        /// The partition.
        partition: u32,
        /// The offending offset.
        offset: u64,
    },
    /// A partition number does not fit the `_partition` column (Int32).
    #[error("partition {partition} of stream {stream} does not fit in a signed 32-bit column")]
    PartitionRange {
        /// The stream.
        stream: String,
        /// The partition.
        partition: u32,
    },
    /// A source file given to import cannot be imported as a whole (unreadable, not JSON or
    /// Parquet, a column without a JSON form); nothing of it was stored.
    #[error("cannot import {source_name}: {reason}")]
    ImportSource {
        /// The source's name.
        source_name: String,
        /// Why.
        reason: String,
    },
    /// An import manifest could not be read or written.
    #[error("import manifest {path} is not valid: {message}")]
    ImportManifest {
        /// The manifest (a local path or an object URL).
        path: String,
        /// What the JSON parser said.
        message: String,
    },
    /// A batch's events and records disagree (a bug in the caller).
    #[error(
        "batch of stream {stream} partition {partition} has {records} records but {events} events"
    )]
    BatchShape {
        /// The stream.
        stream: String,
        /// The partition.
        partition: u32,
        /// Number of records.
        records: usize,
        /// Number of parsed events.
        events: usize,
    },
    /// Query rows handed to [`crate::rows_to_events`] lack what every lake row has.
    #[error("lake rows cannot be read as events: {0}")]
    RowShape(String),
}

impl LakeError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LakeError {
        let path = path.into();
        move |source| LakeError::Io { path, source }
    }

    /// Wraps an Arrow error with the stream it concerns.
    pub(crate) fn arrow(stream: &str) -> impl FnOnce(ArrowError) -> LakeError + '_ {
        move |source| LakeError::Arrow {
            stream: stream.to_string(),
            source,
        }
    }
}
