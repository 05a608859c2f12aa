//! Reading every field path of a stream from an event in one walk.
//!
//! Looking each path up on its own costs a `BTreeMap` search per path, each a few string
//! comparisons through `memcmp`: with a dozen paths that was the largest cost of evaluating
//! match rules. The paths are merged into a tree of wanted keys, sorted as `serde_json` sorts
//! object keys, so each object of the event is walked once alongside its wanted keys. Results
//! equal [`FieldPath::get`] path by path (flattened `"a.b"` keys and array indexes included).

use std::cmp::Ordering;
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tw_core::FieldPath;

/// Wanted keys of one object level.
#[derive(Debug, Default)]
struct Node {
    /// Sorted by key bytes.
    children: Vec<Child>,
    /// Stream paths that end at this node.
    ends: Vec<usize>,
}

#[derive(Debug)]
struct Child {
    key: Box<str>,
    /// The key read as an array index, exactly as [`FieldPath::get`] reads it.
    index: Option<usize>,
    node: Node,
}

/// The stream's paths as a tree.
#[derive(Debug, Default)]
pub(crate) struct PathTree {
    /// How many paths.
    len: usize,
    root: Node,
    /// Multi-segment paths by their literal text, tried as one top-level key when the walk
    /// finds nothing (`{"a.b": 1}` for `a.b`).
    flattened: Vec<(Box<str>, usize)>,
}

/// Objects this much larger than their wanted keys are searched key by key instead.
const MERGE_RATIO: usize = 4;

impl PathTree {
    pub(crate) fn new(paths: &[FieldPath]) -> Self {
        let mut tree = Self {
            len: paths.len(),
            ..Self::default()
        };
        for (path, field) in paths.iter().enumerate() {
            let mut node = &mut tree.root;
            let text = field.as_str();
            if !text.is_empty() {
                let segments: Vec<&str> = text.split('.').collect();
                if segments.len() > 1 {
                    tree.flattened.push((text.into(), path));
                }
                for segment in segments {
                    let at = match node.children.binary_search_by(|c| compare(&c.key, segment)) {
                        Ok(at) => at,
                        Err(at) => {
                            node.children.insert(
                                at,
                                Child {
                                    key: segment.into(),
                                    index: segment.parse().ok(),
                                    node: Node::default(),
                                },
                            );
                            at
                        }
                    };
                    node = &mut node.children[at].node;
                }
            }
            node.ends.push(path);
        }
        tree
    }

    /// How many paths the tree reads.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Writes the value of every path in `event` to `slots[path * stride + at]` (`None` where
    /// the path does not resolve).
    pub(crate) fn resolve_into<'v>(
        &self,
        event: &'v Value,
        slots: &mut [Option<&'v Value>],
        stride: usize,
        at: usize,
    ) {
        for path in 0..self.len {
            slots[path * stride + at] = None;
        }
        walk(&self.root, event, &mut |path, value| {
            slots[path * stride + at] = Some(value);
        });
        let Value::Object(object) = event else {
            return;
        };
        for (key, path) in &self.flattened {
            let slot = &mut slots[path * stride + at];
            if slot.is_none() {
                *slot = object.get(&**key);
            }
        }
    }
}

fn walk<'v>(node: &Node, value: &'v Value, found: &mut impl FnMut(usize, &'v Value)) {
    for &path in &node.ends {
        found(path, value);
    }
    if node.children.is_empty() {
        return;
    }
    match value {
        Value::Object(object) => {
            if object.len() > MERGE_RATIO * node.children.len() || !keys_sorted() {
                for child in &node.children {
                    if let Some(value) = object.get(&*child.key) {
                        walk(&child.node, value, found);
                    }
                }
            } else {
                merge(&node.children, object, found);
            }
        }
        Value::Array(items) => {
            for child in &node.children {
                if let Some(value) = child.index.and_then(|index| items.get(index)) {
                    walk(&child.node, value, found);
                }
            }
        }
        _ => {}
    }
}

