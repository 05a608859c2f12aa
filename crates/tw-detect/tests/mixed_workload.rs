//! The 100-rule mixed workload of the detection benchmark (60 match, 15 threshold, 10 distinct
//! count, 10 sequence, 5 new value) on CloudTrail-like events from the reference generator.
//! Not a timed assertion (machines differ); run by hand in release mode:
//! `cargo test --release -p tw-detect --test mixed_workload -- --ignored --nocapture`.
//! The always-on test checks that the workload compiles and that every kind raises alerts on
//! it, so the measurement measures real work.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tw_core::{Alert, CheckedPayload, FieldSelection, Record};
use tw_detect::{CompiledRule, Engine, EngineConfig, RuleFormat, parse_rule};

/// The server's allocator: the workload allocates an alert per event, and glibc's arenas of
/// non-main threads (test threads) grow through a system call per extension, which would
/// dominate the measurement.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GENERATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/bench/gen_events.py"
);

const NAMES: [&str; 10] = [
    "ConsoleLogin",
    "GetObject",
    "PutObject",
    "RunInstances",
    "AssumeRole",
    "ListBuckets",
    "DescribeInstances",
    "CreateUser",
    "AttachUserPolicy",
    "DeleteBucket",
];

fn compile(text: &str) -> Arc<CompiledRule> {
    Arc::new(
        parse_rule(text, RuleFormat::Yaml)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .compile()
            .unwrap(),
    )
}

/// The 100 rules.
fn workload() -> Vec<Arc<CompiledRule>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut matches: Vec<String> = Vec::new();
    for copy in 0..6 {
        for n in 1..=10 {
            let name = if n == 10 { "R10.json" } else { "" };
            let path = if name.is_empty() {
                dir.join(format!("R{n:02}.yaml"))
            } else {
                dir.join(name)
            };
            let rule =
                parse_rule(&std::fs::read_to_string(path).unwrap(), RuleFormat::Auto).unwrap();
            let mut value = rule.to_value();
            value["id"] = Value::String(format!("{}-{copy}", rule.id));
            matches.push(value.to_string());
        }
    }
    let mut rules: Vec<Arc<CompiledRule>> = matches
        .iter()
        .map(|json| {
            Arc::new(
                parse_rule(json, RuleFormat::Json)
                    .unwrap()
                    .compile()
                    .unwrap(),
            )
        })
        .collect();
    for i in 0..15 {
        let name = NAMES[i % NAMES.len()];
        let window = ["1m", "5m", "10m"][i % 3];
        let sliding = i % 2 == 1;
        let count = if i % 5 == 4 {
            "{lt: 1}".to_string()
        } else {
            format!("{{gt: {}}}", 2 + i)
        };
        let group = if i % 2 == 0 {
            "sourceIPAddress"
        } else {
            "userIdentity.arn"
        };
        rules.push(compile(&format!(
            "id: thr-{i}\ntitle: T\nstream: cloudtrail\nmatch: {{field: eventName, equals: {name}}}\nthreshold: {{count: {count}, window: {window}, sliding: {sliding}, group_by: [{group}]}}\n"
        )));
    }
    for i in 0..10 {
        let field = [
            "awsRegion",
            "eventName",
            "sourceIPAddress",
            "eventSource",
            "userAgent",
        ][i % 5];
        rules.push(compile(&format!(
            "id: dist-{i}\ntitle: T\nstream: cloudtrail\ndistinct: {{field: {field}, count: {{gt: {}}}, window: 10m, sliding: {}, group_by: [userIdentity.arn]}}\n",
            2 + i % 4,
            i % 2 == 1
        )));
    }
    for i in 0..10 {
        let (a, b) = (NAMES[i % NAMES.len()], NAMES[(i + 1) % NAMES.len()]);
        let until = if i % 3 == 0 {
            format!(
                "\n  until: {{field: eventName, equals: {}}}",
                NAMES[(i + 2) % NAMES.len()]
            )
        } else {
            String::new()
        };
        rules.push(compile(&format!(
            "id: seq-{i}\ntitle: T\nstream: cloudtrail\nsequence:\n  by: userIdentity.arn\n  maxspan: 5m\n  steps:\n    - {{field: eventName, equals: {a}}}\n    - {{field: eventName, equals: {b}}}{until}\n"
        )));
    }
    for (i, field) in [
        "additionalEventData.country",
        "sourceIPAddress",
        "userAgent",
        "awsRegion",
        "eventSource",
    ]
    .iter()
    .enumerate()
    {
        rules.push(compile(&format!(
            "id: new-{i}\ntitle: T\nstream: cloudtrail\nnew_value: {{field: {field}, group_by: [userIdentity.arn], history: 30d}}\n"
        )));
    }
    assert_eq!(rules.len(), 100);
    rules
}

/// The workload's events: records, their parsed events, and the parser's word for each
/// payload (as the server's detection consumer has them).
struct Events {
    records: Vec<Record>,
    events: Vec<Value>,
    checked: Vec<Option<CheckedPayload>>,
}

