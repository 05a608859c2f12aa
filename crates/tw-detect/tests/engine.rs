//! The engine: single-event alerts, thresholds against a brute-force oracle, lateness,
//! rule reloads and state bounds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tw_core::{Alert, EventLocation, Record, Severity};
use tw_detect::{CompiledRule, Engine, EngineConfig, RuleFormat, RuleStats, parse_rule};

fn compiled(yaml: &str) -> Arc<CompiledRule> {
    Arc::new(
        parse_rule(yaml, RuleFormat::Yaml)
            .unwrap_or_else(|e| panic!("{e}"))
            .compile()
            .unwrap(),
    )
}

fn record(offset: u64, event_time_ms: i64) -> Record {
    Record {
        offset,
        ingest_time_ms: event_time_ms,
        event_time_ms,
        key: Bytes::new(),
        payload: Bytes::new(),
    }
}

fn stats_of(engine: &Engine, id: &str) -> RuleStats {
    engine
        .stats()
        .into_iter()
        .find(|s| s.rule_id == id)
        .unwrap_or_else(|| panic!("no stats for {id}"))
}

/// Feeds `(event_time, event)` pairs one batch, offsets counting from `first_offset`.
fn feed(
    engine: &mut Engine,
    stream: &str,
    first_offset: u64,
    items: &[(i64, Value)],
) -> Vec<Alert> {
    let records: Vec<Record> = items
        .iter()
        .enumerate()
        .map(|(i, (time, _))| record(first_offset + i as u64, *time))
        .collect();
    let events: Vec<Value> = items.iter().map(|(_, event)| event.clone()).collect();
    engine.evaluate(stream, 0, &records, &events, 999)
}

#[test]
fn single_event_alerts_carry_exact_identity() {
    let rule = compiled(
        "id: r1\nversion: 7\ntitle: Terminate\nseverity: critical\nstream: ct\ntags: [attack.t1485]\nmatch: {field: eventName, equals: TerminateInstances}\n",
    );
    let mut engine = Engine::new(EngineConfig::default());
    engine.set_rules(vec![rule]);
    let events = vec![
        json!({"eventName": "TerminateInstances", "n": 1}),
        json!({"eventName": "Other"}),
        json!(42),
    ];
    let records = vec![record(17, 1_000), record(18, 2_000), record(19, 3_000)];
    let alerts = engine.evaluate("ct", 2, &records, &events, 123_456);
    let expected_key = "r1|ct|2|17";
    assert_eq!(
        alerts,
        vec![Alert {
            id: Alert::id_for(expected_key),
            dedup_key: expected_key.into(),
            rule_id: "r1".into(),
            rule_title: "Terminate".into(),
            rule_version: 7,
            severity: Severity::Critical,
            stream: "ct".into(),
            event_time_ms: 1_000,
            created_at_ms: 123_456,
            group: None,
            window: None,
            value: None,
            events: vec![events[0].clone().into()],
            event_refs: vec![EventLocation {
                partition: 2,
                offset: 17
            }],
            tags: vec!["attack.t1485".into()],
        }]
    );
    let stats = stats_of(&engine, "r1");
    assert_eq!(
        (
            stats.evaluated,
            stats.matched,
            stats.alerts,
            stats.late_events
        ),
        (3, 1, 1, 0)
    );
    // Rules of other streams cost nothing and see nothing.
    assert!(engine.evaluate("other", 0, &records, &events, 0).is_empty());
    assert_eq!(stats_of(&engine, "r1").evaluated, 3);
    // Mismatched slices: the extra record is ignored instead of panicking.
    assert_eq!(engine.evaluate("ct", 0, &records, &events[..1], 0).len(), 1);
}

