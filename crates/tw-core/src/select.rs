//! Parsing only the fields a stage reads.
//!
//! Building a full JSON tree costs an allocation per key and value; a stage that reads five
//! fields of a fifty-field event (detection) pays mostly for values it never looks at. A
//! [`FieldSelection`] parses the whole document (so its syntax is still checked) but builds
//! only the selected paths; everything else is skipped without allocating.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::FieldPath;
use crate::fields::{Keys, SelectedFields, SlotTree};
use crate::scan::{Cursor, MAX_SKIP_DEPTH, Scanned, Unsupported};
use crate::shared::CheckedPayload;

/// The set of field paths to keep when parsing an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelection {
    root: Node,
    /// The slot of each distinct selected path (by its text) in the rows of
    /// [`parse_fields`](Self::parse_fields): slots follow the order paths were first given.
    slot_of: HashMap<String, usize, foldhash::fast::RandomState>,
    slots: SlotTree,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    /// Keep this value whole (a selected path ends here).
    whole: bool,
    /// Every key of every parsed object is looked up here ([`Keys`]: a length mask, then
    /// foldhash; SipHash was ~7 % of the server's CPU samples at 200,000 events/s).
    children: Keys<Node>,
}

impl FieldSelection {
    /// A selection of `paths`. A path through an array keeps the whole array; a dotted path is
    /// also kept as a literal top-level key, as [`FieldPath::get`] falls back to one; the root
    /// path keeps the whole event.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a FieldPath>) -> Self {
        let mut root = Node::default();
        let mut distinct: Vec<FieldPath> = Vec::new();
        let mut slot_of = HashMap::default();
        for path in paths {
            if !slot_of.contains_key(path.as_str()) {
                slot_of.insert(path.as_str().to_string(), distinct.len());
                distinct.push(path.clone());
            }
            if path.is_root() {
                // A rule that searches every field needs the whole event.
                root.whole = true;
                continue;
            }
            let mut node = &mut root;
            for segment in path.as_str().split('.') {
                node = node.children.entry(segment);
            }
            node.whole = true;
            if path.as_str().contains('.') {
                root.children.entry(path.as_str()).whole = true;
            }
        }
        let slots = SlotTree::new(&distinct);
        Self {
            root,
            slot_of,
            slots,
        }
    }

    /// The slot of `path` in the rows of [`parse_fields`](Self::parse_fields), if selected.
    pub fn slot(&self, path: &FieldPath) -> Option<usize> {
        self.slot_of.get(path.as_str()).copied()
    }

    /// Parses `json` into the values at the selected paths, by slot, building no tree on the
    /// way (see `fields/`). Each slot holds what [`FieldPath::get`] returns on the whole
    /// event. Syntax errors and invalid UTF-8 anywhere in the document are still errors.
    pub fn parse_fields(&self, json: &[u8]) -> serde_json::Result<SelectedFields> {
        match std::str::from_utf8(json) {
            Ok(text) => self.slots.parse(text),
            // (serde_json does not check the strings it skips when reading bytes.)
            Err(error) => Err(serde::de::Error::custom(format_args!(
                "invalid UTF-8 at byte {}",
                error.valid_up_to()
            ))),
        }
    }

    /// [`parse_fields`](Self::parse_fields), also vouching that `payload` is one JSON value
    /// (see [`parse_checked`](Self::parse_checked)).
    pub fn parse_fields_checked(
        &self,
        payload: &Bytes,
    ) -> serde_json::Result<(SelectedFields, CheckedPayload)> {
        let fields = self.parse_fields(payload)?;
        // Every byte was read: the selected values into the row, the rest skipped with its
        // syntax checked (by the cursor's skip or serde_json's `IgnoredAny`).
        Ok((fields, CheckedPayload::parsed(payload.clone())))
    }

    /// Parses `json`, keeping only the selected paths. Syntax errors anywhere in the document
    /// are still errors.
    pub fn parse(&self, json: &[u8]) -> serde_json::Result<Value> {
        // One UTF-8 check of the whole payload costs less than serde_json's check of each
        // string it reads from bytes; a payload that fails it is read as bytes, where
        // serde_json finds and names the problem.
        match std::str::from_utf8(json) {
            Ok(text) => self.parse_text(text),
            Err(_) => self.parse_from(serde_json::Deserializer::from_slice(json)),
        }
    }

    /// [`parse`](Self::parse) of text the caller has already checked as UTF-8.
    pub fn parse_text(&self, json: &str) -> serde_json::Result<Value> {
        // Most events are read by the fast path; what it leaves, serde_json reads from the start.
        if let Ok(value) = self.scan(json) {
            return Ok(value);
        }
        self.parse_from(serde_json::Deserializer::from_str(json))
    }

    /// [`parse_text`](Self::parse_text)'s fast path, with [`crate::scan::Cursor`] instead of
    /// serde_json's visitors (as `fields/scan.rs` for rows): the pruned tree of a plain JSON
    /// object, or [`Unsupported`] where serde_json must read the document. Unselected members
    /// are stepped over with their syntax checked, so what it accepts is valid JSON.
    fn scan(&self, json: &str) -> Scanned<Value> {
        if self.root.whole {
            return Err(Unsupported);
        }
        let mut cursor = Cursor::new(json);
        cursor.skip_space();
        cursor.expect(b'{')?;
        let tree = scan_object(&mut cursor, &self.root, 0)?;
        cursor.skip_space();
        if cursor.is_done() {
            Ok(tree)
        } else {
            Err(Unsupported)
        }
    }

    fn parse_from<'de, R: serde_json::de::Read<'de>>(
        &self,
        mut deserializer: serde_json::Deserializer<R>,
    ) -> serde_json::Result<Value> {
        let value = NodeSeed(&self.root).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }

    /// [`parse`](Self::parse), also vouching that `payload` is one JSON value, so that a
    /// stage can keep the event as its text
    /// ([`SharedEvent::from_checked`](crate::SharedEvent::from_checked)) without reading it a
    /// second time.
    pub fn parse_checked(&self, payload: &Bytes) -> serde_json::Result<(Value, CheckedPayload)> {
        let value = self.parse(payload)?;
        // The parser read every byte: the selected values into the tree, the rest through the
        // cursor's skip or `IgnoredAny`, which check syntax as `RawValue` does (see
        // `CheckedPayload`).
        Ok((value, CheckedPayload::parsed(payload.clone())))
    }
}

