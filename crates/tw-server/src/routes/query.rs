//! `POST /api/v1/query {"sql": "..."}`: JSON rows, CSV (`Accept: text/csv`) or Arrow IPC
//! (`Accept: application/vnd.apache.arrow.stream`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tw_query::QueryError;

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
    // Read-your-writes: wait (bounded) until the lake consumer has handled everything the log
    // acknowledged, so the hot buffer plus the files cover every accepted event.
    let fresh = state
        .lake_progress
        .wait_caught_up(state.log.as_ref(), None, state.query_freshness_wait)
        .await;
    let result = state.query.query(&request.sql).await?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut response = if accept.contains("text/csv") {
        let body = tw_query::to_csv(&result.batches)?;
        ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
    } else if accept.contains("application/vnd.apache.arrow.stream") {
        let body = tw_query::to_arrow_ipc(&result.batches, &result.schema)?;
        (
            [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
            body,
        )
            .into_response()
    } else {
        let rows = tw_query::to_json_rows(&result.batches)?;
        let columns: Vec<_> = result
            .schema
            .fields()
            .iter()
            .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
            .collect();
        (
            StatusCode::OK,
            Json(json!({
                "columns": columns,
                "rows": rows,
                "row_count": rows.len(),
                "truncated": result.truncated,
                "elapsed_ms": result.elapsed_ms,
            })),
        )
            .into_response()
    };
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
