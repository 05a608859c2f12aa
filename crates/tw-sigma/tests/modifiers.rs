//! Every Sigma value modifier, keyword searches, the condition forms and the refusals, each
//! checked on events with exact expectations.

use serde_json::{Value, json};
use tw_sigma::{SigmaConfig, SigmaError, translate};

fn sigma(detection: &str) -> String {
    format!(
        "title: Test rule\nid: 0b6b8ab4-7e38-4b8f-9a57-3c0f9d0f1a11\nstatus: test\nlevel: high\n\
         tags:\n  - attack.t1059\nlogsource:\n  product: windows\n  category: process_creation\n\
         detection:\n{detection}\n"
    )
}

fn check_with(config: &SigmaConfig, detection: &str, cases: &[(Value, bool)]) {
    let text = sigma(detection);
    let rule = translate(&text, config).unwrap_or_else(|e| panic!("{detection}\n{e}"));
    let compiled = rule.compile().unwrap();
    for (event, expected) in cases {
        assert_eq!(
            compiled.matches(event),
            *expected,
            "{detection}\non {event}\nas {}",
            serde_json::to_string(&rule).unwrap()
        );
    }
}

fn check(detection: &str, cases: &[(Value, bool)]) {
    check_with(&SigmaConfig::default(), detection, cases);
}

fn refused(detection: &str, wanted: &str) -> SigmaError {
    let error = translate(&sigma(detection), &SigmaConfig::default()).expect_err(detection);
    assert!(error.to_string().contains(wanted), "{detection}: {error}");
    error
}

#[test]
fn metadata_is_kept() {
    let rule = translate(
        &sigma("  sel:\n    Image: x\n  condition: sel"),
        &SigmaConfig::default(),
    )
    .unwrap();
    assert_eq!(rule.id, "0b6b8ab4-7e38-4b8f-9a57-3c0f9d0f1a11");
    assert_eq!(rule.title, "Test rule");
    assert_eq!(rule.severity, tw_core::Severity::High);
    assert_eq!(rule.tags, vec!["attack.t1059".to_string()]);
    assert_eq!(rule.stream, "windows_process_creation");
    assert!(rule.enabled);
}

#[test]
fn plain_values_are_case_insensitive_with_wildcards() {
    check(
        "  sel:\n    Image: '*\\cmd.exe'\n    User: 'NT AUTHORITY\\SYSTEM'\n  condition: sel",
        &[
            (
                json!({"Image": "C:\\Windows\\CMD.EXE", "User": "nt authority\\system"}),
                true,
            ),
            (json!({"Image": "C:\\Windows\\cmd.exe"}), false),
            (
                json!({"Image": "C:\\cmd.exe2", "User": "NT AUTHORITY\\SYSTEM"}),
                false,
            ),
        ],
    );
    check(
        "  sel:\n    Name: 'a?c'\n    Lit: 'x\\*y'\n  condition: sel",
        &[
            (json!({"Name": "ABC", "Lit": "x*y"}), true),
            (json!({"Name": "abc", "Lit": "xzy"}), false),
        ],
    );
    check(
        "  sel:\n    EventID:\n      - 4624\n      - '4625'\n  condition: sel",
        &[
            (json!({"EventID": 4624}), true),
            (json!({"EventID": "4625"}), true),
            (json!({"EventID": 4625}), true),
            (json!({"EventID": 4626}), false),
        ],
    );
    check(
        "  sel:\n    Flag: true\n    Gone: null\n  condition: sel",
        &[
            (json!({"Flag": true}), true),
            (json!({"Flag": true, "Gone": null}), true),
            (json!({"Flag": true, "Gone": "x"}), false),
            (json!({"Flag": false}), false),
        ],
    );
}

#[test]
fn contains_startswith_endswith_all_cased() {
    check(
        "  sel:\n    CommandLine|contains:\n      - ' -enc '\n      - 'iex('\n  condition: sel",
        &[
            (json!({"CommandLine": "powershell -ENC abc"}), true),
            (json!({"CommandLine": "IEX(new-object)"}), true),
            (json!({"CommandLine": "powershell -e"}), false),
        ],
    );
    check(
        "  sel:\n    CommandLine|contains|all:\n      - 'net'\n      - 'user'\n  condition: sel",
        &[
            (json!({"CommandLine": "NET USER x"}), true),
            (json!({"CommandLine": "net group"}), false),
        ],
    );
    check(
        "  sel:\n    Image|startswith: 'C:\\Users\\'\n    Image|endswith: '.exe'\n  condition: sel",
        &[
            (json!({"Image": "c:\\users\\bob\\a.EXE"}), true),
            (json!({"Image": "D:\\users\\bob\\a.exe"}), false),
        ],
    );
    check(
        "  sel:\n    Image|endswith|cased: 'Cmd.exe'\n  condition: sel",
        &[
            (json!({"Image": "x\\Cmd.exe"}), true),
            (json!({"Image": "x\\cmd.exe"}), false),
        ],
    );
    check(
        "  sel:\n    CommandLine|contains: 'a*b'\n  condition: sel",
        &[
            (json!({"CommandLine": "xxAyyBzz"}), true),
            (json!({"CommandLine": "ba"}), false),
        ],
    );
}

