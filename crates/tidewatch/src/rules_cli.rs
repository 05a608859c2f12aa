//! `tidewatch rules import DIR`: posts every rule file of a directory (Sigma or native YAML,
//! native JSON) to a running server and reports, per file, whether it was loaded or refused
//! and why. Any refusal makes the command fail, after every file has been tried.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Rule files under `dir` (recursively), sorted, by extension `.yml`, `.yaml`, `.json`.
pub(crate) fn rule_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current)
            .with_context(|| format!("reading rules directory {}", current.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yml" | "yaml" | "json"))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Imports every rule file of `dir` into the server: a new id is created, an existing id is
/// replaced (`PUT`), so importing the same directory twice is harmless.
pub async fn import(server: &str, dir: &Path) -> anyhow::Result<()> {
    let server = server.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let files = rule_files(dir)?;
    if files.is_empty() {
        bail!("no .yml, .yaml or .json files in {}", dir.display());
    }
    let (mut loaded, mut refused) = (0usize, 0usize);
    // A Sigma correlation may refer to a rule of a file imported after it: such files are
    // tried again once every other file is in.
    let mut later = Vec::new();
    for path in &files {
        match import_one(&client, server, path).await {
            Ok(id) => {
                loaded += 1;
                println!("ok       {}  (rule {id})", path.display());
            }
            Err(reason) if reason.contains("which is neither in the same file") => {
                later.push(path);
            }
            Err(reason) => {
                refused += 1;
                println!("refused  {}  {reason}", path.display());
            }
        }
    }
    for path in later {
        match import_one(&client, server, path).await {
            Ok(id) => {
                loaded += 1;
                println!("ok       {}  (rule {id})", path.display());
            }
            Err(reason) => {
                refused += 1;
                println!("refused  {}  {reason}", path.display());
            }
        }
    }
    println!("{loaded} loaded, {refused} refused");
    if refused > 0 {
        bail!("{refused} of {} rule files were refused", files.len());
    }
    Ok(())
}

/// Posts one file; on a conflict (the id exists) puts it under its id instead.
async fn import_one(client: &reqwest::Client, server: &str, path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let content_type = if path.extension().is_some_and(|e| e == "json") {
        "application/json"
    } else {
        "application/yaml"
    };
    let post = |url: String, put: bool| {
        let request = if put {
            client.put(url)
        } else {
            client.post(url)
        };
        request
            .header("content-type", content_type)
            .header("x-tidewatch-user", "tidewatch rules import")
            .body(text.clone())
            .send()
    };
    let response = post(format!("{server}/api/v1/rules"), false)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(described(&body["id"], &body["also_stored"]));
    }
    if status == reqwest::StatusCode::CONFLICT {
        // The id is known: the rule is replaced. Its id comes from the server's refusal
        // message, not from parsing the file here, so Sigma and native files work alike.
        let message = body["error"].as_str().unwrap_or_default();
        let Some(id) = message.split_whitespace().nth(1) else {
            return Err(format!("{status}: {message}"));
        };
        let response = post(format!("{server}/api/v1/rules/{id}"), true)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(described(&Value::from(id), &body["also_stored"]));
        }
        return Err(format!("{status}: {}", error_text(&body)));
    }
    Err(format!("{status}: {}", error_text(&body)))
}

/// `id`, followed by the other rules the file stored (a Sigma correlation's generated rules).
fn described(id: &Value, others: &Value) -> String {
    let id = id.as_str().unwrap_or("?");
    match others.as_array() {
        Some(others) if !others.is_empty() => {
            let others: Vec<&str> = others.iter().filter_map(Value::as_str).collect();
            format!("{id}, with {}", others.join(", "))
        }
        _ => id.to_string(),
    }
}

fn error_text(body: &Value) -> String {
    body["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string())
}
