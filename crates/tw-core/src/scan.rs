//! A cursor over JSON text for the fast paths in front of serde_json: the lake's flattener
//! (`tw-lake/src/scan.rs`), the rules' field parse (`fields/scan.rs`) and ingest's pruned
//! parse (`select.rs`).
//!
//! serde_json's visitor machinery costs hundreds of instructions per key and value (dispatch,
//! map access, seeds) where these jobs need to know where each key and value starts and ends.
//! The cursor reads the bytes directly, for a subset of JSON, and gives up on the rest
//! ([`Unsupported`]): every error, and whatever its caller leaves to serde_json. A caller that
//! gives up reads the document again from the start with serde_json, which decides what it
//! holds and names any problem, so each fast path gives either serde_json's answer or none.
//!
//! What the cursor accepts is valid JSON: a fast path that reads a whole document with it may
//! vouch for the document as serde_json would ([`crate::CheckedPayload`]).

use serde_json::Value;

/// The cursor met something it leaves to serde_json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported;

/// What a step of the cursor reads, or [`Unsupported`].
pub type Scanned<T> = Result<T, Unsupported>;

/// Nesting a skipped value may have. serde_json refuses documents nested past 128 levels; the
/// fast paths leave everything deep to it, well before that.
pub const MAX_SKIP_DEPTH: usize = 64;

/// A position in a JSON text.
#[derive(Debug, Clone)]
pub struct Cursor<'t> {
    text: &'t str,
    at: usize,
}

impl<'t> Cursor<'t> {
    /// A cursor at the start of `text`.
    pub fn new(text: &'t str) -> Self {
        Self { text, at: 0 }
    }

