//! Match-rule throughput on already-parsed batches: 60 single-event rules of mixed operators
//! (equals, in, contains, startswith, endswith, wildcard, regex, cidr, numeric, named
//! selections, one keyword search) over CloudTrail-like events, one thread.
//!
//! Run with `cargo run --release -p tw-detect --example match_bench [events] [rounds] [fresh]`.
//! Prints events/s per core as JSON, measured two ways: on fresh batches (each batch of 1,024
//! parsed just before `evaluate`, as the detection consumer does; only `evaluate` is timed,
//! best round) and on resident events (all parsed up front, so field reads mostly miss the CPU
//! caches; CPU time of the best round). Numbers from a debug build are not meaningful.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tw_core::Record;
use tw_detect::{Engine, EngineConfig, RuleFormat, parse_rule};

/// The server's allocator, so the figures are those of the deployed binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Most CloudTrail traffic is routine reads.
const COMMON_NAMES: &[&str] = &[
    "GetObject",
    "PutObject",
    "ListBuckets",
    "DescribeInstances",
    "AssumeRole",
];
/// The calls detection rules look for (1% of events together).
const EVENT_NAMES: &[&str] = &[
    "ConsoleLogin",
    "CreateUser",
    "AttachUserPolicy",
    "DeleteTrail",
    "StopLogging",
    "RunInstances",
    "GetSecretValue",
    "PutBucketPolicy",
];
const REGIONS: &[&str] = &["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"];
const AGENTS: &[&str] = &[
    "aws-cli/2.15.0 Python/3.11.6 Linux/6.1",
    "Boto3/1.34.0 Python/3.12.1",
    "console.amazonaws.com",
    "aws-sdk-go-v2/1.24.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
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
    let name = if rng.next() % 1000 >= 10 {
        rng.pick(COMMON_NAMES)
    } else {
        rng.pick(EVENT_NAMES)
    };
    json!({
        "eventVersion": "1.08",
        "eventTime": "2024-03-01T00:00:00Z",
        "eventSource": format!("{}.amazonaws.com", if name.contains("Object") { "s3" } else { "iam" }),
        "eventName": name,
        "awsRegion": rng.pick(REGIONS),
        "sourceIPAddress": format!("{}.{}.{}.{}", rng.next() % 223 + 1, rng.next() % 256, rng.next() % 256, rng.next() % 256),
        "userAgent": rng.pick(AGENTS),
        "userIdentity": {
            "type": if rng.next().is_multiple_of(50) { "Root" } else { "IAMUser" },
            "arn": format!("arn:aws:iam::123456789012:user/user{}", rng.next() % 1000),
            "accountId": "123456789012"
        },
        "requestParameters": {"bucketName": format!("bucket-{}", rng.next() % 100)},
        "errorCode": if rng.next().is_multiple_of(20) { Value::from("AccessDenied") } else { Value::Null },
        "readOnly": name.starts_with("Get") || name.starts_with("List") || name.starts_with("Describe"),
        "bytesTransferredOut": rng.next() % 5_000_000,
        "requestID": format!("req-{i}")
    })
}

/// The condition of the i-th rule (a mix of every operator kind). Like real detections they
/// rarely match: most events are evaluated by every rule and raise nothing.
fn condition(i: usize) -> String {
    let name = EVENT_NAMES[i % EVENT_NAMES.len()];
    let region = REGIONS[i % REGIONS.len()];
    match i % 12 {
        0 => format!("{{field: eventName, equals: {name}}}"),
        1 => format!(
            "{{field: eventName, equals: {}, ignore_case: true}}",
            name.to_lowercase()
        ),
        2 => format!(
            "{{all: [{{field: eventName, in: [{name}, DeleteTrail, StopLogging]}}, {{field: awsRegion, equals: {region}}}]}}"
        ),
        3 => format!(
            "{{field: userAgent, contains: ['kali{}', 'Pacu/', 'curl/'], ignore_case: true}}",
            i
        ),
        4 => format!(
            "{{field: userIdentity.arn, startswith: 'arn:aws:iam::123456789012:user/admin{}'}}",
            i
        ),
        5 => format!(
            "{{field: requestParameters.bucketName, endswith: '-{}-public'}}",
            i
        ),
        6 => format!(
            "{{field: userAgent, wildcard: '*sqlmap*/1.{}*', ignore_case: true}}",
            i
        ),
        7 => format!(
            "{{field: sourceIPAddress, cidr: ['10.0.0.0/8', '{}.7.0.0/16']}}",
            i % 223 + 1
        ),
        8 => format!("{{field: bytesTransferredOut, gt: {}}}", 4_990_000 + i),
        9 => format!(
            "{{field: userIdentity.arn, regex: 'user/(root|admin){}$'}}",
            i
        ),
        10 => format!(
            "{{selections: {{sel: {{field: eventName, equals: {name}, ignore_case: true}}, root: {{field: userIdentity.type, equals: Root}}, filter_ro: {{field: readOnly, equals: true}}}}, condition: 'sel and root and not 1 of filter_*'}}"
        ),
        _ if i == 59 => "{field: '*', contains: 'evil-marker-7', ignore_case: true}".to_string(),
        _ => format!(
            "{{all: [{{field: errorCode, equals: AccessDenied}}, {{field: eventName, equals: {name}}}, {{not: {{field: awsRegion, equals: {region}}}}}]}}"
        ),
    }
}