/// splitmix64: a tiny deterministic generator so the test needs no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn threshold_alerts_equal_a_brute_force_count_over_shuffled_batches() {
    const MORE_THAN: u64 = 3;
    const WINDOW_MS: i64 = 10_000;
    const JITTER_MS: i64 = 30_000; // below the 60 s allowed lateness: nothing is late
    let rule = compiled(
        "id: thr\ntitle: T\nstream: s\nmatch: {field: kind, equals: bad}\nthreshold: {more_than: 3, window: 10s, group_by: [user, host]}\n",
    );
    for seed in [1_u64, 2, 3, 42] {
        let mut rng = Rng(seed);
        // Events at increasing times (some before the epoch, to test alignment of negatives).
        let mut time = -50_000_i64;
        let mut generated = Vec::new();
        for _ in 0..6_000 {
            time += rng.below(300) as i64;
            let mut event = serde_json::Map::new();
            event.insert("user".into(), json!(format!("u{}", rng.below(6))));
            match rng.below(4) {
                0 => {}
                1 => drop(event.insert("host".into(), Value::Null)),
                n => drop(event.insert("host".into(), json!(format!("h{n}")))),
            }
            event.insert(
                "kind".into(),
                json!(if rng.below(10) < 6 { "bad" } else { "ok" }),
            );
            let jitter = rng.below(JITTER_MS as u64) as i64;
            generated.push((time + jitter, time, Value::Object(event)));
        }
        // Delivery order: by time + jitter, so events arrive out of order by up to 30 s.
        generated.sort_by_key(|(key, _, _)| *key);

        // The oracle: counts per (group, window) and the first matching refs in delivery order.
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut first_refs: HashMap<String, Vec<EventLocation>> = HashMap::new();
        let mut offsets = [0_u64; 3];
        let mut batches: Vec<(u32, Vec<Record>, Vec<Value>)> = Vec::new();
        let mut index = 0;
        while index < generated.len() {
            let size = 1 + rng.below(200) as usize;
            let partition = rng.below(3) as u32;
            let mut batch = (partition, Vec::new(), Vec::new());
            for (_, time, event) in generated.iter().skip(index).take(size) {
                let offset = offsets[partition as usize];
                offsets[partition as usize] += 1;
                if event["kind"] == "bad" {
                    let text = |v: &Value| v.as_str().map_or("null".to_string(), str::to_string);
                    let start = time.div_euclid(WINDOW_MS) * WINDOW_MS;
                    let key = format!(
                        "thr|{},{}|{start}",
                        text(&event["user"]),
                        text(&event["host"])
                    );
                    *counts.entry(key.clone()).or_default() += 1;
                    first_refs
                        .entry(key)
                        .or_default()
                        .push(EventLocation { partition, offset });
                }
                batch.1.push(record(offset, *time));
                batch.2.push(event.clone());
            }
            index += size;
            batches.push(batch);
        }
        let expected: BTreeSet<String> = counts
            .iter()
            .filter(|(_, count)| **count > MORE_THAN)
            .map(|(key, _)| key.clone())
            .collect();
        assert!(
            expected.len() > 50,
            "the data set must exercise the threshold (seed {seed})"
        );

        let mut engine = Engine::new(EngineConfig {
            max_events_per_alert: 3,
            ..EngineConfig::default()
        });
        engine.set_rules(vec![Arc::clone(&rule)]);
        let mut alerts = Vec::new();
        for (partition, records, events) in &batches {
            alerts.extend(engine.evaluate("s", *partition, records, events, 0));
        }
        let keys: BTreeSet<String> = alerts.iter().map(|a| a.dedup_key.clone()).collect();
        assert_eq!(
            keys.len(),
            alerts.len(),
            "one alert per group per window (seed {seed})"
        );
        assert_eq!(keys, expected, "seed {seed}");
        for alert in &alerts {
            // Fired immediately: the count is exactly one past the threshold.
            assert_eq!(alert.value, Some((MORE_THAN + 1) as f64));
            let (start, end) = alert.window.unwrap();
            assert_eq!(end - start, WINDOW_MS);
            assert!(alert.dedup_key.ends_with(&format!("|{start}")));
            assert_eq!(
                alert.event_refs,
                first_refs[&alert.dedup_key][..3],
                "seed {seed}"
            );
            assert_eq!(alert.events.len(), 3);
            let group = alert.group.as_ref().unwrap();
            assert_eq!(group.keys().collect::<Vec<_>>(), ["host", "user"]);
            for event in &alert.events {
                assert_eq!(event["user"].as_str(), Some(group["user"].as_str()));
            }
            assert_eq!(alert.id, Alert::id_for(&alert.dedup_key));
        }
        let stats = stats_of(&engine, "thr");
        assert_eq!(stats.late_events, 0);
        assert_eq!(stats.evaluated, generated.len() as u64);
        assert_eq!(stats.matched, counts.values().sum::<u64>());
        assert_eq!(stats.alerts, expected.len() as u64);
        assert_eq!(stats.evicted_groups, 0);
    }
}

