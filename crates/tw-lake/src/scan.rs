//! The flattener's fast path: a walker for the JSON objects most events are, written for
//! this one job, in front of the general one of [`crate::flatten`].
//!
//! serde_json's visitor machinery cost ~460 instructions per leaf of a CloudTrail event
//! (dispatch, map access, key seeds) where the job is to find where each key and value starts
//! and ends. This scanner reads the bytes directly: keys and strings without escapes are
//! borrowed slices, integers are summed in place, and an array (stored as text, which must be
//! exactly serde_json's compact text) is copied when it is written that way already, else
//! handed to serde_json as a slice.
//!
//! It reads a subset of JSON and gives up on everything else ([`Unsupported`]): escapes in keys
//! or strings, floats and `-0` (serde_json's float parsing is the reference, including its
//! rounding), integers outside `i64`, nesting past the walk's depth, a top level that is not a
//! non-empty object, and every error. Giving up may come after some leaves were visited; the caller then
//! discards them and walks the event again with [`crate::flatten`], which decides what it
//! holds and, for invalid JSON, names the problem. So for every input this path either gives
//! exactly the leaves the general walk gives, or none (the mutation test below checks that).

use std::borrow::Cow;

use serde::de::DeserializeSeed;

use crate::compact_json::CompactJson;
use crate::flatten::{Leaf, MAX_DEPTH, column_name, is_reserved};

/// The scanner met something it leaves to the general walk.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unsupported;

type Scanned<T> = Result<T, Unsupported>;

/// Visits the leaves of `payload` as [`crate::flatten::for_each_leaf`] does, or gives up.
pub(crate) fn scan_leaves<'a>(
    payload: &'a str,
    path: &mut String,
    visit: &mut dyn FnMut(&str, Leaf<'a>),
) -> Scanned<()> {
    path.clear();
    let mut scanner = Scanner {
        text: payload,
        bytes: payload.as_bytes(),
        at: 0,
        path,
        visit,
    };
    scanner.skip_space();
    if scanner.peek() != Some(b'{') {
        return Err(Unsupported);
    }
    scanner.at += 1;
    scanner.skip_space();
    if scanner.peek() == Some(b'}') {
        // The whole event is `{}`: a `_value` leaf, left to the general walk.
        return Err(Unsupported);
    }
    scanner.object_members(0)?;
    scanner.skip_space();
    if scanner.at == scanner.bytes.len() {
        Ok(())
    } else {
        Err(Unsupported)
    }
}

struct Scanner<'t, 'p, 'v> {
    text: &'t str,
    bytes: &'t [u8],
    at: usize,
    path: &'p mut String,
    visit: &'v mut dyn FnMut(&str, Leaf<'t>),
}

