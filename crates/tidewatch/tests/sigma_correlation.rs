//! Sigma correlation rules end to end: each type (event_count, value_count, temporal,
//! temporal_ordered) posted unmodified with its base rules in one multi-document file (or
//! referring to a stored rule by id), evaluated on the stream, raising exactly the alerts a
//! straightforward reference computation in this test expects over deterministic
//! pseudo-random CloudTrail-like logins. Refusals name what they refuse and store nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::Server;
use serde_json::{Value, json};

const FAILED_ID: &str = "6b0f8e52-1d9a-4a57-9a3e-0c1f5a7e2b01";
const SUCCESS_ID: &str = "6b0f8e52-1d9a-4a57-9a3e-0c1f5a7e2b02";

fn failed() -> String {
    format!(
        "title: Failed console login\nid: {FAILED_ID}\nname: failed_login\nlogsource:\n    product: aws\n    service: cloudtrail\ndetection:\n    selection:\n        eventName: ConsoleLogin\n        responseElements.ConsoleLogin: Failure\n    condition: selection\nlevel: low\n"
    )
}

fn success() -> String {
    format!(
        "title: Successful console login\nid: {SUCCESS_ID}\nname: successful_login\nlogsource:\n    product: aws\n    service: cloudtrail\ndetection:\n    selection:\n        eventName: ConsoleLogin\n        responseElements.ConsoleLogin: Success\n    condition: selection\nlevel: low\n"
    )
}

fn correlation(id: &str, body: &str) -> String {
    format!("title: Correlation {id}\nid: {id}\nlevel: high\ncorrelation:\n{body}")
}

/// One login: (seconds, user, kind 0 = failed, 1 = success, 2 = other, source IP).
type Login = (i64, usize, u8, usize);

/// Deterministic pseudo-random logins, strictly increasing in time.
fn logins(count: usize) -> Vec<Login> {
    let mut state: u64 = 0x5eed_1234;
    let mut next = |bound: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % bound
    };
    let mut time = 0;
    (0..count)
        .map(|_| {
            time += 1 + next(12) as i64;
            let kind = match next(20) {
                0..=8 => 0,
                9..=12 => 1,
                _ => 2,
            };
            (time, next(4) as usize, kind, next(4) as usize)
        })
        .collect()
}

fn event(login: &Login) -> Value {
    let (seconds, user, kind, ip) = *login;
    let (name, outcome) = match kind {
        0 => ("ConsoleLogin", "Failure"),
        1 => ("ConsoleLogin", "Success"),
        _ => ("GetObject", "Success"),
    };
    json!({
        "eventName": name,
        "responseElements": {"ConsoleLogin": outcome},
        "userIdentity": {"userName": format!("user{user}")},
        "sourceIPAddress": format!("198.51.100.{ip}"),
        "eventTime": format!("2024-03-01T{:02}:{:02}:{:02}Z", seconds / 3600, seconds / 60 % 60, seconds % 60),
    })
}

/// Per user: failed logins ≥ 3 within a sliding span shorter than 60 s; the events that fire
/// start the count afresh.
fn expected_event_count(logins: &[Login]) -> usize {
    let mut times: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let mut alerts = 0;
    for &(t, user, kind, _) in logins {
        if kind != 0 {
            continue;
        }
        let list = times.entry(user).or_default();
        list.push(t);
        if list.len() >= 3 && t - list[list.len() - 3] < 60 {
            alerts += 1;
            list.clear();
        }
    }
    alerts
}

/// Per user: more than 2 distinct source IPs of failed logins within the 120 s up to a login;
/// then afresh.
fn expected_value_count(logins: &[Login]) -> usize {
    let mut seen: BTreeMap<usize, Vec<(i64, usize)>> = BTreeMap::new();
    let mut alerts = 0;
    for &(t, user, kind, ip) in logins {
        if kind != 0 {
            continue;
        }
        let list = seen.entry(user).or_default();
        list.push((t, ip));
        let ips: BTreeSet<usize> = list
            .iter()
            .filter(|(time, _)| *time > t - 120)
            .map(|(_, ip)| *ip)
            .collect();
        if ips.len() > 2 {
            alerts += 1;
            list.clear();
        }
    }
    alerts
}

