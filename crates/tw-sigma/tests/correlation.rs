//! Sigma correlation rules → native stateful rules: each correlation type's translation, the
//! references (same file by name or id, loaded rules by id, `generate`), and every refusal,
//! each naming what it refuses.

use serde_json::{Value, json};
use tw_detect::{CountOp, Rule};
use tw_sigma::{SigmaConfig, SigmaError, translate, translate_file};

const FAILED: &str = "title: Failed login\nid: 53ba33fd-3a50-4468-a5ef-c583635cfa92\nname: failed_login\nlogsource:\n    product: windows\n    service: security\ndetection:\n    selection:\n        EventID:\n            - 529\n            - 4625\n    condition: selection\n";
const SUCCESS: &str = "title: Successful login\nid: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8\nname: successful_login\nlogsource:\n    product: windows\n    service: security\ndetection:\n    selection:\n        EventID:\n            - 528\n            - 4624\n    condition: selection\n";

/// A correlation document with `body` as its `correlation` section.
fn correlation(body: &str) -> String {
    format!(
        "title: Correlation\nid: b180ead8-d58f-40b2-ae54-c8940995b9b6\nlevel: high\ncorrelation:\n{body}"
    )
}

fn file(parts: &[&str]) -> String {
    parts.join("---\n")
}

fn no_loaded(_: &str) -> Option<Rule> {
    None
}

fn one(text: &str) -> Rule {
    let rules =
        translate_file(text, &SigmaConfig::default(), &no_loaded).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rules.len(), 1, "{rules:?}");
    rules.into_iter().next().unwrap()
}

fn refused(text: &str) -> String {
    translate_file(text, &SigmaConfig::default(), &no_loaded)
        .expect_err("refused")
        .to_string()
}

fn event(id: u64, user: &str) -> Value {
    json!({"EventID": id, "User": user})
}

#[test]
fn event_count_becomes_a_sliding_threshold_over_the_base_rule() {
    let text = file(&[
        &correlation(
            "    type: event_count\n    rules:\n        - failed_login\n    group-by:\n        - User\n    timespan: 10m\n    condition:\n        gte: 10\n",
        ),
        FAILED,
    ]);
    let rule = one(&text);
    assert_eq!(rule.id, "b180ead8-d58f-40b2-ae54-c8940995b9b6");
    assert_eq!(rule.stream, "windows_security");
    assert_eq!(rule.severity, "high".parse().unwrap());
    let threshold = rule.threshold.as_ref().expect("threshold");
    assert_eq!(threshold.count.op, CountOp::Gte);
    assert_eq!(threshold.count.value, 10);
    assert_eq!(threshold.window, "10m");
    assert!(threshold.sliding);
    assert_eq!(threshold.group_by, ["User"]);
    let compiled = rule.compile().unwrap();
    assert!(compiled.matches(&event(4625, "a")));
    assert!(!compiled.matches(&event(4624, "a")));
    // The same file through `translate` (it yields one rule).
    assert_eq!(translate(&text, &SigmaConfig::default()).unwrap(), rule);
    // lt/lte map to "below" bounds; by id works as well as by name.
    let below = one(&file(&[
        &correlation(
            "    type: event_count\n    rules: [53ba33fd-3a50-4468-a5ef-c583635cfa92]\n    timespan: 1h\n    condition: {lt: 3}\n",
        ),
        FAILED,
    ]));
    let threshold = below.threshold.unwrap();
    assert_eq!(
        (threshold.count.op, threshold.count.value),
        (CountOp::Lt, 3)
    );
    assert!(threshold.group_by.is_empty());
    assert_eq!(threshold.window, "1h");
}

#[test]
fn value_count_becomes_a_sliding_distinct_count_with_mapped_fields() {
    let mut config = SigmaConfig::default();
    config
        .fields
        .rename
        .insert("User".into(), "user.name".into());
    config
        .fields
        .rename
        .insert("Computer".into(), "host.name".into());
    let text = file(&[
        &correlation(
            "    type: value_count\n    rules: [failed_login, successful_login]\n    group-by: Computer\n    timespan: 1w\n    condition:\n        field: User\n        gt: 3\n",
        ),
        FAILED,
        SUCCESS,
    ]);
    let rules = translate_file(&text, &config, &no_loaded).unwrap();
    assert_eq!(rules.len(), 1);
    let distinct = rules[0].distinct.as_ref().expect("distinct");
    assert_eq!(distinct.field, "user.name");
    assert_eq!(distinct.group_by, ["host.name"]);
    assert_eq!((distinct.count.op, distinct.count.value), (CountOp::Gt, 3));
    assert_eq!(distinct.window, "7d", "a week is 7 days");
    assert!(distinct.sliding);
    let compiled = rules[0].compile().unwrap();
    assert!(compiled.matches(&event(4625, "a")) && compiled.matches(&event(528, "a")));
    assert!(!compiled.matches(&event(1, "a")));
}

