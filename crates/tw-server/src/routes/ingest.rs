//! `POST /api/v1/streams/{stream}/events`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use tw_pipeline::{ContentEncoding, IngestError, IngestOutcome};

use crate::{ApiError, AppState};

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
) -> Result<(StatusCode, Json<IngestOutcome>), ApiError> {
    let headers = request.headers();
    check_content_type(headers)?;
    let encoding = ContentEncoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )?;
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
    let outcome = match encoding {
        // Split as it arrives: a large NDJSON body is never gathered into one buffer.
        ContentEncoding::Identity => {
            let chunks = request.into_body().into_data_stream();
            ingestor.ingest_chunks(&stream, chunks).await?
        }
        // Gathered (within the router's body limit), then inflated with its own bound.
        ContentEncoding::Gzip => {
            let body = Bytes::from_request(request, &state)
                .await
                .map_err(|rejection| ApiError::BadRequest {
                    status: rejection.status(),
                    message: rejection.body_text(),
                })?;
            ingestor.ingest_body(&stream, body, encoding).await?
        }
    };
    Ok((StatusCode::OK, Json(outcome)))
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
