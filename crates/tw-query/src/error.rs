//! The one error type of the query layer and its mapping to outcomes.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// Why a query failed.
///
/// Every variant maps to one of three outcomes (see [`QueryError::outcome`]): the user's
/// fault (HTTP 400), a lack of time or resources that a retry may cure (503), or a bug or
/// broken storage (500).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL text could not be parsed.
    #[error("sql syntax error: {0}")]
    Syntax(String),
    /// The SQL parsed but could not be planned (unknown table or column, type mismatch...).
    #[error("invalid query: {0}")]
    Plan(String),
    /// The statement is not a read: DDL, DML, COPY, SET and friends are refused.
    #[error("statement refused: {0} (only read-only queries are allowed)")]
    Refused(String),
    /// The query ran longer than the configured time limit and was cancelled.
    #[error("query cancelled after exceeding the time limit of {timeout_ms} ms")]
    Timeout {
        /// The limit that was exceeded.
        timeout_ms: u64,
    },
    /// The query needed more memory (or another resource) than the engine allows.
    #[error("query exceeded its resources: {0}")]
    ResourcesExhausted(String),
    /// A result column has a type the requested format cannot hold (a union, a map with
    /// non-text keys as JSON): the query's to change.
    #[error(
        "column {column} of type {data_type} cannot be written as {format} ({message}); \
         select it as another type (a CAST, a field of it) or ask for Arrow IPC"
    )]
    Unrepresentable {
        /// The output format (json, csv).
        format: &'static str,
        /// The column's name.
        column: String,
        /// The column's Arrow type.
        data_type: String,
        /// The encoder's reason.
        message: String,
    },
    /// The results could not be encoded into the requested format.
    #[error("encoding query results as {format} failed: {message}")]
    Encode {
        /// The output format (json, csv, arrow ipc, table).
        format: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The engine could not be created (runtime or configuration).
    #[error("query engine setup failed: {0}")]
    Setup(String),
    /// Anything else: storage failures and bugs.
    #[error("query failed: {0}")]
    Internal(String),
}

/// The class of a [`QueryError`], used to choose an HTTP status or an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorOutcome {
    /// The request is wrong and retrying it unchanged will fail again (400).
    User,
    /// Out of time or resources; a retry later or a narrower query may succeed (503).
    Unavailable,
    /// A bug or a storage failure (500).
    Internal,
}

impl QueryError {
    /// Whether the error is the user's to fix (bad SQL, unknown table or column, refused
    /// statement): an HTTP 400.
    pub fn is_user_error(&self) -> bool {
        self.outcome() == ErrorOutcome::User
    }

    /// Whether the error is a lack of time or resources (HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        self.outcome() == ErrorOutcome::Unavailable
    }

    /// The class of this error.
    pub fn outcome(&self) -> ErrorOutcome {
        match self {
            Self::Syntax(_) | Self::Plan(_) | Self::Refused(_) | Self::Unrepresentable { .. } => {
                ErrorOutcome::User
            }
            Self::Timeout { .. } | Self::ResourcesExhausted(_) => ErrorOutcome::Unavailable,
            Self::Encode { .. } | Self::Setup(_) | Self::Internal(_) => ErrorOutcome::Internal,
        }
    }
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> Self {
        // The root cause decides the class; the full chain is kept as the message because
        // DataFusion's context wrappers name the column or file involved.
        let message = error.to_string();
        match error.find_root() {
            DataFusionError::SQL(..) => Self::Syntax(message),
            DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => Self::Plan(message),
            DataFusionError::ResourcesExhausted(_) => Self::ResourcesExhausted(message),
            DataFusionError::ArrowError(arrow, _) if is_user_arrow_error(arrow) => {
                Self::Plan(message)
            }
            _ => Self::Internal(message),
        }
    }
}

/// Arrow errors caused by the values a query computes (1/0, a bad cast the user asked for).
fn is_user_arrow_error(error: &ArrowError) -> bool {
    matches!(
        error,
        ArrowError::DivideByZero
            | ArrowError::CastError(_)
            | ArrowError::ParseError(_)
            | ArrowError::ArithmeticOverflow(_)
            | ArrowError::InvalidArgumentError(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datafusion_errors_map_to_outcomes() {
        let plan: QueryError = DataFusionError::Plan("no table".into()).into();
        assert!(plan.is_user_error());
        let wrapped: QueryError = DataFusionError::Context(
            "while planning".into(),
            Box::new(DataFusionError::Plan("x".into())),
        )
        .into();
        assert!(wrapped.is_user_error());
        let oom: QueryError = DataFusionError::ResourcesExhausted("pool".into()).into();
        assert!(oom.is_unavailable());
        let div: QueryError =
            DataFusionError::ArrowError(Box::new(ArrowError::DivideByZero), None).into();
        assert!(div.is_user_error());
        let io: QueryError = DataFusionError::Internal("bug".into()).into();
        assert_eq!(io.outcome(), ErrorOutcome::Internal);
        assert!(QueryError::Timeout { timeout_ms: 5 }.is_unavailable());
        assert!(QueryError::Refused("INSERT".into()).is_user_error());
    }
}
