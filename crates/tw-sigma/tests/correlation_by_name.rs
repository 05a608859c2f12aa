//! A correlation posted on its own refers to a stored rule by the Sigma `name` it was stored
//! with: the rule keeps its name (`sigma_name`), the reference resolves to the rule's id (so
//! the correlation follows that rule), an id or a rule of the correlation's own file comes
//! first, and a name that several stored rules have, or none, is refused naming it.
//!
//! Regression: a reference by name resolved only in the correlation's own file, so a
//! correlation over a rule stored earlier had to use its id.

use serde_json::json;
use tw_detect::Rule;
use tw_sigma::{
    Base, SigmaConfig, SigmaError, StoredRules, translate, translate_correlation,
    translate_file_with_sources, translate_file_with_stored,
};

const FAILED_ID: &str = "53ba33fd-3a50-4468-a5ef-c583635cfa92";
const OTHER_ID: &str = "0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b";
const IN_FILE_ID: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const CORRELATION_ID: &str = "b180ead8-d58f-40b2-ae54-c8940995b9b6";

/// A Windows security rule matching one event id, with a Sigma name.
fn detection(id: &str, name: &str, event_id: u32) -> String {
    format!(
        "title: Rule {id}\nid: {id}\nname: {name}\nlogsource: {{product: windows, service: security}}\ndetection:\n    selection: {{EventID: {event_id}}}\n    condition: selection\n"
    )
}

/// An event_count correlation (twice per user in 5 minutes) over `reference`.
fn correlation(reference: &str) -> String {
    format!(
        "title: Repeated\nid: {CORRELATION_ID}\nname: repeated\nlevel: high\ncorrelation:\n    type: event_count\n    rules: [{reference}]\n    group-by: [User]\n    timespan: 5m\n    condition: {{gte: 2}}\n"
    )
}

