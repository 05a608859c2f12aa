//! `[auth]`: with keys configured, every endpoint demands its own credential — API keys on the
//! native API and `_bulk`, AWS SigV4 (verified against the configured secret) on Kinesis and
//! Firehose, the access key on the Firehose HTTP endpoint — and a refused request stores
//! nothing. Real clients: boto3 signing with a wrong secret is refused, with the right one works.

mod common;
#[path = "common/python.rs"]
mod python;

use std::process::Command;

use common::{Server, binary, write};
use serde_json::json;

const CONFIG: &str = r#"
[lake]
flush_max_rows = 100
flush_max_age_ms = 300

[auth]
api_keys = ["native-key"]
firehose_access_keys = ["fh-key"]

[[auth.aws_keys]]
access_key_id = "AKIDGOOD"
secret_access_key = "good-secret"
"#;

const SCRIPT: &str = r#"
import json, sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from elasticsearch import Elasticsearch, helpers, AuthenticationException, AuthorizationException

url = sys.argv[1]
def kinesis(key, secret):
    return boto3.client("kinesis", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}))

def refused(call, **kw):
    try:
        call(**kw)
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
    raise AssertionError("should have been refused")

good = kinesis("AKIDGOOD", "good-secret")
good.create_stream(StreamName="secure", ShardCount=2)
wrong_secret = kinesis("AKIDGOOD", "wrong-secret")
unknown_key = kinesis("AKIDNOPE", "good-secret")
assert refused(wrong_secret.put_record, StreamName="secure", Data=b'{"n": -1}', PartitionKey="a") == (403, "UnrecognizedClientException")
assert refused(unknown_key.put_record, StreamName="secure", Data=b'{"n": -2}', PartitionKey="a") == (403, "UnrecognizedClientException")
assert refused(wrong_secret.create_stream, StreamName="sneaky", ShardCount=1)[0] == 403
r = good.put_records(StreamName="secure", Records=[{"Data": json.dumps({"n": i}).encode(), "PartitionKey": str(i)} for i in range(50)])
assert r["FailedRecordCount"] == 0
assert "sneaky" not in good.list_streams()["StreamNames"]

fh_wrong = boto3.client("firehose", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="AKIDGOOD", aws_secret_access_key="nope",
                        config=Config(retries={"max_attempts": 1}))
assert refused(fh_wrong.put_record, DeliveryStreamName="secure", Record={"Data": b'{"n": -3}'})[0] == 403

try:
    Elasticsearch(url).info()
    raise AssertionError("no api key must be refused")
except AuthenticationException:
    pass
try:
    helpers.bulk(Elasticsearch(url, api_key="wrong"), [{"_index": "secure", "_source": {"n": -4}}])
    raise AssertionError("wrong api key must be refused")
except AuthorizationException:
    pass
es = Elasticsearch(url, api_key="native-key")
ok, _ = helpers.bulk(es, [{"_index": "secure", "_source": {"n": 50 + i}} for i in range(10)])
assert ok == 10
print(json.dumps({"stored": 60}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_are_refused_and_store_nothing() {
    let python = python::require(&["boto3", "elasticsearch"]);
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "tidewatch.toml", CONFIG);
    let mut server = Server::start(&dir.path().join("data"), Some(&config), &[]);

    // Native API: 401 without a key, 403 with a wrong one; health checks stay open.
    let post = |key: Option<&str>| {
        let mut request = server
            .client
            .post(format!("{}/api/v1/streams/secure/events", server.url))
            .body("{\"n\":-5}");
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("nope")).await.unwrap().status(), 403);
    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.get("/api/v1/streams").await.0, 401);

    let result = python::run(
        &python,
        dir.path(),
        "auth.py",
        SCRIPT,
        &[server.url.clone()],
        &[],
    )
    .await;
    assert_eq!(result["stored"], 60);

    // Firehose HTTP endpoint: the access key header.
    let deliver = |key: Option<&str>, id: &str| {
        let mut request = server
            .client
            .post(format!("{}/firehose/secure", server.url))
            .header("x-amz-firehose-request-id", id)
            .body(
                json!({"requestId": id, "timestamp": 1, "records": [{"data": "eyJuIjogNjB9"}]})
                    .to_string(),
            );
        if let Some(key) = key {
            request = request.header("x-amz-firehose-access-key", key);
        }
        request.send()
    };
    let refused = deliver(None, "r1").await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("Access-Key")
    );
    assert_eq!(deliver(Some("wrong"), "r2").await.unwrap().status(), 403);
    assert_eq!(deliver(Some("fh-key"), "r3").await.unwrap().status(), 200);

    // The CLI passes TIDEWATCH_API_KEY.
    let input = write(dir.path(), "one.ndjson", "{\"n\":61}\n");
    let send = |key: Option<&str>| {
        let mut command = Command::new(binary());
        command
            .args(["send", "--stream", "secure", "--server", &server.url])
            .arg(&input)
            .env_remove("TIDEWATCH_API_KEY");
        if let Some(key) = key {
            command.env("TIDEWATCH_API_KEY", key);
        }
        command.output().unwrap()
    };
    assert!(
        !send(None).status.success(),
        "send without a key is refused"
    );
    let sent = send(Some("native-key"));
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );

    // Exactly what the authorised clients stored: 0..=61 once, no negative (refused) numbers.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", "Bearer native-key".parse().unwrap());
    server.client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let rows = server
        .sql("SELECT n, count(*) AS c FROM secure GROUP BY n ORDER BY n")
        .await;
    let found: Vec<i64> = rows
        .iter()
        .map(|row| {
            assert_eq!(row["c"], 1, "{row}");
            row["n"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(found, (0..=61).collect::<Vec<i64>>());
}
