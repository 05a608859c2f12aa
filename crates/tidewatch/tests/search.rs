//! Full-text search against a real server, with exact oracles: counts equal both an
//! independent count over the generated events and SQL's count of the same predicate; time
//! ranges open only the overlapping hour indexes; new events are searchable seconds after
//! they are acknowledged; bad queries are a 400; the CLI prints the hits; NOT, wildcards,
//! regexes, numeric ranges and CIDR blocks count exactly what the events (and SQL) say; a
//! stream's `search_fields` limits what is indexed.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, binary, generate};
use serde_json::Value;

const HOUR_MS: i64 = 3_600_000;

async fn search(server: &Server, query: &str, extra: &[(&str, String)]) -> (u16, Value) {
    search_in(server, "cloudtrail", query, extra).await
}

async fn search_in(
    server: &Server,
    stream: &str,
    query: &str,
    extra: &[(&str, String)],
) -> (u16, Value) {
    let mut params = vec![("q", query.to_string())];
    params.extend(extra.iter().cloned());
    let response = server
        .client
        .get(format!("{}/api/v1/streams/{stream}/search", server.url))
        .query(&params)
        .send()
        .await
        .expect("search");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn total(server: &Server, query: &str, extra: &[(&str, String)]) -> u64 {
    let (status, body) = search(server, query, extra).await;
    assert_eq!(status, 200, "{query}: {body}");
    body["total"].as_u64().expect("total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_counts_match_sql_time_pruning_freshness_and_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None, &[]);
    // 20,000 events at 4 per second: about 83 minutes of event time, so two or three hours.
    let text = generate("cloudtrail", 20_000, 11, 4);
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let (status, outcome) = server.send("cloudtrail", text.clone()).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["accepted"].as_u64(), Some(20_000));

    // Everything becomes searchable, and stays counted exactly once.
    let deadline = Instant::now() + Duration::from_secs(120);
    while total(&server, "*", &[]).await != 20_000 {
        assert!(
            Instant::now() < deadline,
            "search never covered the 20,000 events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A rare eventName (the least frequent one) by field:value, against the events and SQL.
    let mut by_name: HashMap<&str, u64> = HashMap::new();
    for event in &events {
        *by_name
            .entry(event["eventName"].as_str().unwrap())
            .or_default() += 1;
    }
    let (rare, rare_count) = by_name
        .iter()
        .filter(|(name, _)| name.chars().all(|c| c.is_ascii_alphanumeric()))
        .min_by_key(|(name, count)| (**count, **name))
        .map(|(name, count)| (name.to_string(), *count))
        .unwrap();
    let sql = format!("SELECT count(*) AS n FROM cloudtrail WHERE eventName = '{rare}'");
    assert_eq!(server.sql_count(&sql).await, rare_count);
    let (status, body) = search(
        &server,
        &format!("eventName:{rare}"),
        &[("limit", "5".into())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"].as_u64(), Some(rare_count), "eventName:{rare}");
    let hits = body["hits"].as_array().unwrap();
    assert_eq!(hits.len() as u64, rare_count.min(5));
    assert!(
        hits.iter()
            .all(|h| h["event"]["eventName"] == rare.as_str())
    );
    let times: Vec<&str> = hits.iter().map(|h| h["time"].as_str().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    // A rare term anywhere in the event: one eventID, as a phrase of its parts.
    let id = events[12_345]["eventID"].as_str().unwrap().to_string();
    let sql = format!("SELECT count(*) AS n FROM cloudtrail WHERE eventID = '{id}'");
    assert_eq!(server.sql_count(&sql).await, 1);
    let (_, body) = search(&server, &format!("\"{id}\""), &[]).await;
    assert_eq!(body["total"].as_u64(), Some(1), "{body}");
    assert_eq!(body["hits"][0]["event"], events[12_345]);

    // A boolean query on a nested field, against SQL.
    let failed_logins = events
        .iter()
        .filter(|e| e["eventName"] == "ConsoleLogin" && e["errorMessage"].is_string())
        .count() as u64;
    let sql = "SELECT count(*) AS n FROM cloudtrail WHERE eventName = 'ConsoleLogin' AND errorMessage IS NOT NULL";
    assert_eq!(server.sql_count(sql).await, failed_logins);
    assert_eq!(
        total(
            &server,
            "eventName:ConsoleLogin AND _event.errorMessage:*",
            &[]
        )
        .await,
        failed_logins
    );

    // The rest of the language on event fields, each against the events and SQL.
    let count = |keep: &dyn Fn(&Value) -> bool| events.iter().filter(|e| keep(e)).count() as u64;
    let not_login = count(&|e| e["eventName"] != "ConsoleLogin");
    let sql = "SELECT count(*) AS n FROM cloudtrail WHERE eventName <> 'ConsoleLogin'";
    assert_eq!(server.sql_count(sql).await, not_login);
    assert_eq!(
        total(&server, "NOT eventName:ConsoleLogin", &[]).await,
        not_login
    );
    assert_eq!(
        total(&server, "-eventName:ConsoleLogin", &[]).await,
        not_login
    );
    assert_eq!(
        total(
            &server,
            "eventName:ConsoleLogin AND NOT _event.errorMessage:*",
            &[]
        )
        .await,
        count(&|e| e["eventName"] == "ConsoleLogin") - failed_logins
    );
    let get = count(&|e| {
        e["eventName"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .starts_with("get")
    });
    let sql = "SELECT count(*) AS n FROM cloudtrail WHERE lower(eventName) LIKE 'get%'";
    assert_eq!(server.sql_count(sql).await, get);
    assert!(get > 0);
    assert_eq!(total(&server, "eventName:Get*", &[]).await, get);
    assert_eq!(total(&server, "eventName:/get.*/", &[]).await, get);
    // Words of the user agent (split at non-alphanumerics) containing "boto".
    let boto = count(&|e| {
        e["userAgent"].as_str().is_some_and(|agent| {
            agent
                .split(|c: char| !c.is_alphanumeric())
                .any(|word| word.to_lowercase().contains("boto"))
        })
    });
    assert!(boto > 0);
    assert_eq!(total(&server, "userAgent:*boto*", &[]).await, boto);
    let bytes = |e: &Value| e["additionalEventData"]["bytesTransferredOut"].as_u64();
    let big = count(&|e| bytes(e).is_some_and(|b| b >= 1_000_000));
    let sql = r#"SELECT count(*) AS n FROM cloudtrail WHERE "additionalEventData.bytesTransferredOut" >= 1000000"#;
    assert_eq!(server.sql_count(sql).await, big);
    assert!(big > 0);
    let field = "additionalEventData.bytesTransferredOut";
    assert_eq!(
        total(&server, &format!("{field}:[1000000 TO *]"), &[]).await,
        big
    );
    assert_eq!(
        total(&server, &format!("{field}:>=1000000"), &[]).await,
        big
    );
    assert_eq!(
        total(&server, &format!("{field}:{{1000000 TO 5000000}}"), &[]).await,
        count(&|e| bytes(e).is_some_and(|b| b > 1_000_000 && b < 5_000_000))
    );
    // IP addresses: a CIDR block (SQL's cidr_match as the oracle) and one address.
    let in_52 = count(&|e| {
        e["sourceIPAddress"]
            .as_str()
            .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
            .is_some_and(|ip| ip.octets()[0] == 52)
    });
    let sql =
        "SELECT count(*) AS n FROM cloudtrail WHERE cidr_match(sourceIPAddress, '52.0.0.0/8')";
    assert_eq!(server.sql_count(sql).await, in_52);
    assert!(in_52 > 0);
    assert_eq!(
        total(&server, "sourceIPAddress:52.0.0.0/8", &[]).await,
        in_52
    );
    let ip = events[777]["sourceIPAddress"].as_str().unwrap().to_string();
    let same_ip = count(&|e| e["sourceIPAddress"] == ip.as_str());
    assert_eq!(
        total(&server, &format!("sourceIPAddress:\"{ip}\""), &[]).await,
        same_ip
    );
    for (bad, says) in [
        ("eventName:/(/", "invalid regex"),
        ("sourceIPAddress:10.0.0.0/40", "prefix length"),
        ("userAgent:*aws-cli*", "spans several words"),
        (
            "((((((((((((((((((((((((((((((((((((((((((((((((((a",
            "levels",
        ),
    ] {
        let (status, body) = search(&server, bad, &[]).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.to_string().contains(says), "{bad}: {body}");
    }

    // Time range: one whole hour opens one index and counts exactly that hour's events.
    let times: Vec<i64> = events
        .iter()
        .map(|e| tw_core::parse_time_ms(&e["eventTime"]).unwrap())
        .collect();
    let first_hour = times[0].div_euclid(HOUR_MS) * HOUR_MS;
    let hour = first_hour + HOUR_MS;
    let in_hour = times
        .iter()
        .filter(|t| **t >= hour && **t < hour + HOUR_MS)
        .count() as u64;
    assert!(in_hour > 0, "the generated events span more than one hour");
    let range = [
        ("from", hour.to_string()),
        ("to", (hour + HOUR_MS).to_string()),
    ];
    let (_, body) = search(&server, "", &range).await;
    assert_eq!(body["total"].as_u64(), Some(in_hour), "{body}");
    assert_eq!(body["indexes_searched"].as_u64(), Some(1));
    let (_, all) = search(&server, "", &[]).await;
    assert!(all["indexes_searched"].as_u64().unwrap() >= 2);

    // Freshness: a new event is found within seconds of its acknowledgement.
    let marker = format!("freshmarker{}", std::process::id());
    let now = tw_core::format_rfc3339_ms(tw_core::now_ms());
    let fresh = format!(r#"{{"eventTime":"{now}","eventName":"Probe","note":"{marker}"}}"#);
    let sent = Instant::now();
    let (status, _) = server.send("cloudtrail", fresh).await;
    assert_eq!(status, 200);
    while total(&server, &marker, &[]).await != 1 {
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "fresh event not searchable after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("fresh event searchable {:?} after ingest", sent.elapsed());

    // Bad input is a 400 that says what is wrong.
    let (status, body) = search(&server, "eventName:(", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("invalid search query"), "{body}");
    let (status, body) = search(&server, "x", &[("from", "yesterday".into())]).await;
    assert_eq!(status, 400, "{body}");

    // The CLI prints one event per hit.
    let output = Command::new(binary())
        .args([
            "search",
            "--stream",
            "cloudtrail",
            "--server",
            &server.url,
            "--limit",
            "3",
        ])
        .arg(format!("eventName:{rare}"))
        .output()
        .expect("run tidewatch search");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed.len() as u64, rare_count.min(3));
    assert!(printed.iter().all(|e| e["eventName"] == rare.as_str()));
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(
        summary.contains(&format!("of {rare_count} matching")),
        "{summary}"
    );
    // A stream indexing only some fields: the others are not searchable, hits are whole.
    let put = |body: &'static str| {
        server
            .client
            .put(format!("{}/api/v1/streams/trimmed", server.url))
            .body(body)
            .send()
    };
    let response = put(r#"{"search_fields": ["eventName", "a..b"]}"#)
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.text().await.unwrap().contains("search_fields"));
    let response = put(r#"{"search_fields": ["eventName", "userIdentity"]}"#)
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = generate("cloudtrail", 500, 5, 4);
    let trimmed: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let (status, _) = server.send("trimmed", text).await;
    assert_eq!(status, 200);
    let trimmed_total = |q: &'static str| {
        let server = &server;
        async move {
            let (status, body) = search_in(server, "trimmed", q, &[]).await;
            assert_eq!(status, 200, "{q}: {body}");
            body["total"].as_u64().unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while trimmed_total("*").await != 500 {
        assert!(
            Instant::now() < deadline,
            "trimmed stream never fully searchable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logins = trimmed
        .iter()
        .filter(|e| e["eventName"] == "ConsoleLogin")
        .count() as u64;
    assert_eq!(trimmed_total("eventName:ConsoleLogin").await, logins);
    let typed = trimmed
        .iter()
        .filter(|e| !e["userIdentity"]["type"].is_null())
        .count() as u64;
    assert_eq!(trimmed_total("userIdentity.type:*").await, typed);
    assert_eq!(trimmed_total("sourceIPAddress:*").await, 0);
    assert_eq!(trimmed_total("0.0.0.0/0").await, 0);
    let (_, body) = search_in(&server, "trimmed", "eventName:*", &[("limit", "1".into())]).await;
    assert!(
        body["hits"][0]["event"]["sourceIPAddress"].is_string(),
        "{body}"
    );
    // Indexes of an older layout: the restarted server replays the log into new ones.
    let data_dir = server.data_dir.clone();
    assert!(server.terminate());
    let layout = data_dir.join("search").join("LAYOUT");
    assert!(layout.exists());
    std::fs::write(&layout, "1\n").unwrap();
    let server = Server::start(&data_dir, None, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while total(&server, "*", &[]).await != 20_001 {
        assert!(Instant::now() < deadline, "search indexes were not rebuilt");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        total(&server, &format!("eventName:{rare}"), &[]).await,
        rare_count
    );
    assert_eq!(
        std::fs::read_to_string(&layout).unwrap().trim(),
        tw_search::LAYOUT_VERSION.to_string()
    );
}
