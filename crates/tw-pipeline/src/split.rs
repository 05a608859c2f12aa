//! Splitting a request body into events as it arrives, chunk by chunk.
//!
//! Gathering a 13 MB body into one buffer before splitting it was a tenth of the ingest
//! thread's time at 200,000 events/s: a copy of every byte into a freshly mapped buffer
//! (BENCHMARKS.md, session 23). NDJSON needs no gathering: a line inside one chunk is kept as a
//! slice of that chunk and parsed as soon as its newline arrives; only a line cut by a chunk
//! boundary is copied. A body that is one document (a JSON array, a CloudTrail
//! `{"Records": [...]}` file, a pretty-printed object) is still gathered and read whole by
//! [`split_events_selecting`], so the events and rejections are those of the gathered body,
//! however the body was cut.

use bytes::Bytes;
use serde::de::IgnoredAny;
use tw_core::FieldSelection;

use crate::IngestError;
use crate::decode::{IngestLimits, ParsedEvent, Rejection, split_events_selecting, take_line};

/// Splits a body pushed chunk by chunk ([`push`](Self::push), then
/// [`finish`](Self::finish)) exactly as [`split_events_selecting`] splits the whole body.
pub struct BodySplitter<'a> {
    limits: &'a IngestLimits,
    selection: Option<&'a FieldSelection>,
    /// Bytes received so far.
    received: usize,
    mode: Mode,
}

enum Mode {
    /// Whether the body is NDJSON is not known yet: its chunks so far, and their first bytes
    /// (up to the event limit and one byte more) in one piece to look at.
    Undecided { chunks: Vec<Bytes>, head: Vec<u8> },
    /// NDJSON: each line is taken when it ends.
    Lines(Lines),
    /// One document: gathered and read at the end.
    Whole(Vec<Bytes>),
}

/// What the body's first bytes say about its format.
enum Verdict {
    Lines,
    Whole,
    /// More bytes are needed.
    Wait,
}

impl<'a> BodySplitter<'a> {
    /// A splitter for a plain (decoded) body; NDJSON lines are parsed for `selection`'s fields
    /// only, as in [`split_events_selecting`].
    pub fn new(limits: &'a IngestLimits, selection: Option<&'a FieldSelection>) -> Self {
        Self {
            limits,
            selection,
            received: 0,
            mode: Mode::Undecided {
                chunks: Vec::new(),
                head: Vec::new(),
            },
        }
    }

    /// Takes the next chunk of the body. Fails once the body passes `max_body_bytes`.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), IngestError> {
        self.received += chunk.len();
        if self.received > self.limits.max_body_bytes {
            return Err(IngestError::BodyTooLarge {
                limit: self.limits.max_body_bytes,
            });
        }
        match &mut self.mode {
            Mode::Lines(lines) => lines.push(chunk, self.limits, self.selection),
            Mode::Whole(chunks) => chunks.push(chunk),
            Mode::Undecided { chunks, head } => {
                let room = (self.limits.max_event_bytes + 1).saturating_sub(head.len());
                head.extend_from_slice(&chunk[..chunk.len().min(room)]);
                chunks.push(chunk);
                let verdict = judge(head, self.limits);
                self.settle(verdict);
            }
        }
        Ok(())
    }

    /// Bytes received so far.
    pub fn received(&self) -> usize {
        self.received
    }

    /// The events and rejections of the whole body.
    pub fn finish(self) -> Result<(Vec<ParsedEvent>, Vec<Rejection>), IngestError> {
        match self.mode {
            Mode::Lines(lines) => Ok(lines.finish(self.limits, self.selection)),
            // Still undecided at the end: the body is one document, or too short to be more
            // than one line, and is read whole.
            Mode::Whole(chunks) | Mode::Undecided { chunks, .. } => {
                let body = match chunks.as_slice() {
                    [one] => one.clone(),
                    _ => Bytes::from(chunks.concat()),
                };
                split_events_selecting(&body, self.limits, self.selection)
            }
        }
    }

    /// Leaves the undecided state on a verdict, handing the chunks held so far over.
    fn settle(&mut self, verdict: Verdict) {
        let as_lines = match verdict {
            Verdict::Wait => return,
            Verdict::Whole => false,
            Verdict::Lines => true,
        };
        let Mode::Undecided { chunks, .. } = &mut self.mode else {
            return;
        };
        let chunks = std::mem::take(chunks);
        self.mode = if as_lines {
            let mut lines = Lines::default();
            for chunk in chunks {
                lines.push(chunk, self.limits, self.selection);
            }
            Mode::Lines(lines)
        } else {
            Mode::Whole(chunks)
        };
    }
}

