//! Every field operator against exact expectations, through the public parse → compile path.

use serde_json::{Value, json};
use tw_detect::{CompiledRule, RuleFormat, parse_rule};

/// A compiled rule on stream `s` whose condition is the given YAML flow mapping.
fn cond(condition: &str) -> CompiledRule {
    let text = format!("id: t\ntitle: t\nstream: s\nmatch: {condition}\n");
    parse_rule(&text, RuleFormat::Yaml)
        .unwrap_or_else(|e| panic!("{condition}: {e}"))
        .compile()
        .unwrap()
}

/// Asserts, for each event, whether the condition matches it.
fn check(condition: &str, cases: &[(Value, bool)]) {
    let rule = cond(condition);
    for (event, expected) in cases {
        assert_eq!(rule.matches(event), *expected, "{condition} on {event}");
    }
}

#[test]
fn equals_strings_numbers_and_booleans() {
    check(
        "{field: a, equals: ConsoleLogin}",
        &[
            (json!({"a": "ConsoleLogin"}), true),
            (json!({"a": "consolelogin"}), false),
            (json!({"a": "ConsoleLogin "}), false),
            (json!({}), false),
            (json!({"a": null}), false),
        ],
    );
    check(
        "{field: a, equals: ConsoleLogin, ignore_case: true}",
        &[
            (json!({"a": "CONSOLElogin"}), true),
            (json!({"a": "Console"}), false),
        ],
    );
    check(
        "{field: a, equals: ÄRGER, ignore_case: true}",
        &[(json!({"a": "ärger"}), true), (json!({"a": "ärge"}), false)],
    );
    // Numbers compare numerically; a string field compared to a number compares the text.
    check(
        "{field: n, equals: 5}",
        &[
            (json!({"n": 5}), true),
            (json!({"n": 5.0}), true),
            (json!({"n": 5.5}), false),
            (json!({"n": "5"}), true),
            (json!({"n": "5.0"}), false),
            (json!({"n": true}), false),
        ],
    );
    check(
        "{field: n, equals: 9007199254740993}",
        &[
            (json!({"n": 9007199254740993_u64}), true),
            (json!({"n": 9007199254740992_u64}), false),
        ],
    );
    // A string literal compared to a number field compares the number's text.
    check(
        "{field: n, equals: '443'}",
        &[
            (json!({"n": 443}), true),
            (json!({"n": "443"}), true),
            (json!({"n": 4430}), false),
        ],
    );
    check(
        "{field: b, equals: true}",
        &[
            (json!({"b": true}), true),
            (json!({"b": false}), false),
            (json!({"b": "true"}), true),
            (json!({"b": 1}), false),
        ],
    );
}

#[test]
fn in_lists() {
    check(
        "{field: a, in: [StopLogging, DeleteTrail, 7]}",
        &[
            (json!({"a": "StopLogging"}), true),
            (json!({"a": "DeleteTrail"}), true),
            (json!({"a": "deletetrail"}), false),
            (json!({"a": 7}), true),
            (json!({"a": "7"}), true),
            (json!({"a": "Other"}), false),
        ],
    );
    check(
        "{field: a, in: [No, Maybe], ignore_case: true}",
        &[
            (json!({"a": "NO"}), true),
            (json!({"a": "maybe"}), true),
            (json!({"a": "yes"}), false),
        ],
    );
}

#[test]
fn contains_startswith_endswith() {
    check(
        "{field: ua, contains: kali}",
        &[
            (json!({"ua": "x Kali y"}), false),
            (json!({"ua": "xkaliy"}), true),
            (json!({"ua": "kal"}), false),
        ],
    );
    check(
        "{field: ua, contains: kali, ignore_case: true}",
        &[
            (json!({"ua": "x KALI y"}), true),
            (json!({"ua": "KAL"}), false),
            (json!({"ua": "Linux Kälï"}), false),
            (json!({"ua": "Ünïcode kali"}), true),
        ],
    );
    check(
        "{field: ua, startswith: [curl/, python-requests/]}",
        &[
            (json!({"ua": "curl/8.1"}), true),
            (json!({"ua": "python-requests/2"}), true),
            (json!({"ua": "xcurl/"}), false),
            (json!({"ua": "Curl/8"}), false),
        ],
    );
    check(
        "{field: ua, startswith: CURL/, ignore_case: true}",
        &[
            (json!({"ua": "curl/8"}), true),
            (json!({"ua": "cur"}), false),
        ],
    );
    check(
        "{field: f, endswith: .exe}",
        &[
            (json!({"f": "a.exe"}), true),
            (json!({"f": "a.EXE"}), false),
            (json!({"f": "exe"}), false),
            (json!({"f": 5}), false),
        ],
    );
    check(
        "{field: f, endswith: .EXE, ignore_case: true}",
        &[(json!({"f": "a.exe"}), true), (json!({"f": "a.ex"}), false)],
    );
    // Numbers are searched by their JSON text.
    check(
        "{field: n, startswith: '12'}",
        &[(json!({"n": 1234}), true), (json!({"n": 2123}), false)],
    );
}

