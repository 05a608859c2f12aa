//! Hostile input gets a clear 4xx or a dead letter; the server stays healthy and its memory
//! stays bounded.

mod common;

use std::io::Write;

use common::Server;
use serde_json::Value;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_refused_and_nothing_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write(
        dir.path(),
        "t.toml",
        "[ingest]\nmax_body_bytes = 4194304\nmax_decompressed_bytes = 16777216\nmax_event_bytes = 65536\n",
    );
    let server = Server::start(&dir.path().join("data"), Some(&config), &[]);
    let post = |body: Vec<u8>, content_type: &'static str, encoding: Option<&'static str>| {
        let mut request = server
            .client
            .post(format!("{}/api/v1/streams/s/events", server.url))
            .header("content-type", content_type)
            .body(body);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        request.send()
    };
    let status_and_error = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        (
            status,
            response
                .json::<Value>()
                .await
                .map(|v| v["error"].as_str().unwrap_or_default().to_string())
                .unwrap_or_default(),
        )
    };

    // A million-deep nested array, quickly and without a stack overflow: the array is read
    // without recursion and its one element is refused (too large, too deep) and
    // dead-lettered; unclosed, the body is not JSON at all.
    let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
    let (status, outcome) = server.send("s", deep).await;
    assert_eq!(
        (status, outcome["accepted"].as_u64()),
        (200, Some(0)),
        "{outcome}"
    );
    assert_eq!(
        outcome["rejected"].as_array().map(Vec::len),
        Some(1),
        "{outcome}"
    );
    let unclosed = "[".repeat(1_000_000).into_bytes();
    let (status, error) =
        status_and_error(post(unclosed, "application/json", None).await.unwrap()).await;
    assert_eq!(status, 400, "{error}");
    assert!(error.contains("invalid JSON"), "{error}");

    // One deep line among good lines: that line is rejected, the others stored.
    let body = format!(
        "{{\"ok\":1}}\n{}{}\n{{\"ok\":2}}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let (status, outcome) = server.send("s", body).await;
    assert_eq!(
        (status, outcome["accepted"].as_u64()),
        (200, Some(2)),
        "{outcome}"
    );
    assert_eq!(outcome["rejected"][0]["line"], 2);

    // Invalid UTF-8 inside a string: that line is rejected and dead-lettered as base64.
    let mut body = b"{\"ok\":3}\n{\"bad\":\"".to_vec();
    body.extend_from_slice(&[0xc3, 0x28, 0xff]);
    body.extend_from_slice(b"\"}\n");
    let (status, outcome) = server.send("s", body).await;
    assert_eq!(
        (
            status,
            outcome["accepted"].as_u64(),
            outcome["rejected"].as_array().map(Vec::len)
        ),
        (200, Some(1), Some(1)),
        "{outcome}"
    );
    let (_, dlq) = server.get("/api/v1/dlq?stream=s").await;
    let letters = dlq["entries"].as_array().unwrap();
    // The deep array's element, the deep line, the bad UTF-8 line.
    assert_eq!(letters.len(), 3);
    assert_eq!(letters[2]["raw_base64"], true);

    // An event over the per-event limit.
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(70_000));
    let (_, outcome) = server.send("s", big).await;
    assert!(
        outcome["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("exceeds the limit"),
        "{outcome}"
    );

    // A body over the size limit: 413. The server answers as soon as the limit is crossed and
    // closes the connection; a client still sending may see that as a broken pipe instead of
    // the answer (a race of the client, not a server failure: health is checked below).
    match post(vec![b' '; 5 << 20], "application/x-ndjson", None).await {
        Ok(response) => assert_eq!(status_and_error(response).await.0, 413),
        Err(error) => assert!(
            format!("{error:?}").contains("BodyWrite"),
            "only a cut while sending is acceptable: {error:?}"
        ),
    }

    // A gzip bomb: 200 MB of zeros in ~200 KB: 413, and memory stays bounded.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b'0'; 1 << 20];
    for _ in 0..200 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let (status, error) = status_and_error(
        post(bomb, "application/x-ndjson", Some("gzip"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413, "{error}");
    assert!(error.contains("decompressed"), "{error}");
    assert!(
        rss_kib(server.pid()) < 1 << 20,
        "server RSS above 1 GiB after a gzip bomb"
    );

    // Wrong content type and encoding: 415 with a message.
    let (status, error) = status_and_error(
        post(b"<xml/>".to_vec(), "application/xml", None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 415);
    assert!(error.contains("application/xml"), "{error}");
    let (status, _) = status_and_error(
        post(b"{}".to_vec(), "application/json", Some("br"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 415);

    // Bad stream names are refused.
    let (status, _) = server.send("_dlq", "{\"a\":1}").await;
    assert_eq!(status, 400);

    // Still healthy, and every accepted event is queryable.
    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.sql_count("SELECT count(*) FROM s").await, 3);
}
