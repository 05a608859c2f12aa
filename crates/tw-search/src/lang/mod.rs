//! The query language: tantivy's Lucene-like grammar (`tantivy::query_grammar`) compiled into
//! tantivy queries over this crate's document layout (see the crate documentation), with
//! event-field semantics tantivy's own `QueryParser` lacks on JSON fields: `NOT` / `-` (a
//! purely negative clause means "everything except"), wildcards and regexes on field words,
//! numeric, text and IP ranges, IP addresses and CIDR blocks.
//!
//! Operators, loosest first: a space (AND), `OR`, `AND`: `x a OR b` is `x AND (a OR b)`,
//! `a AND b OR c` is `(a AND b) OR c`; a grouping that tantivy's tree leaves unclear is
//! refused (see `or_groups`).
//!
//! Meaning of each leaf, with `f` an event field (dotted path; `_event.f` is the same):
//! - `word`, `"a phrase"`: the words (default tokenizer: split at non-alphanumerics,
//!   lowercased) of any string field (a phrase within one field), or of the raw text of a
//!   record that is not JSON (`_all`); also any field holding that IP / in that CIDR;
//! - `f:value`: the words of `f`, or the number / boolean `f` holds, or the IP address;
//! - `f:Get*`, `f:*boto*`, `f:?dmin`: `*` / `?` within one word (lowercased); `f:aws-cli*`:
//!   the words before the last, then a word starting with the last (a phrase prefix);
//! - `f:/regex/`: a word of `f` (lowercased) matching the whole regex;
//! - `f:[a TO b]`, `{a TO b}`, `f:>=a`, `*` for open: numbers when both bounds are numbers,
//!   IP addresses when both are addresses, else the whole (case-sensitive) text value;
//! - `f:10.0.0.0/8`, `f:"2001:db8::/32"`: an IP address of `f` in the block;
//! - `f:*`: `f` exists; `_time:…`: event time, Unix ms or RFC 3339.

use std::net::{IpAddr, Ipv6Addr};
use std::ops::Bound;

use tantivy::Term;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, ExistsQuery, InvertedIndexRangeQuery, Occur,
    PhrasePrefixQuery, PhraseQuery, Query, RangeQuery, RegexQuery, TermQuery,
};
use tantivy::query_grammar::{
    Delimiter, UserInputAst, UserInputBound, UserInputLeaf, UserInputLiteral,
};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::{TextAnalyzer, TokenStream, TokenizerManager};

use crate::any_field::{AnyStringPath, path_word};
use crate::indexer::{ip_key, parse_ip};
use crate::{Fields, SearchError};

mod or_groups;
mod values;

use or_groups::or_groups;
use values::{parse_cidr, parse_time};

/// Longest accepted query, in bytes.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Deepest accepted nesting: parentheses plus `NOT`s (each is a level of the recursive
/// parser, which must not run out of stack on hostile input).
pub const MAX_DEPTH: usize = 48;

/// Most words a wildcard or regex may expand to per hour index (tantivy's default is 50 for
/// phrase prefixes).
const MAX_EXPANSIONS: u32 = 1000;

type Boxed = Box<dyn Query>;

fn bad(message: impl Into<String>) -> SearchError {
    SearchError::BadQuery(message.into())
}

/// Compiles the user's query text (empty or `*`: everything).
pub(crate) fn compile(text: &str, fields: Fields) -> Result<Boxed, SearchError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Box::new(AllQuery));
    }
    if text.len() > MAX_QUERY_BYTES {
        return Err(bad(format!(
            "query is {} bytes long, more than the {MAX_QUERY_BYTES} allowed",
            text.len()
        )));
    }
    let depth = nesting(text);
    if depth > MAX_DEPTH {
        return Err(bad(format!(
            "query nests {depth} levels of parentheses and NOT, more than the {MAX_DEPTH} allowed"
        )));
    }
    let ast = tantivy::query_grammar::parse_query(text).map_err(|_| syntax_error(text))?;
    let compiler = Compiler {
        fields,
        analyzer: TokenizerManager::default()
            .get("default")
            .expect("tantivy registers the default tokenizer"),
    };
    compiler.ast(ast)
}