fn rule(text: &str) -> Rule {
    translate(text, &SigmaConfig::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Stored rules, found by id and by Sigma name (as the rule registry finds them).
struct Stored(Vec<Rule>);

impl StoredRules for Stored {
    fn rule(&self, id: &str) -> Option<Rule> {
        self.0.iter().find(|rule| rule.id == id).cloned()
    }

    fn ids_named(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|rule| rule.sigma_name.as_deref() == Some(name))
            .map(|rule| rule.id.clone())
            .collect()
    }
}

fn matches(rule: &Rule, event_id: u32) -> bool {
    rule.compile()
        .unwrap()
        .matches(&json!({"EventID": event_id, "User": "alice"}))
}

#[test]
fn a_sigma_rule_keeps_its_name_and_a_rule_stored_without_one_still_loads() {
    let stored = rule(&detection(FAILED_ID, "failed_login", 4625));
    assert_eq!(stored.sigma_name.as_deref(), Some("failed_login"));
    let value = stored.to_value();
    assert_eq!(value["sigma_name"], "failed_login");
    let round_trip: Rule = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(round_trip, stored);
    // A rule persisted before names were kept has no `sigma_name`.
    let mut old = value;
    old.as_object_mut().unwrap().remove("sigma_name");
    let old: Rule = serde_json::from_value(old).unwrap();
    assert_eq!(old.sigma_name, None);
    assert!(
        !old.to_value()
            .as_object()
            .unwrap()
            .contains_key("sigma_name")
    );
    // Without a name (or with a blank one) there is none; a correlation keeps its own.
    let unnamed = detection(FAILED_ID, "failed_login", 4625).replace("name: failed_login\n", "");
    assert_eq!(rule(&unnamed).sigma_name, None);
    let blank = detection(FAILED_ID, "\"  \"", 4625);
    assert_eq!(rule(&blank).sigma_name, None);
    let stored = Stored(vec![stored]);
    let translation = translate_file_with_stored(
        &correlation("failed_login"),
        &SigmaConfig::default(),
        &stored,
    )
    .unwrap();
    assert_eq!(translation.rules[0].sigma_name.as_deref(), Some("repeated"));
    // A name that is not a string is refused, naming it.
    let error = translate(
        &detection(FAILED_ID, "[a, b]", 4625),
        &SigmaConfig::default(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid sigma rule: expected a string (at name)"
    );
}

#[test]
fn a_reference_by_name_resolves_to_the_stored_rule_s_id_and_follows_it() {
    let stored = Stored(vec![
        rule(&detection(FAILED_ID, "failed_login", 4625)),
        rule(&detection(OTHER_ID, "other", 4624)),
    ]);
    let translation = translate_file_with_stored(
        &correlation("failed_login"),
        &SigmaConfig::default(),
        &stored,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(translation.rules.len(), 1);
    let correlation_rule = &translation.rules[0];
    assert_eq!(correlation_rule.stream, "windows_security");
    assert_eq!(correlation_rule.condition, stored.0[0].condition);
    // The source refers to the rule by id: edits of that rule reach the correlation.
    let source = &translation.sources[CORRELATION_ID];
    assert_eq!(
        source.bases,
        [Base::Stored {
            id: FAILED_ID.into()
        }]
    );
    let mut edited = rule(&detection(FAILED_ID, "renamed", 529));
    edited.version = 2;
    let again = translate_correlation(source, &SigmaConfig::default(), &|id| {
        (id == FAILED_ID).then(|| edited.clone())
    })
    .unwrap();
    assert!(matches(&again, 529) && !matches(&again, 4625));
}

#[test]
fn an_id_and_a_rule_of_the_same_file_come_before_a_stored_name() {
    // A stored rule whose id is another stored rule's name: the id wins.
    let stored = Stored(vec![
        rule(&detection(FAILED_ID, "failed_login", 4625)),
        rule(&detection(OTHER_ID, FAILED_ID, 4624)),
    ]);
    let translation =
        translate_file_with_stored(&correlation(FAILED_ID), &SigmaConfig::default(), &stored)
            .unwrap();
    assert_eq!(
        translation.sources[CORRELATION_ID].bases,
        [Base::Stored {
            id: FAILED_ID.into()
        }]
    );
    // The file's own `failed_login` (event 529), not the stored one (4625).
    let in_file = detection(IN_FILE_ID, "failed_login", 529);
    let text = [correlation("failed_login"), in_file].join("---\n");
    let translation = translate_file_with_stored(&text, &SigmaConfig::default(), &stored).unwrap();
    assert!(matches(&translation.rules[0], 529) && !matches(&translation.rules[0], 4625));
    assert!(translation.sources.is_empty(), "{:?}", translation.sources);
}

#[test]
fn a_name_several_stored_rules_have_or_none_has_is_refused_naming_it() {
    let stored = Stored(vec![
        rule(&detection(OTHER_ID, "failed_login", 4624)),
        rule(&detection(FAILED_ID, "failed_login", 4625)),
    ]);
    let error = translate_file_with_stored(
        &correlation("failed_login"),
        &SigmaConfig::default(),
        &stored,
    )
    .unwrap_err();
    assert!(
        matches!(&error, SigmaError::AmbiguousRule { ids, .. } if ids == &[OTHER_ID, FAILED_ID]),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "correlation refers to rule `failed_login`, a name that several stored rules have ({OTHER_ID}, {FAILED_ID}): refer to one of them by id (at correlation.rules[0])"
        )
    );
    // In a file of several documents, the error says which one.
    let text = [correlation("failed_login"), detection(IN_FILE_ID, "x", 1)].join("---\n");
    let error = translate_file_with_stored(&text, &SigmaConfig::default(), &stored).unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("(at document 1: correlation.rules[0])"),
        "{error}"
    );

    let error =
        translate_file_with_stored(&correlation("nobody"), &SigmaConfig::default(), &stored)
            .unwrap_err();
    assert!(matches!(error, SigmaError::UnknownRule { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "correlation refers to rule `nobody`, which is neither in the same file (by `name` or `id`) nor stored (by `id` or `name`) (at correlation.rules[0])"
    );
}

#[test]
fn a_stored_correlation_named_by_a_reference_is_refused_as_chained() {
    let base = rule(&detection(FAILED_ID, "failed_login", 4625));
    let first = translate_file_with_stored(
        &correlation("failed_login"),
        &SigmaConfig::default(),
        &Stored(vec![base.clone()]),
    )
    .unwrap()
    .rules
    .remove(0);
    let stored = Stored(vec![base, first]);
    let chained = correlation("repeated")
        .replace(CORRELATION_ID, OTHER_ID)
        .replace("name: repeated", "name: chained");
    let error = translate_file_with_stored(&chained, &SigmaConfig::default(), &stored)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("a correlation of the stateful rule `repeated`"),
        "{error}"
    );
}

#[test]
fn a_lookup_by_id_alone_does_not_search_names() {
    let stored = rule(&detection(FAILED_ID, "failed_login", 4625));
    let error = translate_file_with_sources(
        &correlation("failed_login"),
        &SigmaConfig::default(),
        &|id| (id == FAILED_ID).then(|| stored.clone()),
    )
    .unwrap_err();
    assert!(matches!(error, SigmaError::UnknownRule { .. }), "{error:?}");
}