fn events(count: usize) -> Events {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.ndjson");
    let status = Command::new("python3")
        .args([
            GENERATOR,
            "--count",
            &count.to_string(),
            "--seed",
            "42",
            "--out",
        ])
        .arg(&out)
        .status()
        .expect("python3 is required to run the mixed workload");
    assert!(status.success(), "{GENERATOR} failed: {status}");
    let text = std::fs::read_to_string(&out).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // As the server's detection consumer has them: each record carries its stored bytes, and
    // the engine takes an event whole from them when a rule keeps it or alerts on it.
    let records: Vec<Record> = events
        .iter()
        .zip(text.lines())
        .enumerate()
        .map(|(offset, (event, line))| {
            let time = tw_core::parse_time_ms(&event["eventTime"]).unwrap_or(0);
            Record {
                offset: offset as u64,
                ingest_time_ms: time,
                event_time_ms: time,
                key: Bytes::new(),
                payload: Bytes::copy_from_slice(line.as_bytes()),
            }
        })
        .collect();
    // The consumer parses each payload for the rules' fields and keeps the parser's word;
    // here the events stay whole trees (as before), the word comes from a parse that keeps none.
    let checked = records
        .iter()
        .map(|r| {
            FieldSelection::default()
                .parse_checked(&r.payload)
                .ok()
                .map(|(_, c)| c)
        })
        .collect();
    Events {
        records,
        events,
        checked,
    }
}

/// How the workload's events reach the engine.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Parse {
    /// Whole trees, with the parser's word for the payloads (events kept whole are taken
    /// unread) or without it (their text is checked when taken).
    Trees { checked: bool },
    /// Rows of the rules' fields, parsed from the payloads as the detection consumer does.
    Rows,
}

/// Evaluates the workload in batches of 1,000, parsed as `parse` says. Each batch's alerts go
/// to `take`.
fn run(engine: &mut Engine, workload: &Events, parse: Parse, mut take: impl FnMut(Vec<Alert>)) {
    let batches = workload
        .records
        .chunks(1_000)
        .zip(workload.events.chunks(1_000))
        .zip(workload.checked.chunks(1_000));
    for ((records, events), words) in batches {
        take(match parse {
            Parse::Trees { checked } => {
                let words = if checked { words } else { &[] };
                engine.evaluate_checked("cloudtrail", 0, records, events, words, 0)
            }
            Parse::Rows => {
                let rows: Vec<_> = records
                    .iter()
                    .map(|r| engine.selection().parse_fields(&r.payload).unwrap())
                    .collect();
                engine.evaluate_fields("cloudtrail", 0, records, &rows, words, 0)
            }
        });
    }
}

#[test]
fn the_mixed_workload_exercises_every_kind() {
    let workload_events = events(20_000);
    let mut outcomes = Vec::new();
    let parses = [
        Parse::Trees { checked: true },
        Parse::Trees { checked: false },
        Parse::Rows,
    ];
    for parse in parses {
        let mut engine = Engine::new(EngineConfig::default());
        engine.set_rules(workload());
        let mut raised = Vec::new();
        run(&mut engine, &workload_events, parse, |alerts| {
            raised.extend(alerts)
        });
        let stats = engine.stats();
        for prefix in ["R", "thr-", "dist-", "seq-", "new-"] {
            let alerts: u64 = stats
                .iter()
                .filter(|s| s.rule_id.starts_with(prefix))
                .map(|s| s.alerts)
                .sum();
            assert!(alerts > 0, "no {prefix}* rule fired: {stats:?}");
        }
        outcomes.push(serde_json::to_string(&raised).unwrap());
    }
    // Taking kept events unread, or reading fields from rows instead of trees, changes
    // nothing but the cost: the same alerts, byte for byte.
    for (parse, outcome) in parses.iter().zip(&outcomes).skip(1) {
        assert!(outcome == &outcomes[0], "alerts differ with {parse:?}");
    }
}

#[test]
#[ignore = "measurement, run by hand in release mode"]
fn measure_mixed_workload() {
    let count = std::env::var("MIXED_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    // `MIXED_PAYLOADS=unchecked`: kept events' text is checked when taken; `rows`: the rules'
    // fields are parsed into rows, as the detection consumer does (the parse is timed too).
    let parse = match std::env::var("MIXED_PAYLOADS").as_deref() {
        Ok("unchecked") => Parse::Trees { checked: false },
        Ok("rows") => Parse::Rows,
        _ => Parse::Trees { checked: true },
    };
    let workload_events = events(count);
    let mut engine = Engine::new(EngineConfig::default());
    engine.set_rules(workload());
    let started = std::time::Instant::now();
    // Alerts are counted and dropped batch by batch, as the detection consumer hands them to
    // the alert store and drops them. (Keeping all of them, as this measure did before
    // 2026-12-05, had the kernel zero fresh huge pages for ~17 % of the measured time.)
    let mut alerts = 0;
    run(&mut engine, &workload_events, parse, |raised| {
        alerts += raised.len()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let stats = engine.stats();
    let keys: u64 = stats.iter().map(|s| s.active_groups).sum();
    for prefix in ["R", "thr-", "dist-", "seq-", "new-"] {
        let of_kind = stats.iter().filter(|s| s.rule_id.starts_with(prefix));
        let (nanos, alerts) = of_kind.fold((0, 0), |(n, a), s| (n + s.eval_nanos, a + s.alerts));
        println!(
            "  {prefix}*: {:.0} ms evaluating, {alerts} alerts",
            nanos as f64 / 1e6
        );
    }
    let count = workload_events.events.len();
    println!(
        "100 mixed rules, {parse:?}: {:.0} events/s on one core ({count} events, {alerts} alerts, {keys} state keys at the end)",
        count as f64 / elapsed,
    );
}