/// CPU seconds this process has used (user + system, from `/proc/self/stat`): on a shared
/// machine wall time includes waiting for a core, CPU time does not.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks / 100.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    // `fresh` skips the resident measurement (for profiling the fresh one alone).
    let fresh_only = args.next().as_deref() == Some("fresh");
    let rules: Vec<_> = (0..60)
        .map(|i| {
            let text = format!(
                "id: r{i}\ntitle: Rule {i}\nstream: cloudtrail\nmatch: {}\n",
                condition(i)
            );
            let rule =
                parse_rule(&text, RuleFormat::Yaml).unwrap_or_else(|e| panic!("rule {i}: {e}"));
            Arc::new(rule.compile().expect("compiles"))
        })
        .collect();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let payloads: Vec<Vec<u8>> = (0..count)
        .map(|i| serde_json::to_vec(&event(&mut rng, i)).expect("serializes"))
        .collect();
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            offset: i,
            ingest_time_ms: 1_709_251_200_000,
            event_time_ms: 1_709_251_200_000 + i as i64,
            key: Bytes::new(),
            payload: Bytes::new(),
        })
        .collect();
    let parse = |chunk: &[Vec<u8>]| -> Vec<Value> {
        chunk
            .iter()
            .map(|bytes| serde_json::from_slice(bytes).expect("parses"))
            .collect()
    };
    let mut engine = Engine::new(EngineConfig::default());
    engine.set_rules(rules);
    let batch = 1024;
    // Fresh batches: each batch is parsed just before it is evaluated, as the detection
    // consumer does, and only `evaluate` is timed.
    let (mut fresh_best, mut alerts) = (f64::MAX, 0);
    for _ in 0..rounds {
        let mut evaluating = Duration::ZERO;
        alerts = 0;
        for (chunk_records, chunk_payloads) in records.chunks(batch).zip(payloads.chunks(batch)) {
            let events = parse(chunk_payloads);
            let started = Instant::now();
            alerts += engine
                .evaluate("cloudtrail", 0, chunk_records, &events, 0)
                .len();
            evaluating += started.elapsed();
        }
        fresh_best = fresh_best.min(evaluating.as_secs_f64());
    }
    // Resident events: every event parsed up front and evaluated from memory, so most field
    // reads miss the CPU caches (the figure reported before 2026-12-04).
    let events: Vec<Value> = parse(&payloads);
    let (mut best, mut best_cpu) = (f64::MAX, f64::MAX);
    let resident_rounds = if fresh_only { 0 } else { rounds };
    for _ in 0..resident_rounds {
        let started = Instant::now();
        let cpu_started = cpu_seconds();
        let mut resident_alerts = 0;
        for (chunk_records, chunk_events) in records.chunks(batch).zip(events.chunks(batch)) {
            resident_alerts += engine
                .evaluate("cloudtrail", 0, chunk_records, chunk_events, 0)
                .len();
        }
        assert_eq!(resident_alerts, alerts, "same alerts either way");
        best = best.min(started.elapsed().as_secs_f64());
        if let (Some(before), Some(after)) = (cpu_started, cpu_seconds()) {
            best_cpu = best_cpu.min(after - before);
        }
    }
    let report = json!({
        "rules": 60,
        "events": count,
        "batch": batch,
        "rounds": rounds,
        "fresh_batches_evaluate_seconds": fresh_best,
        "fresh_batches_events_per_second": (count as f64 / fresh_best).round(),
        "resident_best_seconds": best,
        "resident_events_per_second_wall": (count as f64 / best).round(),
        "resident_cpu_seconds": best_cpu,
        "resident_events_per_cpu_second": (count as f64 / best_cpu).round(),
        "alerts_per_round": alerts,
        "build": if cfg!(debug_assertions) { "debug (not meaningful)" } else { "release" },
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
}
