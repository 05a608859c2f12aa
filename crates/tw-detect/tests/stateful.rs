//! The stateful kinds, each against hand-computed expectations: thresholds above and below
//! on tumbling and sliding windows (window edges included), distinct counts, sequences with
//! out-of-order events and `until`, new values with history and learning, suppression,
//! checkpoints, and the document errors of each section.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tw_core::{Alert, Record};
use tw_detect::{CompiledRule, Engine, EngineConfig, RuleFormat, RuleStats, parse_rule};

fn compiled(yaml: &str) -> Arc<CompiledRule> {
    Arc::new(
        parse_rule(yaml, RuleFormat::Yaml)
            .unwrap_or_else(|e| panic!("{e}"))
            .compile()
            .unwrap(),
    )
}

fn engine(lateness_ms: i64, rule: &str) -> Engine {
    let mut engine = Engine::new(EngineConfig {
        allowed_lateness_ms: lateness_ms,
        ..EngineConfig::default()
    });
    engine.set_rules(vec![compiled(rule)]);
    engine
}

/// Feeds one event per call (so the watermark moves between events), offsets from `offset`.
fn feed(engine: &mut Engine, offset: &mut u64, items: &[(i64, Value)]) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (time, event) in items {
        let record = Record {
            offset: *offset,
            ingest_time_ms: *time,
            event_time_ms: *time,
            key: Bytes::new(),
            payload: Bytes::new(),
        };
        *offset += 1;
        alerts.extend(engine.evaluate("s", 0, &[record], std::slice::from_ref(event), 1));
    }
    alerts
}

fn stats(engine: &Engine) -> RuleStats {
    engine.stats().into_iter().next().expect("one rule")
}

/// (window, value) of each alert.
type WindowValue = (Option<(i64, i64)>, Option<f64>);

fn windows(alerts: &[Alert]) -> Vec<WindowValue> {
    alerts.iter().map(|a| (a.window, a.value)).collect()
}

#[test]
fn tumbling_at_least_fires_on_the_bound_once_per_window() {
    let mut e = engine(
        0,
        "id: t\ntitle: T\nstream: s\nthreshold: {count: {gte: 3}, window: 10s, group_by: [u]}\n",
    );
    let mut o = 0;
    let a = json!({"u": "a"});
    let alerts = feed(
        &mut e,
        &mut o,
        &[
            (1_000, a.clone()),
            (2_000, a.clone()),
            (3_000, a.clone()),
            (4_000, a.clone()),
        ],
    );
    assert_eq!(windows(&alerts), vec![(Some((0, 10_000)), Some(3.0))]);
    assert_eq!(alerts[0].dedup_key, "t|a|0");
    assert_eq!(alerts[0].event_refs.len(), 3);
    // The next window counts afresh.
    let alerts = feed(
        &mut e,
        &mut o,
        &[(10_000, a.clone()), (11_000, a.clone()), (12_000, a)],
    );
    assert_eq!(windows(&alerts), vec![(Some((10_000, 20_000)), Some(3.0))]);
}

