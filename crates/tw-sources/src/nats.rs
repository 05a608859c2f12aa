//! The NATS source: a subject's messages into a stream, through the same append path as HTTP.
//!
//! Each message is one body (NDJSON, a JSON object or array, a CloudTrail file; gzip when its
//! `Content-Encoding` header says so, the header read as HTTP's, another encoding a dead
//! letter), decoded as a watched file is (`file_format::decode_file`: bounded inflation, the
//! pipeline's splitter). Messages are gathered into batches (`batch_messages`,
//! `batch_wait_ms`) and appended together.
//!
//! Delivery:
//! - **JetStream** (`jetstream_stream` set): a durable pull consumer with explicit acks; a
//!   batch is acknowledged only after its events and dead letters are durable. At-least-once:
//!   nothing acknowledged by NATS to its publisher is lost, and a crash between the append and
//!   the acks makes NATS redeliver (duplicates are possible, losses are not).
//! - **Core NATS**: a plain (or queue) subscription. Best effort, as core NATS itself: messages
//!   published while Tidewatch is down, or dropped by the server for a slow consumer, are
//!   gone. A failing append is retried until it succeeds or the server stops; what is still
//!   unappended at shutdown is counted in `tidewatch_source_lost_total` and logged.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use metrics::Counter;
use tokio::sync::watch;
use tw_core::StreamName;
use tw_pipeline::{ContentEncoding, Ingestor, ParsedEvent, Rejection};

use crate::SourceError;
use crate::config::NatsSourceConfig;
use crate::file_format::decode_file;

use std::sync::Arc;

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One NATS source.
pub struct NatsSource {
    name: String,
    stream: StreamName,
    config: NatsSourceConfig,
    ingestor: Arc<Ingestor>,
    metrics: NatsMetrics,
}

struct NatsMetrics {
    messages: Counter,
    events: Counter,
    rejected: Counter,
    errors: Counter,
    lost: Counter,
}

impl NatsMetrics {
    fn new(source: &str) -> Self {
        Self {
            messages: metrics::counter!("tidewatch_source_messages_total", "source" => source.to_string()),
            events: metrics::counter!("tidewatch_source_events_total", "source" => source.to_string()),
            rejected: metrics::counter!("tidewatch_source_rejected_total", "source" => source.to_string()),
            errors: metrics::counter!("tidewatch_source_errors_total", "source" => source.to_string()),
            lost: metrics::counter!("tidewatch_source_lost_total", "source" => source.to_string()),
        }
    }
}

/// Why consuming stopped.
enum Stop {
    Shutdown,
}

impl NatsSource {
    /// A source for `config` (no I/O: connecting happens in [`NatsSource::run`]).
    pub fn new(
        name: String,
        stream: StreamName,
        config: NatsSourceConfig,
        ingestor: Arc<Ingestor>,
    ) -> Self {
        let metrics = NatsMetrics::new(&name);
        Self {
            name,
            stream,
            config,
            ingestor,
            metrics,
        }
    }

