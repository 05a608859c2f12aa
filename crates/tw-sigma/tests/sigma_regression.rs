//! SigmaHQ's own regression data: real rules, real events (EVTX converted to JSON), expected
//! match counts. Every case must either produce exactly the expected count, or be listed in
//! [`REFUSED`] with the reason the translation gives, or in [`UPSTREAM_COUNT_DIFFERS`] with our
//! exact count and why it differs; the test prints the count of each. A test without a
//! `match_count` upstream is a positive test: at least one event must match.
//!
//! Events are flattened the way Windows log shippers do before rules see them: the header
//! fields Sigma names (`EventID`, `Channel`, `Provider_Name`, ...), every `EventData` field and
//! every field of the `UserData` element side by side at the top level; Defender's field names
//! with spaces (`Source Name`) also appear without them (`SourceName`), as Sigma writes them.
//! Rules are translated with the default configuration: field names unchanged.
//!
//! Data: `../shared/data/sigma/` next to the checkout (override with `TIDEWATCH_SIGMA_DATA`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tw_sigma::{SigmaConfig, parse_yaml, translate};

/// Cases refused on purpose: (rule id, words the refusal must contain).
const REFUSED: &[(&str, &str)] = &[];

/// Cases whose upstream `match_count` differs from what Sigma's semantics give on the JSON
/// events shipped with them: (rule id, upstream count, our exact count, why).
const UPSTREAM_COUNT_DIFFERS: &[(&str, u64, u64, &str)] = &[
    (
        "0b9ad457-2554-44c1-82c2-d56a99c42377",
        1,
        3,
        "three events' TargetFilename contain `\\AppData\\Roaming\\AnyDesk\\user.conf` (user.conf.new twice, user.conf~RF….TMP)",
    ),
    (
        "8fbf3271-1ef6-4e94-8210-03c2317947f6",
        1,
        3,
        "procdump.exe, procdump64.exe and procdump64a.exe are each in the rule's `endswith` list",
    ),
    (
        "45e112d0-7759-4c2a-aa36-9f8fb79d3393",
        1,
        3,
        "all three SetValue events are under ZoneMap\\Domains\\ with Details DWORD (0x00000002), not filtered",
    ),
    (
        "c7dcacd0-cc59-4004-b0a4-1d6cdebe6f3e",
        1,
        2,
        "both AutoShareServer and AutoShareWks are set to DWORD (0x00000000), and the rule lists both",
    ),
];

/// Regression cases whose rule file is not part of the data set (so there is nothing to run).
const RULE_NOT_IN_DATA: &[&str] = &[
    "762bb580-79b4-40f4-8b9e-9349ce1710f4",
    "da92713f-ca2d-4fab-8320-098013d3f43a",
];

fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TIDEWATCH_SIGMA_DATA") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sigma")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// One flat object per event (see the module comment).
fn flatten(event: &Value) -> Value {
    let mut flat = Map::new();
    let system = &event["Event"]["System"];
    for key in [
        "EventID",
        "Channel",
        "Computer",
        "Level",
        "Task",
        "Opcode",
        "Keywords",
        "EventRecordID",
        "Version",
    ] {
        if let Some(value) = system.get(key) {
            flat.insert(key.to_string(), value.clone());
        }
    }
    if let Some(name) = system["Provider"]["#attributes"].get("Name") {
        flat.insert("Provider_Name".into(), name.clone());
    }
    let mut add = |fields: &Map<String, Value>| {
        for (key, value) in fields {
            if key == "#attributes" {
                continue;
            }
            flat.insert(key.clone(), value.clone());
            if key.contains(' ') {
                flat.insert(key.replace(' ', ""), value.clone());
            }
        }
    };
    if let Some(Value::Object(fields)) = event["Event"].get("EventData") {
        add(fields);
    }
    if let Some(Value::Object(elements)) = event["Event"].get("UserData") {
        for element in elements.values() {
            if let Value::Object(fields) = element {
                add(fields);
            }
        }
    }
    Value::Object(flat)
}

/// Every JSON value in the file (one pretty-printed event, or several one after another).
fn events(path: &Path) -> Vec<Value> {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::Deserializer::from_slice(&text)
        .into_iter::<Value>()
        .map(|v| flatten(&v.unwrap_or_else(|e| panic!("{}: {e}", path.display()))))
        .collect()
}

