//! Kinesis Data Streams with the real boto3 client: streams and shards, `put_record`,
//! `put_records` with 500 records and partial failures, reading every shard back in order with
//! each iterator type, and exact accounting — every record boto3 was told succeeded is found by
//! SQL exactly once, every failed one is in the dead-letter queue.

mod common;
#[path = "common/python.rs"]
mod python;

use std::collections::BTreeSet;

use common::{Server, write};
use serde_json::Value;

const CONFIG: &str = r#"
[lake]
flush_max_rows = 200
flush_max_age_ms = 300
"#;

const SCRIPT: &str = r#"
import base64, hashlib, json, sys, time
import boto3
from botocore.exceptions import ClientError

url = sys.argv[1]
k = boto3.client("kinesis", endpoint_url=url, region_name="eu-west-1",
                 aws_access_key_id="AKIDTEST", aws_secret_access_key="secret")

def code(call, **kw):
    try:
        call(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{call.__name__} should have failed")

k.create_stream(StreamName="orders", ShardCount=3)
assert code(k.create_stream, StreamName="orders", ShardCount=3) == "ResourceInUseException"
assert code(k.describe_stream, StreamName="nope") == "ResourceNotFoundException"
desc = k.describe_stream(StreamName="orders")["StreamDescription"]
assert desc["StreamStatus"] == "ACTIVE" and desc["StreamARN"].startswith("arn:aws:kinesis:eu-west-1:")
shards = desc["Shards"]
assert [s["ShardId"] for s in shards] == [s["ShardId"] for s in k.list_shards(StreamName="orders")["Shards"]]
assert len(shards) == 3
ranges = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]), s["ShardId"]) for s in shards]
assert ranges[0][0] == 0 and ranges[-1][1] == 2**128 - 1
assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(2))
assert k.describe_stream_summary(StreamName="orders")["StreamDescriptionSummary"]["OpenShardCount"] == 3
assert "orders" in k.list_streams()["StreamNames"]

def shard_of(key, explicit=None):
    h = int(explicit) if explicit is not None else int(hashlib.md5(key.encode()).hexdigest(), 16)
    return next(sid for lo, hi, sid in ranges if lo <= h <= hi)

def doc(i):
    body = {"id": i, "user": f"u{i % 37}", "ts": "2024-05-01T10:00:00Z", "pad": ""}
    body["pad"] = "x" * (600 - len(json.dumps(body)))
    return json.dumps(body).encode()

before = time.time() - 1
ok = {}  # id -> (shard, sequence number)
r = k.put_record(StreamName="orders", Data=doc(0), PartitionKey="u0")
assert r["ShardId"] == shard_of("u0"), (r, shard_of("u0"))
ok[0] = (r["ShardId"], r["SequenceNumber"])
first_seq = r["SequenceNumber"]
assert code(k.put_record, StreamName="orders", Data=b"not json", PartitionKey="u0") == "InvalidArgumentException"

records = [{"Data": doc(i), "PartitionKey": f"u{i % 37}"} for i in range(1, 501)]
r = k.put_records(StreamName="orders", Records=records)
assert r["FailedRecordCount"] == 0, r["FailedRecordCount"]
for i, (sent, got) in enumerate(zip(records, r["Records"]), start=1):
    assert got["ShardId"] == shard_of(sent["PartitionKey"])
    ok[i] = (got["ShardId"], got["SequenceNumber"])

# Partial failure: every fifth record is not JSON; the others are stored.
mixed, bad = [], []
for j, i in enumerate(range(501, 541)):
    if j % 5 == 0:
        mixed.append({"Data": b"plain text %d" % i, "PartitionKey": "k"}); bad.append(j)
    else:
        mixed.append({"Data": doc(i), "PartitionKey": f"u{i % 37}"})
