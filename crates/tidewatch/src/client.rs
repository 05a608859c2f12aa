//! The command-line clients of a running server: `send` and `query`.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Attempts per batch before `send` gives up.
const MAX_ATTEMPTS: u32 = 10;

/// Adds `Authorization: Bearer $TIDEWATCH_API_KEY` when the variable is set (servers with
/// `[auth] api_keys`).
pub fn with_api_key(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match std::env::var("TIDEWATCH_API_KEY") {
        Ok(key) if !key.is_empty() => request.bearer_auth(key),
        _ => request,
    }
}

/// Sends NDJSON files (or stdin with `-`) to a stream in batches, retrying retryable failures
/// under each batch's idempotency key (exactly once: see [`post_with_retries`]).
pub async fn send(
    server: &str,
    stream: &str,
    files: &[PathBuf],
    batch_lines: usize,
    batch_bytes: usize,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = format!(
        "{}/api/v1/streams/{stream}/events",
        server.trim_end_matches('/')
    );
    let inputs: Vec<PathBuf> = if files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        expand_directories(files)?
    };
    let bar = bytes_progress_bar(&inputs)?;
    let (mut accepted, mut rejected) = (0u64, 0u64);
    for input in &inputs {
        if is_whole_document(input)? {
            let body =
                std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
            bar.inc(body.len() as u64);
            let gzip = input.extension().is_some_and(|e| e == "gz");
            let outcome = post_with_retries(&client, &url, body, Some(gzip)).await?;
            accepted += outcome["accepted"].as_u64().unwrap_or(0);
            for rejection in outcome["rejected"].as_array().into_iter().flatten() {
                rejected += 1;
                bar.suspend(|| {
                    eprintln!(
                        "{}: record {}: {}",
                        input.display(),
                        rejection["line"].as_u64().unwrap_or(0),
                        rejection["reason"].as_str().unwrap_or("?")
                    )
                });
            }
            continue;
        }
        let reader: Box<dyn Read> = if input.as_os_str() == "-" {
            Box::new(std::io::stdin())
        } else {
            let file = std::fs::File::open(input)
                .with_context(|| format!("opening {}", input.display()))?;
            // The bar's total is the files' sizes on disk: count the bytes read from the file,
            // before decompression, or a gzip file would fill it several times over.
            let file = Counted {
                inner: file,
                bar: bar.clone(),
            };
            if input.extension().is_some_and(|e| e == "gz") {
                Box::new(flate2::read::MultiGzDecoder::new(file))
            } else {
                Box::new(file)
            }
        };
        let from_file = input.as_os_str() != "-";
        let mut lines = BufReader::with_capacity(1 << 20, reader);
        let mut batch = Vec::with_capacity(batch_bytes + 4096);
        // For each line of the batch, where it came from: the input's line, and the element
        // of a CloudTrail file on that line (unwrapped into one line per record).
        let mut origins: Vec<(usize, Option<usize>)> = Vec::new();
        let mut input_line = 0usize;
        loop {
            let start = batch.len();
            let read = lines
                .read_until(b'\n', &mut batch)
                .with_context(|| format!("reading {}", input.display()))?;
            if read > 0 {
                input_line += 1;
                if !from_file {
                    bar.inc(read as u64);
                }
                let line = batch.split_off(start);
                match records_of_line(&line) {
                    Some(records) => {
                        for (index, record) in records.iter().enumerate() {
                            batch.extend_from_slice(record.get().as_bytes());
                            batch.push(b'\n');
                            origins.push((input_line, Some(index + 1)));
                        }
                    }
                    None => {
                        batch.extend_from_slice(&line);
                        origins.push((input_line, None));
                    }
                }
            }
            if (read == 0 && !batch.is_empty())
                || origins.len() >= batch_lines
                || batch.len() >= batch_bytes
            {
                if !batch.ends_with(b"\n") {
                    batch.push(b'\n');
                }
                let outcome =
                    post_with_retries(&client, &url, std::mem::take(&mut batch), None).await?;
                accepted += outcome["accepted"].as_u64().unwrap_or(0);
                for rejection in outcome["rejected"].as_array().into_iter().flatten() {
                    rejected += 1;
                    let line = rejection["line"].as_u64().unwrap_or(0) as usize;
                    let place = match origins.get(line.wrapping_sub(1)) {
                        Some((line, Some(record))) => format!("{line} (record {record})"),
                        Some((line, None)) => line.to_string(),
                        None => "?".to_string(),
                    };
                    bar.suspend(|| {
                        eprintln!(
                            "{}:{place}: {}",
                            input.display(),
                            rejection["reason"].as_str().unwrap_or("?")
                        )
                    });
                }
                origins.clear();
            }
            if read == 0 {
                break;
            }
        }
    }
    bar.finish_and_clear();
    eprintln!(
        "sent to {stream}: {accepted} accepted, {rejected} rejected (kept in the dead-letter queue)"
    );
    if rejected > 0 {
        std::process::exit(2);
    }
    Ok(())
}

