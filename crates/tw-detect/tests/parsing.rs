//! Rule documents: YAML and JSON agree, errors name their place, every problem is reported.

use serde_json::json;
use tw_core::Severity;
use tw_detect::{Condition, FieldOp, Rule, RuleError, RuleFormat, parse_rule};

const EXAMPLE_YAML: &str = r#"
id: console-login-bruteforce        # [A-Za-z0-9_.:-]{1,128}
title: Brute-force console logins
description: More than 5 failed console logins from one IP in a minute
severity: high
stream: cloudtrail
enabled: true
tags: [attack.t1110]
sinks: []
match:
  all:
    - field: eventName
      equals: ConsoleLogin
    - field: errorMessage
      exists: true
    - not: { field: userAgent, contains: "aws-internal" }
    - any:
        - { field: sourceIPAddress, cidr: ["10.0.0.0/8", "2001:db8::/32"] }
        - { field: additionalEventData.MFAUsed, in: ["No", "no"] }
threshold:
  more_than: 5
  window: 1m
  group_by: [sourceIPAddress]
"#;

const EXAMPLE_JSON: &str = r#"{
  "id": "console-login-bruteforce",
  "title": "Brute-force console logins",
  "description": "More than 5 failed console logins from one IP in a minute",
  "severity": "high", "stream": "cloudtrail", "enabled": true,
  "tags": ["attack.t1110"], "sinks": [],
  "match": {"all": [
    {"field": "eventName", "equals": "ConsoleLogin"},
    {"field": "errorMessage", "exists": true},
    {"not": {"field": "userAgent", "contains": "aws-internal"}},
    {"any": [
      {"field": "sourceIPAddress", "cidr": ["10.0.0.0/8", "2001:db8::/32"]},
      {"field": "additionalEventData.MFAUsed", "in": ["No", "no"]}
    ]}
  ]},
  "threshold": {"more_than": 5, "window": "1m", "group_by": ["sourceIPAddress"]}
}"#;

