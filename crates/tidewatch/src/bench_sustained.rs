//! `tidewatch bench sustained`: holds a fixed ingest rate for a while and watches whether each
//! consumer keeps up with it (its lag, sampled from `/metrics`, stays bounded), the way a
//! production load arrives, rather than flooding the server as `bench ingest` does.
//!
//! The bodies are generated before the clock starts, so generating them takes no CPU from the
//! server while it is measured (a real producer runs elsewhere); sending them still does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::bench::{CONSUMERS, consumer_lag, summary};
use crate::datagen::{Generator, Kind};

/// Requests sent per second; each carries `rate / TICKS_PER_SECOND` events.
const TICKS_PER_SECOND: u64 = 10;
/// Requests in flight at most: beyond that the client waits, and the achieved rate shows it.
const MAX_IN_FLIGHT: usize = 16;

/// What `sustained` sends.
pub struct SustainedPlan {
    pub stream: String,
    /// Events per second to hold.
    pub rate: u64,
    pub seconds: u64,
    pub seed: u64,
}

/// Sends `plan.rate` events/s for `plan.seconds` while sampling the consumers' lags about
/// every 500 ms, then waits until detection and the lake have caught up. A consumer kept up
/// when its lag at the end of sending is under one second of events.
pub async fn sustained(server: &str, plan: SustainedPlan) -> anyhow::Result<Value> {
    let SustainedPlan {
        stream,
        rate,
        seconds,
        seed,
    } = plan;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let per_tick = (rate / TICKS_PER_SECOND).max(1) as usize;
    let ticks = seconds * TICKS_PER_SECOND;
    let bodies = tokio::task::spawn_blocking(move || {
        let mut generator = Generator::new(Kind::Cloudtrail, seed, rate.max(1), 1_709_251_200);
        (0..ticks)
            .map(|_| {
                let mut body = String::with_capacity(per_tick * 700);
                for _ in 0..per_tick {
                    generator.next_into(&mut body);
                }
                body
            })
            .collect::<Vec<String>>()
    })
    .await?;
    let bytes: usize = bodies.iter().map(String::len).sum();

    let url = format!("{server}/api/v1/streams/{stream}/events");
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (client, server, sampling) = (client.clone(), server.to_string(), sampling.clone());
        async move {
            let mut largest: BTreeMap<&str, f64> = BTreeMap::new();
            while sampling.load(Ordering::Relaxed) {
                for consumer in CONSUMERS {
                    let lag = consumer_lag(&client, &server, consumer).await?;
                    let seen = largest.entry(consumer).or_default();
                    *seen = seen.max(lag);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            anyhow::Ok(largest)
        }
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut interval = tokio::time::interval(Duration::from_millis(1000 / TICKS_PER_SECOND));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::with_capacity(bodies.len());
    let started = Instant::now();
    for body in bodies {
        interval.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (client, url) = (client.clone(), url.clone());
        sends.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = client
                .post(&url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let outcome: Value = response.json().await.unwrap_or(Value::Null);
            drop(permit);
            anyhow::ensure!(status.is_success(), "ingest failed: {status} {outcome}");
            let accepted = outcome["accepted"].as_u64().unwrap_or(0);
            Ok((sent.elapsed().as_secs_f64() * 1000.0, accepted))
        }));
    }
    let (mut latencies, mut accepted) = (Vec::new(), 0u64);
    for send in sends {
        let (latency, count) = send.await??;
        latencies.push(latency);
        accepted += count;
    }
    let sending_secs = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let largest = sampler.await??;

    // Every lag at the end is read before waiting for any consumer to catch up.
    let mut at_end = Vec::with_capacity(CONSUMERS.len());
    for consumer in CONSUMERS {
        at_end.push(consumer_lag(&client, server, consumer).await?);
    }
    let mut consumers = serde_json::Map::new();
    let deadline = Instant::now() + Duration::from_secs(3600);
    for (consumer, at_end) in CONSUMERS.into_iter().zip(at_end) {
        let max = largest.get(consumer).copied().unwrap_or(0.0).max(at_end);
        let mut report = json!({
            "lag_at_end_events": at_end,
            "max_lag_events": max,
            "kept_up": at_end < rate as f64,
        });
        // Detection and the lake are waited for; search is reported as it stands.
        if consumer != "search" {
            while consumer_lag(&client, server, consumer).await? > 0.0 {
                if Instant::now() > deadline {
                    bail!("consumer {consumer} did not drain");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            report["caught_up_after_end_s"] = json!(started.elapsed().as_secs_f64() - sending_secs);
        }
        consumers.insert(consumer.into(), report);
    }
    Ok(json!({
        "target_events_per_s": per_tick as u64 * TICKS_PER_SECOND,
        "achieved_events_per_s": accepted as f64 / sending_secs,
        "events": accepted,
        "mb_per_s": bytes as f64 / 1e6 / sending_secs,
        "seconds": sending_secs,
        "request_latency_ms": summary(latencies),
        "consumers": consumers,
    }))
}
