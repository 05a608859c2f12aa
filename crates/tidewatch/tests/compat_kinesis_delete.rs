//! Deleting streams, with the real boto3 client and with the native API: the stream, its
//! shards, offsets, hot rows and search index are gone, boto3's `stream_not_exists` waiter
//! returns, and a stream created again under the same name starts empty — its sequence numbers
//! continue where the deleted stream's ended, never reused — and `get_records`, SQL, search and
//! detection see only the new records, also after a restart, while the old lake files are
//! kept in the lake's archive.

mod common;
#[path = "common/python.rs"]
mod python;

use std::path::Path;
use std::time::Duration;

use common::{Server, write};
use serde_json::Value;

const CONFIG: &str = r#"
[lake]
flush_max_rows = 40
flush_max_age_ms = 200
"#;

/// Phase 1: a stream with 2 shards and 100 records of the first generation.
const CREATE: &str = r#"
import json, sys
import boto3

k = boto3.client("kinesis", endpoint_url=sys.argv[1], region_name="eu-west-1",
                 aws_access_key_id="AKIDTEST", aws_secret_access_key="secret")
k.create_stream(StreamName="clicks", ShardCount=2)
k.get_waiter("stream_exists").wait(StreamName="clicks", WaiterConfig={"Delay": 1})
records = [{"Data": json.dumps({"id": i, "gen": 1, "tag": "oldrun"}).encode(), "PartitionKey": f"k{i}"}
           for i in range(100)]
r = k.put_records(StreamName="clicks", Records=records)
assert r["FailedRecordCount"] == 0, r
shard0 = [int(x["SequenceNumber"]) for x in r["Records"] if x["ShardId"] == "shardId-000000000000"]
assert shard0 == list(range(len(shard0))), shard0
print(json.dumps({"shards": sorted({x["ShardId"] for x in r["Records"]}), "shard0": len(shard0)}))
"#;

/// Phase 2: delete (errors as Kinesis), wait, create again with one shard, read it back.
const RECREATE: &str = r#"
import json, sys
import boto3
from botocore.exceptions import ClientError

k = boto3.client("kinesis", endpoint_url=sys.argv[1], region_name="eu-west-1",
                 aws_access_key_id="AKIDTEST", aws_secret_access_key="secret")