#[test]
fn tumbling_below_fires_when_the_window_closes_for_groups_seen_before() {
    let rule =
        "id: low\ntitle: T\nstream: s\nthreshold: {count: {lt: 2}, window: 10s, group_by: [u]}\n";
    let mut e = engine(0, rule);
    let mut o = 0;
    let (a, b, c) = (json!({"u": "a"}), json!({"u": "b"}), json!({"u": "c"}));
    // Window [0,10s): a three times. Window [10s,20s): a once, b once (b is new: not watched).
    let mut alerts = feed(
        &mut e,
        &mut o,
        &[(1_000, a.clone()), (2_000, a.clone()), (3_000, a.clone())],
    );
    alerts.extend(feed(&mut e, &mut o, &[(11_000, a.clone()), (12_000, b)]));
    assert!(
        alerts.is_empty(),
        "nothing is decided before the window closes: {alerts:?}"
    );
    // An event at 20s closes [10s,20s): a had 1 < 2 there.
    let alerts = feed(&mut e, &mut o, &[(20_000, c.clone())]);
    assert_eq!(windows(&alerts), vec![(Some((10_000, 20_000)), Some(1.0))]);
    assert_eq!(alerts[0].dedup_key, "low|a|10000");
    assert_eq!(alerts[0].event_time_ms, 19_999);
    // At 30s, [20s,30s) closes: a and b (both seen in [10s,20s)) had 0 events; c had 1 but c
    // was first seen in that window, so it is not watched yet.
    let mut alerts = feed(&mut e, &mut o, &[(30_000, c.clone())]);
    alerts.sort_by(|x, y| x.dedup_key.cmp(&y.dedup_key));
    let keys: Vec<&str> = alerts.iter().map(|a| a.dedup_key.as_str()).collect();
    assert_eq!(keys, ["low|a|20000", "low|b|20000"]);
    // Silent groups are forgotten after their alert; c (1 in [30s,40s)) fires when 40s closes.
    let alerts = feed(&mut e, &mut o, &[(45_000, json!({"u": "d"}))]);
    let keys: Vec<&str> = alerts.iter().map(|a| a.dedup_key.as_str()).collect();
    assert_eq!(keys, ["low|c|30000"]);
}

#[test]
fn sliding_above_uses_spans_shorter_than_the_window() {
    let rule =
        "id: sl\ntitle: T\nstream: s\nthreshold: {count: {gt: 2}, window: 10s, sliding: true}\n";
    // Three events spanning exactly the window length: not inside one window.
    let mut e = engine(60_000, rule);
    let mut o = 0;
    let x = json!({});
    assert!(
        feed(
            &mut e,
            &mut o,
            &[(0, x.clone()), (5_000, x.clone()), (10_000, x.clone())]
        )
        .is_empty()
    );
    // One millisecond less: fires, across a tumbling boundary that a tumbling window would miss.
    let mut e = engine(60_000, rule);
    let alerts = feed(
        &mut e,
        &mut o,
        &[(5_000, x.clone()), (9_000, x.clone()), (14_999, x.clone())],
    );
    assert_eq!(windows(&alerts), vec![(Some((5_000, 15_000)), Some(3.0))]);
    assert_eq!(alerts[0].dedup_key, "sl||5000");
    // Out of order: the event completing the run arrives last but happened first.
    let mut e = engine(60_000, rule);
    let alerts = feed(
        &mut e,
        &mut o,
        &[
            (30_000, x.clone()),
            (31_000, x.clone()),
            (22_000, x.clone()),
        ],
    );
    assert_eq!(windows(&alerts), vec![(Some((22_000, 32_000)), Some(3.0))]);
    // Counting restarts after an alert: two more events do not fire again.
    assert!(feed(&mut e, &mut o, &[(32_000, x.clone()), (33_000, x)]).is_empty());
}

#[test]
fn sliding_below_fires_at_the_exact_instant_the_count_drops() {
    let rule = "id: hb\ntitle: Heartbeat lost\nstream: s\nthreshold: {count: {lt: 1}, window: 10s, sliding: true, group_by: [host]}\n";
    let mut e = engine(0, rule);
    let mut o = 0;
    let (a, b) = (json!({"host": "a"}), json!({"host": "b"}));
    assert!(
        feed(
            &mut e,
            &mut o,
            &[(0, a.clone()), (3_000, a.clone()), (5_000, b.clone())]
        )
        .is_empty()
    );
    // b keeps beating; a's last beat was at 3s, so from 13s its window (3s,13s] is empty.
    let alerts = feed(&mut e, &mut o, &[(12_000, b.clone())]);
    assert!(alerts.is_empty(), "{alerts:?}");
    let alerts = feed(&mut e, &mut o, &[(20_000, b.clone())]);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].dedup_key, "hb|a|13000");
    assert_eq!(alerts[0].window, Some((3_000, 13_000)));
    assert_eq!(alerts[0].value, Some(0.0));
    // No second alert for the same silence, and a is forgotten.
    assert!(feed(&mut e, &mut o, &[(29_000, b.clone())]).is_empty());
    assert_eq!(stats(&e).active_groups, 1);
}

