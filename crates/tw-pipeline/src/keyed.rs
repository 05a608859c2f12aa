//! Idempotent ingest: a request carrying a key (the native API's `Idempotency-Key` header,
//! draft-ietf-httpapi-idempotency-key-header) stores its events once however often it is
//! sent within the horizon of the [`DedupStore`] (24 h), and every repeat gets the answer.
//!
//! - The key is claimed (scope: the stream) before the body is read. Held by a request in
//!   flight: [`IngestError::IdempotencyKeyInFlight`] at once (the native route answers 409
//!   with `Retry-After`); the client waits, so a stuck first request never ties up a second.
//! - Seen: the body is read and compared with the first one (CRC32C and length of the
//!   decoded body): the same, the remembered answer and nothing stored; another,
//!   [`IngestError::IdempotencyKeyReused`] (the route answers 422), since answering for it
//!   would report events that were never stored.
//! - New: the events are stored as without a key, then the key is remembered with the answer
//!   (a note in the dedup stream, written after the data: a crash in between makes the retry
//!   store them again, never lose them).
//! - A part failed (a partition's append, or the dead-letter queue): a marker note records
//!   which lines are done (stored or dead-lettered) and what they were answered, the error is
//!   returned (503) and the key released. The retry skips the done lines, stores the others
//!   and answers for the whole body, as if the first attempt had worked.
//! - Storing and remembering run in a task of their own: a client that gives up mid-request
//!   (its timeout) does not cancel the request between the append and the remembering, which
//!   would leave stored events unremembered and stored again by the retry.
//!
//! Bounds: a remembered answer lists at most [`MAX_LISTED_REJECTIONS`] refused lines, with
//! their reasons up to [`MAX_REASON_BYTES`] in all (later ones get a fixed reason; every refused
//! record is in the dead-letter queue with its reason). A marker covers lines up to
//! [`MAX_MARKED_LINES`]: a body with more lines that fails part-way is stored again in full
//! by its retry (at-least-once, logged).

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tw_core::StreamName;

use crate::dedup::{Claim, Claims, DedupKey, DedupStore, dedup_key};
use crate::ingest::{IngestOutcome, Ingestor, LineReport, RejectedRecord};
use crate::{ContentEncoding, IngestError, decode_body};

/// Longest idempotency key, in characters (UUIDs and ULIDs are far shorter).
pub const MAX_KEY_CHARS: usize = 255;

/// Most refused lines listed in a remembered answer.
pub const MAX_LISTED_REJECTIONS: usize = 100_000;

/// Most bytes of refusal reasons kept in a remembered answer.
pub const MAX_REASON_BYTES: usize = 1 << 20;

/// Highest line a marker of done lines covers (a bitmap of 1 MiB).
pub const MAX_MARKED_LINES: usize = 8 << 20;

/// The reason given for a refused line whose reason was not kept with the answer.
const REASON_NOT_KEPT: &str = "refused (the reason is in the dead-letter queue)";

/// Version of the notes this module writes.
const NOTE_VERSION: u32 = 1;

