//! Per-rule key limits (`max_keys`): validated with their place in the document, used instead of
//! the engine's `max_groups_per_rule` by every kind of state and by suppression, reported in
//! `RuleStats::max_keys`, and changeable on a live rule without losing its state.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tw_core::{Alert, Record};
use tw_detect::{
    CompiledRule, Engine, EngineConfig, MAX_RULE_KEYS, RuleFormat, RuleStats, parse_rule,
};

fn compiled(yaml: &str) -> Arc<CompiledRule> {
    Arc::new(
        parse_rule(yaml, RuleFormat::Yaml)
            .unwrap_or_else(|e| panic!("{yaml}: {e}"))
            .compile()
            .unwrap(),
    )
}

fn problems(yaml: &str) -> Vec<String> {
    let error = parse_rule(yaml, RuleFormat::Yaml).expect_err(yaml);
    error.problems().iter().map(ToString::to_string).collect()
}

fn engine(default_keys: usize, rules: &[&str]) -> Engine {
    let mut engine = Engine::new(EngineConfig {
        max_groups_per_rule: default_keys,
        ..EngineConfig::default()
    });
    engine.set_rules(rules.iter().map(|rule| compiled(rule)).collect());
    engine
}

/// Feeds one event per call at its time (so the watermark moves between events).
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

fn stats_of(engine: &Engine, id: &str) -> RuleStats {
    engine
        .stats()
        .into_iter()
        .find(|stats| stats.rule_id == id)
        .unwrap_or_else(|| panic!("rule {id} loaded"))
}

/// One event per group `g{from}`..`g{to - 1}`, a second apart.
fn groups(from: i64, to: i64) -> Vec<(i64, Value)> {
    (from..to)
        .map(|i| (i * 1_000, json!({"g": format!("g{i}"), "v": "a"})))
        .collect()
}

/// Every kind of state, and suppression on a single-event rule, each with `{max_keys}` left to
/// fill in.
const KINDS: &[&str] = &[
    "threshold: {count: {gt: 5}, window: 1h, group_by: [g]}",
    "threshold: {count: {gt: 5}, window: 1h, sliding: true, group_by: [g]}",
    "distinct: {field: v, count: {gt: 5}, window: 1h, group_by: [g]}",
    "distinct: {field: v, count: {gt: 5}, window: 1h, sliding: true, group_by: [g]}",
    "sequence: {by: g, maxspan: 1h, steps: [{field: v, equals: a}, {field: v, equals: b}]}",
    "new_value: {field: v, group_by: [g], history: 30d}",
    "suppress: {for: 1h, by: [g]}",
];

fn with_keys(id: &str, kind: &str, max_keys: Option<u64>) -> String {
    let keys = max_keys.map_or(String::new(), |keys| format!("max_keys: {keys}\n"));
    format!("id: {id}\ntitle: T\nstream: s\n{kind}\n{keys}")
}

#[test]
fn max_keys_is_validated_with_its_place() {
    let threshold = "id: r\ntitle: T\nstream: s\nthreshold: {more_than: 1, window: 1m}\n";
    assert_eq!(
        problems(&format!("{threshold}max_keys: 0\n")),
        ["max_keys: must be at least 1 (remove `max_keys` to use the server's limit)"]
    );
    assert_eq!(
        problems(&format!("{threshold}max_keys: {}\n", MAX_RULE_KEYS + 1)),
        ["max_keys: 10000001 is more than the most a rule may keep (10000000 keys)"]
    );
    for (written, found) in [("-5", "-5"), ("1.5", "1.5"), ("many", "\"many\"")] {
        assert_eq!(
            problems(&format!("{threshold}max_keys: {written}\n")),
            [format!(
                "max_keys: expected a positive whole number of keys, found {found}"
            )]
        );
    }
    assert_eq!(
        problems("id: r\ntitle: T\nstream: s\nmatch: {field: a, equals: b}\nmax_keys: 10\n"),
        [
            "max_keys: applies only to a rule that keeps state (threshold, distinct, sequence, new_value or suppress)"
        ]
    );
    // Reported with the rule's other problems, at once (and a mistyped window does not make
    // the rule look stateless).
    let both = problems(
        "id: r\ntitle: T\nstream: s\nthreshold: {more_than: 1, window: 1x}\nmax_keys: 0\n",
    );
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(
        both[0].starts_with("threshold.window: invalid duration"),
        "{both:?}"
    );
    assert!(
        both[1].starts_with("max_keys: must be at least 1"),
        "{both:?}"
    );
    // The bound itself, and a single-event rule with `suppress`, are fine.
    compiled(&format!("{threshold}max_keys: {MAX_RULE_KEYS}\n"));
    compiled("id: r\ntitle: T\nstream: s\nsuppress: 10m\nmax_keys: 10\n");
}

