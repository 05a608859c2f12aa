//! The match-language additions: wildcards, time comparisons, field-to-field comparison,
//! keyword (any-field) search, value thresholds and named selections with a condition string.

use serde_json::{Value, json};
use tw_detect::{CompiledRule, RuleFormat, parse_rule};

fn rule(text_match: &str) -> Result<CompiledRule, String> {
    let text = format!("id: t\ntitle: t\nstream: s\nmatch: {text_match}\n");
    parse_rule(&text, RuleFormat::Yaml)
        .and_then(|r| r.compile())
        .map_err(|e| e.to_string())
}

fn check(condition: &str, cases: &[(Value, bool)]) {
    let compiled = rule(condition).unwrap_or_else(|e| panic!("{condition}: {e}"));
    for (event, expected) in cases {
        assert_eq!(compiled.matches(event), *expected, "{condition} on {event}");
    }
}

fn refused(condition: &str, wanted: &str) {
    let error = rule(condition).expect_err(condition);
    assert!(error.contains(wanted), "{condition}: {error}");
}

#[test]
fn wildcard_patterns() {
    check(
        r#"{field: image, wildcard: '*\cmd.exe', ignore_case: true}"#,
        &[
            (json!({"image": "C:\\Windows\\System32\\CMD.EXE"}), true),
            (
                json!({"image": "C:\\Windows\\System32\\cmd.exe.bak"}),
                false,
            ),
            (json!({"image": ["x", "D:\\cmd.exe"]}), true),
            (json!({"image": null}), false),
            (json!({}), false),
        ],
    );
    check(
        r#"{field: user, wildcard: ['adm?n', 'root\*']}"#,
        &[
            (json!({"user": "admin"}), true),
            (json!({"user": "ADMIN"}), false),
            (json!({"user": "root*"}), true),
            (json!({"user": "rootx"}), false),
            (json!({"user": "adn"}), false),
        ],
    );
    check(
        "{field: port, wildcard: '44*'}",
        &[(json!({"port": 443}), true), (json!({"port": 80}), false)],
    );
}

#[test]
fn value_threshold_is_a_plain_match() {
    check(
        "{field: amount, gt: 1000}",
        &[
            (json!({"amount": 1000.5}), true),
            (json!({"amount": 1000}), false),
            (json!({"amount": "2500"}), true),
            (json!({"amount": "lots"}), false),
        ],
    );
}

#[test]
fn short_form_reads_like_the_event() {
    check(
        "{amount: {gt: 1000}}",
        &[
            (json!({"amount": 1001}), true),
            (json!({"amount": 999}), false),
        ],
    );
    check(
        "{eventName: ConsoleLogin, userAgent: {contains: curl, ignore_case: true}}",
        &[
            (
                json!({"eventName": "ConsoleLogin", "userAgent": "CURL/8"}),
                true,
            ),
            (
                json!({"eventName": "ConsoleLogin", "userAgent": "boto"}),
                false,
            ),
            (json!({"eventName": "Other", "userAgent": "curl"}), false),
        ],
    );
    refused(
        "{amount: {gt: 1, lt: 5}}",
        "match.amount: exactly one operator",
    );
    refused("{amount: {bogus: 1}}", "match.amount.bogus: unknown field");
    // The long form is what is stored.
    let compiled = rule("{amount: {gt: 1000}}").unwrap();
    assert_eq!(
        compiled.rule().to_value()["match"],
        json!({"field": "amount", "gt": 1000})
    );
}

#[test]
fn time_comparisons_accept_rfc3339_and_epoch_fields() {
    check(
        "{field: t, gte: '2026-01-01T00:00:00Z'}",
        &[
            (json!({"t": "2026-01-01T00:00:00Z"}), true),
            (json!({"t": "2025-12-31T23:59:59.999Z"}), false),
            (json!({"t": "2026-01-01T01:00:00+02:00"}), false),
            (json!({"t": 1_767_225_600}), true),
            (json!({"t": 1_767_225_599_000_i64}), false),
            (json!({"t": "not a time"}), false),
        ],
    );
    check(
        "{field: t, lt: '2026-01-01T00:00:00Z'}",
        &[
            (json!({"t": "2025-06-01 10:00:00"}), true),
            (json!({"t": "2026-06-01"}), false),
        ],
    );
    refused("{field: t, gt: 'yesterday'}", "match.gt: invalid time");
}

#[test]
fn field_to_field_comparison() {
    check(
        "{field: src.user, equals_field: dst.user}",
        &[
            (json!({"src": {"user": "a"}, "dst": {"user": "a"}}), true),
            (json!({"src": {"user": "a"}, "dst": {"user": "A"}}), false),
            (json!({"src": {"user": 5}, "dst": {"user": 5.0}}), true),
            (json!({"src": {"user": "5"}, "dst": {"user": 5}}), true),
            (json!({"src": {"user": null}, "dst": {"user": null}}), false),
            (json!({"src": {"user": "a"}}), false),
        ],
    );
    check(
        "{field: a, equals_field: b, ignore_case: true}",
        &[(json!({"a": "X", "b": "x"}), true)],
    );
    refused("{field: a, equals_field: 'b..c'}", "empty segment");
}

