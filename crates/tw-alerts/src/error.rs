//! The one error type of this crate.

use std::path::PathBuf;

use crate::config::SinkConfigProblem;

/// Everything that can go wrong in the alert store, the sink configuration or the dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A file or directory of the store or of a sink could not be read or written.
    #[error("alert file {path} failed: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A complete (newline-terminated) line of the alert store cannot be decoded. The store
    /// refuses to open rather than skip it: fix or remove the line named here, then restart.
    #[error("alert store {path} is corrupted at line {line}: {reason}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why the line was rejected.
        reason: String,
    },
    /// The store file was written by a format version this build does not know.
    #[error(
        "alert store {path} has unsupported format version {version} (this build reads version {supported})"
    )]
    UnsupportedVersion {
        /// The store file.
        path: PathBuf,
        /// Version found in the header.
        version: u64,
        /// Version this build reads and writes.
        supported: u64,
    },
    /// An alert could not be encoded as JSON (should not happen for well-formed alerts).
    #[error("alert {id} could not be encoded: {source}")]
    Encode {
        /// Id of the alert.
        id: String,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },
    /// The sink configuration has problems; every one of them is listed.
    #[error("invalid sink configuration: {}", join_problems(.0))]
    InvalidSinks(Vec<SinkConfigProblem>),
    /// The dispatcher was started outside a tokio runtime.
    #[error("alert dispatcher must be started inside a tokio runtime")]
    NoRuntime,
    /// The HTTP client of a webhook sink could not be built.
    #[error("http client of sink {sink} could not be built: {reason}")]
    HttpClient {
        /// Name of the sink.
        sink: String,
        /// The reqwest error, as text.
        reason: String,
    },
}

fn join_problems(problems: &[SinkConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl AlertError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
