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
        let decoded = decode_body(body, encoding, &self.limits)?;
        metrics::counter!("tidewatch_ingest_bytes_total", "stream" => stream.to_string())
            .increment(decoded.len() as u64);
        let state = self.registry.get_or_create(&stream)?;
        let (events, rejected) =
            split_events_selecting(&decoded, &self.limits, Some(&state.selection))?;
        self.ingest_events(&stream, events, rejected).await
    }

    /// Ingests events already split (and parsed) by a source.
    pub async fn ingest_events(
        &self,
        stream: &StreamName,
        events: Vec<ParsedEvent>,
        mut rejected: Vec<Rejection>,
    ) -> Result<IngestOutcome, IngestError> {
        let state = self.registry.get_or_create(stream)?;
        let now = now_ms();
        let partitions = state.config.partitions;
        let mut per_partition: Vec<Vec<AppendRecord>> = vec![Vec::new(); partitions as usize];
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
            per_partition[partition as usize].push(AppendRecord {
                ingest_time_ms: now,
                event_time_ms,
                key,
                payload: event.raw,
            });
        }
        let accepted: usize = per_partition.iter().map(Vec::len).sum();
        let appends = per_partition
            .into_iter()
            .enumerate()
            .filter(|(_, records)| !records.is_empty())
            .map(|(partition, records)| self.log.append(stream, partition as u32, records));
        let letters = rejected
            .iter()
            .map(|r| DeadLetter {
                line: Some(r.line),
                ..DeadLetter::new(stream.as_str(), "ingest", r.reason.clone(), &r.raw)
            })
            .collect();
        let (appended, dead_lettered) =
            futures::join!(futures::future::join_all(appends), self.dlq.push(letters));
        for result in appended {
            result?;
        }
        dead_lettered?;
        let label = stream.to_string();
        metrics::counter!("tidewatch_events_in_total", "stream" => label.clone())
            .increment(accepted as u64);
        metrics::counter!("tidewatch_events_rejected_total", "stream" => label)
            .increment(rejected.len() as u64);
        rejected.sort_by_key(|r| r.line);
        Ok(IngestOutcome {
            accepted,
            rejected: rejected
                .into_iter()
                .map(|r| RejectedRecord {
                    line: r.line,
                    reason: r.reason,
                })
                .collect(),
        })
    }
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
