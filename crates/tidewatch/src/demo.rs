//! `tidewatch serve --demo`: live CloudTrail-like and clickstream traffic plus example rules,
//! so a new user sees alerts and SQL results within a minute.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tw_detect::{RuleFormat, parse_rule};
use tw_pipeline::{ContentEncoding, Ingestor};
use tw_server::RuleRegistry;

use crate::datagen::{Generator, Kind};

/// Events per second of each demo stream.
const CLOUDTRAIL_RATE: u64 = 2000;
const CLICKSTREAM_RATE: u64 = 1000;

/// Example rules, in the native rule language (docs/rules.md).
const DEMO_RULES: [&str; 5] = [
    r#"
id: demo-console-login-failure
title: Failed console login
severity: medium
stream: cloudtrail
tags: [attack.t1110]
match:
  all:
    - { field: eventName, equals: ConsoleLogin }
    - { field: errorMessage, exists: true }
"#,
    r#"
id: demo-brute-force
title: Brute-force console logins from one IP
description: More than 5 failed console logins from one source IP within a minute
severity: high
stream: cloudtrail
tags: [attack.t1110.001]
match:
  all:
    - { field: eventName, equals: ConsoleLogin }
    - { field: errorMessage, exists: true }
threshold:
  more_than: 5
  window: 1m
  group_by: [sourceIPAddress]
"#,
    r#"
id: demo-offensive-tooling
title: Offensive tooling user agent
severity: high
stream: cloudtrail
match:
  any:
    - { field: userAgent, contains: kali, ignore_case: true }
    - { field: userAgent, startswith: "python-requests/" }
    - { field: userAgent, startswith: "curl/" }
    - { field: userAgent, startswith: "Pacu/" }
"#,
    r#"
id: demo-cloudtrail-tampering
title: CloudTrail logging stopped or deleted
severity: critical
stream: cloudtrail
tags: [attack.t1562.008]
match:
  field: eventName
  in: [StopLogging, DeleteTrail]
"#,
    r#"
id: demo-big-purchase
title: Purchase over 500
severity: low
stream: clickstream
match:
  all:
    - { field: event_type, equals: purchase }
    - { field: properties.amount, gt: 500 }
"#,
];

/// Installs the example rules that are not there yet (a user's edits are kept).
pub fn install_rules(rules: &RuleRegistry) -> anyhow::Result<()> {
    for text in DEMO_RULES {
        let rule =
            parse_rule(text, RuleFormat::Yaml).map_err(|e| anyhow::anyhow!("demo rule: {e}"))?;
        if rules.get(&rule.id).is_none() {
            rules
                .upsert(rule, "demo", false)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok(())
}

/// Feeds both demo streams in real time (event time = now) until aborted.
pub async fn run(ingestor: Arc<Ingestor>) {
    let start = chrono::Utc::now().timestamp();
    let seed = start as u64;
    let mut streams = [
        (
            "cloudtrail",
            Generator::new(Kind::Cloudtrail, seed, CLOUDTRAIL_RATE, start),
            CLOUDTRAIL_RATE,
        ),
        (
            "clickstream",
            Generator::new(Kind::Clickstream, seed, CLICKSTREAM_RATE, start),
            CLICKSTREAM_RATE,
        ),
    ];
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        for (stream, generator, rate) in &mut streams {
            let mut body = String::with_capacity(*rate as usize * 700 / 4);
            for _ in 0..*rate / 4 {
                generator.next_into(&mut body);
            }
            if let Err(error) = ingestor
                .ingest_body(stream, Bytes::from(body), ContentEncoding::Identity)
                .await
            {
                tracing::warn!(%error, stream, "demo traffic could not be ingested");
            }
        }
    }
}