def code(call, **kw):
    try:
        call(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{call.__name__} should have failed")

assert code(k.delete_stream, StreamName="nope") == "ResourceNotFoundException"
assert code(k.delete_stream, StreamName="_dlq") in ("InvalidArgumentException", "ValidationException")
arn = k.describe_stream_summary(StreamName="clicks")["StreamDescriptionSummary"]["StreamARN"]
old_iterator = k.get_shard_iterator(StreamName="clicks", ShardId="shardId-000000000000",
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]

k.delete_stream(StreamARN=arn, EnforceConsumerDeletion=True)
k.get_waiter("stream_not_exists").wait(StreamName="clicks", WaiterConfig={"Delay": 1, "MaxAttempts": 5})
assert code(k.describe_stream, StreamName="clicks") == "ResourceNotFoundException"
assert code(k.describe_stream_summary, StreamName="clicks") == "ResourceNotFoundException"
assert code(k.list_shards, StreamName="clicks") == "ResourceNotFoundException"
assert code(k.put_record, StreamName="clicks", Data=b"{}", PartitionKey="a") == "ResourceNotFoundException"
assert code(k.get_records, ShardIterator=old_iterator) == "ResourceNotFoundException"
assert code(k.delete_stream, StreamName="clicks") == "ResourceNotFoundException"
assert "clicks" not in k.list_streams()["StreamNames"]

k.create_stream(StreamName="clicks", ShardCount=1)
k.get_waiter("stream_exists").wait(StreamName="clicks", WaiterConfig={"Delay": 1})
shards = k.list_shards(StreamName="clicks")["Shards"]
assert [s["ShardId"] for s in shards] == ["shardId-000000000000"], shards
# Empty, starting where the deleted stream's shard ended (sequence numbers are never reused).
start = int(shards[0]["SequenceNumberRange"]["StartingSequenceNumber"])
assert start == int(sys.argv[2]), (start, sys.argv[2])
it = k.get_shard_iterator(StreamName="clicks", ShardId="shardId-000000000000",
                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
assert k.get_records(ShardIterator=it)["Records"] == []
records = [{"Data": json.dumps({"id": 1000 + i, "gen": 2, "tag": "newrun"}).encode(), "PartitionKey": f"k{i}"}
           for i in range(10)]
r = k.put_records(StreamName="clicks", Records=records)
assert r["FailedRecordCount"] == 0, r
assert [x["SequenceNumber"] for x in r["Records"]] == ["%020d" % (start + i) for i in range(10)], r

it = k.get_shard_iterator(StreamName="clicks", ShardId="shardId-000000000000",
                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
seen = []
while True:
    out = k.get_records(ShardIterator=it)
    seen += [json.loads(x["Data"]) for x in out["Records"]]
    it = out["NextShardIterator"]
    if not out["Records"]:
        break
assert [x["id"] for x in seen] == list(range(1000, 1010)), seen
print(json.dumps({"read": len(seen)}))
"#;

async fn search_total(server: &Server, stream: &str, query: &str) -> u64 {
    let (status, body) = server
        .get(&format!("/api/v1/streams/{stream}/search?q={query}"))
        .await;
    assert_eq!(status, 200, "search {query}: {body}");
    body["total"].as_u64().expect("total")
}

async fn delete(server: &Server, stream: &str) -> (u16, Value) {
    let response = server
        .client
        .delete(format!("{}/api/v1/streams/{stream}", server.url))
        .send()
        .await
        .expect("delete");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Parquet files under `dir`, recursively.
fn parquet_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                parquet_files(&path)
            } else {
                usize::from(path.extension().is_some_and(|e| e == "parquet"))
            }
        })
        .sum()
}

