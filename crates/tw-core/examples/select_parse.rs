//! Throughput of the selective parser ([`FieldSelection::parse`]) that ingest (the event-time
//! field) and detection (the rules' fields) run on every event, on CloudTrail-like events.
//! Usage: `cargo run --release -p tw-core --example select_parse -- [events] [rounds] [fields|time]`;
//! with `fields`, the values are parsed into slots ([`FieldSelection::parse_fields`], what
//! detection reads) instead of a pruned tree; with `time`, a pruned tree of the conventional
//! event-time fields only (what ingest selects for a stream without a schema).

use std::time::Instant;

use tw_core::{FieldPath, FieldSelection};

fn event(i: u64) -> String {
    let names = [
        "ConsoleLogin",
        "AttachUserPolicy",
        "GetObject",
        "PutObject",
        "AssumeRole",
    ];
    format!(
        r#"{{"eventVersion":"1.08","userIdentity":{{"type":"IAMUser","principalId":"AIDA{i:016}","arn":"arn:aws:iam::123456789012:user/user{u}","accountId":"123456789012","userName":"user{u}","sessionContext":{{"attributes":{{"mfaAuthenticated":"false","creationDate":"2024-05-01T09:00:00Z"}}}}}},"eventTime":"2024-05-01T10:00:00Z","eventSource":"iam.amazonaws.com","eventName":"{name}","awsRegion":"us-east-1","sourceIPAddress":"10.0.{a}.{b}","userAgent":"aws-cli/2.15.0 Python/3.11.6 Linux/6.5.0 exe/x86_64.ubuntu.22","requestParameters":{{"policyArn":"arn:aws:iam::aws:policy/AdministratorAccess","userName":"x"}},"responseElements":null,"requestID":"{r:032x}","eventID":"{e:032x}","readOnly":false,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"123456789012","bytesTransferred":{i}}}"#,
        u = i % 5000,
        name = names[(i % 5) as usize],
        a = i % 256,
        b = (i / 256) % 256,
        r = i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        e = i.wrapping_mul(0xc2b2_ae3d_27d4_eb4f),
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let mode = args.next().unwrap_or_default();
    let slots = mode == "fields";
    let events: Vec<String> = (0..total).map(event).collect();
    // The kind of selection the reference rules make: a handful of top-level and nested fields.
    let rules = [
        "eventTime",
        "eventName",
        "eventSource",
        "errorCode",
        "sourceIPAddress",
        "userIdentity.type",
        "userIdentity.arn",
        "requestParameters.policyArn",
        "awsRegion",
    ];
    let time = ["eventTime", "@timestamp", "timestamp"];
    let paths: Vec<FieldPath> = if mode == "time" {
        &time[..]
    } else {
        &rules[..]
    }
    .iter()
    .map(|path| FieldPath::new(path))
    .collect();
    let selection = FieldSelection::new(&paths);
    for _ in 0..rounds {
        let started = Instant::now();
        let mut kept = 0usize;
        for event in &events {
            if slots {
                let fields = selection
                    .parse_fields(event.as_bytes())
                    .expect("valid JSON");
                kept += (0..paths.len())
                    .filter(|&slot| fields.get(slot).is_some())
                    .count();
            } else {
                let value = selection.parse(event.as_bytes()).expect("valid JSON");
                kept += value.as_object().map_or(0, |object| object.len());
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{total} events in {seconds:.3} s: {:.0} events/s ({kept} fields kept)",
            total as f64 / seconds
        );
    }
}