#[test]
fn late_events_are_counted_not_evaluated() {
    let mut engine = Engine::new(EngineConfig {
        allowed_lateness_ms: 1_000,
        ..EngineConfig::default()
    });
    engine.set_rules(vec![
        compiled("id: w\ntitle: T\nstream: s\nthreshold: {more_than: 0, window: 1s}\n"),
        compiled("id: m\ntitle: T\nstream: s\n"),
    ]);
    let e = json!({});
    let alerts = feed(
        &mut engine,
        "s",
        0,
        &[(10_000, e.clone()), (20_000, e.clone())],
    );
    assert_eq!(alerts.iter().filter(|a| a.rule_id == "w").count(), 2);
    assert_eq!(engine.watermark_ms("s"), Some(19_000));
    assert_eq!(
        stats_of(&engine, "w").active_groups,
        1,
        "window [10s, 11s) closed by the watermark"
    );
    // 15.5 s and 18.5 s fall in windows ending at or before the 19 s watermark: late.
    // 19 s opens window [19 s, 20 s), still open.
    let alerts = feed(
        &mut engine,
        "s",
        2,
        &[
            (15_500, e.clone()),
            (18_500, e.clone()),
            (19_000, e.clone()),
        ],
    );
    let windows: Vec<_> = alerts
        .iter()
        .filter(|a| a.rule_id == "w")
        .map(|a| a.window.unwrap())
        .collect();
    assert_eq!(windows, [(19_000, 20_000)]);
    assert_eq!(
        alerts.iter().filter(|a| a.rule_id == "m").count(),
        3,
        "single-event rules have no lateness"
    );
    let w = stats_of(&engine, "w");
    assert_eq!(
        (w.evaluated, w.late_events, w.alerts, w.active_groups),
        (3, 2, 3, 2)
    );
    assert_eq!(stats_of(&engine, "m").late_events, 0);
}

#[test]
fn set_rules_keeps_unchanged_state_and_resets_changed_rules() {
    let base = "id: t\ntitle: T\nstream: s\nmatch: {field: k, equals: x}\nthreshold: {more_than: 2, window: 1m}\n";
    let mut engine = Engine::new(EngineConfig::default());
    engine.set_rules(vec![
        compiled(base),
        compiled("id: gone\ntitle: G\nstream: s\n"),
    ]);
    let x = json!({"k": "x"});
    assert!(
        feed(
            &mut engine,
            "s",
            0,
            &[(1_000, x.clone()), (2_000, x.clone())]
        )
        .iter()
        .all(|a| a.rule_id != "t")
    );

    // Same definition, new title and version: counts survive, the third event fires.
    let retitled = base.replace("title: T", "title: Renamed\nversion: 2\nseverity: high");
    engine.set_rules(vec![compiled(&retitled)]);
    assert_eq!(
        engine
            .stats()
            .iter()
            .map(|s| s.rule_id.as_str())
            .collect::<Vec<_>>(),
        ["t"],
        "removed rule dropped"
    );
    let alerts = feed(&mut engine, "s", 2, &[(3_000, x.clone())]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (
            alerts[0].rule_title.as_str(),
            alerts[0].rule_version,
            alerts[0].value
        ),
        ("Renamed", 2, Some(3.0))
    );
    assert_eq!(alerts[0].event_refs.len(), 3);
    assert_eq!(stats_of(&engine, "t").matched, 3);

    // Changed definition: state and counters start over, so two more events do not fire.
    let changed = base.replace("more_than: 2", "more_than: 1");
    engine.set_rules(vec![compiled(&changed)]);
    assert_eq!(
        stats_of(&engine, "t"),
        RuleStats {
            rule_id: "t".into(),
            max_keys: EngineConfig::default().max_groups_per_rule as u64,
            ..RuleStats::default()
        }
    );
    assert!(feed(&mut engine, "s", 3, &[(4_000, x.clone())]).is_empty());
    assert_eq!(feed(&mut engine, "s", 4, &[(5_000, x.clone())]).len(), 1);

    // Disabled rules are not evaluated at all.
    engine.set_rules(vec![compiled(
        &changed.replace("stream: s", "stream: s\nenabled: false"),
    )]);
    assert!(engine.stats().is_empty());
    assert!(feed(&mut engine, "s", 5, &[(6_000, x.clone()), (6_001, x)]).is_empty());
}