#[test]
fn max_keys_is_written_back_only_when_set() {
    let rule = compiled(&with_keys("r", KINDS[0], Some(500_000)));
    assert_eq!(rule.max_keys(), Some(500_000));
    assert_eq!(rule.rule().to_value()["max_keys"], json!(500_000));
    let text = serde_json::to_string(rule.rule()).unwrap();
    assert_eq!(&parse_rule(&text, RuleFormat::Json).unwrap(), rule.rule());
    let without = compiled(&with_keys("r", KINDS[0], None));
    assert_eq!(without.max_keys(), None);
    assert!(without.rule().to_value().get("max_keys").is_none());
}

#[test]
fn a_rules_max_keys_replaces_the_engine_default_for_every_kind() {
    for kind in KINDS {
        // The engine allows 1 000 keys; the rule allows 3; a rule beside it takes the default.
        let mut e = engine(
            1_000,
            &[
                &with_keys("small", kind, Some(3)),
                &with_keys("default", kind, None),
            ],
        );
        let mut offset = 0;
        feed(&mut e, &mut offset, &groups(0, 10));
        let small = stats_of(&e, "small");
        assert_eq!(
            (small.max_keys, small.evicted_groups, small.active_groups),
            (3, 7, 3),
            "{kind}\n{small:?}"
        );
        let default = stats_of(&e, "default");
        assert_eq!(
            (
                default.max_keys,
                default.evicted_groups,
                default.active_groups
            ),
            (1_000, 0, 10),
            "{kind}\n{default:?}"
        );
        // And above the engine's default: an engine of 3 keys, a rule of 64 keeps all 10.
        let mut e = engine(3, &[&with_keys("large", kind, Some(64))]);
        feed(&mut e, &mut offset, &groups(0, 10));
        let large = stats_of(&e, "large");
        assert_eq!(
            (large.max_keys, large.evicted_groups, large.active_groups),
            (64, 0, 10),
            "{kind}\n{large:?}"
        );
    }
}

/// Raising `max_keys` after an eviction warning must not throw away the windows it protects:
/// the definition is otherwise unchanged, so the state is kept and a count continues.
#[test]
fn raising_max_keys_keeps_the_state() {
    let rule = |keys: u64| {
        with_keys(
            "t",
            "threshold: {count: {gt: 2}, window: 1h, group_by: [g]}",
            Some(keys),
        )
    };
    let (before, after) = (compiled(&rule(2)), compiled(&rule(10)));
    assert!(before.same_definition(&after));
    let mut e = engine(1_000, &[&rule(2)]);
    let mut offset = 0;
    let g0 = json!({"g": "g0"});
    assert!(
        feed(
            &mut e,
            &mut offset,
            &[(1_000, g0.clone()), (2_000, g0.clone())]
        )
        .is_empty()
    );
    assert!(
        e.set_rules(vec![after]).is_empty(),
        "no rule started afresh"
    );
    let stats = stats_of(&e, "t");
    assert_eq!((stats.max_keys, stats.matched), (10, 2));
    let alerts = feed(&mut e, &mut offset, &[(3_000, g0)]);
    assert_eq!(alerts.len(), 1, "the third event of the kept window fires");
    assert_eq!(alerts[0].value, Some(3.0));
}

/// Lowering `max_keys` keeps the state too, and the next new key brings it within the new
/// limit at once (before, one eviction batch per new key left it above for long).
#[test]
fn lowering_max_keys_evicts_down_to_the_new_limit_at_the_next_new_key() {
    for kind in KINDS {
        let mut e = engine(1_000, &[&with_keys("t", kind, Some(100))]);
        let mut offset = 0;
        feed(&mut e, &mut offset, &groups(0, 10));
        assert_eq!(stats_of(&e, "t").active_groups, 10, "{kind}");
        assert!(
            e.set_rules(vec![compiled(&with_keys("t", kind, Some(4)))])
                .is_empty()
        );
        let kept = stats_of(&e, "t");
        assert_eq!((kept.max_keys, kept.active_groups), (4, 10), "{kind}");
        feed(&mut e, &mut offset, &groups(10, 11));
        let s = stats_of(&e, "t");
        assert_eq!(
            (s.evicted_groups, s.active_groups),
            (7, 4),
            "{kind}: down to a batch (1) below 4, then the new key\n{s:?}"
        );
    }
}

#[test]
fn a_checkpoint_restores_into_the_rule_with_a_changed_max_keys() {
    let kind = "threshold: {count: {gt: 2}, window: 1h, group_by: [g]}";
    let mut e = engine(1_000, &[&with_keys("t", kind, Some(5))]);
    let mut offset = 0;
    feed(&mut e, &mut offset, &groups(0, 3));
    let bytes = e.write_checkpoint(&json!({"offset": offset})).unwrap();
    let (_, snapshot) = Engine::read_checkpoint::<Value>(&bytes).unwrap();
    let mut restarted = engine(1_000, &[&with_keys("t", kind, Some(50))]);
    assert_eq!(restarted.restore(snapshot), ["t"]);
    let stats = stats_of(&restarted, "t");
    assert_eq!((stats.max_keys, stats.active_groups), (50, 3));
}