/// Why the grammar refused `text`, from its error-recovering parse.
fn syntax_error(text: &str) -> SearchError {
    let (_, errors) = tantivy::query_grammar::parse_query_lenient(text);
    match errors.first() {
        Some(error) => bad(format!(
            "syntax error at character {}: {}",
            error.pos, error.message
        )),
        None => bad("syntax error (check quotes, parentheses, brackets and `field:` names)"),
    }
}

/// Parentheses depth plus `NOT` count, outside quotes: a bound on the parser's recursion.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest, mut nots) = (0usize, 0usize, 0usize);
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '(' if !quoted => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    for word in text.split_whitespace() {
        if word.trim_start_matches(['(', '-', '+']) == "NOT" {
            nots += 1;
        }
    }
    deepest + nots
}

/// What a field name in the query stands for.
enum Target {
    /// `_all`: every string field (bare terms).
    All,
    /// `_time`: event time.
    Time,
    /// An event field (dotted path).
    Event(String),
}

fn target(field: Option<&str>) -> Result<Target, SearchError> {
    let Some(name) = field else {
        return Ok(Target::All);
    };
    Ok(match name {
        "_all" => Target::All,
        "_time" => Target::Time,
        "_event" | "_raw" | "_partition" | "_offset" | "_ip" => {
            return Err(bad(format!(
                "{name} is not searchable (an event field of that name is `_event.{name}`)"
            )));
        }
        _ => {
            let path = name.strip_prefix("_event.").unwrap_or(name);
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(bad(format!("{name:?} is not a dotted field path")));
            }
            Target::Event(path.to_string())
        }
    })
}

struct Compiler {
    fields: Fields,
    analyzer: TextAnalyzer,
}

impl Compiler {
    fn ast(&self, ast: UserInputAst) -> Result<Boxed, SearchError> {
        match ast {
            UserInputAst::Clause(clauses) => {
                if clauses.is_empty() {
                    return Ok(Box::new(AllQuery));
                }
                let mut compiled = Vec::with_capacity(clauses.len() + 1);
                for (occur, clause) in or_groups(clauses)? {
                    compiled.push((occur, self.ast(clause)?));
                }
                // A clause of exclusions only means "everything except": tantivy would match
                // nothing.
                if compiled.iter().all(|(occur, _)| *occur == Occur::MustNot) {
                    compiled.push((Occur::Must, Box::new(AllQuery)));
                }
                Ok(Box::new(BooleanQuery::new(compiled)))
            }
            // Hits are ordered by time, not score: a boost changes nothing.
            UserInputAst::Boost(inner, _) => self.ast(*inner),
            UserInputAst::Leaf(leaf) => self.leaf(*leaf),
        }
    }

    fn leaf(&self, leaf: UserInputLeaf) -> Result<Boxed, SearchError> {
        match leaf {
            UserInputLeaf::All => Ok(Box::new(AllQuery)),
            UserInputLeaf::Exists { field } => match target(Some(&field))? {
                Target::All | Target::Time => Ok(Box::new(AllQuery)),
                Target::Event(path) => {
                    Ok(Box::new(ExistsQuery::new(format!("_event.{path}"), true)))
                }
            },
            UserInputLeaf::Literal(literal) => self.literal(literal),
            UserInputLeaf::Set { field, elements } => {
                let mut any = Vec::with_capacity(elements.len());
                for element in elements {
                    let literal = UserInputLiteral {
                        field_name: field.clone(),
                        phrase: element,
                        delimiter: Delimiter::DoubleQuotes,
                        slop: 0,
                        prefix: false,
                    };
                    any.push((Occur::Should, self.literal(literal)?));
                }
                Ok(Box::new(BooleanQuery::new(any)))
            }
            UserInputLeaf::Range {
                field,
                lower,
                upper,
            } => self.range(target(field.as_deref())?, lower, upper),
            UserInputLeaf::Regex { field, pattern } => {
                let path = match target(field.as_deref())? {
                    Target::Time => return Err(bad("_time takes no regex")),
                    Target::All => None,
                    Target::Event(path) => Some(path),
                };
                self.word_regex(path.as_deref(), &format!("(?:{pattern})"))
                    .map_err(|e| bad(format!("invalid regex /{pattern}/: {e}")))
            }
        }
    }