#[test]
fn distinct_count_tumbling_and_sliding() {
    let rule = "id: d\ntitle: T\nstream: s\ndistinct: {field: region, count: {gt: 2}, window: 10m, group_by: [user]}\n";
    let mut e = engine(60_000, rule);
    let mut o = 0;
    let ev = |u: &str, r: &str| json!({"user": u, "region": r});
    let alerts = feed(
        &mut e,
        &mut o,
        &[
            (1_000, ev("u1", "eu")),
            (2_000, ev("u1", "eu")),
            (3_000, ev("u1", "us")),
            (4_000, ev("u2", "ap")),
            (5_000, json!({"user": "u1"})),
            (6_000, ev("u1", "ap")),
            (7_000, ev("u1", "sa")),
        ],
    );
    assert_eq!(windows(&alerts), vec![(Some((0, 600_000)), Some(3.0))]);
    assert_eq!(alerts[0].dedup_key, "d|u1|0");
    assert_eq!(alerts[0].group.as_ref().unwrap()["user"], "u1");

    let sliding = rule.replace("window: 10m", "window: 10m, sliding: true");
    let mut e = engine(60_000, &sliding);
    // Across the tumbling boundary at 10 min, within 10 minutes of each other.
    let alerts = feed(
        &mut e,
        &mut o,
        &[
            (590_000, ev("u1", "eu")),
            (610_000, ev("u1", "us")),
            (620_000, ev("u1", "eu")),
            (630_000, ev("u1", "ap")),
        ],
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].value, Some(3.0));
    // Values older than the window do not count.
    let mut e = engine(60_000, &sliding);
    let alerts = feed(
        &mut e,
        &mut o,
        &[
            (0, ev("u1", "eu")),
            (600_000, ev("u1", "us")),
            (601_000, ev("u1", "ap")),
        ],
    );
    assert!(alerts.is_empty(), "{alerts:?}");
}

const SEQ: &str = "id: q\ntitle: T\nstream: s\nsequence:\n  by: pid\n  maxspan: 1m\n  steps:\n    - {field: action, equals: open}\n    - {field: action, equals: connect}\n";

#[test]
fn sequence_is_decided_by_event_time_not_arrival() {
    let ev = |pid: u64, action: &str| json!({"pid": pid, "action": action});
    let mut e = engine(60_000, SEQ);
    let mut o = 0;
    // connect arrives first but happened after open: a sequence.
    let alerts = feed(
        &mut e,
        &mut o,
        &[(20_000, ev(1, "connect")), (10_000, ev(1, "open"))],
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].dedup_key, "q|1|0:1");
    assert_eq!(alerts[0].window, Some((10_000, 20_001)));
    assert_eq!(
        alerts[0]
            .event_refs
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>(),
        [1, 0]
    );
    // Wrong order in event time (connect before open), other key, too far apart: nothing.
    let alerts = feed(
        &mut e,
        &mut o,
        &[
            (30_000, ev(2, "connect")),
            (31_000, ev(2, "open")),
            (32_000, ev(3, "open")),
            (33_000, ev(4, "connect")),
            (40_000, ev(5, "open")),
            (100_001, ev(5, "connect")),
        ],
    );
    assert!(alerts.is_empty(), "{alerts:?}");
    // Exactly maxspan apart still counts.
    let alerts = feed(
        &mut e,
        &mut o,
        &[(110_000, ev(6, "open")), (170_000, ev(6, "connect"))],
    );
    assert_eq!(alerts.len(), 1);
}

