//! A declared schema routes violations to the dead-letter queue with every problem named; after
//! the schema is fixed, replaying the dead letters stores them.

mod common;

use common::Server;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_violations_are_dead_lettered_and_replayable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, &[]);
    let put = |config: Value| {
        server
            .client
            .put(format!("{}/api/v1/streams/orders", server.url))
            .json(&config)
            .send()
    };
    let strict = json!({
        "partitions": 2, "partition_key": "user", "event_time_field": "ts",
        "schema": {"fields": [
            {"name": "user", "type": "string", "required": true},
            {"name": "amount", "type": "number", "required": true}
        ]}
    });
    assert_eq!(put(strict.clone()).await.unwrap().status(), 200);

    let body = [
        r#"{"user":"ann","amount":10,"ts":"2024-05-01T10:00:00Z"}"#,
        r#"{"user":"bob","amount":"ten","ts":"2024-05-01T10:00:01Z"}"#,
        r#"{"amount":3,"ts":"2024-05-01T10:00:02Z"}"#,
        r#"{"user":"ann","amount":4.5,"ts":"2024-05-01T10:00:03Z"}"#,
    ]
    .join("\n");
    let (status, outcome) = server.send("orders", body).await;
    assert_eq!(status, 200);
    assert_eq!(outcome["accepted"], 2, "{outcome}");
    let reasons: Vec<(u64, String)> = outcome["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 2);
    assert_eq!(reasons[0].0, 2);
    assert!(
        reasons[0]
            .1
            .contains("`amount` must be Number but is a string"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0, 3);
    assert!(
        reasons[1].1.contains("required field `user` is missing"),
        "{reasons:?}"
    );

    // The partition key places both of ann's events in one partition; event time comes from `ts`.
    let rows = server
        .sql(
            "SELECT _partition, count(*) AS n, min(_time) AS first FROM orders GROUP BY _partition",
        )
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["n"], 2);
    assert!(
        rows[0]["first"]
            .as_str()
            .unwrap()
            .starts_with("2024-05-01T10:00:00"),
        "{rows:?}"
    );

    // The stream's configuration and layout are visible; its partition count is fixed.
    let (_, view) = server.get("/api/v1/streams/orders").await;
    assert_eq!(view["config"]["partition_key"], "user");
    assert_eq!(view["partitions"].as_array().unwrap().len(), 2);
    let mut more = strict.clone();
    more["partitions"] = json!(3);
    assert_eq!(put(more).await.unwrap().status(), 400);
    let mut typo = strict.clone();
    typo["partiton_key"] = json!("x");
    assert_eq!(
        put(typo).await.unwrap().status(),
        400,
        "unknown keys are refused"
    );

    // Relax the schema, replay the dead letters of the stream: both are stored now.
    let mut relaxed = strict;
    relaxed["schema"] = Value::Null;
    assert_eq!(put(relaxed).await.unwrap().status(), 200);
    let replay = server
        .client
        .post(format!("{}/api/v1/dlq/replay", server.url))
        .json(&json!({"stream": "orders"}))
        .send()
        .await
        .unwrap();
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(
        (
            replay["replayed"].as_u64(),
            replay["accepted"].as_u64(),
            replay["rejected_again"].as_u64()
        ),
        (Some(2), Some(2), Some(0)),
        "{replay}"
    );
    assert_eq!(server.sql_count("SELECT count(*) FROM orders").await, 4);
}
