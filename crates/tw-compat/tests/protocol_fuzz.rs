//! Mutation fuzzing of the drop-in protocols' decoders, through the real router (seeded, so a
//! failure reproduces): Elasticsearch `_bulk`, the Kinesis and Firehose JSON APIs and the
//! Firehose HTTP-endpoint delivery, each fed mutated valid requests. Whatever the bytes, the
//! server answers (a panic would drop the connection), with a client error rather than a
//! server error (the log is healthy), in the protocol's JSON error shape (boto3 and the
//! Elasticsearch clients parse error bodies; a Firehose answer always echoes the request id),
//! and keeps serving valid requests. Mutated credentials (SigV4, API key, Firehose access key)
//! are refused the same way and store nothing.

mod common;

use common::{Answer, Server};
use tw_compat::AuthConfig;
use tw_testkit::rng::Rng;

/// Pieces of the protocols' own syntax, so that mutations reach past the first parse.
const PIECES: [&str; 24] = [
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "\n",
    "\\",
    "null",
    "-1",
    "1e400",
    "\"\"",
    "{}",
    "\"_index\"",
    "\"_id\"",
    "\"Data\"",
    "\"PartitionKey\"",
    "\"StreamName\"",
    "\"records\"",
    "\"data\"",
    "\"ShardIterator\"",
    "\u{0}",
    "\u{ffff}",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            1 => out.insert(at.min(out.len()), rng.next_u64() as u8),
            2 => {
                if at < out.len() {
                    out[at] ^= 1 << rng.below(8);
                }
            }
            3 | 4 => {
                let piece = PIECES[rng.below(PIECES.len())].as_bytes();
                out.splice(at..at, piece.iter().copied());
            }
            _ => {
                // Repeat a stretch: long keys, many records, deep nesting.
                let end = (at + 1 + rng.below(32)).min(out.len());
                let stretch = out[at.min(end)..end].to_vec();
                for _ in 0..rng.below(8) {
                    out.splice(at..at, stretch.iter().copied());
                }
            }
        }
    }
    out
}

/// One protocol entry point and valid requests to mutate.
struct Target {
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    seeds: Vec<Vec<u8>>,
}

fn seeds(texts: &[&str]) -> Vec<Vec<u8>> {
    texts.iter().map(|text| text.as_bytes().to_vec()).collect()
}

fn gzip(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

fn amz(target: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target),
    ]
}

