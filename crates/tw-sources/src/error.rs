//! Errors of the sources: configuration, source state, the object store, NATS and the ingest
//! path they feed.

use std::path::PathBuf;

use tw_log::LogError;
use tw_pipeline::IngestError;

/// What can go wrong in a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The `[[sources]]` configuration is invalid (every problem, one per line).
    #[error("invalid sources configuration:\n  {0}")]
    Config(String),
    /// Reading or writing a source's state directory failed.
    #[error("source state i/o error on {path}: {message}")]
    State {
        /// File involved.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A source's state file is unreadable (not a torn tail, which is cut on open).
    #[error("source state file {path} is corrupted at line {line}: {message}")]
    StateCorrupt {
        /// File involved.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Listing or reading the object store failed (retried at the next poll).
    #[error("object store {location}: {message}")]
    Store {
        /// The directory or bucket and key.
        location: String,
        /// The store's error.
        message: String,
    },
    /// Connecting to or reading from NATS failed.
    #[error("nats {url}: {message}")]
    Nats {
        /// The server URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The ingest path refused or failed an append (retried; a client error is per record).
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// Reading the log while checking what an interrupted append stored.
    #[error(transparent)]
    Log(#[from] LogError),
}

impl SourceError {
    pub(crate) fn state(path: impl Into<PathBuf>, error: impl std::fmt::Display) -> Self {
        Self::State {
            path: path.into(),
            message: error.to_string(),
        }
    }

    pub(crate) fn store(location: impl Into<String>, error: impl std::fmt::Display) -> Self {
        Self::Store {
            location: location.into(),
            message: error.to_string(),
        }
    }
}