#[test]
fn sequence_until_cancels_even_when_it_arrives_late() {
    let rule = format!("{SEQ}  until: {{field: action, equals: exit}}\n");
    let ev = |pid: u64, action: &str| json!({"pid": pid, "action": action});
    let mut e = engine(30_000, &rule);
    let mut o = 0;
    // pid 1: open, connect, then (arriving last) an exit between them: cancelled.
    // pid 2: open, connect, exit after connect: a sequence.
    let mut alerts = feed(
        &mut e,
        &mut o,
        &[
            (10_000, ev(1, "open")),
            (20_000, ev(1, "connect")),
            (11_000, ev(2, "open")),
            (21_000, ev(2, "connect")),
            (15_000, ev(1, "exit")),
            (25_000, ev(2, "exit")),
        ],
    );
    assert!(
        alerts.is_empty(),
        "with until, nothing fires before the watermark: {alerts:?}"
    );
    // Move the watermark (30 s lateness) past 21 s.
    alerts.extend(feed(&mut e, &mut o, &[(52_000, ev(9, "noise"))]));
    let keys: Vec<&str> = alerts.iter().map(|a| a.dedup_key.as_str()).collect();
    assert_eq!(keys, ["q|2|0:2"]);
    // Late events (before the watermark) are counted, not evaluated.
    feed(&mut e, &mut o, &[(1_000, ev(7, "open"))]);
    assert_eq!(stats(&e).late_events, 1);
}

#[test]
fn new_value_remembers_per_group_for_the_history() {
    let day = 86_400_000;
    let rule =
        "id: nv\ntitle: T\nstream: s\nnew_value: {field: country, group_by: [user], history: 2d}\n";
    let mut e = engine(0, rule);
    let mut o = 0;
    let ev = |u: &str, c: &str| json!({"user": u, "country": c});
    let alerts = feed(
        &mut e,
        &mut o,
        &[
            (0, ev("u1", "US")),
            (1_000, ev("u1", "US")),
            (2_000, ev("u2", "US")),
            (3_000, ev("u1", "DE")),
            (4_000, json!({"user": "u1"})),
            (day + 5, ev("u1", "US")),
            (3 * day, ev("u1", "US")),
            (3 * day + 1, ev("u1", "DE")),
        ],
    );
    let keys: Vec<&str> = alerts.iter().map(|a| a.dedup_key.as_str()).collect();
    // u1/US on day 3 was last seen on day 1 (2 days): still known; u1/DE last seen day 0: new.
    assert_eq!(
        keys,
        ["nv|u1|US|0", "nv|u2|US|0", "nv|u1|DE|0", "nv|u1|DE|3"]
    );
    assert_eq!(alerts[0].group.as_ref().unwrap()["country"], "US");

    let learning = rule.replace("history: 2d", "history: 2d, learn: 1d");
    let mut e = engine(0, &learning);
    let alerts = feed(
        &mut e,
        &mut o,
        &[
            (0, ev("u1", "US")),
            (1_000, ev("u1", "FR")),
            (day, ev("u1", "FR")),
            (day + 1, ev("u1", "JP")),
        ],
    );
    let keys: Vec<&str> = alerts.iter().map(|a| a.dedup_key.as_str()).collect();
    assert_eq!(keys, ["nv|u1|JP|1"]);
}

#[test]
fn suppression_keeps_one_alert_per_group_per_duration() {
    let rule = "id: p\ntitle: T\nstream: s\nmatch: {field: k, equals: x}\nsuppress: {for: 10m, by: [ip]}\n";
    let mut e = engine(0, rule);
    let mut o = 0;
    let ev = |ip: &str| json!({"k": "x", "ip": ip});
    let alerts = feed(
        &mut e,
        &mut o,
        &[
            (0, ev("1")),
            (60_000, ev("1")),
            (120_000, ev("2")),
            (599_999, ev("1")),
            (600_000, ev("1")),
        ],
    );
    let offsets: Vec<u64> = alerts.iter().map(|a| a.event_refs[0].offset).collect();
    assert_eq!(offsets, [0, 2, 4]);
    assert_eq!(stats(&e).suppressed, 2);
    // An alert that happened shortly *before* the last one (arriving out of order) is a repeat
    // too.
    assert!(feed(&mut e, &mut o, &[(100_000, ev("2"))]).is_empty());
    assert_eq!(feed(&mut e, &mut o, &[(1, ev("9")), (0, ev("9"))]).len(), 1);
    assert_eq!(stats(&e).suppressed, 4);
}

