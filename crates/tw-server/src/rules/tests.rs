//! The registry with Sigma correlations over stored rules: they follow an edit of those rules
//! (in the same operation, recorded with why), a rule in use cannot be deleted, a change a
//! correlation cannot follow is refused whole, and a restart completes a cut-short change.

use std::sync::Arc;

use serde_json::json;
use tw_detect::Rule;
use tw_sigma::{SigmaConfig, SigmaError, translate_file_with_sources, translate_file_with_stored};

use super::{RuleRegistry, RuleRegistryError};

const BASE: &str = "base-failed-login";
const CORRELATION: &str = "corr-brute-force";

fn base(event_id: u32) -> String {
    format!(
        "title: Failed login\nid: {BASE}\nlogsource: {{product: windows, service: security}}\ndetection:\n    selection: {{EventID: {event_id}}}\n    condition: selection\n"
    )
}

fn correlation() -> String {
    format!(
        "title: Brute force\nid: {CORRELATION}\nlevel: high\ncorrelation:\n    type: event_count\n    rules: [{BASE}]\n    group-by: [User]\n    timespan: 5m\n    condition: {{gte: 3}}\n"
    )
}

fn open(dir: &std::path::Path) -> RuleRegistry {
    RuleRegistry::open(dir, Arc::new(SigmaConfig::default())).unwrap()
}

/// Posts a Sigma file as the API does: translated over the stored rules, with its sources.
fn post(registry: &RuleRegistry, text: &str, who: &str) -> Result<Vec<String>, RuleRegistryError> {
    let translation = translate_file_with_stored(text, &SigmaConfig::default(), registry).unwrap();
    registry
        .upsert_all_with_sources(translation.rules, translation.sources, who, true)
        .map(|upserted| upserted.followed)
}

/// Whether the stored correlation counts an event with this EventID.
fn counts(registry: &RuleRegistry, event_id: u32) -> bool {
    let rule = registry.get(CORRELATION).unwrap();
    rule.compile()
        .unwrap()
        .matches(&json!({"EventID": event_id, "User": "alice"}))
}

fn setup(dir: &std::path::Path) -> RuleRegistry {
    let registry = open(dir);
    post(&registry, &base(4625), "alice").unwrap();
    post(&registry, &correlation(), "alice").unwrap();
    assert!(counts(&registry, 4625));
    registry
}

#[test]
fn an_edited_base_rule_is_followed_by_its_correlation_with_the_reason_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let registry = setup(dir.path());
    let mut published = registry.subscribe();
    published.mark_unchanged();
    let followed = post(&registry, &base(529), "bob").unwrap();
    assert_eq!(followed, [CORRELATION]);
    assert!(counts(&registry, 529));
    assert!(!counts(&registry, 4625));
    // Published together with the base rule's change (what detection applies).
    assert!(published.has_changed().unwrap());
    let live = registry.current();
    let live = live.iter().find(|r| r.id() == CORRELATION).unwrap();
    assert!(live.matches(&json!({"EventID": 529, "User": "a"})));
    let history = registry.history(CORRELATION).unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.version, last.action.as_str(), last.who.as_str()),
        (2, "update", "bob")
    );
    assert_eq!(
        last.reason.as_deref(),
        Some("base rule base-failed-login (now version 2) changed")
    );
    // Only a change of what it evaluates makes a new version: a disabled base rule keeps
    // counting (Sigma correlations use their rules' matches, alerting or not).
    registry.set_enabled(BASE, false, "bob").unwrap();
    assert_eq!(registry.get(CORRELATION).unwrap().version, 2);
    assert!(counts(&registry, 529));
    let followed = post(&registry, &base(4771), "carol").unwrap();
    assert_eq!(followed, [CORRELATION]);
    assert!(counts(&registry, 4771));
    assert!(registry.get(CORRELATION).unwrap().enabled);
    assert!(
        !registry.get(BASE).unwrap().enabled,
        "kept from the stored rule"
    );
}

#[test]
fn a_base_rule_in_use_is_not_deleted_and_a_change_the_correlation_cannot_follow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let registry = setup(dir.path());
    let error = registry.delete(BASE, "bob").unwrap_err();
    assert!(
        matches!(&error, RuleRegistryError::InUse { correlations, .. } if correlations == &[CORRELATION]),
        "{error}"
    );
    assert!(registry.get(BASE).is_some());
    // A stateful base rule: correlations of correlations are refused, so is this edit.
    let mut stateful = registry.get(BASE).unwrap().to_value();
    stateful["threshold"] = json!({"count": {"gt": 3}, "window": "1m"});
    let stateful = Rule::from_value(&stateful).unwrap();
    let error = registry.upsert(stateful, "bob", true).unwrap_err();
    assert!(
        matches!(&error, RuleRegistryError::BreaksCorrelation { correlation, .. } if correlation == CORRELATION),
        "{error}"
    );
    assert!(error.to_string().contains("stateful"), "{error}");
    assert_eq!(registry.get(BASE).unwrap().version, 1, "nothing stored");
    assert_eq!(registry.get(CORRELATION).unwrap().version, 1);
    // Replaced by a native rule, the correlation no longer follows: the base can go.
    let mut native = registry.get(CORRELATION).unwrap();
    native.title = "Native now".into();
    registry.upsert(native, "bob", true).unwrap();
    registry.delete(BASE, "bob").unwrap();
}