    fn literal(&self, literal: UserInputLiteral) -> Result<Boxed, SearchError> {
        let target = target(literal.field_name.as_deref())?;
        let text = literal.phrase.as_str();
        if let Target::Time = target {
            let time = parse_time(text)?;
            return Ok(Box::new(TermQuery::new(
                Term::from_field_i64(self.fields.time, time),
                IndexRecordOption::Basic,
            )));
        }
        let path = match &target {
            Target::Event(path) => Some(path.as_str()),
            _ => None,
        };
        if literal.delimiter == Delimiter::None && text.contains(['*', '?']) {
            return self.wildcard(path, text);
        }
        let mut any: Vec<(Occur, Boxed)> = Vec::new();
        let words = self.words(text);
        if let Some(query) = self.text_query(path, &words, literal.slop, literal.prefix)? {
            any.push((Occur::Should, query));
        }
        if let Some(path) = path {
            let json = Term::from_field_json_path(self.fields.event, path, true);
            let typed = if text.parse::<f64>().is_ok() || text.parse::<bool>().is_ok() {
                tantivy::json_utils::convert_to_fast_value_and_append_to_json_term(
                    &json, text, false,
                )
            } else {
                None
            };
            if let Some(term) = typed {
                any.push((
                    Occur::Should,
                    Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                ));
            }
        }
        if let Some(ip) = parse_ip(text) {
            let key = ip_key(path.unwrap_or(""), ip);
            let term = Term::from_field_bytes(self.fields.ip, &key);
            any.push((
                Occur::Should,
                Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
            ));
        } else if let Some((low, high)) = parse_cidr(text)? {
            any.push((Occur::Should, self.ip_range(path.unwrap_or(""), low, high)));
        }
        Ok(match any.len() {
            0 => Box::new(EmptyQuery),
            1 => any.pop().expect("one clause").1,
            _ => Box::new(BooleanQuery::new(any)),
        })
    }