#[test]
fn regex_and_its_flags() {
    check(
        "  sel:\n    CommandLine|re: 'sc(\\.exe)? stop'\n  condition: sel",
        &[
            (json!({"CommandLine": "sc.exe stop x"}), true),
            (json!({"CommandLine": "SC STOP x"}), false),
        ],
    );
    check(
        "  sel:\n    CommandLine|re|i: '^sc stop'\n  condition: sel",
        &[(json!({"CommandLine": "SC STOP x"}), true)],
    );
    check(
        "  sel:\n    Text|re|m: '^second$'\n  condition: sel",
        &[
            (json!({"Text": "first\nsecond\nthird"}), true),
            (json!({"Text": "first second"}), false),
        ],
    );
    check(
        "  sel:\n    Text|re|s: 'a.b'\n  condition: sel",
        &[(json!({"Text": "a\nb"}), true)],
    );
    check(
        "  sel:\n    Text|re: 'a.b'\n  condition: sel",
        &[
            (json!({"Text": "a\nb"}), false),
            (json!({"Text": "axb"}), true),
        ],
    );
    refused(
        "  sel:\n    Text|re: '(?<=a)b'\n  condition: sel",
        "invalid regex",
    );
    refused(
        "  sel:\n    Text|i: 'x'\n  condition: sel",
        "regex flag `i` without `re`",
    );
}

#[test]
fn cidr_exists_fieldref_and_comparisons() {
    check(
        "  sel:\n    SourceIp|cidr:\n      - '10.0.0.0/8'\n      - 'fd00::/8'\n  condition: sel",
        &[
            (json!({"SourceIp": "10.1.2.3"}), true),
            (json!({"SourceIp": "fd00::1"}), true),
            (json!({"SourceIp": "11.0.0.1"}), false),
        ],
    );
    check(
        "  sel:\n    ParentImage|exists: true\n    Other|exists: false\n  condition: sel",
        &[
            (json!({"ParentImage": "x"}), true),
            (json!({"ParentImage": "x", "Other": 1}), false),
            (json!({}), false),
        ],
    );
    check(
        "  sel:\n    TargetUserName|fieldref: SubjectUserName\n  condition: sel",
        &[
            (
                json!({"TargetUserName": "Bob", "SubjectUserName": "bob"}),
                true,
            ),
            (
                json!({"TargetUserName": "Bob", "SubjectUserName": "alice"}),
                false,
            ),
        ],
    );
    check(
        "  sel:\n    Count|gt: 10\n    Size|lte: '5.5'\n  condition: sel",
        &[
            (json!({"Count": 11, "Size": 5.5}), true),
            (json!({"Count": 10, "Size": 1}), false),
            (json!({"Count": 11, "Size": 6}), false),
        ],
    );
    check(
        "  sel:\n    A|gte: 3\n    B|lt: 0\n  condition: sel",
        &[
            (json!({"A": 3, "B": -1}), true),
            (json!({"A": 2, "B": -1}), false),
        ],
    );
    refused(
        "  sel:\n    A|gt: abc\n  condition: sel",
        "`gt` takes a number",
    );
    refused(
        "  sel:\n    A|exists: yes\n  condition: sel",
        "`exists` takes true or false",
    );
    refused(
        "  sel:\n    A|fieldref|contains: B\n  condition: sel",
        "combination of `fieldref` with `contains`",
    );
}

#[test]
fn base64_and_base64offset() {
    // base64("whoami") = d2hvYW1p
    check(
        "  sel:\n    Data|base64: 'whoami'\n  condition: sel",
        &[
            (json!({"Data": "d2hvYW1p"}), true),
            (json!({"Data": "x d2hvYW1p"}), false),
        ],
    );
    // The three alignments of "http" inside longer base64 texts.
    check(
        "  sel:\n    CommandLine|base64offset|contains: 'http'\n  condition: sel",
        &[
            (json!({"CommandLine": "-enc aHR0cDovL2V2aWw="}), true), // "http://evil"
            (json!({"CommandLine": "-enc IGh0dHA6Ly9ldmls"}), true), // " http://evil"
            (json!({"CommandLine": "-enc ICBodHRwOi8vZXZpbA=="}), true), // "  http://evil"
            (json!({"CommandLine": "-enc ZnRwOi8vZXZpbA=="}), false), // "ftp://evil"
        ],
    );
    refused(
        "  sel:\n    Data|base64: 'who*'\n  condition: sel",
        "`base64` of a value with wildcards",
    );
}

