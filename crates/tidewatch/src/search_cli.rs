//! `tidewatch search`: full-text search of a running server's stream. Matching events go to
//! stdout as NDJSON (newest first); the count goes to stderr, so the output pipes into `jq`.

use std::io::Write;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::client::with_api_key;

/// Runs one search and prints the hits.
pub async fn search(
    server: &str,
    stream: &str,
    query: &str,
    from: Option<&str>,
    to: Option<&str>,
    limit: usize,
) -> anyhow::Result<()> {
    let mut params = vec![("q", query.to_string()), ("limit", limit.to_string())];
    if let Some(from) = from {
        params.push(("from", from.to_string()));
    }
    if let Some(to) = to {
        params.push(("to", to.to_string()));
    }
    let url = format!(
        "{}/api/v1/streams/{stream}/search",
        server.trim_end_matches('/')
    );
    let response = with_api_key(reqwest::Client::new().get(&url).query(&params))
        .send()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let status = response.status();
    let body: Value = response.json().await.context("reading the search answer")?;
    if !status.is_success() {
        bail!(
            "search failed ({status}): {}",
            body["error"].as_str().unwrap_or("no message")
        );
    }
    let hits = body["hits"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    for hit in &hits {
        writeln!(out, "{}", hit["event"])?;
    }
    eprintln!(
        "{} of {} matching event(s) ({} hour index(es), {:.1} ms)",
        hits.len(),
        body["total"],
        body["indexes_searched"],
        body["took_ms"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}
