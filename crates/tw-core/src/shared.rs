//! [`SharedEvent`]: one event shared, not copied, by every alert and every piece of window
//! state that holds it.
//!
//! Detection takes an event whole when a rule matches it; a hundred rules may then keep it (in
//! an alert, a distinct-count group, a sequence buffer). Deep-copying a `serde_json` tree per
//! holder made allocation the largest cost of stateful detection; an `Arc` makes each holder a
//! reference count. An event taken from a stored record keeps the record's JSON text instead of
//! a parsed tree ([`SharedEvent::from_json`]): it is checked once (much cheaper than building
//! the tree, and a quarter of its memory), written out as it is, and parsed only if something
//! reads its fields. On the wire it is exactly the event's JSON either way.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// An event behind a reference count; derefs to the parsed [`Value`].
#[derive(Clone)]
pub struct SharedEvent(Arc<Repr>);

enum Repr {
    Parsed(Value),
    /// Checked JSON text, parsed on the first read of the tree.
    Text {
        json: Box<RawValue>,
        parsed: OnceLock<Value>,
    },
}

impl SharedEvent {
    /// Shares `event`.
    pub fn new(event: Value) -> Self {
        Self(Arc::new(Repr::Parsed(event)))
    }

    /// Shares the JSON document `bytes` (copied: a record's payload is a slice of a larger
    /// read buffer that must not stay pinned). Fails unless `bytes` is one well-formed JSON
    /// value in UTF-8.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
            <serde_json::Error as serde::de::Error>::custom("the event is not valid UTF-8")
        })?;
        let json = RawValue::from_string(text)?;
        Ok(Self(Arc::new(Repr::Text {
            json,
            parsed: OnceLock::new(),
        })))
    }

    /// Shares the event of a payload the parser accepted, as its text (copied, as in
    /// [`from_json`](Self::from_json)), without checking its syntax again. Fails only if the
    /// text is not UTF-8.
    pub fn from_checked(payload: &CheckedPayload) -> Result<Self, serde_json::Error> {
        // Around the value the parser allows only JSON whitespace (space, tab, CR, LF), all
        // of which `trim_ascii` removes (it also removes form feeds, which the parser refuses).
        let text = std::str::from_utf8(payload.0.trim_ascii()).map_err(|_| {
            <serde_json::Error as serde::de::Error>::custom("the event is not valid UTF-8")
        })?;
        // SAFETY: `payload` is one JSON value with maybe whitespace around it (what a
        // `CheckedPayload` vouches for); `text` is that value without the whitespace, in
        // UTF-8: what `from_string_unchecked` requires.
        #[allow(unsafe_code)]
        let json = unsafe { RawValue::from_string_unchecked(text.to_owned()) };
        Ok(Self(Arc::new(Repr::Text {
            json,
            parsed: OnceLock::new(),
        })))
    }

    /// The event's JSON text when it was shared as text (nothing is parsed or written).
    pub fn json_text(&self) -> Option<&str> {
        match &*self.0 {
            Repr::Parsed(_) => None,
            Repr::Text { json, .. } => Some(json.get()),
        }
    }
}

/// A record's payload that this crate's parser read whole and accepted
/// ([`FieldSelection::parse_checked`](crate::FieldSelection::parse_checked)): one JSON value,
/// maybe with whitespace around it. The bytes are shared with the record, not copied.
///
/// Only the parser makes one, and the bytes cannot change afterwards (`Bytes` is immutable).
/// That is what makes [`SharedEvent::from_checked`] sound: the parser checks at least what
/// serde_json's `RawValue` check does (selected values are parsed into a tree, the rest is
/// skipped through the same `ignore` path that check uses; the tree adds a depth limit and
/// number ranges; most events are read by the fast path of [`crate::scan`], which accepts only
/// what that path accepts and leaves the rest to it), except that skipped strings are not
/// checked to be UTF-8, which `from_checked` does.
/// `tests::what_the_parser_accepts_is_one_json_value` holds the two against each other on the
/// awkward cases.
#[derive(Clone)]
pub struct CheckedPayload(Bytes);

