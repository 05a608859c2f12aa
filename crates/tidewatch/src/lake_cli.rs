//! `tidewatch lake compact`: asks a running server for a compaction pass now and prints its
//! report (files merged, bytes, duration) as JSON.

use anyhow::{Context, bail};
use serde_json::Value;

use crate::client::with_api_key;

/// Runs `POST /api/v1/lake/compact` and prints the answer.
pub async fn compact(server: &str, min_age_secs: Option<u64>) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/lake/compact", server.trim_end_matches('/'));
    let mut request = reqwest::Client::new().post(&url);
    if let Some(secs) = min_age_secs {
        request = request.query(&[("min_age_secs", secs)]);
    }
    let response = with_api_key(request)
        .send()
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .context("reading the compaction answer")?;
    if !status.is_success() {
        bail!(
            "compaction failed ({status}): {}",
            body["error"].as_str().unwrap_or("no message")
        );
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}
