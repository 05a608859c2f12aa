//! `tidewatch bench`: measures a running server the way users load it, over HTTP.
//!
//! - `ingest`: durable HTTP ingest of generated CloudTrail-like events (fixed seed and rate,
//!   so the bytes equal `tidewatch gen` with the same arguments) with N requests in flight:
//!   events/s, MB/s, request latency percentiles; then how long detection, the lake and the
//!   search indexer take to drain (from `/metrics` consumer lag).
//! - `latency`: a steady rate of events, one in every batch matching a bench rule; the time
//!   from the ingest acknowledgement to the alert arriving on the SSE feed, p50/p99.
//! - `queries`: times SQL statements (each run several times, median reported).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::datagen::{Generator, Kind};

/// Percentile (nearest rank) of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The consumers a bench watches, in the order the pipeline promises them: detection, then
/// the lake, then search (which runs at the lowest priority and may catch up later).
pub(crate) const CONSUMERS: [&str; 3] = ["detect", "lake", "search"];

pub(crate) fn summary(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    json!({
        "count": samples.len(),
        "p50": percentile(&samples, 50.0),
        "p90": percentile(&samples, 90.0),
        "p99": percentile(&samples, 99.0),
        "max": samples.last().copied().unwrap_or(f64::NAN),
    })
}

/// What `ingest` sends and how: `rate` is the generator's events per simulated second from
/// 2024-03-01T00:00:00Z (`tidewatch gen`'s default start), which sets how many event-time
/// hours (lake and search partitions) the events span.
pub struct IngestPlan {
    /// Target stream.
    pub stream: String,
    /// Events in all.
    pub events: u64,
    /// Generator seed.
    pub seed: u64,
    /// Events per simulated second of event time.
    pub rate: u64,
    /// Events per request.
    pub batch: usize,
    /// Requests in flight.
    pub concurrency: usize,
}

/// Durable ingest throughput, then consumer drain times.
pub async fn ingest(server: &str, plan: IngestPlan) -> anyhow::Result<Value> {
    let IngestPlan {
        stream,
        events,
        seed,
        rate,
        batch,
        concurrency,
    } = plan;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let url = format!("{server}/api/v1/streams/{stream}/events");
    // Generate ahead on a blocking thread so the generator never limits the measurement.
    let (sender, receiver) = tokio::sync::mpsc::channel::<(String, usize)>(concurrency * 2);
    let producer = tokio::task::spawn_blocking(move || {
        let mut generator = Generator::new(Kind::Cloudtrail, seed, rate, 1_709_251_200);
        let mut left = events;
        while left > 0 {
            let n = (batch as u64).min(left) as usize;
            let mut body = String::with_capacity(n * 700);
            for _ in 0..n {
                generator.next_into(&mut body);
            }
            left -= n as u64;
            if sender.blocking_send((body, n)).is_err() {
                break;
            }
        }
    });
    let receiver = Arc::new(Mutex::new(receiver));
    let started = Instant::now();
    let workers = (0..concurrency.max(1)).map(|_| {
        let (client, url, receiver) = (client.clone(), url.clone(), receiver.clone());
        tokio::spawn(async move {
            let (mut latencies, mut bytes, mut accepted) = (Vec::new(), 0u64, 0u64);
            loop {
                let Some((body, _)) = receiver.lock().await.recv().await else {
                    break;
                };
                bytes += body.len() as u64;
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("ingest failed: {}", response.status());
                }
                let outcome: Value = response.json().await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                accepted += outcome["accepted"].as_u64().unwrap_or(0);
            }
            Ok((latencies, bytes, accepted))
        })
    });
    let (mut latencies, mut bytes, mut accepted) = (Vec::new(), 0, 0);
    for worker in futures::future::join_all(workers).await {
        let (l, b, a) = worker??;
        latencies.extend(l);
        bytes += b;
        accepted += a;
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    producer.await?;
    // Drain: wait until each consumer's lag is zero.
    let mut drained = serde_json::Map::new();
    let deadline = Instant::now() + Duration::from_secs(3600);
    for consumer in CONSUMERS {
        while consumer_lag(&client, server, consumer).await? > 0.0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "consumer {consumer} did not drain"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        drained.insert(
            consumer.into(),
            json!({ "drained_after_s": secs, "events_per_s": accepted as f64 / secs }),
        );
    }
    Ok(json!({
        "events": accepted,
        "bytes": bytes,
        "ingest_seconds": ingest_secs,
        "ingest_events_per_s": accepted as f64 / ingest_secs,
        "ingest_mb_per_s": bytes as f64 / 1e6 / ingest_secs,
        "request_latency_ms": summary(latencies),
        "rate": rate,
        "batch": batch,
        "concurrency": concurrency,
        "consumers": drained,
    }))
}