# Explicit hash keys pick the shard regardless of the partition key.
mixed.append({"Data": doc(541), "PartitionKey": "u0", "ExplicitHashKey": str(2**128 - 1)})
r = k.put_records(StreamName="orders", Records=mixed)
assert r["FailedRecordCount"] == len(bad), r
for j, got in enumerate(r["Records"]):
    i = 501 + j
    if j in bad:
        assert got["ErrorCode"] == "InvalidArgumentException" and "dead-letter" in got["ErrorMessage"], got
    else:
        assert "ErrorCode" not in got, got
        ok[i] = (got["ShardId"], got["SequenceNumber"])
assert ok[541][0] == ranges[-1][2]

# Read every shard from the start: each holds exactly its records, in put order.
read = {}
for lo, hi, sid in ranges:
    it = k.get_shard_iterator(StreamName="orders", ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    seqs = []
    while True:
        out = k.get_records(ShardIterator=it, Limit=97)
        for rec in out["Records"]:
            body = json.loads(rec["Data"])
            assert body["id"] not in read, "a record read twice"
            read[body["id"]] = (sid, rec["SequenceNumber"])
            seqs.append(rec["SequenceNumber"])
            assert rec["PartitionKey"]
        it = out["NextShardIterator"]
        if not out["Records"]:
            assert out["MillisBehindLatest"] == 0
            break
    assert seqs == sorted(seqs) and seqs == sorted(seqs, key=int), "sequence numbers sort like offsets"
assert read == ok, "read back exactly what was acknowledged"
for lo, hi, sid in ranges:
    in_order = sorted((int(ok[i][1]), i) for i in ok if ok[i][0] == sid)
    assert [i for _, i in in_order] == sorted(i for i in ok if ok[i][0] == sid), "per-shard order is put order"

# The other iterator types.
sid0, seq0 = ok[0]
def first(kind, **kw):
    it = k.get_shard_iterator(StreamName="orders", ShardId=sid0, ShardIteratorType=kind, **kw)["ShardIterator"]
    recs = k.get_records(ShardIterator=it, Limit=1)["Records"]
    return json.loads(recs[0]["Data"])["id"] if recs else None
assert first("AT_SEQUENCE_NUMBER", StartingSequenceNumber=seq0) == 0
after = first("AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seq0)
assert after == min(i for i in ok if ok[i][0] == sid0 and i > 0)
assert first("AT_TIMESTAMP", Timestamp=before) == 0
assert first("LATEST") is None
assert code(k.get_records, ShardIterator="garbage") == "InvalidArgumentException"

print(json.dumps({"ok": sorted(ok), "failed": len(bad) + 1}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_kinesis_producer_and_consumer_work_unchanged() {
    let python = python::require(&["boto3"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "tidewatch.toml", CONFIG);
    let server = Server::start(&dir.path().join("data"), Some(&config), &[]);
    let result = python::run(
        &python,
        dir.path(),
        "kinesis.py",
        SCRIPT,
        std::slice::from_ref(&server.url),
        &[],
    )
    .await;
    let acknowledged: BTreeSet<u64> = result["ok"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(acknowledged.len(), 1 + 500 + 32 + 1);

    // Exact accounting in SQL: every acknowledged record once, nothing else.
    let rows = server
        .sql("SELECT id, count(*) AS n FROM orders GROUP BY id ORDER BY id")
        .await;
    let mut found = BTreeSet::new();
    for row in &rows {
        assert_eq!(row["n"], 1, "stored more than once: {row}");
        found.insert(row["id"].as_u64().unwrap());
    }
    assert_eq!(found, acknowledged);

    // Every refused record is in the dead-letter queue with its reason.
    let (status, dlq) = server.get("/api/v1/dlq?stream=orders&limit=1000").await;
    assert_eq!(status, 200);
    let entries: Vec<&Value> = dlq["entries"].as_array().unwrap().iter().collect();
    assert_eq!(entries.len() as u64, result["failed"].as_u64().unwrap());
    for entry in entries {
        assert!(
            entry["reason"].as_str().unwrap().contains("invalid JSON"),
            "{entry}"
        );
    }
}
