//! The one append path: every source (native HTTP, compatible APIs, file watchers) ends here.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tw_core::{AppendRecord, StreamName, now_ms, partition_for_key};
use tw_log::Log;

use crate::IngestError;
use crate::decode::{
    ContentEncoding, IngestLimits, ParsedEvent, Rejection, decode_body, split_events_selecting,
};
use crate::dlq::{DeadLetter, DeadLetterQueue};
use crate::registry::{StreamRegistry, StreamState};
use crate::split::BodySplitter;

/// What happened to a request's records.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestOutcome {
    /// Events durably appended to the log.
    pub accepted: usize,
    /// Records refused, each with its line and reason (also kept in the dead-letter queue).
    pub rejected: Vec<RejectedRecord>,
}

/// One refused record of a request.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedRecord {
    /// 1-based line or element number in the body.
    pub line: usize,
    /// Why it was refused.
    pub reason: String,
}

/// What happened to a request's lines, also when a part of it failed: for callers that resume
/// a failed request without storing its done lines again (idempotent ingest).
#[derive(Debug, Default)]
pub struct LineReport {
    /// What is done: events stored and records refused (and dead-lettered).
    pub outcome: IngestOutcome,
    /// The lines of `outcome`, stored or dead-lettered (in no particular order).
    pub done: Vec<usize>,
    /// Why the other lines are not done (the first failure); `None` when every line is.
    pub failure: Option<IngestError>,
}

/// Validates, partitions and durably appends events.
pub struct Ingestor {
    log: Arc<dyn Log>,
    registry: Arc<StreamRegistry>,
    dlq: DeadLetterQueue,
    limits: IngestLimits,
}

impl Ingestor {
    /// Builds the ingest path over a log, its stream registry and dead-letter queue.
    pub fn new(
        log: Arc<dyn Log>,
        registry: Arc<StreamRegistry>,
        dlq: DeadLetterQueue,
        limits: IngestLimits,
    ) -> Self {
        Self {
            log,
            registry,
            dlq,
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &IngestLimits {
        &self.limits
    }

    /// The log it appends to.
    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    /// The stream registry.
    pub fn registry(&self) -> &Arc<StreamRegistry> {
        &self.registry
    }

    /// The dead-letter queue.
    pub fn dlq(&self) -> &DeadLetterQueue {
        &self.dlq
    }

    /// Ingests a request body (NDJSON, JSON array or CloudTrail file; gzip or plain). Resolves
    /// after every accepted event and every dead letter is durable.
    pub async fn ingest_body(
        &self,
        stream: &str,
        body: Bytes,
        encoding: ContentEncoding,
    ) -> Result<IngestOutcome, IngestError> {
        let stream = StreamName::new(stream).map_err(|e| IngestError::BadStream(e.to_string()))?;
        let (events, rejected) = self.split_body(&stream, body, encoding, &mut |_| {})?;
        self.ingest_events(&stream, events, rejected).await
    }

    /// Ingests a plain (not compressed) body as it arrives, chunk by chunk: the results of
    /// [`ingest_body`](Self::ingest_body) on the gathered body, but NDJSON lines are split and
    /// parsed while the rest of the body is on its way, and never copied into one buffer
    /// ([`BodySplitter`]). Fails as soon as the body passes `max_body_bytes`.
    pub async fn ingest_chunks<S, E>(
        &self,
        stream: &str,
        chunks: S,
    ) -> Result<IngestOutcome, IngestError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let stream = StreamName::new(stream).map_err(|e| IngestError::BadStream(e.to_string()))?;
        let (events, rejected) = self.split_chunks(&stream, chunks, &mut |_| {}).await?;
        self.ingest_events(&stream, events, rejected).await
    }

    /// Decodes and splits a whole body for `stream` (created if new); `observe` sees the
    /// decoded body.
    pub(crate) fn split_body(
        &self,
        stream: &StreamName,
        body: Bytes,
        encoding: ContentEncoding,
        observe: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(Vec<ParsedEvent>, Vec<Rejection>), IngestError> {
        let decoded = decode_body(body, encoding, &self.limits)?;
        let state = self.registry.get_or_create(stream)?;
        observe(&decoded);
        metrics::counter!("tidewatch_ingest_bytes_total", "stream" => stream.to_string())
            .increment(decoded.len() as u64);
        split_events_selecting(&decoded, &self.limits, Some(&state.selection))
    }

    /// Splits a plain body for `stream` (created if new) as it arrives; `observe` sees each
    /// chunk.
    pub(crate) async fn split_chunks<S, E>(
        &self,
        stream: &StreamName,
        mut chunks: S,
        observe: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<(Vec<ParsedEvent>, Vec<Rejection>), IngestError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures::StreamExt;
        let state = self.registry.get_or_create(stream)?;
        let mut splitter = BodySplitter::new(&self.limits, Some(&state.selection));
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| IngestError::BodyRead(e.to_string()))?;
            observe(&chunk);
            splitter.push(chunk)?;
        }
        metrics::counter!("tidewatch_ingest_bytes_total", "stream" => stream.to_string())
            .increment(splitter.received() as u64);
        splitter.finish()
    }

