//! Parsing the selected fields of an event straight into a row of values, one per path.
//!
//! [`FieldSelection::parse`](crate::FieldSelection::parse) builds a pruned JSON tree: every
//! object on the way to a selected value becomes a `BTreeMap`, every key on the way a
//! `String`, and the reader then walks that tree again to find each path. At 200,000 events/s
//! building and dropping that tree was a quarter of the detection thread (BENCHMARKS.md,
//! session 23). [`FieldSelection::parse_fields`](crate::FieldSelection::parse_fields) writes
//! each selected value into its path's slot as it is read, and builds nothing on the way.
//!
//! A slot holds exactly what [`FieldPath::get`] returns on the whole event: the nested value
//! (array indexes included), else a top-level key spelled like the dotted path, with the last
//! of duplicate keys winning as it does in a parsed object.

use std::collections::HashMap;
use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::FieldPath;
use crate::path::walk;

mod scan;

/// The values of one event at a selection's paths, by slot
/// ([`FieldSelection::slot`](crate::FieldSelection::slot)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SelectedFields {
    values: Box<[Option<Value>]>,
    object: bool,
}

impl SelectedFields {
    /// The value at the path of `slot` (`None` when absent; a JSON `null` is `Some(Null)`).
    pub fn get(&self, slot: usize) -> Option<&Value> {
        self.values.get(slot)?.as_ref()
    }

    /// Whether the event is a JSON object (as every ingested event is).
    pub fn is_object(&self) -> bool {
        self.object
    }
}

/// The selection's paths as a tree of keys, each path with its slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SlotTree {
    root: SlotNode,
    /// Multi-segment paths by their text: a top-level key spelled so is the fallback value.
    literal: Keys<usize>,
    /// How many slots.
    len: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SlotNode {
    /// The slot of the path that ends here.
    slot: Option<usize>,
    /// Keys of the paths that go on.
    children: Keys<SlotNode>,
    /// Every path that goes on below, with its segments past this node: read from the whole
    /// value when that is kept anyway (a path ends here) or cannot be walked key by key (an
    /// array), and cleared when a duplicate key replaces the value.
    below: Vec<(usize, Vec<String>)>,
}

impl SlotTree {
    /// `paths[i]` gets slot `i` (`paths` holds no duplicates).
    pub(crate) fn new(paths: &[FieldPath]) -> Self {
        let mut tree = Self {
            len: paths.len(),
            ..Self::default()
        };
        for (slot, path) in paths.iter().enumerate() {
            let segments = path.segments();
            let mut node = &mut tree.root;
            for (depth, segment) in segments.iter().enumerate() {
                node.below.push((slot, segments[depth..].to_vec()));
                node = node.children.entry(segment);
            }
            node.slot = Some(slot);
            if segments.len() > 1 {
                *tree.literal.entry(path.as_str()) = slot;
            }
        }
        tree
    }

    /// Parses one JSON document into its row. The whole document is read, so a syntax error
    /// anywhere is an error. Most documents are read by the fast path (`scan.rs`); what it
    /// leaves, serde_json reads from the start.
    pub(crate) fn parse(&self, text: &str) -> serde_json::Result<SelectedFields> {
        let mut row = Row::new(self.len);
        if self.scan(text, &mut row).is_err() {
            row = Row::new(self.len);
            self.parse_with_serde(text, &mut row)?;
        }
        Ok(row.finish())
    }

    /// [`parse`](Self::parse) by serde_json alone: the reference the fast path answers like.
    fn parse_with_serde(&self, text: &str, row: &mut Row) -> serde_json::Result<()> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        SlotSeed {
            tree: self,
            node: &self.root,
            row,
        }
        .deserialize(&mut deserializer)?;
        deserializer.end()
    }
}

/// Keys looked up for every key of every parsed object, most of which are not among them:
/// a mask of the keys' lengths answers most misses before hashing (foldhash, not SipHash: the
/// keys are the rules' paths, never the events', so there is nothing for an event to flood).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys<V> {
    map: HashMap<String, V, foldhash::fast::RandomState>,
    /// Bit `n` set when a key is `n` bytes long (bit 63: 63 or more).
    lengths: u64,
}

impl<V> Default for Keys<V> {
    fn default() -> Self {
        Self {
            map: HashMap::default(),
            lengths: 0,
        }
    }
}

impl<V> Keys<V> {
    fn length_bit(key: &str) -> u64 {
        1 << key.len().min(63)
    }

