//! Rewriting a JSON value that is being parsed as compact text, in one pass: the form the lake
//! stores arrays and deep objects in.
//!
//! The text is exactly what `serde_json::Value`'s `to_string` writes for the same value (the
//! form these columns always had, so files written before and after read the same): no white
//! space, strings escaped and numbers formatted as serde_json does, object keys in byte order,
//! and of a key repeated within one object only the last value. Building a `Value` first cost
//! a map per object and a string per value, only to be written out and dropped.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::ops::Range;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Reads one JSON value and appends its compact text to the string it holds.
pub(crate) struct CompactJson<'o>(pub(crate) &'o mut String);

impl<'de> DeserializeSeed<'de> for CompactJson<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CompactJson<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.0.push_str("null");
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, flag: bool) -> Result<(), E> {
        self.0.push_str(if flag { "true" } else { "false" });
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<(), E> {
        // Integers print the same through `Display` as through serde_json.
        write!(self.0, "{number}").map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<(), E> {
        write!(self.0, "{number}").map_err(E::custom)
    }

    fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<(), E> {
        // Floats are not (`1e308`, `1.0`): serde_json formats them as it does for a `Value`.
        let text = serde_json::to_string(&number).map_err(E::custom)?;
        self.0.push_str(&text);
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<(), E> {
        push_quoted(self.0, text);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.0;
        out.push('[');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(',');
            }
            if seq.next_element_seed(CompactJson(&mut *out))?.is_none() {
                out.truncate(mark);
                break;
            }
            first = false;
        }
        out.push(']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        // Members are written in document order, each as `"key":value`; when the keys did not
        // arrive in strictly increasing order (rare in practice), they are put in order after.
        out.push('{');
        let first_member = out.len();
        let mut members: Vec<(Cow<'de, str>, Range<usize>)> = Vec::new();
        let mut in_order = true;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if let Some((previous, _)) = members.last() {
                in_order &= *previous < key;
                out.push(',');
            }
            let member_start = out.len();
            push_quoted(out, &key);
            out.push(':');
            map.next_value_seed(CompactJson(&mut *out))?;
            members.push((key, member_start..out.len()));
        }
        if !in_order {
            // Stable: of equal keys the last stays last, and only the last is kept, as a
            // map that is inserted into keeps the last value.
            members.sort_by(|a, b| a.0.cmp(&b.0));
            let written = out.split_off(first_member);
            let mut first = true;
            for (index, (key, range)) in members.iter().enumerate() {
                if members.get(index + 1).is_some_and(|next| next.0 == *key) {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&written[range.start - first_member..range.end - first_member]);
            }
        }
        out.push('}');
        Ok(())
    }
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it: `"`, `\` and the
/// control characters, with the short forms where JSON has them; nothing else.
fn push_quoted(out: &mut String, text: &str) {
    out.push('"');
    // Most strings need no escape: skip them 8 bytes at a time, then go byte by byte from the
    // first word that holds a byte to escape.
    let clean_words = text
        .as_bytes()
        .chunks_exact(8)
        .take_while(|chunk| <[u8; 8]>::try_from(*chunk).is_ok_and(|word| !needs_escape(word)))
        .count();
    let mut run_start = 0;
    for (at, byte) in text.bytes().enumerate().skip(clean_words * 8) {
        let short = match byte {
            b'"' => '"',
            b'\\' => '\\',
            0x08 => 'b',
            b'\t' => 't',
            b'\n' => 'n',
            0x0c => 'f',
            b'\r' => 'r',
            0x00..=0x1f => 'u',
            _ => continue,
        };
        // Escaped bytes are ASCII, so the runs between them are whole characters.
        out.push_str(&text[run_start..at]);
        out.push('\\');
        out.push(short);
        if short == 'u' {
            let _ = write!(out, "{byte:04x}");
        }
        run_start = at + 1;
    }
    out.push_str(&text[run_start..]);
    out.push('"');
}

/// Whether one of the 8 bytes of `word` must be escaped: a control character, `"` or `\`.
/// The bit tricks of "Bit Twiddling Hacks" (`hasless`, `haszero`): `(x - n) & !x` sets the high
/// bit of some byte exactly when some byte of `x` is below `n` (for `n` up to 128).
fn needs_escape(word: [u8; 8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let word = u64::from_le_bytes(word);
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word;
    let control = below(word, 0x20);
    let quote = below(word ^ (ONES * u64::from(b'"')), 1);
    let backslash = below(word ^ (ONES * u64::from(b'\\')), 1);
    (control | quote | backslash) & HIGH_BITS != 0
}

/// An object key, borrowed from the payload when it has no escapes.
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(text.to_string())))
            }
            fn visit_string<E>(self, text: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The compact text of the JSON `text`, written in one pass.
#[cfg(test)]
fn compact(text: &str) -> serde_json::Result<String> {
    let mut out = String::new();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    CompactJson(&mut out).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the lake wrote before: the text of a parsed `serde_json::Value`.
    fn through_value(text: &str) -> String {
        serde_json::from_str::<serde_json::Value>(text)
            .unwrap()
            .to_string()
    }

    #[test]
    fn writes_what_a_parsed_value_writes() {
        let cases = [
            r#"[1, -2, 3.5, 1e5, -0, 0.1, 18446744073709551615, -9223372036854775808, 1.7976931348623157e308]"#,
            r#"[true, false, null, "", "a\"b\\c\n\t\u0001", "Zürich \ud83d\ude00", "\u00e9"]"#,
            r#"[{"b": 1, "a": [2, {"z": null, "y": {}}], "c": []}, [], [[]], {}]"#,
            r#"{"dup": 1, "a": 0, "dup": 2, "Dup": 3, "é": 4, "e": 5, "dup": [3]}"#,
            r#"[{"k\u00e9y": "v", "key": "w"}, "\u2028"]"#,
            r#"  [ 1 ,  { "x" : [ ] } ]  "#,
        ];
        for case in cases {
            assert_eq!(compact(case).unwrap(), through_value(case), "{case}");
        }
    }

    #[test]
    fn the_word_check_finds_exactly_the_bytes_to_escape() {
        // Every byte at every position, among fillers next to the limits of the tricks.
        for filler in [b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xc3, 0xff] {
            for byte in 0..=u8::MAX {
                for position in 0..8 {
                    let mut word = [filler; 8];
                    word[position] = byte;
                    let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
                    assert_eq!(needs_escape(word), expected, "{word:?}");
                }
            }
        }
    }

    #[test]
    fn invalid_json_is_an_error() {
        for case in [r#"[1, 2"#, r#"[{"a": }]"#, r#"[1,]"#, r#"{"a" 1}"#] {
            assert!(compact(case).is_err(), "{case}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(
            compact(&deep)
                .unwrap_err()
                .to_string()
                .contains("recursion limit")
        );
    }

    /// Seeded mutation of JSON texts: on every input, valid or not, the one-pass text and
    /// the parsed `Value`'s text agree, or both readers refuse it.
    #[test]
    fn agrees_with_a_parsed_value_on_mutated_input() {
        const SEEDS: [&str; 4] = [
            r#"[{"b": [1, 2.5, {"c": null}], "a": "x\u00e9"}, true, -0, 1e308]"#,
            r#"{"k": {"k": [], "j": {}}, "k": "\ud83d\ude00", "": 0}"#,
            r#"[[[["deep"]]], {"z": 1, "y": [false, "a\"b"]}]"#,
            r#"[18446744073709551616, -9223372036854775809, 0.000001, 123456789.123]"#,
        ];
        const PIECES: &[u8] = b"{}[]\",:0e-.9 \\u";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % below.max(1) as u64) as usize
        };
        for round in 0..20_000 {
            let mut bytes = SEEDS[round % SEEDS.len()].as_bytes().to_vec();
            for _ in 0..1 + next(4) {
                let at = next(bytes.len() + 1);
                match next(3) {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, PIECES[next(PIECES.len())]),
                    _ if at < bytes.len() => bytes[at] = PIECES[next(PIECES.len())],
                    _ => {}
                }
            }
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(value) => assert_eq!(compact(text).unwrap(), value.to_string(), "{text}"),
                Err(_) => assert!(compact(text).is_err(), "{text}"),
            }
        }
    }
}