#[test]
fn utf16_variants_with_base64() {
    // "ab" as UTF-16LE = 61 00 62 00 → base64 "YQBiAA=="
    check(
        "  sel:\n    D|wide|base64: 'ab'\n  condition: sel",
        &[(json!({"D": "YQBiAA=="}), true)],
    );
    check(
        "  sel:\n    D|utf16le|base64: 'ab'\n  condition: sel",
        &[(json!({"D": "YQBiAA=="}), true)],
    );
    // UTF-16BE = 00 61 00 62 → "AGEAYg=="
    check(
        "  sel:\n    D|utf16be|base64: 'ab'\n  condition: sel",
        &[(json!({"D": "AGEAYg=="}), true)],
    );
    // With BOM FF FE then LE: ff fe 61 00 62 00 → "//5hAGIA"
    check(
        "  sel:\n    D|utf16|base64: 'ab'\n  condition: sel",
        &[(json!({"D": "//5hAGIA"}), true)],
    );
    // "powershell" UTF-16LE in a base64 blob at any alignment.
    check(
        "  sel:\n    D|wide|base64offset|contains: 'pow'\n  condition: sel",
        &[
            (json!({"D": "cABvAHcA"}), true),
            (json!({"D": "IABwAG8AdwA="}), true),
        ],
    );
}

#[test]
fn windash_expands_dashes() {
    check(
        "  sel:\n    CommandLine|windash|contains: ' -exec bypass'\n  condition: sel",
        &[
            (json!({"CommandLine": "powershell -exec bypass"}), true),
            (json!({"CommandLine": "powershell /exec bypass"}), true),
            (
                json!({"CommandLine": "powershell \u{2013}exec bypass"}),
                true,
            ),
            (
                json!({"CommandLine": "powershell \u{2014}exec bypass"}),
                true,
            ),
            (
                json!({"CommandLine": "powershell \u{2015}exec bypass"}),
                true,
            ),
            (json!({"CommandLine": "powershell +exec bypass"}), false),
        ],
    );
    check(
        "  sel:\n    CommandLine|windash|contains: 'a-b'\n  condition: sel",
        &[
            (json!({"CommandLine": "a-b"}), true),
            (json!({"CommandLine": "a/b"}), false),
        ],
    );
}

#[test]
fn expand_placeholders() {
    let mut config = SigmaConfig::default();
    config
        .placeholders
        .insert("admins".into(), vec!["root".into(), "Administrator".into()]);
    check_with(
        &config,
        "  sel:\n    User|expand: '%admins%'\n  condition: sel",
        &[
            (json!({"User": "root"}), true),
            (json!({"User": "administrator"}), true),
            (json!({"User": "bob"}), false),
        ],
    );
    refused(
        "  sel:\n    User|expand: '%nobody%'\n  condition: sel",
        "placeholder `%nobody%`",
    );
}

#[test]
fn keywords_search_every_field() {
    check(
        "  keywords:\n    - 'mimikatz'\n    - 'sekurlsa::*'\n  condition: keywords",
        &[
            (json!({"a": {"b": "run MIMIKATZ now"}}), true),
            (json!({"a": "x sekurlsa::logonpasswords"}), true),
            (json!({"a": "nothing"}), false),
        ],
    );
    check(
        "  kw: 'evil'\n  sel:\n    User: root\n  condition: sel and kw",
        &[
            (json!({"User": "root", "m": "so evil"}), true),
            (json!({"User": "root", "m": "good"}), false),
        ],
    );
    check(
        "  kw:\n    '|all':\n      - 'foo'\n      - 'bar'\n  condition: kw",
        &[
            (json!({"a": "foo", "b": "bar"}), true),
            (json!({"a": "foo"}), false),
        ],
    );
}

