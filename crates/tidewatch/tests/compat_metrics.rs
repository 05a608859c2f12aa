//! Metric labels of the compatible APIs come from a fixed set, never from the client's text: a
//! client sending made-up `X-Amz-Target` operations must not create a metric series for each.

mod common;

use std::time::Duration;

use common::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_aws_operations_are_counted_under_one_label() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None, &[]);
    let target = |target: &str| {
        server
            .client
            .post(format!("{}/", server.url))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", target.to_string())
            .body("{}")
            .send()
    };
    for made_up in [
        "Kinesis_20131202.MadeUpOperation7",
        "Kinesis_20131202.MadeUpOperation8",
        "Firehose_20150804.AnotherMadeUp9",
    ] {
        let response = target(made_up).await.unwrap();
        assert_eq!(response.status(), 400, "{made_up}");
    }
    assert_eq!(
        target("Kinesis_20131202.ListStreams")
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = server
        .client
        .get(format!("{}/metrics", server.url))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let requests: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("tidewatch_compat_requests_total{"))
        .collect();
    assert!(
        !metrics.contains("MadeUp") && !metrics.contains("AnotherMadeUp"),
        "{requests:#?}"
    );
    let count_of = |api: &str, operation: &str| {
        requests
            .iter()
            .find(|line| {
                line.contains(&format!("api=\"{api}\""))
                    && line.contains(&format!("operation=\"{operation}\""))
            })
            .and_then(|line| line.rsplit(' ').next())
            .map(str::to_string)
    };
    assert_eq!(
        count_of("kinesis", "unknown").as_deref(),
        Some("2"),
        "{requests:#?}"
    );
    assert_eq!(
        count_of("firehose", "unknown").as_deref(),
        Some("1"),
        "{requests:#?}"
    );
    assert_eq!(
        count_of("kinesis", "ListStreams").as_deref(),
        Some("1"),
        "{requests:#?}"
    );
    assert!(server.terminate());
}
