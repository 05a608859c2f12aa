//! The dead-letter queue: every record the pipeline could not take, with its bytes and reason.
//!
//! Stored in the log itself, as the internal stream `_dlq` (one partition), so it inherits the
//! log's durability, CRC framing and retention, and needs no second storage engine.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tw_core::{AppendRecord, StreamName, now_ms};
use tw_log::{Log, LogError};

/// Name of the internal stream holding dead letters.
pub const DLQ_STREAM: &str = "_dlq";

/// One record that could not be ingested or processed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Stream the record was sent to.
    pub stream: String,
    /// Why it was refused.
    pub reason: String,
    /// Where it failed: `ingest`, or `consumer:<name>`.
    pub stage: String,
    /// Line or element number in the request body (ingest failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Partition of the source record (consumer failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_partition: Option<u32>,
    /// Offset of the source record (consumer failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_offset: Option<u64>,
    /// When the record was received, Unix milliseconds.
    pub received_at_ms: i64,
    /// The original bytes: UTF-8 text as is, anything else base64 (`raw_base64 = true`).
    pub raw: String,
    /// Whether `raw` is base64.
    #[serde(default)]
    pub raw_base64: bool,
}

impl DeadLetter {
    /// A dead letter for `raw` bytes refused at `stage`.
    pub fn new(stream: &str, stage: &str, reason: String, raw: &[u8]) -> Self {
        let (raw, raw_base64) = match std::str::from_utf8(raw) {
            Ok(text) => (text.to_string(), false),
            Err(_) => (base64::engine::general_purpose::STANDARD.encode(raw), true),
        };
        Self {
            stream: stream.to_string(),
            reason,
            stage: stage.to_string(),
            line: None,
            source_partition: None,
            source_offset: None,
            received_at_ms: now_ms(),
            raw,
            raw_base64,
        }
    }

    /// The original bytes.
    pub fn raw_bytes(&self) -> Vec<u8> {
        if self.raw_base64 {
            base64::engine::general_purpose::STANDARD
                .decode(&self.raw)
                .unwrap_or_default()
        } else {
            self.raw.as_bytes().to_vec()
        }
    }
}

/// A dead letter with its position in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DlqEntry {
    /// Position in the queue (use as `from` to page, or to replay one entry).
    pub id: u64,
    /// The dead letter.
    #[serde(flatten)]
    pub letter: DeadLetter,
}

/// Handle on the dead-letter queue.
#[derive(Clone)]
pub struct DeadLetterQueue {
    log: Arc<dyn Log>,
    stream: StreamName,
}

impl DeadLetterQueue {
    /// Opens (creating if needed) the queue in `log`.
    pub fn open(log: Arc<dyn Log>) -> Result<Self, LogError> {
        let stream = StreamName::internal(DLQ_STREAM);
        log.create_stream(&stream, 1)?;
        Ok(Self { log, stream })
    }

    /// Appends dead letters durably; resolves after fsync. A caller must not report the
    /// letters as kept when this fails: the queue is where refused records are not lost.
    pub fn push(&self, letters: Vec<DeadLetter>) -> BoxFuture<'static, Result<(), LogError>> {
        if letters.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let count = letters.len() as u64;
        // Every letter of one push comes from one place (the callers build them per stage).
        let stage = letters[0].stage.clone();
        let now = now_ms();
        let records = letters
            .iter()
            .map(|letter| AppendRecord {
                ingest_time_ms: now,
                event_time_ms: letter.received_at_ms,
                key: Bytes::from(letter.stream.clone()),
                payload: Bytes::from(serde_json::to_vec(letter).unwrap_or_default()),
            })
            .collect();
        let append = self.log.append(&self.stream, 0, records);
        Box::pin(async move {
            match append.await {
                Ok(_) => {
                    metrics::counter!("tidewatch_dlq_records_total").increment(count);
                    Ok(())
                }
                Err(error) => {
                    metrics::counter!("tidewatch_dlq_write_errors_total", "stage" => stage)
                        .increment(1);
                    Err(error)
                }
            }
        })
    }

    /// Lists up to `limit` entries from id `from`, optionally only those of one stream.
    /// Blocking (reads the log).
    pub fn list(
        &self,
        from: u64,
        limit: usize,
        stream: Option<&str>,
    ) -> Result<Vec<DlqEntry>, LogError> {
        let mut entries = Vec::new();
        let mut next = from;
        let end = self.log.end_offset(&self.stream, 0)?;
        while entries.len() < limit && next < end {
            let records = self.log.read(&self.stream, 0, next, 1024, 8 << 20)?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for record in records {
                let letter = match serde_json::from_slice::<DeadLetter>(&record.payload) {
                    Ok(letter) => letter,
                    Err(error) => DeadLetter::new(
                        "?",
                        "dlq",
                        format!("unreadable dead letter: {error}"),
                        &record.payload,
                    ),
                };
                if stream.is_none_or(|wanted| wanted == letter.stream) && entries.len() < limit {
                    entries.push(DlqEntry {
                        id: record.offset,
                        letter,
                    });
                }
            }
        }
        Ok(entries)
    }

    /// Number of entries ever written and still retained.
    pub fn len(&self) -> Result<u64, LogError> {
        Ok(self.log.end_offset(&self.stream, 0)? - self.log.start_offset(&self.stream, 0)?)
    }

    /// Whether the queue holds nothing.
    pub fn is_empty(&self) -> Result<bool, LogError> {
        Ok(self.len()? == 0)
    }
}
