//! Request bodies to JSON events: gzip with a bound, NDJSON, JSON arrays, CloudTrail files.

use std::io::Read;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tw_core::FieldSelection;

use crate::IngestError;

/// Limits applied to every ingest body, whatever protocol it came through.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest body accepted as sent on the wire (compressed or not).
    pub max_body_bytes: usize,
    /// Largest body after decompression (the gzip-bomb guard).
    pub max_decompressed_bytes: usize,
    /// Largest single event.
    pub max_event_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 << 20,
            max_decompressed_bytes: 256 << 20,
            max_event_bytes: 1 << 20,
        }
    }
}

/// Content encodings the ingest path understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    /// Plain bytes.
    Identity,
    /// gzip (`Content-Encoding: gzip`).
    Gzip,
}

impl ContentEncoding {
    /// Parses a `Content-Encoding` header value.
    pub fn from_header(value: Option<&str>) -> Result<Self, IngestError> {
        match value.map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(Self::Identity),
            Some(v) if v.is_empty() || v == "identity" => Ok(Self::Identity),
            Some(v) if v == "gzip" || v == "x-gzip" => Ok(Self::Gzip),
            Some(v) => Err(IngestError::UnsupportedEncoding(v)),
        }
    }
}

/// Undoes the content encoding, refusing bodies that inflate past the limit.
pub fn decode_body(
    body: Bytes,
    encoding: ContentEncoding,
    limits: &IngestLimits,
) -> Result<Bytes, IngestError> {
    if body.len() > limits.max_body_bytes {
        return Err(IngestError::BodyTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    match encoding {
        ContentEncoding::Identity => Ok(body),
        ContentEncoding::Gzip => {
            let limit = limits.max_decompressed_bytes;
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
            let mut decoder = flate2::read::MultiGzDecoder::new(&body[..]).take(limit as u64 + 1);
            decoder
                .read_to_end(&mut out)
                .map_err(|error| IngestError::BadGzip(error.to_string()))?;
            if out.len() > limit {
                return Err(IngestError::DecompressedTooLarge { limit });
            }
            Ok(Bytes::from(out))
        }
    }
}

/// One event parsed from a body, with its original bytes.
#[derive(Debug, Clone)]
pub struct ParsedEvent {
    /// 1-based line (NDJSON) or element (array) number in the body.
    pub line: usize,
    /// The parsed event (always a JSON object); from [`split_events_selecting`], only the
    /// selected fields of an NDJSON line.
    pub value: Value,
    /// The bytes stored in the log: the original line, or the compact JSON of an array element.
    pub raw: Bytes,
}

/// A record of the body that could not be parsed.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// 1-based line or element number in the body (0 when the whole body is at fault).
    pub line: usize,
    /// Why it was refused.
    pub reason: String,
    /// The original bytes (cut to the event limit).
    pub raw: Bytes,
}

/// Splits a decoded body into events: a JSON array of objects, a CloudTrail-style
/// `{"Records": [...]}` document, a single JSON object, or NDJSON (one object per line; blank
/// lines ignored). Records that fail are returned as rejections, never dropped.
pub fn split_events(
    body: &Bytes,
    limits: &IngestLimits,
) -> Result<(Vec<ParsedEvent>, Vec<Rejection>), IngestError> {
    split_events_selecting(body, limits, None)
}

/// [`split_events`], but NDJSON lines are parsed for only the `selection`'s fields (the
/// partition key, event time and schema fields the ingest path reads); the bytes stored are
/// the original line either way. Lines are checked to be UTF-8 first, since skipped strings
/// are not otherwise decoded.
pub fn split_events_selecting(
    body: &Bytes,
    limits: &IngestLimits,
    selection: Option<&FieldSelection>,
) -> Result<(Vec<ParsedEvent>, Vec<Rejection>), IngestError> {
    let trimmed_start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    match body.get(trimmed_start) {
        None => Ok((Vec::new(), Vec::new())),
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_slice(body)
                .map_err(|error| IngestError::BadJson(error.to_string()))?;
            Ok(collect_elements(body, &items, limits, selection))
        }
        Some(b'{') => {
            // A whole-body document (pretty-printed object or CloudTrail file) fails fast at the
            // second line of NDJSON (the wrapper at its first key), so trying it first costs
            // one line.
            if let Ok(wrapper) = serde_json::from_slice::<RecordsWrapper>(body) {
                return Ok(collect_elements(body, &wrapper.records, limits, selection));
            }
            if let Ok(single) = serde_json::from_slice::<&RawValue>(body) {
                let raw = body.slice_ref(single.get().as_bytes());
                let (mut events, mut rejected) = (Vec::new(), Vec::new());
                let size = raw.len();
                take_line(1, raw, size, limits, selection, &mut events, &mut rejected);
                return Ok((events, rejected));
            }
            Ok(split_lines(body, limits, selection))
        }
        Some(_) => Ok(split_lines(body, limits, selection)),
    }
}