/// The selected members of the object at `depth` whose `{` `cursor` has read, up to and
/// including its `}`, as [`NodeVisitor`] builds them.
fn scan_object(cursor: &mut Cursor<'_>, node: &Node, depth: usize) -> Scanned<Value> {
    let mut out = Map::new();
    cursor.skip_space();
    if cursor.peek() == Some(b'}') {
        cursor.advance();
        return Ok(Value::Object(out));
    }
    loop {
        let key = cursor.plain_string()?;
        cursor.skip_space();
        cursor.expect(b':')?;
        cursor.skip_space();
        match node.children.get(key) {
            Some(child) if !child.whole && cursor.peek() == Some(b'{') => {
                if depth + 1 >= MAX_SKIP_DEPTH {
                    return Err(Unsupported);
                }
                cursor.advance();
                out.insert(key.to_string(), scan_object(cursor, child, depth + 1)?);
            }
            // Selected whole, or not an object where paths go on: serde_json reads the value
            // there as a whole too.
            Some(_) => {
                out.insert(key.to_string(), cursor.value(depth + 1)?);
            }
            None => cursor.skip_value(depth + 1)?,
        }
        if !cursor.next_or_close(b'}')? {
            return Ok(Value::Object(out));
        }
    }
}

struct NodeSeed<'a>(&'a Node);

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.0.whole {
            return serde::Deserialize::deserialize(deserializer);
        }
        deserializer.deserialize_any(NodeVisitor(self.0))
    }
}

struct NodeVisitor<'a>(&'a Node);

