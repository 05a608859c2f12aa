//! Sigma rules end to end: an unmodified Sigma file posted to the API becomes a live rule on
//! the stream its logsource maps to, and raises exactly the alerts its detection describes;
//! `tidewatch rules import DIR` loads a directory and fails on the file it refuses.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, binary, write};
use serde_json::Value;

const ROOT_LOGIN: &str = r#"title: AWS Root Console Login Without MFA
id: 8f1e3a62-9b7d-4c1e-a1c2-3b4d5e6f7a80
status: test
description: A console login by the root user without MFA.
author: Tidewatch tests
tags:
    - attack.initial-access
    - attack.t1078.004
logsource:
    product: aws
    service: cloudtrail
detection:
    selection:
        eventName: ConsoleLogin
        userIdentity.type: Root
    filter_mfa:
        additionalEventData.MFAUsed: 'Yes'
    filter_internal:
        sourceIPAddress|startswith: '10.'
    condition: selection and not 1 of filter_*
falsepositives:
    - None
level: critical
"#;

fn login(i: usize, user_type: &str, mfa: &str, ip: &str) -> String {
    format!(
        r#"{{"eventName":"ConsoleLogin","n":{i},"userIdentity":{{"type":"{user_type}"}},"additionalEventData":{{"MFAUsed":"{mfa}"}},"sourceIPAddress":"{ip}","eventTime":"2024-03-01T00:00:{:02}Z"}}"#,
        i % 60
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_sigma_rule_raises_exactly_its_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, &[]);
    let created = server
        .client
        .post(format!("{}/api/v1/rules", server.url))
        .header("content-type", "application/yaml")
        .body(ROOT_LOGIN)
        .send()
        .await
        .unwrap();
    let status = created.status();
    let rule: Value = created.json().await.unwrap();
    assert_eq!(status, 201, "{rule}");
    assert_eq!(rule["id"], "8f1e3a62-9b7d-4c1e-a1c2-3b4d5e6f7a80");
    assert_eq!(rule["stream"], "cloudtrail");
    assert_eq!(rule["severity"], "critical");
    assert_eq!(rule["tags"][1], "attack.t1078.004");

    // 0..4 match; the others are filtered (MFA, internal IP) or not root.
    let events = [
        login(0, "Root", "No", "203.0.113.9"),
        login(1, "Root", "No", "198.51.100.7"),
        login(2, "root", "no", "198.51.100.8"),
        login(3, "Root", "No", "2001:db8::1"),
        login(4, "Root", "Yes", "203.0.113.9"),
        login(5, "Root", "No", "10.1.2.3"),
        login(6, "IAMUser", "No", "203.0.113.9"),
        r#"{"eventName":"GetObject","userIdentity":{"type":"Root"}}"#.to_string(),
    ];
    assert_eq!(server.send("cloudtrail", events.join("\n")).await.0, 200);
    server
        .eventually(
            "detection evaluated all 8 events",
            Duration::from_secs(10),
            || async {
                let (_, metrics) = server.get_text("/metrics").await;
                metrics.lines().any(|l| {
                    l.starts_with("tidewatch_events_evaluated_total{stream=\"cloudtrail\"} ")
                        && l.ends_with(" 8")
                })
            },
        )
        .await;
    let alerts = server
        .alerts(Some("8f1e3a62-9b7d-4c1e-a1c2-3b4d5e6f7a80"))
        .await;
    let mut matched: Vec<u64> = alerts
        .iter()
        .map(|a| a["events"][0]["n"].as_u64().unwrap())
        .collect();
    matched.sort();
    assert_eq!(matched, vec![0, 1, 2, 3], "{alerts:?}");
    assert_eq!(alerts[0]["severity"], "critical");

    // A Sigma rule can be dry-run on given events before it is stored.
    let dry_run = server
        .client
        .post(format!("{}/api/v1/rules/test", server.url))
        .json(&serde_json::json!({
            "rule": ROOT_LOGIN.replace("8f1e3a62-9b7d-4c1e-a1c2-3b4d5e6f7a80", "8f1e3a62-0000-4c1e-a1c2-3b4d5e6f7a80"),
            "events": events.iter().map(|e| serde_json::from_str::<Value>(e).unwrap()).collect::<Vec<_>>(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(dry_run.status(), 200);
    let dry_run: Value = dry_run.json().await.unwrap();
    assert_eq!(
        dry_run["alerts"].as_array().map(Vec::len),
        Some(4),
        "{dry_run}"
    );

    // Something unsupported is refused with its name, and nothing is stored.
    let refused = server
        .client
        .post(format!("{}/api/v1/rules", server.url))
        .body(ROOT_LOGIN.replace("eventName: ConsoleLogin", "eventName|minute: 5"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("value modifier `minute`"),
        "{body}"
    );
    let (_, rules) = server.get("/api/v1/rules").await;
    assert_eq!(rules.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_import_reports_each_file_and_fails_on_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None, &[]);
    let rules = dir.path().join("rules");
    write(&rules, "aws/root.yml", ROOT_LOGIN);
    write(
        &rules,
        "native.yaml",
        "id: big-purchase\ntitle: Big purchase\nstream: shop\nmatch: {field: amount, gt: 1000}\n",
    );
    let import = |dir: &std::path::Path| {
        Command::new(binary())
            .args(["rules", "import"])
            .arg(dir)
            .args(["--server", &server.url])
            .output()
            .expect("run import")
    };
    let output = import(&rules);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("2 loaded, 0 refused"), "{stdout}");
    // Importing again replaces (PUT) instead of failing on existing ids.
    let again = import(&rules);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    write(
        &rules,
        "correlation.yml",
        "title: Many logins\nid: 11111111-2222-3333-4444-555555555555\ncorrelation:\n    type: event_count\n    rules:\n        - 8f1e3a62-9b7d-4c1e-a1c2-3b4d5e6f7a80\n    group-by:\n        - sourceIPAddress\n    timespan: 10m\n    condition:\n        gte: 5\n",
    );
    // A correlation over a loaded rule loads; one over a rule nobody loaded is refused,
    // naming the reference.
    let output = import(&rules);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("3 loaded, 0 refused"), "{stdout}");
    write(
        &rules,
        "missing.yml",
        "title: Many things\nid: 11111111-2222-3333-4444-666666666666\ncorrelation:\n    type: event_count\n    rules:\n        - no-such-rule\n    timespan: 10m\n    condition:\n        gte: 5\n",
    );
    let output = import(&rules);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("3 loaded, 1 refused"), "{stdout}");
    let refused_line = stdout
        .lines()
        .find(|l| l.starts_with("refused"))
        .unwrap_or_default();
    assert!(
        refused_line.contains("missing.yml")
            && refused_line.contains("refers to rule `no-such-rule`"),
        "{stdout}"
    );
    let (_, listed) = server.get("/api/v1/rules").await;
    assert_eq!(listed.as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigma_files_in_the_rules_directory_load_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    write(&rules, "root.yml", ROOT_LOGIN);
    let rules_arg = rules.to_string_lossy().to_string();
    let server = Server::start(&dir.path().join("data"), None, &["--rules-dir", &rules_arg]);
    let (status, rule) = server
        .get("/api/v1/rules/8f1e3a62-9b7d-4c1e-a1c2-3b4d5e6f7a80")
        .await;
    assert_eq!(status, 200, "{rule}");
    assert_eq!(rule["stream"], "cloudtrail");
    assert_eq!(
        rule["match"]["condition"], "selection and not 1 of filter_*",
        "the Sigma condition is kept as written: {rule}"
    );

    // Subfolders are read too (SigmaHQ's layout), and a rule disabled through the API stays
    // disabled when its unchanged file is loaded again at the next start (Sigma has no field
    // for it).
    let nested = ROOT_LOGIN
        .replace(
            "8f1e3a62-9b7d-4c1e-a1c2-3b4d5e6f7a80",
            "0c4b2d9e-1a2b-4c3d-9e8f-7a6b5c4d3e2f",
        )
        .replace("Root Console Login", "Nested Root Login");
    write(&rules.join("cloud").join("aws"), "nested.yml", &nested);
    let disabled = server
        .client
        .post(format!(
            "{}/api/v1/rules/8f1e3a62-9b7d-4c1e-a1c2-3b4d5e6f7a80/disable",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    assert!(server.terminate());
    let server = Server::start(&dir.path().join("data"), None, &["--rules-dir", &rules_arg]);
    let (_, rule) = server
        .get("/api/v1/rules/8f1e3a62-9b7d-4c1e-a1c2-3b4d5e6f7a80")
        .await;
    assert_eq!(rule["enabled"], false, "{rule}");
    let (status, rule) = server
        .get("/api/v1/rules/0c4b2d9e-1a2b-4c3d-9e8f-7a6b5c4d3e2f")
        .await;
    assert_eq!(status, 200, "the rule of the subfolder: {rule}");
    assert_eq!(rule["enabled"], true, "{rule}");
}
