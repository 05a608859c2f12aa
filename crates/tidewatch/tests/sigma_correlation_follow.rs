//! A Sigma correlation over a stored rule follows that rule: edited (without a restart, and
//! again after one), the correlation is translated again and stored as a new version (in its
//! history, by the editor, with the reason), and new events count per the rule's new
//! condition, old ones no longer; disabled, the rule still counts for the correlation; in use,
//! it cannot be deleted (409 naming the correlation).
//!
//! Regression: the correlation kept a copy of the base rule's condition taken when it was
//! stored, so an edit of the base rule never reached it.
//!
//! The same holds for a correlation posted on its own that refers to a stored rule by the
//! rule's Sigma `name` (as the Sigma specification allows); a name two stored rules have, or
//! none, is refused naming it, and from `--rules-dir` (files load one by one) the reference
//! works whatever the order of the files. Regression: a reference by name resolved only to a
//! rule of the correlation's own file (`neither in the same file ... nor loaded (by id)`).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::Server;
use serde_json::{Value, json};

const BASE: &str = "5d7c1a0e-2b6f-4c1e-9a8d-3f4e5a6b7c01";
const CORRELATION: &str = "corr-repeated";
const NAME: &str = "denied_call";

/// The base rule: a CloudTrail event with this name and error code.
fn base(event_name: &str) -> String {
    format!(
        "title: Denied {event_name}\nid: {BASE}\nlogsource:\n    product: aws\n    service: cloudtrail\ndetection:\n    selection:\n        eventName: {event_name}\n        errorCode: AccessDenied\n    condition: selection\nlevel: low\n"
    )
}

/// Twice the base rule's events for one user within a minute.
fn correlation() -> String {
    format!(
        "title: Repeated denials\nid: {CORRELATION}\nlevel: high\ncorrelation:\n    type: event_count\n    rules:\n        - {BASE}\n    group-by:\n        - userIdentity.userName\n    timespan: 1m\n    condition:\n        gte: 2\n"
    )
}

/// The base rule, named [`NAME`]: a CloudTrail event with this name and error code.
fn named_base(id: &str, event_name: &str) -> String {
    format!(
        "title: Denied {event_name}\nid: {id}\nname: {NAME}\nlogsource:\n    product: aws\n    service: cloudtrail\ndetection:\n    selection:\n        eventName: {event_name}\n        errorCode: AccessDenied\n    condition: selection\nlevel: low\n"
    )
}

