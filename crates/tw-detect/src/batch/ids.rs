//! Ids of the distinct strings of one column of a chunk, so that a test runs once per
//! distinct string (a chunk of CloudTrail events holds a handful of user agents and event
//! names, each repeated hundreds of times).
//!
//! An open-addressing table sized for a whole chunk (never more than half full, so it never
//! grows), keyed by a multiplicative hash of the string's bytes and confirmed by comparing the
//! strings. A column whose strings hardly repeat gives up early: hashing would only add work.

use serde_json::Value;

use super::CHUNK;

/// The id of an event whose value is not a string (or not looked at after giving up).
pub(crate) const NO_ID: u16 = u16::MAX;
/// Table slots: twice the most distinct strings a chunk can hold.
const SLOTS: usize = 2 * CHUNK;
/// Events looked at before deciding whether the strings repeat enough.
const SAMPLE: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct ValueIds {
    /// Per event of the chunk: the id of its string, or [`NO_ID`].
    ids: Vec<u16>,
    /// Per id: the event where that string first occurs.
    first: Vec<u16>,
    /// Per id: the hash of its string.
    hashes: Vec<u64>,
    /// `id + 1` per slot; 0 is free.
    slots: Vec<u16>,
}

impl ValueIds {
    /// Assigns ids to the strings of `column` (one chunk). Returns false, leaving no ids, when
    /// more than half of the first [`SAMPLE`] strings are distinct.
    pub(crate) fn build(&mut self, column: &[Option<&Value>]) -> bool {
        debug_assert!(column.len() <= CHUNK);
        self.ids.clear();
        self.first.clear();
        self.hashes.clear();
        self.slots.clear();
        self.slots.resize(SLOTS, 0);
        let mut strings = 0;
        for (at, value) in column.iter().enumerate() {
            let Some(Value::String(text)) = value else {
                self.ids.push(NO_ID);
                continue;
            };
            strings += 1;
            if strings == SAMPLE && self.first.len() > SAMPLE / 2 {
                self.ids.clear();
                self.first.clear();
                return false;
            }
            let id = self.id_of(text, at, column);
            self.ids.push(id);
        }
        true
    }

    fn id_of(&mut self, text: &str, at: usize, column: &[Option<&Value>]) -> u16 {
        let hash = hash(text.as_bytes());
        let mut slot = (hash as usize) & (SLOTS - 1);
        loop {
            match self.slots[slot] {
                0 => {
                    // At most CHUNK ids, so they fit in u16 below NO_ID.
                    let id = self.first.len() as u16;
                    self.first.push(at as u16);
                    self.hashes.push(hash);
                    self.slots[slot] = id + 1;
                    return id;
                }
                taken => {
                    let id = taken - 1;
                    if self.hashes[id as usize] == hash
                        && matches!(column[self.first[id as usize] as usize],
                            Some(Value::String(seen)) if seen == text)
                    {
                        return id;
                    }
                    slot = (slot + 1) & (SLOTS - 1);
                }
            }
        }
    }

    /// The id of event `at`'s string, or [`NO_ID`].
    pub(crate) fn id(&self, at: usize) -> u16 {
        self.ids.get(at).copied().unwrap_or(NO_ID)
    }

    /// The event where string `id` first occurs.
    pub(crate) fn first(&self, id: u16) -> usize {
        self.first[id as usize] as usize
    }

    /// How many distinct strings.
    pub(crate) fn distinct(&self) -> usize {
        self.first.len()
    }
}

/// FxHash-style: one multiply per 8 bytes. Collisions only cost a string comparison.
fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mix = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
    let mut h = bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut buffer = [0u8; 8];
        buffer.copy_from_slice(word);
        h = mix(h, u64::from_le_bytes(buffer));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut buffer = [0u8; 8];
        buffer[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(buffer));
    }
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_strings_share_an_id_and_other_values_have_none() {
        let values = [
            json!("GetObject"),
            json!(7),
            json!("PutObject"),
            json!("GetObject"),
            json!(["GetObject"]),
            json!("PutObject"),
            json!(""),
        ];
        let mut column: Vec<Option<&Value>> = values.iter().map(Some).collect();
        column.push(None);
        let mut ids = ValueIds::default();
        assert!(ids.build(&column));
        assert_eq!(ids.distinct(), 3);
        assert_eq!(ids.id(0), ids.id(3));
        assert_eq!(ids.id(2), ids.id(5));
        assert_ne!(ids.id(0), ids.id(2));
        for at in [1, 4, 7] {
            assert_eq!(ids.id(at), NO_ID);
        }
        assert_eq!(ids.first(ids.id(5)), 2);
        assert_eq!(column[ids.first(ids.id(6))], Some(&json!("")));
    }

    #[test]
    fn every_distinct_string_of_a_full_chunk_gets_its_own_id() {
        // 512 distinct strings, each twice: repeats enough not to give up.
        let values: Vec<Value> = (0..CHUNK).map(|i| json!(format!("v{}", i / 2))).collect();
        let column: Vec<Option<&Value>> = values.iter().map(Some).collect();
        let mut ids = ValueIds::default();
        assert!(ids.build(&column));
        assert_eq!(ids.distinct(), CHUNK / 2);
        for at in 0..CHUNK {
            assert_eq!(column[ids.first(ids.id(at))], column[at]);
        }
    }

    #[test]
    fn unique_strings_give_up() {
        let values: Vec<Value> = (0..CHUNK).map(|i| json!(format!("req-{i}"))).collect();
        let column: Vec<Option<&Value>> = values.iter().map(Some).collect();
        let mut ids = ValueIds::default();
        assert!(!ids.build(&column));
        assert_eq!(ids.id(0), NO_ID);
        assert_eq!(ids.distinct(), 0);
    }
}