impl CheckedPayload {
    /// Vouches for `payload`: only for bytes this crate's parser just accepted.
    pub(crate) fn parsed(payload: Bytes) -> Self {
        Self(payload)
    }

    /// Whether this is the word for `payload` itself (the same bytes in memory, not a copy).
    pub fn is_for(&self, payload: &[u8]) -> bool {
        std::ptr::eq(self.0.as_ptr(), payload.as_ptr()) && self.0.len() == payload.len()
    }
}

impl std::fmt::Debug for CheckedPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckedPayload({} bytes)", self.0.len())
    }
}

impl From<Value> for SharedEvent {
    fn from(event: Value) -> Self {
        Self::new(event)
    }
}

impl Deref for SharedEvent {
    type Target = Value;
    fn deref(&self) -> &Value {
        match &*self.0 {
            Repr::Parsed(value) => value,
            // Checked when shared, so it parses, unless it nests deeper than the parser's
            // limit of 128 levels (which ingest refuses): then it reads as null.
            Repr::Text { json, parsed } => {
                parsed.get_or_init(|| serde_json::from_str(json.get()).unwrap_or(Value::Null))
            }
        }
    }
}

impl std::fmt::Debug for SharedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Repr::Parsed(value) => value.fmt(f),
            Repr::Text { json, .. } => f.write_str(json.get()),
        }
    }
}

impl PartialEq for SharedEvent {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || **self == **other
    }
}

impl PartialEq<Value> for SharedEvent {
    fn eq(&self, other: &Value) -> bool {
        **self == *other
    }
}

