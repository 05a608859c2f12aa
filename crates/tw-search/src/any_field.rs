//! Queries over every event field at once: what a bare word means. Events are indexed once,
//! field by field, in the JSON field `_event`; rather than a second copy of every string in a
//! catch-all field (which cost 30 % of the indexing CPU, BENCHMARKS.md), a bare word is
//! expanded per segment into one query per field path that holds strings, and every whole
//! word of the query, in that segment.
//! Segments are immutable, so the paths of a segment are read once from its term dictionary
//! and kept (see [`PathCache`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use tantivy::index::SegmentId;
use tantivy::query::{
    BooleanQuery, EmptyScorer, EnableScoring, Explanation, Occur, Query, Scorer, Weight,
};
use tantivy::schema::{Field, Type};
use tantivy::{DocId, Score, SegmentReader, TantivyError, Term};

/// Builds the query of one field path, given the `_event` term prefix of that path (the
/// field, the path's segments joined by 0x01, then 0x00; a word is appended after the
/// string type code).
pub(crate) type PerPath = dyn Fn(&Term) -> Box<dyn Query> + Send + Sync;

/// Matches a document when the query `per_path` builds for any string-valued path of the
/// JSON field matches it. Paths that lack one of the `required` words in this segment are
/// skipped without building their query: a word or phrase can only match in a path holding
/// every word, and most paths hold none (a lookup is cheaper than a term query's weight).
#[derive(Clone)]
pub(crate) struct AnyStringPath {
    field: Field,
    required: Arc<[String]>,
    per_path: Arc<PerPath>,
}

impl AnyStringPath {
    pub(crate) fn new(
        field: Field,
        required: Vec<String>,
        per_path: impl Fn(&Term) -> Box<dyn Query> + Send + Sync + 'static,
    ) -> Self {
        AnyStringPath {
            field,
            required: required.into(),
            per_path: Arc::new(per_path),
        }
    }

    /// The union, over the string paths of this segment holding every required word, of the
    /// per-path queries, as a weight for this segment only; `None` when no path qualifies.
    fn segment_weight(&self, reader: &SegmentReader) -> tantivy::Result<Option<Box<dyn Weight>>> {
        let inverted = reader.inverted_index(self.field)?;
        let dictionary = inverted.terms();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        'paths: for path in cached_string_paths(reader, self.field)?.iter() {
            for word in self.required.iter() {
                let term = path_word(path, word);
                if dictionary
                    .term_ord(term.serialized_value_bytes())?
                    .is_none()
                {
                    continue 'paths;
                }
            }
            clauses.push((Occur::Should, (self.per_path)(path)));
        }
        if clauses.is_empty() {
            return Ok(None);
        }
        let scoring = EnableScoring::disabled_from_schema(reader.schema());
        BooleanQuery::new(clauses).weight(scoring).map(Some)
    }
}

/// A word of one event field: its term prefix (see [`PerPath`]), the string type code, then
/// the word.
pub(crate) fn path_word(path: &Term, word: &str) -> Term {
    let mut term = path.clone();
    term.append_type_and_str(word);
    term
}

impl fmt::Debug for AnyStringPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyStringPath")
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}

impl Query for AnyStringPath {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for AnyStringPath {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        match self.segment_weight(reader)? {
            Some(weight) => weight.scorer(reader, boost),
            None => Ok(Box::new(EmptyScorer)),
        }
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        match self.segment_weight(reader)? {
            Some(weight) => weight.explain(reader, doc),
            None => Err(TantivyError::InvalidArgument(format!(
                "document {doc} does not match: no string field of its segment holds every word"
            ))),
        }
    }
}

/// The string paths of each segment seen, by segment id (a UUID, never reused) and field.
/// Reading them walks the term dictionary path by path, which cost ~140 µs per segment and
/// made a bare word over 261 segments take 36 ms instead of 2 (BENCHMARKS.md); segments are
/// immutable, so the answer never goes stale. Segments merged away leave their entries
/// behind: the cache is emptied when it holds [`PATH_CACHE_SEGMENTS`] of them (a few KB
/// each).
type PathCache = Mutex<HashMap<(SegmentId, Field), Arc<[Term]>>>;

/// How many segments' paths [`PathCache`] holds at most.
const PATH_CACHE_SEGMENTS: usize = 4096;

/// [`string_paths`], read once per segment.
fn cached_string_paths(reader: &SegmentReader, field: Field) -> tantivy::Result<Arc<[Term]>> {
    static CACHE: OnceLock<PathCache> = OnceLock::new();
    let cache = CACHE.get_or_init(PathCache::default);
    let key = (reader.segment_id(), field);
    let lock = || {
        cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    if let Some(paths) = lock().get(&key) {
        return Ok(Arc::clone(paths));
    }
    let paths: Arc<[Term]> = string_paths(reader, field)?.into();
    let mut cache = lock();
    if cache.len() >= PATH_CACHE_SEGMENTS {
        cache.clear();
    }
    cache.insert(key, Arc::clone(&paths));
    Ok(paths)
}

/// The term prefix of every path of `field` (a JSON field) that holds strings in this
/// segment. The term dictionary is sorted by path, then type code, then value, so this skips
/// from one (path, type) to the next with a seek each instead of reading every term.
fn string_paths(reader: &SegmentReader, field: Field) -> tantivy::Result<Vec<Term>> {
    let inverted = reader.inverted_index(field)?;
    let dictionary = inverted.terms();
    let string = Type::Str.to_code();
    let mut paths = Vec::new();
    let mut from: Vec<u8> = Vec::new();
    loop {
        let mut stream = dictionary.range().ge(&from).into_stream()?;
        if !stream.advance() {
            return Ok(paths);
        }
        let key = stream.key();
        // A key is `path 0x00 type value`; one without the end of path is not a JSON term
        // (cannot happen in an index of this layout): step past it.
        let Some(end) = key.iter().position(|&b| b == 0) else {
            from = key.to_vec();
            from.push(0);
            continue;
        };
        let path = &key[..=end];
        match key.get(end + 1) {
            Some(&code) if code < string => {
                from = path.to_vec();
                from.push(string);
            }
            Some(&code) => {
                if code == string {
                    let mut term = Term::from_field_json_path(field, "", true);
                    term.truncate_value_bytes(0);
                    term.append_bytes(path);
                    paths.push(term);
                }
                // Past every key of this path: deeper paths (`path 0x01 …`) sort after it.
                from = key[..end].to_vec();
                from.push(1);
            }
            None => {
                from = path.to_vec();
                from.push(0);
            }
        }
    }
}
