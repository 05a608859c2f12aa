//! Lake write throughput on CloudTrail-like events: conversion to Arrow, buffering and
//! Parquet flushes, no log and no HTTP. Usage:
//! `cargo run --release -p tw-lake --example lake_throughput -- [events] [batch]`.

use std::time::Instant;

use bytes::Bytes;
use serde_json::json;
use tw_core::{Record, StreamName};
use tw_lake::{Lake, LakeConfig};
use tw_pipeline::{Consumer, EventBatch};

fn event(i: u64) -> serde_json::Value {
    let names = [
        "ConsoleLogin",
        "AttachUserPolicy",
        "GetObject",
        "PutObject",
        "AssumeRole",
        "DescribeInstances",
    ];
    json!({
        "eventVersion": "1.08",
        "eventTime": "2024-05-01T10:00:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": names[(i % 6) as usize],
        "awsRegion": "us-east-1",
        "sourceIPAddress": format!("10.0.{}.{}", i % 256, (i / 256) % 256),
        "userAgent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.5.0 exe/x86_64.ubuntu.22",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": format!("AIDA{:016}", i % 5000),
            "arn": format!("arn:aws:iam::123456789012:user/user{}", i % 5000),
            "accountId": "123456789012",
            "userName": format!("user{}", i % 5000),
            "sessionContext": {"attributes": {"mfaAuthenticated": "false", "creationDate": "2024-05-01T09:00:00Z"}}
        },
        "requestParameters": {"policyArn": "arn:aws:iam::aws:policy/AdministratorAccess", "userName": "x"},
        "responseElements": null,
        "requestID": format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        "eventID": format!("{:032x}", i.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)),
        "readOnly": i.is_multiple_of(3),
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": "123456789012",
        "resources": [{"ARN": "arn:aws:iam::aws:policy/AdministratorAccess", "type": "AWS::IAM::Policy"}],
        "bytesTransferred": i % 100_000
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let batch_size: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let dir = tempfile::tempdir().expect("tmp dir");
    let lake = Lake::open(LakeConfig::new(dir.path())).expect("lake opens");
    let mut writer = lake.writer();
    writer.start(&Default::default()).expect("start");
    let stream = StreamName::new("cloudtrail").expect("valid name");
    let t0 = 1_714_557_600_000i64;
    // Records are generated one batch at a time outside the timed section; the timed part is
    // what the runner does with them for the lake: its parse hook, then `handle`.
    let make_records = |b: u64| -> Vec<Record> {
        let first = b * batch_size;
        (first..first + batch_size)
            .map(|offset| Record {
                offset,
                ingest_time_ms: t0,
                event_time_ms: t0 + offset as i64,
                key: Bytes::new(),
                payload: Bytes::from(event(offset).to_string()),
            })
            .collect()
    };
    let mut json_bytes = 0;
    let mut busy = std::time::Duration::ZERO;
    for b in 0..total / batch_size {
        let records = make_records(b);
        json_bytes += records.iter().map(|r| r.payload.len()).sum::<usize>();
        let started = Instant::now();
        let events = records
            .iter()
            .map(|record| writer.parse(&record.payload).expect("valid JSON").event)
            .collect();
        let batch = EventBatch {
            stream: stream.clone(),
            partition: (b % 4) as u32,
            records,
            events,
            checked: Vec::new(),
            fields: Vec::new(),
        };
        writer.handle(&batch).expect("handle");
        busy += started.elapsed();
    }
    let started = Instant::now();
    writer.flush().expect("flush");
    busy += started.elapsed();
    let elapsed = busy.as_secs_f64();
    let mut parquet_bytes = 0;
    let mut pending = vec![dir.path().join("cloudtrail")];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(d).expect("dir").flatten() {
            if entry.path().is_dir() {
                pending.push(entry.path());
            } else {
                parquet_bytes += entry.metadata().expect("meta").len();
            }
        }
    }
    let events = (total / batch_size) * batch_size;
    println!(
        "{events} events in {elapsed:.2} s: {:.0} events/s; {json_bytes} JSON bytes -> {parquet_bytes} Parquet bytes ({:.1}x)",
        events as f64 / elapsed,
        json_bytes as f64 / parquet_bytes as f64
    );
}
