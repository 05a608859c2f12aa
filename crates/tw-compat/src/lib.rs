//! Drop-in ingest: the wire protocols producers already speak, translated into the one
//! append path ([`tw_pipeline::Ingestor`]), on the same port as the native API.
//!
//! - Kinesis Data Streams (`POST /`, `X-Amz-Target: Kinesis_20131202.*`) — [`kinesis`];
//! - Firehose, both the API (`Firehose_20150804.PutRecord[Batch]`) and the HTTP-endpoint
//!   delivery format (`POST /firehose/{stream}`) — [`firehose`];
//! - Elasticsearch `_bulk` — [`bulk`]; the cluster root clients probe and the shared ES wire
//!   conventions — `es_http`; the setup calls agents make at startup (license, templates, ILM
//!   policies, index creation) — [`es_setup`];
//! - the `[auth]` checks of every endpoint, including the native API — [`auth`], [`sigv4`].
//!
//! Invariants: every endpoint answers success for a record only after the ingestor reported it
//! durably stored; a record refused for its content is in the dead-letter queue and reported
//! to the client per record; retried Firehose requests and repeated `_id`s are recognised
//! from a durable record ([`dedup`]) and not stored twice. Limits (body, decompressed body,
//! event size) are the ingestor's.

pub mod auth;
mod aws;
mod base64_fast;
pub mod bulk;
mod es_http;
pub mod es_setup;
pub mod firehose;
pub mod kinesis;
pub mod shards;
pub mod sigv4;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tw_log::Log;
use tw_pipeline::Ingestor;

pub use auth::{Auth, AuthConfig, AwsKey, require_api_key};
/// The remembered ids, shared with the native API's idempotency keys (in `tw-pipeline`, which
/// both reach); re-exported under their old path.
pub use tw_pipeline::dedup;
pub use tw_pipeline::dedup::DedupStore;

use crate::aws::AwsError;

/// Everything the compatible endpoints reach.
pub struct CompatState {
    /// The one append path.
    pub ingestor: Arc<Ingestor>,
    /// The log (Kinesis reads).
    pub log: Arc<dyn Log>,
    /// Credential checks.
    pub auth: Arc<Auth>,
    /// Remembered Firehose request ids and `_bulk` `_id`s.
    pub dedup: Arc<DedupStore>,
    /// Every consumer by name: `DeleteStream` waits for them to forget the stream.
    pub consumers: Vec<(String, Arc<tw_pipeline::ConsumerProgress>)>,
}

/// The routes of every compatible protocol (merge them with the native router).
pub fn router(state: Arc<CompatState>) -> Router {
    let body_limit = state.ingestor.limits().max_body_bytes;
    Router::new()
        .route(
            "/",
            get(es_http::root).head(es_http::root_head).post(aws_json),
        )
        .route("/_bulk", post(bulk::bulk).put(bulk::bulk))
        .route(
            "/{index}/_bulk",
            post(bulk::bulk_index).put(bulk::bulk_index),
        )
        .route("/firehose/{stream}", post(firehose::http_endpoint))
        .with_state(state.clone())
        .merge(es_setup::router(state))
        .layer(DefaultBodyLimit::max(body_limit))
}

/// `POST /`: the AWS JSON protocol, routed by `X-Amz-Target`.
async fn aws_json(
    State(state): State<Arc<CompatState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    route_aws(&state, &method, &uri, &headers, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn route_aws(
    state: &Arc<CompatState>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, AwsError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let signer = state
        .auth
        .check_sigv4(method, uri.path(), uri.query(), headers, body)
        .inspect_err(|_| {
            metrics::counter!("tidewatch_auth_denied_total", "api" => "aws").increment(1);
        })?;
    let region = signer
        .map(|s| s.region)
        .or_else(|| sigv4::claimed_region(headers))
        .unwrap_or_else(|| "us-east-1".to_string());
    if let Some(operation) = target.strip_prefix("Kinesis_20131202.") {
        kinesis::dispatch(state, operation, body, &region).await
    } else if let Some(operation) = target.strip_prefix("Firehose_20150804.") {
        firehose::dispatch(state, operation, body).await
    } else if target.is_empty() {
        Err(AwsError::client(
            "MissingAction",
            "POST / needs an X-Amz-Target header (Kinesis_20131202.* or Firehose_20150804.*)",
        ))
    } else {
        Err(AwsError::client(
            "UnknownOperationException",
            format!("unknown X-Amz-Target {target:?}"),
        ))
    }
}

/// The HTTP status of a whole request whose append failed: 503 when a retry may succeed (disk
/// full, shutting down), 413 for a body over the limits, 400 for other client errors.
pub(crate) fn ingest_status(error: &tw_pipeline::IngestError) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    use tw_pipeline::IngestError;
    if error.is_retryable() {
        StatusCode::SERVICE_UNAVAILABLE
    } else if matches!(
        error,
        IngestError::BodyTooLarge { .. } | IngestError::DecompressedTooLarge { .. }
    ) {
        StatusCode::PAYLOAD_TOO_LARGE
    } else if error.is_client_error() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}