/// A CloudTrail-style file: one member, `Records`, an array of events.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsWrapper<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<&'a RawValue>,
}

fn parse_line(raw: &[u8], selection: Option<&FieldSelection>) -> Result<Value, String> {
    match selection {
        None => serde_json::from_slice(raw).map_err(|e| e.to_string()),
        Some(selection) => match std::str::from_utf8(raw) {
            Ok(text) => selection.parse_text(text).map_err(|e| e.to_string()),
            Err(error) => Err(format!("invalid UTF-8 at byte {}", error.valid_up_to())),
        },
    }
}

/// The elements of an array (or of `Records`) as events: each stored as the exact bytes it
/// was sent as (its slice of the body), parsed like an NDJSON line; its line number is its
/// position in the array, from 1.
fn collect_elements(
    body: &Bytes,
    items: &[&RawValue],
    limits: &IngestLimits,
    selection: Option<&FieldSelection>,
) -> (Vec<ParsedEvent>, Vec<Rejection>) {
    let mut events = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (index, item) in items.iter().enumerate() {
        // Borrowed from `body` by the parser, so a slice of it rather than a copy.
        let raw = body.slice_ref(item.get().as_bytes());
        let size = raw.len();
        take_line(
            index + 1,
            raw,
            size,
            limits,
            selection,
            &mut events,
            &mut rejected,
        );
    }
    (events, rejected)
}

fn split_lines(
    body: &Bytes,
    limits: &IngestLimits,
    selection: Option<&FieldSelection>,
) -> (Vec<ParsedEvent>, Vec<Rejection>) {
    let mut events = Vec::new();
    let mut rejected = Vec::new();
    // Lines end at each newline (found with memchr, many bytes at a time) and at the end of
    // the body, as `split` would cut them.
    let line_ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
    let mut next_start = 0;
    for (index, line_end) in line_ends.enumerate() {
        let line_start = next_start;
        next_start = line_end + 1;
        let line = &body[line_start..line_end];
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        let raw = body.slice_ref(trimmed);
        let size = raw.len();
        take_line(
            index + 1,
            raw,
            size,
            limits,
            selection,
            &mut events,
            &mut rejected,
        );
    }
    (events, rejected)
}

/// Parses one trimmed, non-empty NDJSON line into an event or a rejection. `size` is the
/// line's length, which `raw` holds unless the line was too large to keep whole (a line
/// split as its body arrived keeps at most the event limit and one byte more).
pub(crate) fn take_line(
    line: usize,
    raw: Bytes,
    size: usize,
    limits: &IngestLimits,
    selection: Option<&FieldSelection>,
    events: &mut Vec<ParsedEvent>,
    rejected: &mut Vec<Rejection>,
) {
    if size > limits.max_event_bytes {
        rejected.push(too_large_of(line, raw, size, limits));
        return;
    }
    match parse_line(&raw, selection) {
        Ok(value) => push_checked(line, value, raw, limits, events, rejected),
        Err(error) => rejected.push(Rejection {
            line,
            reason: format!("invalid JSON: {error}"),
            raw,
        }),
    }
}

fn push_checked(
    line: usize,
    value: Value,
    raw: Bytes,
    limits: &IngestLimits,
    events: &mut Vec<ParsedEvent>,
    rejected: &mut Vec<Rejection>,
) {
    if raw.len() > limits.max_event_bytes {
        rejected.push(too_large(line, raw, limits));
    } else if !value.is_object() {
        rejected.push(Rejection {
            line,
            reason: format!("an event must be a JSON object, got {}", kind(&value)),
            raw,
        });
    } else {
        events.push(ParsedEvent { line, value, raw });
    }
}

fn too_large(line: usize, raw: Bytes, limits: &IngestLimits) -> Rejection {
    let size = raw.len();
    too_large_of(line, raw, size, limits)
}

/// The rejection of an event of `size` bytes, of which `raw` holds at least the first
/// `max_event_bytes` (the part kept in the dead-letter queue).
fn too_large_of(line: usize, raw: Bytes, size: usize, limits: &IngestLimits) -> Rejection {
    Rejection {
        line,
        reason: format!(
            "event of {size} bytes exceeds the limit of {} bytes",
            limits.max_event_bytes
        ),
        raw: raw.slice(..raw.len().min(limits.max_event_bytes)),
    }
}

