//! `tidewatch bench compat`: the cost of the compatible protocols against the native endpoint
//! on the same data — Kinesis `PutRecords` (500 records of 600 bytes per call, base64 in a JSON
//! body), Elasticsearch `_bulk` (500 documents per request) and native NDJSON (500 events per
//! request), each with the same number of requests in flight, into a stream of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::{Value, json};

/// Records per request (the PutRecords maximum).
const BATCH: usize = 500;
/// Size of each record.
const RECORD_BYTES: usize = 600;

/// One 600-byte JSON record.
fn record(i: usize) -> String {
    let mut text = format!(
        "{{\"eventTime\":\"2024-03-01T00:{:02}:{:02}Z\",\"user\":\"u{}\",\"seq\":{i},\"pad\":\"",
        (i / 60) % 60,
        i % 60,
        i % 997
    );
    let pad = RECORD_BYTES.saturating_sub(text.len() + 2);
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str("\"}");
    text
}

#[derive(Clone, Copy)]
enum Protocol {
    Native,
    Kinesis,
    Bulk,
}

/// A request body for records `start..start + BATCH`.
fn body(protocol: Protocol, stream: &str, start: usize) -> String {
    let records = (start..start + BATCH).map(record);
    match protocol {
        Protocol::Native => records.map(|r| r + "\n").collect(),
        Protocol::Bulk => records
            .map(|r| format!("{{\"create\":{{}}}}\n{r}\n"))
            .collect(),
        Protocol::Kinesis => {
            let entries: Vec<Value> = records
                .enumerate()
                .map(|(j, r)| {
                    json!({
                        "Data": base64::engine::general_purpose::STANDARD.encode(r),
                        "PartitionKey": format!("u{}", (start + j) % 997),
                    })
                })
                .collect();
            json!({ "StreamName": stream, "Records": entries }).to_string()
        }
    }
}

async fn run(
    client: &reqwest::Client,
    server: &str,
    protocol: Protocol,
    stream: &str,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<Value> {
    // Bodies are built before timing so only the server's work is measured.
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..requests)
            .map(|n| body(protocol, stream, n * BATCH))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..concurrency.max(1)).map(|_| {
        let (client, bodies, next) = (client.clone(), bodies.clone(), next.clone());
        let server = server.to_string();
        let stream = stream.to_string();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(n) else { break };
                let request = match protocol {
                    Protocol::Native => client
                        .post(format!("{server}/api/v1/streams/{stream}/events"))
                        .header("content-type", "application/x-ndjson"),
                    Protocol::Bulk => client
                        .post(format!("{server}/{stream}/_bulk"))
                        .header("content-type", "application/x-ndjson"),
                    Protocol::Kinesis => client
                        .post(format!("{server}/"))
                        .header("content-type", "application/x-amz-json-1.1")
                        .header("x-amz-target", "Kinesis_20131202.PutRecords"),
                };
                let sent = Instant::now();
                let response = request.body(body.clone()).send().await?;
                let status = response.status();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                let failed = match protocol {
                    Protocol::Native => answer["accepted"] != BATCH,
                    Protocol::Bulk => answer["errors"] != false,
                    Protocol::Kinesis => answer["FailedRecordCount"] != 0,
                };
                if !status.is_success() || failed {
                    bail!("{stream}: request failed ({status}): {answer}");
                }
            }
            Ok(latencies)
        })
    });
    let mut latencies = Vec::new();
    for worker in futures::future::join_all(workers).await {
        latencies.extend(worker??);
    }
    let secs = started.elapsed().as_secs_f64();
    let events = requests * BATCH;
    Ok(json!({
        "events": events,
        "seconds": secs,
        "events_per_s": events as f64 / secs,
        "payload_mb_per_s": (events * RECORD_BYTES) as f64 / 1e6 / secs,
        "request_latency_ms": crate::bench::summary(latencies),
    }))
}

/// CPU seconds (user + system) a local process has used, from `/proc/{pid}/stat`.
fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (--server-pid must be local)"))?;
    // Fields after the command name (which may hold spaces) close with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5); 100 ticks per second on Linux.
    Ok((ticks(11) + ticks(12)) / 100.0)
}