/// Decides from the body's first bytes (`head`) whether it is NDJSON, as
/// [`split_events_selecting`] would find: a body opening with `[` is an array; one opening with
/// `{` is one document unless its first line is a whole JSON value with more after it (then
/// the body as a whole cannot parse, and it is read as lines); anything else is read as lines.
/// A body still undecided at its end is read whole.
fn judge(head: &[u8], limits: &IngestLimits) -> Verdict {
    let Some(start) = head.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Verdict::Wait;
    };
    match head[start] {
        b'[' => Verdict::Whole,
        b'{' => {
            let Some(newline) = memchr::memchr(b'\n', &head[start..]).map(|at| start + at) else {
                // A first line longer than any event may be is one document (CloudTrail
                // writes its files on one line), or a line refused as too large either way.
                return if head.len() > limits.max_event_bytes {
                    Verdict::Whole
                } else {
                    Verdict::Wait
                };
            };
            if serde_json::from_slice::<IgnoredAny>(&head[start..newline]).is_err() {
                // A pretty-printed document, or NDJSON whose first line is bad: the whole
                // body decides, as it always did.
                return Verdict::Whole;
            }
            if head[newline..].iter().any(|b| !b.is_ascii_whitespace()) {
                Verdict::Lines
            } else {
                Verdict::Wait
            }
        }
        _ => Verdict::Lines,
    }
}

/// NDJSON split as it arrives.
#[derive(Default)]
struct Lines {
    /// Lines ended so far: the 0-based index of the current line.
    ended: usize,
    /// The current line's bytes from earlier chunks, from its first non-whitespace byte, kept up
    /// to the event limit and one byte more (a longer line is refused, with that much kept).
    partial: Vec<u8>,
    /// How many bytes of the current line earlier chunks held, from its first non-whitespace
    /// byte (0 while it has none).
    partial_len: usize,
    /// Of those, up to and including the last non-whitespace byte: the trimmed line's length.
    partial_end: usize,
    events: Vec<ParsedEvent>,
    rejected: Vec<Rejection>,
}

impl Lines {
    fn push(&mut self, chunk: Bytes, limits: &IngestLimits, selection: Option<&FieldSelection>) {
        let mut start = 0;
        for newline in memchr::memchr_iter(b'\n', &chunk) {
            self.end_line(&chunk, start..newline, limits, selection);
            start = newline + 1;
        }
        self.carry(&chunk[start..], limits);
    }

    fn finish(
        mut self,
        limits: &IngestLimits,
        selection: Option<&FieldSelection>,
    ) -> (Vec<ParsedEvent>, Vec<Rejection>) {
        // The body's end ends its last line, as it does for a gathered body.
        self.end_line(&Bytes::new(), 0..0, limits, selection);
        (self.events, self.rejected)
    }

