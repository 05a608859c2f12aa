//! `POST /api/v1/streams/{stream}/import`: one file's content (NDJSON, JSON array, CloudTrail
//! `Records`, or Parquet; gzip by `Content-Encoding` or by its magic bytes) goes straight into
//! the stream's lake through the server's own [`tw_lake::Lake`] — the one writer of the
//! catalog — never through the log. Refused records are answered per line and dead-lettered.
//! The body is the file itself rather than a path on the server: the server then reads only
//! what the caller sends, and the client may run anywhere.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::Deserialize;
use tw_core::{StreamName, now_ms};
use tw_lake::{ImportFormat, ImportReport, ImportSource, LakeError};
use tw_pipeline::{ContentEncoding, DeadLetter, IngestLimits, decode_body};

use crate::{ApiError, AppState};

/// The gzip magic bytes: a `.gz` file sent without `Content-Encoding` is still recognised.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportParams {
    /// The file's name, for the report and the manifest (default `body`).
    name: Option<String>,
    /// Event time of records without one, Unix ms (the CLI sends the file's modification
    /// time); default: now.
    fallback_time_ms: Option<i64>,
}

/// The limits of one import: a whole file up to the decompressed-body limit.
pub(crate) fn import_limits(ingest: &IngestLimits) -> IngestLimits {
    IngestLimits {
        max_body_bytes: ingest.max_decompressed_bytes,
        ..*ingest
    }
}

pub(crate) async fn import(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    Query(params): Query<ImportParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ImportReport>, ApiError> {
    let stream = StreamName::new(&stream).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let header_encoding = ContentEncoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )?;
    let encoding = if body.starts_with(&GZIP_MAGIC) {
        ContentEncoding::Gzip
    } else {
        header_encoding
    };
    let limits = import_limits(state.ingestor.limits());
    let content = tokio::task::spawn_blocking(move || decode_body(body, encoding, &limits))
        .await
        .map_err(|e| ApiError::Internal(format!("import decode task failed: {e}")))??;
    let rules = state.ingestor.registry().get_or_create(&stream)?;
    let source = ImportSource {
        name: params.name.unwrap_or_else(|| "body".to_string()),
        format: ImportFormat::detect(&content),
        content,
        fallback_time_ms: params.fallback_time_ms.unwrap_or_else(now_ms),
    };
    let lake = state.lake.clone();
    let dlq = state.ingestor.dlq().clone();
    let runtime = tokio::runtime::Handle::current();
    let report = tokio::task::spawn_blocking(move || {
        let source_name = source.name.clone();
        lake.import(&stream, &rules, source, &limits, &mut |rejected| {
            let letters = rejected
                .iter()
                .map(|r| DeadLetter {
                    line: Some(r.line),
                    ..DeadLetter::new(
                        stream.as_str(),
                        "import",
                        format!("{source_name}: {}", r.reason),
                        &r.raw,
                    )
                })
                .collect();
            // A blocking-pool thread, not a runtime worker: waiting here is allowed.
            runtime
                .block_on(dlq.push(letters))
                .map_err(|e| e.to_string())
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("import task failed: {e}")))?
    .map_err(|error| match error {
        LakeError::ImportSource { .. } => ApiError::BadRequest {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: error.to_string(),
        },
        other => ApiError::Internal(format!("import failed: {other}")),
    })?;
    Ok(Json(report))
}