impl<'t> Scanner<'t, '_, '_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Skips JSON white space (space, tab, line feed, carriage return).
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Scanned<()> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(Unsupported)
        }
    }

    /// The members of an object whose `{` and the white space after it were read, up to and
    /// including its `}`; the object has at least one member. `depth` is the object's depth
    /// (0 for the event itself), and its column name so far is in `path`.
    fn object_members(&mut self, depth: usize) -> Scanned<()> {
        let base = self.path.len();
        loop {
            let key = self.plain_string()?;
            self.path.truncate(base);
            if depth > 0 {
                self.path.push('.');
            }
            self.path.push_str(key);
            if depth == 0 && is_reserved(key) {
                self.path.push('_');
            }
            self.skip_space();
            self.expect(b':')?;
            self.skip_space();
            self.value(depth + 1)?;
            self.skip_space();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_space();
                }
                Some(b'}') => {
                    self.at += 1;
                    self.path.truncate(base);
                    return Ok(());
                }
                _ => return Err(Unsupported),
            }
        }
    }

    /// One value at `depth` (the depth of the object it would be), named by `path`.
    fn value(&mut self, depth: usize) -> Scanned<()> {
        let leaf = match self.peek().ok_or(Unsupported)? {
            b'"' => Leaf::Str(Cow::Borrowed(self.plain_string()?)),
            b'{' => {
                self.at += 1;
                self.skip_space();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    Leaf::Json("{}".to_string())
                } else if depth >= MAX_DEPTH {
                    return Err(Unsupported);
                } else {
                    return self.object_members(depth);
                }
            }
            b'[' => Leaf::Json(self.array()?),
            b't' => self.literal("true", Leaf::Bool(true))?,
            b'f' => self.literal("false", Leaf::Bool(false))?,
            b'n' => self.literal("null", Leaf::Null)?,
            b'-' | b'0'..=b'9' => Leaf::Int(self.integer()?),
            _ => return Err(Unsupported),
        };
        (self.visit)(column_name(self.path), leaf);
        Ok(())
    }

    fn literal(&mut self, word: &str, leaf: Leaf<'t>) -> Scanned<Leaf<'t>> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(leaf)
        } else {
            Err(Unsupported)
        }
    }

    /// A string without escapes or control characters, starting at its `"`; the text
    /// between the quotes.
    fn plain_string(&mut self) -> Scanned<&'t str> {
        self.expect(b'"')?;
        let start = self.at;
        let end = start + string_stop(&self.bytes[start..]).ok_or(Unsupported)?;
        if self.bytes[end] != b'"' {
            return Err(Unsupported);
        }
        self.at = end + 1;
        // Both ends are ASCII quotes of valid UTF-8 text: character boundaries.
        self.text.get(start..end).ok_or(Unsupported)
    }

    /// An integer in JSON's grammar that fits `i64`, as serde_json reads it; a number with a
    /// fraction or an exponent, and `-0`, are floats to serde_json, left to the general walk.
    fn integer(&mut self) -> Scanned<i64> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let digits_start = self.at;
        // Summed negatively so that `i64::MIN` fits.
        let mut value: i64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            value = value
                .checked_mul(10)
                .and_then(|value| value.checked_sub(i64::from(digit - b'0')))
                .ok_or(Unsupported)?;
            self.at += 1;
        }
        let digits = self.at - digits_start;
        let leading_zero = digits > 1 && self.bytes[digits_start] == b'0';
        if digits == 0 || leading_zero || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return Err(Unsupported);
        }
        if negative {
            // serde_json reads `-0` as the float -0.0.
            if value == 0 {
                return Err(Unsupported);
            }
            Ok(value)
        } else {
            value.checked_neg().ok_or(Unsupported)
        }
    }

    /// An array, starting at its `[`, as the compact text serde_json writes for it. Most
    /// arrays are written that way already ([`canonical_end`]) and are copied as they are; of
    /// the others the end is found here (strings skipped, brackets counted) and serde_json
    /// reads the slice.
    fn array(&mut self) -> Scanned<String> {
        let start = self.at;
        if let Some(end) = canonical_end(self.bytes, start, 0) {
            self.at = end;
            return self
                .text
                .get(start..end)
                .map(str::to_string)
                .ok_or(Unsupported);
        }
        let mut open = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let end = loop {
            let byte = *self.bytes.get(self.at).ok_or(Unsupported)?;
            self.at += 1;
            if in_string {
                match (escaped, byte) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'[' | b'{' => open += 1,
                b']' | b'}' => {
                    open -= 1;
                    if open == 0 {
                        break self.at;
                    }
                }
                _ => {}
            }
        };
        let slice = self.text.get(start..end).ok_or(Unsupported)?;
        let mut text = String::with_capacity(slice.len());
        let mut deserializer = serde_json::Deserializer::from_str(slice);
        CompactJson(&mut text)
            .deserialize(&mut deserializer)
            .and_then(|()| deserializer.end())
            .map_err(|_| Unsupported)?;
        Ok(text)
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

/// The position of the first byte of `bytes` that ends a plain string or makes it one this
/// scanner does not read: `"`, `\\` or a control character. Eight bytes per step (a byte at a
/// time cost ~10 instructions per byte of text): a lane holds such a byte when it equals one of
/// the two, or is below 0x20, found with the classic "has a zero byte" test.
fn string_stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let lanes = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
        let quote = lanes ^ (ONES * u64::from(b'"'));
        let backslash = lanes ^ (ONES * u64::from(b'\\'));
        // A lane below 0x20 borrows when 0x20 is subtracted (lanes of 0x80 and more are
        // masked out by `!lanes`).
        let stops = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (lanes.wrapping_sub(ONES * 0x20) & !lanes);
        let stops = stops & HIGH;
        if stops != 0 {
            // Borrows only run upwards, so the lowest flagged lane is a true one.
            return Some(offset + (stops.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
        .map(|position| offset + position)
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
    fn string_stops_are_found_in_every_lane() {
        for length in 0..40 {
            for stop in [b'"', b'\\', b'\n', 0x00, 0x1f] {
                for at in 0..length {
                    let mut bytes = vec![b'a'; length];
                    // Bytes next to the stop that must not be taken for one.
                    if at > 0 {
                        bytes[at - 1] = 0x80;
                    }
                    if at + 1 < length {
                        bytes[at + 1] = b' ';
                    }
                    bytes[at] = stop;
                    assert_eq!(string_stop(&bytes), Some(at), "{bytes:?}");
                }
                let plain: Vec<u8> = (0..length)
                    .map(|i| [b'a', b' ', 0xc3, 0xa9, 0x7f, b'!'][i % 6])
                    .collect();
                assert_eq!(string_stop(&plain), None, "{plain:?}");
            }
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
