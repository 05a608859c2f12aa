//! The engine evaluates conditions over chunks of events as bit masks, with tests memoized per
//! distinct string and paths read in one walk (`src/batch`). This checks it against the plain
//! per-event evaluation (`CompiledRule::matches`) on generated rules and events: every
//! operator, `all`/`any`/`not`, `n of` selections, keyword search, field references, arrays,
//! nulls, flattened keys, non-ASCII text, repeating and unique strings, and batches that span
//! several chunks.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tw_core::Record;
use tw_detect::{CompiledRule, Engine, EngineConfig, RuleFormat, parse_rule};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const FIELDS: &[&str] = &["a", "b", "c.d", "ip", "n", "arr", "x.y", "deep.e.f"];
const TEXTS: &[&str] = &[
    "GetObject",
    "getobject",
    "ConsoleLogin",
    "Straße",
    "STRASSE",
    "10.1.2.3",
    "192.168.7.1",
    "::1",
    "2001:db8::5",
    "evil-marker",
    "aws-cli/2.0 kali",
    "",
    "x*y",
    "5",
    "true",
    "10",
    "2026-01-01T00:30:00Z",
    "2026-01-01T01:00:00+02:00",
];
const FIELD_COMPARISONS: &[&str] = &[
    "not_equals_field",
    "gt_field",
    "gte_field",
    "lt_field",
    "lte_field",
];
const NEEDLES: &[&str] = &["get", "Object", "kali", "ß", "10.", "marker", "", "x*", "5"];

fn value(rng: &mut Rng, unique: u64) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(rng.below(10)),
        2 => json!(rng.below(2) == 0),
        3 => json!([rng.pick(TEXTS), rng.pick(TEXTS)]),
        4 => json!({"e": {"f": rng.pick(TEXTS)}}),
        5 => json!(format!("unique-{unique}")),
        6 => json!(2.5),
        _ => json!(rng.pick(TEXTS)),
    }
}

fn event(rng: &mut Rng, index: u64) -> Value {
    let mut object = serde_json::Map::new();
    for name in ["a", "b", "ip", "n", "arr", "deep"] {
        if rng.below(6) != 0 {
            object.insert(name.into(), value(rng, index));
        }
    }
    match rng.below(4) {
        0 => {
            object.insert("c".into(), json!({"d": rng.pick(TEXTS)}));
        }
        1 => {
            object.insert("c.d".into(), json!(rng.pick(TEXTS)));
        }
        _ => {}
    }
    if rng.below(3) == 0 {
        object.insert("x.y".into(), value(rng, index));
    }
    Value::Object(object)
}

fn leaf(rng: &mut Rng) -> Value {
    let field = rng.pick(FIELDS);
    let ignore_case = rng.below(3) == 0;
    let mut leaf = match rng.below(16) {
        0 => json!({"equals": rng.pick(TEXTS)}),
        1 => json!({"equals": rng.below(10)}),
        2 => json!({"in": [rng.pick(TEXTS), rng.pick(TEXTS)]}),
        3 => json!({"contains": [rng.pick(NEEDLES), rng.pick(NEEDLES)]}),
        4 => json!({"startswith": rng.pick(NEEDLES)}),
        5 => json!({"endswith": rng.pick(NEEDLES)}),
        6 => json!({"wildcard": rng.pick(&["*obj*", "g?t*", "*\\**", "10.*.3"])}),
        7 => json!({"regex": rng.pick(&["^get", "o.j", "(?i)kali", "^$", "\\d"])}),
        8 => json!({"exists": rng.below(2) == 0}),
        9 => json!({"gt": rng.below(8)}),
        10 => json!({"lte": 3}),
        11 => {
            json!({"cidr": rng.pick(&["10.0.0.0/8", "192.168.0.0/16", "::1/128", "2001:db8::/32"])})
        }
        12 => json!({"equals_field": rng.pick(FIELDS)}),
        13 => json!({rng.pick(FIELD_COMPARISONS): rng.pick(FIELDS)}),
        14 => json!({rng.pick(FIELD_COMPARISONS): rng.pick(FIELDS)}),
        _ => json!({"contains": rng.pick(NEEDLES)}),
    };
    let keyword = rng.below(12) == 0;
    let object = leaf.as_object_mut().expect("object");
    let is_string_op = [
        "equals",
        "in",
        "contains",
        "startswith",
        "endswith",
        "wildcard",
        "regex",
        "equals_field",
    ]
    .iter()
    .chain(FIELD_COMPARISONS)
    .any(|op| object.contains_key(*op));
    let usable_as_keyword = !object.contains_key("exists")
        && !object.contains_key("equals_field")
        && !FIELD_COMPARISONS.iter().any(|op| object.contains_key(*op));
    object.insert(
        "field".into(),
        json!(if keyword && usable_as_keyword {
            "*"
        } else {
            field
        }),
    );
    if ignore_case && is_string_op {
        object.insert("ignore_case".into(), json!(true));
    }
    leaf
}