#[test]
fn conditions_of_them_wildcards_not_parentheses() {
    check(
        "  selection_img:\n    Image|endswith: '\\sc.exe'\n  selection_cli:\n    CommandLine|contains: ' stop '\n  filter_main:\n    User: SYSTEM\n  filter_opt:\n    ParentImage|endswith: '\\services.exe'\n  condition: all of selection_* and not 1 of filter_*",
        &[
            (
                json!({"Image": "C:\\sc.exe", "CommandLine": "sc stop x"}),
                true,
            ),
            (
                json!({"Image": "C:\\sc.exe", "CommandLine": "sc stop x", "User": "system"}),
                false,
            ),
            (
                json!({"Image": "C:\\sc.exe", "CommandLine": "sc stop x", "ParentImage": "x\\services.exe"}),
                false,
            ),
            (
                json!({"Image": "C:\\sc.exe", "CommandLine": "sc start x"}),
                false,
            ),
        ],
    );
    check(
        "  a:\n    X: 1\n  b:\n    Y: 2\n  condition: 1 of them",
        &[(json!({"Y": 2}), true), (json!({}), false)],
    );
    check(
        "  a:\n    X: 1\n  b:\n    Y: 2\n  condition:\n    - a and b\n    - not (a or b)",
        &[
            (json!({"X": 1, "Y": 2}), true),
            (json!({}), true),
            (json!({"X": 1}), false),
        ],
    );
    check(
        "  sel:\n    - Image|endswith: '\\a.exe'\n    - OriginalFileName: 'a.exe'\n  condition: sel",
        &[
            (json!({"Image": "x\\A.exe"}), true),
            (json!({"OriginalFileName": "A.EXE"}), true),
            (json!({"Image": "x\\b.exe"}), false),
        ],
    );
}

#[test]
fn unsupported_constructs_are_refused_by_name() {
    refused(
        "  sel:\n    A|minute: 5\n  condition: sel",
        "value modifier `minute`",
    );
    refused(
        "  sel:\n    A: 1\n  timeframe: 5m\n  condition: sel | count() > 5",
        "timeframe",
    );
    refused(
        "  sel:\n    A: 1\n  condition: sel | count() by B > 5",
        "aggregation expressions",
    );
    refused(
        "  sel:\n    A: 1\n  condition: sel and missing",
        "unknown selection `missing`",
    );
    refused(
        "  sel:\n    A: []\n  condition: sel",
        "empty list of values",
    );
    refused(
        "  sel:\n    - A: 1\n    - 'kw'\n  condition: sel",
        "mixing field mappings and keywords",
    );
    refused(
        "  sel:\n    A: 1",
        "required field is missing (at detection.condition)",
    );
    // A correlation alone refers to a rule that is not there: refused, naming it.
    let correlation = "title: c\nid: x\ncorrelation:\n  type: event_count\n  rules: [a]\n  timespan: 5m\n  condition: {gt: 1}\n";
    let error = translate(correlation, &SigmaConfig::default()).unwrap_err();
    assert!(error.to_string().contains("refers to rule `a`"), "{error}");
    // Every document of a file must be a valid rule.
    let multi = format!(
        "{}---\ntitle: second\n",
        sigma("  sel:\n    A: 1\n  condition: sel")
    );
    let error = translate(&multi, &SigmaConfig::default()).unwrap_err();
    assert!(error.to_string().contains("document 2"), "{error}");
    // Rule collections (`action: global`) stay refused.
    let error = translate("action: global\ntitle: t\n", &SigmaConfig::default()).unwrap_err();
    assert!(error.to_string().contains("rule collections"), "{error}");
}

#[test]
fn aws_cloudtrail_rules_go_to_the_cloudtrail_stream_with_nested_fields() {
    let text = "title: Root login\nid: 2d3b1f3a-1111-4a4a-8b8b-000000000001\nlevel: critical\nlogsource:\n  product: aws\n  service: cloudtrail\ndetection:\n  sel:\n    eventName: ConsoleLogin\n    userIdentity.type: Root\n  condition: sel\n";
    let rule = translate(text, &SigmaConfig::default()).unwrap();
    assert_eq!(rule.stream, "cloudtrail");
    let compiled = rule.compile().unwrap();
    assert!(
        compiled.matches(&json!({"eventName": "ConsoleLogin", "userIdentity": {"type": "Root"}}))
    );
    assert!(
        !compiled
            .matches(&json!({"eventName": "ConsoleLogin", "userIdentity": {"type": "IAMUser"}}))
    );
    assert!(tw_sigma::is_sigma(text));
    assert!(!tw_sigma::is_sigma(
        "id: x\ntitle: t\nstream: s\nmatch: {field: a, equals: 1}\n"
    ));
    // The same rule as a JSON object (how a JSON API client sends it) is Sigma too, and
    // translates the same; a native rule in JSON is not.
    let value = tw_sigma::parse_yaml(text).unwrap();
    let json_text = value.to_string();
    assert!(tw_sigma::is_sigma(&json_text), "{json_text}");
    assert_eq!(
        translate(&json_text, &SigmaConfig::default()).unwrap(),
        rule
    );
    assert!(!tw_sigma::is_sigma(
        r#"{"id": "x", "title": "t", "stream": "s", "match": {"field": "a", "equals": 1}}"#
    ));
    assert!(!tw_sigma::is_sigma("{not json"));
}
