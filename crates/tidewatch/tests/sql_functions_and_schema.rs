//! Against a real server: the security SQL functions over ingested events, the schema API
//! (columns, first-seen times, type conflicts, widenings, 404s), and `tidewatch query`
//! output when piped (auto = CSV, forced JSON) with the truncation warning.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, binary, write};
use serde_json::{Value, json};

/// `tidewatch query` with stdout piped: (success, stdout, stderr).
fn query_cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(binary())
        .args(["query", "--server", &server.url])
        .args(args)
        .output()
        .expect("run tidewatch query");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_schema_and_cli_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(
        dir.path(),
        "tidewatch.toml",
        "[query]\nmax_result_rows = 4\nmemory_limit_bytes = 33554432\n",
    );
    let server = Server::start(&dir.path().join("data"), Some(&config), &[]);
    // One partition so the lake sees the events in order (the type history depends on it).
    for stream in ["flows", "empty"] {
        let put = server
            .client
            .put(format!("{}/api/v1/streams/{stream}", server.url))
            .json(&json!({"partitions": 1}))
            .send()
            .await
            .expect("put stream");
        assert!(
            put.status().is_success(),
            "{}",
            put.text().await.unwrap_or_default()
        );
    }

    let events = [
        json!({"sourceIPAddress": "10.1.2.3", "port": 22, "detail": "{\"user\":{\"name\":\"alice\"}}"}),
        json!({"sourceIPAddress": "203.0.113.9", "port": 443, "detail": "{\"user\":{\"name\":\"bob\"}}"}),
        json!({"sourceIPAddress": "2001:db8::1", "port": "https", "detail": "not json"}),
        json!({"sourceIPAddress": "fd00::5", "port": 8443, "extra": true}),
    ];
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    let (status, answer) = server.send("flows", body).await;
    assert_eq!(status, 200, "{answer}");

    // Functions through the HTTP API (the server waits for the lake to catch up).
    let rows = server
        .sql(
            "SELECT sourceIPAddress AS ip, cidr_match(sourceIPAddress, '10.0.0.0/8') AS in10, \
             cidr_match(sourceIPAddress, '2001:db8::/32') AS doc6, ip_is_private(sourceIPAddress) AS private, \
             ip_version(sourceIPAddress) AS v, json_get_str(detail, 'user.name') AS who \
             FROM flows ORDER BY _offset",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            json!({"ip": "10.1.2.3", "in10": true, "doc6": false, "private": true, "v": 4, "who": "alice"}),
            json!({"ip": "203.0.113.9", "in10": false, "doc6": false, "private": false, "v": 4, "who": "bob"}),
            json!({"ip": "2001:db8::1", "in10": false, "doc6": true, "private": false, "v": 6, "who": null}),
            json!({"ip": "fd00::5", "in10": false, "doc6": false, "private": true, "v": 6, "who": null}),
        ]
    );
    // A bad CIDR literal is the user's error, and says what is wrong.
    let response = server
        .client
        .post(format!("{}/api/v1/query", server.url))
        .json(&json!({"sql": "SELECT cidr_match(sourceIPAddress, '10.0.0.0/40') FROM flows"}))
        .send()
        .await
        .expect("query");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("prefix length must be 0 to 32")),
        "{body}"
    );

    // The schema API.
    let (status, schema) = server.get("/api/v1/streams/flows/schema").await;
    assert_eq!(status, 200, "{schema}");
    assert_eq!(schema["stream"], "flows");
    let columns = schema["columns"].as_array().expect("columns");
    let column = |name: &str| {
        columns
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no column {name} in {schema}"))
    };
    assert_eq!(column("_time")["kind"], "system");
    assert_eq!(column("_time")["type"], "timestamp");
    assert_eq!(column("_offset")["type"], "int64");
    assert_eq!(column("sourceIPAddress")["type"], "utf8");
    assert_eq!(column("sourceIPAddress")["kind"], "event");
    assert!(
        column("sourceIPAddress")["first_seen_ms"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000_000)
    );
    assert_eq!(column("extra")["type"], "boolean");
    // `port` saw 22, 443, "https", 8443: widened to utf8 at "https" (a conflict), and 8443
    // no longer fits either.
    let port = column("port");
    assert_eq!(port["type"], "utf8", "{port}");
    assert_eq!(port["type_conflicts"], 2, "{port}");
    assert_eq!(schema["type_conflicts_total"], 2, "{schema}");
    let widenings = schema["widenings"].as_array().expect("widenings");
    assert!(
        widenings
            .iter()
            .any(|w| w["column"] == "port" && w["from"] == "int64" && w["to"] == "utf8"),
        "{schema}"
    );
    assert_eq!(widenings.len(), 1, "{schema}");
    assert_eq!(column("sourceIPAddress")["type_conflicts"], 0);

    // Unknown stream, stream without lake data, invalid name.
    let (status, body) = server.get("/api/v1/streams/nosuch/schema").await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("stream nosuch does not exist")),
        "{body}"
    );
    let (status, body) = server.get("/api/v1/streams/empty/schema").await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no data in the lake yet")),
        "{body}"
    );

    // The CLI, piped: auto is CSV; JSON when forced; a cut result warns on stderr.
    let (ok, out, err) = query_cli(
        &server,
        &[
            "SELECT ip_version(sourceIPAddress) AS v, count(*) AS n FROM flows GROUP BY v ORDER BY v",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "v,n\n4,2\n6,2\n");
    assert!(!err.contains("truncated"), "{err}");
    let (ok, out, err) = query_cli(
        &server,
        &[
            "--format",
            "json",
            "SELECT json_get(detail, 'user') AS u FROM flows WHERE json_get(detail, 'user.name') = 'bob'",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"u":"{\"name\":\"bob\"}"}"#);
    let (ok, out, err) = query_cli(
        &server,
        &[
            "--format",
            "csv",
            "SELECT column1 AS x FROM (VALUES (1), (2), (3), (4), (5)) AS t",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "x\n1\n2\n3\n4\n", "cut at max_result_rows = 4");
    assert!(
        err.contains("result truncated at the server's row limit"),
        "{err}"
    );
    let (ok, out, err) = query_cli(
        &server,
        &["--format", "table", "SELECT ip_version('::1') AS v"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("| v |") && out.contains("| 6 |"), "{out}");
    let (ok, _, err) = query_cli(&server, &["SELECT json_get(detail, 'a..b') FROM flows"]);
    assert!(!ok);
    assert!(
        err.contains("query failed (400") && err.contains("empty key"),
        "{err}"
    );

    // Past the memory limit: refused as unavailable (503), with the reason.
    let (ok, _, err) = query_cli(
        &server,
        &["SELECT array_agg(value) FROM generate_series(1, 20000000)"],
    );
    assert!(!ok);
    assert!(
        err.contains("query failed (503") && err.contains("query exceeded its resources"),
        "{err}"
    );

    server
        .eventually("server still answers", Duration::from_secs(5), || async {
            server.get("/api/v1/streams").await.0 == 200
        })
        .await;
}
