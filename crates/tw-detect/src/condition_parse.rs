//! The condition string of named selections (the Sigma model):
//! `sel1 and not (sel2 or 1 of filter_*)`.
//!
//! Grammar (keywords case-insensitive; `not` binds tighter than `and`, `and` than `or`):
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | quant "of" target | NAME
//! quant   := "all" | "any" | N          (N ≥ 1; "any" = "1")
//! target  := "them" | NAME-PATTERN      (`*` matches any run of characters)
//! ```
//!
//! Parsing never panics and never recurses deeper than [`MAX_NESTING`]; every error names
//! the problem and its byte position.

use std::fmt;

/// Deepest accepted nesting of parentheses and `not` in a condition string.
pub const MAX_NESTING: usize = 32;
/// Longest accepted condition string, in bytes.
pub const MAX_CONDITION_LEN: usize = 8192;

/// A parsed condition string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Every operand holds.
    And(Vec<Expr>),
    /// At least one operand holds.
    Or(Vec<Expr>),
    /// The operand does not hold.
    Not(Box<Expr>),
    /// A selection by name.
    Name(String),
    /// `all of x*`, `1 of them`: a quantifier over the selections a pattern names.
    Of {
        /// How many must hold.
        quantifier: Quantifier,
        /// The name pattern, or `None` for `them` (every selection not starting with `_`).
        pattern: Option<String>,
    },
}

/// The quantifier of `… of …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    /// `all of`.
    All,
    /// `N of` (`1 of`, `any of`): at least N.
    AtLeast(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Open,
    Close,
}

/// Splits the condition into words and parentheses, with byte positions.
fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                tokens.push((at, Token::Open));
                chars.next();
            }
            ')' => {
                tokens.push((at, Token::Close));
                chars.next();
            }
            '|' => {
                return Err(format!(
                    "aggregation expressions (`| count() ...` at byte {at}) are not supported; \
                     use a threshold rule"
                ));
            }
            c if is_word_char(c) => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if !is_word_char(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push((at, Token::Word(word)));
            }
            other => return Err(format!("unexpected character {other:?} at byte {at}")),
        }
    }
    Ok(tokens)
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '*')
}

