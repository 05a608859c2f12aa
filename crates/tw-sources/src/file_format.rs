//! What the file watcher takes and how one file becomes records: the candidate keys (a known
//! suffix, no hidden component), the bound on a file, gzip by suffix, and the decoding by the
//! pipeline's own decoder (NDJSON, JSON array, CloudTrail `{"Records": [...]}`) into events
//! and refused records in line order ([`Unit`]), which the watcher appends batch by batch.
//! The NATS source decodes each message with the same [`decode_file`].
//!
//! No I/O here: the bytes come from `files`, which reads the object and records the outcome.

use bytes::Bytes;
use tw_pipeline::{
    ContentEncoding, IngestLimits, ParsedEvent, Rejection, StreamState, decode_body,
    split_events_selecting,
};

/// The suffixes a watcher picks up (compared in lowercase).
const SUFFIXES: [&str; 4] = [".json", ".ndjson", ".json.gz", ".ndjson.gz"];

/// Whether the watcher takes the object at `key`: a known suffix, and no hidden component
/// (writers commonly write `.name.tmp` and rename when complete).
pub fn is_candidate(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SUFFIXES.iter().any(|s| lower.ends_with(s)) && !key.split('/').any(|part| part.starts_with('.'))
}

/// The limits for a file, from the ingest path's. A file did not come over HTTP: the bound is
/// on what it holds, the decompressed size (a plain file is its own decompressed content).
pub(crate) fn file_limits(limits: IngestLimits) -> IngestLimits {
    IngestLimits {
        max_body_bytes: limits.max_decompressed_bytes,
        ..limits
    }
}

/// The encoding of the file at `key`: gzip when it ends in `.gz`.
pub(crate) fn encoding(key: &str) -> ContentEncoding {
    if key.to_ascii_lowercase().ends_with(".gz") {
        ContentEncoding::Gzip
    } else {
        ContentEncoding::Identity
    }
}

/// Inflates and splits one body like an HTTP body: a watched file (`body_limits` from
/// [`file_limits`]) or a NATS message (the ingest limits). The inflation is bounded by
/// `body_limits` (`max_body_bytes` on the bytes given, `max_decompressed_bytes` on what they
/// inflate to); on failure, the reason and the bytes to sample in the dead letter.
pub(crate) fn decode_file(
    body: Bytes,
    encoding: ContentEncoding,
    body_limits: &IngestLimits,
    limits: &IngestLimits,
    stream: &StreamState,
) -> Result<(Vec<ParsedEvent>, Vec<Rejection>), (String, Bytes)> {
    let decoded =
        decode_body(body.clone(), encoding, body_limits).map_err(|e| (e.to_string(), body))?;
    split_events_selecting(&decoded, limits, Some(stream.selection()))
        .map_err(|e| (e.to_string(), decoded.clone()))
}

/// One record of a file: an event, or a record the decoder refused.
pub(crate) enum Unit {
    Event(ParsedEvent),
    Rejected(Rejection),
}

impl Unit {
    /// The record's line (record number) in its file.
    pub(crate) fn line(&self) -> usize {
        match self {
            Unit::Event(e) => e.line,
            Unit::Rejected(r) => r.line,
        }
    }
}

/// The records of a decoded file after line `acked_line`, in line order.
pub(crate) fn units_after(
    events: Vec<ParsedEvent>,
    rejected: Vec<Rejection>,
    acked_line: usize,
) -> Vec<Unit> {
    let mut units: Vec<Unit> = events
        .into_iter()
        .map(Unit::Event)
        .chain(rejected.into_iter().map(Unit::Rejected))
        .filter(|unit| unit.line() > acked_line)
        .collect();
    units.sort_by_key(Unit::line);
    units
}

/// The leading records of `units` whose line `keep` accepts.
pub(crate) fn take_while_line(
    units: &mut std::iter::Peekable<std::vec::IntoIter<Unit>>,
    keep: impl Fn(usize) -> bool,
) -> Vec<Unit> {
    let mut batch = Vec::new();
    while let Some(unit) = units.next_if(|unit| keep(unit.line())) {
        batch.push(unit);
    }
    batch
}

/// A batch of records as the events and refused records the ingestor takes.
pub(crate) fn split_units(units: Vec<Unit>) -> (Vec<ParsedEvent>, Vec<Rejection>) {
    let mut events = Vec::with_capacity(units.len());
    let mut rejected = Vec::new();
    for unit in units {
        match unit {
            Unit::Event(event) => events.push(event),
            Unit::Rejected(rejection) => rejected.push(rejection),
        }
    }
    (events, rejected)
}
