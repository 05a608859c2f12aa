//! `GET /api/v1/dlq` and `POST /api/v1/dlq/replay`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tw_pipeline::{ContentEncoding, DlqEntry};

use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DlqQuery {
    from: Option<u64>,
    limit: Option<usize>,
    stream: Option<String>,
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Query(query): Query<DlqQuery>,
) -> Result<Json<Value>, ApiError> {
    let entries = read(
        &state,
        query.from.unwrap_or(0),
        query.limit.unwrap_or(100).min(10_000),
        query.stream,
    )
    .await?;
    let total = state.ingestor.dlq().len()?;
    Ok(Json(json!({ "total": total, "entries": entries })))
}

/// Replays dead letters through the ingest path: the ones given by `ids`, or `limit` entries
/// from `from` (optionally of one stream). Records that fail again land in the queue again
/// with the new reason; the replayed entries stay (the queue is an append-only record).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayRequest {
    #[serde(default)]
    ids: Option<Vec<u64>>,
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    stream: Option<String>,
}

pub(crate) async fn replay(
    State(state): State<Arc<AppState>>,
    Json(request): Json<ReplayRequest>,
) -> Result<Json<Value>, ApiError> {
    let entries = match &request.ids {
        Some(ids) => {
            let mut found = Vec::with_capacity(ids.len());
            for id in ids {
                let entry = read(&state, *id, 1, None)
                    .await?
                    .into_iter()
                    .find(|e| e.id == *id);
                found.push(entry.ok_or_else(|| {
                    ApiError::not_found(format!("dead letter {id} does not exist"))
                })?);
            }
            found
        }
        None => {
            read(
                &state,
                request.from.unwrap_or(0),
                request.limit.unwrap_or(1000).min(100_000),
                request.stream.clone(),
            )
            .await?
        }
    };
    // One ingest call per stream, one record per line: the ingest path reports per line again.
    // A letter holding only the beginning of its record, or none of it (records damage on
    // disk made unreadable), cannot give the record back.
    let (entries, not_replayed): (Vec<_>, Vec<_>) = entries.into_iter().partition(|entry| {
        entry.letter.raw_truncated_from.is_none() && !entry.letter.raw.is_empty()
    });
    let mut by_stream: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in &entries {
        let body = by_stream.entry(entry.letter.stream.clone()).or_default();
        body.extend(
            entry
                .letter
                .raw_bytes()
                .iter()
                .map(|b| if *b == b'\n' { b' ' } else { *b }),
        );
        body.push(b'\n');
    }
    let (mut accepted, mut rejected) = (0, 0);
    for (stream, body) in by_stream {
        let outcome = state
            .ingestor
            .ingest_body(&stream, Bytes::from(body), ContentEncoding::Identity)
            .await?;
        accepted += outcome.accepted;
        rejected += outcome.rejected.len();
    }
    Ok(Json(json!({
        "replayed": entries.len(),
        "accepted": accepted,
        "rejected_again": rejected,
        "not_replayed": not_replayed.iter().map(|e| e.id).collect::<Vec<_>>(),
    })))
}

async fn read(
    state: &Arc<AppState>,
    from: u64,
    limit: usize,
    stream: Option<String>,
) -> Result<Vec<DlqEntry>, ApiError> {
    let dlq = state.ingestor.dlq().clone();
    tokio::task::spawn_blocking(move || dlq.list(from, limit, stream.as_deref()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}
