//! Searching: parse the user's query once, open only the hour indexes overlapping
//! `[from, to)`, newest hour first, count every match and fetch the newest `limit`.

use std::ops::Bound;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery};
use tantivy::schema::Value as _;
use tantivy::{Order, TantivyDocument, Term};
use tw_core::StreamName;

use crate::{HOUR_MS, SearchError, SearchIndexes};

/// Most hits one search returns.
pub const MAX_LIMIT: usize = 10_000;

/// One search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    /// Lucene-like query (see the `lang` module); empty or `*` matches everything.
    pub query: String,
    /// Inclusive lower bound on event time (Unix ms).
    pub from_ms: Option<i64>,
    /// Exclusive upper bound on event time (Unix ms).
    pub to_ms: Option<i64>,
    /// Most hits to return (at most [`MAX_LIMIT`]).
    pub limit: usize,
}

/// One matching event.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// Event time, RFC 3339.
    pub time: String,
    /// Partition of the record.
    pub partition: u32,
    /// Offset of the record in its partition.
    pub offset: u64,
    /// The event as ingested.
    pub event: Value,
}

/// The answer to a search.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// How many events match in the time range (all of them, not only those returned).
    pub total: u64,
    /// The newest `limit` matches, newest first.
    pub hits: Vec<SearchHit>,
    /// How many hour indexes were opened (time pruning skips the others).
    pub indexes_searched: usize,
    /// Time spent, in milliseconds.
    pub took_ms: f64,
}

impl SearchIndexes {
    /// Runs `request` over `stream`. A stream without indexes yields no hits.
    pub fn search(
        &self,
        stream: &StreamName,
        request: &SearchRequest,
    ) -> Result<SearchResult, SearchError> {
        let started = Instant::now();
        let query = self.parse(request)?;
        let (from, to) = (
            request.from_ms.unwrap_or(i64::MIN),
            request.to_ms.unwrap_or(i64::MAX),
        );
        let limit = request.limit.min(MAX_LIMIT);
        let fields = self.fields();
        let mut total = 0u64;
        let mut hits = Vec::new();
        let mut searched = 0usize;
        // Hours hold disjoint time ranges: newest hour first, every hit of a newer hour is
        // newer than any hit of an older one.
        for hour in self.hours(stream)?.into_iter().rev() {
            if hour >= to || hour.saturating_add(HOUR_MS) <= from {
                continue;
            }
            let Some(index) = self.hour(stream, hour, false)? else {
                continue;
            };
            searched += 1;
            let searcher = index.reader.searcher();
            let wanted = limit - hits.len();
            let path = &index.path;
            let top = if wanted == 0 {
                total += searcher
                    .search(&*query, &Count)
                    .map_err(SearchError::index(path))? as u64;
                continue;
            } else {
                let collector =
                    TopDocs::with_limit(wanted).order_by_fast_field::<i64>("_time", Order::Desc);
                let (count, top) = searcher
                    .search(&*query, &(Count, collector))
                    .map_err(SearchError::index(path))?;
                total += count as u64;
                top
            };
            for (_, address) in top {
                let doc: TantivyDocument =
                    searcher.doc(address).map_err(SearchError::index(path))?;
                let missing = |field| SearchError::Corrupt {
                    path: path.clone(),
                    field,
                };
                let time = doc
                    .get_first(fields.time)
                    .and_then(|v| v.as_i64())
                    .ok_or_else(|| missing("_time"))?;
                let partition = doc
                    .get_first(fields.partition)
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| missing("_partition"))?;
                let offset = doc
                    .get_first(fields.offset)
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| missing("_offset"))?;
                let raw = doc
                    .get_first(fields.raw)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| missing("_raw"))?;
                // Ingest only accepts JSON; should a stored text not parse, return it as text
                // rather than failing the whole search.
                let event = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.into()));
                hits.push(SearchHit {
                    time: tw_core::format_rfc3339_ms(time),
                    partition: u32::try_from(partition).unwrap_or(u32::MAX),
                    offset,
                    event,
                });
            }
        }
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        metrics::histogram!("tidewatch_search_seconds").record(took_ms / 1000.0);
        Ok(SearchResult {
            total,
            hits,
            indexes_searched: searched,
            took_ms,
        })
    }

    /// The user's query (see `lang`) AND the time range.
    fn parse(&self, request: &SearchRequest) -> Result<Box<dyn Query>, SearchError> {
        let fields = self.fields();
        let user = crate::lang::compile(&request.query, fields)?;
        if request.from_ms.is_none() && request.to_ms.is_none() {
            return Ok(user);
        }
        let lower = request.from_ms.map_or(Bound::Unbounded, |t| {
            Bound::Included(Term::from_field_i64(fields.time, t))
        });
        let upper = request.to_ms.map_or(Bound::Unbounded, |t| {
            Bound::Excluded(Term::from_field_i64(fields.time, t))
        });
        Ok(Box::new(BooleanQuery::new(vec![
            (Occur::Must, user),
            (Occur::Must, Box::new(RangeQuery::new(lower, upper))),
        ])))
    }
}

/// Parses a time bound: RFC 3339, Unix milliseconds, `now`, or `now-<N><s|m|h|d>`.
pub fn parse_time_bound(text: &str, now_ms: i64) -> Result<i64, SearchError> {
    let text = text.trim();
    let bad = || SearchError::BadTime {
        value: text.to_string(),
    };
    if text == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = text.strip_prefix("now-") {
        let split = ago.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = ago.split_at(split);
        let number: i64 = number.parse().map_err(|_| bad())?;
        let unit_ms = match unit {
            "s" => 1000,
            "m" => 60_000,
            "h" => HOUR_MS,
            "d" => 24 * HOUR_MS,
            _ => return Err(bad()),
        };
        return Ok(now_ms - number.checked_mul(unit_ms).ok_or_else(bad)?);
    }
    if let Ok(millis) = text.parse::<i64>() {
        return Ok(millis);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| bad())
}