/// A validated idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a header value: 1 to [`MAX_KEY_CHARS`] characters from `A-Z a-z 0-9 - _ . :
    /// ~ + / =` (UUIDs, ULIDs, base64), optionally in double quotes (the draft's structured
    /// string form). The set keeps keys safe to log and to echo in messages.
    pub fn parse(value: &[u8]) -> Result<Self, IngestError> {
        let bad = |reason: String| Err(IngestError::BadIdempotencyKey(reason));
        let inner = match value {
            [b'"', inner @ .., b'"'] => inner,
            other => other,
        };
        if inner.is_empty() {
            return bad("the key is empty".into());
        }
        if inner.len() > MAX_KEY_CHARS {
            return bad(format!(
                "the key has {} characters, at most {MAX_KEY_CHARS} are allowed",
                inner.len()
            ));
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_.:~+/=".contains(&b);
        if let Some(at) = inner.iter().position(|b| !allowed(*b)) {
            let byte = inner[at];
            let shown = if byte.is_ascii_graphic() || byte == b' ' {
                format!("{:?}", byte as char)
            } else {
                format!("byte 0x{byte:02x}")
            };
            return bad(format!(
                "{shown} at position {} is not allowed (use letters, digits and - _ . : ~ + / =)",
                at + 1
            ));
        }
        Ok(Self(String::from_utf8_lossy(inner).into_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The body of a keyed request.
pub enum KeyedBody<S> {
    /// A plain body, split as it arrives.
    Chunks(S),
    /// A whole body in an encoding (gzip), decoded first.
    Whole(Bytes, ContentEncoding),
}

/// The answer to a keyed request.
#[derive(Debug)]
pub struct KeyedOutcome {
    /// What the request stored and refused (for a repeat: the first request's answer).
    pub outcome: IngestOutcome,
    /// Whether the answer is one remembered from an earlier request (nothing stored now).
    pub replayed: bool,
}

/// The dedup keys of one idempotency key on one stream: the request, and the marker left
/// when it failed part-way.
struct KeyIds {
    request: DedupKey,
    marker: DedupKey,
}

impl KeyIds {
    fn new(stream: &StreamName, key: &IdempotencyKey) -> Self {
        Self {
            request: dedup_key(&format!("ingest/{stream}"), key.as_str()),
            marker: dedup_key(&format!("ingest-partial/{stream}"), key.as_str()),
        }
    }
}

/// CRC32C and length of a decoded body: enough to tell a client's retry (the same bytes) from
/// a key reused by mistake. Not a defence against forgery: the key is the client's own.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    crc32c: u32,
    len: u64,
}

impl Fingerprint {
    fn update(&mut self, bytes: &[u8]) {
        self.crc32c = crc32c::crc32c_append(self.crc32c, bytes);
        self.len += bytes.len() as u64;
    }
}

/// What is remembered of a keyed request: its answer (under the request key) or, under the
/// marker, the answer of its done lines and which lines those are.
#[derive(Debug, Serialize, Deserialize)]
struct Note {
    v: u32,
    body_crc32c: u32,
    body_len: u64,
    accepted: usize,
    rejected_lines: Vec<usize>,
    /// Reasons of the first refused lines (as many as fit in [`MAX_REASON_BYTES`]).
    reasons: Vec<String>,
    /// Marker only: base64 bitmap of the done lines (bit `n` for line `n`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    done: String,
}

impl Note {
    fn new(fingerprint: Fingerprint, outcome: &IngestOutcome) -> Self {
        let listed = &outcome.rejected[..outcome.rejected.len().min(MAX_LISTED_REJECTIONS)];
        let mut budget = MAX_REASON_BYTES;
        let reasons = listed
            .iter()
            .map_while(|r| {
                budget = budget.checked_sub(r.reason.len())?;
                Some(r.reason.clone())
            })
            .collect();
        Self {
            v: NOTE_VERSION,
            body_crc32c: fingerprint.crc32c,
            body_len: fingerprint.len,
            accepted: outcome.accepted,
            rejected_lines: listed.iter().map(|r| r.line).collect(),
            reasons,
            done: String::new(),
        }
    }

    fn decode(bytes: &[u8], key: &IdempotencyKey) -> Result<Self, IngestError> {
        let unreadable = |reason: String| IngestError::IdempotencyAnswerUnreadable {
            key: key.as_str().to_string(),
            reason,
        };
        let note: Note = serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()))?;
        if note.v != NOTE_VERSION {
            return Err(unreadable(format!("unknown note version {}", note.v)));
        }
        Ok(note)
    }

    fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    fn is_of(&self, fingerprint: Fingerprint) -> bool {
        (self.body_crc32c, self.body_len) == (fingerprint.crc32c, fingerprint.len)
    }

    fn outcome(&self) -> IngestOutcome {
        let reasons = self.reasons.iter().map(String::as_str);
        IngestOutcome {
            accepted: self.accepted,
            rejected: self
                .rejected_lines
                .iter()
                .zip(reasons.chain(std::iter::repeat(REASON_NOT_KEPT)))
                .map(|(line, reason)| RejectedRecord {
                    line: *line,
                    reason: reason.to_string(),
                })
                .collect(),
        }
    }

    fn done_lines(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.done)
            .unwrap_or_default()
    }
}

fn is_marked(bitmap: &[u8], line: usize) -> bool {
    bitmap
        .get(line / 8)
        .is_some_and(|byte| byte & (1 << (line % 8)) != 0)
}

