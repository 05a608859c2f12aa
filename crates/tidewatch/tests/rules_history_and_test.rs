//! Rule history (who, when, the previous version; persisted across restarts) and dry runs:
//! inline events for every kind, a range of stored events through the same engine as live
//! detection (same alerts, same dedup keys), and `tidewatch replay` on the command line.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Server;
use serde_json::{Value, json};

async fn send_rule(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    user: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server
        .client
        .request(method, format!("{}{path}", server.url));
    if let Some(user) = user {
        request = request.header("x-tidewatch-user", user);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn threshold_rule(window: &str, title: &str) -> Value {
    json!({"id": "t1", "title": title, "stream": "app",
           "match": {"field": "kind", "equals": "x"},
           "threshold": {"count": {"gt": 2}, "window": window, "group_by": ["user"]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_recorded_with_author_and_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, &[]);
    use reqwest::Method;
    let (status, _) = send_rule(
        &server,
        Method::POST,
        "/api/v1/rules",
        Some("alice"),
        Some(threshold_rule("1m", "T")),
    )
    .await;
    assert_eq!(status, 201);
    // A changed window: the aggregate state starts afresh, and the answer says so.
    let (status, body) = send_rule(
        &server,
        Method::PUT,
        "/api/v1/rules/t1",
        Some("bob"),
        Some(threshold_rule("5m", "T")),
    )
    .await;
    assert_eq!(
        (status, body["state_reset"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    // Only the title: state kept.
    let (status, body) = send_rule(
        &server,
        Method::PUT,
        "/api/v1/rules/t1",
        None,
        Some(threshold_rule("5m", "Renamed")),
    )
    .await;
    assert_eq!(
        (status, body["state_reset"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    assert_eq!(
        send_rule(
            &server,
            Method::POST,
            "/api/v1/rules/t1/disable",
            Some("carol"),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send_rule(
            &server,
            Method::POST,
            "/api/v1/rules/t1/enable",
            Some("carol"),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        send_rule(
            &server,
            Method::DELETE,
            "/api/v1/rules/t1",
            Some("dave"),
            None
        )
        .await
        .0,
        200
    );

    let expected = [
        ("create", "alice", 1, None, Some("1m")),
        ("update", "bob", 2, Some("1m"), Some("5m")),
        ("update", "anonymous", 3, Some("5m"), Some("5m")),
        ("disable", "carol", 4, Some("5m"), Some("5m")),
        ("enable", "carol", 5, Some("5m"), Some("5m")),
        ("delete", "dave", 5, Some("5m"), None),
    ];
    let check = |history: &Value| {
        let entries = history.as_array().expect("history list");
        assert_eq!(entries.len(), expected.len(), "{history}");
        let mut last_at = 0;
        for (entry, (action, who, version, before, after)) in entries.iter().zip(expected) {
            assert_eq!(entry["action"], action, "{entry}");
            assert_eq!(entry["who"], who, "{entry}");
            assert_eq!(entry["version"], version, "{entry}");
            assert_eq!(
                entry["before"]["threshold"]["window"].as_str(),
                before,
                "{entry}"
            );
            assert_eq!(
                entry["after"]["threshold"]["window"].as_str(),
                after,
                "{entry}"
            );
            let at = entry["at_ms"].as_i64().unwrap();
            assert!(at >= last_at && at > 1_700_000_000_000, "{entry}");
            last_at = at;
        }
        // The previous version is the whole rule as it was.
        assert_eq!(entries[2]["before"]["title"], "T");
        assert_eq!(entries[2]["after"]["title"], "Renamed");
        assert_eq!(entries[3]["after"]["enabled"], false);
    };
    let (status, history) = server.get("/api/v1/rules/t1/history").await;
    assert_eq!(status, 200);
    check(&history);
    assert_eq!(server.get("/api/v1/rules/nope/history").await.0, 404);
    // Persisted: the same after a restart.
    assert!(server.terminate());
    let server = Server::start(dir.path(), None, &[]);
    check(&server.get("/api/v1/rules/t1/history").await.1);
    // Created again after the deletion: the numbering goes on (a second "version 1" would
    // name two different rules in the history and in alerts' `rule_version`).
    let (status, body) = send_rule(
        &server,
        Method::POST,
        "/api/v1/rules",
        Some("erin"),
        Some(threshold_rule("1m", "Again")),
    )
    .await;
    assert_eq!((status, body["version"].as_u64()), (201, Some(6)), "{body}");
    let (_, history) = server.get("/api/v1/rules/t1/history").await;
    assert_eq!(history[6]["version"], 6, "{history}");
    assert_eq!(history[6]["action"], "create", "{history}");
}

async fn dry_run(server: &Server, body: Value) -> (u16, Value) {
    let response = server
        .client
        .post(format!("{}/api/v1/rules/test", server.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn at(seconds: u64) -> String {
    format!("2024-03-01T00:{:02}:{:02}Z", seconds / 60, seconds % 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_use_the_live_engine_inline_and_over_stored_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, &[]);
    // Inline events: a sequence (decided by event time) and a "below" threshold (decided
    // at the end, when every given event is in).
    let sequence = "id: s\ntitle: S\nstream: app\nsequence: {by: pid, maxspan: 1m, steps: [{field: k, equals: a}, {field: k, equals: b}]}\n";
    let (status, body) = dry_run(
        &server,
        json!({"rule": sequence, "events": [
            {"k": "b", "pid": 1, "eventTime": at(20)},
            {"k": "a", "pid": 1, "eventTime": at(10)},
            {"k": "a", "pid": 2, "eventTime": at(30)},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["evaluated"], 3);
    assert!(body["took_ms"].as_f64().is_some());
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{body}");
    assert_eq!(alerts[0]["group"]["pid"], "1");
    let below = json!({"id": "b", "title": "B", "stream": "app",
        "threshold": {"count": {"lt": 2}, "window": "1m", "group_by": ["h"]}});
    let (_, body) = dry_run(
        &server,
        json!({"rule": below, "events": [
            {"h": "a", "eventTime": at(1)}, {"h": "a", "eventTime": at(2)},
            {"h": "a", "eventTime": at(61)}, {"h": "c", "eventTime": at(125)},
        ]}),
    )
    .await;
    let keys: Vec<&str> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["dedup_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["b|a|1709251260000"], "{body}");
    // Invalid rules and requests are refused with the reason.
    let (status, body) = dry_run(&server, json!({"rule": {"id": "x", "title": "X", "stream": "app", "distinct": {"field": "f", "count": {"lt": 1}, "window": "1m"}}, "events": []})).await;
    assert_eq!(status, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("distinct.count.lt"),
        "{body}"
    );

    // Stored events: the same rule live and replayed gives the same alerts.
    let rule = "id: live\ntitle: L\nstream: ct\nmatch: {field: kind, equals: x}\nthreshold: {count: {gt: 2}, window: 1m, group_by: [user]}\n";
    let created = server
        .client
        .post(format!("{}/api/v1/rules", server.url))
        .header("content-type", "application/yaml")
        .body(rule)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let events: Vec<String> = (0..400u64)
        .map(|i| json!({"kind": if i % 3 == 0 { "y" } else { "x" }, "user": format!("u{}", i % 7), "eventTime": at(i / 2)}).to_string())
        .collect();
    // One request at a time, each evaluated before the next: live detection then sees the
    // records in the order of their ingest time, which is the order a replay reads them in.
    for (index, chunk) in events.chunks(50).enumerate() {
        assert_eq!(server.send("ct", chunk.join("\n")).await.0, 200);
        let done = 50 * (index as u64 + 1);
        server
            .eventually(
                "live detection caught up",
                Duration::from_secs(10),
                || async { evaluated(&server, "live").await == done },
            )
            .await;
    }
    let mut live: Vec<String> = server
        .alerts(Some("live"))
        .await
        .iter()
        .map(|a| a["dedup_key"].as_str().unwrap().to_string())
        .collect();
    live.sort();
    assert!(
        live.len() >= 10,
        "the data must exercise the rule: {live:?}"
    );
    let (status, body) = dry_run(&server, json!({"rule": rule, "from": 0, "to": tw_now()})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["evaluated"], 400);
    let mut replayed: Vec<String> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["dedup_key"].as_str().unwrap().to_string())
        .collect();
    replayed.sort();
    assert_eq!(replayed, live);
    // A range before any event holds nothing; an unknown stream is a 404.
    let (_, body) = dry_run(&server, json!({"rule": rule, "from": 0, "to": 1})).await;
    assert_eq!(
        (
            body["evaluated"].as_u64(),
            body["alerts"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
    let (status, _) = dry_run(
        &server,
        json!({"rule": rule.replace("stream: ct", "stream: nothere"), "from": 0}),
    )
    .await;
    assert_eq!(status, 404);

    // The CLI backtest prints the same alerts.
    let file = common::write(dir.path(), "rule.yaml", rule);
    let output = Command::new(common::binary())
        .args(["replay", "--rule"])
        .arg(&file)
        .args(["--from", "2020-01-01T00:00:00Z", "--server", &server.url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut from_cli: Vec<String> = result["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["dedup_key"].as_str().unwrap().to_string())
        .collect();
    from_cli.sort();
    assert_eq!(from_cli, live);
    assert!(String::from_utf8_lossy(&output.stderr).contains("400 events evaluated"));
}

async fn evaluated(server: &Server, rule: &str) -> u64 {
    let (_, text) = server.get_text("/metrics").await;
    let prefix = format!("tidewatch_rule_events_evaluated_total{{rule=\"{rule}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn tw_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A backtest reads the lake where only the lake holds a stream's rows (here: history
/// imported with `tidewatch lake import`, which never passes through the log), next to what
/// the log holds, with the events rebuilt from the lake's columns (nested objects, arrays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtests_read_history_only_the_lake_holds() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None, &[]);
    let live: Vec<String> = (0..200u64)
        .map(|i| {
            json!({"kind": "login", "user": format!("u{}", i % 4), "eventTime": at(i / 4)})
                .to_string()
        })
        .collect();
    assert_eq!(server.send("hist", live.join("\n")).await.0, 200);
    let imported: Vec<String> = (0..300u64)
        .map(|i| {
            json!({
                "kind": "login",
                "user": "imported",
                "geo": {"country": if i < 120 { "NZ" } else { "FR" }},
                "roles": ["reader", format!("r{i}")],
                "eventTime": format!("2024-03-02T00:{:02}:{:02}Z", i / 60, i % 60),
            })
            .to_string()
        })
        .collect();
    let history = common::write(dir.path(), "history/old.ndjson", &imported.join("\n"));
    let output = Command::new(common::binary())
        .args([
            "lake",
            "import",
            "--stream",
            "hist",
            "--server",
            &server.url,
        ])
        .arg(history.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A nested field and an array element of the imported events; a threshold over both.
    let rule = "id: nz\ntitle: NZ\nstream: hist\nmatch: {all: [{field: geo.country, equals: NZ}, {field: roles, equals: reader}]}\n";
    let (status, body) = dry_run(&server, json!({"rule": rule})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["evaluated"], 500,
        "log and lake rows, each once: {body}"
    );
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 120, "{body}");
    let threshold = "id: many\ntitle: M\nstream: hist\nmatch: {field: kind, equals: login}\nthreshold: {count: {gt: 40}, window: 10m, group_by: [user]}\n";
    let (status, body) = dry_run(&server, json!({"rule": threshold})).await;
    assert_eq!(status, 200, "{body}");
    let mut groups: Vec<String> = body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["group"].to_string())
        .collect();
    groups.sort();
    groups.dedup();
    // 50 live events per user within 50 s, and 300 imported ones in 5 minutes (a day later
    // by event time: imported after the live ones, they would be late if older).
    assert_eq!(groups.len(), 5, "{body}");
    // A range that ends before the import holds only what was sent before it.
    let (_, body) = dry_run(&server, json!({"rule": rule, "from": 0, "to": 1})).await;
    assert_eq!(body["evaluated"], 0, "{body}");
}

/// A backtest over a range the log's retention has cut: the lake gives the rows the log
/// dropped, the log the rest, each row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtests_reach_past_the_logs_retention_through_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Small segments, so that retention has closed segments to drop; the lake flushes fast.
    let config = common::write(
        dir.path(),
        "tidewatch.toml",
        "[log]\nsegment_max_bytes = 65536\n[lake]\nflush_max_age_ms = 200\n",
    );
    let server = Server::start(&data, Some(&config), &[]);
    let created = server
        .client
        .put(format!("{}/api/v1/streams/short", server.url))
        .json(&json!({"partitions": 2, "retention": {"max_age_secs": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200, "{}", created.text().await.unwrap());
    let padding = "x".repeat(200);
    let events: Vec<String> = (0..3000u64)
        .map(|i| json!({"kind": if i % 10 == 0 { "bad" } else { "ok" }, "n": i, "pad": padding, "eventTime": at(i / 60)}).to_string())
        .collect();
    for chunk in events.chunks(500) {
        assert_eq!(server.send("short", chunk.join("\n")).await.0, 200);
    }
    server.wait_for_count("short", "1 = 1", 3000).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Retention runs at start (then once a minute).
    assert!(server.terminate());
    let server = Server::start(&data, Some(&config), &[]);
    // Retention runs partition by partition after the start: wait until it has cut both
    // (a backtest racing it would miss the rows it deletes meanwhile).
    let starts = || async {
        let (_, stream) = server.get("/api/v1/streams/short").await;
        (stream["partitions"].as_array().unwrap().iter())
            .map(|p| p["start_offset"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    server
        .eventually(
            "retention cut every partition",
            Duration::from_secs(30),
            || async { starts().await.iter().all(|start| *start > 0) },
        )
        .await;
    let dropped: u64 = starts().await.iter().sum();
    let rule = "id: bad\ntitle: B\nstream: short\nmatch: {field: kind, equals: bad}\n";
    let (status, body) = dry_run(&server, json!({"rule": rule})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["evaluated"], 3000,
        "{dropped} rows only in the lake: {body}"
    );
    let mut numbers: Vec<u64> = (body["alerts"].as_array().unwrap().iter())
        .map(|alert| alert["events"][0]["n"].as_u64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..3000).step_by(10).collect::<Vec<_>>());
    // A range ending after the second request: its rows only, though they are all past the
    // log's retention (the lake's pages must stop at `to` too).
    let rows = server
        .sql("SELECT CAST(max(_ingest_time) AS BIGINT) AS t, CAST(min(_ingest_time) AS BIGINT) AS next FROM short WHERE n >= 1000 OR n < 1000 GROUP BY n >= 1000 ORDER BY t")
        .await;
    let (to, third_starts) = (
        rows[0]["t"].as_i64().unwrap(),
        rows[1]["next"].as_i64().unwrap(),
    );
    assert!(
        third_starts > to,
        "the third request was stored after the second: {rows:?}"
    );
    let (_, body) = dry_run(&server, json!({"rule": rule, "from": 0, "to": to})).await;
    assert_eq!(body["evaluated"], 1000, "{body}");
    assert!(server.terminate());
}
