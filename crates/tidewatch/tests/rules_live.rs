//! Rules change live (no restart), every change is versioned with its author, and a rule can
//! be dry-run on given events or on stored ones.

mod common;

use std::time::Duration;

use common::Server;
use serde_json::{Value, json};

fn events(name: &str, count: usize, start: usize) -> String {
    (start..start + count)
        .map(|i| {
            format!(
                r#"{{"eventName":"{name}","n":{i},"eventTime":"2024-03-01T00:00:{:02}Z"}}"#,
                i % 60
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_apply_live_are_versioned_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, &[]);
    let post_yaml = |body: &'static str| {
        server
            .client
            .post(format!("{}/api/v1/rules", server.url))
            .header("content-type", "application/yaml")
            .header("x-tidewatch-user", "alice")
            .body(body)
            .send()
    };
    let created = post_yaml("id: watch\ntitle: Watch X\nstream: app\nseverity: high\nmatch: { field: eventName, equals: X }\n").await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.json::<Value>().await.unwrap()["version"], 1);

    // A new rule applies to the next events within a second or so, without a restart.
    assert_eq!(server.send("app", events("X", 10, 0)).await.0, 200);
    server
        .eventually("10 alerts for X", Duration::from_secs(5), || async {
            server.alerts(Some("watch")).await.len() == 10
        })
        .await;

    // Change it: now only Y matches.
    let changed = server
        .client
        .put(format!("{}/api/v1/rules/watch", server.url))
        .header("x-tidewatch-user", "bob")
        .json(&json!({"id": "watch", "title": "Watch Y", "stream": "app", "severity": "high", "match": {"field": "eventName", "equals": "Y"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(
        (
            changed["rule"]["version"].as_u64(),
            changed["state_reset"].as_bool()
        ),
        (Some(2), Some(true)),
        "{changed}"
    );
    assert_eq!(
        server
            .send(
                "app",
                format!("{}\n{}", events("X", 5, 100), events("Y", 3, 200))
            )
            .await
            .0,
        200
    );
    server
        .eventually("3 alerts for Y", Duration::from_secs(5), || async {
            server.alerts(Some("watch")).await.len() == 13
        })
        .await;
    let titles: Vec<String> = server
        .alerts(Some("watch"))
        .await
        .iter()
        .map(|a| a["rule_title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(titles.iter().filter(|t| *t == "Watch Y").count(), 3);

    // Disabled: nothing more fires.
    assert_eq!(
        server
            .client
            .post(format!("{}/api/v1/rules/watch/disable", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.send("app", events("Y", 4, 300)).await.0, 200);
    // Only once detection has evaluated all 22 events is "no new alert" meaningful.
    server
        .eventually(
            "detection evaluated all 22 events",
            Duration::from_secs(10),
            || async {
                let (_, metrics) = server.get_text("/metrics").await;
                metrics.lines().any(|l| {
                    l.starts_with("tidewatch_events_evaluated_total{stream=\"app\"} ")
                        && l.ends_with(" 22")
                })
            },
        )
        .await;
    assert_eq!(
        server.alerts(Some("watch")).await.len(),
        13,
        "a disabled rule raised alerts"
    );

    // History: who, what, before and after.
    let (_, history) = server.get("/api/v1/rules/watch/history").await;
    let actions: Vec<(&str, &str, u64)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap(),
                c["who"].as_str().unwrap(),
                c["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("create", "alice", 1),
            ("update", "bob", 2),
            ("disable", "anonymous", 3)
        ]
    );
    assert_eq!(history[1]["before"]["title"], "Watch X");

    // Dry-run on inline events, and on the stored events of a time range.
    let (status, dry) = post_json(
        &server,
        "/api/v1/rules/test",
        json!({
            "rule": "id: t\ntitle: t\nstream: app\nmatch: { field: n, gte: 2 }\n",
            "events": [{"n": 1}, {"n": 2}, {"n": 3}]
        }),
    )
    .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["alerts"].as_array().unwrap().len(), 2);
    let (status, stored) = post_json(&server, "/api/v1/rules/test", json!({
        "rule": {"id": "t2", "title": "t2", "stream": "app", "match": {"field": "eventName", "equals": "X"}},
        "from": 0
    }))
    .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["evaluated"], 22);
    assert_eq!(stored["alerts"].as_array().unwrap().len(), 15);

    // Invalid rules are refused with a message naming the problem; nothing half-loaded.
    let bad =
        post_yaml("id: bad\ntitle: b\nstream: app\nmatch: { field: ip, cidr: 10.0.0.0/33 }\n")
            .await
            .unwrap();
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.unwrap().contains("10.0.0.0/33"));
    assert_eq!(server.get("/api/v1/rules/bad").await.0, 404);

    assert_eq!(
        server
            .client
            .delete(format!("{}/api/v1/rules/watch", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.get("/api/v1/rules/watch").await.0, 404);
}

async fn post_json(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let response = server
        .client
        .post(format!("{}{path}", server.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}