#[test]
fn temporal_types_become_sequences_ordered_or_not() {
    for (kind, ordered) in [("temporal_ordered", true), ("temporal", false)] {
        let rule = one(&file(&[
            &correlation(&format!(
                "    type: {kind}\n    rules:\n        - failed_login\n        - successful_login\n    group-by:\n        - User\n    timespan: 5m\n"
            )),
            FAILED,
            SUCCESS,
        ]));
        let sequence = rule.sequence.as_ref().expect("sequence");
        assert_eq!(sequence.ordered, ordered, "{kind}");
        assert_eq!(sequence.by, ["User"]);
        assert_eq!(sequence.maxspan, "5m");
        assert_eq!(sequence.steps.len(), 2);
        assert!(sequence.until.is_none());
        // "All of the rules" written out is accepted.
        for condition in ["{gte: 2}", "{eq: 2}", "{gt: 1}"] {
            one(&file(&[
                &correlation(&format!(
                    "    type: {kind}\n    rules: [failed_login, successful_login]\n    group-by: [User]\n    timespan: 5m\n    condition: {condition}\n"
                )),
                FAILED,
                SUCCESS,
            ]));
        }
    }
}

#[test]
fn generate_loads_the_base_rules_too_and_unreferenced_rules_always_load() {
    let text = file(&[
        &correlation(
            "    type: temporal\n    rules: [failed_login, successful_login]\n    group-by: [User]\n    timespan: 5m\n    generate: true\n",
        ),
        FAILED,
        SUCCESS,
    ]);
    let rules = translate_file(&text, &SigmaConfig::default(), &no_loaded).unwrap();
    let ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "b180ead8-d58f-40b2-ae54-c8940995b9b6",
            "53ba33fd-3a50-4468-a5ef-c583635cfa92",
            "4d0a2c83-c62c-4ed4-b475-c7e23a9269b8"
        ]
    );
    // Top-level `generate` (the specification's place) works the same.
    let text = format!("generate: true\n{text}").replace("    generate: true\n", "");
    assert_eq!(
        translate_file(&text, &SigmaConfig::default(), &no_loaded)
            .unwrap()
            .len(),
        3
    );
    // Without generate, an unreferenced rule of the file still loads; `translate` refuses a
    // file that yields two rules.
    let text = file(&[
        &correlation(
            "    type: event_count\n    rules: [failed_login]\n    timespan: 5m\n    condition: {gt: 1}\n",
        ),
        FAILED,
        SUCCESS,
    ]);
    let rules = translate_file(&text, &SigmaConfig::default(), &no_loaded).unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[1].id, "4d0a2c83-c62c-4ed4-b475-c7e23a9269b8");
    let error = translate(&text, &SigmaConfig::default()).unwrap_err();
    assert!(error.to_string().contains("yields 2 rules"), "{error}");
}

#[test]
fn references_resolve_to_loaded_rules_by_id_and_a_missing_one_is_named() {
    let loaded = translate(FAILED, &SigmaConfig::default()).unwrap();
    let text = correlation(
        "    type: event_count\n    rules: [53ba33fd-3a50-4468-a5ef-c583635cfa92]\n    group-by: [User]\n    timespan: 5m\n    condition: {gte: 2}\n",
    );
    let lookup = |id: &str| (id == loaded.id).then(|| loaded.clone());
    let rules = translate_file(&text, &SigmaConfig::default(), &lookup).unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].stream, "windows_security");
    assert_eq!(rules[0].condition, loaded.condition);
    let error = translate_file(&text, &SigmaConfig::default(), &no_loaded).unwrap_err();
    assert!(matches!(error, SigmaError::UnknownRule { .. }));
    assert_eq!(
        error.to_string(),
        "correlation refers to rule `53ba33fd-3a50-4468-a5ef-c583635cfa92`, which is neither in the same file (by `name` or `id`) nor stored (by `id` or `name`) (at correlation.rules[0])"
    );
    // A loaded aggregate rule cannot be a base rule.
    let mut stateful = loaded.clone();
    stateful.threshold = rules[0].threshold.clone();
    let lookup = |id: &str| (id == stateful.id).then(|| stateful.clone());
    let error = translate_file(&text, &SigmaConfig::default(), &lookup).unwrap_err();
    assert!(
        error.to_string().contains("stateful rule `53ba33fd"),
        "{error}"
    );
}

