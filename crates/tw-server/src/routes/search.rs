//! `GET /api/v1/streams/{stream}/search?q=...&from=...&to=...&limit=...`: full-text search
//! over a stream's raw events (Lucene-like query; see `tw_search`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use tw_core::{StreamName, now_ms};
use tw_search::{SearchError, SearchRequest, SearchResult, parse_time_bound};

use crate::{ApiError, AppState};

/// Hits returned when `limit` is absent.
const DEFAULT_LIMIT: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchParams {
    #[serde(default)]
    q: String,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

impl From<SearchError> for ApiError {
    fn from(error: SearchError) -> Self {
        if error.is_bad_request() {
            ApiError::bad_request(error.to_string())
        } else {
            ApiError::Internal(error.to_string())
        }
    }
}

pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    Query(params): Query<SearchParams>,
) -> Result<Json<SearchResult>, ApiError> {
    let stream = StreamName::new(&stream).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let now = now_ms();
    let bound = |text: &Option<String>| {
        text.as_deref()
            .map(|t| parse_time_bound(t, now))
            .transpose()
    };
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit > tw_search::MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is above the maximum {}",
            tw_search::MAX_LIMIT
        )));
    }
    let request = SearchRequest {
        query: params.q,
        from_ms: bound(&params.from)?,
        to_ms: bound(&params.to)?,
        limit,
    };
    let indexes = state.search.clone();
    // tantivy reads memory-mapped files: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || indexes.search(&stream, &request))
        .await
        .map_err(|e| ApiError::Internal(format!("search task failed: {e}")))??;
    Ok(Json(result))
}
