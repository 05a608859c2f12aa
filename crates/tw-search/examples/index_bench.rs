//! Indexing cost of the search consumer: CloudTrail-like events (~650 bytes, one hour of
//! event time) added in batches of 5,000 and committed every 50,000 (or `commit_docs`), as
//! under sustained load, then a final commit and the background merges finished. One indexer,
//! one stream.
//!
//! Run with `cargo run --release -p tw-search --example index_bench [events] [commit_docs]`.
//! Prints CPU seconds (every thread, merges included) per million events, the index size and
//! the median latency of a few searches over the finished index as JSON.
//! `valgrind --tool=callgrind` on it counts instructions repeatably.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tw_core::{Record, StreamName};
use tw_pipeline::EventBatch;
use tw_search::{SearchConfig, SearchIndexes, SearchRequest};

const NAMES: &[&str] = &[
    "GetObject",
    "PutObject",
    "ListBuckets",
    "DescribeInstances",
    "AssumeRole",
    "ConsoleLogin",
    "CreateUser",
    "AttachUserPolicy",
];
const REGIONS: &[&str] = &["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"];
const AGENTS: &[&str] = &[
    "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.ubuntu.22",
    "Boto3/1.34.0 Python/3.12.1 Linux/6.5 Botocore/1.34.0",
    "console.amazonaws.com",
    "aws-sdk-go-v2/1.24.0 os/linux lang/go#1.21.5",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn event(rng: &mut Rng, i: u64) -> Value {
    let name = rng.pick(NAMES);
    let user = rng.next() % 5000;
    json!({
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": format!("AIDA{:016X}", user),
            "arn": format!("arn:aws:iam::123456789012:user/user{user}"),
            "accountId": "123456789012",
            "accessKeyId": format!("AKIA{:016X}", rng.next() % 100_000),
            "userName": format!("user{user}")
        },
        "eventTime": "2024-03-01T00:00:00Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": name,
        "awsRegion": rng.pick(REGIONS),
        "sourceIPAddress": format!("{}.{}.{}.{}", rng.next() % 223 + 1, rng.next() % 256, rng.next() % 256, rng.next() % 256),
        "userAgent": rng.pick(AGENTS),
        "requestParameters": {"bucketName": format!("bucket-{}", rng.next() % 300), "key": format!("data/{}/part-{}.json", rng.next() % 1000, i % 97)},
        "responseElements": null,
        "requestID": format!("{:016X}", rng.next()),
        "eventID": format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", rng.next() as u32, rng.next() as u16, rng.next() % 4096, rng.next() % 4096, rng.next() % (1 << 48)),
        "readOnly": name.starts_with("Get") || name.starts_with("List") || name.starts_with("Describe"),
        "eventType": "AwsApiCall",
        "managementEvent": false,
        "recipientAccountId": "123456789012"
    })
}

/// Searches timed over the finished index: bare words (every field), a bare phrase and
/// wildcard, and field terms.
const SEARCHES: &[&str] = &[
    "consolelogin",
    "user42",
    "\"aws-cli/2.15.0\"",
    "boto*",
    "eventName:ConsoleLogin",
    "userIdentity.userName:user42",
];

/// Median milliseconds of 7 runs of `query` (counting every hit, fetching the newest 100),
/// with the number of hits.
fn search_latency(indexes: &SearchIndexes, stream: &StreamName, query: &str) -> Value {
    let request = SearchRequest {
        query: query.to_string(),
        from_ms: None,
        to_ms: None,
        limit: 100,
    };
    let mut hits = 0;
    let mut millis: Vec<f64> = (0..7)
        .map(|_| {
            let started = Instant::now();
            hits = indexes.search(stream, &request).expect("searches").total;
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    millis.sort_by(f64::total_cmp);
    json!({ "median_ms": millis[millis.len() / 2], "hits": hits })
}

/// CPU seconds this process has used, every thread (user + system, `/proc/self/stat`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn main() {
    let count: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let start_ms = 1_709_251_200_000; // 2024-03-01T00:00:00Z
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let stream = StreamName::new("cloudtrail").expect("valid name");
    let batch_size = 5_000;
    let batches: Vec<EventBatch> = (0..count)
        .collect::<Vec<_>>()
        .chunks(batch_size)
        .map(|chunk| {
            let events: Vec<Value> = chunk.iter().map(|&i| event(&mut rng, i)).collect();
            let records = chunk
                .iter()
                .zip(&events)
                .map(|(&i, event)| Record {
                    offset: i,
                    ingest_time_ms: start_ms,
                    // Spread over one hour, in order.
                    event_time_ms: start_ms + (i * 3_600_000 / count) as i64,
                    key: Bytes::new(),
                    payload: Bytes::from(event.to_string()),
                })
                .collect();
            EventBatch {
                stream: stream.clone(),
                partition: 0,
                records,
                events,
                checked: Vec::new(),
                fields: Vec::new(),
            }
        })
        .collect();
    let raw_bytes: usize = batches
        .iter()
        .flat_map(|b| &b.records)
        .map(|r| r.payload.len() + 1)
        .sum();
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("search");
    let mut config = SearchConfig::new(&root);
    // Commits every this many documents (default 50,000; about one second of load is nearer
    // what a server under load does).
    if let Some(docs) = std::env::args().nth(2).and_then(|a| a.parse().ok()) {
        config.commit_max_docs = docs;
    }
    let indexes = SearchIndexes::open(config).expect("opens");
    let mut indexer = indexes.indexer();
    indexer.start_at(&BTreeMap::new()).expect("starts");
    let (cpu_started, started) = (cpu_seconds(), Instant::now());
    for batch in &batches {
        indexer.write(batch).expect("indexes");
    }
    indexer.commit_all().expect("commits");
    let indexing = started.elapsed();
    // Merges run on tantivy's threads after the last commit: wait until the process is idle.
    let mut last = cpu_seconds();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = cpu_seconds();
        if now - last < 0.02 {
            break;
        }
        last = now;
    }
    let cpu = cpu_seconds() - cpu_started;
    drop(indexer);
    let searches: serde_json::Map<String, Value> = SEARCHES
        .iter()
        .map(|query| (query.to_string(), search_latency(&indexes, &stream, query)))
        .collect();
    let report = json!({
        "events": count,
        "raw_ndjson_bytes": raw_bytes,
        "index_bytes": dir_bytes(&root),
        "wall_seconds_until_last_commit": indexing.as_secs_f64(),
        "cpu_seconds_with_merges": cpu,
        "cpu_seconds_per_million_events": cpu * 1e6 / count as f64,
        "searches": searches,
    });
    println!("{report}");
}
