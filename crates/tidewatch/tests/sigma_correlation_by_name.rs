//! A Sigma correlation posted on its own refers to a rule stored earlier by that rule's Sigma
//! `name` (as the Sigma specification allows): it alerts on the rule's events, follows an edit
//! of the rule, and keeps the rule from being deleted (409); a name two stored rules have, or
//! none, is refused naming it. Loaded from `--rules-dir`, where files load one by one, the
//! same reference works whatever the order of the files.
//!
//! Regression: a reference by name resolved only to a rule of the correlation's own file, so
//! such a correlation was refused (`neither in the same file ... nor loaded (by id)`).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::Server;
use serde_json::{Value, json};

const BASE: &str = "7a1c2e3f-4b5d-4e6f-9a0b-1c2d3e4f5a6b";
const NAME: &str = "denied_call";
const CORRELATION: &str = "corr-denied-twice";

/// The base rule, named [`NAME`]: a CloudTrail event with this name and error code.
fn base(id: &str, event_name: &str) -> String {
    format!(
        "title: Denied {event_name}\nid: {id}\nname: {NAME}\nlogsource:\n    product: aws\n    service: cloudtrail\ndetection:\n    selection:\n        eventName: {event_name}\n        errorCode: AccessDenied\n    condition: selection\nlevel: low\n"
    )
}

/// Twice the events of the rule `reference` for one user within a minute.
fn correlation(id: &str, reference: &str) -> String {
    format!(
        "title: Denied twice\nid: {id}\nlevel: high\ncorrelation:\n    type: event_count\n    rules:\n        - {reference}\n    group-by:\n        - userIdentity.userName\n    timespan: 1m\n    condition:\n        gte: 2\n"
    )
}

/// Event times strictly increase across the whole test (detection runs in event time).
static SECONDS: AtomicU64 = AtomicU64::new(0);

/// Two denied `event_name` events of `user`.
fn pair(event_name: &str, user: &str) -> Vec<String> {
    (0..2)
        .map(|_| {
            let s = SECONDS.fetch_add(1, Ordering::Relaxed);
            json!({
                "eventName": event_name,
                "errorCode": "AccessDenied",
                "userIdentity": {"userName": user},
                "eventTime": format!("2024-03-01T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60),
            })
            .to_string()
        })
        .collect()
}

/// The users the correlation alerted for.
async fn alerted(server: &Server) -> BTreeSet<String> {
    server
        .alerts(Some(CORRELATION))
        .await
        .iter()
        .map(|a| {
            a["group"]["userIdentity.userName"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

async fn wait_for_alert(server: &Server, user: &str) {
    server
        .eventually(
            &format!("a correlation alert for {user}"),
            Duration::from_secs(10),
            || async { alerted(server).await.contains(user) },
        )
        .await;
}

async fn wait_evaluated(server: &Server, count: usize) {
    let line = format!("tidewatch_events_evaluated_total{{stream=\"cloudtrail\"}} {count}");
    server
        .eventually(
            &format!("detection evaluated {count} events"),
            Duration::from_secs(15),
            || async {
                server
                    .get_text("/metrics")
                    .await
                    .1
                    .lines()
                    .any(|l| l == line)
            },
        )
        .await;
}

async fn send_events(server: &Server, events: Vec<String>) {
    assert_eq!(server.send("cloudtrail", events.join("\n")).await.0, 200);
}

/// The error message of a refused request.
fn error_of(answer: &Value) -> String {
    answer["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlation_posted_alone_refers_to_a_stored_rule_by_its_sigma_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, &[]);
    // One partition: events reach detection in event-time order.
    let created = server
        .client
        .put(format!("{}/api/v1/streams/cloudtrail", server.url))
        .json(&json!({"partitions": 1, "event_time_field": "eventTime"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);

    // Stored with its name, then referred to by it alone.
    let (status, answer) = server.post_rule(&base(BASE, "ConsoleLogin")).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["sigma_name"], NAME, "{answer}");
    let (status, answer) = server.post_rule(&correlation(CORRELATION, NAME)).await;
    assert_eq!(status, 201, "{answer}");
    send_events(&server, pair("ConsoleLogin", "alice")).await;
    wait_for_alert(&server, "alice").await;

    // An edit of the base rule reaches the correlation: GetObject counts, ConsoleLogin no more.
    let response = server
        .client
        .put(format!("{}/api/v1/rules/{BASE}", server.url))
        .header("content-type", "application/yaml")
        .header("x-tidewatch-user", "bob")
        .body(base(BASE, "GetObject"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["correlations_updated"],
        json!([CORRELATION]),
        "{answer}"
    );
    let mut events = pair("ConsoleLogin", "bob");
    events.extend(pair("GetObject", "carol"));
    send_events(&server, events).await;
    wait_evaluated(&server, 6).await;
    wait_for_alert(&server, "carol").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        alerted(&server).await,
        BTreeSet::from(["alice".into(), "carol".into()])
    );
    let (_, history) = server
        .get(&format!("/api/v1/rules/{CORRELATION}/history"))
        .await;
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["reason"],
        format!("base rule {BASE} (now version 2) changed"),
        "{last}"
    );

    // In use, the base rule is not deleted.
    let refused = server
        .client
        .delete(format!("{}/api/v1/rules/{BASE}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let message = error_of(&refused.json().await.unwrap());
    assert!(message.contains(CORRELATION), "{message}");

    // A second rule with the same name: a new reference to the name is ambiguous, and refused
    // naming both rules; the stored correlation keeps following the rule it resolved to.
    let other = "0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f";
    let (status, answer) = server.post_rule(&base(other, "DeleteObject")).await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = server.post_rule(&correlation("corr-2", NAME)).await;
    assert_eq!(status, 422, "{answer}");
    let message = error_of(&answer);
    assert!(
        message.contains(&format!(
            "`{NAME}`, a name that several stored rules have ({other}, {BASE})"
        )),
        "{message}"
    );
    assert_eq!(server.get("/api/v1/rules/corr-2").await.0, 404);
    // A name no rule has is refused naming it.
    let (status, answer) = server.post_rule(&correlation("corr-3", "nobody")).await;
    assert_eq!(status, 422, "{answer}");
    let message = error_of(&answer);
    assert!(
        message.contains("refers to rule `nobody`, which is neither"),
        "{message}"
    );
}

/// `--rules-dir` loads files one by one: a correlation file that sorts before the file of the
/// rule it names is loaded once that rule is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlation_of_the_rules_dir_refers_to_a_rule_of_another_file_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    common::write(&rules, "a_correlation.yml", &correlation(CORRELATION, NAME));
    common::write(&rules, "b_base.yml", &base(BASE, "ConsoleLogin"));
    let rules_arg = rules.display().to_string();
    let server = Server::start(&dir.path().join("data"), None, &["--rules-dir", &rules_arg]);
    let (status, rule) = server.get(&format!("/api/v1/rules/{CORRELATION}")).await;
    assert_eq!(status, 200, "{rule}");
    let condition = rule["match"].to_string();
    assert!(condition.contains("ConsoleLogin"), "{condition}");
    // It follows the rule it named: deleting that rule is refused.
    let refused = server
        .client
        .delete(format!("{}/api/v1/rules/{BASE}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
}
