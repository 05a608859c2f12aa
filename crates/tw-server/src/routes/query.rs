//! `POST /api/v1/query {"sql": "..."}`: JSON rows, CSV (`Accept: text/csv`) or Arrow IPC
//! (`Accept: application/vnd.apache.arrow.stream`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tw_query::{QueryError, ResultFormat};

use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryRequest {
    sql: String,
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        if error.is_user_error() {
            ApiError::bad_request(error.to_string())
        } else if error.is_unavailable() {
            ApiError::Unavailable(error.to_string())
        } else {
            ApiError::Internal(error.to_string())
        }
    }
}

pub(crate) async fn run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(request): Json<QueryRequest>,
) -> Result<Response, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (format, content_type) = if accept.contains("text/csv") {
        (ResultFormat::Csv, "text/csv; charset=utf-8")
    } else if accept.contains("application/vnd.apache.arrow.stream") {
        (
            ResultFormat::ArrowIpc,
            "application/vnd.apache.arrow.stream",
        )
    } else {
        (ResultFormat::Json, "application/json")
    };
    // Read-your-writes: wait (bounded) until the lake consumer has handled everything the log
    // acknowledged, so the hot buffer plus the files cover every accepted event.
    let fresh = state
        .lake_progress
        .wait_caught_up(state.log.as_ref(), None, state.query_freshness_wait)
        .await;
    // Encoded on the query runtime too: up to `max_result_rows` rows of CPU work that would
    // otherwise hold this (ingest) runtime's threads.
    let result = state.query.query_encoded(&request.sql, format).await?;
    let mut response = ([(header::CONTENT_TYPE, content_type)], result.body).into_response();
    if result.truncated {
        response
            .headers_mut()
            .insert("x-tidewatch-truncated", HeaderValue::from_static("true"));
    }
    if !fresh {
        response
            .headers_mut()
            .insert("x-tidewatch-freshness", HeaderValue::from_static("lagging"));
    }
    Ok(response)
}
