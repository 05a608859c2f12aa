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
    /// Set when `raw` holds only the beginning of the record: its whole length in bytes. A
    /// letter must fit in one record of the log, and JSON escaping can make a record's text
    /// several times longer; the whole record stays in its stream at `source_offset` until
    /// the stream's retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_truncated_from: Option<usize>,
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
            raw_truncated_from: None,
        }
    }

    /// The letter as one record payload of at most `limit` bytes: as it is, else with `raw` in
    /// base64 when that fits, else with `raw` (and, were it ever needed, `reason`) cut to fit
    /// and [`DeadLetter::raw_truncated_from`] set. Without
    /// this, a letter of a record near the log's limit would be refused by the log, and a
    /// consumer waiting for its letter to be stored would retry it forever.
    fn encode_within(&self, limit: usize) -> Vec<u8> {
        let encoded = serde_json::to_vec(self).unwrap_or_default();
        if encoded.len() <= limit {
            return encoded;
        }
        let original = self.raw_bytes();
        if !self.raw_base64 {
            // Escapes made the text longer than its base64 (control characters take six
            // bytes each): base64 keeps it whole.
            let binary = DeadLetter {
                raw: base64::engine::general_purpose::STANDARD.encode(&original),
                raw_base64: true,
                ..self.clone()
            };
            let encoded = serde_json::to_vec(&binary).unwrap_or_default();
            if encoded.len() <= limit {
                return encoded;
            }
        }
        let mut letter = DeadLetter {
            raw_truncated_from: Some(self.raw_truncated_from.unwrap_or(original.len())),
            ..self.clone()
        };
        // Each pass keeps the share of the bytes that fit at the last pass's ratio of encoded
        // to raw length, minus a margin: the kept part shrinks every pass, and an empty `raw`
        // fits unless the rest alone does not.
        let mut keep = original.len();
        let mut encoded_len = encoded.len();
        loop {
            let over = encoded_len.saturating_sub(limit) + 64;
            let scale = encoded_len.max(1) as f64 / keep.max(1) as f64;
            keep = keep.saturating_sub((over as f64 / scale).ceil() as usize + 1);
            letter.set_raw_prefix(&original, keep);
            let encoded = serde_json::to_vec(&letter).unwrap_or_default();
            if encoded.len() <= limit {
                return encoded;
            }
            if keep == 0 {
                // Only a reason longer than the log's limit gets here.
                let cut = letter.reason.floor_char_boundary(limit / 8);
                letter.reason.truncate(cut);
                return serde_json::to_vec(&letter).unwrap_or_default();
            }
            encoded_len = encoded.len();
        }
    }

    /// Sets `raw` to the first `keep` bytes of `original` (fewer for text, to end on a
    /// character boundary; base64 keeps whole 3-byte groups).
    fn set_raw_prefix(&mut self, original: &[u8], keep: usize) {
        if self.raw_base64 {
            let keep = keep.min(original.len()) / 3 * 3;
            self.raw = base64::engine::general_purpose::STANDARD.encode(&original[..keep]);
        } else {
            let cut = self.raw.floor_char_boundary(keep);
            self.raw.truncate(cut);
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
        let record_limit = self.log.max_record_bytes();
        let records = letters
            .iter()
            .map(|letter| {
                let key = Bytes::from(letter.stream.clone());
                let limit = record_limit.saturating_sub(key.len());
                AppendRecord {
                    ingest_time_ms: now,
                    event_time_ms: letter.received_at_ms,
                    payload: Bytes::from(letter.encode_within(limit)),
                    key,
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tw_log::{DiskLog, LogConfig};

    fn queue(dir: &std::path::Path, max_record_bytes: usize) -> DeadLetterQueue {
        let log = DiskLog::open(LogConfig {
            max_record_bytes,
            ..LogConfig::new(dir)
        })
        .unwrap();
        DeadLetterQueue::open(log).unwrap()
    }

    fn push_one(queue: &DeadLetterQueue, raw: &[u8]) -> DeadLetter {
        let letter = DeadLetter::new("web", "consumer:lake", "bad".into(), raw);
        futures::executor::block_on(queue.push(vec![letter])).unwrap();
        let mut entries = queue.list(0, 10, None).unwrap();
        assert_eq!(entries.len(), 1);
        entries.remove(0).letter
    }

    #[test]
    fn letters_that_fit_are_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path(), 4096);
        let letter = push_one(&queue, b"{\"a\":\"\x01\"}");
        assert_eq!(letter.raw_bytes(), b"{\"a\":\"\x01\"}");
        assert_eq!(letter.raw_truncated_from, None);
    }

    #[test]
    fn text_escaped_past_the_record_limit_is_kept_whole_in_base64_when_that_fits() {
        let raw = vec![0x01u8; 2000];
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path(), 4096);
        let letter = push_one(&queue, &raw);
        assert!(letter.raw_base64);
        assert_eq!(letter.raw_truncated_from, None);
        assert_eq!(letter.raw_bytes(), raw);
    }

    #[test]
    fn text_escaped_past_the_record_limit_is_cut_to_fit() {
        // A record of control characters: JSON writes each as `\u00XX`, six bytes.
        let raw = vec![0x01u8; 3000];
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path(), 4096);
        let letter = push_one(&queue, &raw);
        assert_eq!(letter.raw_truncated_from, Some(3000));
        let kept = letter.raw_bytes();
        assert!(kept.len() > 400 && kept.len() < 700, "{}", kept.len());
        assert!(raw.starts_with(&kept));
        assert_eq!(letter.reason, "bad");
    }

    #[test]
    fn multibyte_text_is_cut_on_a_character_boundary() {
        let raw = "é\"".repeat(2000).into_bytes();
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path(), 2048);
        let letter = push_one(&queue, &raw);
        assert_eq!(letter.raw_truncated_from, Some(raw.len()));
        let kept = letter.raw_bytes();
        assert!(std::str::from_utf8(&kept).is_ok());
        assert!(
            raw.starts_with(&kept) && kept.len() > 1000,
            "{}",
            kept.len()
        );
    }

    #[test]
    fn binary_records_keep_whole_base64_groups() {
        let raw: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8 | 0x80).collect();
        let dir = tempfile::tempdir().unwrap();
        let queue = queue(dir.path(), 4096);
        let letter = push_one(&queue, &raw);
        assert!(letter.raw_base64);
        assert_eq!(letter.raw_truncated_from, Some(6000));
        let kept = letter.raw_bytes();
        assert!(
            kept.len() > 2000 && kept.len().is_multiple_of(3),
            "{}",
            kept.len()
        );
        assert!(raw.starts_with(&kept));
    }
}