pub(crate) async fn consumer_lag(
    client: &reqwest::Client,
    server: &str,
    consumer: &str,
) -> anyhow::Result<f64> {
    let text = client
        .get(format!("{server}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let prefix = format!("tidewatch_consumer_lag_events{{consumer=\"{consumer}\"");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Steady-rate detection latency: acknowledgement → alert on the SSE feed.
pub async fn latency(server: &str, rate: u64, seconds: u64, seed: u64) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let stream = "bench-latency";
    let rule = json!({
        "id": "bench-latency-marker", "title": "bench marker", "stream": stream, "severity": "info",
        "match": { "field": "bench_marker", "exists": true }
    });
    let response = client
        .put(format!("{server}/api/v1/rules/bench-latency-marker"))
        .json(&rule)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "installing the bench rule: {}",
        response.text().await?
    );
    let acked: Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>> = Arc::default();
    let mut feed = client
        .get(format!("{server}/api/v1/alerts/stream"))
        .send()
        .await?
        .bytes_stream();
    let (found_tx, mut found_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let listener = tokio::spawn(async move {
        let mut buffer = String::new();
        while let Some(Ok(chunk)) = feed.next().await {
            let now = Instant::now();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                for line in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                    if let Ok(alert) = serde_json::from_str::<Value>(line.trim())
                        && let Some(id) = alert["events"][0]["bench_marker"].as_u64()
                    {
                        let _ = found_tx.send((id, now));
                    }
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ticks_per_second = 20u64;
    let per_tick = (rate / ticks_per_second).max(1) as usize;
    let mut generator = Generator::new(
        Kind::Cloudtrail,
        seed,
        rate.max(1),
        chrono::Utc::now().timestamp(),
    );
    let mut interval = tokio::time::interval(Duration::from_millis(1000 / ticks_per_second));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let url = format!("{server}/api/v1/streams/{stream}/events");
    let mut sends = Vec::new();
    for marker in 0..seconds * ticks_per_second {
        interval.tick().await;
        let mut body = String::with_capacity(per_tick * 700);
        for _ in 1..per_tick {
            generator.next_into(&mut body);
        }
        body.push_str(&format!(
            "{{\"bench_marker\":{marker},\"eventTime\":\"{}\"}}\n",
            chrono::Utc::now().to_rfc3339()
        ));
        let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
        sends.push(tokio::spawn(async move {
            let response = client.post(&url).body(body).send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "ingest failed: {}",
                response.status()
            );
            acked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(marker, Instant::now());
            Ok(())
        }));
    }
    for send in sends {
        send.await??;
    }
    let expected = seconds * ticks_per_second;
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (latencies.len() as u64) < expected && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), found_rx.recv()).await {
            Ok(Some((id, at))) => {
                if let Some(sent) = acked.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
                    latencies.push(at.saturating_duration_since(*sent).as_secs_f64() * 1000.0);
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    listener.abort();
    if (latencies.len() as u64) < expected {
        bail!(
            "only {} of {expected} marker alerts arrived",
            latencies.len()
        );
    }
    Ok(
        json!({ "rate_events_per_s": per_tick as u64 * ticks_per_second, "seconds": seconds, "alert_latency_ms": summary(latencies) }),
    )
}

/// Times each SQL statement `runs` times; reports the median and the first (cold) run.
pub async fn queries(server: &str, statements: &[String], runs: usize) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let mut results = Vec::new();
    for sql in statements {
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..runs.max(1) {
            let started = Instant::now();
            let response = client
                .post(format!("{server}/api/v1/query"))
                .json(&json!({ "sql": sql }))
                .send()
                .await
                .context("query")?;
            let status = response.status();
            let body: Value = response.json().await?;
            anyhow::ensure!(status.is_success(), "query failed: {body}");
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            rows = body["row_count"].as_u64().unwrap_or(0);
        }
        let first = times[0];
        times.sort_by(f64::total_cmp);
        results.push(json!({ "sql": sql, "rows": rows, "first_ms": first, "median_ms": times[times.len() / 2] }));
    }
    Ok(Value::Array(results))
}