fn is_keyword(word: &str) -> bool {
    ["and", "or", "not", "of", "them", "all", "any"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

struct Parser<'t> {
    tokens: &'t [(usize, Token)],
    next: usize,
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next).map(|(_, token)| token)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.next).map_or(self.end, |(at, _)| *at)
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn describe_next(&self) -> String {
        match self.peek() {
            None => "the end of the condition".into(),
            Some(Token::Open) => format!("`(` at byte {}", self.position()),
            Some(Token::Close) => format!("`)` at byte {}", self.position()),
            Some(Token::Word(w)) => format!("`{w}` at byte {}", self.position()),
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, String> {
        let mut items = vec![self.and(depth)?];
        while self.peek_keyword("or") {
            self.next += 1;
            items.push(self.and(depth)?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Or(Vec::new()))
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Expr, String> {
        let mut items = vec![self.unary(depth)?];
        while self.peek_keyword("and") {
            self.next += 1;
            items.push(self.unary(depth)?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::And(Vec::new()))
        } else {
            Expr::And(items)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, String> {
        if depth >= MAX_NESTING {
            return Err(format!(
                "condition nests deeper than {MAX_NESTING} levels at byte {}",
                self.position()
            ));
        }
        let at = self.position();
        match self.peek().cloned() {
            None => Err("expected a selection name, `not`, `(` or `1 of`/`all of`, found the end of the condition".into()),
            Some(Token::Close) => Err(format!("expected a selection name, found `)` at byte {at}")),
            Some(Token::Open) => {
                self.next += 1;
                let inner = self.or(depth + 1)?;
                if self.peek() != Some(&Token::Close) {
                    return Err(format!(
                        "expected `)` closing the `(` at byte {at}, found {}",
                        self.describe_next()
                    ));
                }
                self.next += 1;
                Ok(inner)
            }
            Some(Token::Word(word)) => {
                self.next += 1;
                let lower = word.to_ascii_lowercase();
                if lower == "not" {
                    return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
                }
                let quantifier = match lower.as_str() {
                    "all" => Some(Quantifier::All),
                    "any" => Some(Quantifier::AtLeast(1)),
                    digits if digits.bytes().all(|b| b.is_ascii_digit()) => {
                        match digits.parse::<u32>() {
                            Ok(n) if n >= 1 => Some(Quantifier::AtLeast(n)),
                            _ => {
                                return Err(format!(
                                    "invalid count `{word}` at byte {at} (expected 1 or more)"
                                ));
                            }
                        }
                    }
                    _ => None,
                };
                if let Some(quantifier) = quantifier {
                    if !self.peek_keyword("of") {
                        return Err(format!(
                            "expected `of` after `{word}` at byte {at}, found {}",
                            self.describe_next()
                        ));
                    }
                    self.next += 1;
                    let target_at = self.position();
                    return match self.peek().cloned() {
                        Some(Token::Word(target)) if target.eq_ignore_ascii_case("them") => {
                            self.next += 1;
                            Ok(Expr::Of {
                                quantifier,
                                pattern: None,
                            })
                        }
                        Some(Token::Word(target)) if !is_keyword(&target) => {
                            self.next += 1;
                            Ok(Expr::Of {
                                quantifier,
                                pattern: Some(target),
                            })
                        }
                        _ => Err(format!(
                            "expected a selection name pattern or `them` after `of` at byte {target_at}, found {}",
                            self.describe_next()
                        )),
                    };
                }
                if is_keyword(&word) {
                    return Err(format!(
                        "expected a selection name, found keyword `{word}` at byte {at}"
                    ));
                }
                if word.contains('*') {
                    return Err(format!(
                        "a name pattern (`{word}` at byte {at}) needs a quantifier: `1 of {word}` or `all of {word}`"
                    ));
                }
                Ok(Expr::Name(word))
            }
        }
    }
}

/// Parses a condition string.
pub fn parse_condition(text: &str) -> Result<Expr, String> {
    if text.len() > MAX_CONDITION_LEN {
        return Err(format!(
            "condition is longer than {MAX_CONDITION_LEN} bytes"
        ));
    }
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err("condition is empty".into());
    }
    let mut parser = Parser {
        tokens: &tokens,
        next: 0,
        end: text.len(),
    };
    let expr = parser.or(0)?;
    if parser.next < tokens.len() {
        return Err(format!(
            "expected `and`, `or` or the end of the condition, found {}",
            parser.describe_next()
        ));
    }
    Ok(expr)
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

fn write_joined(f: &mut fmt::Formatter<'_>, items: &[Expr], word: &str) -> fmt::Result {
    f.write_str("(")?;
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            write!(f, " {word} ")?;
        }
        write!(f, "{item}")?;
    }
    f.write_str(")")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined = write_joined;
        match self {
            Self::And(items) => joined(f, items, "and"),
            Self::Or(items) => joined(f, items, "or"),
            Self::Not(inner) => write!(f, "not {inner}"),
            Self::Name(name) => f.write_str(name),
            Self::Of {
                quantifier,
                pattern,
            } => {
                match quantifier {
                    Quantifier::All => f.write_str("all of ")?,
                    Quantifier::AtLeast(n) => write!(f, "{n} of ")?,
                }
                f.write_str(pattern.as_deref().unwrap_or("them"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> String {
        parse_condition(text)
            .map(|e| e.to_string())
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn precedence_and_grouping() {
        assert_eq!(p("a"), "a");
        assert_eq!(p("a and b or c"), "((a and b) or c)");
        assert_eq!(p("a or b and c"), "(a or (b and c))");
        assert_eq!(p("not a and b"), "(not a and b)");
        assert_eq!(p("not (a and b)"), "not (a and b)");
        assert_eq!(
            p("sel1 and not (sel2 or 1 of filter_*)"),
            "(sel1 and not (sel2 or 1 of filter_*))"
        );
        assert_eq!(p("all of them"), "all of them");
        assert_eq!(
            p("ANY OF sel* AND NOT 2 of f*"),
            "(1 of sel* and not 2 of f*)"
        );
        assert_eq!(p("((a))"), "a");
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("", "condition is empty"),
            ("a and", "found the end of the condition"),
            ("(a or b", "expected `)` closing the `(` at byte 0"),
            ("a b", "found `b` at byte 2"),
            ("a )", "found `)` at byte 2"),
            ("1 of", "after `of` at byte 4"),
            ("2 sel", "expected `of` after `2`"),
            ("0 of them", "invalid count `0`"),
            ("sel*", "needs a quantifier"),
            ("a and or b", "found keyword `or`"),
            ("sel | count() > 5", "aggregation expressions"),
            ("a & b", "unexpected character '&' at byte 2"),
            ("all of and", "after `of`"),
        ];
        for (text, wanted) in cases {
            let error = parse_condition(text).expect_err(text);
            assert!(error.contains(wanted), "{text:?}: {error}");
        }
    }

    #[test]
    fn nesting_is_bounded_without_overflow() {
        let deep = format!(
            "{}a{}",
            "(".repeat(MAX_NESTING - 1),
            ")".repeat(MAX_NESTING - 1)
        );
        assert_eq!(p(&deep), "a");
        let too_deep = format!("{}a{}", "(".repeat(4_000), ")".repeat(4_000));
        assert!(p(&too_deep).contains("deeper than 32"));
        let nots = format!("{}a", "not ".repeat(1_000));
        assert!(p(&nots).contains("deeper than 32"));
        assert!(p(&"a or ".repeat(5_000)).contains("longer than"));
    }

    #[test]
    fn name_patterns() {
        assert!(name_matches("filter_*", "filter_main"));
        assert!(name_matches("*", "x"));
        assert!(name_matches("sel*img", "sel_parent_img"));
        assert!(!name_matches("sel*img", "sel_parent"));
        assert!(!name_matches("a*a", "a"));
        assert!(name_matches("exact", "exact") && !name_matches("exact", "exact2"));
    }
}
