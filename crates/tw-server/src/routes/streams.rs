//! `GET /api/v1/streams`, `GET|PUT|DELETE /api/v1/streams/{stream}`,
//! `GET /api/v1/streams/{stream}/schema`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use tw_core::{StreamConfig, StreamName};

use crate::{ApiError, AppState};

#[derive(Serialize)]
pub(crate) struct StreamView {
    name: String,
    config: StreamConfig,
    partitions: Vec<PartitionView>,
    columns: Vec<String>,
}

#[derive(Serialize)]
struct PartitionView {
    partition: u32,
    start_offset: u64,
    end_offset: u64,
    size_bytes: u64,
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<StreamView>>, ApiError> {
    let views = state
        .ingestor
        .registry()
        .list()
        .iter()
        .map(|s| view(&state, &s.name, &s.config))
        .collect::<Result<_, _>>()?;
    Ok(Json(views))
}

pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
) -> Result<Json<StreamView>, ApiError> {
    let name = parse_name(&stream)?;
    let stream = state
        .ingestor
        .registry()
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("stream {name} does not exist")))?;
    Ok(Json(view(&state, &stream.name, &stream.config)?))
}

pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<StreamView>, ApiError> {
    let name = parse_name(&stream)?;
    let config: StreamConfig = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid stream configuration: {e}")))?;
    let stored = state.ingestor.registry().put(&name, config, true)?;
    Ok(Json(view(&state, &stored.name, &stored.config)?))
}

#[derive(Serialize)]
pub(crate) struct DeletedView {
    #[serde(flatten)]
    deletion: tw_pipeline::StreamDeletion,
    /// Where the lake keeps the stream's files from now on.
    lake_archive: String,
}

/// Deletes a stream: its log, configuration and consumer offsets, hot data and search
/// indexes; its lake files move to the lake's archive (see `tw_pipeline::delete`).
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
) -> Result<Json<DeletedView>, ApiError> {
    let name = parse_name(&stream)?;
    let deletion = state
        .ingestor
        .delete_stream(&name, &state.consumers, tw_pipeline::DELETE_WAIT)
        .await?;
    let lake_archive = state
        .lake
        .storage()
        .describe(&format!("{}/{name}/", tw_lake::DELETED_DIR));
    Ok(Json(DeletedView {
        deletion,
        lake_archive,
    }))
}

/// The stream's lake schema: columns, types, when each appeared, type conflicts, widenings.
pub(crate) async fn schema(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
) -> Result<Json<tw_lake::StreamSchema>, ApiError> {
    let name = parse_name(&stream)?;
    if let Some(schema) = state.lake.stream_schema(&name) {
        return Ok(Json(schema));
    }
    // Tell a typo apart from a stream that exists but has no data in the lake yet.
    let message = if state.ingestor.registry().get(&name).is_some() {
        format!("stream {name} has no data in the lake yet, so it has no schema")
    } else {
        format!("stream {name} does not exist")
    };
    Err(ApiError::not_found(message))
}

fn parse_name(stream: &str) -> Result<StreamName, ApiError> {
    StreamName::new(stream).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn view(
    state: &AppState,
    name: &StreamName,
    config: &StreamConfig,
) -> Result<StreamView, ApiError> {
    let partitions = (0..config.partitions)
        .map(|p| {
            Ok(PartitionView {
                partition: p,
                start_offset: state.log.start_offset(name, p)?,
                end_offset: state.log.end_offset(name, p)?,
                size_bytes: state.log.size_bytes(name, p)?,
            })
        })
        .collect::<Result<_, tw_log::LogError>>()?;
    let columns = state
        .lake
        .table_schema(name)
        .map(|s| s.fields().iter().map(|f| f.name().clone()).collect())
        .unwrap_or_default();
    Ok(StreamView {
        name: name.to_string(),
        config: config.clone(),
        partitions,
        columns,
    })
}