fn targets() -> Vec<Target> {
    let bulk = concat!(
        "{\"index\":{\"_index\":\"web\",\"_id\":\"1\"}}\n{\"a\":1,\"b\":{\"c\":[1,2]}}\n",
        "{\"create\":{}}\n{\"b\":\"x\"}\n",
        "{\"delete\":{\"_id\":\"3\"}}\n",
        "{\"update\":{\"_id\":\"4\"}}\n{\"doc\":{\"c\":1}}\n",
    );
    vec![
        Target {
            path: "/_bulk",
            headers: vec![("content-type", "application/x-ndjson")],
            seeds: seeds(&[bulk]),
        },
        Target {
            path: "/_bulk",
            headers: vec![
                ("content-type", "application/x-ndjson"),
                ("content-encoding", "gzip"),
            ],
            seeds: vec![gzip(bulk)],
        },
        Target {
            path: "/web/_bulk?refresh=true",
            headers: vec![(
                "content-type",
                "application/vnd.elasticsearch+x-ndjson; compatible-with=8",
            )],
            seeds: seeds(&[bulk]),
        },
        Target {
            path: "/",
            headers: amz("Kinesis_20131202.PutRecords"),
            seeds: seeds(&[
                r#"{"StreamName":"k","Records":[{"Data":"eyJhIjoxfQ==","PartitionKey":"p"},{"Data":"bm90IGpzb24=","PartitionKey":"q","ExplicitHashKey":"1"}]}"#,
            ]),
        },
        Target {
            path: "/",
            headers: amz("Kinesis_20131202.PutRecord"),
            seeds: seeds(&[r#"{"StreamName":"k","Data":"eyJhIjoxfQ==","PartitionKey":"p"}"#]),
        },
        Target {
            path: "/",
            headers: amz("Kinesis_20131202.GetShardIterator"),
            seeds: seeds(&[
                r#"{"StreamName":"k","ShardId":"shardId-000000000000","ShardIteratorType":"AT_SEQUENCE_NUMBER","StartingSequenceNumber":"49590338271490256608559692538361571095921575989136588898"}"#,
                r#"{"StreamName":"k","ShardId":"shardId-000000000001","ShardIteratorType":"AT_TIMESTAMP","Timestamp":1700000000.5}"#,
            ]),
        },
        Target {
            path: "/",
            headers: amz("Kinesis_20131202.GetRecords"),
            seeds: seeds(&[r#"{"ShardIterator":"AAAAAAAAAAGhm1Cq9ocS3Q==","Limit":10}"#]),
        },
        Target {
            path: "/",
            headers: amz("Kinesis_20131202.ListShards"),
            seeds: seeds(&[
                r#"{"StreamName":"k","MaxResults":1}"#,
                r#"{"NextToken":"c2hhcmRJZC0wMDAwMDAwMDAwMDA=","MaxResults":1}"#,
            ]),
        },
        Target {
            path: "/",
            headers: amz("Kinesis_20131202.DescribeStream"),
            seeds: seeds(&[
                r#"{"StreamName":"k","Limit":1,"ExclusiveStartShardId":"shardId-000000000000"}"#,
            ]),
        },
        Target {
            path: "/",
            headers: amz("Firehose_20150804.PutRecordBatch"),
            seeds: seeds(&[
                r#"{"DeliveryStreamName":"f","Records":[{"Data":"eyJhIjoxfQ=="},{"Data":"eyJiIjoyfQo="}]}"#,
            ]),
        },
        Target {
            path: "/firehose/f",
            headers: vec![
                ("content-type", "application/json"),
                ("x-amz-firehose-request-id", "r-1"),
            ],
            seeds: seeds(&[
                r#"{"requestId":"r-1","timestamp":1700000000000,"records":[{"data":"eyJhIjoxfQ=="},{"data":"bm90IGpzb24="}]}"#,
            ]),
        },
    ]
}

/// What every answer must be, whatever was sent.
fn check(target: &Target, body: &[u8], answer: &Answer) {
    let shown = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    assert!(
        answer.status < 500,
        "{} {:?} answered {} to {:?}: {}",
        target.path,
        target.headers,
        answer.status,
        shown(),
        String::from_utf8_lossy(&answer.body)
    );
    assert!(
        serde_json::from_slice::<serde_json::Value>(&answer.body).is_ok(),
        "{} {:?} answered {} with a body that is not JSON to {:?}: {:?}",
        target.path,
        target.headers,
        answer.status,
        shown(),
        String::from_utf8_lossy(&answer.body)
    );
    if target.path.starts_with("/firehose/") {
        // Firehose matches answers to deliveries by the request id, errors included.
        assert_eq!(answer.json()["requestId"], "r-1", "{:?}", shown());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_get_json_client_errors_or_answers_and_never_break_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), AuthConfig::default()).await;
    let create = server
        .request(
            "POST",
            "/",
            &amz("Kinesis_20131202.CreateStream"),
            br#"{"StreamName":"k","ShardCount":2}"#,
        )
        .await;
    assert_eq!(create.status, 200);

    let targets = targets();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut answered = [0usize; 2]; // [2xx, 4xx]
    for round in 0..4000 {
        let target = &targets[round % targets.len()];
        let seed = &target.seeds[rng.below(target.seeds.len())];
        let body = mutate(&mut rng, seed);
        let answer = server
            .request("POST", target.path, &target.headers, &body)
            .await;
        check(target, &body, &answer);
        answered[usize::from(answer.status >= 400)] += 1;
    }
    // Both kinds of answer were reached: the mutations neither all failed nor all passed.
    assert!(answered[0] > 200 && answered[1] > 200, "{answered:?}");

    // Still serving, and the stream was not damaged by what came before.
    let put = server
        .request(
            "POST",
            "/",
            &amz("Kinesis_20131202.PutRecord"),
            br#"{"StreamName":"k","Data":"eyJmaW5hbCI6dHJ1ZX0=","PartitionKey":"p"}"#,
        )
        .await;
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    assert!(
        server
            .records("k")
            .iter()
            .any(|record| record["final"] == true)
    );
    server.stop().await;
}

/// Printable ASCII only: a header with other bytes does not make it past HTTP parsing.
fn header_text(bytes: Vec<u8>) -> String {
    bytes
        .into_iter()
        .map(|b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                'x'
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_credentials_are_refused_with_json_errors_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let auth = AuthConfig {
        api_keys: vec!["tw-secret-key".into()],
        firehose_access_keys: vec!["fh-secret-key".into()],
        aws_keys: vec![tw_compat::AwsKey {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        }],
    };
    let server = Server::start(dir.path(), auth).await;
    let sigv4 = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261207/us-east-1/kinesis/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
                 Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
    let mut rng = Rng(0x5eed_0000_0000_0002);
    for round in 0..1500 {
        let answer = match round % 3 {
            0 => {
                let authorization = header_text(mutate(&mut rng, sigv4.as_bytes()));
                let date = header_text(mutate(&mut rng, b"20261207T031500Z"));
                let mut headers = amz("Kinesis_20131202.PutRecord");
                headers.extend([
                    ("authorization", authorization.as_str()),
                    ("x-amz-date", date.as_str()),
                ]);
                server
                    .request(
                        "POST",
                        "/",
                        &headers,
                        br#"{"StreamName":"k","Data":"eyJhIjoxfQ==","PartitionKey":"p"}"#,
                    )
                    .await
            }
            1 => {
                let authorization = header_text(mutate(&mut rng, b"ApiKey tw-secret-kez"));
                server
                    .request(
                        "POST",
                        "/_bulk",
                        &[
                            ("content-type", "application/x-ndjson"),
                            ("authorization", authorization.as_str()),
                        ],
                        b"{\"index\":{\"_index\":\"web\"}}\n{\"a\":1}\n",
                    )
                    .await
            }
            _ => {
                let key = header_text(mutate(&mut rng, b"fh-secret-kez"));
                server
                    .request(
                        "POST",
                        "/firehose/f",
                        &[
                            ("content-type", "application/json"),
                            ("x-amz-firehose-request-id", "r-1"),
                            ("x-amz-firehose-access-key", key.as_str()),
                        ],
                        br#"{"requestId":"r-1","timestamp":1,"records":[{"data":"eyJhIjoxfQ=="}]}"#,
                    )
                    .await
            }
        };
        // A mutation may in principle rebuild the right key; it did not with this seed.
        assert!(
            matches!(answer.status, 400 | 401 | 403),
            "round {round}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        assert!(
            serde_json::from_slice::<serde_json::Value>(&answer.body).is_ok(),
            "round {round}: {:?}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    for stream in ["k", "web", "f"] {
        assert!(server.records(stream).is_empty(), "{stream}");
    }
    assert!(server.dlq.is_empty().unwrap());
    server.stop().await;
}
