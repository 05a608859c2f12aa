//! [`SharedEvent`]: one parsed event shared, not copied, by every alert and every piece of
//! window state that holds it.
//!
//! Detection parses an event whole once when a rule matches it; a hundred rules may then keep
//! it (in an alert, a distinct-count group, a sequence buffer). Deep-copying a `serde_json`
//! tree per holder made allocation the largest cost of stateful detection; an `Arc` makes each
//! holder a reference count. On the wire it is exactly the event's JSON.

use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A parsed event behind a reference count; derefs to the [`Value`].
#[derive(Debug, Clone, PartialEq)]
pub struct SharedEvent(Arc<Value>);

impl SharedEvent {
    /// Shares `event`.
    pub fn new(event: Value) -> Self {
        Self(Arc::new(event))
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
        &self.0
    }
}

impl PartialEq<Value> for SharedEvent {
    fn eq(&self, other: &Value) -> bool {
        *self.0 == *other
    }
}

impl Serialize for SharedEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
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
}