#[test]
fn field_to_field_inequality_needs_both_fields() {
    check(
        "{field: a, not_equals_field: b}",
        &[
            (json!({"a": 1, "b": 2}), true),
            (json!({"a": "x", "b": "y"}), true),
            (json!({"a": true, "b": false}), true),
            (json!({"a": 5, "b": 5.0}), false),
            (json!({"a": "5", "b": 5}), false),
            (json!({"a": "x", "b": "X"}), true),
            // Unlike `not: {equals_field}`: a missing, null or non-scalar side never holds.
            (json!({"a": "x"}), false),
            (json!({"a": "x", "b": null}), false),
            (json!({"a": ["x"], "b": "y"}), false),
            (json!({"a": {"x": 1}, "b": "y"}), false),
        ],
    );
    check(
        "{not: {field: a, equals_field: b}}",
        &[(json!({"a": "x"}), true)],
    );
    check(
        "{field: a, not_equals_field: b, ignore_case: true}",
        &[
            (json!({"a": "Straße", "b": "STRASSE"}), true),
            (json!({"a": "Admin", "b": "admin"}), false),
        ],
    );
}

#[test]
fn field_to_field_ordering_compares_numbers_times_and_text_each_as_such() {
    check(
        "{field: a, gt_field: b}",
        &[
            (json!({"a": 2, "b": 1}), true),
            (json!({"a": 1, "b": 1.0}), false),
            (json!({"a": -1.5, "b": -2}), true),
            // Numeric strings are numbers (text order would put "10" before "9").
            (json!({"a": "10", "b": "9"}), true),
            (json!({"a": "10", "b": 9}), true),
            (json!({"a": " 1e3 ", "b": 999}), true),
            // Times are instants: 00:30 UTC is after 01:00+02:00 (23:00 UTC the day before),
            // though its text sorts first.
            (
                json!({"a": "2026-01-01T00:30:00Z", "b": "2026-01-01T01:00:00+02:00"}),
                true,
            ),
            (
                json!({"a": "2026-01-01 00:00:00.5", "b": "2026-01-01T00:00:00Z"}),
                true,
            ),
            // Other strings by code point: lowercase after uppercase.
            (json!({"a": "b", "b": "a"}), true),
            (json!({"a": "a", "b": "B"}), true),
            (json!({"a": "apple", "b": "apple"}), false),
            // Mixed kinds never hold, in either direction.
            (json!({"a": "x", "b": 1}), false),
            (json!({"a": "2026-01-01T00:00:00Z", "b": 1}), false),
            (json!({"a": "2026-01-01T00:00:00Z", "b": "2025"}), false),
            (json!({"a": "zzz", "b": "2026-01-01T00:00:00Z"}), false),
            (json!({"a": true, "b": false}), false),
            // Missing, null and non-scalar sides never hold.
            (json!({"a": 2}), false),
            (json!({"a": 2, "b": null}), false),
            (json!({"a": [2], "b": 1}), false),
        ],
    );
    check(
        "{field: a, lt_field: b}",
        &[
            (json!({"a": 1, "b": 2}), true),
            (json!({"a": 2, "b": 2}), false),
            (json!({"a": "x", "b": 1}), false),
            (json!({"a": 1, "b": "x"}), false),
        ],
    );
    check(
        "{field: a, gte_field: b}",
        &[
            (json!({"a": 2, "b": 2.0}), true),
            (
                json!({"a": "2026-01-01T02:00:00+02:00", "b": "2026-01-01T00:00:00Z"}),
                true,
            ),
            (json!({"a": 1, "b": 2}), false),
        ],
    );
    check(
        "{field: a, lte_field: b}",
        &[
            (json!({"a": "same", "b": "same"}), true),
            (json!({"a": "a", "b": "B"}), false),
        ],
    );
    check(
        "{field: a, lte_field: b, ignore_case: true}",
        &[
            (json!({"a": "a", "b": "B"}), true),
            (json!({"a": "C", "b": "b"}), false),
        ],
    );
    check(
        "{field: a, lt_field: b, ignore_case: true}",
        &[(json!({"a": "APPLE", "b": "apple"}), false)],
    );
}

#[test]
fn field_to_field_operators_are_checked_like_equals_field() {
    for op in [
        "not_equals_field",
        "gt_field",
        "gte_field",
        "lt_field",
        "lte_field",
    ] {
        refused(
            &format!("{{field: a, {op}: 'b..c'}}"),
            &format!("match.{op}: invalid field path \"b..c\" (empty segment)"),
        );
        refused(
            &format!("{{field: a, {op}: 5}}"),
            &format!("match.{op}: expected a string, found a number"),
        );
        refused(
            &format!("{{field: '*', {op}: b}}"),
            &format!("match.{op}: `{op}` does not apply to a keyword search"),
        );
        // Written back as read.
        let compiled = rule(&format!("{{field: a, {op}: b, ignore_case: true}}")).unwrap();
        assert_eq!(
            compiled.rule().to_value()["match"],
            json!({"field": "a", op: "b", "ignore_case": true})
        );
        let again = serde_json::to_string(compiled.rule()).unwrap();
        assert_eq!(
            &parse_rule(&again, RuleFormat::Json).unwrap(),
            compiled.rule()
        );
    }
    // The short form takes them too.
    check(
        "{a: {gt_field: b}}",
        &[
            (json!({"a": 3, "b": 2}), true),
            (json!({"a": 1, "b": 2}), false),
        ],
    );
}

