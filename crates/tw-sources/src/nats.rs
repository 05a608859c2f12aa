//! The NATS source: a subject's messages into a stream, through the same append path as HTTP.
//!
//! Each message is one body (NDJSON, a JSON object or array, a CloudTrail file; gzip when its
//! `Content-Encoding` header says so), decoded by the pipeline. Messages are gathered into
//! batches (`batch_messages`, `batch_wait_ms`) and appended together.
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
use tw_pipeline::{
    ContentEncoding, Ingestor, ParsedEvent, Rejection, decode_body, split_events_selecting,
};

use crate::SourceError;
use crate::config::NatsSourceConfig;

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
        let bodies: Vec<(Bytes, bool)> = batch
            .into_iter()
            .map(|m| (m.payload, is_gzip(m.headers.as_ref())))
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
                .map(|m| (m.payload.clone(), is_gzip(m.headers.as_ref())))
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
    async fn append(&self, bodies: Vec<(Bytes, bool)>) -> Result<(), SourceError> {
        let limits = *self.ingestor.limits();
        let selection = self.ingestor.registry().get_or_create(&self.stream)?;
        let mut events = Vec::new();
        let mut rejected = Vec::new();
        let count = bodies.len();
        for (payload, gzip) in bodies {
            split_message(
                payload,
                gzip,
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

fn is_gzip(headers: Option<&async_nats::HeaderMap>) -> bool {
    headers
        .and_then(|h| h.get("Content-Encoding"))
        .is_some_and(|v| v.as_str().trim().eq_ignore_ascii_case("gzip"))
}

/// One message's events and rejections; a body that cannot be decoded at all is one
/// rejection carrying (the start of) its bytes.
fn split_message(
    payload: Bytes,
    gzip: bool,
    limits: &tw_pipeline::IngestLimits,
    stream: &tw_pipeline::StreamState,
    events: &mut Vec<ParsedEvent>,
    rejected: &mut Vec<Rejection>,
) {
    let encoding = if gzip {
        ContentEncoding::Gzip
    } else {
        ContentEncoding::Identity
    };
    let whole_message_rejected = |reason: String, raw: &Bytes| Rejection {
        line: 1,
        reason: format!("message: {reason}"),
        raw: raw.slice(..raw.len().min(limits.max_event_bytes)),
    };
    let decoded = match decode_body(payload.clone(), encoding, limits) {
        Ok(decoded) => decoded,
        Err(error) => {
            rejected.push(whole_message_rejected(error.to_string(), &payload));
            return;
        }
    };
    match split_events_selecting(&decoded, limits, Some(stream.selection())) {
        Ok((mut message_events, mut message_rejected)) => {
            events.append(&mut message_events);
            rejected.append(&mut message_rejected);
        }
        Err(error) => rejected.push(whole_message_rejected(error.to_string(), &decoded)),
    }
}
