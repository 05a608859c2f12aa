//! `tidewatch replay`: backtests a rule file over stored events of a running server, through
//! the server's dry-run endpoint (the live engine), with a progress bar.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// Replays `rule_file` over stored events ingested in `[from, to]`; prints the result (alerts,
/// events evaluated, time taken) as JSON on stdout.
pub async fn replay(
    server: &str,
    rule_file: &Path,
    from: Option<&str>,
    to: Option<&str>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(rule_file)
        .with_context(|| format!("reading {}", rule_file.display()))?;
    let mut body = json!({ "rule": text });
    if let Some(from) = from {
        body["from"] = time_value(from);
    }
    if let Some(to) = to {
        body["to"] = time_value(to);
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("{}/api/v1/rules/test", server.trim_end_matches('/'));
    let mut response = client
        .post(&url)
        .header("accept", "application/x-ndjson")
        .json(&body)
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let message = response.text().await.unwrap_or_default();
        bail!("replay refused ({status}): {message}");
    }
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(ProgressStyle::with_template(
            "{bar:40} {pos}/{len} events {per_sec} eta {eta}",
        )?);
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut pending = Vec::new();
    let mut result = None;
    while let Some(chunk) = response
        .chunk()
        .await
        .context("reading the replay stream")?
    {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let value: Value = serde_json::from_slice(&line).context("replay stream line")?;
            if let Some(progress) = value.get("progress") {
                bar.set_length(progress["total"].as_u64().unwrap_or(0));
                bar.set_position(progress["read"].as_u64().unwrap_or(0));
            } else if let Some(error) = value.get("error") {
                bar.abandon();
                bail!("replay failed: {}", error.as_str().unwrap_or_default());
            } else if let Some(found) = value.get("result") {
                result = Some(found.clone());
            }
        }
    }
    bar.finish_and_clear();
    let Some(result) = result else {
        bail!("the server closed the replay stream without a result");
    };
    eprintln!(
        "{} events evaluated, {} alerts, {:.0} ms{}",
        result["evaluated"],
        result["alerts"].as_array().map_or(0, Vec::len),
        result["took_ms"].as_f64().unwrap_or(0.0),
        if result["truncated"] == true {
            " (stopped at the replay limit)"
        } else {
            ""
        }
    );
    if let Some(unreadable) = result["unreadable"].as_u64().filter(|n| *n > 0) {
        eprintln!(
            "warning: {unreadable} stored records were stepped over: damage on disk made them \
             unreadable (the server's log names them)"
        );
    }
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

/// Unix milliseconds stay numbers; anything else is sent as text (RFC 3339).
fn time_value(text: &str) -> Value {
    text.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::String(text.to_string()))
}
