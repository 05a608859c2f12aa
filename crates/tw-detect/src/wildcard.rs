//! Wildcard patterns: `*` (any run of characters), `?` (exactly one character), `\` escapes.
//!
//! The escaping rules are Sigma's, so a Sigma value and a native `wildcard` operand mean the
//! same thing: `\*`, `\?` and `\\` are a literal `*`, `?` and `\`; a backslash before any
//! other character is itself literal (`C:\Windows\*` needs no doubling).
//!
//! Patterns made of literals and `*` only (nearly all of them) match by finding their literal
//! pieces in order, without allocating for ASCII text; a pattern with `?` compiles to a
//! linear-time regex.

use regex::{Regex, RegexBuilder};

use crate::compile::REGEX_SIZE_LIMIT;

/// One element of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// `*`: any run of characters, possibly empty.
    Star,
    /// `?`: exactly one character.
    One,
}

/// Splits `pattern` into literal text and wildcards (adjacent literals merged).
pub fn parse_pattern(pattern: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&next @ ('*' | '?' | '\\')) => {
                    text.push(next);
                    chars.next();
                }
                _ => text.push('\\'),
            },
            '*' | '?' => {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                // Consecutive stars mean the same as one.
                if c == '?' {
                    pieces.push(Piece::One);
                } else if pieces.last() != Some(&Piece::Star) {
                    pieces.push(Piece::Star);
                }
            }
            other => text.push(other),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// Writes `text` as a pattern that matches it literally (the inverse of [`parse_pattern`]).
pub fn escape_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Writes pieces back as pattern text.
pub fn pieces_to_pattern(pieces: &[Piece]) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(&escape_literal(text)),
            Piece::Star => out.push('*'),
            Piece::One => out.push('?'),
        }
    }
    out
}

/// A compiled wildcard pattern, matched against the whole text.
#[derive(Debug, Clone)]
pub(crate) enum Wildcard {
    /// Literal pieces separated by `*`: `first` must start the text, `last` end it (each only
    /// when the pattern does not begin/end with `*`), `middle` occur in order in between.
    /// Lowercased when `ignore_case`.
    Pieces {
        first: Option<Box<str>>,
        middle: Vec<Box<str>>,
        last: Option<Box<str>>,
        /// No `*` at all: the text must equal `first`.
        exact: bool,
        ignore_case: bool,
    },
    /// A pattern with `?`.
    Regex(Regex),
}

impl Wildcard {
    /// Compiles `pattern`; the error names why (only a too large `?` pattern fails).
    pub(crate) fn new(pattern: &str, ignore_case: bool) -> Result<Self, String> {
        let pieces = parse_pattern(pattern);
        if pieces.contains(&Piece::One) {
            let mut source = String::from("(?s)^");
            for piece in &pieces {
                match piece {
                    Piece::Text(text) => source.push_str(&regex::escape(text)),
                    Piece::Star => source.push_str(".*"),
                    Piece::One => source.push('.'),
                }
            }
            source.push('$');
            return RegexBuilder::new(&source)
                .case_insensitive(ignore_case)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map(Self::Regex)
                .map_err(|error| format!("wildcard pattern {pattern:?} is too large: {error}"));
        }
        let fold = |text: &str| -> Box<str> {
            if ignore_case {
                text.to_lowercase().into()
            } else {
                text.into()
            }
        };
        let starts_with_star = pieces.first() == Some(&Piece::Star);
        let ends_with_star = pieces.last() == Some(&Piece::Star);
        let mut texts: Vec<Box<str>> = pieces
            .iter()
            .filter_map(|piece| match piece {
                Piece::Text(text) => Some(fold(text)),
                _ => None,
            })
            .collect();
        let exact = !pieces.contains(&Piece::Star);
        if exact {
            return Ok(Self::Pieces {
                first: Some(texts.pop().unwrap_or_default()),
                middle: Vec::new(),
                last: None,
                exact,
                ignore_case,
            });
        }
        let first = (!starts_with_star && !texts.is_empty()).then(|| texts.remove(0));
        let last = (!ends_with_star).then(|| texts.pop()).flatten();
        Ok(Self::Pieces {
            first,
            middle: texts,
            last,
            exact,
            ignore_case,
        })
    }

    /// Whether the whole of `text` matches.
    pub(crate) fn matches(&self, text: &str) -> bool {
        match self {
            Self::Regex(regex) => regex.is_match(text),
            Self::Pieces {
                first,
                middle,
                last,
                exact,
                ignore_case,
            } => {
                if *ignore_case && !text.is_ascii() {
                    // Rare: Unicode lowercasing may change lengths; compare lowered copies.
                    let lowered = text.to_lowercase();
                    return pieces_match(&lowered, first, middle, last, *exact, false);
                }
                pieces_match(text, first, middle, last, *exact, *ignore_case)
            }
        }
    }
}