    /// Consumes until `shutdown` turns true, reconnecting with backoff after failures.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(source = %self.name, url = %self.config.url, subject = %self.config.subject, stream = %self.stream, "nats source started");
        let mut backoff = Duration::from_millis(200);
        while !*shutdown.borrow() {
            let outcome = match &self.config.jetstream_stream {
                Some(js_stream) => self.consume_jetstream(js_stream, &mut shutdown).await,
                None => self.consume_core(&mut shutdown).await,
            };
            match outcome {
                Ok(Stop::Shutdown) => break,
                Err(error) => {
                    self.metrics.errors.increment(1);
                    tracing::warn!(source = %self.name, %error, retry_in_ms = backoff.as_millis() as u64, "nats source failed; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        tracing::info!(source = %self.name, "nats source stopped");
    }

    fn nats_error(&self, error: impl std::fmt::Display) -> SourceError {
        SourceError::Nats {
            url: self.config.url.clone(),
            message: error.to_string(),
        }
    }

    async fn connect(&self) -> Result<async_nats::Client, SourceError> {
        let servers: Vec<&str> = self.config.url.split(',').map(str::trim).collect();
        async_nats::ConnectOptions::new()
            .name(format!("tidewatch source {}", self.name))
            .connection_timeout(Duration::from_secs(5))
            .connect(servers)
            .await
            .map_err(|e| self.nats_error(e))
    }

    async fn consume_core(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Stop, SourceError> {
        let client = self.connect().await?;
        let subject = self.config.subject.clone();
        let mut subscription = match &self.config.queue_group {
            Some(group) => client.queue_subscribe(subject, group.clone()).await,
            None => client.subscribe(subject).await,
        }
        .map_err(|e| self.nats_error(e))?;
        let wait = Duration::from_millis(self.config.batch_wait_ms);
        loop {
            let first = tokio::select! {
                message = subscription.next() => message,
                _ = shutdown.changed() => None,
            };
            let Some(first) = first else {
                if *shutdown.borrow() {
                    // Take what the client already buffered, then stop.
                    let _ = subscription.unsubscribe().await;
                    let mut rest = Vec::new();
                    while let Ok(Some(message)) =
                        tokio::time::timeout(Duration::from_millis(200), subscription.next()).await
                    {
                        rest.push(message);
                    }
                    if !rest.is_empty() {
                        self.append_core(rest, shutdown).await;
                    }
                    return Ok(Stop::Shutdown);
                }
                return Err(self.nats_error("the subscription ended (connection closed)"));
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + wait;
            while batch.len() < self.config.batch_messages {
                tokio::select! {
                    message = subscription.next() => match message {
                        Some(message) => batch.push(message),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            self.append_core(batch, shutdown).await;
        }
    }

    /// Appends a core batch, retrying failures until they succeed or the server stops.
    async fn append_core(&self, batch: Vec<async_nats::Message>, shutdown: &watch::Receiver<bool>) {
        let count = batch.len();
        let bodies: Vec<Body> = batch
            .into_iter()
            .map(|m| (m.payload, encoding(m.headers.as_ref())))
            .collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.append(bodies.clone()).await {
                Ok(()) => return,
                Err(error) if *shutdown.borrow() => {
                    self.metrics.lost.increment(count as u64);
                    tracing::error!(source = %self.name, %error, messages = count, "core NATS messages not stored at shutdown (core NATS keeps no copy)");
                    return;
                }
                Err(error) => {
                    self.metrics.errors.increment(1);
                    tracing::warn!(source = %self.name, %error, messages = count, "append failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn consume_jetstream(
        &self,
        js_stream: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Stop, SourceError> {
        let client = self.connect().await?;
        let context = jetstream::new(client);
        let stream = context
            .get_stream(js_stream)
            .await
            .map_err(|e| self.nats_error(format!("jetstream stream {js_stream:?}: {e}")))?;
        let durable = self
            .config
            .durable
            .clone()
            .unwrap_or_else(|| self.name.clone());
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: self.config.subject.clone(),
                    ack_policy: AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.nats_error(format!("durable consumer {durable:?}: {e}")))?;
        // The server holds a pull request at least this long (shorter ones are refused).
        let expires = Duration::from_millis(self.config.batch_wait_ms.max(1_000));
        loop {
            if *shutdown.borrow() {
                return Ok(Stop::Shutdown);
            }
            let mut messages = consumer
                .batch()
                .max_messages(self.config.batch_messages)
                .expires(expires)
                .messages()
                .await
                .map_err(|e| self.nats_error(e))?;
            let mut batch = Vec::new();
            loop {
                let next = tokio::select! {
                    next = messages.next() => next,
                    // Unacknowledged messages are redelivered to the durable consumer.
                    _ = shutdown.changed() => return Ok(Stop::Shutdown),
                };
                match next {
                    Some(Ok(message)) => batch.push(message),
                    Some(Err(error)) => return Err(self.nats_error(error)),
                    None => break,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let bodies = batch
                .iter()
                .map(|m| (m.payload.clone(), encoding(m.headers.as_ref())))
                .collect();
            // Not acknowledged on failure: JetStream redelivers after the ack wait.
            self.append(bodies).await?;
            for message in &batch {
                if let Err(error) = message.ack().await {
                    // The events are stored; NATS will redeliver them (a duplicate, not a loss).
                    tracing::warn!(source = %self.name, %error, "ack failed");
                }
            }
        }
    }

    /// Decodes message bodies and appends their events durably (dead letters for bad ones).
    async fn append(&self, bodies: Vec<Body>) -> Result<(), SourceError> {
        let limits = *self.ingestor.limits();
        let selection = self.ingestor.registry().get_or_create(&self.stream)?;
        let mut events = Vec::new();
        let mut rejected = Vec::new();
        let count = bodies.len();
        for (payload, encoding) in bodies {
            split_message(
                payload,
                encoding,
                &limits,
                &selection,
                &mut events,
                &mut rejected,
            );
        }
        let outcome = self
            .ingestor
            .ingest_events(&self.stream, events, rejected)
            .await?;
        self.metrics.messages.increment(count as u64);
        self.metrics.events.increment(outcome.accepted as u64);
        self.metrics
            .rejected
            .increment(outcome.rejected.len() as u64);
        Ok(())
    }
}

/// A message's payload and its `Content-Encoding` (or why the header is refused).
type Body = (Bytes, Result<ContentEncoding, String>);

/// The encoding a message's `Content-Encoding` header names, parsed as HTTP's is (none or
/// identity, gzip or x-gzip; anything else is refused).
fn encoding(headers: Option<&async_nats::HeaderMap>) -> Result<ContentEncoding, String> {
    let header = headers.and_then(|h| h.get("Content-Encoding"));
    ContentEncoding::from_header(header.map(|v| v.as_str())).map_err(|e| e.to_string())
}

/// One message's events and rejections, decoded as a watched file is (bounded inflation,
/// then the pipeline's splitter); a body that cannot be decoded at all is one rejection
/// carrying (the start of) its bytes.
fn split_message(
    payload: Bytes,
    encoding: Result<ContentEncoding, String>,
    limits: &tw_pipeline::IngestLimits,
    stream: &tw_pipeline::StreamState,
    events: &mut Vec<ParsedEvent>,
    rejected: &mut Vec<Rejection>,
) {
    let decoded = encoding
        .map_err(|reason| (reason, payload.clone()))
        .and_then(|encoding| decode_file(payload, encoding, limits, limits, stream));
    match decoded {
        Ok((mut message_events, mut message_rejected)) => {
            events.append(&mut message_events);
            rejected.append(&mut message_rejected);
        }
        Err((reason, raw)) => rejected.push(Rejection {
            line: 1,
            reason: format!("message: {reason}"),
            raw: raw.slice(..raw.len().min(limits.max_event_bytes)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tw_log::{DiskLog, Log, LogConfig};
    use tw_pipeline::{IngestLimits, StreamDefaults, StreamRegistry, StreamState};

    use super::*;

    fn stream_state(dir: &std::path::Path) -> Arc<StreamState> {
        let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.join("log"))).unwrap();
        let registry =
            StreamRegistry::open(&dir.join("streams"), log, StreamDefaults::default()).unwrap();
        registry
            .get_or_create(&StreamName::new("n").unwrap())
            .unwrap()
    }

    fn gzip(bytes: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    fn headers(encoding: &str) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Encoding", encoding);
        headers
    }

    /// The events (as raw lines) and the rejection reasons of one message.
    fn split(
        payload: Bytes,
        headers: Option<&async_nats::HeaderMap>,
        limits: &IngestLimits,
    ) -> (Vec<String>, Vec<(String, usize)>) {
        let dir = tempfile::tempdir().unwrap();
        let state = stream_state(dir.path());
        let (mut events, mut rejected) = (Vec::new(), Vec::new());
        let encoding = encoding(headers);
        split_message(
            payload,
            encoding,
            limits,
            &state,
            &mut events,
            &mut rejected,
        );
        (
            events
                .iter()
                .map(|e| String::from_utf8_lossy(&e.raw).into_owned())
                .collect(),
            rejected
                .iter()
                .map(|r| (r.reason.clone(), r.raw.len()))
                .collect(),
        )
    }

    #[test]
    fn the_content_encoding_header_chooses_gzip() {
        let limits = IngestLimits::default();
        let ndjson = b"{\"a\":1}\n{\"a\":2}\n";
        let both = vec!["{\"a\":1}".to_string(), "{\"a\":2}".to_string()];
        assert_eq!(split(Bytes::from_static(ndjson), None, &limits).0, both);
        assert_eq!(
            split(
                Bytes::from_static(ndjson),
                Some(&headers("identity")),
                &limits
            )
            .0,
            both
        );
        for name in ["gzip", " GZip ", "x-gzip"] {
            let (events, rejected) = split(gzip(ndjson), Some(&headers(name)), &limits);
            assert_eq!((events, rejected), (both.clone(), vec![]), "{name:?}");
        }
    }

    #[test]
    fn undecodable_messages_are_one_bounded_rejection() {
        let limits = IngestLimits {
            max_decompressed_bytes: 1 << 20,
            max_event_bytes: 64,
            ..IngestLimits::default()
        };
        // A gzip bomb: a few KiB that would inflate to 16 MiB stop at the limit.
        let bomb = gzip(&vec![b' '; 16 << 20]);
        assert!(bomb.len() < 64 << 10);
        let (events, rejected) = split(bomb, Some(&headers("gzip")), &limits);
        assert!(events.is_empty());
        assert_eq!(rejected.len(), 1);
        assert!(
            rejected[0]
                .0
                .starts_with("message: decompressed body exceeds"),
            "{rejected:?}"
        );
        assert_eq!(rejected[0].1, 64, "the sample is cut at max_event_bytes");

        let (events, rejected) = split(
            Bytes::from(vec![b'x'; 500]),
            Some(&headers("gzip")),
            &limits,
        );
        assert!(events.is_empty());
        assert!(
            rejected[0].0.starts_with("message: invalid gzip body"),
            "{rejected:?}"
        );

        let (events, rejected) = split(
            Bytes::from_static(b"{\"a\":1}"),
            Some(&headers("br")),
            &limits,
        );
        assert!(events.is_empty());
        assert_eq!(rejected.len(), 1);
        assert!(
            rejected[0]
                .0
                .starts_with("message: unsupported content encoding \"br\""),
            "{rejected:?}"
        );
    }
}
