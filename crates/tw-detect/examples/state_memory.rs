//! Memory per active key of each stateful kind: one rule at a time is fed events whose group
//! key is new on every event (all inside one window, so every key stays active), and the growth
//! of the process's anonymous resident memory (the heap, as the allocator holds it) is divided
//! by the keys. The events are dropped after each batch (the next batch reuses their memory), so
//! what grows is the rule's state: its maps, its keys, and the events it keeps (a tumbling
//! threshold or distinct group keeps its first matching events for the alert, a sequence its
//! buffered steps). Events are ~230 bytes of CloudTrail-like JSON. Each kind runs in a process
//! of its own (the example starts itself once per kind), so no kind reuses memory another left.
//!
//! Run with `cargo run --release -p tw-detect --example state_memory [keys] [kind]` (default
//! 1,000,000 keys, every kind). Prints one JSON line per kind.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tw_core::Record;
use tw_detect::{Engine, EngineConfig, RuleFormat, parse_rule};

/// The server's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Anonymous resident memory of this process (the heap), in bytes (Linux).
fn heap_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024)
}

const KINDS: &[(&str, &str)] = &[
    (
        "threshold (tumbling)",
        "threshold: {count: {gt: 1000000}, window: 1h, group_by: [userIdentity.arn]}",
    ),
    (
        "threshold (sliding)",
        "threshold: {count: {gt: 1000000}, window: 1h, sliding: true, group_by: [userIdentity.arn]}",
    ),
    (
        "distinct count (tumbling)",
        "distinct: {field: sourceIPAddress, count: {gt: 1000}, window: 1h, group_by: [userIdentity.arn]}",
    ),
    (
        "distinct count (sliding)",
        "distinct: {field: sourceIPAddress, count: {gt: 1000}, window: 1h, sliding: true, group_by: [userIdentity.arn]}",
    ),
    (
        "sequence",
        "sequence:\n  by: userIdentity.arn\n  maxspan: 1h\n  steps:\n    - {field: eventName, equals: ConsoleLogin}\n    - {field: eventName, equals: CreateUser}",
    ),
    (
        "new value",
        "new_value: {field: sourceIPAddress, group_by: [userIdentity.arn], history: 30d, learn: 30d}",
    ),
];

fn event(key: u64) -> (Record, Value) {
    let value = json!({
        "eventTime": "2024-03-01T00:00:00Z",
        "eventName": "ConsoleLogin",
        "eventSource": "signin.amazonaws.com",
        "awsRegion": "us-east-1",
        "sourceIPAddress": format!("10.{}.{}.{}", key >> 16 & 255, key >> 8 & 255, key & 255),
        "userIdentity": {"type": "IAMUser", "arn": format!("arn:aws:iam::123456789012:user/u{key:08}")},
    });
    let record = Record {
        offset: key,
        ingest_time_ms: 1_709_251_200_000 + key as i64,
        // One event per millisecond: a million keys span 17 minutes, inside every window.
        event_time_ms: 1_709_251_200_000 + key as i64,
        key: Bytes::new(),
        payload: Bytes::from(value.to_string()),
    };
    (record, value)
}

fn main() {
    let keys: u64 = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let Some(index) = std::env::args()
        .nth(2)
        .and_then(|v| v.parse::<usize>().ok())
    else {
        for index in 0..KINDS.len() {
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args([keys.to_string(), index.to_string()])
                .status()
                .unwrap();
            assert!(status.success(), "kind {index}: {status}");
        }
        return;
    };
    if let Some((kind, section)) = KINDS.get(index) {
        let text = format!("id: m\ntitle: M\nstream: s\n{section}\n");
        let rule = Arc::new(
            parse_rule(&text, RuleFormat::Yaml)
                .unwrap()
                .compile()
                .unwrap(),
        );
        let config = EngineConfig {
            max_groups_per_rule: keys as usize + 1,
            // Nothing passes the watermark: every key stays active.
            allowed_lateness_ms: 86_400_000,
            ..EngineConfig::default()
        };
        let before = heap_bytes();
        let mut engine = Engine::new(config);
        engine.set_rules(vec![rule]);
        let mut alerts = 0;
        for start in (0..keys).step_by(1_000) {
            let (records, events): (Vec<Record>, Vec<Value>) =
                (start..(start + 1_000).min(keys)).map(event).unzip();
            alerts += engine.evaluate("s", 0, &records, &events, 0).len();
        }
        let held = heap_bytes() - before;
        let stats = engine.stats();
        let active = stats.first().map_or(0, |s| s.active_groups);
        println!(
            "{}",
            json!({
                "kind": kind,
                "active_keys": active,
                "bytes": held,
                "bytes_per_key": held as f64 / active.max(1) as f64,
                "mib_per_million_keys": held as f64 / active.max(1) as f64 * 1e6 / 1_048_576.0,
                "alerts": alerts,
            })
        );
    }
}
