//! The HTTP face of Tidewatch: the native API, health and Prometheus metrics, on axum.
//!
//! Handlers are thin: they translate HTTP into calls on the stages (ingest path, rule registry,
//! alert store, query engine) and map every error to a small set of outcomes in one place
//! ([`ApiError`]). Nothing here owns data; the binary builds an [`AppState`] and serves it.

mod error;
mod replay;
mod routes;
mod rules;

pub use error::ApiError;
pub use replay::{LakeHistory, MAX_REPLAY_EVENTS, ReplayOutcome, replay_events, replay_stored};
pub use rules::{RuleChange, RuleRegistry, RuleRegistryError, RuleSet, Upserted};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use metrics_exporter_prometheus::PrometheusHandle;
use tw_alerts::AlertStore;
use tw_lake::Lake;
use tw_log::Log;
use tw_pipeline::{ConsumerProgress, Ingestor};
use tw_query::QueryEngine;

/// Everything the handlers reach.
pub struct AppState {
    /// The durable log.
    pub log: Arc<dyn Log>,
    /// The one append path.
    pub ingestor: Arc<Ingestor>,
    /// Remembered idempotency keys of the native ingest (shared with the compatible APIs'
    /// request ids and `_id`s).
    pub dedup: Arc<tw_pipeline::DedupStore>,
    /// Rules, versioned.
    pub rules: Arc<RuleRegistry>,
    /// Stored alerts.
    pub alerts: AlertStore,
    /// The lake (schemas, hot data).
    pub lake: Lake,
    /// SQL.
    pub query: Arc<QueryEngine>,
    /// Progress of the lake consumer: queries wait for it so they see every acknowledged event.
    pub lake_progress: Arc<ConsumerProgress>,
    /// Every consumer by name, for readiness.
    pub consumers: Vec<(String, Arc<ConsumerProgress>)>,
    /// Prometheus renderer.
    pub metrics: PrometheusHandle,
    /// How long a query waits for the lake consumer to catch up with the log.
    pub query_freshness_wait: Duration,
    /// How Sigma rules posted to the API are translated (logsource → stream, field names).
    pub sigma: Arc<tw_sigma::SigmaConfig>,
    /// Engine settings of live detection, used by dry runs too (same lateness, same limits).
    pub engine_config: tw_detect::EngineConfig,
    /// Full-text indexes of raw events.
    pub search: tw_search::SearchIndexes,
    /// Becomes true when the server starts to stop: long-lived answers (the live alert feed)
    /// end, so the graceful stop does not wait on them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

/// The router with every route of the API.
pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.ingestor.limits().max_body_bytes;
    routes::routes(state.ingestor.limits())
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The name recorded as the author of a change: the `X-Tidewatch-User` header, else
/// `anonymous`.
pub(crate) fn who(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-tidewatch-user")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(|v| v.chars().take(128).collect())
        .unwrap_or_else(|| "anonymous".to_string())
}
