//! The flattener's fast path: a walker for the JSON objects most events are, written for
//! this one job, in front of the general one of [`crate::flatten`].
//!
//! serde_json's visitor machinery cost ~460 instructions per leaf of a CloudTrail event
//! (dispatch, map access, key seeds) where the job is to find where each key and value starts
//! and ends. This scanner reads the bytes directly (with tw-core's [`Cursor`], which ingest's
//! and the rules' parses share): keys and strings without escapes are borrowed slices,
//! integers are summed in place, and an array (stored as text, which must be exactly
//! serde_json's compact text) is copied when it is written that way already, else handed to
//! serde_json as a slice.
//!
//! It reads a subset of JSON and gives up on everything else ([`Unsupported`]): escapes in keys
//! or strings, floats and `-0` (serde_json's float parsing is the reference, including its
//! rounding), integers outside `i64`, nesting past the walk's depth, a top level that is not a
//! non-empty object, and every error. Giving up may come after some leaves were visited; the
//! caller then discards them and walks the event again with [`crate::flatten`], which decides
//! what it holds and, for invalid JSON, names the problem. So for every input this path either gives
//! exactly the leaves the general walk gives, or none (the mutation test below checks that).

use std::borrow::Cow;

use serde::de::DeserializeSeed;
use tw_core::scan::{Cursor, Scanned, Unsupported, string_stop};

use crate::compact_json::CompactJson;
use crate::flatten::{Leaf, MAX_DEPTH, column_name, is_reserved};

/// Visits the leaves of `payload` as [`crate::flatten::for_each_leaf`] does, or gives up.
pub(crate) fn scan_leaves<'a>(
    payload: &'a str,
    path: &mut String,
    visit: &mut dyn FnMut(&str, Leaf<'a>),
) -> Scanned<()> {
    path.clear();
    let mut scanner = Scanner {
        cursor: Cursor::new(payload),
        path,
        visit,
    };
    scanner.cursor.skip_space();
    scanner.cursor.expect(b'{')?;
    scanner.cursor.skip_space();
    if scanner.cursor.peek() == Some(b'}') {
        // The whole event is `{}`: a `_value` leaf, left to the general walk.
        return Err(Unsupported);
    }
    scanner.object_members(0)?;
    scanner.cursor.skip_space();
    if scanner.cursor.is_done() {
        Ok(())
    } else {
        Err(Unsupported)
    }
}

struct Scanner<'t, 'p, 'v> {
    cursor: Cursor<'t>,
    path: &'p mut String,
    visit: &'v mut dyn FnMut(&str, Leaf<'t>),
}

impl<'t> Scanner<'t, '_, '_> {
    /// The members of an object whose `{` and the white space after it were read, up to and
    /// including its `}`; the object has at least one member. `depth` is the object's depth
    /// (0 for the event itself), and its column name so far is in `path`.
    fn object_members(&mut self, depth: usize) -> Scanned<()> {
        let base = self.path.len();
        loop {
            let key = self.cursor.plain_string()?;
            self.path.truncate(base);
            if depth > 0 {
                self.path.push('.');
            }
            self.path.push_str(key);
            if depth == 0 && is_reserved(key) {
                self.path.push('_');
            }
            self.cursor.skip_space();
            self.cursor.expect(b':')?;
            self.cursor.skip_space();
            self.value(depth + 1)?;
            if !self.cursor.next_or_close(b'}')? {
                self.path.truncate(base);
                return Ok(());
            }
        }
    }

    /// One value at `depth` (the depth of the object it would be), named by `path`.
    fn value(&mut self, depth: usize) -> Scanned<()> {
        let leaf = match self.cursor.peek().ok_or(Unsupported)? {
            b'"' => Leaf::Str(Cow::Borrowed(self.cursor.plain_string()?)),
            b'{' => {
                self.cursor.advance();
                self.cursor.skip_space();
                if self.cursor.peek() == Some(b'}') {
                    self.cursor.advance();
                    Leaf::Json("{}".to_string())
                } else if depth >= MAX_DEPTH {
                    return Err(Unsupported);
                } else {
                    return self.object_members(depth);
                }
            }
            b'[' => Leaf::Json(self.array(depth)?),
            b't' => self.cursor.word("true").map(|()| Leaf::Bool(true))?,
            b'f' => self.cursor.word("false").map(|()| Leaf::Bool(false))?,
            b'n' => self.cursor.word("null").map(|()| Leaf::Null)?,
            b'-' | b'0'..=b'9' => Leaf::Int(self.cursor.integer()?),
            _ => return Err(Unsupported),
        };
        (self.visit)(column_name(self.path), leaf);
        Ok(())
    }