fn condition(rng: &mut Rng, depth: usize) -> Value {
    if depth == 0 {
        return leaf(rng);
    }
    match rng.below(6) {
        0 => {
            json!({"all": (0..1 + rng.below(3)).map(|_| condition(rng, depth - 1)).collect::<Vec<_>>()})
        }
        1 => {
            json!({"any": (0..1 + rng.below(3)).map(|_| condition(rng, depth - 1)).collect::<Vec<_>>()})
        }
        2 => json!({"not": condition(rng, depth - 1)}),
        3 => json!({
            "selections": {
                "sel1": condition(rng, depth - 1),
                "sel2": condition(rng, depth - 1),
                "sel3": condition(rng, depth - 1),
                "filter": condition(rng, depth - 1),
            },
            "condition": rng.pick(&["2 of sel* and not filter", "all of sel* or filter", "1 of them", "sel1 and (sel2 or not sel3)"]),
        }),
        _ => leaf(rng),
    }
}

fn rules(rng: &mut Rng, count: usize) -> Vec<Arc<CompiledRule>> {
    (0..count)
        .map(|index| {
            let depth = 1 + rng.below(3);
            let document = json!({
                "id": format!("r{index}"),
                "title": "generated",
                "stream": "s",
                "match": condition(rng, depth),
            });
            let rule = parse_rule(&document.to_string(), RuleFormat::Json)
                .unwrap_or_else(|error| panic!("{document}: {error}"));
            Arc::new(rule.compile().expect("compiles"))
        })
        .collect()
}

#[test]
fn chunked_evaluation_equals_per_event_evaluation() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut matched_somewhere = 0;
    for round in 0..6 {
        let rules = rules(&mut rng, 40);
        // Lengths below, at and across the chunk size.
        let count = [1, 700, 1024, 1025, 2500, 3000][round];
        let events: Vec<Value> = (0..count as u64).map(|i| event(&mut rng, i)).collect();
        let records: Vec<Record> = (0..count as u64)
            .map(|offset| Record {
                offset,
                ingest_time_ms: 1_000 + offset as i64,
                event_time_ms: 1_000 + offset as i64,
                key: Bytes::new(),
                payload: Bytes::new(),
            })
            .collect();
        let mut expected = Vec::new();
        for (offset, event) in events.iter().enumerate() {
            for rule in &rules {
                if rule.matches(event) {
                    expected.push((offset as u64, rule.id().to_string()));
                }
            }
        }
        let mut engine = Engine::new(EngineConfig::default());
        engine.set_rules(rules.clone());
        let got: Vec<(u64, String)> = engine
            .evaluate("s", 0, &records, &events, 0)
            .into_iter()
            .map(|alert| (alert.event_refs[0].offset, alert.rule_id))
            .collect();
        if got != expected {
            let first = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            let (offset, id) = expected
                .get(first)
                .or(got.get(first))
                .expect("a difference");
            let rule = rules.iter().find(|r| r.id() == id).expect("rule");
            panic!(
                "round {round}: {} alerts, {} expected; first difference at {first}: rule {} on {}",
                got.len(),
                expected.len(),
                serde_json::to_string(rule.rule()).unwrap_or_default(),
                events[*offset as usize]
            );
        }
        // The detection consumer's way: the rules' fields parsed from the stored bytes into
        // rows (flattened keys, arrays and nesting included) decide exactly as the trees did.
        let stored: Vec<Record> = records
            .iter()
            .zip(&events)
            .map(|(record, event)| Record {
                payload: Bytes::from(serde_json::to_vec(event).unwrap()),
                ..record.clone()
            })
            .collect();
        let mut by_rows = Engine::new(EngineConfig::default());
        by_rows.set_rules(rules.clone());
        let rows: Vec<_> = stored
            .iter()
            .map(|record| by_rows.selection().parse_fields(&record.payload).unwrap())
            .collect();
        let from_rows: Vec<(u64, String)> = by_rows
            .evaluate_fields("s", 0, &stored, &rows, &[], 0)
            .into_iter()
            .map(|alert| (alert.event_refs[0].offset, alert.rule_id))
            .collect();
        assert!(
            from_rows == expected,
            "round {round}: rows decide differently"
        );
        matched_somewhere += expected.len();
        for stats in engine.stats() {
            assert_eq!(stats.evaluated, count as u64, "{}", stats.rule_id);
        }
    }
    assert!(
        matched_somewhere > 1000,
        "the generated rules match something: {matched_somewhere}"
    );
}