    /// The value of `key`, if it is one of the keys.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        if self.lengths & Self::length_bit(key) == 0 {
            return None;
        }
        self.map.get(key)
    }

    /// The value of `key`, made (default) when absent.
    pub(crate) fn entry(&mut self, key: &str) -> &mut V
    where
        V: Default,
    {
        self.lengths |= Self::length_bit(key);
        self.map.entry(key.to_string()).or_default()
    }

    fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.map.iter()
    }
}

/// The row being filled.
struct Row {
    values: Vec<Option<Value>>,
    /// Values of top-level keys spelled like a dotted path (the last of duplicates wins).
    literal: Vec<(usize, Value)>,
    /// Whether the document is an object.
    object: bool,
}

impl Row {
    fn new(len: usize) -> Self {
        Self {
            values: vec![None; len],
            literal: Vec::new(),
            object: false,
        }
    }

    /// The row's values, a dotted top-level key only where the nested path found nothing.
    fn finish(mut self) -> SelectedFields {
        for (slot, value) in self.literal {
            self.values[slot].get_or_insert(value);
        }
        SelectedFields {
            values: self.values.into_boxed_slice(),
            object: self.object,
        }
    }

    /// Fills the slots of `node`'s paths from `value`, the whole value at `node`.
    fn fill(&mut self, node: &SlotNode, value: Value) {
        for (slot, segments) in &node.below {
            self.values[*slot] = walk(&value, segments).cloned();
        }
        if let Some(slot) = node.slot {
            self.values[slot] = Some(value);
        }
    }

    /// Forgets what an earlier value of a duplicate key left in `node`'s slots.
    fn clear(&mut self, node: &SlotNode) {
        for (slot, _) in &node.below {
            self.values[*slot] = None;
        }
        if let Some(slot) = node.slot {
            self.values[slot] = None;
        }
    }
}

struct SlotSeed<'t, 'r> {
    tree: &'t SlotTree,
    node: &'t SlotNode,
    row: &'r mut Row,
}

