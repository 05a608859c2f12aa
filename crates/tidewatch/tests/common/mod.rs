//! Test harness: runs the real `tidewatch` binary on an ephemeral port and talks HTTP to it.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Path of the binary under test: `TIDEWATCH_TEST_BINARY` if set (a copy taken right after
/// the build: worktrees sharing one target directory overwrite each other's binary), else the
/// one Cargo built for this test.
pub fn binary() -> String {
    std::env::var("TIDEWATCH_TEST_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tidewatch").to_string())
}

/// A running server process.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
}

impl Server {
    /// Starts `tidewatch serve` on 127.0.0.1:0 with `data_dir` and an optional config file.
    pub fn start(data_dir: &Path, config: Option<&Path>, extra: &[&str]) -> Server {
        let mut command = Command::new(binary());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
            .args(extra)
            .env("TIDEWATCH_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("spawn tidewatch");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            assert!(
                Instant::now() < deadline,
                "server did not announce its address"
            );
            let line = lines
                .next()
                .expect("server exited before listening")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("tidewatch listening on ") {
                break rest.split_whitespace().next().expect("url").to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        Server {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            client,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// POSTs a rule (YAML, native or Sigma) to `/api/v1/rules`; returns (status, JSON body).
    pub async fn post_rule(&self, yaml: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/api/v1/rules", self.url))
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await
            .expect("POST rule");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a body to a stream; returns (status, JSON body).
    pub async fn send(&self, stream: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/api/v1/streams/{stream}/events", self.url))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Runs SQL; panics on a non-200 answer. Retries while the server says the answer is not
    /// fresh (the lake consumer still catching up with acknowledged events, e.g. after a crash).
    pub async fn sql(&self, sql: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let response = self
                .client
                .post(format!("{}/api/v1/query", self.url))
                .json(&json!({ "sql": sql }))
                .send()
                .await
                .expect("query");
            let status = response.status();
            let lagging = response
                .headers()
                .get("x-tidewatch-freshness")
                .is_some_and(|v| v == "lagging");
            let body: Value = response.json().await.expect("query json");
            assert!(status.is_success(), "query {sql:?} failed: {status} {body}");
            if !lagging {
                return body["rows"].as_array().cloned().unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "the lake never caught up for {sql:?}"
            );
        }
    }

    /// A single number from a query like `SELECT count(*) AS n FROM ...`.
    pub async fn sql_count(&self, sql: &str) -> u64 {
        let rows = self.sql(sql).await;
        rows.first()
            .and_then(|row| row.as_object())
            .and_then(|o| o.values().next())
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no count in {rows:?}"))
    }

    /// Waits (up to two minutes) until `SELECT count(*) FROM {stream} WHERE {filter}` reaches
    /// `expected`, for data that arrives by itself (sources). Until the stream's table exists
    /// the query fails; that counts as "not yet", not as an error.
    pub async fn wait_for_count(&self, stream: &str, filter: &str, expected: u64) {
        let sql = format!("SELECT count(*) AS n FROM {stream} WHERE {filter}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let response = self
                .client
                .post(format!("{}/api/v1/query", self.url))
                .json(&json!({ "sql": sql }))
                .send()
                .await
                .expect("query");
            let n = if response.status().is_success() {
                let body: Value = response.json().await.expect("query json");
                body["rows"][0]["n"].as_u64().unwrap_or(0)
            } else {
                0
            };
            if n >= expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {n} of {expected} events arrived in {stream}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// POSTs `body` as JSON to `path`; the status and the body as JSON (`Null` when it is
    /// not JSON).
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs `path`; the body as JSON (`Null` when it is not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (status, text) = self.get_text(path).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("get");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// All alerts (of a rule, if given).
    pub async fn alerts(&self, rule: Option<&str>) -> Vec<Value> {
        let path = match rule {
            Some(rule) => format!("/api/v1/alerts?limit=100000&rule={rule}"),
            None => "/api/v1/alerts?limit=100000".to_string(),
        };
        self.get(&path)
            .await
            .1
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `check` holds (polling), or panics after `timeout` with `what`.
    pub async fn eventually<F, Fut>(&self, what: &str, timeout: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while !check().await {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic events from `tidewatch gen`.
pub fn generate(kind: &str, count: u64, seed: u64, rate: u64) -> String {
    let output = Command::new(binary())
        .args([
            "gen",
            "--kind",
            kind,
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
            "--rate",
            &rate.to_string(),
        ])
        .output()
        .expect("run gen");
    assert!(
        output.status.success(),
        "gen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, text).expect("write");
    path
}

/// Sustained ingest for kill -9 tests: posts NDJSON batches of `batch` events to `stream`,
/// ids counting up from `first` (`line(id)` is the event), records each acknowledged id in
/// `acked`, and stops at the first request that fails (the server was killed). Returns once the
/// first batch is acknowledged (or after 30 s), with the sender still running.
pub async fn start_acked_sender(
    server: Arc<Server>,
    stream: &str,
    first: u64,
    batch: u64,
    line: impl Fn(u64) -> String + Send + 'static,
    acked: Arc<Mutex<BTreeSet<u64>>>,
) -> tokio::task::JoinHandle<()> {
    let url = format!("{}/api/v1/streams/{stream}/events", server.url);
    let sender = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut id = first;
            loop {
                let body: String = (id..id + batch).map(&line).collect::<Vec<_>>().join("\n");
                match server.client.post(&url).body(body).send().await {
                    Ok(response) if response.status().is_success() => {
                        acked.lock().unwrap().extend(id..id + batch);
                    }
                    _ => return,
                }
                id += batch;
                // Sustained, not flat-out: keeps the debug-build consumers' backlog small.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let started = Instant::now();
    while !acked.lock().unwrap().contains(&first) && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sender
}
