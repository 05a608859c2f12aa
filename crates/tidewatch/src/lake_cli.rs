//! `tidewatch lake compact`: asks a running server for a compaction pass now and prints its
//! report (files merged, bytes, duration) as JSON. `tidewatch lake import`: sends each file
//! to the server's import endpoint (the server's lake is the one writer of the catalog) and
//! prints what became of it.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::client::{bytes_progress_bar, expand_directories_matching, with_api_key};

/// Attempts per file before `import` gives up on a busy or unreachable server.
const MAX_ATTEMPTS: u32 = 5;

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

/// Whether `import` takes a file found in a directory: what `send` takes, and Parquet.
fn importable(path: &str) -> bool {
    tw_sources::is_candidate(path) || {
        let lower = path.to_ascii_lowercase();
        lower.ends_with(".parquet") && !path.split('/').any(|part| part.starts_with('.'))
    }
}

/// Imports every file of `paths` into `stream` through `POST /api/v1/streams/{stream}/import`,
/// one request per file; exits with status 2 when a file or a record was refused.
pub async fn import(server: &str, stream: &str, paths: &[PathBuf]) -> anyhow::Result<()> {
    let files = expand_directories_matching(
        paths,
        &importable,
        ".json, .ndjson, .json.gz, .ndjson.gz or .parquet",
    )?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let url = format!(
        "{}/api/v1/streams/{stream}/import",
        server.trim_end_matches('/')
    );
    let bar = bytes_progress_bar(&files)?;
    let mut totals = Totals::default();
    for file in &files {
        bar.set_message(file.display().to_string());
        let outcome = import_file(&client, &url, file).await;
        bar.inc(std::fs::metadata(file).map(|m| m.len()).unwrap_or(0));
        bar.suspend(|| totals.print(file, outcome));
    }
    bar.finish_and_clear();
    eprintln!(
        "imported into {stream}: {} file(s), {} row(s); {} already imported; {} record(s) rejected (kept in the dead-letter queue); {} file(s) refused",
        totals.imported_files, totals.rows, totals.already, totals.rejected, totals.refused
    );
    if totals.rejected > 0 || totals.refused > 0 {
        std::process::exit(2);
    }
    Ok(())
}

/// Sums over the files of one run.
#[derive(Default)]
struct Totals {
    imported_files: u64,
    rows: u64,
    already: u64,
    rejected: u64,
    refused: u64,
}

impl Totals {
    /// Prints one file's outcome (and each refused record as `file:line: reason`).
    fn print(&mut self, file: &Path, outcome: anyhow::Result<Value>) {
        let report = match outcome {
            Ok(report) => report,
            Err(error) => {
                self.refused += 1;
                eprintln!("{}: refused: {error:#}", file.display());
                return;
            }
        };
        let rows = report["rows_imported"].as_u64().unwrap_or(0);
        let rejected = report["rows_rejected"].as_u64().unwrap_or(0);
        let partition = report["partition"].as_u64().unwrap_or(0);
        match report["status"].as_str() {
            Some("already_imported") => {
                self.already += 1;
                eprintln!(
                    "{}: already imported ({rows} rows, _partition {partition}); nothing added",
                    file.display()
                );
                return;
            }
            status => eprintln!(
                "{}: {} {rows} rows, {rejected} rejected (_partition {partition})",
                file.display(),
                if status == Some("resumed") {
                    "completed an interrupted import:"
                } else {
                    "imported"
                }
            ),
        }
        self.imported_files += 1;
        self.rows += rows;
        self.rejected += rejected;
        for rejection in report["rejected"].as_array().into_iter().flatten() {
            eprintln!(
                "{}:{}: {}",
                file.display(),
                rejection["line"].as_u64().unwrap_or(0),
                rejection["reason"].as_str().unwrap_or("?")
            );
        }
    }
}

/// POSTs one file (as it is on disk: the server recognises gzip and Parquet by their magic
/// bytes), retrying while the server is busy or unreachable; a refusal is final.
async fn import_file(client: &reqwest::Client, url: &str, file: &Path) -> anyhow::Result<Value> {
    let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    // Records without an event time of their own get the file's modification time.
    let modified_ms = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis().to_string());
    let name = file.display().to_string();
    let mut query = vec![("name", name)];
    query.extend(modified_ms.map(|ms| ("fallback_time_ms", ms)));
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=MAX_ATTEMPTS {
        let request = with_api_key(client.post(url))
            .query(&query)
            .header("content-type", "application/octet-stream")
            .body(body.clone());
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                return response.json().await.context("reading the import answer");
            }
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(text);
                if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
                    bail!(
                        "larger than the server's import limit ({status}): split it, or raise the server's max_decompressed_bytes"
                    );
                }
                bail!("{message} ({status})");
            }
            Ok(response) => {
                tracing::warn!(status = %response.status(), attempt, "server busy; retrying")
            }
            Err(error) => tracing::warn!(%error, attempt, "request failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    bail!("giving up after {MAX_ATTEMPTS} attempts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_yield_json_and_parquet_files() {
        assert!(importable("2024/01/a.json.gz"));
        assert!(importable("b.PARQUET"));
        assert!(importable("c.ndjson"));
        assert!(!importable(".hidden/d.parquet"));
        assert!(!importable("e.csv"));
    }
}