/// Waits until every consumer has read everything, then — with the server's pid — until
/// the server has been quiet for longer than the lake's age flush (10 s by default): a lake
/// flush, search merge or compaction of one protocol's data must not land in the next
/// protocol's CPU seconds (the first measurements did not wait for search, and charged
/// Kinesis with part of native's indexing). Returns the server's CPU seconds when the quiet
/// began, so the idle polling of the wait itself is not counted.
async fn wait_for_idle_consumers(
    client: &reqwest::Client,
    server: &str,
    server_pid: Option<u32>,
) -> anyhow::Result<Option<f64>> {
    for consumer in ["detect", "lake", "search"] {
        while crate::bench::consumer_lag(client, server, consumer).await? > 0.0 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let Some(pid) = server_pid else {
        return Ok(None);
    };
    // Quiet: under 10 % of a core (idle consumers poll) for 12 consecutive seconds; give up
    // after two minutes.
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let mut quiet_seconds = 0;
    let mut last = process_cpu_seconds(pid)?;
    let mut quiet_since = last;
    while quiet_seconds < 12 && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = process_cpu_seconds(pid)?;
        if now - last < 0.1 {
            quiet_seconds += 1;
        } else {
            quiet_seconds = 0;
            quiet_since = now;
        }
        last = now;
    }
    Ok(Some(quiet_since))
}

/// Native vs Kinesis vs `_bulk` on the same records. With `server_pid` (a server on this
/// machine), also the server's CPU seconds per protocol, ingest plus detection and lake work
/// until the consumers are idle: on a shared machine this is steadier than wall-clock rates.
pub async fn compat(
    server: &str,
    events: u64,
    concurrency: usize,
    server_pid: Option<u32>,
) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()?;
    let requests = (events as usize).div_ceil(BATCH).max(1);
    let created = client
        .post(format!("{server}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "Kinesis_20131202.CreateStream")
        .body(json!({ "StreamName": "bench-kinesis", "ShardCount": 4 }).to_string())
        .send()
        .await
        .context("creating the Kinesis stream")?;
    let text = created.text().await?;
    anyhow::ensure!(
        !text.contains("__type") || text.contains("ResourceInUseException"),
        "creating the Kinesis stream: {text}"
    );
    let mut report = serde_json::Map::new();
    for (name, protocol, stream) in [
        ("native_ndjson", Protocol::Native, "bench-native"),
        ("kinesis_put_records", Protocol::Kinesis, "bench-kinesis"),
        ("elasticsearch_bulk", Protocol::Bulk, "bench-bulk"),
    ] {
        // Each protocol starts with idle consumers, so none pays for the previous one's
        // detection and lake work.
        wait_for_idle_consumers(&client, server, server_pid).await?;
        let cpu_before = server_pid.map(process_cpu_seconds).transpose()?;
        let mut result = run(&client, server, protocol, stream, requests, concurrency).await?;
        if let (Some(after), Some(before)) = (
            wait_for_idle_consumers(&client, server, server_pid).await?,
            cpu_before,
        ) {
            result["server_cpu_seconds"] = json!(after - before);
        }
        report.insert(name.into(), result);
    }
    let native = report["native_ndjson"]["events_per_s"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let native_cpu = report["native_ndjson"]["server_cpu_seconds"].as_f64();
    for name in ["kinesis_put_records", "elasticsearch_bulk"] {
        let rate = report[name]["events_per_s"].as_f64().unwrap_or(f64::NAN);
        report[name]["relative_to_native"] = json!(rate / native);
        if let (Some(cpu), Some(native_cpu)) =
            (report[name]["server_cpu_seconds"].as_f64(), native_cpu)
        {
            report[name]["cpu_relative_to_native"] = json!(cpu / native_cpu);
        }
    }
    report.insert(
        "setup".into(),
        json!({ "records_per_request": BATCH, "record_bytes": RECORD_BYTES, "concurrency": concurrency }),
    );
    Ok(Value::Object(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_600_bytes_of_json() {
        for i in [0, 7, 123_456] {
            let text = record(i);
            assert_eq!(text.len(), RECORD_BYTES);
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["seq"], i);
        }
    }
}
