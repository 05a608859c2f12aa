//! The cost of Kinesis `PutRecords` against the native NDJSON path on the same records, in
//! process (no HTTP, which costs both the same): 500 records of 600 bytes per request, as in
//! `tidewatch bench compat`, into a real disk log.
//!
//! ```sh
//! cargo build --example putrecords_cost
//! target/debug/examples/putrecords_cost kinesis 200      # wall time per 1M records
//! # Instructions (repeatable on a noisy machine): N requests sent minus the same N built only
//! # ("dry"), divided by the records: what the server spends per record.
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/debug/examples/putrecords_cost kinesis 40
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/debug/examples/putrecords_cost kinesis 40 dry
//! ```

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;
use tw_compat::{Auth, AuthConfig, CompatState, DedupStore};
use tw_log::{DiskLog, Log, LogConfig};
use tw_pipeline::{
    ContentEncoding, DeadLetterQueue, IngestLimits, Ingestor, StreamDefaults, StreamRegistry,
};

const BATCH: usize = 500;
const RECORD_BYTES: usize = 600;

/// The benchmark's 600-byte record (`bench_compat.rs`).
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

fn kinesis_body(start: usize) -> Bytes {
    let records: Vec<_> = (start..start + BATCH)
        .map(|i| {
            json!({
                "Data": base64::engine::general_purpose::STANDARD.encode(record(i)),
                "PartitionKey": format!("u{}", i % 997),
            })
        })
        .collect();
    Bytes::from(json!({ "StreamName": "k", "Records": records }).to_string())
}

fn native_body(start: usize) -> Bytes {
    Bytes::from(
        (start..start + BATCH)
            .map(|i| record(i) + "\n")
            .collect::<String>(),
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "kinesis".into());
    let requests: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(100);
    let dry = args.next().is_some_and(|a| a == "dry");
    let dir = tempfile::tempdir().expect("tempdir");
    let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path().join("log"))).expect("log");
    let dlq = DeadLetterQueue::open(log.clone()).expect("dlq");
    let registry = Arc::new(
        StreamRegistry::open(
            &dir.path().join("streams"),
            log.clone(),
            StreamDefaults::default(),
        )
        .expect("registry"),
    );
    let ingestor = Arc::new(Ingestor::new(
        log.clone(),
        registry,
        dlq,
        IngestLimits::default(),
    ));
    let state = Arc::new(CompatState {
        ingestor: ingestor.clone(),
        log: log.clone(),
        auth: Arc::new(Auth::new(AuthConfig::default())),
        dedup: DedupStore::open(log.clone(), 1000).expect("dedup"),
        consumers: Vec::new(),
    });
    let create = json!({ "StreamName": "k", "ShardCount": 4 }).to_string();
    tw_compat::kinesis::dispatch(&state, "CreateStream", create.as_bytes(), "us-east-1")
        .await
        .expect("create");
    ingestor
        .registry()
        .get_or_create(&tw_core::StreamName::new("n").expect("name"))
        .expect("native stream");
    // Bodies are built before timing, as the benchmark's client does.
    let bodies: Vec<Bytes> = (0..requests)
        .map(|n| match path.as_str() {
            "native" => native_body(n * BATCH),
            _ => kinesis_body(n * BATCH),
        })
        .collect();
    let started = Instant::now();
    for body in bodies.into_iter().filter(|_| !dry) {
        match path.as_str() {
            "native" => {
                let outcome = ingestor
                    .ingest_body("n", body, ContentEncoding::Identity)
                    .await
                    .expect("native ingest");
                assert_eq!(outcome.accepted, BATCH);
            }
            _ => {
                let response =
                    tw_compat::kinesis::dispatch(&state, "PutRecords", &body, "us-east-1")
                        .await
                        .expect("PutRecords");
                assert!(response.status().is_success());
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let records = requests * BATCH;
    println!(
        "{}",
        json!({
            "path": path,
            "records": records,
            "seconds": seconds,
            "seconds_per_million": seconds / records.max(1) as f64 * 1e6,
        })
    );
}