/// Walks the object's entries (in key order) alongside the wanted keys (same order).
fn merge<'v>(
    children: &[Child],
    object: &'v Map<String, Value>,
    found: &mut impl FnMut(usize, &'v Value),
) {
    let mut wanted = children.iter();
    let Some(mut child) = wanted.next() else {
        return;
    };
    for (key, value) in object {
        loop {
            match compare(&child.key, key) {
                Ordering::Less => match wanted.next() {
                    Some(next) => child = next,
                    None => return,
                },
                Ordering::Equal => {
                    walk(&child.node, value, found);
                    break;
                }
                Ordering::Greater => break,
            }
        }
    }
}

/// Byte order, as `String`'s `Ord`. Most keys differ within their first 8 bytes, which are
/// compared as one big-endian integer before falling back to `memcmp`.
fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if let (Some(x), Some(y)) = (a.first_chunk::<8>(), b.first_chunk::<8>()) {
        let (x, y) = (u64::from_be_bytes(*x), u64::from_be_bytes(*y));
        if x != y {
            return x.cmp(&y);
        }
    }
    a.cmp(b)
}

/// Whether `serde_json` objects iterate in key order (they do unless some crate of the build
/// enables its `preserve_order` feature, which keeps insertion order).
fn keys_sorted() -> bool {
    static SORTED: OnceLock<bool> = OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut object = Map::new();
        object.insert("b".into(), Value::Null);
        object.insert("a".into(), Value::Null);
        object.keys().next().map(String::as_str) == Some("a")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every path, resolved by the tree and one by one, on events shaped to reach every branch.
    #[test]
    fn resolves_every_path_as_field_path_get_does() {
        let texts = [
            "", "a", "a.b", "a.b.c", "a.c", "b", "b.0", "b.1.x", "b.+1.x", "c.d", "z", "zz.y",
            "é.ü", "0",
        ];
        let paths: Vec<FieldPath> = texts.iter().map(|t| FieldPath::new(t)).collect();
        let tree = PathTree::new(&paths);
        let events = [
            json!({"a": {"b": {"c": 1}, "c": "x"}, "b": [10, {"x": "y"}], "z": null}),
            json!({"a.b": 5, "a": {"c": 2}, "c.d": "flat", "zz": {"y": [1]}, "é": {"ü": true}}),
            json!({"a": "scalar", "b": {"0": "key", "1": {"x": 3}, "+1": {"x": 4}}, "0": 0}),
            json!({"a": {"b": null}, "a.b": "ignored: the walk found null"}),
            json!([1, 2]),
            json!("text"),
            json!({}),
        ];
        let mut resolved = vec![Some(&Value::Null); paths.len()];
        for event in &events {
            tree.resolve_into(event, &mut resolved, 1, 0);
            for (index, path) in paths.iter().enumerate() {
                assert_eq!(resolved[index], path.get(event), "{path} in {event}");
            }
        }
    }

    #[test]
    fn wide_objects_and_few_wanted_keys_resolve_alike() {
        let paths = vec![FieldPath::new("k7"), FieldPath::new("k3.x")];
        let tree = PathTree::new(&paths);
        let mut object = Map::new();
        for i in 0..20 {
            object.insert(format!("k{i}"), json!({"x": i}));
        }
        let event = Value::Object(object);
        let mut resolved = vec![None; 2];
        tree.resolve_into(&event, &mut resolved, 1, 0);
        assert_eq!(resolved[0], paths[0].get(&event));
        assert_eq!(resolved[1], Some(&json!(3)));
    }

    #[test]
    fn key_order_matches_serde_json() {
        assert!(
            keys_sorted(),
            "serde_json objects iterate in key order in this build"
        );
        let mut keys = ["b", "a", "ab", "a.b", "B", "é", "", "a0"];
        keys.sort_by(|a, b| compare(a, b));
        let mut sorted = keys;
        sorted.sort();
        assert_eq!(keys, sorted);
    }
}
