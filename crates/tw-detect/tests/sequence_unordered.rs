//! Unordered sequences (`sequence.ordered: false`, what Sigma's `temporal` correlation maps to):
//! every step within `maxspan` per key, in any order, against hand-computed expectations.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tw_core::{Alert, Record};
use tw_detect::{Engine, EngineConfig, RuleFormat, parse_rule};

const RULE: &str = "id: u\ntitle: T\nstream: s\nsequence:\n  by: user\n  maxspan: 1m\n  ordered: false\n  steps:\n    - {field: action, equals: a}\n    - {field: action, equals: b}\n    - {field: kind, equals: c}\n";

fn engine(rule: &str) -> Engine {
    let mut engine = Engine::new(EngineConfig {
        // Users interleave in event time: nothing here is late.
        allowed_lateness_ms: 600_000,
        ..EngineConfig::default()
    });
    let rule = parse_rule(rule, RuleFormat::Yaml).unwrap_or_else(|e| panic!("{e}"));
    engine.set_rules(vec![Arc::new(rule.compile().unwrap())]);
    engine
}

fn feed(engine: &mut Engine, items: &[(i64, Value)]) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (offset, (time, event)) in items.iter().enumerate() {
        let record = Record {
            offset: offset as u64,
            ingest_time_ms: *time,
            event_time_ms: *time,
            key: Bytes::new(),
            payload: Bytes::new(),
        };
        alerts.extend(engine.evaluate("s", 0, &[record], std::slice::from_ref(event), 1));
    }
    alerts
}

fn ev(user: &str, action: &str, kind: &str) -> Value {
    json!({"user": user, "action": action, "kind": kind})
}

#[test]
fn every_step_in_any_order_within_maxspan() {
    let mut engine = engine(RULE);
    let alerts = feed(
        &mut engine,
        &[
            // alice: c, b, a — reverse order, within 1 minute: one alert.
            (10_000, ev("alice", "x", "c")),
            (20_000, ev("alice", "b", "-")),
            (30_000, ev("alice", "a", "-")),
            // bob: a, b, then c 61 s after a: too far apart; then a again within a minute
            // of b and c: one alert (b, c, a).
            (10_000, ev("bob", "a", "-")),
            (40_000, ev("bob", "b", "-")),
            (71_000, ev("bob", "x", "c")),
            (72_000, ev("bob", "a", "-")),
            // carol: one event satisfying two steps, and the third: one alert of 2 events.
            (10_000, ev("carol", "a", "c")),
            (15_000, ev("carol", "b", "-")),
            // dave: a and b only: nothing.
            (10_000, ev("dave", "a", "-")),
            (11_000, ev("dave", "b", "-")),
        ],
    );
    let mut found: Vec<(String, usize)> = alerts
        .iter()
        .map(|a| {
            let group = a.group.as_ref().expect("grouped");
            (group["user"].clone(), a.event_refs.len())
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("alice".to_string(), 3),
            ("bob".to_string(), 3),
            ("carol".to_string(), 2)
        ]
    );
    let bob = alerts
        .iter()
        .find(|a| a.group.as_ref().unwrap()["user"] == "bob")
        .unwrap();
    assert_eq!(
        bob.event_refs.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [4, 5, 6],
        "the events of the alert, in event-time order"
    );
    // The events that fired are consumed: more of the same alone do not fire again.
    assert!(feed(&mut engine, &[(31_000, ev("alice", "a", "-"))]).is_empty());
}

#[test]
fn ordered_false_round_trips_and_ordered_stays_the_default() {
    let rule = parse_rule(RULE, RuleFormat::Yaml).unwrap();
    assert!(!rule.sequence.as_ref().unwrap().ordered);
    let text = serde_json::to_string(&rule).unwrap();
    assert!(text.contains("\"ordered\":false"), "{text}");
    assert_eq!(parse_rule(&text, RuleFormat::Json).unwrap(), rule);
    let ordered = parse_rule(&RULE.replace("  ordered: false\n", ""), RuleFormat::Yaml).unwrap();
    assert!(ordered.sequence.as_ref().unwrap().ordered);
    let text = serde_json::to_string(&ordered).unwrap();
    assert!(
        !text.contains("ordered"),
        "the default is not written: {text}"
    );
    let error = parse_rule(
        &RULE.replace("ordered: false", "ordered: 3"),
        RuleFormat::Yaml,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("sequence.ordered: expected true or false"),
        "{error}"
    );
}
