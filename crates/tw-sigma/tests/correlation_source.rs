//! A correlation's source: where each reference resolved (a rule stored on its own, or a
//! document of the same file that is not), and its translation again from the stored rules'
//! current versions — what lets a stored correlation follow an edit of its base rules.

use serde_json::json;
use tw_detect::Rule;
use tw_sigma::{
    Base, CorrelationSource, SigmaConfig, SigmaError, translate, translate_correlation,
    translate_file_with_sources,
};

const FAILED_ID: &str = "53ba33fd-3a50-4468-a5ef-c583635cfa92";
const SUCCESS_ID: &str = "4d0a2c83-c62c-4ed4-b475-c7e23a9269b8";
const CORRELATION_ID: &str = "b180ead8-d58f-40b2-ae54-c8940995b9b6";

fn failed(event_id: u32) -> String {
    format!(
        "title: Failed login\nid: {FAILED_ID}\nname: failed_login\nlogsource: {{product: windows, service: security}}\ndetection:\n    selection: {{EventID: {event_id}}}\n    condition: selection\n"
    )
}

fn success() -> String {
    format!(
        "title: Successful login\nid: {SUCCESS_ID}\nname: successful_login\nlogsource: {{product: windows, service: security}}\ndetection:\n    selection: {{EventID: 4624}}\n    condition: selection\n"
    )
}

fn correlation(body: &str) -> String {
    format!("title: Correlation\nid: {CORRELATION_ID}\nlevel: high\ncorrelation:\n{body}")
}

fn rule(text: &str) -> Rule {
    translate(text, &SigmaConfig::default()).unwrap()
}

fn source_of(text: &str, loaded: &dyn Fn(&str) -> Option<Rule>) -> Option<CorrelationSource> {
    translate_file_with_sources(text, &SigmaConfig::default(), loaded)
        .unwrap()
        .sources
        .remove(CORRELATION_ID)
}

fn matches(rule: &Rule, event_id: u32) -> bool {
    rule.compile()
        .unwrap()
        .matches(&json!({"EventID": event_id, "User": "alice"}))
}

#[test]
fn a_correlation_over_a_stored_rule_is_translated_again_from_its_current_version() {
    let text = correlation(&format!(
        "    type: temporal_ordered\n    rules: [{FAILED_ID}, successful_login]\n    group-by: [User]\n    timespan: 5m\n"
    ));
    let text = [text.as_str(), &success()].join("---\n");
    let stored = rule(&failed(4625));
    let v1 = stored.clone();
    let source = source_of(&text, &move |id| (id == FAILED_ID).then(|| v1.clone()))
        .expect("a source: the correlation refers to a stored rule");
    // The stored rule by id; the file's rule, not stored on its own, by its document.
    assert_eq!(
        source.bases[0],
        Base::Stored {
            id: FAILED_ID.into()
        }
    );
    assert!(
        matches!(&source.bases[1], Base::InFile { document } if document["name"] == "successful_login")
    );
    assert_eq!(source.stored_bases(), [FAILED_ID]);
    let round_trip: CorrelationSource =
        serde_json::from_str(&serde_json::to_string(&source).unwrap()).unwrap();
    assert_eq!(round_trip, source);

    // The stored rule now matches 529 instead of 4625: so do the correlation's first step
    // and its match; the file's rule is unchanged.
    let mut edited = rule(&failed(529));
    edited.version = 2;
    edited.enabled = false;
    let again = translate_correlation(&source, &SigmaConfig::default(), &|id| {
        (id == FAILED_ID).then(|| edited.clone())
    })
    .unwrap();
    assert!(matches(&again, 529) && !matches(&again, 4625) && matches(&again, 4624));
    let steps = &again.sequence.as_ref().unwrap().steps;
    assert_eq!(
        steps[0],
        edited.condition.clone().unwrap(),
        "a disabled base still counts"
    );
    assert_eq!(steps[1], rule(&success()).condition.unwrap());
}

#[test]
fn generated_rules_of_the_file_are_followed_by_id_and_others_are_not() {
    let body = "    type: temporal\n    rules: [failed_login, successful_login]\n    group-by: [User]\n    timespan: 5m\n";
    let none = |_: &str| None;
    // Without `generate`, every base rule is part of the correlation: nothing to follow.
    let text = [correlation(body), failed(4625), success()].join("---\n");
    assert_eq!(source_of(&text, &none), None);
    // With it, they are stored rules, referred to by their ids (the file used names).
    let text = [
        correlation(&format!("{body}    generate: true\n")),
        failed(4625),
        success(),
    ]
    .join("---\n");
    let source = source_of(&text, &none).unwrap();
    assert_eq!(source.stored_bases(), [FAILED_ID, SUCCESS_ID]);
}

#[test]
fn a_change_the_correlation_cannot_follow_is_refused_naming_it() {
    let text = correlation(&format!(
        "    type: event_count\n    rules: [{FAILED_ID}]\n    group-by: [User]\n    timespan: 5m\n    condition: {{gte: 3}}\n"
    ));
    let stored = rule(&failed(4625));
    let v1 = stored.clone();
    let source = source_of(&text, &move |id| (id == FAILED_ID).then(|| v1.clone())).unwrap();
    let config = SigmaConfig::default();
    let error = translate_correlation(&source, &config, &|_| None).unwrap_err();
    assert!(matches!(error, SigmaError::UnknownRule { .. }), "{error}");
    let mut stateful = stored.to_value();
    stateful["threshold"] = json!({"count": {"gt": 3}, "window": "1m"});
    let stateful = Rule::from_value(&stateful).unwrap();
    let error = translate_correlation(&source, &config, &|_| Some(stateful.clone())).unwrap_err();
    assert!(error.to_string().contains("stateful rule"), "{error}");
    // The correlation's own stored settings are kept, as when its file is loaded again.
    let mut correlation =
        translate_correlation(&source, &config, &|_| Some(stored.clone())).unwrap();
    correlation.enabled = false;
    correlation.sinks = vec!["pager".into()];
    let again = translate_correlation(&source, &config, &|id| {
        Some(if id == CORRELATION_ID {
            correlation.clone()
        } else {
            stored.clone()
        })
    })
    .unwrap();
    assert!(!again.enabled);
    assert_eq!(again.sinks, ["pager"]);
}