impl Ingestor {
    /// Ingests a body under an idempotency key (see the module doc). `Err` for what the
    /// request could not do, including the idempotency errors; a part stored before an error
    /// is remembered, so the retry with the same key stores only the rest.
    pub async fn ingest_keyed<S, E>(
        self: &Arc<Self>,
        dedup: &Arc<DedupStore>,
        stream: &str,
        key: &IdempotencyKey,
        body: KeyedBody<S>,
    ) -> Result<KeyedOutcome, IngestError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let stream = StreamName::new(stream).map_err(|e| IngestError::BadStream(e.to_string()))?;
        let ids = KeyIds::new(&stream, key);
        let mut claims = dedup.claims();
        match claims.claim(ids.request) {
            Claim::InFlight => {
                return Err(IngestError::IdempotencyKeyInFlight {
                    key: key.as_str().to_string(),
                });
            }
            Claim::Seen => return self.replay(dedup, ids.request, key, body).await,
            // `Held` cannot happen on fresh claims.
            Claim::New | Claim::Held => {}
        }
        let marker = match read_note(dedup, ids.marker, key).await? {
            Some(bytes) => Some(Note::decode(&bytes, key)?),
            None => None,
        };
        let mut fingerprint = Fingerprint::default();
        let (mut events, mut rejected) = match body {
            KeyedBody::Chunks(chunks) => {
                self.split_chunks(&stream, chunks, &mut |chunk| fingerprint.update(chunk))
                    .await?
            }
            KeyedBody::Whole(bytes, encoding) => {
                self.split_body(&stream, bytes, encoding, &mut |body| {
                    fingerprint.update(body)
                })?
            }
        };
        if let Some(marker) = &marker {
            if !marker.is_of(fingerprint) {
                return Err(IngestError::IdempotencyKeyReused {
                    key: key.as_str().to_string(),
                });
            }
            let done = marker.done_lines();
            events.retain(|event| !is_marked(&done, event.line));
            rejected.retain(|rejection| !is_marked(&done, rejection.line));
        }
        // From here on, a dropped request must not stop the work: see the module doc.
        let ingestor = self.clone();
        let key = key.clone();
        let stored = tokio::spawn(async move {
            let report = ingestor
                .ingest_events_by_line(&stream, events, rejected)
                .await?;
            remember(claims, ids, &key, fingerprint, marker, report).await
        });
        match stored.await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(IngestError::Log(tw_log::LogError::Closed)),
        }
    }

    /// Answers a repeat of a request stored before: nothing stored, the first answer given.
    async fn replay<S, E>(
        &self,
        dedup: &Arc<DedupStore>,
        request: DedupKey,
        key: &IdempotencyKey,
        body: KeyedBody<S>,
    ) -> Result<KeyedOutcome, IngestError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let Some(bytes) = read_note(dedup, request, key).await? else {
            // Only when the key expired between the claim and this read.
            return Err(IngestError::IdempotencyAnswerUnreadable {
                key: key.as_str().to_string(),
                reason: "no answer is remembered with it".into(),
            });
        };
        let note = Note::decode(&bytes, key)?;
        let mut fingerprint = Fingerprint::default();
        match body {
            KeyedBody::Chunks(mut chunks) => {
                use futures::StreamExt;
                let limit = self.limits().max_body_bytes;
                while let Some(chunk) = chunks.next().await {
                    let chunk = chunk.map_err(|e| IngestError::BodyRead(e.to_string()))?;
                    fingerprint.update(&chunk);
                    if fingerprint.len > limit as u64 {
                        return Err(IngestError::BodyTooLarge { limit });
                    }
                }
            }
            KeyedBody::Whole(bytes, encoding) => {
                fingerprint.update(&decode_body(bytes, encoding, self.limits())?);
            }
        }
        if !note.is_of(fingerprint) {
            return Err(IngestError::IdempotencyKeyReused {
                key: key.as_str().to_string(),
            });
        }
        metrics::counter!("tidewatch_ingest_replayed_requests_total").increment(1);
        Ok(KeyedOutcome {
            outcome: note.outcome(),
            replayed: true,
        })
    }
}

async fn read_note(
    dedup: &Arc<DedupStore>,
    key: DedupKey,
    idempotency_key: &IdempotencyKey,
) -> Result<Option<Bytes>, IngestError> {
    dedup
        .note(key)
        .await
        .map_err(|error| IngestError::IdempotencyAnswerUnreadable {
            key: idempotency_key.as_str().to_string(),
            reason: error.to_string(),
        })
}