fn eq_bytes(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Position of the first occurrence of `needle` in `hay` (ASCII case folding when asked).
pub(crate) fn find(hay: &[u8], needle: &[u8], ignore_case: bool) -> Option<usize> {
    let (&head, rest) = match needle.split_first() {
        Some(split) => split,
        None => return Some(0),
    };
    if needle.len() > hay.len() {
        return None;
    }
    let (lower, upper) = if ignore_case {
        (head.to_ascii_lowercase(), head.to_ascii_uppercase())
    } else {
        (head, head)
    };
    let last_start = hay.len() - needle.len();
    let mut at = 0;
    // Scan for the first byte (either case, with SIMD), then compare the rest, instead of
    // folding case at every position.
    while at <= last_start {
        let offset = memchr::memchr2(lower, upper, &hay[at..=last_start])?;
        at += offset;
        if eq_bytes(&hay[at + 1..at + needle.len()], rest, ignore_case) {
            return Some(at);
        }
        at += 1;
    }
    None
}

fn pieces_match(
    text: &str,
    first: &Option<Box<str>>,
    middle: &[Box<str>],
    last: &Option<Box<str>>,
    exact: bool,
    ignore_case: bool,
) -> bool {
    let hay = text.as_bytes();
    if exact {
        let want = first.as_deref().unwrap_or_default().as_bytes();
        return hay.len() == want.len() && eq_bytes(hay, want, ignore_case);
    }
    let mut start = 0;
    let mut end = hay.len();
    if let Some(first) = first {
        let first = first.as_bytes();
        if first.len() > hay.len() || !eq_bytes(&hay[..first.len()], first, ignore_case) {
            return false;
        }
        start = first.len();
    }
    if let Some(last) = last {
        let last = last.as_bytes();
        if last.len() > end - start || !eq_bytes(&hay[end - last.len()..], last, ignore_case) {
            return false;
        }
        end -= last.len();
    }
    // Leftmost placement of each middle piece is optimal for `*`-only patterns.
    for piece in middle {
        match find(&hay[start..end], piece.as_bytes(), ignore_case) {
            Some(at) => start += at + piece.len(),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str, ignore_case: bool) -> bool {
        Wildcard::new(pattern, ignore_case).unwrap().matches(text)
    }

    #[test]
    fn star_and_question_mark() {
        assert!(m("*\\cmd.exe", "C:\\Windows\\System32\\cmd.exe", false));
        assert!(!m(
            "*\\cmd.exe",
            "C:\\Windows\\System32\\cmd.exe.bak",
            false
        ));
        // `\*` is a literal star; a backslash before a wildcard is written `\\`.
        assert!(m("C:\\\\*\\cmd.exe", "C:\\x\\cmd.exe", false));
        assert!(!m("C:\\\\*\\cmd.exe", "C:\\cmd.exe", false));
        assert!(m("C:\\*\\cmd.exe", "C:*\\cmd.exe", false));
        assert!(!m("C:\\*\\cmd.exe", "C:\\x\\cmd.exe", false));
        assert!(m("a*b*c", "abc", false) && m("a*b*c", "a-b-b-c", false));
        assert!(!m("a*b*c", "acb", false));
        assert!(!m("ab*ba", "aba", false));
        assert!(m("ab*ba", "abba", false));
        assert!(m("*", "", false) && m("*", "anything", false));
        assert!(m("", "", false) && !m("", "x", false));
        assert!(m("h?llo", "hello", false) && m("h?llo", "hallo", false));
        assert!(!m("h?llo", "hllo", false) && !m("h?llo", "heello", false));
        assert!(m("?", "é", false), "? is one character, not one byte");
        assert!(m("*.exe", "a.exe", false) && !m("*.exe", "a.exe\n", false));
    }

    #[test]
    fn escapes_follow_sigma() {
        assert!(m("a\\*b", "a*b", false) && !m("a\\*b", "axb", false));
        assert!(m("a\\?b", "a?b", false) && !m("a\\?b", "axb", false));
        assert!(m("a\\\\b", "a\\b", false));
        assert!(
            m("C:\\Windows\\", "C:\\Windows\\", false),
            "lone backslashes are literal"
        );
        assert!(m("end\\", "end\\", false));
        assert_eq!(
            parse_pattern("x\\**"),
            vec![Piece::Text("x*".into()), Piece::Star]
        );
        assert_eq!(parse_pattern("**a**"), parse_pattern("*a*"));
        for text in ["a*b?c\\d", "\\", "plain", "*?"] {
            let pattern = escape_literal(text);
            assert_eq!(parse_pattern(&pattern), vec![Piece::Text(text.into())]);
            assert!(m(&pattern, text, false));
        }
    }

    #[test]
    fn case_folding() {
        assert!(m("*\\CMD.exe", "c:\\windows\\cmd.EXE", true));
        assert!(!m("*\\CMD.exe", "c:\\windows\\cmd.EXE", false));
        assert!(!m("straße*", "STRASSE", true));
        assert!(m("ÄRGER*", "ärger und mehr", true));
        assert!(m("h?LLO", "HeLlo", true));
        assert_eq!(find(b"xxAbC", b"abc", true), Some(2));
        assert_eq!(find(b"xxAbC", b"abc", false), None);
        assert_eq!(find(b"", b"", false), Some(0));
    }
}
