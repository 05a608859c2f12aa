//! The AWS JSON protocol shared by Kinesis and Firehose: `POST /` with `X-Amz-Target`,
//! `application/x-amz-json-1.1` bodies, and errors as `{"__type": ..., "message": ...}`.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tw_pipeline::IngestError;

use crate::auth::Denied;

/// Content type of the AWS JSON 1.1 protocol.
pub const AMZ_JSON: &str = "application/x-amz-json-1.1";

/// An AWS-style error: the exception name clients switch on, its HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AwsError {
    /// HTTP status.
    pub status: StatusCode,
    /// Exception name (`ResourceNotFoundException`, ...).
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

impl AwsError {
    /// A 400 with `code`.
    pub fn client(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// 400 InvalidArgumentException.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::client("InvalidArgumentException", message)
    }

    /// 400 ResourceNotFoundException.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::client("ResourceNotFoundException", message)
    }

    /// 503, retried by every AWS SDK.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "ServiceUnavailableException",
            message: message.into(),
        }
    }
}

impl From<IngestError> for AwsError {
    fn from(error: IngestError) -> Self {
        if error.is_retryable() {
            Self::unavailable(error.to_string())
        } else if error.is_client_error() {
            Self::invalid(error.to_string())
        } else {
            tracing::error!(%error, "compatible API internal error");
            Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "InternalFailure",
                message: error.to_string(),
            }
        }
    }
}

impl From<tw_log::LogError> for AwsError {
    fn from(error: tw_log::LogError) -> Self {
        IngestError::from(error).into()
    }
}

impl From<Denied> for AwsError {
    fn from(denied: Denied) -> Self {
        Self {
            status: denied.status,
            code: if denied.status == StatusCode::UNAUTHORIZED {
                "MissingAuthenticationTokenException"
            } else {
                "UnrecognizedClientException"
            },
            message: denied.message,
        }
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "__type": self.code, "message": self.message });
        let mut response = json_response(self.status, &body);
        if let Ok(value) = HeaderValue::from_str(self.code) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-amzn-errortype"), value);
        }
        response
    }
}

/// The metric label of an operation named by `X-Amz-Target`: the operation itself when it is
/// one of `known`, else `unknown`. The header is the client's text: used as a label as is, a
/// client sending made-up targets would create a metric series for each one.
pub fn operation_label(operation: &str, known: &[&'static str]) -> &'static str {
    known
        .iter()
        .find(|name| **name == operation)
        .copied()
        .unwrap_or("unknown")
}

/// A 200 (or other status) with an AWS JSON body and a request id.
pub fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    json_bytes_response(
        status,
        serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

/// [`json_response`] for a body already written as JSON.
pub fn json_bytes_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = (status, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(AMZ_JSON));
    if let Ok(value) = HeaderValue::from_str(&request_id()) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), value);
    }
    response
}

/// A unique request id (time and a counter; not a secret).
pub fn request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}-{n:08x}", tw_core::now_ms())
}

/// Parses a request body into an operation's input.
pub fn parse_input<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, AwsError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| AwsError::client("SerializationException", e.to_string()))
}

/// Decodes a base64 `Data` field.
pub fn decode_data(data: &str) -> Result<Vec<u8>, AwsError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| AwsError::client("SerializationException", format!("Data is not base64: {e}")))
}

/// Decodes a base64 `Data` field onto the end of `out`. Takes bytes: the JSON text of the
/// field need not be checked for UTF-8 first, the base64 alphabet is checked here anyway.
pub fn decode_data_into(data: &[u8], out: &mut Vec<u8>) -> Result<(), AwsError> {
    crate::base64_fast::decode_into(data, out)
        .map_err(|e| AwsError::client("SerializationException", format!("Data is not base64: {e}")))
}

/// Encodes bytes as base64 for a `Data` field.
pub fn encode_data(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}