    /// Ingests events already split (and parsed) by a source. A request stored in part (one
    /// partition's append failed, or the dead-letter queue did) is an error: see
    /// [`ingest_events_by_line`](Self::ingest_events_by_line) for what was done.
    pub async fn ingest_events(
        &self,
        stream: &StreamName,
        events: Vec<ParsedEvent>,
        rejected: Vec<Rejection>,
    ) -> Result<IngestOutcome, IngestError> {
        let report = self.ingest_events_by_line(stream, events, rejected).await?;
        match report.failure {
            Some(error) => Err(error),
            None => Ok(report.outcome),
        }
    }

    /// Ingests events already split, reporting line by line what is done when a part failed:
    /// the events of a partition whose append succeeded are stored, the refused records are
    /// dead-lettered unless the queue failed. `Err` only when nothing was done (the stream is
    /// unusable).
    pub async fn ingest_events_by_line(
        &self,
        stream: &StreamName,
        events: Vec<ParsedEvent>,
        mut rejected: Vec<Rejection>,
    ) -> Result<LineReport, IngestError> {
        let state = self.registry.get_or_create(stream)?;
        let now = now_ms();
        let partitions = state.config.partitions;
        // Per partition: the records and the line of each.
        let mut per_partition: Vec<(Vec<AppendRecord>, Vec<usize>)> =
            vec![(Vec::new(), Vec::new()); partitions as usize];
        let mut round_robin = state.next_round_robin(events.len());
        for event in events {
            if let Some(Err(reason)) = state
                .schema
                .as_ref()
                .map(|schema| schema.check(&event.value))
            {
                rejected.push(Rejection {
                    line: event.line,
                    reason,
                    raw: event.raw,
                });
                continue;
            }
            let (partition, key) = partition_of(&state, &event, &mut round_robin, partitions);
            let event_time_ms = state.event_time_of(&event.value, now);
            let (records, lines) = &mut per_partition[partition as usize];
            records.push(AppendRecord {
                ingest_time_ms: now,
                event_time_ms,
                key,
                payload: event.raw,
            });
            lines.push(event.line);
        }
        let mut waiting = Vec::new();
        for (partition, (records, lines)) in per_partition.into_iter().enumerate() {
            if !records.is_empty() {
                waiting.push((lines, self.log.append(stream, partition as u32, records)));
            }
        }
        let letters = rejected
            .iter()
            .map(|r| DeadLetter {
                line: Some(r.line),
                ..DeadLetter::new(stream.as_str(), "ingest", r.reason.clone(), &r.raw)
            })
            .collect();
        let (appended, dead_lettered) = futures::join!(
            futures::future::join_all(waiting.iter_mut().map(|(_, append)| append)),
            self.dlq.push(letters)
        );
        let mut report = LineReport::default();
        for ((lines, _), result) in waiting.iter().zip(appended) {
            match result {
                Ok(_) => {
                    report.outcome.accepted += lines.len();
                    report.done.extend_from_slice(lines);
                }
                Err(error) => {
                    tracing::warn!(%error, %stream, "ingest append failed");
                    report.failure.get_or_insert(error.into());
                }
            }
        }
        let dead_lettered = match dead_lettered {
            Ok(()) => {
                report.done.extend(rejected.iter().map(|r| r.line));
                rejected.len()
            }
            Err(source) => {
                let failure = dead_letter_failure(stream, rejected.len(), source);
                // An append failure, when both failed, is the one the client hears first.
                report.failure.get_or_insert(failure);
                rejected.clear();
                0
            }
        };
        let label = stream.to_string();
        metrics::counter!("tidewatch_events_in_total", "stream" => label.clone())
            .increment(report.outcome.accepted as u64);
        metrics::counter!("tidewatch_events_rejected_total", "stream" => label)
            .increment(dead_lettered as u64);
        rejected.sort_by_key(|r| r.line);
        report.outcome.rejected = rejected
            .into_iter()
            .map(|r| RejectedRecord {
                line: r.line,
                reason: r.reason,
            })
            .collect();
        Ok(report)
    }
}

