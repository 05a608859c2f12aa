//! Every error of the API mapped to one of a few outcomes: client error (4xx with a message the
//! user can act on), retryable (503 with Retry-After), internal (500, logged).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API failure with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message says how.
    #[error("{message}")]
    BadRequest {
        /// Status to answer (400, 404, 409, 413, 415, 422).
        status: StatusCode,
        /// What to fix.
        message: String,
    },
    /// Try again later (disk full, shutting down, overloaded).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an environment failure; logged with context.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// A 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::BadRequest {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl From<tw_pipeline::IngestError> for ApiError {
    fn from(error: tw_pipeline::IngestError) -> Self {
        use tw_pipeline::IngestError as E;
        let status = match &error {
            E::BodyTooLarge { .. } | E::DecompressedTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            E::UnsupportedEncoding(_) | E::UnsupportedContentType(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            E::UnknownStream(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        if error.is_retryable() {
            Self::Unavailable(error.to_string())
        } else if error.is_client_error() {
            Self::BadRequest {
                status,
                message: error.to_string(),
            }
        } else {
            Self::Internal(error.to_string())
        }
    }
}

impl From<tw_log::LogError> for ApiError {
    fn from(error: tw_log::LogError) -> Self {
        tw_pipeline::IngestError::from(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            ApiError::BadRequest { status, message } => (*status, message.clone()),
            ApiError::Unavailable(message) => (StatusCode::SERVICE_UNAVAILABLE, message.clone()),
            ApiError::Internal(message) => {
                tracing::error!(%message, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, message.clone())
            }
        };
        let mut response = (status, axum::Json(json!({ "error": message }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