    /// The whole text.
    pub fn text(&self) -> &'t str {
        self.text
    }

    /// The byte position.
    pub fn at(&self) -> usize {
        self.at
    }

    fn bytes(&self) -> &'t [u8] {
        self.text.as_bytes()
    }

    /// The byte at the cursor, if any.
    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    /// Moves to `at`, the end of something the caller found in [`text`](Self::text).
    pub fn set_at(&mut self, at: usize) {
        self.at = at.min(self.text.len());
    }

    /// Steps over the byte at the cursor (which the caller has peeked).
    #[inline]
    pub fn advance(&mut self) {
        self.at += 1;
    }

    /// Whether everything is read.
    pub fn is_done(&self) -> bool {
        self.at == self.text.len()
    }

    /// Skips JSON white space (space, tab, line feed, carriage return).
    #[inline]
    pub fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// Steps over `byte`, which must be at the cursor.
    #[inline]
    pub fn expect(&mut self, byte: u8) -> Scanned<()> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(Unsupported)
        }
    }

    /// After a member of an object or an element of an array (`close` is `}` or `]`): steps
    /// over the space and a `,` with the space after it (`true`: more follow), or over `close`
    /// (`false`: the object or array ended).
    #[inline]
    pub fn next_or_close(&mut self, close: u8) -> Scanned<bool> {
        self.skip_space();
        match self.peek() {
            Some(b',') => {
                self.at += 1;
                self.skip_space();
                Ok(true)
            }
            Some(byte) if byte == close => {
                self.at += 1;
                Ok(false)
            }
            _ => Err(Unsupported),
        }
    }

    /// Steps over `word` (`true`, `false`, `null`), which must be at the cursor.
    pub fn word(&mut self, word: &str) -> Scanned<()> {
        if self.bytes()[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(())
        } else {
            Err(Unsupported)
        }
    }

    /// A string without escapes or control characters, starting at its `"`; the text
    /// between the quotes.
    #[inline]
    pub fn plain_string(&mut self) -> Scanned<&'t str> {
        self.expect(b'"')?;
        let start = self.at;
        let end = start + string_stop(&self.bytes()[start..]).ok_or(Unsupported)?;
        if self.bytes()[end] != b'"' {
            return Err(Unsupported);
        }
        self.at = end + 1;
        // Both ends are ASCII quotes of valid UTF-8 text: character boundaries.
        self.text.get(start..end).ok_or(Unsupported)
    }

    /// An integer in JSON's grammar that fits `i64`, as serde_json reads it; a number with a
    /// fraction or an exponent, and `-0`, are floats to serde_json and are left to it.
    pub fn integer(&mut self) -> Scanned<i64> {
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
        let leading_zero = digits > 1 && self.bytes()[digits_start] == b'0';
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

    /// The value at the cursor, whole, as serde_json reads it: scalars are made in place,
    /// anything else (objects, arrays, floats, escaped strings) is read by serde_json from its
    /// slice, which it reads as it would in the document.
    pub fn value(&mut self, depth: usize) -> Scanned<Value> {
        let mark = self.at;
        let simple = match self.peek().ok_or(Unsupported)? {
            b'"' => self
                .plain_string()
                .map(|text| Value::String(text.to_string())),
            b'-' | b'0'..=b'9' => self.integer().map(Value::from),
            b't' => self.word("true").map(|()| Value::Bool(true)),
            b'f' => self.word("false").map(|()| Value::Bool(false)),
            b'n' => self.word("null").map(|()| Value::Null),
            _ => Err(Unsupported),
        };
        if simple.is_ok() {
            return simple;
        }
        self.at = mark;
        self.skip_value(depth)?;
        serde_json::from_str(&self.text[mark..self.at]).map_err(|_| Unsupported)
    }

    /// Steps over one value, checking its syntax as serde_json does for a value it ignores:
    /// strings may hold escapes (`\uXXXX` of any four hex digits) but no control characters,
    /// numbers follow JSON's grammar whatever their size. `depth` is the value's nesting;
    /// objects and arrays past [`MAX_SKIP_DEPTH`] are left to serde_json.
    pub fn skip_value(&mut self, depth: usize) -> Scanned<()> {
        match self.peek().ok_or(Unsupported)? {
            b'"' => self.skip_string(),
            b'{' => {
                if depth >= MAX_SKIP_DEPTH {
                    return Err(Unsupported);
                }
                self.at += 1;
                self.skip_space();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(());
                }
                loop {
                    self.skip_string()?;
                    self.skip_space();
                    self.expect(b':')?;
                    self.skip_space();
                    self.skip_value(depth + 1)?;
                    if !self.next_or_close(b'}')? {
                        return Ok(());
                    }
                }
            }
            b'[' => {
                if depth >= MAX_SKIP_DEPTH {
                    return Err(Unsupported);
                }
                self.at += 1;
                self.skip_space();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    if !self.next_or_close(b']')? {
                        return Ok(());
                    }
                }
            }
            b't' => self.word("true"),
            b'f' => self.word("false"),
            b'n' => self.word("null"),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => Err(Unsupported),
        }
    }

    /// Steps over a string, starting at its `"`, escapes included.
    fn skip_string(&mut self) -> Scanned<()> {
        self.expect(b'"')?;
        loop {
            self.at += string_stop(&self.bytes()[self.at..]).ok_or(Unsupported)?;
            match self.bytes()[self.at] {
                b'"' => {
                    self.at += 1;
                    return Ok(());
                }
                b'\\' => {
                    self.at += 1;
                    match self.peek().ok_or(Unsupported)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let hex = self.bytes().get(self.at + 1..self.at + 5);
                            if !hex.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(Unsupported);
                            }
                            self.at += 5;
                        }
                        _ => return Err(Unsupported),
                    }
                }
                // A control character.
                _ => return Err(Unsupported),
            }
        }
    }

    /// Steps over a number in JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn skip_number(&mut self) -> Scanned<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => return Err(Unsupported),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.require_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.require_digits()?;
        }
        // `01` is not a number; serde_json says so, the cursor leaves it to serde_json.
        if self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            return Err(Unsupported);
        }
        Ok(())
    }

    fn skip_digits(&mut self) {
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn require_digits(&mut self) -> Scanned<()> {
        let start = self.at;
        self.skip_digits();
        if self.at == start {
            Err(Unsupported)
        } else {
            Ok(())
        }
    }
}

