//! `POST /api/v1/streams/{stream}/import`: one file's content (NDJSON, JSON array, CloudTrail
//! `Records`, or Parquet; gzip by `Content-Encoding` or by its magic bytes) goes straight into
//! the stream's lake through the server's own [`tw_lake::Lake`] — the one writer of the
//! catalog — never through the log. Refused records are answered per line and dead-lettered;
//! when the dead-letter queue cannot be written the import fails as a whole (nothing of it is
//! kept) with a retryable 503.
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
use tw_pipeline::{ContentEncoding, DeadLetter, IngestError, IngestLimits, decode_body};

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
    let (imported, dead_letter_failure) = tokio::task::spawn_blocking(move || {
        let source_name = source.name.clone();
        // The lake sees only a message; the queue's own error is kept to answer with.
        let mut failure = None;
        let imported = lake.import(&stream, &rules, source, &limits, &mut |rejected| {
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
            runtime.block_on(dlq.push(letters)).map_err(|source| {
                let message = source.to_string();
                failure = Some(IngestError::DeadLetterWrite {
                    count: rejected.len(),
                    source,
                });
                message
            })
        });
        (imported, failure)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("import task failed: {e}")))?;
    let report = imported.map_err(|error| import_error(error, dead_letter_failure))?;
    Ok(Json(report))
}

/// The answer to a failed import. A dead-letter queue that could not be written fails the
/// import as a whole (nothing of it is kept: the lake removes its files and manifest), so the
/// client is told to retry (503) like the native ingest, not that its file is bad.
fn import_error(error: LakeError, dead_letter_failure: Option<IngestError>) -> ApiError {
    if let Some(failure) = dead_letter_failure {
        tracing::error!(%error, "import failed: its refused records could not be dead-lettered");
        return failure.into();
    }
    match error {
        LakeError::ImportSource { .. } => ApiError::BadRequest {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: error.to_string(),
        },
        other => ApiError::Internal(format!("import failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;

    #[test]
    fn a_dead_letter_failure_is_a_retryable_503_not_a_bad_file() {
        let lake_error = || LakeError::ImportSource {
            source_name: "f.ndjson".into(),
            reason: "the refused records could not be dead-lettered: disk full".into(),
        };
        let failure = IngestError::DeadLetterWrite {
            count: 2,
            source: tw_log::LogError::DiskFull {
                path: "_dlq".into(),
            },
        };
        let response = import_error(lake_error(), Some(failure)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let bad_file = import_error(lake_error(), None).into_response();
        assert_eq!(bad_file.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