impl<'de> DeserializeSeed<'de> for SlotSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let root = std::ptr::eq(self.node, &self.tree.root);
        if self.node.slot.is_some() {
            // A path ends here: the value is kept whole, and deeper paths read from it.
            let value: Value = serde::Deserialize::deserialize(deserializer)?;
            if root {
                self.row.object = value.is_object();
                if let Value::Object(object) = &value {
                    for (text, &slot) in self.tree.literal.iter() {
                        if let Some(found) = object.get(text) {
                            self.row.literal.push((slot, found.clone()));
                        }
                    }
                }
            }
            self.row.fill(self.node, value);
            return Ok(());
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SlotSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let root = std::ptr::eq(self.node, &self.tree.root);
        if root {
            self.row.object = true;
        }
        let literal = if root { Some(&self.tree.literal) } else { None };
        while let Some(key) = map.next_key_seed(KeySeed {
            node: self.node,
            literal,
        })? {
            match key {
                Key::Child(child) => {
                    self.row.clear(child);
                    map.next_value_seed(SlotSeed {
                        tree: self.tree,
                        node: child,
                        row: self.row,
                    })?;
                }
                Key::Literal(slot) => {
                    let value: Value = map.next_value()?;
                    self.row.literal.retain(|(kept, _)| *kept != slot);
                    self.row.literal.push((slot, value));
                }
                Key::Skip => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Paths go through an array by index: read it whole and walk it.
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        self.row.fill(self.node, Value::Array(items));
        Ok(())
    }

    // A scalar where the paths expect an object or an array: none of them resolves.
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// What an object key leads to.
enum Key<'t> {
    Child(&'t SlotNode),
    /// A top-level key spelled like a dotted path: that path's fallback.
    Literal(usize),
    Skip,
}

/// Reads a key and looks it up without allocating.
struct KeySeed<'t> {
    node: &'t SlotNode,
    literal: Option<&'t Keys<usize>>,
}

impl<'de, 't> DeserializeSeed<'de> for KeySeed<'t> {
    type Value = Key<'t>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<'t>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, 't> Visitor<'de> for KeySeed<'t> {
    type Value = Key<'t>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Key<'t>, E> {
        if let Some(child) = self.node.children.get(key) {
            return Ok(Key::Child(child));
        }
        Ok(match self.literal.and_then(|literal| literal.get(key)) {
            Some(&slot) => Key::Literal(slot),
            None => Key::Skip,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::SlotTree;
    use crate::{FieldPath, FieldSelection};

    const PATHS: [&str; 14] = [
        "eventName",
        "userIdentity.type",
        "userIdentity",
        "userIdentity.sessionContext.attributes.mfa",
        "resources.1.ARN",
        "resources.0",
        "errorMessage",
        "n",
        "flat.key",
        "a.b",
        "escaped",
        "missing.path",
        "0.x",
        "dup.inner",
    ];

    /// Documents with nesting, arrays, nulls, flattened and escaped keys, duplicate keys,
    /// and roots that are not objects.
    const DOCUMENTS: [&str; 12] = [
        r#"{"eventName":"ConsoleLogin","userIdentity":{"type":"Root","arn":"a","sessionContext":{"attributes":{"mfa":"true"}}},
            "resources":[{"ARN":"r1"},{"ARN":"r2"}],"errorMessage":null,"n":1.5,"big":18446744073709551615,
            "flat.key":"F","esc\u0061ped":"yes","skip":{"a":[{"b":"c\"d"}],"e":true}}"#,
        r#"{"a":{"b":1},"a.b":2}"#,
        r#"{"a.b":2,"a":{"b":null}}"#,
        r#"{"a.b":2,"a":{"c":1}}"#,
        r#"{"a.b":2,"a.b":3,"a":5}"#,
        r#"{"dup":{"inner":1},"dup":{"other":2}}"#,
        r#"{"dup":{"inner":1},"dup":7,"userIdentity":{"type":"A"},"userIdentity":{"type":"B"}}"#,
        r#"{"resources":{"1":{"ARN":"keyed"},"0":[1]},"userIdentity":"not an object"}"#,
        r#"{"resources":[],"userIdentity":{"sessionContext":[{"attributes":1}]}}"#,
        r#"[{"x":1},{"x":2}]"#,
        r#""just a string""#,
        r#"{}"#,
    ];

    fn paths(texts: &[&str]) -> Vec<FieldPath> {
        texts.iter().map(|text| FieldPath::new(text)).collect()
    }

    fn check(selection: &FieldSelection, paths: &[FieldPath]) {
        for document in DOCUMENTS {
            let full: serde_json::Value = serde_json::from_str(document).unwrap();
            let row = selection.parse_fields(document.as_bytes()).unwrap();
            assert_eq!(row.is_object(), full.is_object(), "{document}");
            for path in paths {
                let slot = selection.slot(path).unwrap();
                assert_eq!(row.get(slot), path.get(&full), "{path} in {document}");
            }
        }
    }

    #[test]
    fn every_slot_holds_what_the_path_finds_in_the_whole_event() {
        let all = paths(&PATHS);
        check(&FieldSelection::new(&all), &all);
        // Each path alone too: a path that also ends inside another must not depend on it.
        for path in &all {
            check(&FieldSelection::new([path]), std::slice::from_ref(path));
        }
        let with_root = paths(&["", "userIdentity.type", "a.b"]);
        check(&FieldSelection::new(&with_root), &with_root);
    }

    #[test]
    fn slots_follow_first_use_and_duplicates_share_one() {
        let selection = FieldSelection::new(&paths(&["b", "a", "b", "c.d"]));
        let slots: Vec<_> = ["b", "a", "c.d", "x"]
            .iter()
            .map(|text| selection.slot(&FieldPath::new(text)))
            .collect();
        assert_eq!(slots, vec![Some(0), Some(1), Some(2), None]);
        let row = selection
            .parse_fields(br#"{"a":1,"b":[2],"c":{"d":{"e":3}}}"#)
            .unwrap();
        assert_eq!(row.get(0), Some(&json!([2])));
        assert_eq!(row.get(2), Some(&json!({"e": 3})));
        assert_eq!(row.get(9), None, "a slot past the row is absent");
    }

    #[test]
    fn syntax_errors_and_bad_utf8_anywhere_are_errors() {
        let selection = FieldSelection::new(&paths(&["a"]));
        for bad in [
            &br#"{"a":1,"skip":{"b":[1,2}}"#[..],
            br#"{"a":1} trailing"#,
            b"{\"skip\":\"\xff\",\"a\":1}",
            br#"{"a":1,"a":"#,
        ] {
            assert!(selection.parse_fields(bad).is_err(), "{bad:?}");
        }
        // Skipped deep nesting is read without recursion; selected, it meets serde_json's limit.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let skipped = format!("{{\"skip\":{deep}}}");
        assert_eq!(
            selection.parse_fields(skipped.as_bytes()).unwrap().get(0),
            None
        );
        let selected = format!("{{\"a\":{deep}}}");
        assert!(selection.parse_fields(selected.as_bytes()).is_err());
    }

    #[test]
    fn keys_are_found_whatever_their_length() {
        let mut keys: super::Keys<usize> = super::Keys::default();
        let long = "k".repeat(70);
        for (value, key) in ["", "a", "abc", &"x".repeat(62), &"y".repeat(63), &long]
            .iter()
            .enumerate()
        {
            *keys.entry(key) = value;
        }
        assert_eq!(keys.get(""), Some(&0));
        assert_eq!(keys.get("abc"), Some(&2));
        assert_eq!(keys.get(&"y".repeat(63)), Some(&4));
        assert_eq!(keys.get(&long), Some(&5));
        // Same lengths as keys, other text; and lengths no key has.
        for absent in ["b", "abd", &"z".repeat(64), "ab", &"x".repeat(61)] {
            assert_eq!(keys.get(absent), None, "{absent}");
        }
    }

    /// The fast path's row, or `None` where it gives up.
    fn scanned(tree: &SlotTree, text: &str) -> Option<super::SelectedFields> {
        let mut row = super::Row::new(tree.len);
        tree.scan(text, &mut row).ok().map(|()| row.finish())
    }

    /// serde_json's row, or its error.
    fn walked(tree: &SlotTree, text: &str) -> serde_json::Result<super::SelectedFields> {
        let mut row = super::Row::new(tree.len);
        tree.parse_with_serde(text, &mut row).map(|()| row.finish())
    }

    #[test]
    fn the_fast_path_reads_plain_events_and_leaves_the_rest() {
        let tree = SlotTree::new(&paths(&PATHS));
        let plain = r#" {"eventName": "x", "userIdentity": {"type": "Root", "n": [1, 2.5, "\u00e9"]},
            "resources": [{"ARN": "r1"}, {"ARN": "r2"}], "n": -7, "flat.key": "F", "a": {"b": 1e3},
            "skip": {"s": "esc\"aped\\\n\ud800", "f": -0.5E-3, "big": 123456789012345678901234}} "#;
        let row = scanned(&tree, plain).expect("a plain event is read by the fast path");
        assert_eq!(row, walked(&tree, plain).unwrap());
        // Escaped strings and floats selected whole are read by serde_json from their slice.
        for sliced in [
            r#"{"eventName": "x\ny"}"#,
            r#"{"n": 1.5, "errorMessage": [1.0]}"#,
        ] {
            let row = scanned(&tree, sliced).expect("read with a slice");
            assert_eq!(row, walked(&tree, sliced).unwrap(), "{sliced}");
        }
        for left in [
            "[1]",
            r#"{"event\u004eame": "x"}"#,
            // A scalar where a path expects an object, which serde_json reads as a value.
            r#"{"missing": "a\"b"}"#,
            r#"{"missing": 1.5}"#,
            r#"{"missing": 18446744073709551615}"#,
            r#"{"a": 1} x"#,
        ] {
            assert_eq!(scanned(&tree, left), None, "{left}");
        }
        let root = SlotTree::new(&paths(&["", "a"]));
        assert_eq!(
            scanned(&root, r#"{"a": 1}"#),
            None,
            "the root path is left to serde_json"
        );
    }

    /// Seeded mutation fuzzing against the serde_json walk: whatever the fast path accepts,
    /// serde_json accepts too, with the same row.
    #[test]
    fn the_fast_path_accepts_only_what_serde_json_reads_the_same() {
        let tree = SlotTree::new(&paths(&PATHS));
        let mut accepted = 0;
        crate::scan::for_each_mutation(&crate::scan::MUTATION_SEEDS, 100_000, |text| {
            if let Some(row) = scanned(&tree, text) {
                accepted += 1;
                match walked(&tree, text) {
                    Ok(reference) => assert_eq!(row, reference, "{text}"),
                    Err(error) => {
                        panic!("the fast path read what serde_json refuses ({error}): {text}")
                    }
                }
            }
        });
        // The mutations leave many events readable, so the comparison is not vacuous.
        assert!(
            accepted > 10_000,
            "only {accepted} mutated events were read"
        );
    }
}