#[test]
fn keyword_search_looks_at_every_value() {
    check(
        "{field: '*', contains: mimikatz, ignore_case: true}",
        &[
            (json!({"cmd": "run MimiKatz.exe"}), true),
            (json!({"deep": {"list": [1, {"x": "mimikatz"}]}}), true),
            (json!({"mimikatz": "key names do not count"}), false),
            (json!({"n": 5}), false),
        ],
    );
    check(
        "{field: '*', equals: 4625}",
        &[
            (json!({"a": {"b": 4625}}), true),
            (json!({"a": 4626}), false),
        ],
    );
    refused(
        "{field: '*', exists: true}",
        "does not apply to a keyword search",
    );
    let compiled = rule("{field: '*', contains: x}").unwrap();
    assert!(
        compiled.field_paths().iter().any(|p| p.is_root()),
        "a keyword rule reads the whole event"
    );
}

#[test]
fn exists_and_null() {
    check(
        "{field: a, exists: false}",
        &[
            (json!({}), true),
            (json!({"a": null}), true),
            (json!({"a": ""}), false),
        ],
    );
}

const SELECTIONS: &str = r#"{
  selections: {
    sel: {field: eventName, equals: ConsoleLogin},
    filter_mfa: {field: mfa, equals: "Yes"},
    filter_root: {field: user, equals: root},
    other: {field: x, exists: true}
  },
  condition: "sel and not (other or 1 of filter_*)"
}"#;

#[test]
fn named_selections_with_a_condition() {
    check(
        SELECTIONS,
        &[
            (json!({"eventName": "ConsoleLogin"}), true),
            (json!({"eventName": "ConsoleLogin", "mfa": "Yes"}), false),
            (json!({"eventName": "ConsoleLogin", "user": "root"}), false),
            (json!({"eventName": "ConsoleLogin", "x": 1}), false),
            (json!({"eventName": "Other"}), false),
        ],
    );
    let all = r#"{selections: {a1: {field: a, equals: 1}, a2: {field: b, equals: 2}, _x: {field: c, equals: 3}}, condition: "all of them"}"#;
    check(
        all,
        &[(json!({"a": 1, "b": 2}), true), (json!({"a": 1}), false)],
    );
    let two = r#"{selections: {a1: {field: a, equals: 1}, a2: {field: b, equals: 2}, a3: {field: c, equals: 3}}, condition: "2 of a*"}"#;
    check(
        two,
        &[
            (json!({"a": 1, "c": 3}), true),
            (json!({"b": 2}), false),
            (json!({"a": 1, "b": 2, "c": 3}), true),
        ],
    );
}

#[test]
fn selection_round_trip_keeps_the_structure() {
    let compiled = rule(SELECTIONS).unwrap();
    let json = serde_json::to_string(compiled.rule()).unwrap();
    let again = parse_rule(&json, RuleFormat::Json).unwrap();
    assert_eq!(&again, compiled.rule());
}

#[test]
fn malformed_selections_are_refused_by_name() {
    let base = |condition: &str| {
        format!(
            r#"{{selections: {{sel: {{field: a, equals: 1}}, filter_x: {{field: b, equals: 2}}}}, condition: "{condition}"}}"#
        )
    };
    refused(
        &base("sel and nope"),
        "match.condition: unknown selection `nope`",
    );
    refused(&base("1 of zzz*"), "`zzz*` matches no selection");
    refused(&base("3 of them"), "can never hold");
    refused(&base("sel and (filter_x"), "expected `)`");
    refused(&base("sel | count() > 3"), "aggregation");
    refused(&base(""), "condition is empty");
    refused(
        r#"{selections: {sel: {field: a, regex: '('}}, condition: sel}"#,
        "match.selections.sel.regex: invalid regex",
    );
    refused(
        r#"{selections: {sel: {field: a, equals: 1}}}"#,
        "match.condition: required field is missing",
    );
    refused(
        r#"{selections: {}, condition: x}"#,
        "must name at least one selection",
    );
    refused(
        r#"{selections: {s: {field: a, equals: 1}}, condition: s, extra: 1}"#,
        "match.extra: unknown field",
    );
}

#[test]
fn deep_nesting_is_bounded() {
    // JSON: YAML's own depth budget (64) would refuse it first.
    let mut condition = r#"{"field": "a", "equals": 1}"#.to_string();
    for _ in 0..40 {
        condition = format!(r#"{{"selections": {{"s": {condition}}}, "condition": "s"}}"#);
    }
    let text = format!(r#"{{"id": "t", "title": "t", "stream": "s", "match": {condition}}}"#);
    let error = parse_rule(&text, RuleFormat::Json).unwrap_err().to_string();
    assert!(error.contains("deeper than 32"), "{error}");
}
