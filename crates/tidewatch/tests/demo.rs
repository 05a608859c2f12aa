//! The README's first promise: within a minute of `tidewatch serve --demo` a new user sees
//! alerts of the example rules, SQL results over both demo streams (the README's own query,
//! through the `query` command) and search hits; and the demo stops cleanly. A second start
//! on the same data keeps a user's edit of an example rule.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{Server, binary};

/// What the README says to wait at most.
const A_MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_a_minute_of_serve_demo_there_are_alerts_sql_results_and_search_hits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, &["--demo"]);

    let (status, rules) = server.get("/api/v1/rules").await;
    assert_eq!(status, 200, "{rules}");
    let ids: BTreeSet<String> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| rule["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("demo-")), "{ids:?}");

    // `curl -s localhost:7070/api/v1/alerts?limit=5`: alerts of the example rules, with the
    // fields an alert promises.
    let latest = || async {
        server
            .get("/api/v1/alerts?limit=5")
            .await
            .1
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    server
        .eventually("an alert of an example rule", A_MINUTE, || async {
            !latest().await.is_empty()
        })
        .await;
    let alerts = latest().await;
    for alert in &alerts {
        assert!(ids.contains(alert["rule_id"].as_str().unwrap()), "{alert}");
        for field in ["severity", "stream", "event_time_ms"] {
            assert!(!alert[field].is_null(), "{field} in {alert}");
        }
    }

    // The README's query, with the `query` command (CSV when piped): event names with counts.
    let readme_query = "SELECT eventName, count(*) AS n FROM cloudtrail GROUP BY eventName \
                        ORDER BY n DESC LIMIT 5";
    let output = Command::new(binary())
        .args(["query", "--server", &server.url, readme_query])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"eventName,n"), "{stdout}");
    assert!(lines.len() > 1, "{stdout}");
    let (_, first_count) = lines[1].rsplit_once(',').unwrap();
    assert!(first_count.parse::<u64>().unwrap() > 0, "{stdout}");

    // The clickstream demo stream is queryable too, and search finds CloudTrail events.
    server
        .eventually("clickstream rows", A_MINUTE, || async {
            server.sql_count("SELECT count(*) FROM clickstream").await > 0
        })
        .await;
    server
        .eventually("a search hit", A_MINUTE, || async {
            let (status, found) = server
                .get("/api/v1/streams/cloudtrail/search?q=eventName:ConsoleLogin&limit=1")
                .await;
            status == 200 && found["total"].as_u64().unwrap_or(0) > 0
        })
        .await;

    assert!(server.terminate(), "the demo did not stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_edit_of_an_example_rule_survives_the_next_demo_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, &["--demo"]);
    let (status, rule) = server.get("/api/v1/rules/demo-big-purchase").await;
    assert_eq!(status, 200, "{rule}");
    let response = server
        .client
        .post(format!(
            "{}/api/v1/rules/demo-big-purchase/disable",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert!(server.terminate());

    let server = Server::start(dir.path(), None, &["--demo"]);
    let (_, rule) = server.get("/api/v1/rules/demo-big-purchase").await;
    assert_eq!(rule["enabled"], false, "{rule}");
    assert!(server.terminate());
}
