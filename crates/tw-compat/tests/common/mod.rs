//! A real compat server on an ephemeral port over a disk log that can be told to fail, and a
//! minimal HTTP/1.1 client to talk to it like a producer would.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tw_compat::{Auth, AuthConfig, CompatState, DedupStore};
use tw_core::StreamName;
use tw_log::testing::FaultyLog;
use tw_log::{DiskLog, Log, LogConfig};
use tw_pipeline::{DeadLetterQueue, IngestLimits, Ingestor, StreamDefaults, StreamRegistry};

/// A running compat router over a [`FaultyLog`] in a data directory.
pub struct Server {
    pub address: std::net::SocketAddr,
    pub log: Arc<FaultyLog>,
    pub ingestor: Arc<Ingestor>,
    pub dlq: DeadLetterQueue,
    serving: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts a server with its data under `dir`, with `auth` (default: open).
    pub async fn start(dir: &Path, auth: AuthConfig) -> Server {
        let disk = DiskLog::open(LogConfig::new(dir.join("log"))).unwrap();
        let log = Arc::new(FaultyLog::new(disk));
        let shared: Arc<dyn Log> = log.clone();
        let dlq = DeadLetterQueue::open(shared.clone()).unwrap();
        let registry = Arc::new(
            StreamRegistry::open(
                &dir.join("streams"),
                shared.clone(),
                StreamDefaults::default(),
            )
            .unwrap(),
        );
        let ingestor = Arc::new(Ingestor::new(
            shared.clone(),
            registry,
            dlq.clone(),
            IngestLimits::default(),
        ));
        let dedup = DedupStore::open(shared.clone(), tw_compat::dedup::DEFAULT_HORIZON_MS).unwrap();
        let state = Arc::new(CompatState {
            ingestor: ingestor.clone(),
            log: shared,
            auth: Arc::new(Auth::new(auth)),
            dedup,
            consumers: Vec::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = tw_compat::router(state);
        let serving = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server {
            address,
            log,
            ingestor,
            dlq,
            serving,
        }
    }

    /// Creates `stream` with `partitions` partitions (else the defaults).
    pub fn create_stream(&self, stream: &str, partitions: u32) {
        let name = tw_core::StreamName::new(stream).unwrap();
        let config = tw_core::StreamConfig {
            partitions,
            ..tw_core::StreamConfig::default()
        };
        self.ingestor.registry().put(&name, config, false).unwrap();
    }

    /// Stops serving and waits until the log is released, so the directory can be reopened.
    pub async fn stop(self) {
        let Server {
            log,
            ingestor,
            dlq,
            serving,
            ..
        } = self;
        serving.abort();
        let _ = serving.await;
        let weak = Arc::downgrade(&log);
        drop((log, ingestor, dlq));
        for _ in 0..200 {
            if weak.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the log is still in use after the server stopped");
    }

    /// One request; the answer's status, lower-cased headers and body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let mut stream = TcpStream::connect(self.address).await.unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
            self.address,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        Answer::parse(&raw)
    }

    /// A request with a JSON body (or none when `body` is `None`).
    pub async fn json(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("content-type", "application/json")]
        } else {
            &[]
        };
        self.request(method, path, headers, body.unwrap_or_default().as_bytes())
            .await
    }

    /// Every record of `stream`, all partitions, as parsed JSON.
    pub fn records(&self, stream: &str) -> Vec<serde_json::Value> {
        let name = StreamName::new(stream).unwrap();
        let partitions = self.log.partitions(&name).unwrap_or(0);
        let mut all = Vec::new();
        for partition in 0..partitions {
            let mut next = self.log.start_offset(&name, partition).unwrap();
            loop {
                let records = self
                    .log
                    .read(&name, partition, next, 1000, 1 << 20)
                    .unwrap();
                let Some(last) = records.last() else { break };
                next = last.offset + 1;
                all.extend(
                    records
                        .iter()
                        .map(|r| serde_json::from_slice(&r.payload).unwrap()),
                );
            }
        }
        all
    }
}

/// An HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    fn parse(raw: &[u8]) -> Answer {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let head = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"))
        {
            body = dechunk(&body);
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}