/// Twice the events of the rule `reference` for one user within a minute.
fn correlation_referring(id: &str, reference: &str) -> String {
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

/// Stores `rule` (YAML) as the new version of the base rule, by `who`.
async fn put_base(server: &Server, rule: String, who: &str) -> Value {
    let response = server
        .client
        .put(format!("{}/api/v1/rules/{BASE}", server.url))
        .header("content-type", "application/yaml")
        .header("x-tidewatch-user", who)
        .body(rule)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Asks to delete the base rule: the answer's status and error message.
async fn delete_base(server: &Server) -> (u16, String) {
    let response = server
        .client
        .delete(format!("{}/api/v1/rules/{BASE}", server.url))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or_default();
    (status, error_of(&answer))
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

/// The stored correlation's `match`, as JSON text.
async fn correlation_match(server: &Server) -> String {
    let (_, rule) = server.get(&format!("/api/v1/rules/{CORRELATION}")).await;
    rule["match"].to_string()
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

/// A server whose `cloudtrail` stream has one partition: events reach detection in
/// event-time order.
async fn start_with_one_partition(dir: &std::path::Path) -> Server {
    let server = Server::start(dir, None, &[]);
    let created = server
        .client
        .put(format!("{}/api/v1/streams/cloudtrail", server.url))
        .json(&json!({"partitions": 1, "event_time_field": "eventTime"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlation_follows_an_edit_of_its_stored_base_rule() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_one_partition(dir.path()).await;
    let (status, answer) = server.post_rule(&base("ConsoleLogin")).await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = server.post_rule(&correlation()).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["version"], 1);
    assert_eq!(
        server
            .send("cloudtrail", pair("ConsoleLogin", "alice").join("\n"))
            .await
            .0,
        200
    );
    wait_for_alert(&server, "alice").await;

    // Edit the base rule: GetObject instead of ConsoleLogin. New events count per the new
    // condition; the old condition's no longer.
    let answer = put_base(&server, base("GetObject"), "bob").await;
    let mut events = pair("ConsoleLogin", "bob");
    events.extend(pair("GetObject", "carol"));
    assert_eq!(server.send("cloudtrail", events.join("\n")).await.0, 200);
    wait_evaluated(&server, 6).await;
    wait_for_alert(&server, "carol").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        alerted(&server).await,
        BTreeSet::from(["alice".into(), "carol".into()])
    );
    // The correlation's new version: in the answer to the edit, and in its history.
    assert_eq!(
        answer["correlations_updated"],
        json!([CORRELATION]),
        "{answer}"
    );
    let (_, history) = server
        .get(&format!("/api/v1/rules/{CORRELATION}/history"))
        .await;
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["version"], &last["action"], &last["who"]),
        (&json!(2), &json!("update"), &json!("bob")),
        "{last}"
    );
    assert_eq!(
        last["reason"],
        format!("base rule {BASE} (now version 2) changed"),
        "{last}"
    );

    // Disabled, the base rule still counts for the correlation (Sigma's semantics): no new
    // version of the correlation, and it still fires.
    let disabled = server
        .client
        .post(format!("{}/api/v1/rules/{BASE}/disable", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    assert_eq!(
        server.get(&format!("/api/v1/rules/{CORRELATION}")).await.1["version"],
        2
    );
    assert_eq!(
        server
            .send("cloudtrail", pair("GetObject", "dave").join("\n"))
            .await
            .0,
        200
    );
    wait_for_alert(&server, "dave").await;

    // In use, the base rule is not deleted.
    let (status, message) = delete_base(&server).await;
    assert_eq!(status, 409);
    assert!(message.contains(CORRELATION), "{message}");
    assert_eq!(server.get(&format!("/api/v1/rules/{BASE}")).await.0, 200);

    // After a restart: the stored versions, and the correlation still follows.
    assert!(server.terminate());
    let server = Server::start(dir.path(), None, &[]);
    let (_, stored) = server.get(&format!("/api/v1/rules/{CORRELATION}")).await;
    assert_eq!(stored["version"], 2, "{stored}");
    let answer = put_base(&server, base("DeleteObject"), "erin").await;
    assert_eq!(
        answer["correlations_updated"],
        json!([CORRELATION]),
        "{answer}"
    );
    assert_eq!(answer["rule"]["enabled"], false, "disabled stays disabled");
    let mut events = pair("GetObject", "frank");
    events.extend(pair("DeleteObject", "grace"));
    assert_eq!(server.send("cloudtrail", events.join("\n")).await.0, 200);
    wait_for_alert(&server, "grace").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!alerted(&server).await.contains("frank"));
    let (_, history) = server
        .get(&format!("/api/v1/rules/{CORRELATION}/history"))
        .await;
    let versions: Vec<(u64, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["version"].as_u64().unwrap(), c["who"].as_str().unwrap()))
        .collect();
    assert_eq!(versions, [(1, "anonymous"), (2, "bob"), (3, "erin")]);

    // Once the correlation is gone, so can the base rule be.
    for id in [CORRELATION, BASE] {
        let deleted = server
            .client
            .delete(format!("{}/api/v1/rules/{id}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 200, "{id}");
    }
}

/// Loaded from `--rules-dir`, a correlation follows too: an edit of its base rule through
/// the API reaches it, and at the next start the base rule's file (loaded again) brings both
/// back to the files' versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlation_of_the_rules_dir_follows_its_base_rule() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    common::write(&rules, "base.yml", &base("ConsoleLogin"));
    common::write(&rules, "correlation.yml", &correlation());
    let rules_arg = rules.display().to_string();
    let data = dir.path().join("data");
    let server = Server::start(&data, None, &["--rules-dir", &rules_arg]);
    let loaded = correlation_match(&server).await;
    assert!(loaded.contains("ConsoleLogin"), "{loaded}");
    let answer = put_base(&server, base("GetObject"), "bob").await;
    assert_eq!(
        answer["correlations_updated"],
        json!([CORRELATION]),
        "{answer}"
    );
    let followed = correlation_match(&server).await;
    assert!(
        followed.contains("GetObject") && !followed.contains("ConsoleLogin"),
        "{followed}"
    );

    assert!(server.terminate());
    let server = Server::start(&data, None, &["--rules-dir", &rules_arg]);
    let again = correlation_match(&server).await;
    assert!(
        again.contains("ConsoleLogin") && !again.contains("GetObject"),
        "{again}"
    );
    let (_, history) = server
        .get(&format!("/api/v1/rules/{CORRELATION}/history"))
        .await;
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["version"], 3, "{last}");
    assert!(
        last["who"].as_str().unwrap().ends_with("base.yml"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correlation_posted_alone_refers_to_a_stored_rule_by_its_sigma_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with_one_partition(dir.path()).await;

    // Stored with its name, then referred to by it alone.
    let (status, answer) = server.post_rule(&named_base(BASE, "ConsoleLogin")).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["sigma_name"], NAME, "{answer}");
    let (status, answer) = server
        .post_rule(&correlation_referring(CORRELATION, NAME))
        .await;
    assert_eq!(status, 201, "{answer}");
    send_events(&server, pair("ConsoleLogin", "alice")).await;
    wait_for_alert(&server, "alice").await;

    // An edit of the base rule reaches the correlation: GetObject counts, ConsoleLogin no more.
    let answer = put_base(&server, named_base(BASE, "GetObject"), "bob").await;
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
    let (status, message) = delete_base(&server).await;
    assert_eq!(status, 409);
    assert!(message.contains(CORRELATION), "{message}");

    // A second rule with the same name: a new reference to the name is ambiguous, and refused
    // naming both rules; the stored correlation keeps following the rule it resolved to.
    let other = "0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f";
    let (status, answer) = server.post_rule(&named_base(other, "DeleteObject")).await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = server
        .post_rule(&correlation_referring("corr-2", NAME))
        .await;
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
    let (status, answer) = server
        .post_rule(&correlation_referring("corr-3", "nobody"))
        .await;
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
    common::write(
        &rules,
        "a_correlation.yml",
        &correlation_referring(CORRELATION, NAME),
    );
    common::write(&rules, "b_base.yml", &named_base(BASE, "ConsoleLogin"));
    let rules_arg = rules.display().to_string();
    let server = Server::start(&dir.path().join("data"), None, &["--rules-dir", &rules_arg]);
    let (status, rule) = server.get(&format!("/api/v1/rules/{CORRELATION}")).await;
    assert_eq!(status, 200, "{rule}");
    let condition = rule["match"].to_string();
    assert!(condition.contains("ConsoleLogin"), "{condition}");
    // It follows the rule it named: deleting that rule is refused.
    assert_eq!(delete_base(&server).await.0, 409);
}