#[test]
fn regex_case_and_unanchored() {
    check(
        "{field: a, regex: '^Get[A-Z]\\w+$'}",
        &[
            (json!({"a": "GetObject"}), true),
            (json!({"a": "getObject"}), false),
            (json!({"a": "xGetObject"}), false),
        ],
    );
    check(
        "{field: a, regex: 'admin', ignore_case: true}",
        &[
            (json!({"a": "arn:...:AdministratorAccess"}), true),
            (json!({"a": "adm"}), false),
        ],
    );
}

#[test]
fn exists_treats_null_as_absent() {
    let present = "{field: e, exists: true}";
    let absent = "{field: e, exists: false}";
    for (event, is_present) in [
        (json!({"e": "x"}), true),
        (json!({"e": ""}), true),
        (json!({"e": 0}), true),
        (json!({"e": []}), true),
        (json!({"e": {}}), true),
        (json!({"e": null}), false),
        (json!({}), false),
        (json!({"e2": 1}), false),
    ] {
        check(present, &[(event.clone(), is_present)]);
        check(absent, &[(event, !is_present)]);
    }
    check(
        "{field: a.b, exists: true}",
        &[
            (json!({"a": {"b": 1}}), true),
            (json!({"a": 1}), false),
            (json!({"a": {"b": null}}), false),
        ],
    );
}

#[test]
fn numeric_comparisons_parse_numeric_strings() {
    check(
        "{field: n, gt: 1000}",
        &[
            (json!({"n": 1000.5}), true),
            (json!({"n": 1000}), false),
            (json!({"n": "1001"}), true),
            (json!({"n": " 2000 "}), true),
            (json!({"n": "1e4"}), true),
            (json!({"n": "abc"}), false),
            (json!({"n": true}), false),
            (json!({"n": null}), false),
            (json!({}), false),
        ],
    );
    check(
        "{field: n, gte: 1000}",
        &[(json!({"n": 1000}), true), (json!({"n": 999.99}), false)],
    );
    check(
        "{field: n, lt: -1.5}",
        &[
            (json!({"n": -2}), true),
            (json!({"n": -1.5}), false),
            (json!({"n": "-1.6"}), true),
        ],
    );
    check(
        "{field: n, lte: 0}",
        &[
            (json!({"n": 0}), true),
            (json!({"n": 0.001}), false),
            (json!({"n": "NaN"}), false),
        ],
    );
}

#[test]
fn cidr_ipv4_and_ipv6() {
    check(
        "{field: ip, cidr: ['10.0.0.0/8', '2001:db8::/32']}",
        &[
            (json!({"ip": "10.1.2.3"}), true),
            (json!({"ip": "11.1.2.3"}), false),
            (json!({"ip": "2001:db8:1::1"}), true),
            (json!({"ip": "2001:db9::1"}), false),
            (json!({"ip": "::ffff:10.9.9.9"}), true),
            (json!({"ip": "not an ip"}), false),
            (json!({"ip": 10}), false),
        ],
    );
    check(
        "{field: ip, cidr: 'fe80::/10'}",
        &[
            (json!({"ip": "fe80::1"}), true),
            (json!({"ip": "febf::1"}), true),
            (json!({"ip": "fec0::1"}), false),
        ],
    );
}

#[test]
fn arrays_match_when_any_element_matches() {
    check(
        "{field: tags, equals: admin}",
        &[
            (json!({"tags": ["user", "admin"]}), true),
            (json!({"tags": ["user"]}), false),
            (json!({"tags": [["admin"]]}), true),
            (json!({"tags": []}), false),
        ],
    );
    check(
        "{field: ips, cidr: 10.0.0.0/8}",
        &[
            (json!({"ips": ["1.1.1.1", "10.0.0.1"]}), true),
            (json!({"ips": ["1.1.1.1"]}), false),
        ],
    );
    check(
        "{field: n, gt: 5}",
        &[
            (json!({"n": [1, "7"]}), true),
            (json!({"n": [1, 2]}), false),
        ],
    );
    // Indexing into arrays by position works too.
    check(
        "{field: r.1.arn, endswith: ':root'}",
        &[
            (json!({"r": [{"arn": "x"}, {"arn": "a:root"}]}), true),
            (json!({"r": [{"arn": "a:root"}]}), false),
        ],
    );
    // `not` over an array: none of the elements matches.
    check(
        "{not: {field: tags, equals: admin}}",
        &[
            (json!({"tags": ["user", "admin"]}), false),
            (json!({"tags": ["user"]}), true),
        ],
    );
}

#[test]
fn combinators_and_missing_match() {
    let condition = "{all: [{field: a, equals: x}, {any: [{field: b, equals: 1}, {not: {field: c, exists: true}}]}]}";
    check(
        condition,
        &[
            (json!({"a": "x", "b": 1, "c": 1}), true),
            (json!({"a": "x", "b": 2}), true),
            (json!({"a": "x", "b": 2, "c": 0}), false),
            (json!({"a": "y", "b": 1}), false),
        ],
    );
    let rule = parse_rule("id: all\ntitle: t\nstream: s\n", RuleFormat::Yaml)
        .unwrap()
        .compile()
        .unwrap();
    assert!(rule.matches(&json!({})) && rule.matches(&json!(null)) && rule.matches(&json!([1])));
    // A repeated path is compiled once.
    assert_eq!(
        cond("{any: [{field: a, equals: x}, {field: a, equals: y}, {field: b, exists: true}]}")
            .field_paths()
            .len(),
        2
    );
}
