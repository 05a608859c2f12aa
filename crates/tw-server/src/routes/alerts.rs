//! `GET /api/v1/alerts` and the live feed `GET /api/v1/alerts/stream` (server-sent events).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tw_alerts::AlertFilter;
use tw_core::{Alert, Severity};

use crate::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertQuery {
    /// RFC 3339 or Unix milliseconds: alerts raised at or after.
    since: Option<String>,
    rule: Option<String>,
    /// Minimum severity.
    severity: Option<String>,
    stream: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Query(query): Query<AlertQuery>,
) -> Result<Json<Vec<Alert>>, ApiError> {
    let since_ms = query
        .since
        .as_deref()
        .map(|text| {
            tw_core::parse_time_ms(&serde_json::Value::String(text.to_string()))
                .ok_or_else(|| ApiError::bad_request(format!("`since` is not a time: {text:?}")))
        })
        .transpose()?;
    let min_severity = query
        .severity
        .as_deref()
        .map(str::parse::<Severity>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let filter = AlertFilter {
        since_ms,
        rule_id: query.rule,
        min_severity,
        stream: query.stream,
        limit: query.limit.unwrap_or(1000).min(100_000),
    };
    Ok(Json(state.alerts.list(&filter)))
}

pub(crate) async fn stream(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.alerts.subscribe();
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(alert) => Event::default()
                .event("alert")
                .json_data(&alert)
                .unwrap_or_else(|_| Event::default().comment("unserialisable alert")),
            // A slow reader missed alerts: say how many, so it can fetch them from /api/v1/alerts.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                Event::default().event("lagged").data(missed.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    // A feed lasts until its client leaves, or until the server stops: the graceful stop
    // waits for open connections, and would wait for this one forever.
    let mut stopping = state.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    Sse::new(events.take_until(stopped)).keep_alive(KeepAlive::default())
}
