//! Lake maintenance on demand: `POST /api/v1/lake/compact` runs one compaction pass now (the
//! server also runs them in the background); `POST /api/v1/streams/{stream}/delete` deletes
//! rows matching a SQL predicate from the lake files (privacy requests), audit-logged, and
//! from the search indexes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};
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
    // Every acknowledged event must be visible to the search for matching rows, and reached
    // by the search indexer, so that it can remove them rather than skip them later.
    let search_progress = (state.consumers.iter())
        .find(|(name, _)| name == state.search.indexer_name())
        .map(|(_, progress)| progress.clone());
    let log = state.log.as_ref();
    let wait = state.query_freshness_wait;
    match &search_progress {
        Some(search) => {
            futures::join!(
                state.lake_progress.wait_caught_up(log, None, wait),
                search.wait_caught_up(log, None, wait)
            );
        }
        None => {
            state.lake_progress.wait_caught_up(log, None, wait).await;
        }
    }
    let sql = format!(
        "SELECT _partition, _offset, _time FROM \"{stream}\" WHERE {}",
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
    // (event time, partition, offset): search finds a row's hour by its time.
    let mut timed_rows = Vec::new();
    for batch in &result.batches {
        let (Some(partitions), Some(offsets), Some(times)) = (
            batch.column(0).as_primitive_opt::<Int32Type>(),
            batch.column(1).as_primitive_opt::<Int64Type>(),
            batch
                .column(2)
                .as_primitive_opt::<TimestampMillisecondType>(),
        ) else {
            return Err(ApiError::Internal(
                "the row search returned unexpected column types".to_string(),
            ));
        };
        for ((partition, offset), time) in partitions.iter().zip(offsets.iter()).zip(times.iter()) {
            if let (Some(partition), Some(offset), Some(time)) = (partition, offset, time) {
                let (Ok(partition), Ok(offset)) = (u32::try_from(partition), u64::try_from(offset))
                else {
                    continue;
                };
                timed_rows.push((time, partition, offset));
            }
        }
    }
    let mut rows: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    for (_, partition, offset) in &timed_rows {
        rows.entry(*partition).or_default().insert(*offset);
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
    let search = remove_from_search(&state, &stream, timed_rows, search_progress.is_some()).await;
    Ok(Json(json!({
        "stream": stream.as_str(),
        "predicate": request.predicate,
        "rows_matched": matched,
        "rows_deleted": report.rows_deleted,
        "rows_not_in_files": report.rows_not_in_files,
        "files_rewritten": report.files_rewritten,
        "search": search,
        "audit": audit,
    })))
}

/// How long a deletion waits for the search indexer to remove the rows (it does so at its
/// next tick, after any commit in progress).
const SEARCH_DELETE_WAIT: Duration = Duration::from_secs(30);

/// Removes the deleted rows from the search indexes (see `tw_search::SearchIndexes::delete_rows`)
/// and describes the outcome for the response: `docs_deleted` and `rows_not_indexed_yet`, or
/// an `error`, or `pending` when the indexer did not answer in time (the request stays queued
/// while the server runs).
async fn remove_from_search(
    state: &AppState,
    stream: &StreamName,
    rows: Vec<(i64, u32, u64)>,
    indexer_running: bool,
) -> Value {
    if !indexer_running {
        return json!({"error": "no search indexer is running: the rows stay searchable"});
    }
    let ticket = state.search.delete_rows(stream, rows);
    let answer = tokio::task::spawn_blocking(move || ticket.wait(SEARCH_DELETE_WAIT)).await;
    match answer {
        Ok(Some(Ok(deletion))) => json!(deletion),
        Ok(Some(Err(error))) => {
            tracing::error!(%error, %stream, "removing deleted rows from search failed");
            json!({"error": error.to_string()})
        }
        Ok(None) => json!({
            "pending": true,
            "message": "the search indexer has not removed the rows yet; it will while the server runs"
        }),
        Err(error) => json!({"error": format!("search deletion task failed: {error}")}),
    }
}
