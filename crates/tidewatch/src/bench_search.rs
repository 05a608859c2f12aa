//! `tidewatch bench search`: latency of full-text searches on a running server that already
//! holds data (e.g. after `bench ingest`). Reports client-side wall time (HTTP included) and
//! the server's own `took_ms`, as p50 / p99 / max over `runs` repetitions of each query.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::client::with_api_key;

/// Runs every query `runs` times (after one warm-up) and reports percentiles.
pub async fn search(
    server: &str,
    stream: &str,
    queries: &[String],
    runs: usize,
) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = format!(
        "{}/api/v1/streams/{stream}/search",
        server.trim_end_matches('/')
    );
    let mut results = Vec::new();
    for query in queries {
        let mut wall = Vec::new();
        let mut took = Vec::new();
        let mut total = 0;
        for run in 0..=runs.max(1) {
            let started = Instant::now();
            let response = with_api_key(
                client
                    .get(&url)
                    .query(&[("q", query.as_str()), ("limit", "10")]),
            )
            .send()
            .await
            .context("search")?;
            let status = response.status();
            let body: Value = response.json().await?;
            anyhow::ensure!(status.is_success(), "search {query:?} failed: {body}");
            if run == 0 {
                continue; // warm-up: first open of the indexes
            }
            wall.push(started.elapsed().as_secs_f64() * 1000.0);
            took.push(body["took_ms"].as_f64().unwrap_or(f64::NAN));
            total = body["total"].as_u64().unwrap_or(0);
        }
        results.push(json!({
            "query": query,
            "total": total,
            "runs": wall.len(),
            "wall_ms": percentiles(&mut wall),
            "server_ms": percentiles(&mut took),
        }));
    }
    Ok(Value::Array(results))
}

fn percentiles(values: &mut [f64]) -> Value {
    values.sort_by(f64::total_cmp);
    let at =
        |q: f64| values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1];
    json!({ "p50": at(0.5), "p99": at(0.99), "max": at(1.0) })
}
