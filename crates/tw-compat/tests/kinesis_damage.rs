//! A Kinesis shard reader meeting damage on disk (a flipped bit the log's checksums catch)
//! gets the records before it, then an empty page whose iterator is past it, then the rest:
//! it is never stuck on an error it can do nothing about. Regression: `GetRecords` failed at
//! the damage on every call, so the reader could not go on.

mod common;

use base64::Engine as _;
use bytes::Bytes;
use common::Server;
use serde_json::{Value, json};
use tw_compat::AuthConfig;
use tw_core::{AppendRecord, StreamName};
use tw_log::Log;
use tw_log::testing::damage_record;

const RECORDS: u64 = 8;
const DAMAGED: u64 = 3;

async fn call(server: &Server, operation: &str, body: Value) -> Value {
    let target = format!("Kinesis_20131202.{operation}");
    let answer = server
        .request(
            "POST",
            "/",
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", &target),
            ],
            body.to_string().as_bytes(),
        )
        .await;
    assert_eq!(answer.status, 200, "{operation}: {}", answer.json());
    answer.json()
}

#[tokio::test]
async fn get_records_steps_over_damaged_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    server.create_stream("k", 1);
    let name = StreamName::new("k").unwrap();
    for n in 0..RECORDS {
        let record = AppendRecord {
            ingest_time_ms: 1,
            event_time_ms: 1,
            key: Bytes::from_static(b"pk"),
            payload: Bytes::from(format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(40))),
        };
        server.log.append(&name, 0, vec![record]).await.unwrap();
    }
    damage_record(&dir.path().join("log/k/0"), DAMAGED);

    let shards = call(&server, "ListShards", json!({"StreamName": "k"})).await;
    let shard = shards["Shards"][0]["ShardId"].as_str().unwrap().to_string();
    let iterator = call(
        &server,
        "GetShardIterator",
        json!({"StreamName": "k", "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}),
    )
    .await;
    let mut iterator = iterator["ShardIterator"].as_str().unwrap().to_string();
    let mut pages = Vec::new();
    for _ in 0..4 {
        let page = call(&server, "GetRecords", json!({"ShardIterator": iterator})).await;
        let numbers: Vec<u64> = page["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap())
                    .unwrap();
                serde_json::from_slice::<Value>(&data).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        pages.push(numbers);
        iterator = page["NextShardIterator"].as_str().unwrap().to_string();
    }
    assert_eq!(
        pages,
        [vec![0, 1, 2], vec![], vec![4, 5, 6, 7], vec![]],
        "records before the damage, a page stepping over it, the rest, the end"
    );
    server.stop().await;
}
