//! Route table of the API (names per DESIGN.md; extend, never rename).

mod alerts;
mod dlq;
mod import;
mod ingest;
mod lake;
mod ops;
mod query;
mod rules;
mod search;
mod streams;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::AppState;

/// Every route; `limits` are the ingest limits (an import body may be as large as a
/// decompressed ingest body, see `import::import_limits`).
pub(crate) fn routes(limits: &tw_pipeline::IngestLimits) -> Router<Arc<AppState>> {
    let import_body_limit = import::import_limits(limits).max_body_bytes;
    Router::new()
        .route("/api/v1/streams", get(streams::list))
        .route(
            "/api/v1/streams/{stream}",
            get(streams::get).put(streams::put).delete(streams::delete),
        )
        .route("/api/v1/streams/{stream}/schema", get(streams::schema))
        .route("/api/v1/streams/{stream}/events", post(ingest::post_events))
        .route("/api/v1/streams/{stream}/search", get(search::search))
        .route("/api/v1/streams/{stream}/delete", post(lake::delete))
        .route(
            "/api/v1/streams/{stream}/import",
            post(import::import).layer(DefaultBodyLimit::max(import_body_limit)),
        )
        .route("/api/v1/rules", get(rules::list).post(rules::create))
        .route("/api/v1/rules/test", post(rules::test))
        .route(
            "/api/v1/rules/{id}",
            get(rules::get).put(rules::put).delete(rules::delete),
        )
        .route("/api/v1/rules/{id}/enable", post(rules::enable))
        .route("/api/v1/rules/{id}/disable", post(rules::disable))
        .route("/api/v1/rules/{id}/history", get(rules::history))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/stream", get(alerts::stream))
        .route("/api/v1/query", post(query::run))
        .route("/api/v1/lake/compact", post(lake::compact))
        .route("/api/v1/dlq", get(dlq::list))
        .route("/api/v1/dlq/replay", post(dlq::replay))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
}