/// Field-to-field operators on every pair of a set of values covering each kind (numbers,
/// numeric strings, times, text, booleans, null, arrays, objects, absent): chunks and rows
/// decide as the per-event evaluation does, pair by pair.
#[test]
fn field_comparisons_decide_alike_on_every_pair_of_kinds() {
    let values = [
        json!(1),
        json!(2.5),
        json!(-3),
        json!(u64::MAX),
        json!("2"),
        json!("10"),
        json!("2026-01-01T00:30:00Z"),
        json!("2026-01-01T01:00:00+02:00"),
        json!("2026-01-01 00:30:00"),
        json!("apple"),
        json!("Apple"),
        json!("Straße"),
        json!(true),
        Value::Null,
        json!([1]),
        json!({"x": 1}),
    ];
    let mut events: Vec<Value> = Vec::new();
    for a in &values {
        for b in &values {
            events.push(json!({"a": a, "b": b}));
        }
        events.push(json!({"a": a}));
        events.push(json!({"b": a}));
    }
    let rules: Vec<Arc<CompiledRule>> = FIELD_COMPARISONS
        .iter()
        .chain(&["equals_field"])
        .flat_map(|op| [(op, false), (op, true)])
        .enumerate()
        .map(|(index, (op, ignore_case))| {
            let document = json!({
                "id": format!("r{index}"),
                "title": "pairs",
                "stream": "s",
                "match": {"field": "a", *op: "b", "ignore_case": ignore_case},
            });
            let rule = parse_rule(&document.to_string(), RuleFormat::Json).unwrap();
            Arc::new(rule.compile().unwrap())
        })
        .collect();
    let records: Vec<Record> = events
        .iter()
        .enumerate()
        .map(|(offset, event)| Record {
            offset: offset as u64,
            ingest_time_ms: 1_000,
            event_time_ms: 1_000,
            key: Bytes::new(),
            payload: Bytes::from(serde_json::to_vec(event).unwrap()),
        })
        .collect();
    let mut expected = Vec::new();
    for (offset, event) in events.iter().enumerate() {
        for rule in &rules {
            if rule.matches(event) {
                expected.push((offset as u64, rule.id().to_string()));
            }
        }
    }
    let alerts = |alerts: Vec<tw_core::Alert>| -> Vec<(u64, String)> {
        alerts
            .into_iter()
            .map(|alert| (alert.event_refs[0].offset, alert.rule_id))
            .collect()
    };
    let mut by_trees = Engine::new(EngineConfig::default());
    by_trees.set_rules(rules.clone());
    assert_eq!(
        alerts(by_trees.evaluate("s", 0, &records, &events, 0)),
        expected
    );
    let mut by_rows = Engine::new(EngineConfig::default());
    by_rows.set_rules(rules.clone());
    let rows: Vec<_> = records
        .iter()
        .map(|record| by_rows.selection().parse_fields(&record.payload).unwrap())
        .collect();
    let from_rows = by_rows.evaluate_fields("s", 0, &records, &rows, &[], 0);
    assert_eq!(alerts(from_rows), expected);
    // Every operator holds somewhere and fails somewhere: the pairs exercise each of them.
    for rule in &rules {
        let holds = expected.iter().filter(|(_, id)| id == rule.id()).count();
        assert!((1..events.len()).contains(&holds), "{}: {holds}", rule.id());
    }
}