    /// Ends the current line at `chunk[range]`.
    fn end_line(
        &mut self,
        chunk: &Bytes,
        range: std::ops::Range<usize>,
        limits: &IngestLimits,
        selection: Option<&FieldSelection>,
    ) {
        let line = self.ended + 1;
        self.ended += 1;
        let (raw, size) = if self.partial_len == 0 {
            // The whole line is in this chunk: keep a slice of it.
            let text = &chunk[range.clone()];
            let trimmed = text.trim_ascii();
            if trimmed.is_empty() {
                return;
            }
            let from = range.start + (trimmed.as_ptr() as usize - text.as_ptr() as usize);
            (chunk.slice(from..from + trimmed.len()), trimmed.len())
        } else {
            self.carry(&chunk[range], limits);
            let size = self.partial_end;
            let mut kept = std::mem::take(&mut self.partial);
            kept.truncate(size);
            (self.partial_len, self.partial_end) = (0, 0);
            (Bytes::from(kept), size)
        };
        take_line(
            line,
            raw,
            size,
            limits,
            selection,
            &mut self.events,
            &mut self.rejected,
        );
    }

    /// Keeps `bytes`, the continuation of the current line, for when it ends.
    fn carry(&mut self, bytes: &[u8], limits: &IngestLimits) {
        let bytes = if self.partial_len == 0 {
            bytes.trim_ascii_start()
        } else {
            bytes
        };
        if bytes.is_empty() {
            return;
        }
        let room = (limits.max_event_bytes + 1).saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        if let Some(last) = bytes.iter().rposition(|b| !b.is_ascii_whitespace()) {
            self.partial_end = self.partial_len + last + 1;
        }
        self.partial_len += bytes.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_are_taken_as_they_arrive_and_kept_as_slices() {
        let limits = IngestLimits::default();
        let mut splitter = BodySplitter::new(&limits, None);
        let first = Bytes::from_static(b"{\"a\":1}\n{\"b\":2}\n{\"c\"");
        splitter.push(first.clone()).unwrap();
        let Mode::Lines(lines) = &splitter.mode else {
            panic!("a complete first line with more after it is NDJSON");
        };
        assert_eq!(lines.events.len(), 2, "two lines ended");
        let kept = lines.events[0].raw.as_ptr();
        assert!(
            first.as_ptr_range().contains(&kept),
            "a line inside one chunk is not copied"
        );
        splitter.push(Bytes::from_static(b":3}")).unwrap();
        let (events, rejected) = splitter.finish().unwrap();
        assert_eq!((events.len(), rejected.len()), (3, 0));
        assert_eq!(&events[2].raw[..], b"{\"c\":3}");
    }

    #[test]
    fn a_body_over_the_limit_fails_as_soon_as_it_passes_it() {
        let limits = IngestLimits {
            max_body_bytes: 10,
            ..IngestLimits::default()
        };
        let mut splitter = BodySplitter::new(&limits, None);
        splitter.push(Bytes::from_static(b"{\"a\":1}\n")).unwrap();
        assert!(matches!(
            splitter.push(Bytes::from_static(b"{\"b\":2}\n")),
            Err(IngestError::BodyTooLarge { limit: 10 })
        ));
    }

    #[test]
    fn a_huge_line_keeps_only_what_its_rejection_needs() {
        let limits = IngestLimits {
            max_event_bytes: 100,
            ..IngestLimits::default()
        };
        let mut splitter = BodySplitter::new(&limits, None);
        splitter
            .push(Bytes::from_static(b"{\"a\":1}\n{\"x\":\""))
            .unwrap();
        for _ in 0..1000 {
            splitter.push(Bytes::from(vec![b'z'; 1000])).unwrap();
            let Mode::Lines(lines) = &splitter.mode else {
                panic!("NDJSON");
            };
            assert!(lines.partial.len() <= 101, "bounded by the event limit");
        }
        splitter
            .push(Bytes::from_static(b"\"}\n{\"b\":2}"))
            .unwrap();
        let (events, rejected) = splitter.finish().unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].line, 2);
        assert!(
            rejected[0].reason.contains("event of 1000008 bytes"),
            "{}",
            rejected[0].reason
        );
        assert_eq!(rejected[0].raw.len(), 100);
    }
}