async fn create_rule(server: &Server) {
    let created = server
        .client
        .post(format!("{}/api/v1/rules", server.url))
        .header("content-type", "application/yaml")
        .body("id: clicks-seen\ntitle: Click\nstream: clicks\nseverity: low\nmatch: { field: tag, equals: newrun }\n")
        .send()
        .await
        .expect("rule");
    assert_eq!(created.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_delete_stream_then_create_again_starts_empty() {
    let python = python::require(&["boto3"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "tidewatch.toml", CONFIG);
    let data = dir.path().join("data");
    let server = Server::start(&data, Some(&config), &[]);
    create_rule(&server).await;
    let url = std::slice::from_ref(&server.url);
    let created = python::run(&python, dir.path(), "create.py", CREATE, url, &[]).await;
    assert_eq!(created["shards"].as_array().unwrap().len(), 2);
    let shard0_end = created["shard0"].as_u64().unwrap();

    // The first generation everywhere: SQL (files and hot rows), search, the lake on disk.
    assert_eq!(
        server.sql_count("SELECT count(*) AS n FROM clicks").await,
        100
    );
    server
        .eventually(
            "old records searchable",
            Duration::from_secs(10),
            || async { search_total(&server, "clicks", "oldrun").await == 100 },
        )
        .await;
    let lake = data.join("lake");
    server
        .eventually(
            "old records in Parquet files",
            Duration::from_secs(10),
            || async { parquet_files(&lake.join("clicks")) > 0 },
        )
        .await;

    let args = [server.url.clone(), shard0_end.to_string()];
    let recreated = python::run(&python, dir.path(), "recreate.py", RECREATE, &args, &[]).await;
    assert_eq!(recreated["read"], 10);

    // Only the new generation: SQL, search, detection (whose offsets started again at 0, so it
    // did not skip the new records as already seen).
    let rows = server
        .sql("SELECT gen, count(*) AS n, min(_offset) AS first FROM clicks GROUP BY gen")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0]["gen"].as_u64(), rows[0]["n"].as_u64()),
        (Some(2), Some(10))
    );
    assert_eq!(rows[0]["first"], shard0_end);
    server
        .eventually(
            "new records searchable",
            Duration::from_secs(10),
            || async { search_total(&server, "clicks", "newrun").await == 10 },
        )
        .await;
    assert_eq!(search_total(&server, "clicks", "oldrun").await, 0);
    server
        .eventually("10 alerts", Duration::from_secs(10), || async {
            server.alerts(Some("clicks-seen")).await.len() == 10
        })
        .await;
    // The first generation's lake files are kept in the archive, out of the stream's table.
    let archived = parquet_files(&lake.join(".deleted").join("clicks"));
    assert!(archived > 0, "no archived lake files");
    let (_, view) = server.get("/api/v1/streams/clicks").await;
    assert_eq!(view["partitions"].as_array().unwrap().len(), 1, "{view}");
    assert_eq!(view["partitions"][0]["start_offset"], shard0_end, "{view}");
    assert_eq!(
        view["partitions"][0]["end_offset"],
        shard0_end + 10,
        "{view}"
    );

    // After a restart: nothing comes back, nothing is lost or doubled.
    assert!(server.terminate());
    let server = Server::start(&data, Some(&config), &[]);
    assert_eq!(
        server.sql_count("SELECT count(*) AS n FROM clicks").await,
        10
    );
    assert_eq!(
        server
            .sql_count("SELECT count(*) AS n FROM clicks WHERE gen = 2")
            .await,
        10
    );
    assert_eq!(search_total(&server, "clicks", "oldrun").await, 0);
    assert_eq!(
        parquet_files(&lake.join(".deleted").join("clicks")),
        archived
    );
    assert_eq!(server.alerts(Some("clicks-seen")).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_delete_has_the_same_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "tidewatch.toml", CONFIG);
    let data = dir.path().join("data");
    let server = Server::start(&data, Some(&config), &[]);
    let batch = |tag: &str, n: usize| {
        (0..n)
            .map(|i| format!(r#"{{"i":{i},"tag":"{tag}"}}"#))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(server.send("web", batch("first", 50)).await.0, 200);
    let history = batch("imported", 5);
    let import = || async {
        let response = server
            .client
            .post(format!(
                "{}/api/v1/streams/web/import?name=history.ndjson",
                server.url
            ))
            .body(history.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let (status, report) = import().await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(server.sql_count("SELECT count(*) AS n FROM web").await, 55);
    let (_, before) = server.get("/api/v1/streams/web").await;
    let ends: Vec<Value> = before["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["end_offset"].clone())
        .collect();

    let (status, body) = delete(&server, "web").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stream"], "web");
    assert_eq!(body["consumers_pending"], serde_json::json!([]), "{body}");
    assert!(
        body["lake_archive"]
            .as_str()
            .unwrap()
            .contains(".deleted/web"),
        "{body}"
    );
    assert_eq!(server.get("/api/v1/streams/web").await.0, 404);
    let (status, body) = delete(&server, "web").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("does not exist"));
    let (_, streams) = server.get("/api/v1/streams").await;
    assert!(
        !streams
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "web"),
        "{streams}"
    );
    // Internal streams and invalid names are refused.
    assert_eq!(delete(&server, "_dlq").await.0, 400);

    // The name is free: the next event creates an empty stream, whose partitions continue
    // where the deleted ones ended.
    assert_eq!(server.send("web", batch("second", 7)).await.0, 200);
    let rows = server
        .sql("SELECT tag, count(*) AS n FROM web GROUP BY tag")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["tag"], "second");
    assert_eq!(rows[0]["n"], 7);
    // Its imports start afresh too: the same file is imported again, not "already imported".
    let (status, report) = import().await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        server
            .sql_count("SELECT count(*) AS n FROM web WHERE tag = 'imported'")
            .await,
        5,
        "{report}"
    );
    let (_, after) = server.get("/api/v1/streams/web").await;
    let starts: Vec<Value> = after["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start_offset"].clone())
        .collect();
    assert_eq!(starts, ends, "{after}");
}