    /// The words of `text` as the default tokenizer makes them at indexing.
    fn words(&self, text: &str) -> Vec<String> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut words = Vec::new();
        while stream.advance() {
            words.push(stream.token().text.clone());
        }
        words
    }

    /// One word, a phrase, or a phrase whose last word is a prefix, in one event field or
    /// (`path` `None`) in any.
    fn text_query(
        &self,
        path: Option<&str>,
        words: &[String],
        slop: u32,
        prefix: bool,
    ) -> Result<Option<Boxed>, SearchError> {
        if let [word] = words
            && prefix
        {
            return self
                .word_regex(path, &format!("{}.*", escape(word)))
                .map(Some)
                .map_err(too_large);
        }
        if words.is_empty() {
            return Ok(None);
        }
        let event = self.fields.event;
        Ok(Some(match path {
            Some(path) => {
                let path = Term::from_field_json_path(event, path, true);
                words_query(words.iter().map(|w| path_word(&path, w)), slop, prefix)
            }
            None => {
                let all = self.fields.all;
                let words = words.to_vec();
                let in_raw = words_query(
                    words.iter().map(|w| Term::from_field_text(all, w)),
                    slop,
                    prefix,
                );
                // With a prefix, the last word is not a term itself.
                let whole = if prefix { words.len() - 1 } else { words.len() };
                let required = words[..whole].to_vec();
                let in_fields = AnyStringPath::new(event, required, move |path| {
                    words_query(words.iter().map(|w| path_word(path, w)), slop, prefix)
                });
                any_of(vec![in_raw, Box::new(in_fields)])
            }
        }))
    }

    /// A regex over the words of one event field, or (`path` `None`) of any field and of the
    /// raw text of records that are not JSON.
    fn word_regex(&self, path: Option<&str>, regex: &str) -> tantivy::Result<Boxed> {
        let Some(path) = path else {
            // Any path: everything up to the end of path, then the string type code.
            let in_fields = format!(r"[^\x{{0}}]*\x{{0}}s{regex}");
            return Ok(any_of(vec![
                Box::new(RegexQuery::from_pattern(regex, self.fields.all)?),
                Box::new(RegexQuery::from_pattern(&in_fields, self.fields.event)?),
            ]));
        };
        let prefix = path_regex(&Term::from_field_json_path(self.fields.event, path, true));
        let query = RegexQuery::from_pattern(&format!("{prefix}{regex}"), self.fields.event)?;
        Ok(Box::new(query))
    }

    /// `Get*`, `*boto*`, `?dmin` within one word; `aws-cli*` as a phrase prefix.
    fn wildcard(&self, path: Option<&str>, text: &str) -> Result<Boxed, SearchError> {
        let lower = text.to_lowercase();
        let pieces: Vec<&str> = lower
            .split(|c: char| !(c.is_alphanumeric() || c == '*' || c == '?'))
            .filter(|p| !p.is_empty())
            .collect();
        let spans = || {
            bad(format!(
                "wildcard {text:?} spans several words: `*` and `?` match within one word \
                 (letters and digits); only a trailing `*` may follow other words"
            ))
        };
        match pieces.as_slice() {
            [] => Err(spans()),
            [one] if one.chars().all(|c| c == '*') => Ok(match path {
                None => Box::new(AllQuery),
                Some(path) => Box::new(ExistsQuery::new(format!("_event.{path}"), true)),
            }),
            [one] => {
                let regex: String = one
                    .chars()
                    .map(|c| match c {
                        '*' => ".*".to_string(),
                        '?' => ".".to_string(),
                        c => escape(&c.to_string()),
                    })
                    .collect();
                self.word_regex(path, &regex).map_err(too_large)
            }
            [head @ .., last] => {
                let stem = last.strip_suffix('*').unwrap_or("");
                let plain = |p: &str| !p.contains(['*', '?']);
                if stem.is_empty() || !plain(stem) || !head.iter().all(|p| plain(p)) {
                    return Err(spans());
                }
                let words: Vec<String> = head
                    .iter()
                    .chain(std::iter::once(&stem))
                    .map(|w| w.to_string())
                    .collect();
                Ok(self
                    .text_query(path, &words, 0, true)?
                    .unwrap_or_else(|| Box::new(EmptyQuery)))
            }
        }
    }

    fn range(
        &self,
        target: Target,
        lower: UserInputBound,
        upper: UserInputBound,
    ) -> Result<Boxed, SearchError> {
        let bound_text = |bound: &UserInputBound| match bound {
            UserInputBound::Inclusive(t) | UserInputBound::Exclusive(t) if t != "*" => {
                Some(t.clone())
            }
            _ => None,
        };
        let (low_text, high_text) = (bound_text(&lower), bound_text(&upper));
        let map = |bound: &UserInputBound, make: &dyn Fn(&str) -> Result<Term, SearchError>| {
            Ok::<_, SearchError>(match bound {
                UserInputBound::Inclusive(t) if t != "*" => Bound::Included(make(t)?),
                UserInputBound::Exclusive(t) if t != "*" => Bound::Excluded(make(t)?),
                _ => Bound::Unbounded,
            })
        };
        let path = match target {
            Target::All => return Err(bad("a range needs a field: `field:[a TO b]`")),
            Target::Time => {
                let time = |t: &str| -> Result<Term, SearchError> {
                    Ok(Term::from_field_i64(self.fields.time, parse_time(t)?))
                };
                return Ok(Box::new(RangeQuery::new(
                    map(&lower, &time)?,
                    map(&upper, &time)?,
                )));
            }
            Target::Event(path) => path,
        };
        let present: Vec<&str> = [&low_text, &high_text]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if present.is_empty() {
            return Ok(Box::new(ExistsQuery::new(format!("_event.{path}"), true)));
        }
        let json = || Term::from_field_json_path(self.fields.event, &path, true);
        if present.iter().all(|t| t.parse::<i64>().is_ok()) {
            let make = |t: &str| -> Result<Term, SearchError> {
                let mut term = json();
                term.append_type_and_fast_value(t.parse::<i64>().unwrap_or_default());
                Ok(term)
            };
            return Ok(Box::new(RangeQuery::new(
                map(&lower, &make)?,
                map(&upper, &make)?,
            )));
        }
        if present
            .iter()
            .all(|t| t.parse::<f64>().is_ok_and(f64::is_finite))
        {
            let make = |t: &str| -> Result<Term, SearchError> {
                let mut term = json();
                term.append_type_and_fast_value(t.parse::<f64>().unwrap_or_default());
                Ok(term)
            };
            return Ok(Box::new(RangeQuery::new(
                map(&lower, &make)?,
                map(&upper, &make)?,
            )));
        }
        if present.iter().all(|t| parse_ip(t).is_some()) {
            let ip_bound = |bound: &UserInputBound, open: [u8; 16]| {
                let key = |t: &str| {
                    let ip = parse_ip(t).expect("checked above");
                    Term::from_field_bytes(self.fields.ip, &ip_key(&path, ip))
                };
                match bound {
                    UserInputBound::Inclusive(t) if t != "*" => Bound::Included(key(t)),
                    UserInputBound::Exclusive(t) if t != "*" => Bound::Excluded(key(t)),
                    _ => Bound::Included(key_of(self.fields, &path, open)),
                }
            };
            return Ok(Box::new(InvertedIndexRangeQuery::new(
                ip_bound(&lower, [0; 16]),
                ip_bound(&upper, [0xff; 16]),
            )));
        }
        if present
            .iter()
            .any(|t| t.parse::<f64>().is_ok() || parse_ip(t).is_some())
        {
            return Err(bad(format!(
                "range on {path}: bounds must both be numbers, both IP addresses or both text"
            )));
        }
        let make = |t: &str| -> Result<Term, SearchError> {
            let mut term = json();
            term.append_type_and_str(t);
            Ok(term)
        };
        Ok(Box::new(RangeQuery::new(
            map(&lower, &make)?,
            map(&upper, &make)?,
        )))
    }

    /// Addresses of `path` (any field when empty) from `low` to `high`, inclusive.
    fn ip_range(&self, path: &str, low: Ipv6Addr, high: Ipv6Addr) -> Boxed {
        Box::new(InvertedIndexRangeQuery::new(
            Bound::Included(key_of(self.fields, path, low.octets())),
            Bound::Included(key_of(self.fields, path, high.octets())),
        ))
    }
}