/// The position of the first byte of `bytes` that ends a plain string or makes it one the
/// fast paths do not borrow: `"`, `\\` or a control character. Eight bytes per step (a byte at
/// a time cost ~10 instructions per byte of text): a lane holds such a byte when it equals one
/// of the two, or is below 0x20, found with the classic "has a zero byte" test.
#[inline]
pub fn string_stop(bytes: &[u8]) -> Option<usize> {
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

/// Documents for [`for_each_mutation`]: events with nesting, arrays, escapes, floats, big
/// integers, duplicate keys and dotted keys, for the paths of the tests that use them.
#[cfg(test)]
pub(crate) const MUTATION_SEEDS: [&str; 6] = [
    r#"{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/a"},"eventName":"GetObject","readOnly":true,"n":123,"resources":[{"ARN":"x","type":"y"},{"ARN":"z"}],"errorMessage":null}"#,
    r#"{"a": {"b": {"c": [1, -2, "x\"y"], "d": {}}}, "a.b": -0, "n": 7.5, "f": false}"#,
    r#"{ "userIdentity" : { "type" : "é" , "sessionContext" : { "attributes" : { "mfa" : "true" } } } , "z" : [ ] }"#,
    r#"{"dup": {"inner": 1}, "dup": {"inner": 2}, "flat.key": 3, "flat": {"key": 4}, "dup.inner": 5}"#,
    r#"{"x": [[[]]], "escaped": "tab\there", "u": "\u00e9\ud800", "0": {"x": 1e5}, "eventName": 12345678901234567890}"#,
    r#"{"resources": {"1": {"ARN": "keyed"}}, "missing": {"path": null}, "errorMessage": "boom"}"#,
];

/// Seeded mutations of `seeds` (a byte or two replaced, removed, inserted or the text cut),
/// `rounds` of them, each handed to `check` when still UTF-8: the fast paths' differential
/// tests compare their answer with serde_json's on these.
#[cfg(test)]
pub(crate) fn for_each_mutation(seeds: &[&str], rounds: usize, mut check: impl FnMut(&str)) {
    const PIECES: &[u8] = b"{}[]\",:0123456789-.eE tfnrulx\\\n";
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..rounds {
        let mut bytes = seeds[round % seeds.len()].as_bytes().to_vec();
        for _ in 0..1 + next() % 2 {
            let at = (next() % (bytes.len() as u64 + 1)) as usize;
            let piece = PIECES[(next() % PIECES.len() as u64) as usize];
            match next() % 4 {
                0 if at < bytes.len() => bytes[at] = piece,
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                2 => bytes.insert(at, piece),
                _ => bytes.truncate(at),
            }
        }
        if let Ok(text) = std::str::from_utf8(&bytes) {
            check(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn skipped(text: &str) -> Scanned<usize> {
        let mut cursor = Cursor::new(text);
        cursor.skip_value(0)?;
        Ok(cursor.at())
    }

    #[test]
    fn skips_exactly_one_value() {
        for (value, rest) in [
            (r#""a\"b\\c\/\b\f\n\r\t\u00e9\uD800""#, " x"),
            (
                r#"{"a": [1, -2.5e+3, 0, -0, 0.0, 1E9, true, false, null, {}, []], "b": {"c": "d"}}"#,
                ",",
            ),
            ("[ ]", "]"),
            ("123456789012345678901234567890", " "),
            ("-0.5e-7", "]"),
        ] {
            assert_eq!(
                skipped(&format!("{value}{rest}")),
                Ok(value.len()),
                "{value}"
            );
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(value).is_ok());
        }
    }

    #[test]
    fn leaves_to_serde_json_what_is_not_json() {
        for text in [
            "",
            "x",
            r#""abc"#,
            "\"a\tb\"",
            r#""\x""#,
            r#""\u12g4""#,
            r#""\u12""#,
            "01",
            "-",
            "1.",
            "1e",
            "1e+",
            ".5",
            "+1",
            "tru",
            "nul",
            "[1,]",
            "[1 2]",
            r#"{"a" 1}"#,
            r#"{"a":1,}"#,
            r#"{a:1}"#,
            "{",
            "[",
            r#"{"a":}"#,
        ] {
            assert_eq!(skipped(text), Err(Unsupported), "{text:?}");
        }
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_SKIP_DEPTH + 1),
            "]".repeat(MAX_SKIP_DEPTH + 1)
        );
        assert_eq!(skipped(&deep), Err(Unsupported));
        let deep_enough = format!(
            "{}{}",
            "[".repeat(MAX_SKIP_DEPTH),
            "]".repeat(MAX_SKIP_DEPTH)
        );
        assert_eq!(skipped(&deep_enough), Ok(deep_enough.len()));
    }

    #[test]
    fn integers_are_read_as_serde_json_reads_them() {
        for text in [
            "0",
            "7",
            "-7",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            let mut cursor = Cursor::new(text);
            let expected: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::Value::from(cursor.integer().unwrap()), expected);
            assert!(cursor.is_done());
        }
        for text in ["-0", "01", "1.5", "1e3", "9223372036854775808", "-", ""] {
            assert_eq!(Cursor::new(text).integer(), Err(Unsupported), "{text}");
        }
    }
}