/// The error of a request whose refused records the dead-letter queue did not store.
fn dead_letter_failure(stream: &StreamName, count: usize, source: tw_log::LogError) -> IngestError {
    tracing::error!(%stream, count, error = %source, "could not store rejected records in the dead-letter queue; failing the request");
    IngestError::DeadLetterWrite { count, source }
}

fn partition_of(
    state: &StreamState,
    event: &ParsedEvent,
    round_robin: &mut u64,
    partitions: u32,
) -> (u32, Bytes) {
    if let Some(key) = state
        .partition_key
        .as_ref()
        .and_then(|path| path.get_text(&event.value))
    {
        return (
            partition_for_key(key.as_bytes(), partitions),
            Bytes::from(key),
        );
    }
    let partition = (*round_robin % u64::from(partitions)) as u32;
    *round_robin += 1;
    (partition, Bytes::new())
}

/// One record handed over by a compatible API (Kinesis, Firehose, `_bulk`): exactly one event,
/// optionally addressed to a partition chosen by the protocol (a Kinesis shard).
#[derive(Debug, Clone)]
pub struct CompatRecord {
    /// The partition, or `None` to place the record by the stream's key (or round-robin).
    pub partition: Option<u32>,
    /// The key stored with the record (a Kinesis partition key); ignored when `partition` is
    /// `None` and the stream has a partition key field.
    pub key: Bytes,
    /// The record's bytes: one JSON object. Stored as is, so a reader gets the bytes it sent.
    pub payload: Bytes,
}

/// What happened to one [`CompatRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Durably appended.
    Stored {
        /// Partition it went to.
        partition: u32,
        /// Its offset there.
        offset: u64,
    },
    /// Refused (not JSON, not an object, too large, schema violation): kept in the dead-letter
    /// queue with this reason. Retrying the same bytes cannot succeed.
    Rejected {
        /// Why.
        reason: String,
    },
    /// The append of its partition failed (disk full, log closed): nothing stored for it;
    /// retrying later may succeed.
    Failed {
        /// Why.
        reason: String,
    },
}