#[test]
fn group_limit_evicts_oldest_windows_and_counts_them() {
    let mut engine = Engine::new(EngineConfig {
        max_groups_per_rule: 3,
        ..EngineConfig::default()
    });
    engine.set_rules(vec![compiled(
        "id: g\ntitle: T\nstream: s\nthreshold: {more_than: 1, window: 1m, group_by: [user]}\n",
    )]);
    let user = |name: &str| json!({ "user": name });
    // Window [0, 60 s) gets a and b; window [60 s, 120 s) gets c, then d needs room.
    feed(
        &mut engine,
        "s",
        0,
        &[(1_000, user("a")), (2_000, user("b")), (61_000, user("c"))],
    );
    assert_eq!(stats_of(&engine, "g").active_groups, 3);
    feed(&mut engine, "s", 3, &[(62_000, user("d"))]);
    let stats = stats_of(&engine, "g");
    assert_eq!(
        (stats.evicted_groups, stats.active_groups),
        (2, 2),
        "the whole oldest window went"
    );
    // With a single window, one group at a time makes room; the total never exceeds the limit.
    feed(
        &mut engine,
        "s",
        4,
        &[
            (63_000, user("e")),
            (64_000, user("f")),
            (65_000, user("g")),
        ],
    );
    let stats = stats_of(&engine, "g");
    assert_eq!((stats.evicted_groups, stats.active_groups), (4, 3));
    // An evicted group starts counting again; a kept group fires on its second event.
    let alerts = feed(&mut engine, "s", 7, &[(66_000, user("g"))]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        alerts[0].group,
        Some(BTreeMap::from([("user".to_string(), "g".to_string())]))
    );
    assert_eq!(alerts[0].dedup_key, "g|g|60000");
}

#[test]
fn missing_group_values_group_as_null() {
    let mut engine = Engine::new(EngineConfig::default());
    engine.set_rules(vec![compiled(
        "id: n\ntitle: T\nstream: s\nthreshold: {more_than: 1, window: 1h, group_by: [a, b.c]}\n",
    )]);
    let alerts = feed(
        &mut engine,
        "s",
        0,
        &[(0, json!({"a": 1})), (1, json!({"a": 1, "b": {"c": null}}))],
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].dedup_key, "n|1,null|0");
    assert_eq!(alerts[0].window, Some((0, 3_600_000)));
    let expected = BTreeMap::from([
        ("a".to_string(), "1".to_string()),
        ("b.c".to_string(), "null".to_string()),
    ]);
    assert_eq!(alerts[0].group, Some(expected));
}

#[test]
fn extreme_event_times_never_panic() {
    let mut engine = Engine::new(EngineConfig::default());
    engine.set_rules(vec![
        compiled("id: x\ntitle: T\nstream: s\nthreshold: {more_than: 0, window: 366d}\n"),
        compiled(
            "id: y\ntitle: T\nstream: s\nthreshold: {more_than: 1, window: 7ms, group_by: [a]}\n",
        ),
    ]);
    let e = json!({"a": [1, {"b": 2}]});
    let times = [i64::MIN, i64::MAX, 0, -1, i64::MIN + 1, i64::MAX - 1];
    let items: Vec<(i64, Value)> = times.iter().map(|t| (*t, e.clone())).collect();
    let alerts = feed(&mut engine, "s", 0, &items);
    // i64::MIN and i64::MAX open one window each; once the watermark is i64::MAX - 60 s,
    // 0, -1 and i64::MIN + 1 are late, and i64::MAX - 1 shares i64::MAX's (saturated) window.
    assert_eq!(alerts.iter().filter(|a| a.rule_id == "x").count(), 2);
    assert_eq!(stats_of(&engine, "x").late_events, 3);
    assert_eq!(engine.watermark_ms("s"), Some(i64::MAX - 60_000));
}

