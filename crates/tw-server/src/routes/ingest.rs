//! `POST /api/v1/streams/{stream}/events`.
//!
//! With an `Idempotency-Key` header the request is stored once however often it is sent (24 h,
//! across restarts; see [`tw_pipeline::Ingestor::ingest_keyed`]): a repeat gets the first
//! answer with `Idempotent-Replayed: true`, a repeat of a request that failed part-way stores
//! only what was not stored. A repeat while the first is still in flight is answered 409 with
//! `Retry-After` (rather than waiting: a stuck first request must not hold a second
//! connection); the same key with another body 422; a malformed key 400.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tw_pipeline::{ContentEncoding, IdempotencyKey, IngestError, KeyedBody};

use crate::{ApiError, AppState};

/// The request header naming a request's idempotency key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The answer header that marks a remembered answer (nothing stored by this request).
const REPLAYED: &str = "idempotent-replayed";

/// Content types the native endpoint reads (the body format itself is detected).
const ACCEPTED_TYPES: [&str; 7] = [
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/json",
    "text/plain",
    "application/octet-stream",
];

pub(crate) async fn post_events(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    check_content_type(headers)?;
    let encoding = ContentEncoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )?;
    let key = idempotency_key(headers)?;
    let ingestor = &state.ingestor;
    let limit = ingestor.limits().max_body_bytes;
    // A body announced over the limit is refused before any of it is read.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(IngestError::BodyTooLarge { limit }.into());
    }
    // Split as it arrives: a large NDJSON body is never gathered into one buffer. A gzip body
    // is gathered (within the router's body limit), then inflated with its own bound.
    let body = match encoding {
        ContentEncoding::Identity => KeyedBody::Chunks(request.into_body().into_data_stream()),
        ContentEncoding::Gzip => {
            let body = Bytes::from_request(request, &state)
                .await
                .map_err(|rejection| ApiError::BadRequest {
                    status: rejection.status(),
                    message: rejection.body_text(),
                })?;
            KeyedBody::Whole(body, encoding)
        }
    };
    let Some(key) = key else {
        let outcome = match body {
            KeyedBody::Chunks(chunks) => ingestor.ingest_chunks(&stream, chunks).await?,
            KeyedBody::Whole(body, encoding) => {
                ingestor.ingest_body(&stream, body, encoding).await?
            }
        };
        return Ok((StatusCode::OK, Json(outcome)).into_response());
    };
    let keyed = match ingestor
        .ingest_keyed(&state.dedup, &stream, &key, body)
        .await
    {
        Ok(keyed) => keyed,
        Err(error) => return Ok(keyed_error(error)),
    };
    let mut response = (StatusCode::OK, Json(keyed.outcome)).into_response();
    if keyed.replayed {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The request's idempotency key, if it has one (one header, a valid key).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, IngestError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(IngestError::BadIdempotencyKey(
            "the request has more than one Idempotency-Key header".into(),
        ));
    }
    IdempotencyKey::parse(value.as_bytes()).map(Some)
}

/// The answer to a failed keyed request: the generic mapping, except for the idempotency
/// outcomes that have statuses of their own.
fn keyed_error(error: IngestError) -> Response {
    let status = match &error {
        // Retryable, but not 503: the server is fine, the first request is not answered yet.
        IngestError::IdempotencyKeyInFlight { .. } => StatusCode::CONFLICT,
        IngestError::IdempotencyKeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => return ApiError::from(error).into_response(),
    };
    let mut response = ApiError::BadRequest {
        status,
        message: error.to_string(),
    }
    .into_response();
    if status == StatusCode::CONFLICT {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn check_content_type(headers: &HeaderMap) -> Result<(), IngestError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or_default().to_ascii_lowercase();
    let essence = text.split(';').next().unwrap_or_default().trim();
    if essence.is_empty() || ACCEPTED_TYPES.contains(&essence) {
        Ok(())
    } else {
        Err(IngestError::UnsupportedContentType(essence.to_string()))
    }
}
