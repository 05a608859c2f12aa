//! `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tw_pipeline::{ConsumerProgress, Unready};

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

/// Ready when every consumer runs and none has been failing for longer than its threshold
/// (`RunnerConfig::unready_after_failing`): a consumer retrying a failing batch is alive, so
/// `/healthz` stays ok, but it makes no progress, and a load balancer or an operator must see
/// that. Ready again as soon as it recovers.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let (status, body) = readiness(&state.consumers);
    (status, Json(body))
}

/// The readiness answer for `consumers`, naming each one that makes the node not ready.
fn readiness(consumers: &[(String, Arc<ConsumerProgress>)]) -> (StatusCode, Value) {
    let failed: Vec<Value> = consumers
        .iter()
        .filter_map(|(name, progress)| {
            progress.unready().map(|unready| match unready {
                Unready::Stopped { error } => {
                    json!({"consumer": name, "state": "stopped", "error": error})
                }
                Unready::Failing {
                    failing_for,
                    attempts,
                    last_error,
                } => json!({
                    "consumer": name,
                    "state": "failing",
                    "error": last_error,
                    "failing_for_secs": failing_for.as_secs_f64(),
                    "failed_attempts": attempts,
                }),
            })
        })
        .collect();
    if failed.is_empty() {
        (StatusCode::OK, json!({ "status": "ready" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "not ready", "failed": failed }),
        )
    }
}

#[cfg(test)]
mod tests {

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use tw_core::{AppendRecord, StreamName};
    use tw_log::{DiskLog, Log, LogConfig, OffsetStore};
    use tw_pipeline::{DeadLetterQueue, RunnerConfig, spawn_consumer};

    use tw_testkit::consumer::Flaky;

    use super::*;

    async fn wait_for(consumers: &[(String, Arc<ConsumerProgress>)], wanted: StatusCode) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = readiness(consumers);
            if status == wanted {
                return body;
            }
            assert!(Instant::now() < deadline, "still {status}: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_failing_past_its_threshold_is_not_ready_until_it_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
        let stream = StreamName::new("s").unwrap();
        log.create_stream(&stream, 1).unwrap();
        let record = AppendRecord {
            ingest_time_ms: 1,
            event_time_ms: 1,
            key: Bytes::new(),
            payload: Bytes::from_static(b"{\"a\":1}"),
        };
        log.append(&stream, 0, vec![record]).await.unwrap();
        let broken = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let threshold = Duration::from_secs(1);
        let running = spawn_consumer(
            Flaky::boxed("flaky", broken.clone()),
            log.clone(),
            Arc::new(OffsetStore::open(dir.path().join("offsets")).unwrap()),
            DeadLetterQueue::open(log.clone()).unwrap(),
            RunnerConfig {
                unready_after_failing: threshold,
                ..RunnerConfig::default()
            },
            stop.clone(),
        )
        .unwrap();
        let consumers = vec![("flaky".to_string(), running.progress.clone())];

        // Failing, but not for long yet: still ready (a retried flush is no outage).
        while running.progress.failing().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (status, body) = readiness(&consumers);
        let failing_for = running.progress.failing().unwrap().since.elapsed();
        if failing_for < threshold {
            assert_eq!(status, StatusCode::OK, "{body}");
        }

        let body = wait_for(&consumers, StatusCode::SERVICE_UNAVAILABLE).await;
        let failed = &body["failed"][0];
        assert_eq!(failed["consumer"], "flaky", "{body}");
        assert_eq!(failed["state"], "failing", "{body}");
        assert_eq!(failed["error"], "flaky: disk full", "{body}");
        assert!(failed["failing_for_secs"].as_f64().unwrap() >= threshold.as_secs_f64());
        assert!(failed["failed_attempts"].as_u64().unwrap() >= 2, "{body}");
        assert_eq!(running.progress.position(&stream, 0), None);

        broken.store(false, Ordering::Relaxed);
        let body = wait_for(&consumers, StatusCode::OK).await;
        assert_eq!(body["status"], "ready");
        assert_eq!(running.progress.position(&stream, 0), Some(1));
        assert!(running.progress.failing().is_none());

        stop.store(true, Ordering::Relaxed);
        running.thread.join().unwrap();
    }
}
