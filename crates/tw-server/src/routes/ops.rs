//! `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::AppState;

pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub(crate) async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready when every consumer runs (none stopped on an error).
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let failed: Vec<_> = state
        .consumers
        .iter()
        .filter_map(|(name, progress)| {
            progress
                .failure()
                .map(|f| json!({"consumer": name, "error": f}))
        })
        .collect();
    if failed.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "failed": failed })),
        )
    }
}
