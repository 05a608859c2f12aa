//! The search index's error type.

use std::path::PathBuf;

/// Everything that can fail while indexing or searching. Messages name the thing that failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A file-system operation on the index directories failed.
    #[error("search index i/o on {path} failed: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// tantivy failed to open, write, commit or read an index.
    #[error("search index {path} failed: {source}")]
    Index {
        /// The hour index involved.
        path: PathBuf,
        /// The underlying error.
        source: tantivy::TantivyError,
    },
    /// The user's query could not be parsed (a 400 for the API).
    #[error("invalid search query: {0}")]
    BadQuery(String),
    /// A `from` / `to` bound could not be parsed (a 400 for the API).
    #[error(
        "invalid time bound {value:?}: expected RFC 3339, Unix milliseconds or now-<N><s|m|h|d>"
    )]
    BadTime {
        /// The text given.
        value: String,
    },
    /// An hour index was written with another layout (an older version of Tidewatch).
    #[error(
        "search index {path} was built by another version of Tidewatch; restart the server to rebuild the search indexes from the log"
    )]
    OldLayout {
        /// The hour index involved.
        path: PathBuf,
    },
    /// Removing rows named by a deletion failed (the detailed error went to the request).
    #[error("removing deleted rows from the search index failed: {0}")]
    DeleteFailed(String),
    /// A stored document lacks a field every document is written with (a damaged index).
    #[error("search index {path} holds a document without {field}")]
    Corrupt {
        /// The hour index involved.
        path: PathBuf,
        /// The missing field.
        field: &'static str,
    },
}

impl SearchError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> SearchError {
        let path = path.into();
        move |source| SearchError::Io { path, source }
    }

    pub(crate) fn index(
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(tantivy::TantivyError) -> SearchError {
        let path = path.into();
        move |source| SearchError::Index { path, source }
    }

    /// Whether the error is the caller's fault (bad query or time bound).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, SearchError::BadQuery(_) | SearchError::BadTime { .. })
    }
}