#[test]
fn a_restart_keeps_following_and_completes_a_change_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let registry = setup(dir.path());
    post(&registry, &base(529), "bob").unwrap();
    drop(registry);
    let registry = open(dir.path());
    assert_eq!(registry.get(CORRELATION).unwrap().version, 2, "as stored");
    assert!(counts(&registry, 529));
    post(&registry, &base(4771), "bob").unwrap();
    assert!(counts(&registry, 4771));
    drop(registry);
    // A stop right after the base rule's file was written, before its correlation's.
    let mut edited = stored_rule(dir.path(), BASE);
    edited.condition = translated_base(4625).condition;
    edited.version += 1;
    std::fs::write(
        dir.path().join(format!("{BASE}.json")),
        serde_json::to_vec(&edited).unwrap(),
    )
    .unwrap();
    let registry = open(dir.path());
    assert!(counts(&registry, 4625), "completed at start");
    let last = registry.history(CORRELATION).unwrap().pop().unwrap();
    assert_eq!((last.version, last.who.as_str()), (4, "system"));
    assert!(last.reason.unwrap().contains("completed at start"));
    // A correlation deleted before its source was: the source goes at start.
    registry.delete(CORRELATION, "bob").unwrap();
    std::fs::write(
        dir.path()
            .join("correlations")
            .join(format!("{CORRELATION}.json")),
        serde_json::to_vec(&super::followers::Follower::new(source(), 4, &|_| None)).unwrap(),
    )
    .unwrap();
    let registry = open(dir.path());
    registry.delete(BASE, "bob").unwrap();
}

fn stored_rule(dir: &std::path::Path, id: &str) -> Rule {
    let text = std::fs::read_to_string(dir.join(format!("{id}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn translated_base(event_id: u32) -> Rule {
    tw_sigma::translate(&base(event_id), &SigmaConfig::default()).unwrap()
}

/// The correlation's source, as stored.
fn source() -> tw_sigma::CorrelationSource {
    let loaded = |id: &str| (id == BASE).then(|| translated_base(1));
    translate_file_with_sources(&correlation(), &SigmaConfig::default(), &loaded)
        .unwrap()
        .sources
        .remove(CORRELATION)
        .unwrap()
}

/// The base rule with a Sigma name, and a correlation referring to it by that name.
fn named_base(id: &str, event_id: u32) -> String {
    base(event_id).replace(
        &format!("id: {BASE}\n"),
        &format!("id: {id}\nname: failed\n"),
    )
}

#[test]
fn a_correlation_refers_to_a_stored_rule_by_its_sigma_name_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let registry = open(dir.path());
    post(&registry, &named_base(BASE, 4625), "alice").unwrap();
    // Persisted with the rule, so found after a restart.
    assert_eq!(
        stored_rule(dir.path(), BASE).sigma_name.as_deref(),
        Some("failed")
    );
    drop(registry);
    let registry = open(dir.path());
    let by_name = correlation().replace(&format!("rules: [{BASE}]"), "rules: [failed]");
    post(&registry, &by_name, "alice").unwrap();
    assert!(registry.follows(CORRELATION));
    assert!(counts(&registry, 4625));
    // It follows the rule by id: an edit reaches it, a deletion is refused.
    let followed = post(&registry, &named_base(BASE, 529), "bob").unwrap();
    assert_eq!(followed, [CORRELATION]);
    assert!(counts(&registry, 529) && !counts(&registry, 4625));
    assert!(matches!(
        registry.delete(BASE, "bob"),
        Err(RuleRegistryError::InUse { .. })
    ));
    // A second rule with the name makes a new reference to it ambiguous.
    post(&registry, &named_base("another-failed-login", 1), "carol").unwrap();
    let error = translate_file_with_stored(
        &by_name.replace(CORRELATION, "corr-2"),
        &SigmaConfig::default(),
        &registry,
    )
    .unwrap_err();
    assert!(
        matches!(&error, SigmaError::AmbiguousRule { ids, .. } if ids == &["another-failed-login", BASE]),
        "{error}"
    );
}