impl<'de> Visitor<'de> for NodeVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(selected) = map.next_key_seed(KeySeed(self.0))? {
            match selected {
                Some((key, child)) => {
                    out.insert(key, map.next_value_seed(NodeSeed(child))?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// Reads a key and looks it up in the selection without allocating for unselected keys.
struct KeySeed<'a>(&'a Node);

impl<'de, 'a> DeserializeSeed<'de> for KeySeed<'a> {
    type Value = Option<(String, &'a Node)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, 'a> Visitor<'de> for KeySeed<'a> {
    type Value = Option<(String, &'a Node)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.children.get(key).map(|node| (key.to_string(), node)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EVENT: &str = r#"{"eventName":"ConsoleLogin","userIdentity":{"type":"Root","arn":"a","x":{"deep":[1,2]}},
        "resources":[{"ARN":"r1"},{"ARN":"r2"}],"errorMessage":null,"n":1.5,"big":18446744073709551615,
        "flat.key":"F","esc\u0061ped":"yes","skip":{"a":[{"b":"c\"d"}],"e":true}}"#;

    /// Seeded mutation fuzzing against the serde_json walk: whatever the fast path accepts,
    /// serde_json accepts too, with the same pruned tree.
    #[test]
    fn the_fast_path_accepts_only_what_serde_json_reads_the_same() {
        let paths: Vec<FieldPath> = [
            "eventName",
            "userIdentity.type",
            "userIdentity.sessionContext",
            "resources.1.ARN",
            "a.b",
            "n",
            "flat.key",
            "dup.inner",
            "0.x",
            "escaped",
        ]
        .iter()
        .map(|p| FieldPath::new(p))
        .collect();
        let selection = FieldSelection::new(&paths);
        let mut accepted = 0;
        crate::scan::for_each_mutation(&crate::scan::MUTATION_SEEDS, 100_000, |text| {
            if let Ok(tree) = selection.scan(text) {
                accepted += 1;
                match selection.parse_from(serde_json::Deserializer::from_str(text)) {
                    Ok(reference) => assert_eq!(tree, reference, "{text}"),
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

    #[test]
    fn keeps_exactly_the_selected_paths_and_reads_them_like_a_full_parse() {
        let paths: Vec<FieldPath> = [
            "eventName",
            "userIdentity.type",
            "resources.1.ARN",
            "errorMessage",
            "n",
            "big",
            "flat.key",
            "escaped",
            "missing.path",
        ]
        .iter()
        .map(|p| FieldPath::new(p))
        .collect();
        let selection = FieldSelection::new(&paths);
        let pruned = selection.parse(EVENT.as_bytes()).unwrap();
        let full: Value = serde_json::from_str(EVENT).unwrap();
        for path in &paths {
            assert_eq!(path.get(&pruned), path.get(&full), "{path}");
        }
        assert_eq!(pruned["userIdentity"], json!({"type": "Root"}));
        assert!(pruned.get("skip").is_none());
        assert_eq!(
            pruned["resources"], full["resources"],
            "a path through an array keeps the array"
        );
    }

    #[test]
    fn syntax_errors_in_skipped_parts_are_still_errors() {
        let selection = FieldSelection::new(&[FieldPath::new("a")]);
        assert!(selection.parse(br#"{"a":1,"skip":{"b":[1,2}}"#).is_err());
        assert!(selection.parse(br#"{"a":1} trailing"#).is_err());
        assert_eq!(selection.parse(b"[1,2]").unwrap(), json!([1, 2]));
        assert_eq!(
            FieldSelection::default().parse(br#"{"a":1}"#).unwrap(),
            json!({})
        );
    }

    #[test]
    fn the_root_path_keeps_the_whole_event() {
        let selection = FieldSelection::new(&[FieldPath::new("a"), FieldPath::new("")]);
        let full: Value = serde_json::from_str(EVENT).unwrap();
        assert_eq!(selection.parse(EVENT.as_bytes()).unwrap(), full);
    }
}
