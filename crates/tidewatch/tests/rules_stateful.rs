//! Every stateful rule kind end to end over HTTP against a real server: sliding threshold,
//! tumbling "below" threshold, distinct count, sequence with out-of-order arrival, new value,
//! suppression and shadow mode (stored, never delivered to the file sink), per-rule metrics;
//! then checkpointed state across kill -9: a half-filled window finishes after the restart
//! with exactly one alert, stored once and delivered once.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Server;
use serde_json::{Value, json};

fn config(dir: &Path) -> std::path::PathBuf {
    let sink = dir.join("sink.ndjson");
    common::write(
        dir,
        "tidewatch.toml",
        &format!(
            "[detect]\nallowed_lateness_ms = 120000\n\n[[sinks]]\ntype = \"file\"\nname = \"out\"\npath = \"{}\"\n",
            sink.display()
        ),
    )
}

fn sink_lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("sink.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("sink line"))
        .collect()
}

async fn create(server: &Server, yaml: &str) {
    let (status, body) = server.post_rule(yaml).await;
    assert_eq!(status, 201, "{body}");
}

fn at(seconds: u64) -> String {
    format!("2024-03-01T00:{:02}:{:02}Z", seconds / 60, seconds % 60)
}

fn ndjson(events: &[Value]) -> String {
    events
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The exported counter of a rule, 0 when absent.
async fn rule_metric(server: &Server, name: &str, rule: &str) -> u64 {
    let (_, text) = server.get_text("/metrics").await;
    let prefix = format!("{name}{{rule=\"{rule}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn keys(alerts: &[Value]) -> Vec<String> {
    let mut keys: Vec<String> = alerts
        .iter()
        .map(|a| a["dedup_key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stateful_kind_alerts_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), Some(&config(dir.path())), &[]);
    create(&server, "id: burst\ntitle: Burst\nstream: app\nmatch: {field: kind, equals: buy}\nthreshold: {count: {gt: 2}, window: 1m, sliding: true, group_by: [user]}\n").await;
    create(&server, "id: quiet\ntitle: Host went quiet\nstream: app\nmatch: {field: kind, equals: beat}\nthreshold: {count: {lt: 1}, window: 1m, group_by: [host]}\n").await;
    create(&server, "id: regions\ntitle: Many regions\nstream: app\nmatch: {field: kind, equals: login}\ndistinct: {field: region, count: {gt: 2}, window: 10m, group_by: [user]}\n").await;
    create(&server, "id: open-connect\ntitle: Open then connect\nstream: app\nsequence:\n  by: pid\n  maxspan: 1m\n  steps:\n    - {field: kind, equals: open}\n    - {field: kind, equals: connect}\n").await;
    create(&server, "id: new-country\ntitle: New country\nstream: app\nmatch: {field: kind, equals: login}\nnew_value: {field: country, group_by: [user], history: 30d}\n").await;
    create(&server, "id: noisy\ntitle: Noisy\nstream: app\nmatch: {field: kind, equals: noise}\nsuppress: {for: 10m}\n").await;
    create(&server, "id: trial\ntitle: Shadow\nstream: app\nshadow: true\nmatch: {field: kind, equals: noise}\n").await;

    let ev = |s: u64, fields: Value| {
        let mut event = fields;
        event["eventTime"] = json!(at(s));
        event
    };
    let first = vec![
        // burst: u1 buys at 0:50, 1:10, 1:20 (within one sliding minute, across the tumbling
        // boundary); u2 buys twice only.
        ev(50, json!({"kind": "buy", "user": "u1"})),
        ev(70, json!({"kind": "buy", "user": "u1"})),
        ev(51, json!({"kind": "buy", "user": "u2"})),
        ev(80, json!({"kind": "buy", "user": "u1"})),
        ev(90, json!({"kind": "buy", "user": "u2"})),
        // quiet: hosts a and b beat in the first minute, only b afterwards.
        ev(5, json!({"kind": "beat", "host": "a"})),
        ev(6, json!({"kind": "beat", "host": "b"})),
        ev(65, json!({"kind": "beat", "host": "b"})),
        // regions + new-country: u1 logs in from 3 regions (and 2 countries), u2 from 1.
        ev(
            10,
            json!({"kind": "login", "user": "u1", "region": "eu", "country": "DE"}),
        ),
        ev(
            20,
            json!({"kind": "login", "user": "u1", "region": "us", "country": "DE"}),
        ),
        ev(
            30,
            json!({"kind": "login", "user": "u2", "region": "us", "country": "US"}),
        ),
        ev(
            40,
            json!({"kind": "login", "user": "u1", "region": "ap", "country": "JP"}),
        ),
        // open-connect: pid 7's connect arrives before its open (which happened first);
        // pid 8 connects before it opens (no sequence).
        ev(100, json!({"kind": "connect", "pid": 7})),
        ev(101, json!({"kind": "connect", "pid": 8})),
        ev(102, json!({"kind": "open", "pid": 8})),
        // noisy (suppressed to one) and the shadow rule (stored, not delivered).
        ev(11, json!({"kind": "noise"})),
        ev(12, json!({"kind": "noise"})),
        ev(13, json!({"kind": "noise"})),
    ];
    assert_eq!(server.send("app", ndjson(&first)).await.0, 200);
    // The second request moves the watermark far; it goes in only once the first is evaluated,
    // so no event of the first can be behind that watermark.
    let n = first.len() as u64;
    server
        .eventually(
            "the first request evaluated",
            Duration::from_secs(10),
            || async {
                rule_metric(&server, "tidewatch_rule_events_evaluated_total", "trial").await == n
            },
        )
        .await;
    // pid 7's open, in a later request, 5 s before its connect; then (once that is evaluated)
    // b beats on until the watermark (newest event time - 120 s, the configured lateness) has
    // passed the end of the second minute.
    let second = vec![ev(95, json!({"kind": "open", "pid": 7}))];
    assert_eq!(server.send("app", ndjson(&second)).await.0, 200);
    server
        .eventually(
            "the second request evaluated",
            Duration::from_secs(10),
            || async {
                rule_metric(&server, "tidewatch_rule_events_evaluated_total", "trial").await
                    == n + 1
            },
        )
        .await;
    let third = vec![
        ev(130, json!({"kind": "beat", "host": "b"})),
        ev(250, json!({"kind": "beat", "host": "b"})),
    ];
    assert_eq!(server.send("app", ndjson(&third)).await.0, 200);
    let total = (first.len() + second.len() + third.len()) as u64;
    for rule in [
        "burst",
        "quiet",
        "regions",
        "open-connect",
        "new-country",
        "noisy",
        "trial",
    ] {
        server
            .eventually(
                &format!("{rule} evaluated every event"),
                Duration::from_secs(10),
                || async {
                    rule_metric(&server, "tidewatch_rule_events_evaluated_total", rule).await
                        == total
                },
            )
            .await;
    }
    let base = 1_709_251_200_000i64; // 2024-03-01T00:00:00Z
    let all = server.alerts(None).await;
    let of = |rule: &str| -> Vec<Value> {
        all.iter()
            .filter(|a| a["rule_id"] == rule)
            .cloned()
            .collect()
    };
    // burst: one alert, for u1, over the three buys.
    let burst = of("burst");
    assert_eq!(burst.len(), 1, "{burst:?}");
    assert_eq!(burst[0]["group"]["user"], "u1");
    assert_eq!(burst[0]["value"], 3.0);
    assert_eq!(burst[0]["window"][0], base + 50_000);
    // quiet: a had a beat in [0,1m) and none in [1m,2m).
    assert_eq!(keys(&of("quiet")), [format!("quiet|a|{}", base + 60_000)]);
    // regions: u1 reached 3 distinct regions in the first 10 minutes.
    assert_eq!(keys(&of("regions")), [format!("regions|u1|{base}")]);
    // open-connect: pid 7 only, decided by event time.
    let seq = of("open-connect");
    assert_eq!(seq.len(), 1, "{seq:?}");
    assert_eq!(seq[0]["group"]["pid"], "7");
    assert_eq!(seq[0]["window"][0], base + 95_000);
    // new-country: first sight of each (user, country).
    let mut countries: Vec<String> = of("new-country")
        .iter()
        .map(|a| {
            format!(
                "{}/{}",
                a["group"]["user"].as_str().unwrap(),
                a["group"]["country"].as_str().unwrap()
            )
        })
        .collect();
    countries.sort();
    assert_eq!(countries, ["u1/DE", "u1/JP", "u2/US"]);
    // noisy: three matches, one alert; the two others were suppressed.
    assert_eq!(of("noisy").len(), 1);
    assert_eq!(
        rule_metric(&server, "tidewatch_rule_suppressed_total", "noisy").await,
        2
    );
    assert_eq!(
        rule_metric(&server, "tidewatch_rule_matches_total", "noisy").await,
        3
    );
    // trial (shadow): three alerts stored ...
    assert_eq!(of("trial").len(), 3);
    // ... and none delivered; everything else was delivered exactly once.
    let stored: Vec<String> = keys(
        &all.iter()
            .filter(|a| a["rule_id"] != "trial")
            .cloned()
            .collect::<Vec<_>>(),
    );
    server
        .eventually(
            "the file sink has every non-shadow alert",
            Duration::from_secs(10),
            || async { keys(&sink_lines(dir.path())) == stored },
        )
        .await;
    // State size is exported per rule: three (user, country) pairs are remembered.
    server
        .eventually("state size exported", Duration::from_secs(5), || async {
            rule_metric(&server, "tidewatch_rule_state_keys", "new-country").await == 3
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_filled_window_survives_kill_9_and_fires_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = Server::start(dir.path(), Some(&config), &[]);
    create(&server, "id: five\ntitle: Five\nstream: app\nmatch: {field: kind, equals: x}\nthreshold: {count: {gte: 5}, window: 1h, group_by: [user]}\n").await;
    let ev = |s: u64| json!({"kind": "x", "user": "u", "eventTime": at(s)});
    assert_eq!(
        server.send("app", ndjson(&[ev(1), ev(2), ev(3)])).await.0,
        200
    );
    // Wait until a checkpoint covers the three events (positions summed over partitions).
    let checkpoint = dir.path().join("detect").join("checkpoint.json");
    server
        .eventually(
            "a checkpoint covering 3 events",
            Duration::from_secs(10),
            || async {
                let Ok(bytes) = std::fs::read(&checkpoint) else {
                    return false;
                };
                let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let covered: u64 = value["positions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p[0] == "app")
                    .map(|p| p[2].as_u64().unwrap_or(0))
                    .sum();
                covered == 3
            },
        )
        .await;
    assert!(server.alerts(Some("five")).await.is_empty());
    server.kill9();

    let server = Server::start(dir.path(), Some(&config), &[]);
    assert_eq!(server.send("app", ndjson(&[ev(4), ev(5)])).await.0, 200);
    server
        .eventually(
            "the alert after the restart",
            Duration::from_secs(10),
            || async { server.alerts(Some("five")).await.len() == 1 },
        )
        .await;
    let alert = &server.alerts(Some("five")).await[0];
    assert_eq!(alert["value"], 5.0, "{alert}");
    server
        .eventually(
            "the alert delivered to the file sink",
            Duration::from_secs(10),
            || async {
                sink_lines(dir.path())
                    .iter()
                    .any(|a| a["rule_id"] == "five")
            },
        )
        .await;
    // Kill again once the delivery mark covers the alert (written milliseconds after the
    // delivery; an alert delivered but not yet covered would be sent again after a restart:
    // at least once, see `alert_delivery.rs`): whatever was not checkpointed is replayed, and
    // the replayed alert (same dedup key) is neither stored nor delivered a second time.
    let stored = server.alerts(None).await.len() as u64;
    let mark = dir.path().join("alerts").join("delivered_through");
    server
        .eventually("the delivery mark", Duration::from_secs(10), || async {
            std::fs::read_to_string(&mark)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                == Some(stored)
        })
        .await;
    server.kill9();
    let server = Server::start(dir.path(), Some(&config), &[]);
    assert_eq!(server.send("app", ndjson(&[ev(6)])).await.0, 200);
    server
        .eventually(
            "the sixth event evaluated",
            Duration::from_secs(10),
            || async {
                rule_metric(&server, "tidewatch_rule_events_evaluated_total", "five").await == 6
            },
        )
        .await;
    assert_eq!(server.alerts(Some("five")).await.len(), 1);
    let delivered: Vec<Value> = sink_lines(dir.path())
        .into_iter()
        .filter(|a| a["rule_id"] == "five")
        .collect();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
}