/// A progress bar over the total size of `files` on a terminal (hidden otherwise).
pub(crate) fn bytes_progress_bar(files: &[PathBuf]) -> anyhow::Result<ProgressBar> {
    let total: u64 = files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    if total == 0 || !std::io::stderr().is_terminal() {
        return Ok(ProgressBar::hidden());
    }
    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
    )?);
    Ok(bar)
}

/// Expands each directory argument into the `.json`, `.ndjson`, `.json.gz` and `.ndjson.gz`
/// files below it (recursively, hidden entries skipped, in path order); files stay as given.
fn expand_directories(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    expand_directories_matching(
        paths,
        &tw_sources::is_candidate,
        ".json, .ndjson, .json.gz or .ndjson.gz",
    )
}

/// Expands each directory argument into the files below it whose path relative to it
/// `wanted` accepts (recursively, hidden entries skipped, in path order); files stay as
/// given. `kinds` names the wanted files in the message about a directory without any.
pub(crate) fn expand_directories_matching(
    paths: &[PathBuf],
    wanted: &dyn Fn(&str) -> bool,
    kinds: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(
        dir: &Path,
        root: &Path,
        wanted: &dyn Fn(&str) -> bool,
        out: &mut Vec<PathBuf>,
    ) -> anyhow::Result<()> {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("reading directory {}", dir.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading directory {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type()?.is_dir() {
                walk(&path, root, wanted, out)?;
            } else {
                let relative = path.strip_prefix(root).unwrap_or(&path);
                if wanted(&relative.to_string_lossy()) {
                    out.push(path);
                }
            }
        }
        Ok(())
    }
    let mut inputs = Vec::new();
    for path in paths {
        if path.is_dir() {
            let before = inputs.len();
            walk(path, path, wanted, &mut inputs)?;
            if inputs.len() == before {
                eprintln!("{}: no {kinds} files", path.display());
            }
        } else {
            inputs.push(path.clone());
        }
    }
    Ok(inputs)
}

/// A file that advances the progress bar by the bytes read from it.
struct Counted {
    inner: std::fs::File,
    bar: ProgressBar,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.bar.inc(read as u64);
        Ok(read)
    }
}

/// The records of a line that is a whole CloudTrail file (`{"Records": [...]}` and nothing
/// else, as `zcat *.json.gz` gives one per line), as the exact text of each; `None` for any
/// other line. The server unwraps such a document only when it is the whole body, so lines of
/// several files are unwrapped here.
fn records_of_line(line: &[u8]) -> Option<Vec<&serde_json::value::RawValue>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper<'a> {
        #[serde(rename = "Records", borrow)]
        records: Vec<&'a serde_json::value::RawValue>,
    }
    let text = line.trim_ascii();
    let key = text.strip_prefix(b"{")?.trim_ascii_start();
    if !key.starts_with(b"\"Records\"") {
        return None;
    }
    // Elements of a one-line file hold no line break, so each stays one line of the batch.
    let wrapper: Wrapper = serde_json::from_slice(text).ok()?;
    (!wrapper.records.iter().any(|r| r.get().contains('\n'))).then_some(wrapper.records)
}

/// Whether a file must be sent as one body rather than in batches of lines: a `.json` file
/// holding one document (a JSON array, a CloudTrail `{"Records": [...]}` file, a
/// pretty-printed object), which cannot be cut at line ends. A `.json` file whose first line
/// is a whole object is NDJSON and goes line by line.
fn is_whole_document(path: &Path) -> anyhow::Result<bool> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    if path.as_os_str() == "-" || !(name.ends_with(".json") || name.ends_with(".json.gz")) {
        return Ok(false);
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader: Box<dyn Read> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    // The first line, read only up to the size of any sensible event.
    let mut first = Vec::new();
    BufReader::new(reader.take(8 << 20))
        .read_until(b'\n', &mut first)
        .with_context(|| format!("reading {}", path.display()))?;
    let text = first.trim_ascii();
    Ok(match text.first() {
        Some(b'[') => true,
        Some(b'{') => serde_json::from_slice::<serde::de::IgnoredAny>(text).is_err(),
        _ => false,
    })
}

