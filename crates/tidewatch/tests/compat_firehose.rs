//! Firehose: boto3 `put_record_batch` (per-record failures for records that are not JSON), and
//! the HTTP-endpoint delivery format (gzip body, base64 records, request id echoed) where a
//! retried request — also after a restart — stores nothing twice.

mod common;
#[path = "common/python.rs"]
mod python;

use std::collections::BTreeSet;
use std::io::Write;

use base64::Engine as _;
use common::{Server, write};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[lake]
flush_max_rows = 200
flush_max_age_ms = 300
"#;

const SCRIPT: &str = r#"
import gzip, json, sys
import boto3

f = boto3.client("firehose", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="AKIDTEST", aws_secret_access_key="secret")
records, bad = [], []
for i in range(200):
    if i % 25 == 7:
        records.append({"Data": b"<not json %d>" % i}); bad.append(i)
    elif i % 10 == 3:
        # CloudWatch Logs style: gzip-compressed JSON.
        records.append({"Data": gzip.compress(json.dumps({"n": i, "kind": "gz"}).encode())})
    else:
        records.append({"Data": (json.dumps({"n": i}) + "\n").encode()})
r = f.put_record_batch(DeliveryStreamName="fh_events", Records=records)
assert r["FailedPutCount"] == len(bad), r["FailedPutCount"]
ok = []
for i, got in enumerate(r["RequestResponses"]):
    if i in bad:
        assert got["ErrorCode"] == "InvalidArgumentException", got
    else:
        assert got["RecordId"], got
        ok.append(i)
r = f.put_record(DeliveryStreamName="fh_events", Record={"Data": b'{"n": 500}'})
assert r["RecordId"]
ok.append(500)
print(json.dumps({"ok": ok, "bad": len(bad)}))
"#;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

async fn deliver(server: &Server, request_id: &str, first: u64, count: u64) -> (u16, Value) {
    let records: Vec<Value> = (first..first + count)
        .map(|n| {
            json!({ "data": base64::engine::general_purpose::STANDARD
                .encode(format!("{{\"n\":{n},\"via\":\"http\"}}")) })
        })
        .collect();
    let body =
        json!({ "requestId": request_id, "timestamp": 1_700_000_000_000u64, "records": records });
    let response = server
        .client
        .post(format!("{}/firehose/fh_http", server.url))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("x-amz-firehose-request-id", request_id)
        .header("x-amz-firehose-protocol-version", "1.0")
        .body(gzip(body.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn numbers(server: &Server, stream: &str) -> BTreeSet<u64> {
    let rows = server
        .sql(&format!(
            "SELECT n, count(*) AS c FROM {stream} GROUP BY n ORDER BY n"
        ))
        .await;
    rows.iter()
        .map(|row| {
            assert_eq!(row["c"], 1, "stored more than once: {row}");
            row["n"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_put_record_batch_reports_failures_per_record() {
    let python = python::require(&["boto3"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "tidewatch.toml", CONFIG);
    let server = Server::start(&dir.path().join("data"), Some(&config), &[]);
    let result = python::run(
        &python,
        dir.path(),
        "firehose.py",
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
    assert_eq!(acknowledged.len(), 200 - 8 + 1);
    assert_eq!(numbers(&server, "fh_events").await, acknowledged);
    let (_, dlq) = server.get("/api/v1/dlq?stream=fh_events&limit=100").await;
    assert_eq!(
        dlq["entries"].as_array().unwrap().len() as u64,
        result["bad"].as_u64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoint_retries_with_the_same_request_id_do_not_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "tidewatch.toml", CONFIG);
    let data = dir.path().join("data");
    let server = Server::start(&data, Some(&config), &[]);
    let (status, answer) = deliver(&server, "req-1", 0, 100).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["requestId"], "req-1");
    assert!(answer["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    for _ in 0..3 {
        assert_eq!(deliver(&server, "req-1", 0, 100).await.0, 200);
    }
    assert_eq!(deliver(&server, "req-2", 100, 50).await.0, 200);
    let expected: BTreeSet<u64> = (0..150).collect();
    assert_eq!(numbers(&server, "fh_http").await, expected);

    // A malformed body is refused with the request id echoed and an error message.
    let response = server
        .client
        .post(format!("{}/firehose/fh_http", server.url))
        .header("x-amz-firehose-request-id", "req-bad")
        .body("{\"records\": 5}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["requestId"], "req-bad");
    assert!(answer["errorMessage"].as_str().unwrap().contains("invalid"));

    // After a restart the ids are still known.
    assert!(server.terminate());
    let server = Server::start(&data, Some(&config), &[]);
    assert_eq!(deliver(&server, "req-1", 0, 100).await.0, 200);
    assert_eq!(deliver(&server, "req-2", 100, 50).await.0, 200);
    assert_eq!(numbers(&server, "fh_http").await, expected);
}
