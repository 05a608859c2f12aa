//! `POST /api/v1/streams/{stream}/events`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
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
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<IngestOutcome>), ApiError> {
    check_content_type(&headers)?;
    let encoding = ContentEncoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )?;
    let outcome = state.ingestor.ingest_body(&stream, body, encoding).await?;
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