/// A fresh idempotency key: a random (version 4) UUID.
fn new_idempotency_key() -> anyhow::Result<String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// POSTs one body; `whole_document` is `Some(gzip)` for a JSON document sent as it is on
/// disk (gzip bodies with `Content-Encoding: gzip`), `None` for a batch of NDJSON lines.
///
/// Every attempt carries the batch's `Idempotency-Key`: an attempt whose answer was lost (a
/// timeout, a dropped connection, a 503 after a part was stored) may have been stored, and
/// the server stores a repeat of it only where the first did not, answering for the whole
/// batch. So the batch is stored exactly once unless the server lost what it remembers of the
/// key (its data directory, or 24 hours between attempts).
async fn post_with_retries(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    whole_document: Option<bool>,
) -> anyhow::Result<Value> {
    let key = new_idempotency_key()?;
    let mut backoff = Duration::from_millis(200);
    for attempt in 1..=MAX_ATTEMPTS {
        let mut request = with_api_key(client.post(url))
            .header("idempotency-key", &key)
            .body(body.clone());
        request = match whole_document {
            None => request.header("content-type", "application/x-ndjson"),
            Some(gzip) => {
                let request = request.header("content-type", "application/json");
                if gzip {
                    request.header("content-encoding", "gzip")
                } else {
                    request
                }
            }
        };
        let outcome = request.send().await;
        match outcome {
            Ok(response) if response.status().is_success() => return Ok(response.json().await?),
            // An earlier attempt (its answer lost) is still being processed: its answer, or
            // the rest of the batch, comes with a later attempt.
            Ok(response) if response.status() == reqwest::StatusCode::CONFLICT => {
                tracing::warn!(
                    attempt,
                    "an earlier attempt of this batch is still being processed; retrying"
                )
            }
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                bail!(
                    "server refused the batch ({status}): {}",
                    response.text().await.unwrap_or_default()
                );
            }
            Ok(response) => {
                tracing::warn!(status = %response.status(), attempt, "server busy; retrying")
            }
            Err(error) => tracing::warn!(%error, attempt, "request failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    bail!("giving up after {MAX_ATTEMPTS} attempts to send a batch to {url}")
}

/// Output format of `tidewatch query`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table on a terminal, CSV when piped.
    Auto,
    /// An aligned table.
    Table,
    /// CSV with a header.
    Csv,
    /// One JSON object per row.
    Json,
}

/// Runs SQL on the server and prints the result.
pub async fn query(server: &str, sql: &str, format: OutputFormat) -> anyhow::Result<()> {
    let format = match format {
        OutputFormat::Auto if std::io::stdout().is_terminal() => OutputFormat::Table,
        OutputFormat::Auto => OutputFormat::Csv,
        other => other,
    };
    let accept = match format {
        OutputFormat::Csv => "text/csv",
        OutputFormat::Table => "application/vnd.apache.arrow.stream",
        _ => "application/json",
    };
    let response = with_api_key(
        reqwest::Client::new().post(format!("{}/api/v1/query", server.trim_end_matches('/'))),
    )
    .header("accept", accept)
    .json(&serde_json::json!({ "sql": sql }))
    .send()
    .await
    .with_context(|| format!("connecting to {server}"))?;
    let status = response.status();
    let truncated = response.headers().contains_key("x-tidewatch-truncated");
    let body = response.bytes().await?;
    if !status.is_success() {
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string));
        bail!(
            "query failed ({status}): {}",
            message.unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
        );
    }
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Table => {
            let reader =
                arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
            // The stream's schema, not the batches', names the columns: a result without rows
            // may hold no batch at all.
            let schema = reader.schema();
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            writeln!(
                out,
                "{}",
                arrow::util::pretty::pretty_format_batches_with_schema(schema, &batches)?
            )?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            eprintln!("{rows} row(s)");
        }
        OutputFormat::Json => {
            let value: Value = serde_json::from_slice(&body)?;
            for row in value["rows"].as_array().into_iter().flatten() {
                writeln!(out, "{row}")?;
            }
        }
        _ => out.write_all(&body)?,
    }
    // On stderr so piped CSV/JSON stays clean, in every format so a cut result is never
    // mistaken for the whole answer.
    if truncated {
        eprintln!(
            "warning: result truncated at the server's row limit (query.max_result_rows); \
             add a LIMIT, an aggregate or a narrower WHERE"
        );
    }
    Ok(())
}