impl Ingestor {
    /// Ingests records one event each, answering per record — the entry point of the
    /// compatible APIs, whose protocols report partial failures record by record. Records are
    /// appended per partition in the order given; a failed partition append fails only the
    /// records of that partition. Resolves after every stored record and every dead letter is
    /// durable. `Err` only when the stream itself is unusable (nothing was done). When the
    /// dead-letter queue fails, the refused records are [`RecordOutcome::Failed`] (retryable:
    /// nothing kept of them) while the stored ones stay `Stored`, so a client retrying its
    /// failed records stores nothing twice.
    pub async fn ingest_records(
        &self,
        stream: &StreamName,
        records: Vec<CompatRecord>,
    ) -> Result<Vec<RecordOutcome>, IngestError> {
        let state = self.registry.get_or_create(stream)?;
        let now = now_ms();
        let partitions = state.config.partitions;
        let label = stream.to_string();
        let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
        metrics::counter!("tidewatch_ingest_bytes_total", "stream" => label.clone())
            .increment(bytes as u64);
        let mut outcomes = vec![None; records.len()];
        // Per partition: the appended records and the request index of each.
        let mut per_partition: Vec<(Vec<AppendRecord>, Vec<usize>)> =
            vec![(Vec::new(), Vec::new()); partitions as usize];
        let mut letters = Vec::new();
        let mut round_robin = state.next_round_robin(records.len());
        for (index, record) in records.into_iter().enumerate() {
            let checked = self.check_record(&state, &record.payload);
            let (value, partition, key) = match (checked, record.partition) {
                (Err(reason), _) => {
                    letters.push(DeadLetter {
                        line: Some(index + 1),
                        ..DeadLetter::new(
                            stream.as_str(),
                            "ingest",
                            reason.clone(),
                            &record.payload,
                        )
                    });
                    outcomes[index] = Some(RecordOutcome::Rejected { reason });
                    continue;
                }
                (Ok(value), Some(partition)) if partition < partitions => {
                    (value, partition, record.key)
                }
                (Ok(_), Some(partition)) => {
                    // A caller bug, not bad data: report it without dead-lettering.
                    outcomes[index] = Some(RecordOutcome::Failed {
                        reason: format!(
                            "partition {partition} does not exist (stream {stream} has {partitions})"
                        ),
                    });
                    continue;
                }
                (Ok(value), None) => {
                    let event = ParsedEvent {
                        line: index + 1,
                        value,
                        raw: Bytes::new(),
                    };
                    let (partition, key) =
                        partition_of(&state, &event, &mut round_robin, partitions);
                    // The stream's key field wins over a protocol key, as on the native path.
                    let key = if key.is_empty() { record.key } else { key };
                    (event.value, partition, key)
                }
            };
            let event_time_ms = state.event_time_of(&value, now);
            let (appends, indexes) = &mut per_partition[partition as usize];
            appends.push(AppendRecord {
                ingest_time_ms: now,
                event_time_ms,
                key,
                payload: record.payload,
            });
            indexes.push(index);
        }
        let mut waiting = Vec::new();
        for (partition, (appends, indexes)) in per_partition.into_iter().enumerate() {
            if !appends.is_empty() {
                waiting.push((
                    partition as u32,
                    indexes,
                    self.log.append(stream, partition as u32, appends),
                ));
            }
        }
        let rejected = letters.len();
        let (appended, dead_lettered) = futures::join!(
            futures::future::join_all(waiting.iter_mut().map(|(_, _, append)| append)),
            self.dlq.push(letters)
        );
        let mut rejected = rejected;
        if let Err(error) = dead_lettered {
            tracing::error!(%stream, count = rejected, %error, "could not store rejected records in the dead-letter queue; answering them as failed");
            for outcome in outcomes.iter_mut() {
                if let Some(RecordOutcome::Rejected { reason }) = outcome {
                    *outcome = Some(RecordOutcome::Failed {
                        reason: format!(
                            "refused ({reason}), and keeping it in the dead-letter queue failed ({error}): retry it"
                        ),
                    });
                }
            }
            rejected = 0;
        }
        let mut accepted = 0usize;
        for ((partition, indexes, _), result) in waiting.iter().zip(appended) {
            match result {
                Ok(range) => {
                    accepted += indexes.len();
                    for (index, offset) in indexes.iter().zip(range) {
                        outcomes[*index] = Some(RecordOutcome::Stored {
                            partition: *partition,
                            offset,
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, %stream, partition, "compatible-API append failed");
                    for index in indexes {
                        outcomes[*index] = Some(RecordOutcome::Failed {
                            reason: error.to_string(),
                        });
                    }
                }
            }
        }
        metrics::counter!("tidewatch_events_in_total", "stream" => label.clone())
            .increment(accepted as u64);
        metrics::counter!("tidewatch_events_rejected_total", "stream" => label)
            .increment(rejected as u64);
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(RecordOutcome::Failed {
                    reason: "record was not processed".into(),
                })
            })
            .collect())
    }

    /// Parses one record for the fields the stream reads, with the same checks as a body line.
    fn check_record(
        &self,
        state: &StreamState,
        payload: &[u8],
    ) -> Result<serde_json::Value, String> {
        if payload.len() > self.limits.max_event_bytes {
            return Err(format!(
                "event of {} bytes exceeds the limit of {} bytes",
                payload.len(),
                self.limits.max_event_bytes
            ));
        }
        if let Err(error) = std::str::from_utf8(payload) {
            return Err(format!(
                "invalid JSON: invalid UTF-8 at byte {}",
                error.valid_up_to()
            ));
        }
        let value = state
            .selection
            .parse(payload)
            .map_err(|e| format!("invalid JSON: {e}"))?;
        if !value.is_object() {
            return Err("an event must be a JSON object".to_string());
        }
        if let Some(Err(reason)) = state.schema.as_ref().map(|schema| schema.check(&value)) {
            return Err(reason);
        }
        Ok(value)
    }
}