#[test]
fn checkpoints_restore_state_of_unchanged_rules_only() {
    let rule =
        "id: c\ntitle: T\nstream: s\nthreshold: {count: {gt: 3}, window: 1h, group_by: [u]}\n";
    let mut first = engine(60_000, rule);
    let mut o = 0;
    let a = json!({"u": "a"});
    assert!(
        feed(
            &mut first,
            &mut o,
            &[(1_000, a.clone()), (2_000, a.clone()), (3_000, a.clone())]
        )
        .is_empty()
    );
    let positions = vec![("s".to_string(), 0u32, 3u64)];
    let bytes = first.write_checkpoint(&positions).unwrap();

    let mut second = engine(60_000, rule);
    let (read, snapshot): (Vec<(String, u32, u64)>, _) = Engine::read_checkpoint(&bytes).unwrap();
    assert_eq!(read, positions);
    assert_eq!(second.restore(snapshot), ["c"]);
    assert_eq!(stats(&second).active_groups, 1);
    let alerts = feed(&mut second, &mut o, &[(4_000, a.clone())]);
    assert_eq!(windows(&alerts), vec![(Some((0, 3_600_000)), Some(4.0))]);
    assert!(feed(&mut second, &mut o, &[(5_000, a.clone())]).is_empty());

    // A changed definition does not take the old state.
    let mut changed = engine(60_000, &rule.replace("gt: 3", "gt: 2"));
    let (_, snapshot): (Vec<(String, u32, u64)>, _) = Engine::read_checkpoint(&bytes).unwrap();
    assert!(changed.restore(snapshot).is_empty());
    assert!(feed(&mut changed, &mut o, &[(4_000, a)]).is_empty());
    // Garbage and other versions are refused with a message.
    assert!(
        Engine::read_checkpoint::<Value>(b"{\"version\": 99}")
            .unwrap_err()
            .to_string()
            .contains("version 99")
    );
    assert!(Engine::read_checkpoint::<Value>(b"nonsense").is_err());
}

#[test]
fn set_rules_reports_aggregate_rules_that_start_afresh() {
    let base = "id: r\ntitle: T\nstream: s\nthreshold: {count: {gt: 3}, window: 1h}\n";
    let mut e = engine(0, base);
    assert!(
        e.set_rules(vec![compiled(&base.replace("title: T", "title: Renamed"))])
            .is_empty()
    );
    assert_eq!(
        e.set_rules(vec![compiled(&base.replace("1h", "2h"))]),
        ["r"]
    );
}