/// The JSON type name of a value, for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn split(text: &str) -> (Vec<ParsedEvent>, Vec<Rejection>) {
        split_events(&Bytes::from(text.to_string()), &IngestLimits::default()).unwrap()
    }

    #[test]
    fn ndjson_keeps_original_bytes_and_reports_bad_lines() {
        let (events, rejected) = split("{\"a\":1}\n\n  {\"b\": 2}  \nnot json\n[1]\n{\"c\":3}");
        assert_eq!(
            events.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![1, 3, 6]
        );
        assert_eq!(&events[1].raw[..], b"{\"b\": 2}");
        assert_eq!(
            rejected.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(
            rejected[0].reason.starts_with("invalid JSON"),
            "{}",
            rejected[0].reason
        );
        assert!(rejected[1].reason.contains("an array"));
    }

    #[test]
    fn arrays_records_wrapper_and_single_objects() {
        let (events, rejected) = split("[{\"a\":1}, 5, {\"a\":2}]");
        assert_eq!((events.len(), rejected.len(), rejected[0].line), (2, 1, 2));
        let (events, _) = split("{\"Records\": [{\"eventName\":\"X\"}, {\"eventName\":\"Y\"}]}");
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].value["eventName"], "Y");
        let (events, _) = split("{\n  \"pretty\": true\n}\n");
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn array_and_records_elements_are_stored_as_sent() {
        // Key order, spacing and number forms as sent: not re-serialised.
        let (events, rejected) = split(" [ {\"z\": 1, \"a\" : 1.50},\n{\"b\":\"\\u00e9\"} , [2] ]");
        assert_eq!(&events[0].raw[..], b"{\"z\": 1, \"a\" : 1.50}");
        assert_eq!(&events[1].raw[..], b"{\"b\":\"\\u00e9\"}");
        assert_eq!(events[1].value["b"], "\u{e9}");
        assert_eq!((rejected[0].line, &rejected[0].raw[..]), (3, &b"[2]"[..]));
        let (events, _) = split("{\"Records\": [{\"eventTime\": \"t\",  \"eventName\":\"X\"}]}");
        assert_eq!(
            &events[0].raw[..],
            b"{\"eventTime\": \"t\",  \"eventName\":\"X\"}"
        );
        let (events, _) = split("\n{\"z\": 1,\n \"a\": 2}\n");
        assert_eq!(&events[0].raw[..], b"{\"z\": 1,\n \"a\": 2}");
        // A document with more than `Records` is one event, not a wrapper.
        let (events, _) = split("{\"Records\": [{\"a\": 1}], \"other\": 1}");
        assert_eq!(events.len(), 1);
        assert!(events[0].value.get("Records").is_some());
    }

    #[test]
    fn a_single_oversized_object_is_rejected_like_a_line() {
        let limits = IngestLimits {
            max_event_bytes: 100,
            ..IngestLimits::default()
        };
        let body = Bytes::from(format!("{{\"x\":\"{}\"}}", "a".repeat(200)));
        let (events, rejected) = split_events(&body, &limits).unwrap();
        assert_eq!((events.len(), rejected.len()), (0, 1));
        assert!(rejected[0].reason.contains("exceeds the limit"));
    }

    #[test]
    fn deep_nesting_and_invalid_utf8_are_rejected_not_fatal() {
        // The array is read without recursion; its one element is too deep to parse, and is
        // rejected with its bytes rather than failing the body.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let (events, rejected) =
            split_events(&Bytes::from(deep), &IngestLimits::default()).unwrap();
        assert_eq!((events.len(), rejected.len()), (0, 1));
        assert!(
            rejected[0].reason.contains("recursion limit"),
            "{}",
            rejected[0].reason
        );
        assert_eq!(rejected[0].raw.len(), 199_998);
        let unclosed = "[".repeat(100_000);
        assert!(matches!(
            split_events(&Bytes::from(unclosed), &IngestLimits::default()),
            Err(IngestError::BadJson(_))
        ));
        let mut body = b"{\"a\":\"".to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(b"\"}\n{\"ok\":1}");
        let (events, rejected) =
            split_events(&Bytes::from(body), &IngestLimits::default()).unwrap();
        assert_eq!((events.len(), rejected.len()), (1, 1));
    }

    #[test]
    fn gzip_bomb_is_refused() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![b' '; 10 << 20]).unwrap();
        let bomb = Bytes::from(encoder.finish().unwrap());
        let limits = IngestLimits {
            max_decompressed_bytes: 1 << 20,
            ..IngestLimits::default()
        };
        assert!(matches!(
            decode_body(bomb.clone(), ContentEncoding::Gzip, &limits),
            Err(IngestError::DecompressedTooLarge { .. })
        ));
        let roomy = IngestLimits {
            max_decompressed_bytes: 11 << 20,
            ..limits
        };
        assert_eq!(
            decode_body(bomb, ContentEncoding::Gzip, &roomy)
                .unwrap()
                .len(),
            10 << 20
        );
        assert!(matches!(
            decode_body(Bytes::from_static(b"nope"), ContentEncoding::Gzip, &roomy),
            Err(IngestError::BadGzip(_))
        ));
        assert!(ContentEncoding::from_header(Some("br")).is_err());
    }
}
