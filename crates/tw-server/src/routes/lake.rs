//! Lake maintenance on demand: `POST /api/v1/lake/compact` runs one compaction pass now (the
//! server also runs them in the background); `POST /api/v1/streams/{stream}/delete` deletes
//! rows matching a SQL predicate from the lake files (privacy requests), audit-logged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int64Type};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tw_core::{StreamName, now_ms};
use tw_lake::CompactionReport;

use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompactParams {
    /// Compact hours that ended at least this long ago (default: the configured minimum age;
    /// 0 also compacts the current hour).
    min_age_secs: Option<u64>,
}

pub(crate) async fn compact(
    State(state): State<Arc<AppState>>,
    Query(params): Query<CompactParams>,
) -> Result<Json<CompactionReport>, ApiError> {
    let min_age_ms = match params.min_age_secs {
        Some(secs) => secs.saturating_mul(1000),
        None => state.lake.config().compaction.min_age_ms,
    };
    let lake = state.lake.clone();
    let report = tokio::task::spawn_blocking(move || lake.compact(now_ms(), min_age_ms))
        .await
        .map_err(|e| ApiError::Internal(format!("compaction task failed: {e}")))?
        .map_err(|e| ApiError::Internal(format!("compaction failed: {e}")))?;
    Ok(Json(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteRequest {
    /// A SQL boolean expression over the stream's columns (a `WHERE` clause without `WHERE`).
    predicate: String,
}

/// `POST /api/v1/streams/{stream}/delete {"predicate": "..."}`: finds the matching rows with
/// SQL, rewrites the lake files holding them without them, appends an audit record.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    Json(request): Json<DeleteRequest>,
) -> Result<Json<Value>, ApiError> {
    let stream = StreamName::new(&stream).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if state.lake.table_schema(&stream).is_none() {
        return Err(ApiError::not_found(format!(
            "stream {stream} has no data in the lake"
        )));
    }
    tw_query::check_predicate(&request.predicate)?;
    // Every acknowledged event must be visible to the search for matching rows.
    state
        .lake_progress
        .wait_caught_up(state.log.as_ref(), None, state.query_freshness_wait)
        .await;
    let sql = format!(
        "SELECT _partition, _offset FROM \"{stream}\" WHERE {}",
        request.predicate
    );
    let result = state.query.query(&sql).await?;
    if result.truncated {
        return Err(ApiError::BadRequest {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!(
                "more than {} rows match; delete in smaller steps (narrow the predicate)",
                state.query.config().max_result_rows
            ),
        });
    }
    let mut rows: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for batch in &result.batches {
        let (Some(partitions), Some(offsets)) = (
            batch.column(0).as_primitive_opt::<Int32Type>(),
            batch.column(1).as_primitive_opt::<Int64Type>(),
        ) else {
            return Err(ApiError::Internal(
                "the row search returned unexpected column types".to_string(),
            ));
        };
        for (partition, offset) in partitions.iter().zip(offsets.iter()) {
            if let (Some(partition), Some(offset)) = (partition, offset) {
                let (Ok(partition), Ok(offset)) = (u32::try_from(partition), u64::try_from(offset))
                else {
                    continue;
                };
                rows.entry(partition).or_default().insert(offset);
            }
        }
    }
    let matched: u64 = rows.values().map(|o| o.len() as u64).sum();
    let lake = state.lake.clone();
    let audit = lake.storage().describe(tw_lake::AUDIT_DIR);
    let who = crate::who(&headers);
    let predicate = request.predicate.clone();
    let name = stream.clone();
    let report =
        tokio::task::spawn_blocking(move || lake.delete_rows(&name, &rows, &who, &predicate))
            .await
            .map_err(|e| ApiError::Internal(format!("delete task failed: {e}")))?
            .map_err(|e| ApiError::Internal(format!("delete failed: {e}")))?;
    Ok(Json(json!({
        "stream": stream.as_str(),
        "predicate": request.predicate,
        "rows_matched": matched,
        "rows_deleted": report.rows_deleted,
        "rows_not_in_files": report.rows_not_in_files,
        "files_rewritten": report.files_rewritten,
        "audit": audit,
    })))
}