fn problems(yaml: &str) -> Vec<String> {
    match parse_rule(yaml, RuleFormat::Yaml) {
        Ok(rule) => panic!("expected errors, got {rule:?}"),
        Err(error) => error.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn every_section_reports_its_problems_in_place() {
    let head = "id: r\ntitle: T\nstream: s\n";
    assert_eq!(
        problems(&format!(
            "{head}threshold: {{count: {{gt: 1}}, window: 1m}}\ndistinct: {{field: a, count: {{gt: 1}}, window: 1m}}\n"
        )),
        [
            "a rule has at most one of threshold, distinct, sequence, new_value; found threshold, distinct"
        ]
    );
    assert_eq!(
        problems(&format!(
            "{head}threshold: {{count: {{above: 1}}, window: 1m}}\n"
        )),
        ["threshold.count.above: unknown comparison (expected gt, gte, lt or lte)"]
    );
    assert_eq!(
        problems(&format!(
            "{head}distinct: {{field: a, count: {{lt: 3}}, window: 1m}}\n"
        )),
        ["distinct.count.lt: a distinct count fires above a bound: use gt or gte"]
    );
    assert_eq!(
        problems(&format!(
            "{head}sequence: {{by: pid, maxspan: 1m, steps: [{{field: a, equals: 1}}]}}\n"
        )),
        ["sequence.steps: a sequence has 2 to 16 steps"]
    );
    assert_eq!(
        problems(&format!("{head}sequence: {{maxspan: 1m, steps: [{{field: a, regex: '('}}, {{field: b, exists: true}}]}}\n")).len(),
        1
    );
    assert!(problems(&format!("{head}sequence: {{maxspan: 1m, steps: [{{field: a, regex: '('}}, {{field: b, exists: true}}]}}\n"))[0]
        .starts_with("sequence.steps[0].regex: invalid regex"));
    assert_eq!(
        problems(&format!("{head}new_value: {{field: c, history: 36h}}\n")),
        ["new_value.history: history is kept per day: use whole days (e.g. 30d)"]
    );
    assert_eq!(
        problems(&format!("{head}suppress: {{for: 5x}}\n")),
        [
            r#"suppress: invalid duration "5x" (expected a positive integer and a unit: ms, s, m, h or d, e.g. 30s)"#
        ]
    );
    // Round trip: what is written back parses to the same rule.
    let rule = parse_rule(
        &format!("{head}shadow: true\nsuppress: 10m\nsequence: {{by: [pid], maxspan: 1m, steps: [{{field: a, equals: 1}}, {{field: b, equals: 2}}], until: {{field: c, exists: true}}}}\n"),
        RuleFormat::Yaml,
    )
    .unwrap();
    let again = parse_rule(&serde_json::to_string(&rule).unwrap(), RuleFormat::Json).unwrap();
    assert_eq!(again, rule);
    assert!(rule.shadow);
    // `more_than` stays accepted and means `count: {gt: N}`.
    let old = parse_rule(
        &format!("{head}threshold: {{more_than: 5, window: 1m}}\n"),
        RuleFormat::Yaml,
    )
    .unwrap();
    let new = parse_rule(
        &format!("{head}threshold: {{count: {{gt: 5}}, window: 1m}}\n"),
        RuleFormat::Yaml,
    )
    .unwrap();
    assert_eq!(old, new);
}

#[test]
fn every_kind_stays_within_its_key_limit_and_counts_evictions() {
    let rules = [
        "id: k\ntitle: T\nstream: s\nthreshold: {count: {gt: 5}, window: 1h, group_by: [g]}\n",
        "id: k\ntitle: T\nstream: s\nthreshold: {count: {gt: 5}, window: 1h, sliding: true, group_by: [g]}\n",
        "id: k\ntitle: T\nstream: s\ndistinct: {field: v, count: {gt: 5}, window: 1h, group_by: [g]}\n",
        "id: k\ntitle: T\nstream: s\ndistinct: {field: v, count: {gt: 5}, window: 1h, sliding: true, group_by: [g]}\n",
        "id: k\ntitle: T\nstream: s\nsequence: {by: g, maxspan: 1h, steps: [{field: v, equals: a}, {field: v, equals: b}]}\n",
        "id: k\ntitle: T\nstream: s\nnew_value: {field: v, group_by: [g], history: 30d}\n",
    ];
    for rule in rules {
        let mut e = Engine::new(EngineConfig {
            max_groups_per_rule: 3,
            ..EngineConfig::default()
        });
        e.set_rules(vec![compiled(rule)]);
        let mut o = 0;
        let events: Vec<(i64, Value)> = (0..10)
            .map(|i| (i * 1_000, json!({"g": format!("g{i}"), "v": "a"})))
            .collect();
        feed(&mut e, &mut o, &events);
        let s = stats(&e);
        assert!(s.active_groups <= 3, "{rule}\n{s:?}");
        assert_eq!(s.evicted_groups, 7, "{rule}\n{s:?}");
        // A larger limit evicts a sixteenth of it at once (one scan per batch, not per key):
        // still bounded, and every key is either held or counted as evicted.
        let mut e = Engine::new(EngineConfig {
            max_groups_per_rule: 64,
            ..EngineConfig::default()
        });
        e.set_rules(vec![compiled(rule)]);
        let events: Vec<(i64, Value)> = (0..1_000)
            .map(|i| (i * 10, json!({"g": format!("g{i}"), "v": "a"})))
            .collect();
        feed(&mut e, &mut o, &events);
        let s = stats(&e);
        assert!((60..=64).contains(&s.active_groups), "{rule}\n{s:?}");
        assert_eq!(s.evicted_groups + s.active_groups, 1_000, "{rule}\n{s:?}");
    }
}

/// An event stamped far ahead of when it was received (a producer's clock in 2099) is
/// evaluated, but it moves the watermark only to its receive time plus `max_time_ahead_ms`:
/// the events after it are not late and their windows still fire. Before the cap, this one
/// event made every later event of the stream late for every stateful rule, across restarts.
#[test]
fn an_event_from_the_far_future_does_not_make_later_events_late() {
    let rule =
        "id: t\ntitle: T\nstream: s\nthreshold: {count: {gte: 2}, window: 10s, group_by: [u]}\n";
    let mut e = Engine::new(EngineConfig {
        allowed_lateness_ms: 1_000,
        max_time_ahead_ms: 5_000,
        ..EngineConfig::default()
    });
    e.set_rules(vec![compiled(rule)]);
    let received = |offset: u64, received_ms: i64, event_ms: i64| Record {
        offset,
        ingest_time_ms: received_ms,
        event_time_ms: event_ms,
        key: Bytes::new(),
        payload: Bytes::new(),
    };
    let a = json!({"u": "a"});
    let year_2099 = 4_070_908_800_000;
    let mut alerts = e.evaluate(
        "s",
        0,
        &[received(0, 1_000, year_2099)],
        &[json!({"u": "z"})],
        1,
    );
    assert_eq!(
        e.watermark_ms("s"),
        Some(6_000 - 1_000),
        "capped at receive time + 5 s"
    );
    for (offset, time) in [(1, 2_000), (2, 3_000), (3, 12_000)] {
        alerts.extend(e.evaluate(
            "s",
            0,
            &[received(offset, time, time)],
            std::slice::from_ref(&a),
            1,
        ));
    }
    assert_eq!(stats(&e).late_events, 0);
    assert_eq!(windows(&alerts), vec![(Some((0, 10_000)), Some(2.0))]);

    // A checkpoint that holds a far-future newest time (written before the cap) is capped
    // when restored.
    let mut poisoned = Engine::new(EngineConfig::default());
    poisoned.set_rules(vec![compiled(rule)]);
    poisoned.evaluate(
        "s",
        0,
        &[received(0, year_2099, year_2099)],
        std::slice::from_ref(&a),
        1,
    );
    let bytes = poisoned.write_checkpoint(&()).unwrap();
    let (_, snapshot): ((), _) = Engine::read_checkpoint(&bytes).unwrap();
    let mut restored = Engine::new(EngineConfig::default());
    restored.set_rules(vec![compiled(rule)]);
    restored.restore(snapshot);
    let watermark = restored.watermark_ms("s").unwrap();
    assert!(
        watermark < tw_core::now_ms() + 300_000,
        "restored watermark {watermark} is capped"
    );
}

/// Two groups whose values differ only in where a comma falls get two dedup keys: with one
/// key, the alert store would have refused the second group's alert as a duplicate.
#[test]
fn group_values_with_commas_keep_distinct_dedup_keys() {
    let mut e = engine(
        0,
        "id: t\ntitle: T\nstream: s\nthreshold: {count: {gte: 1}, window: 10s, group_by: [a, b]}\n",
    );
    let mut o = 0;
    let alerts = feed(
        &mut e,
        &mut o,
        &[
            (1_000, json!({"a": "x,y", "b": "z"})),
            (2_000, json!({"a": "x", "b": "y,z"})),
            (3_000, json!({"a": "x\\", "b": ",z"})),
        ],
    );
    let keys: Vec<&str> = alerts.iter().map(|a| a.dedup_key.as_str()).collect();
    assert_eq!(keys, vec![r"t|x\,y,z|0", r"t|x,y\,z|0", r"t|x\\,\,z|0"]);
    // One group value is written as it is (keys stored before the escaping stay the same).
    let mut single = engine(
        0,
        "id: u\ntitle: U\nstream: s\nthreshold: {count: {gte: 1}, window: 10s, group_by: [a]}\n",
    );
    let alerts = feed(&mut single, &mut o, &[(1_000, json!({"a": "x,y"}))]);
    assert_eq!(alerts[0].dedup_key, "u|x,y|0");
}