#[test]
fn every_unsupported_or_invalid_correlation_is_refused_by_name() {
    let base = |body: &str| file(&[&correlation(body), FAILED, SUCCESS]);
    let ec = "    type: event_count\n    rules: [failed_login]\n    timespan: 5m\n";
    let cases: Vec<(String, &str)> = vec![
        (
            base(
                "    type: temporal\n    rules: [failed_login, successful_login]\n    group-by: [ip]\n    timespan: 5m\n    aliases:\n        ip:\n            failed_login: src\n            successful_login: dst\n",
            ),
            "unsupported field name `aliases`",
        ),
        (
            base(
                "    type: value_sum\n    rules: [failed_login]\n    timespan: 5m\n    condition: {field: x, gt: 1}\n",
            ),
            "unsupported correlation type `value_sum`",
        ),
        (
            base(&format!("{ec}    condition: {{eq: 3}}\n")),
            "condition `eq` on a count",
        ),
        (
            base(&format!("{ec}    condition: {{gt: 3, lte: 5}}\n")),
            "a range condition (two bounds)",
        ),
        (
            base(&format!("{ec}    condition: {{neq: 3}}\n")),
            "condition `neq`",
        ),
        (
            base(&format!("{ec}    condition: {{gt: -1}}\n")),
            "expected a non-negative integer",
        ),
        (
            base(ec),
            "required field is missing (at document 1: correlation.condition)",
        ),
        (
            base(&format!("{ec}    condition: {{gt: 1, field: User}}\n")),
            "`field` belongs to value_count conditions",
        ),
        (
            base(
                "    type: value_count\n    rules: [failed_login]\n    timespan: 5m\n    condition: {gt: 3}\n",
            ),
            "a value_count condition names the counted `field`",
        ),
        (
            base(
                "    type: value_count\n    rules: [failed_login]\n    timespan: 5m\n    condition: {field: User, lte: 3}\n",
            ),
            "condition `lte` on value_count",
        ),
        (
            base(
                "    type: value_count\n    rules: [failed_login]\n    timespan: 5m\n    condition: {field: [User, Computer], gt: 3}\n",
            ),
            "combined values of several fields",
        ),
        (
            base(
                "    type: event_count\n    rules: [failed_login]\n    timespan: 1M\n    condition: {gt: 1}\n",
            ),
            "timespan unit `M`",
        ),
        (
            base(
                "    type: event_count\n    rules: [failed_login]\n    timespan: 10 minutes\n    condition: {gt: 1}\n",
            ),
            "invalid timespan \"10 minutes\"",
        ),
        (
            base(
                "    type: event_count\n    rules: [failed_login]\n    timespan: 400d\n    condition: {gt: 1}\n",
            ),
            "longer than the maximum of 366d",
        ),
        (
            base(
                "    type: temporal\n    rules: [failed_login, successful_login]\n    timespan: 5m\n    condition: {gte: 1}\n",
            ),
            "a temporal condition other than all 2 referenced rules (`gte: 1`)",
        ),
        (
            base(
                "    type: temporal\n    rules: [failed_login, successful_login]\n    timespan: 5m\n    condition: failed_login and not successful_login\n",
            ),
            "extended (boolean expression) temporal conditions",
        ),
        (
            base("    type: temporal_ordered\n    rules: [failed_login]\n    timespan: 5m\n"),
            "refers to 2 to 16 rules, found 1",
        ),
        (
            base(
                "    type: event_count\n    rules: [failed_login]\n    timespan: 5m\n    condition: {gt: 1}\n    ordered: true\n",
            ),
            "correlation attribute `ordered`",
        ),
        (
            base(
                "    type: event_count\n    rules: []\n    timespan: 5m\n    condition: {gt: 1}\n",
            ),
            "at least one rule",
        ),
        (
            base(
                "    type: event_count\n    rules: [nobody]\n    timespan: 5m\n    condition: {gt: 1}\n",
            ),
            "refers to rule `nobody`",
        ),
        (
            file(&[
                &correlation(
                    "    type: temporal_ordered\n    rules: [many_failed, successful_login]\n    timespan: 10m\n",
                ),
                "title: Many\nid: a8418a5a-5fc4-46b5-b23b-6c73beb19d41\nname: many_failed\ncorrelation:\n    type: event_count\n    rules: [failed_login]\n    group-by: [User]\n    timespan: 10m\n    condition: {gte: 10}\n",
                FAILED,
                SUCCESS,
            ]),
            "a correlation of the correlation `many_failed` (chained correlations)",
        ),
        (
            file(&[
                &correlation(
                    "    type: temporal\n    rules: [failed_login, cloud]\n    timespan: 10m\n",
                ),
                FAILED,
                "title: Cloud\nid: c1\nname: cloud\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n    sel: {eventName: ConsoleLogin}\n    condition: sel\n",
            ]),
            "a correlation over rules of different streams (`failed_login` reads stream `windows_security`, `cloud` reads `cloudtrail`)",
        ),
        (
            file(&[
                "title: No id\ncorrelation:\n    type: event_count\n    rules: [failed_login]\n    timespan: 5m\n    condition: {gt: 1}\n",
                FAILED,
            ]),
            "needs an `id` (or a `name`)",
        ),
        (
            file(&[
                &correlation(
                    "    type: temporal\n    rules: [failed_login, failed_login]\n    timespan: 5m\n",
                ),
                FAILED,
                &FAILED.replace("53ba33fd", "63ba33fd"),
            ]),
            "`failed_login` names two documents",
        ),
        (
            file(&[
                &correlation(
                    "    type: event_count\n    rules: [failed_login]\n    timespan: 5m\n    condition: {gt: 1}\n",
                ),
                &FAILED.replace("4625", "[4625"),
            ]),
            "not valid yaml",
        ),
        (
            file(&[
                &correlation(
                    "    type: event_count\n    rules: [failed_login]\n    timespan: 5m\n    condition: {gt: 1}\n",
                ),
                &FAILED.replace(
                    "    condition: selection\n",
                    "    condition: selection | count() > 5\n",
                ),
            ]),
            "document 2",
        ),
    ];
    for (text, expected) in cases {
        let error = refused(&text);
        assert!(
            error.contains(expected),
            "expected {expected:?} in: {error}\n--- for:\n{text}"
        );
    }
}