/// As the server runs it: each event parsed for only the rules' fields
/// (`CompiledRule::selected_paths`), the whole event in the record's bytes.
#[test]
fn stateful_rules_read_selected_fields_and_alert_with_the_stored_bytes() {
    let rules = [
        compiled(
            "id: d\ntitle: D\nstream: ct\nmatch: {field: eventName, equals: ConsoleLogin}\ndistinct: {field: geo.country, count: {gt: 1}, window: 10m, group_by: [user.name]}\n",
        ),
        compiled(
            "id: n\ntitle: N\nstream: ct\nnew_value: {field: geo.country, group_by: [user.name], history: 30d}\n",
        ),
    ];
    let paths: Vec<tw_core::FieldPath> = rules.iter().flat_map(|r| r.selected_paths()).collect();
    let selection = tw_core::FieldSelection::new(&paths);
    // Spacing and number spelling show that alerts carry the stored bytes, not a re-encoding.
    let lines = [
        r#"{"eventName": "ConsoleLogin", "user": {"name": "ann", "id": 1.50}, "geo": {"country": "DE"}, "extra": "x"}"#,
        r#"{"eventName": "ConsoleLogin", "user": {"name": "ann", "id": 1.50}, "geo": {"country": "FR"}, "extra": "y"}"#,
    ];
    let records: Vec<Record> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| Record {
            payload: Bytes::from_static(line.as_bytes()),
            ..record(i as u64, 1_000 + i as i64)
        })
        .collect();
    let events: Vec<Value> = lines
        .iter()
        .map(|line| selection.parse(line.as_bytes()).unwrap())
        .collect();
    assert_eq!(
        events[0].get("extra"),
        None,
        "the rules do not read `extra`"
    );
    let mut engine = Engine::new(EngineConfig::default());
    engine.set_rules(rules.to_vec());
    let alerts = engine.evaluate("ct", 0, &records, &events, 0);
    let ids: Vec<&str> = alerts.iter().map(|a| a.rule_id.as_str()).collect();
    assert_eq!(ids, ["n", "d", "n"], "{alerts:#?}");
    for alert in &alerts {
        assert_eq!(alert.group.as_ref().unwrap()["user.name"], "ann");
    }
    assert_eq!(alerts[1].value, Some(2.0));
    assert_eq!(alerts[2].group.as_ref().unwrap()["geo.country"], "FR");
    let written = serde_json::to_value(&alerts[1]).unwrap();
    let first = serde_json::to_string(&alerts[1].events[0]).unwrap();
    assert_eq!(first, lines[0], "the event is written as stored");
    assert_eq!(written["events"][0]["extra"], "x");
    assert_eq!(alerts[2].events[0]["extra"], "y");

    // As the detection consumer evaluates: with the parser's word for each payload, kept
    // events are taken unread; the alerts are the same, byte for byte. A word for other bytes
    // (slices the caller did not align) is not used.
    let checked: Vec<Option<tw_core::CheckedPayload>> = records
        .iter()
        .map(|r| Some(selection.parse_checked(&r.payload).unwrap().1))
        .collect();
    let misaligned: Vec<_> = checked.iter().rev().cloned().collect();
    let expected = serde_json::to_string(&alerts).unwrap();
    for words in [checked, misaligned] {
        let mut engine = Engine::new(EngineConfig::default());
        engine.set_rules(rules.to_vec());
        let alerts = engine.evaluate_checked("ct", 0, &records, &events, &words, 0);
        assert_eq!(serde_json::to_string(&alerts).unwrap(), expected);
    }
}

/// Stateful rules see the same events whatever the batching: one batch of several chunks
/// (`CHUNK` is 1,024 events), batches that cut chunks anywhere, and one event at a time.
#[test]
fn stateful_alerts_do_not_depend_on_batch_or_chunk_boundaries() {
    let rules = [
        "id: thr\ntitle: T\nstream: s\nmatch: {field: name, equals: a}\nthreshold: {count: {gt: 3}, window: 10s, group_by: [user]}\n",
        "id: dist\ntitle: D\nstream: s\ndistinct: {field: ip, count: {gt: 2}, window: 1m, sliding: true, group_by: [user]}\n",
        "id: seq\ntitle: S\nstream: s\nsequence:\n  by: user\n  maxspan: 30s\n  steps:\n    - {field: name, equals: a}\n    - {field: name, equals: b}\n",
        "id: new\ntitle: N\nstream: s\nnew_value: {field: ip, group_by: [user, name], history: 1d}\n",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let mut time = 1_700_000_000_000_i64;
    let items: Vec<(i64, Value)> = (0..5_000)
        .map(|_| {
            time += next(400) as i64;
            let name = ["a", "b", "c"][next(3) as usize];
            let event = json!({
                "user": format!("u{}", next(7)),
                "name": name,
                "ip": format!("10.0.0.{}", next(12)),
            });
            (time, event)
        })
        .collect();
    let run = |batch: usize| {
        let mut engine = Engine::new(EngineConfig::default());
        engine.set_rules(rules.iter().map(|r| compiled(r)).collect());
        let mut alerts = Vec::new();
        for (i, items) in items.chunks(batch).enumerate() {
            alerts.extend(feed(&mut engine, "s", (i * batch) as u64, items));
        }
        alerts
            .into_iter()
            .map(|a| (a.dedup_key, a.group, a.value, a.event_refs))
            .collect::<Vec<_>>()
    };
    let whole = run(items.len());
    for kind in ["thr", "dist", "seq", "new"] {
        assert!(
            whole.iter().any(|a| a.0.starts_with(kind)),
            "{kind} raised nothing"
        );
    }
    assert_eq!(run(1_500), whole, "batches of 1,500");
    assert_eq!(run(1), whole, "one event at a time");
}