    /// An array, starting at its `[`, as the compact text serde_json writes for it. Most
    /// arrays are written that way already ([`canonical_end`]) and are copied as they are; of
    /// the others the cursor's checked skip finds the end and serde_json reads the slice.
    fn array(&mut self, depth: usize) -> Scanned<String> {
        let start = self.cursor.at();
        let text = self.cursor.text();
        if let Some(end) = canonical_end(text.as_bytes(), start, 0) {
            self.cursor.set_at(end);
            return text.get(start..end).map(str::to_string).ok_or(Unsupported);
        }
        self.cursor.skip_value(depth)?;
        let slice = text.get(start..self.cursor.at()).ok_or(Unsupported)?;
        let mut compact = String::with_capacity(slice.len());
        let mut deserializer = serde_json::Deserializer::from_str(slice);
        CompactJson(&mut compact)
            .deserialize(&mut deserializer)
            .and_then(|()| deserializer.end())
            .map_err(|_| Unsupported)?;
        Ok(compact)
    }
}

/// Nesting that [`canonical_end`] follows; deeper arrays go through serde_json.
const CANONICAL_DEPTH: usize = 16;

/// Where the JSON value starting at `bytes[at]` ends, if it is written exactly as serde_json
/// writes it compactly (see [`crate::compact_json`]), so that it can be stored as it is: no
/// white space, strings without escapes, integers of at most 18 digits and not `-0`, `true`,
/// `false`, `null`, and objects whose keys are strictly increasing in byte order (sorted, no
/// repeats). Floats are not: serde_json may write them differently from how they came.
fn canonical_end(bytes: &[u8], at: usize, depth: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => {
            let end = at + 1 + string_stop(&bytes[at + 1..])?;
            (bytes[end] == b'"').then_some(end + 1)
        }
        b'-' | b'0'..=b'9' => {
            let digits_start = at + usize::from(bytes[at] == b'-');
            let digits = bytes[digits_start..]
                .iter()
                .take_while(|byte| byte.is_ascii_digit())
                .count();
            let end = digits_start + digits;
            let negative = digits_start > at;
            // A leading zero only as the whole of a non-negative number (`0`, not `01`, `-0`).
            let zero_ok = bytes.get(digits_start) != Some(&b'0') || (digits == 1 && !negative);
            let canonical = (1..=18).contains(&digits)
                && zero_ok
                && !matches!(bytes.get(end), Some(b'.' | b'e' | b'E'));
            canonical.then_some(end)
        }
        b't' => bytes[at..].starts_with(b"true").then_some(at + 4),
        b'f' => bytes[at..].starts_with(b"false").then_some(at + 5),
        b'n' => bytes[at..].starts_with(b"null").then_some(at + 4),
        b'[' if depth < CANONICAL_DEPTH => {
            let mut at = at + 1;
            if bytes.get(at) == Some(&b']') {
                return Some(at + 1);
            }
            loop {
                at = canonical_end(bytes, at, depth + 1)?;
                match bytes.get(at)? {
                    b',' => at += 1,
                    b']' => return Some(at + 1),
                    _ => return None,
                }
            }
        }
        b'{' if depth < CANONICAL_DEPTH => {
            let mut at = at + 1;
            if bytes.get(at) == Some(&b'}') {
                return Some(at + 1);
            }
            let mut previous_key: Option<&[u8]> = None;
            loop {
                let key_end = canonical_end(bytes, at, depth + 1)?;
                if bytes[at] != b'"' {
                    return None;
                }
                let key = &bytes[at + 1..key_end - 1];
                if previous_key.is_some_and(|previous| previous >= key) {
                    return None;
                }
                previous_key = Some(key);
                if bytes.get(key_end) != Some(&b':') {
                    return None;
                }
                at = canonical_end(bytes, key_end + 1, depth + 1)?;
                match bytes.get(at)? {
                    b',' => at += 1,
                    b'}' => return Some(at + 1),
                    _ => return None,
                }
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flatten::flatten;

    fn scanned(payload: &str) -> Scanned<Vec<(String, Leaf<'_>)>> {
        let mut leaves = Vec::new();
        scan_leaves(payload, &mut String::new(), &mut |name, leaf| {
            leaves.push((name.to_string(), leaf))
        })?;
        Ok(leaves)
    }

    #[test]
    fn gives_the_general_walks_leaves_for_plain_events() {
        let event = r#" {"eventName": "AttachUserPolicy", "n": -42, "big": 9223372036854775807,
            "min": -9223372036854775808, "zero": 0, "ok": true, "no": false, "gone": null,
            "requestParameters": {"policyArn": "arn:x", "tags": [1, {"k": "v", "a": 2.50}],
              "empty": {}, "deep": {"er": "é"}},
            "year": 2024, "Hour": {"x": 1}, "arr": [ ], "s": "",
            "copied": [{"ARN":"x","type":"y"},[],{},[0,1,-2,10,true,false,null,"é"]],
            "rewritten": [{"type":"y","ARN":"x"}, {"k":1,"k":2}, -0, 1.50, 1e2, 12345678901234567890,
              "a\u00e9\n", {"a":[ 1 ]}]} "#;
        assert_eq!(scanned(event).unwrap(), flatten(event));
    }

    #[test]
    fn leaves_to_the_general_walk_what_it_does_not_read() {
        for payload in [
            r#"{"a": "x\ny"}"#,
            r#"{"a\u0041": 1}"#,
            r#"{"f": 1.5}"#,
            r#"{"f": 1e3}"#,
            r#"{"u": 18446744073709551615}"#,
            r#"{"u": 9223372036854775808}"#,
            r#"{"z": 01}"#,
            r#"{"z": -0}"#,
            r#"{"z": -}"#,
            "{}",
            "[1]",
            "7",
            r#"{"a": 1} x"#,
            r#"{"a": 1,}"#,
            r#"{"a": tru}"#,
            r#"{"a": [1, 2}"#,
            r#"{"a": [1 2]}"#,
            "{\"a\": \"tab\there\"}",
            r#"{"a": 1"#,
        ] {
            assert_eq!(scanned(payload), Err(Unsupported), "{payload}");
        }
    }

    #[test]
    fn objects_past_the_walk_depth_are_left_to_the_general_walk() {
        let mut event = String::new();
        for _ in 0..MAX_DEPTH {
            event.push_str(r#"{"a":"#);
        }
        event.push('1');
        event.push_str(&"}".repeat(MAX_DEPTH));
        assert_eq!(scanned(&event).unwrap(), flatten(&event));
        let deeper = format!(r#"{{"b":{event}}}"#);
        assert_eq!(scanned(&deeper), Err(Unsupported));
    }

    /// Seeded mutation fuzzing against the general walk: whatever the scanner accepts, the
    /// general walk accepts too, with the same leaves.
    #[test]
    fn accepts_only_what_the_general_walk_reads_the_same() {
        const SEEDS: [&str; 5] = [
            r#"{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/a"},"eventTime":"2024-05-01T10:00:00Z","readOnly":true,"bytes":123,"resources":[{"ARN":"x","type":"y"}],"responseElements":null}"#,
            r#"{"a": {"b": {"c": [1, -2, "x\"y"], "d": {}}}, "e": -0, "year": 7, "f": false}"#,
            r#"{ "k" : "v" , "n" : 12345678901234 , "z" : [ ] , "o" : { "p" : "é" } }"#,
            r#"{"a": 1, "a": 2, "a.b": 3, "a": {"b": 4}}"#,
            r#"{"x": [[[]]], "y": "tab\there", "u": "\u00e9", "w": "été"}"#,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for round in 0..100_000 {
            let mut bytes = SEEDS[round % SEEDS.len()].as_bytes().to_vec();
            for _ in 0..1 + next() % 2 {
                let at = (next() % (bytes.len() as u64 + 1)) as usize;
                const PIECES: &[u8] = b"{}[]\",:0123456789-.eE tfnrul\\\n";
                match next() % 4 {
                    0 if at < bytes.len() => {
                        bytes[at] = PIECES[(next() % PIECES.len() as u64) as usize]
                    }
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    2 => bytes.insert(at, PIECES[(next() % PIECES.len() as u64) as usize]),
                    _ => bytes.truncate(at),
                }
            }
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            if let Ok(leaves) = scanned(text) {
                accepted += 1;
                let mut general = Vec::new();
                let read = crate::flatten::for_each_leaf(
                    text.as_bytes(),
                    &mut String::new(),
                    &mut |name, leaf| general.push((name.to_string(), leaf)),
                );
                assert!(
                    read.is_ok(),
                    "scanned what the general walk refuses: {text}"
                );
                assert_eq!(leaves, general, "{text}");
            }
        }
        // The mutations leave many events readable, so the comparison is not vacuous.
        assert!(
            accepted > 10_000,
            "only {accepted} mutated events were scanned"
        );
    }
}
