//! The spine, end to end, with exact oracles: every accepted event is found by SQL exactly
//! once, every rejected line is reported and dead-lettered, and the alerts are exactly what an
//! independent computation over the same events expects — before and after a restart.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use common::{Server, generate, write};
use serde_json::Value;

const FAILED_LOGIN_RULE: &str = r#"
id: failed-login
title: Failed console login
severity: medium
stream: cloudtrail
match:
  all:
    - { field: eventName, equals: ConsoleLogin }
    - { field: errorMessage, exists: true }
"#;

const BRUTE_FORCE_RULE: &str = r#"
id: brute-force
title: More than 2 failed logins from one IP in a minute
severity: high
stream: cloudtrail
match:
  all:
    - { field: eventName, equals: ConsoleLogin }
    - { field: errorMessage, exists: true }
threshold:
  more_than: 2
  window: 1m
  group_by: [sourceIPAddress]
"#;

const CONFIG: &str = r#"
[lake]
flush_max_rows = 4000
flush_max_age_ms = 300

[query]
max_result_rows = 1000000
"#;

/// The (nice value, scheduling policy) of the thread of process `pid` named `name`
/// (`/proc/{pid}/task/*/stat`).
fn thread_priority(pid: u32, name: &str) -> Option<(i32, i32)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            (head.split_once('(')?.1 == name).then_some(())?;
            // Fields 19 (nice) and 41 (policy) are the 17th and 39th after the command name.
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some((fields.get(16)?.parse().ok()?, fields.get(38)?.parse().ok()?))
        })
}

fn is_failed_login(event: &Value) -> bool {
    event["eventName"] == "ConsoleLogin" && !event["errorMessage"].is_null()
}

