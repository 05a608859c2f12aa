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

    /// The event's JSON text when it was shared as text (nothing is parsed or written).
    pub fn json_text(&self) -> Option<&str> {
        match &*self.0 {
            Repr::Parsed(_) => None,
            Repr::Text { json, .. } => Some(json.get()),
        }
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
