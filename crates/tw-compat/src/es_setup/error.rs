//! The errors of the Elasticsearch setup calls, each mapped to one ES error type and status.

use axum::http::StatusCode;
use tw_log::LogError;
use tw_pipeline::IngestError;

/// What can go wrong in a setup call.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The body is not JSON, or not the JSON object the call takes.
    #[error("{0}")]
    BadBody(String),
    /// A required part of the body is missing or has the wrong type (ES's validation wording).
    #[error("Validation Failed: 1: {0};")]
    Validation(String),
    /// A value the call cannot accept (a template name with `*`, `create=true` on an existing
    /// template, an unknown key, a bad shard count).
    #[error("{0}")]
    IllegalArgument(String),
    /// The index (stream) name is not a valid stream name.
    #[error("{0}")]
    InvalidIndexName(String),
    /// A template or policy that is not stored.
    #[error("{0}")]
    NotFound(String),
    /// A template a DELETE names that is not stored (ES answers DELETE with its own type, and
    /// GET with `resource_not_found_exception`); the names, comma-separated.
    #[error("index_template [{0}] missing")]
    TemplateMissing(String),
    /// An index or data stream (a stream) that does not exist.
    #[error("no such index [{0}]")]
    NoSuchIndex(String),
    /// Creating an index or data stream that already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// A stored definition does not parse (the stream was written by another version).
    #[error("setup store record at offset {offset} is unreadable: {reason}")]
    Unreadable {
        /// Its offset in `_compat_es_setup`.
        offset: u64,
        /// Why.
        reason: String,
    },
    /// A blocking task (opening the store, creating a stream) ended without an answer.
    #[error("{what} stopped: {reason}")]
    Stopped {
        /// What the task did.
        what: &'static str,
        /// Why it ended.
        reason: String,
    },
    /// A definition could not be encoded for storing.
    #[error("encoding a setup record failed: {0}")]
    Encode(serde_json::Error),
    /// Creating the stream failed, or the stored definitions could not be read or written
    /// (log errors travel as [`IngestError::Log`] so that one place maps them to a status).
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

impl From<LogError> for SetupError {
    fn from(error: LogError) -> Self {
        SetupError::Ingest(IngestError::Log(error))
    }
}

impl SetupError {
    /// The HTTP status: 400/404 for what the agent can fix, 503 for what a retry may fix, 500
    /// for the rest.
    pub fn status(&self) -> StatusCode {
        match self {
            SetupError::BadBody(_)
            | SetupError::Validation(_)
            | SetupError::IllegalArgument(_)
            | SetupError::InvalidIndexName(_)
            | SetupError::AlreadyExists(_) => StatusCode::BAD_REQUEST,
            SetupError::NotFound(_)
            | SetupError::TemplateMissing(_)
            | SetupError::NoSuchIndex(_) => StatusCode::NOT_FOUND,
            SetupError::Ingest(error) => crate::ingest_status(error),
            SetupError::Unreadable { .. } | SetupError::Stopped { .. } | SetupError::Encode(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The ES error type clients see.
    pub fn es_type(&self) -> &'static str {
        match self {
            SetupError::BadBody(_) => "x_content_parse_exception",
            SetupError::Validation(_) => "action_request_validation_exception",
            SetupError::IllegalArgument(_) => "illegal_argument_exception",
            SetupError::InvalidIndexName(_) => "invalid_index_name_exception",
            SetupError::NotFound(_) => "resource_not_found_exception",
            SetupError::TemplateMissing(_) => "index_template_missing_exception",
            SetupError::NoSuchIndex(_) => "index_not_found_exception",
            SetupError::AlreadyExists(_) => "resource_already_exists_exception",
            SetupError::Unreadable { .. }
            | SetupError::Stopped { .. }
            | SetupError::Encode(_)
            | SetupError::Ingest(_) => "tidewatch_exception",
        }
    }
}
