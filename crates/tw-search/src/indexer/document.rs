//! The tantivy document of one event (see the crate documentation for the layout): its
//! selected fields in `_event`, the IP addresses of its strings in `_ip`, the raw text of a
//! record that is not JSON in `_all`; and [`Selection`], a stream's `search_fields`.

use std::net::IpAddr;

use serde_json::Value;
use tantivy::TantivyDocument;
use tantivy::schema::OwnedValue;
use tw_core::{PartitionId, Record};

use crate::Fields;

/// The document of one event: its selected fields (all by default) in `_event` and their IP
/// addresses in `_ip`; a record that is not a JSON object (parsed as an empty object, see
/// [`SearchIndexer`]'s `parse`) by its raw text in `_all`. Strings are not copied into
/// `_all` as well: bare words expand over the fields at query time (`any_field`), and the
/// copy cost 30 % of the indexing CPU.
pub(super) fn document(
    fields: Fields,
    partition: PartitionId,
    record: &Record,
    event: &Value,
    selected: Option<&Selection>,
) -> TantivyDocument {
    let mut doc = TantivyDocument::default();
    doc.add_i64(fields.time, record.event_time_ms);
    doc.add_u64(fields.partition, u64::from(partition));
    doc.add_u64(fields.offset, record.offset);
    let raw = String::from_utf8_lossy(&record.payload);
    if event.as_object().is_some_and(|map| map.is_empty()) && !is_json_object(&record.payload) {
        doc.add_text(fields.all, &raw);
    }
    doc.add_text(fields.raw, raw);
    let filtered;
    let event = match selected {
        Some(selection) => {
            filtered = selection.apply(event);
            &filtered
        }
        None => event,
    };
    let mut path = Vec::new();
    visit_strings(event, &mut path, &mut |path, text| {
        if let Some(ip) = parse_ip(text) {
            doc.add_bytes(fields.ip, &ip_key(&path.join("."), ip));
            doc.add_bytes(fields.ip, &ip_key("", ip));
        }
    });
    doc.add_field_value(fields.event, &OwnedValue::from(event.clone()));
    doc
}

fn is_json_object(payload: &[u8]) -> bool {
    payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && serde_json::from_slice::<Value>(payload).is_ok_and(|v| v.is_object())
}

/// Calls `visit` with the path and value of every string, depth first (arrays are
/// transparent: an element has its array's path).
fn visit_strings<'a>(
    value: &'a Value,
    path: &mut Vec<&'a str>,
    visit: &mut impl FnMut(&[&'a str], &'a str),
) {
    match value {
        Value::String(text) => visit(path, text),
        Value::Array(items) => items
            .iter()
            .for_each(|item| visit_strings(item, path, visit)),
        Value::Object(map) => {
            for (key, item) in map {
                path.push(key);
                visit_strings(item, path, visit);
                path.pop();
            }
        }
        _ => {}
    }
}

/// A whole string value that is an IP address (`10.1.2.3`, `2001:db8::1`).
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    // Cheap reject first: most strings are not addresses.
    if text.len() < 2
        || text.len() > 45
        || !text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':')
    {
        return None;
    }
    text.parse().ok()
}

/// The `_ip` term of an address under a dotted path (`""`: under any field): the path, a
/// zero byte, then the address as 16 bytes (IPv4 mapped), so the addresses of one path are
/// contiguous and ordered like the addresses themselves.
pub(crate) fn ip_key(path: &str, ip: IpAddr) -> Vec<u8> {
    let octets = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let mut key = Vec::with_capacity(path.len() + 17);
    key.extend_from_slice(path.as_bytes());
    key.push(0);
    key.extend_from_slice(&octets);
    key
}

/// The fields a stream indexes: dotted paths, each selecting itself and everything below.
#[derive(Debug)]
pub(crate) struct Selection {
    paths: Vec<String>,
}

impl Selection {
    pub(crate) fn new(paths: &[String]) -> Self {
        Selection {
            paths: paths.to_vec(),
        }
    }

    /// The part of `event` under the selected paths.
    pub(crate) fn apply(&self, event: &Value) -> Value {
        self.filter(event, "")
            .unwrap_or_else(|| Value::Object(Default::default()))
    }

    fn filter(&self, value: &Value, path: &str) -> Option<Value> {
        let selected = |p: &str| {
            p == path
                || (path.len() > p.len() && path.starts_with(p) && path.as_bytes()[p.len()] == b'.')
        };
        if !path.is_empty() && self.paths.iter().any(|p| selected(p)) {
            return Some(value.clone());
        }
        match value {
            Value::Object(map) => {
                let kept: serde_json::Map<String, Value> = map
                    .iter()
                    .filter_map(|(key, item)| {
                        let inner = if path.is_empty() {
                            key.clone()
                        } else {
                            format!("{path}.{key}")
                        };
                        let below = |p: &String| {
                            p.len() > inner.len()
                                && p.starts_with(inner.as_str())
                                && p.as_bytes()[inner.len()] == b'.'
                        };
                        if self.paths.iter().any(|p| *p == inner || below(p)) {
                            self.filter(item, &inner).map(|v| (key.clone(), v))
                        } else {
                            None
                        }
                    })
                    .collect();
                (!kept.is_empty() || path.is_empty()).then_some(Value::Object(kept))
            }
            Value::Array(items) => {
                let kept: Vec<Value> = items
                    .iter()
                    .filter_map(|item| self.filter(item, path))
                    .collect();
                (!kept.is_empty()).then_some(Value::Array(kept))
            }
            _ => None,
        }
    }
}