#[test]
fn sigma_regression_data_matches_the_expected_counts() {
    let root = data_dir();
    assert!(
        root.join("regression_data").is_dir(),
        "Sigma regression data not found at {} (set TIDEWATCH_SIGMA_DATA)",
        root.display()
    );
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut rules_by_id: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in all.iter().filter(|p| {
        !p.starts_with(root.join("regression_data"))
            && p.extension().is_some_and(|e| e == "yml" || e == "yaml")
    }) {
        let text = std::fs::read_to_string(path).unwrap();
        if let Ok(Value::Object(doc)) = parse_yaml(&text)
            && let Some(Value::String(id)) = doc.get("id")
        {
            rules_by_id.insert(id.clone(), path.clone());
        }
    }
    let config = SigmaConfig::default();
    let (mut passed, mut positive, mut differs, mut refused, mut without_test, mut missing) =
        (0, 0, 0, 0, 0, 0);
    let mut failures = Vec::new();
    for info_path in all.iter().filter(|p| p.ends_with("info.yml")) {
        let info = parse_yaml(&std::fs::read_to_string(info_path).unwrap()).unwrap();
        let rule_id = info["rule_metadata"][0]["id"].as_str().unwrap_or_default();
        let Some(tests) = info.get("regression_tests_info").and_then(Value::as_array) else {
            // The one raw-log case (Cisco) has its test commented out upstream.
            without_test += 1;
            println!("no regression test listed: {}", info_path.display());
            continue;
        };
        let Some(rule_path) = rules_by_id.get(rule_id) else {
            if RULE_NOT_IN_DATA.contains(&rule_id) {
                missing += 1;
                println!("rule not in the data set, as listed: {rule_id}");
            } else {
                failures.push(format!("{rule_id}: rule file not found"));
            }
            continue;
        };
        let text = std::fs::read_to_string(rule_path).unwrap();
        let listed = REFUSED.iter().find(|(id, _)| *id == rule_id);
        let rule = match (translate(&text, &config), listed) {
            (Ok(rule), None) => rule,
            (Ok(_), Some(_)) => {
                failures.push(format!("{rule_id}: listed as refused but now translates"));
                continue;
            }
            (Err(error), Some((_, reason))) if error.to_string().contains(reason) => {
                refused += 1;
                println!(
                    "refused as listed: {rule_id} ({}): {error}",
                    rule_path.display()
                );
                continue;
            }
            (Err(error), _) => {
                failures.push(format!(
                    "{rule_id} ({}): refused: {error}",
                    rule_path.display()
                ));
                continue;
            }
        };
        let compiled = rule.compile().expect("a translated rule compiles");
        for test in tests {
            let evtx = test["path"].as_str().unwrap_or_default();
            let json_path = root.join(Path::new(evtx).with_extension("json"));
            let events = events(&json_path);
            let got = events.iter().filter(|e| compiled.matches(e)).count() as u64;
            let differing = UPSTREAM_COUNT_DIFFERS
                .iter()
                .find(|(id, ..)| *id == rule_id);
            let expected = match (test["match_count"].as_u64(), differing) {
                (Some(upstream), Some((_, listed_upstream, ours, why)))
                    if upstream == *listed_upstream =>
                {
                    if got == *ours {
                        differs += 1;
                        println!(
                            "count differs as listed: {rule_id}: upstream {upstream}, ours {ours}: {why}"
                        );
                        continue;
                    }
                    *ours
                }
                (Some(upstream), _) => upstream,
                (None, _) if got >= 1 => {
                    positive += 1;
                    continue;
                }
                (None, _) => 1,
            };
            if got == expected {
                passed += 1;
            } else {
                failures.push(format!(
                    "{rule_id} ({}): expected {expected} matches in {} events, got {got}",
                    rule_path.display(),
                    events.len()
                ));
            }
        }
    }
    println!(
        "sigma regression: {passed} exact counts, {positive} positive tests (no upstream count, ≥1 match), {differs} upstream counts differing as listed, {refused} refused as listed, {missing} without their rule file, {without_test} without a test, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    assert!(
        passed + positive > 150,
        "too few cases ran: {passed} + {positive}"
    );
}

/// Every rule file of the data set either translates or is refused with a named reason;
/// nothing panics. The counts are printed.
#[test]
fn every_sigma_rule_translates_or_is_refused_by_name() {
    let root = data_dir();
    assert!(root.is_dir(), "Sigma data not found at {}", root.display());
    let mut all = Vec::new();
    files(&root, &mut all);
    let config = SigmaConfig::default();
    let (mut translated, mut reasons) = (0, BTreeMap::<String, usize>::new());
    for path in all.iter().filter(|p| {
        !p.starts_with(root.join("regression_data"))
            && p.extension().is_some_and(|e| e == "yml" || e == "yaml")
    }) {
        let text = std::fs::read_to_string(path).unwrap();
        match translate(&text, &config) {
            Ok(rule) => {
                rule.compile().expect("a translated rule compiles");
                translated += 1;
            }
            Err(error) => {
                let message = error.to_string();
                assert!(!message.is_empty());
                println!("refused {}: {message}", path.display());
                *reasons
                    .entry(message.split(" (at").next().unwrap_or_default().to_string())
                    .or_default() += 1;
            }
        }
    }
    println!(
        "sigma rules: {translated} translated, {} refused",
        reasons.values().sum::<usize>()
    );
    for (reason, count) in &reasons {
        println!("  {count:4} × {reason}");
    }
    assert!(translated > 300, "too few rules translated: {translated}");
}