fn key_of(fields: Fields, path: &str, octets: [u8; 16]) -> Term {
    Term::from_field_bytes(fields.ip, &ip_key(path, IpAddr::V6(Ipv6Addr::from(octets))))
}

/// The regex prefix of the words of an event field in `_event`'s term dictionary, from the
/// field's term prefix: the path (segments joined by 0x01), 0x00, then the string type code.
fn path_regex(path: &Term) -> String {
    let bytes = path.serialized_value_bytes();
    let path = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    format!(r"{}\x{{0}}s", escape(&String::from_utf8_lossy(path)))
}

/// One word, a phrase of `terms`, or a phrase whose last word is a prefix.
fn words_query(terms: impl Iterator<Item = Term>, slop: u32, prefix: bool) -> Boxed {
    let mut terms: Vec<Term> = terms.collect();
    if terms.len() == 1 {
        let term = terms.pop().expect("one term");
        return Box::new(TermQuery::new(term, IndexRecordOption::Basic));
    }
    if prefix {
        let mut query = PhrasePrefixQuery::new(terms);
        query.set_max_expansions(MAX_EXPANSIONS);
        Box::new(query)
    } else {
        let mut query = PhraseQuery::new(terms);
        query.set_slop(slop);
        Box::new(query)
    }
}

/// Matches what any of `queries` matches.
fn any_of(queries: Vec<Boxed>) -> Boxed {
    Box::new(BooleanQuery::new(
        queries.into_iter().map(|q| (Occur::Should, q)).collect(),
    ))
}

/// A wildcard or prefix whose automaton is too large to build.
fn too_large(error: tantivy::TantivyError) -> SearchError {
    bad(format!("wildcard expands to too large a pattern: {error}"))
}

/// `text` as a regex matching exactly it.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            out.push(c);
        } else {
            out.push_str(&format!(r"\x{{{:x}}}", c as u32));
        }
    }
    out
}