impl Serialize for SharedEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &*self.0 {
            Repr::Parsed(value) => value.serialize(serializer),
            Repr::Text { json, .. } => json.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for SharedEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FieldPath, FieldSelection};

    #[test]
    fn serializes_as_the_event_itself_and_clones_share_it() {
        let event = SharedEvent::new(serde_json::json!({"user": "alice", "n": [1, 2]}));
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(text, r#"{"n":[1,2],"user":"alice"}"#);
        let back: SharedEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back, event);
        let copy = event.clone();
        assert!(std::ptr::eq(&*copy, &*event), "a clone must share the tree");
        assert_eq!(copy["user"], "alice");
    }

    #[test]
    fn an_event_shared_as_text_is_written_verbatim_and_read_as_a_tree() {
        let bytes = br#"{"user":"alice","n":[1,2.50],"s":"\u00fc"}"#;
        let event = SharedEvent::from_json(bytes).unwrap();
        assert_eq!(event.json_text(), Some(std::str::from_utf8(bytes).unwrap()));
        // Written as it came, not re-serialized (2.50 and \u00fc stay as they were).
        assert_eq!(serde_json::to_string(&event).unwrap().as_bytes(), bytes);
        let alert_like = serde_json::json!({ "events": [event.clone()] });
        assert_eq!(alert_like["events"][0]["n"][1], 2.5);
        assert_eq!(event["user"], "alice");
        assert_eq!(event["s"], "ü");
        let copy = event.clone();
        assert!(std::ptr::eq(&*copy, &*event), "a clone must share the tree");
        assert_eq!(
            event,
            SharedEvent::new(serde_json::json!({"user":"alice","n":[1,2.5],"s":"ü"}))
        );
    }

    #[test]
    fn text_that_is_not_one_json_value_is_refused() {
        for bad in [
            &b"{"[..],
            b"",
            b"{\"a\":1} {\"b\":2}",
            b"{\"a\":\"\xff\"}",
            b"nope",
        ] {
            assert!(SharedEvent::from_json(bad).is_err(), "{bad:?}");
        }
    }

    /// What [`FieldSelection::parse_checked`] accepts (and is UTF-8) must be one JSON value by
    /// serde_json's own `RawValue` check: the soundness of [`SharedEvent::from_checked`].
    fn assert_accepted_is_one_value(payload: &[u8]) {
        let payload = Bytes::copy_from_slice(payload);
        let paths = [
            FieldPath::new("a"),
            FieldPath::new("b.c"),
            FieldPath::new(""),
        ];
        for selection in [
            FieldSelection::new(&paths[..1]),
            FieldSelection::new(&paths[1..2]),
            FieldSelection::new(&paths[2..]),
            FieldSelection::new([]),
        ] {
            let Ok((_, checked)) = selection.parse_checked(&payload) else {
                continue;
            };
            let Ok(text) = std::str::from_utf8(&payload) else {
                assert!(SharedEvent::from_checked(&checked).is_err(), "{payload:?}");
                continue;
            };
            let trimmed = text.trim_matches([' ', '\t', '\n', '\r']);
            assert!(
                RawValue::from_string(trimmed.to_string()).is_ok(),
                "accepted by the parser but not one JSON value: {text:?}"
            );
            // (In debug builds serde_json also re-checks inside `from_string_unchecked`.)
            let event = SharedEvent::from_checked(&checked).unwrap();
            assert_eq!(event.json_text(), Some(trimmed));
        }
    }

    #[test]
    fn what_the_parser_accepts_is_one_json_value() {
        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(300), "]".repeat(300));
        let cases: Vec<&[u8]> = vec![
            br#"{"a":"x","b":{"c":[1,2]}}"#,
            b" \t\r\n{\"a\":1}\n\n ",
            br#"{"a":"\ud800","z":"\udc00\ud800x"}"#,
            br#"{"z":"\ud83d\ude00","a":"\u00e9\"\\\/\b\f\n\r\t"}"#,
            br#"{"a":1e400,"z":-1e-400}"#,
            br#"{"z":1e400}"#,
            br#"{"a":-0,"z":0.5e+3,"b":{"c":18446744073709551616}}"#,
            br#"{"a":01}"#,
            br#"{"z":01}"#,
            br#"{"z":1.}"#,
            br#"{"z":.5}"#,
            br#"{"z":-}"#,
            br#"{"z":"\x"}"#,
            br#"{"z":"\u12"}"#,
            b"{\"z\":\"tab\there\"}",
            b"{\"z\":\"nul\x00\"}",
            b"{\"z\":\"\xff\xfe\"}",
            b"{\"z\":\"\xc0\xaf\"}",
            b"{\"\xed\xa0\x80\":1}",
            b"\xef\xbb\xbf{\"a\":1}",
            b"{\"a\":1}\x0c",
            br#"{"a":1,"a":2}"#,
            br#"{"a":NaN}"#,
            br#"{"z":[1,2,]}"#,
            br#"{"z":{"q":1,}}"#,
            br#"{"a":1} {"a":2}"#,
            br#"{"a":1"#,
            br#""just a string""#,
            b"[]",
            b"null",
            b"",
            b"   ",
            deep.as_bytes(),
        ];
        for case in cases {
            assert_accepted_is_one_value(case);
        }
        // Damaged copies of a real event: every accepted one must still be one value.
        let event = br#"{"eventTime":"2026-11-01T00:00:00Z","a":"x\u00e9","b":{"c":[1,-2.5e3,true,null]},"z":{"deep":["s\"q",{}]}}"#;
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..4000 {
            let mut damaged = event.to_vec();
            for _ in 0..1 + state % 3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state >> 8) as usize % damaged.len();
                let bytes = b"{}[]\",:\\u0e.-+ \xff\x80tfn";
                let byte = bytes[(state >> 40) as usize % bytes.len()];
                match state % 3 {
                    0 => damaged[at] = byte,
                    1 => {
                        damaged.remove(at);
                    }
                    _ => damaged.insert(at, byte),
                }
            }
            assert_accepted_is_one_value(&damaged);
        }
    }

    #[test]
    fn text_nested_beyond_the_parse_limit_is_kept_and_reads_as_null() {
        // The check of `from_json` has no depth limit, the tree parser has (128 levels): such
        // an event (ingest refuses them, so only a hand-made record holds one) is still written
        // out whole, and reads as null rather than failing.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let event = SharedEvent::from_json(deep.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&event).unwrap(), deep);
        assert_eq!(*event, Value::Null);
    }
}