#[test]
fn a_correlation_without_id_takes_its_name() {
    let rule = one(&file(&[
        "title: Named\nname: many_failed\ncorrelation:\n    type: event_count\n    rules: [failed_login]\n    timespan: 5m\n    condition: {gt: 1}\n",
        FAILED,
    ]));
    assert_eq!(rule.id, "many_failed");
}

/// A Sigma rule loaded again (every start with `--rules-dir`, `rules import`) keeps what was
/// set on its stored version through the API and that Sigma cannot say: disabled, shadow
/// mode, its sinks, a suppression. Before, the file's translation (enabled, every sink) was
/// stored over it.
#[test]
fn a_stored_rule_keeps_the_settings_sigma_has_no_field_for() {
    let fresh = one(FAILED);
    assert!(fresh.enabled && !fresh.shadow && fresh.sinks.is_empty());
    let mut stored = fresh.clone();
    stored.enabled = false;
    stored.shadow = true;
    stored.sinks = vec!["pager".into()];
    stored.suppress = Some(tw_detect::Suppression {
        duration: "10m".into(),
        by: Some(vec!["User".into()]),
    });
    let stored_for_lookup = stored.clone();
    let loaded = move |id: &str| (id == stored_for_lookup.id).then(|| stored_for_lookup.clone());
    let again = translate_file(FAILED, &SigmaConfig::default(), &loaded).unwrap();
    assert_eq!(again.len(), 1);
    assert!(!again[0].enabled);
    assert!(again[0].shadow);
    assert_eq!(again[0].sinks, vec!["pager".to_string()]);
    assert_eq!(again[0].suppress, stored.suppress);
    assert_eq!(
        again[0].condition, fresh.condition,
        "the definition is the file's"
    );
}