fn problems(text: &str) -> Vec<String> {
    match parse_rule(text, RuleFormat::Auto) {
        Ok(rule) => panic!("expected an error, parsed {rule:?}"),
        Err(error) => error.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn yaml_and_json_parse_to_the_same_rule() {
    let yaml = parse_rule(EXAMPLE_YAML, RuleFormat::Yaml).unwrap();
    let json = parse_rule(EXAMPLE_JSON, RuleFormat::Json).unwrap();
    assert_eq!(yaml, json);
    assert_eq!(parse_rule(EXAMPLE_YAML, RuleFormat::Auto).unwrap(), yaml);
    assert_eq!(parse_rule(EXAMPLE_JSON, RuleFormat::Auto).unwrap(), yaml);
    assert_eq!(yaml.severity, Severity::High);
    assert_eq!(yaml.version, 0);
    let threshold = yaml.threshold.as_ref().unwrap();
    assert_eq!(
        (threshold.count, threshold.window.as_str()),
        (
            tw_detect::CountBound {
                op: tw_detect::CountOp::Gt,
                value: 5
            },
            "1m"
        )
    );
    let Some(Condition::All(items)) = &yaml.condition else {
        panic!("expected all")
    };
    assert_eq!(items.len(), 4);
    assert!(matches!(&items[1], Condition::Field(leaf) if leaf.op == FieldOp::Exists(true)));
}

#[test]
fn defaults_apply_and_round_trip_through_serde_json() {
    let rule = parse_rule("id: r\ntitle: T\nstream: s\n", RuleFormat::Yaml).unwrap();
    assert_eq!(rule.severity, Severity::Medium);
    assert!(
        rule.enabled
            && rule.tags.is_empty()
            && rule.sinks.is_empty()
            && rule.description.is_empty()
    );
    assert!(rule.condition.is_none() && rule.threshold.is_none());

    let mut full = parse_rule(EXAMPLE_YAML, RuleFormat::Yaml).unwrap();
    full.version = 42;
    let text = serde_json::to_string(&full).unwrap();
    let back: Rule = serde_json::from_str(&text).unwrap();
    assert_eq!(back, full);
    assert_eq!(parse_rule(&text, RuleFormat::Json).unwrap(), full);
    // Single-string operands stay strings; numbers stay integers.
    let leaf = parse_rule(
        "id: r\ntitle: T\nstream: s\nmatch: {field: a, gt: 5}\n",
        RuleFormat::Yaml,
    )
    .unwrap();
    assert_eq!(leaf.to_value()["match"], json!({"field": "a", "gt": 5}));
}

#[test]
fn unknown_fields_are_rejected_everywhere() {
    assert_eq!(
        problems("id: r\ntitle: T\nstream: s\nseverty: high\n"),
        [
            "severty: unknown field (expected one of id, version, title, description, severity, stream, enabled, tags, sigma_name, sinks, match, threshold, distinct, sequence, new_value, suppress, shadow, max_keys)"
        ]
    );
    assert_eq!(
        problems("id: r\ntitle: T\nstream: s\nthreshold: {more_than: 1, window: 1m, group: [a]}\n"),
        [
            "threshold.group: unknown field (expected one of count, more_than, window, sliding, group_by)"
        ]
    );
    let leaf = problems(
        "id: r\ntitle: T\nstream: s\nmatch: {all: [{field: a, equals: 1, cases: true}]}\n",
    );
    assert_eq!(leaf.len(), 1);
    assert!(
        leaf[0].starts_with("match.all[0].cases: unknown field"),
        "{leaf:?}"
    );
    assert_eq!(
        problems("id: r\ntitle: T\nstream: s\nmatch: {all: [{field: a, equals: 1, in: [1]}]}\n"),
        ["match.all[0]: exactly one operator per field condition, found equals, in"]
    );
    let serde_error =
        serde_json::from_value::<Rule>(json!({"id": "r", "title": "T", "stream": "s", "x": 1}));
    assert!(
        serde_error
            .unwrap_err()
            .to_string()
            .contains("x: unknown field")
    );
}

#[test]
fn errors_name_the_place_in_the_rule() {
    let text = "id: r\ntitle: T\nstream: s\nmatch:\n  all:\n    - {field: a, equals: x}\n    - {field: b, exists: true}\n    - {field: ip, cidr: \"10.0.0.0/33\"}\n";
    assert_eq!(
        problems(text),
        [r#"match.all[2].cidr: invalid CIDR "10.0.0.0/33""#]
    );
    let text = "id: r\ntitle: T\nstream: s\nmatch: {any: [{field: ip, cidr: [\"10.0.0.0/8\", \"::1/200\"]}]}\n";
    assert_eq!(
        problems(text),
        [r#"match.any[0].cidr[1]: invalid CIDR "::1/200""#]
    );
    let regex = problems("id: r\ntitle: T\nstream: s\nmatch: {not: {field: a, regex: \"a(b\"}}\n");
    assert_eq!(regex.len(), 1);
    assert!(
        regex[0].starts_with(r#"match.not.regex: invalid regex "a(b": "#),
        "{regex:?}"
    );
    assert_eq!(
        problems("id: r\ntitle: T\nstream: s\nthreshold: {more_than: 5, window: 5x}\n"),
        [
            r#"threshold.window: invalid duration "5x" (expected a positive integer and a unit: ms, s, m, h or d, e.g. 30s)"#
        ]
    );
    // A regex whose compiled program exceeds the size limit is refused, not built.
    let huge = problems(
        "id: r\ntitle: T\nstream: s\nmatch: {field: a, regex: '\\w{1000}\\w{1000}\\w{1000}'}\n",
    );
    assert!(
        huge[0].starts_with("match.regex: invalid regex"),
        "{huge:?}"
    );
    let syntax = parse_rule("id: [unclosed", RuleFormat::Yaml).unwrap_err();
    assert!(
        matches!(syntax, RuleError::Syntax { format: "yaml", .. }),
        "{syntax:?}"
    );
    let syntax = parse_rule("{\"id\": ", RuleFormat::Auto).unwrap_err();
    assert!(
        matches!(syntax, RuleError::Syntax { format: "json", .. }),
        "{syntax:?}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
id: "bad id!"
title: ""
severity: urgent
stream: "no spaces"
match:
  all:
    - {field: "", equals: x}
    - {field: ip, cidr: ["10.0.0.0/8", "300.0.0.0/8"]}
    - {field: a, regex: "(", ignore_case: true}
    - {field: n, gt: 5, ignore_case: true}
    - {any: []}
threshold: {more_than: -1, window: 0s, group_by: ["a..b"]}
"#;
    // Structural problems (types, unknown fields) come first and stop before semantics ...
    assert_eq!(
        problems(text),
        [
            r#"severity: unknown severity "urgent" (expected info, low, medium, high or critical)"#,
            "match.all[4].any: list must not be empty",
            "threshold.more_than: expected a non-negative integer, found -1",
        ]
    );
    // ... and once the structure is right, every semantic problem is listed together.
    let text = text
        .replace("severity: urgent\n", "")
        .replace("    - {any: []}\n", "")
        .replace("-1", "3");
    assert_eq!(
        problems(&text),
        [
            r#"id: invalid id "bad id!" (1 to 128 of A-Z a-z 0-9 _ . : -)"#,
            "title: must not be empty",
            r#"stream: invalid stream name "no spaces": may contain only letters, digits, '_', '-' and '.'"#,
            "match.all[0].field: field path must not be empty",
            r#"match.all[1].cidr[1]: invalid CIDR "300.0.0.0/8""#,
            &problems(&text)[5],
            "match.all[3].ignore_case: does not apply to `gt`",
            r#"threshold.window: duration "0s" must be greater than zero"#,
            r#"threshold.group_by[0]: invalid field path "a..b" (empty segment)"#,
        ]
    );
    assert!(problems(&text)[5].starts_with(r#"match.all[2].regex: invalid regex "(""#));
    // validate() on a programmatically built rule finds the same problems.
    let mut rule = parse_rule("id: r\ntitle: T\nstream: s\n", RuleFormat::Yaml).unwrap();
    rule.id = String::new();
    rule.stream = "_x".into();
    let error = rule.validate().unwrap_err();
    assert_eq!(error.problems().len(), 2, "{error}");
    assert!(
        error
            .to_string()
            .starts_with("invalid rule: id: invalid id \"\""),
        "{error}"
    );
}

#[test]
fn yaml_keeps_no_and_yes_as_strings_and_refuses_duplicate_keys() {
    let rule = parse_rule(
        "id: r\ntitle: T\nstream: s\nmatch: {field: n, in: [No, yes, off]}\n",
        RuleFormat::Yaml,
    )
    .unwrap();
    let Some(Condition::Field(leaf)) = rule.condition else {
        panic!()
    };
    assert_eq!(leaf.field, "n");
    assert_eq!(
        leaf.op,
        FieldOp::In(vec![json!("No"), json!("yes"), json!("off")])
    );
    assert!(parse_rule("id: r\nid: q\ntitle: T\nstream: s\n", RuleFormat::Yaml).is_err());
}

#[test]
fn structural_type_errors_are_located() {
    assert_eq!(
        problems(
            "id: 5\ntitle: T\nstream: s\nenabled: yes\ntags: [1]\nmatch: {field: a, exists: 1}\n"
        ),
        [
            "id: expected a string, found a number",
            "enabled: expected true or false, found a string",
            "tags[0]: expected a string, found a number",
            "match.exists: expected true or false, found a number",
        ]
    );
    assert_eq!(
        problems("title: T\n"),
        [
            "id: required field is missing",
            "stream: required field is missing"
        ]
    );
    assert_eq!(
        problems(
            "id: r\ntitle: T\nstream: s\nmatch: {all: [{field: a}, {foo: [1]}, {any: [], x: 1}]}\n"
        ),
        [
            "match.all[0]: missing operator (one of equals, in, contains, startswith, endswith, regex, exists, gt, gte, lt, lte, cidr, wildcard, equals_field, not_equals_field, gt_field, gte_field, lt_field, lte_field)",
            "match.all[1].foo: expected an operator mapping (`{gt: 1000}`) or a value, found a list",
            "match.all[2]: expected exactly one of `all`, `any`, `not`, `selections` with `condition`, or a field condition (`field` with one operator)",
        ]
    );
    let deep = format!(
        "id: r\ntitle: T\nstream: s\nmatch: {}{{field: a, exists: true}}{}\n",
        "{not: ".repeat(40),
        "}".repeat(40)
    );
    let deep = problems(&deep);
    assert_eq!(deep.len(), 1);
    assert!(
        deep[0].ends_with("conditions nest deeper than 32 levels"),
        "{deep:?}"
    );
}