/// Per user: a failed and a successful login at most 30 s apart — failed first when
/// `ordered` — each event used by one alert, the earliest possible pair first.
fn expected_temporal(logins: &[Login], ordered: bool) -> usize {
    let mut pending: BTreeMap<usize, Vec<(i64, u8)>> = BTreeMap::new();
    let mut alerts = 0;
    for &(t, user, kind, _) in logins {
        if kind == 2 {
            continue;
        }
        let list = pending.entry(user).or_default();
        list.push((t, kind));
        'search: for i in 0..list.len() {
            let (start, first_kind) = list[i];
            if ordered && first_kind != 0 {
                continue;
            }
            for j in i + 1..list.len() {
                let (time, kind) = list[j];
                if time - start > 30 {
                    break;
                }
                if kind != first_kind {
                    alerts += 1;
                    list.remove(j);
                    list.remove(i);
                    break 'search;
                }
            }
        }
    }
    alerts
}

async fn post(server: &Server, body: &str) -> (u16, Value) {
    let response = server
        .client
        .post(format!("{}/api/v1/rules", server.url))
        .header("content-type", "application/yaml")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_correlation_type_raises_exactly_its_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, &[]);
    let by_user = "    group-by:\n        - userIdentity.userName\n";
    // temporal, with generate: the base rules are stored too and alert on their own.
    let temporal = [
        correlation(
            "corr-temporal",
            &format!("    type: temporal\n    rules:\n        - failed_login\n        - successful_login\n{by_user}    timespan: 30s\n    generate: true\n"),
        ),
        failed(),
        success(),
    ]
    .join("---\n");
    let (status, body) = post(&server, &temporal).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "corr-temporal");
    assert_eq!(body["sequence"]["ordered"], false);
    assert_eq!(body["also_stored"], json!([FAILED_ID, SUCCESS_ID]));
    // temporal_ordered and event_count: base rules in the file, not stored themselves.
    for (id, body) in [
        (
            "corr-ordered",
            format!(
                "    type: temporal_ordered\n    rules:\n        - failed_login\n        - successful_login\n{by_user}    timespan: 30s\n"
            ),
        ),
        (
            "corr-count",
            format!(
                "    type: event_count\n    rules:\n        - failed_login\n{by_user}    timespan: 1m\n    condition:\n        gte: 3\n"
            ),
        ),
    ] {
        // A rule of the file no correlation refers to would be stored on its own: the
        // event_count file holds only its base rule.
        let mut parts = vec![correlation(id, &body), failed()];
        if id == "corr-ordered" {
            parts.push(success());
        }
        let file = parts.join("---\n");
        let (status, answer) = post(&server, &file).await;
        assert_eq!(status, 201, "{answer}");
        assert!(answer.get("also_stored").is_none(), "{answer}");
    }
    // value_count over the stored rule, referred to by its id.
    let value_count = correlation(
        "corr-values",
        &format!(
            "    type: value_count\n    rules:\n        - {FAILED_ID}\n{by_user}    timespan: 2m\n    condition:\n        field: sourceIPAddress\n        gt: 2\n"
        ),
    );
    let (status, answer) = post(&server, &value_count).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["distinct"]["field"], "sourceIPAddress");
    assert_eq!(answer["stream"], "cloudtrail");

    // Refusals: a reference nobody defines; rules of different streams; a range. Nothing
    // of a refused file is stored.
    let (status, answer) = post(
        &server,
        &correlation(
            "corr-missing",
            "    type: event_count\n    rules: [nowhere]\n    timespan: 1m\n    condition: {gte: 3}\n",
        ),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("refers to rule `nowhere`"),
        "{answer}"
    );
    let other_stream = failed()
        .replace(FAILED_ID, "6b0f8e52-1d9a-4a57-9a3e-0c1f5a7e2b09")
        .replace("name: failed_login", "name: win")
        .replace(
            "product: aws\n    service: cloudtrail",
            "product: windows\n    service: security",
        );
    let mixed = [
        correlation(
            "corr-mixed",
            "    type: temporal\n    rules: [win, successful_login]\n    timespan: 1m\n    generate: true\n",
        ),
        other_stream,
        success().replace(SUCCESS_ID, "6b0f8e52-1d9a-4a57-9a3e-0c1f5a7e2b0a"),
    ]
    .join("---\n");
    let (status, answer) = post(&server, &mixed).await;
    assert_eq!(status, 422);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("different streams"),
        "{answer}"
    );
    let (_, rules) = server.get("/api/v1/rules").await;
    let ids: BTreeSet<&str> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            "corr-count",
            "corr-ordered",
            "corr-temporal",
            "corr-values",
            FAILED_ID,
            SUCCESS_ID
        ])
    );

    // One partition: the events reach detection in the order of their event time, as the
    // reference computation reads them (across partitions, a later partition's older events
    // would come after the watermark passed them).
    let created = server
        .client
        .put(format!("{}/api/v1/streams/cloudtrail", server.url))
        .json(&json!({"partitions": 1, "event_time_field": "eventTime"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "{}", created.text().await.unwrap());
    let logins = logins(400);
    let body: Vec<String> = logins.iter().map(|l| event(l).to_string()).collect();
    assert_eq!(server.send("cloudtrail", body.join("\n")).await.0, 200);
    server
        .eventually(
            "detection evaluated every event",
            Duration::from_secs(15),
            || async {
                let (_, metrics) = server.get_text("/metrics").await;
                metrics.lines().any(|l| {
                    l.starts_with("tidewatch_events_evaluated_total{stream=\"cloudtrail\"} ")
                        && l.ends_with(" 400")
                })
            },
        )
        .await;
    let expected = [
        ("corr-count", expected_event_count(&logins)),
        ("corr-values", expected_value_count(&logins)),
        ("corr-temporal", expected_temporal(&logins, false)),
        ("corr-ordered", expected_temporal(&logins, true)),
        (FAILED_ID, logins.iter().filter(|l| l.2 == 0).count()),
        (SUCCESS_ID, logins.iter().filter(|l| l.2 == 1).count()),
    ];
    for (rule, count) in expected {
        assert!(count > 0, "the data gives {rule} something to find");
    }
    // Alerts are stored shortly after evaluation: wait (bounded) until every rule has its
    // count, then compare all of them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut got = Vec::new();
        for (rule, _) in expected {
            got.push(server.alerts(Some(rule)).await.len());
        }
        let done = expected
            .iter()
            .zip(&got)
            .all(|((_, want), got)| got >= want);
        if done || std::time::Instant::now() > deadline {
            let want: Vec<(&str, usize)> = expected.to_vec();
            let have: Vec<(&str, usize)> = expected.iter().map(|(r, _)| *r).zip(got).collect();
            assert_eq!(have, want, "alerts per rule (got, expected)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (rule, count) in expected {
        let alerts = server.alerts(Some(rule)).await;
        assert_eq!(alerts.len(), count, "alerts of {rule}");
        if rule.starts_with("corr-") {
            for alert in &alerts {
                let user = alert["group"]["userIdentity.userName"].as_str();
                assert!(
                    user.is_some_and(|u| u.starts_with("user")),
                    "{rule}: {alert}"
                );
                assert!(
                    !alert["event_refs"].as_array().unwrap().is_empty(),
                    "{rule}: {alert}"
                );
                assert_eq!(alert["severity"], "high");
            }
        }
    }
}