fn expected_brute_force(events: &[Value]) -> usize {
    let mut groups: HashMap<(String, i64), u32> = HashMap::new();
    for event in events.iter().filter(|e| is_failed_login(e)) {
        let time = tw_core::parse_time_ms(&event["eventTime"]).expect("eventTime");
        *groups
            .entry((
                event["sourceIPAddress"]
                    .as_str()
                    .unwrap_or("null")
                    .to_string(),
                time.div_euclid(60_000),
            ))
            .or_default() += 1;
    }
    groups.values().filter(|count| **count > 2).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_detect_lake_and_sql_agree_exactly_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    write(&rules, "failed-login.yaml", FAILED_LOGIN_RULE);
    write(&rules, "brute-force.yml", BRUTE_FORCE_RULE);
    let config = write(dir.path(), "tidewatch.toml", CONFIG);
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        Some(&config),
        &["--rules-dir", rules.to_str().unwrap()],
    );

    // Ingest and detection keep the normal priority; the lake yields, search takes only idle
    // time (policies: 0 SCHED_OTHER, 5 SCHED_IDLE).
    assert_eq!(
        thread_priority(server.pid(), "consumer-detect"),
        Some((0, 0))
    );
    assert_eq!(
        thread_priority(server.pid(), "consumer-lake"),
        Some((10, 0))
    );
    assert_eq!(
        thread_priority(server.pid(), "consumer-search"),
        Some((0, 5))
    );

    let text = generate("cloudtrail", 30_000, 7, 2000);
    let lines: Vec<&str> = text.lines().collect();
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // Six requests; the third carries three bad lines, the fifth is gzip.
    let mut accepted = 0;
    for (index, chunk) in lines.chunks(5000).enumerate() {
        let mut body = chunk.join("\n");
        if index == 2 {
            body = format!("not json\n{}\n{{\"truncated\": \n[1,2]", body);
        }
        let (status, outcome) = if index == 4 {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(body.as_bytes()).unwrap();
            let response = server
                .client
                .post(format!("{}/api/v1/streams/cloudtrail/events", server.url))
                .header("content-encoding", "gzip")
                .body(encoder.finish().unwrap())
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        } else {
            server.send("cloudtrail", body).await
        };
        assert_eq!(status, 200, "{outcome}");
        accepted += outcome["accepted"].as_u64().unwrap();
        let rejected: Vec<u64> = outcome["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["line"].as_u64().unwrap())
            .collect();
        if index == 2 {
            assert_eq!(rejected, vec![1, 5002, 5003], "{outcome}");
            assert!(
                outcome["rejected"][0]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("invalid JSON")
            );
            assert!(
                outcome["rejected"][2]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("JSON object")
            );
        } else {
            assert!(rejected.is_empty(), "{outcome}");
        }
    }
    assert_eq!(accepted, 30_000);

    // SQL sees every accepted event exactly once (hot and flushed data together).
    assert_eq!(
        server
            .sql_count("SELECT count(*) AS n FROM cloudtrail")
            .await,
        30_000
    );
    assert_eq!(
        server
            .sql_count("SELECT count(DISTINCT eventID) AS n FROM cloudtrail")
            .await,
        30_000
    );
    let logins = events
        .iter()
        .filter(|e| e["eventName"] == "ConsoleLogin")
        .count() as u64;
    let rows = server.sql("SELECT eventName, count(*) AS n FROM cloudtrail WHERE eventName = 'ConsoleLogin' GROUP BY eventName").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["n"].as_u64(), Some(logins));
    let admin = events
        .iter()
        .filter(|e| {
            e["requestParameters"]["policyArn"]
                .as_str()
                .is_some_and(|p| p.contains("AdministratorAccess"))
        })
        .count() as u64;
    let sql = "SELECT count(*) AS n FROM cloudtrail WHERE requestParameters.policyArn LIKE '%AdministratorAccess%'";
    assert_eq!(server.sql_count(sql).await, admin);

    // CSV by Accept.
    let csv = server
        .client
        .post(format!("{}/api/v1/query", server.url))
        .header("accept", "text/csv")
        .json(&serde_json::json!({"sql": "SELECT eventName, count(*) AS n FROM cloudtrail GROUP BY eventName ORDER BY eventName LIMIT 2"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("eventName,n\n"), "{csv}");
    assert_eq!(csv.lines().count(), 3, "{csv}");

    // Alerts: exactly the independent computation.
    let failed_logins = events.iter().filter(|e| is_failed_login(e)).count();
    let brute_force = expected_brute_force(&events);
    assert!(
        brute_force > 0,
        "the data set must exercise the threshold rule"
    );
    server
        .eventually("alerts", Duration::from_secs(60), || async {
            server.alerts(Some("failed-login")).await.len() == failed_logins
                && server.alerts(Some("brute-force")).await.len() == brute_force
        })
        .await;
    // Detection parses only the fields its rules read, yet alerts carry whole events.
    let single = &server.alerts(Some("failed-login")).await[0];
    assert!(
        single["events"][0]["eventID"].is_string()
            && single["events"][0]["userIdentity"]["arn"].is_string(),
        "{single}"
    );
    let alert = &server.alerts(Some("brute-force")).await[0];
    assert!(alert["events"][0]["requestID"].is_string(), "{alert}");
    assert!(
        alert["group"]["sourceIPAddress"].is_string()
            && alert["window"].is_array()
            && alert["value"].as_f64().unwrap() > 2.0,
        "{alert}"
    );

    // Dead letters keep the original bytes and the reason.
    let (status, dlq) = server.get("/api/v1/dlq?stream=cloudtrail").await;
    assert_eq!(status, 200);
    let raws: Vec<&str> = dlq["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["raw"].as_str().unwrap())
        .collect();
    assert_eq!(raws, vec!["not json", "{\"truncated\":", "[1,2]"]);

    // The lake is laid out by event time.
    let hour = data.join("lake/cloudtrail/year=2024/month=03/day=01/hour=00");
    server
        .eventually("parquet files", Duration::from_secs(30), || async {
            std::fs::read_dir(&hour)
                .map(|d| d.count() > 0)
                .unwrap_or(false)
        })
        .await;

    let (_, metrics) = server.get_text("/metrics").await;
    assert!(metrics.contains("tidewatch_events_in_total"), "{metrics}");
    assert_eq!(server.get("/readyz").await.0, 200);

    // A graceful stop flushes and commits; a restart finds everything once, and pages no one
    // twice. A client watching the live alert feed does not hold the stop up (the feed ends).
    let feed = server
        .client
        .get(format!("{}/api/v1/alerts/stream", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), 200);
    let stop_started = std::time::Instant::now();
    assert!(server.terminate(), "graceful stop exits 0");
    assert!(
        stop_started.elapsed() < Duration::from_secs(20),
        "the stop waited {:?} for the feed",
        stop_started.elapsed()
    );
    drop(feed);
    let server = Server::start(
        &data,
        Some(&config),
        &["--rules-dir", rules.to_str().unwrap()],
    );
    assert_eq!(
        server
            .sql_count("SELECT count(*) AS n FROM cloudtrail")
            .await,
        30_000
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.alerts(Some("failed-login")).await.len(),
        failed_logins
    );
    assert_eq!(server.alerts(Some("brute-force")).await.len(), brute_force);
    let rule: Value = server.get("/api/v1/rules/brute-force").await.1;
    assert_eq!(
        rule["version"], 1,
        "an unchanged rules directory does not bump versions: {rule}"
    );
}