/// Remembers what a keyed request did: its answer when it is done, else (when some lines are
/// newly done) a marker of the done lines; then answers.
async fn remember(
    mut claims: Claims,
    ids: KeyIds,
    key: &IdempotencyKey,
    fingerprint: Fingerprint,
    marker: Option<Note>,
    report: LineReport,
) -> Result<KeyedOutcome, IngestError> {
    let LineReport {
        mut outcome,
        done,
        failure,
    } = report;
    let newly_done = !done.is_empty();
    let mut bitmap = marker.as_ref().map(Note::done_lines).unwrap_or_default();
    if let Some(marker) = marker {
        // The answer covers the whole body: the lines done by the earlier attempts too.
        let earlier = marker.outcome();
        outcome.accepted += earlier.accepted;
        outcome.rejected.extend(earlier.rejected);
        outcome.rejected.sort_by_key(|r| r.line);
    }
    let Some(failure) = failure else {
        let note = Note::new(fingerprint, &outcome).encode();
        if let Err(error) = claims.confirm_noted(ids.request, note.clone()).await {
            // The events are stored: answering a failure would make the client store them
            // again. Remembered until a restart instead of durably.
            tracing::warn!(%error, key = key.as_str(), "remembering an idempotency key failed; kept in memory only");
            claims.keep_noted_in_memory(ids.request, note);
        }
        return Ok(KeyedOutcome {
            outcome,
            replayed: false,
        });
    };
    if !newly_done {
        return Err(failure);
    }
    let highest = done.iter().copied().max().unwrap_or(0);
    if highest > MAX_MARKED_LINES {
        tracing::warn!(
            key = key.as_str(),
            lines = highest,
            "a keyed request failed part-way with too many lines to remember which are done; its retry stores them again"
        );
        return Err(failure);
    }
    if bitmap.len() <= highest / 8 {
        bitmap.resize(highest / 8 + 1, 0);
    }
    for line in done {
        bitmap[line / 8] |= 1 << (line % 8);
    }
    let mut note = Note::new(fingerprint, &outcome);
    note.done = base64::engine::general_purpose::STANDARD.encode(&bitmap);
    let note = note.encode();
    if let Err(error) = claims.confirm_noted(ids.marker, note.clone()).await {
        tracing::warn!(%error, key = key.as_str(), "remembering the done lines of a failed keyed request failed; kept in memory only");
        claims.keep_noted_in_memory(ids.marker, note);
    }
    // `claims` is dropped here: the request key is released for the retry.
    Err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_in_length_and_characters() {
        let ok = |v: &str| IdempotencyKey::parse(v.as_bytes()).map(|k| k.as_str().to_string());
        assert_eq!(
            ok("8e03978e-40d5-43e8-bc93-6894a57f9324").unwrap(),
            "8e03978e-40d5-43e8-bc93-6894a57f9324"
        );
        assert_eq!(
            ok("\"quoted:1\"").unwrap(),
            "quoted:1",
            "structured string form"
        );
        assert_eq!(ok("a+b/c=").unwrap(), "a+b/c=");
        let message = |v: &[u8]| IdempotencyKey::parse(v).unwrap_err().to_string();
        assert!(message(b"").contains("empty"));
        assert!(message(b"\"\"").contains("empty"));
        assert!(message("k".repeat(256).as_bytes()).contains("256 characters, at most 255"));
        assert!(IdempotencyKey::parse("k".repeat(255).as_bytes()).is_ok());
        assert!(
            message(b"a b").contains("' ' at position 2"),
            "{}",
            message(b"a b")
        );
        assert!(message(b"ab\"c").contains("'\"' at position 3"));
        assert!(message("é".as_bytes()).contains("byte 0xc3 at position 1"));
        assert!(message(b"a\x01").contains("byte 0x01"));
    }

    #[test]
    fn notes_keep_reasons_within_the_budget_and_list_the_lines() {
        let rejected = (1..=3)
            .map(|line| RejectedRecord {
                line,
                reason: "r".repeat(MAX_REASON_BYTES / 2),
            })
            .collect();
        let outcome = IngestOutcome {
            accepted: 7,
            rejected,
        };
        let note = Note::new(Fingerprint::default(), &outcome);
        assert_eq!(note.reasons.len(), 2);
        let back = note.outcome();
        assert_eq!(back.accepted, 7);
        assert_eq!(
            back.rejected.iter().map(|r| r.line).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(back.rejected[2].reason, REASON_NOT_KEPT);
    }

    #[test]
    fn a_marker_bitmap_marks_lines() {
        let bitmap = [0b0000_0110u8, 0b1000_0000];
        let marked: Vec<usize> = (0..20).filter(|l| is_marked(&bitmap, *l)).collect();
        assert_eq!(marked, [1, 2, 15]);
    }
}
