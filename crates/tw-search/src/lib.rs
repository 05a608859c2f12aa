//! Full-text search over raw events: one tantivy index per stream and event-time hour (the
//! lake's time partition) under `{root}/{stream}/{YYYY-MM-DDTHH}/`, written by
//! [`SearchIndexer`] (a `tw_pipeline::Consumer` with its own offsets) and read by
//! [`SearchIndexes::search`].
//!
//! Document shape: `_event` is a JSON field holding the whole event (strings tokenised with
//! the default tokenizer, numbers and booleans typed), so `userIdentity.userName:alice` and
//! `errorCode:AccessDenied` work; `_all` holds every string value of the event and is the
//! default field for bare terms; `_time` (event time, Unix ms, indexed and fast) orders
//! results and filters `from`/`to`; `_partition`, `_offset` and `_raw` (the original JSON,
//! stored) let a hit be returned as the event it came from.
//!
//! Invariants:
//! - an hour index appears complete: it is created in a `.{hour}.tmp` directory and renamed;
//! - every commit of an hour index carries, as its payload, for each partition of the stream
//!   the next offset below which every record of that hour is in the index; replaying the
//!   log after a crash skips records below it, so each record is indexed exactly once;
//! - the indexer reports offsets as safe only after a commit round that committed every
//!   index it had written to.

mod error;
mod indexer;
mod query;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, JsonObjectOptions, STORED, Schema, TextFieldIndexing,
    TextOptions,
};
use tantivy::{Index, IndexReader, ReloadPolicy};
use tw_core::StreamName;

pub use crate::error::SearchError;
pub use crate::indexer::SearchIndexer;
pub use crate::query::{MAX_LIMIT, SearchHit, SearchRequest, SearchResult, parse_time_bound};

/// One hour in Unix milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// Settings of the search indexer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchConfig {
    /// Directory holding one sub-directory per stream.
    pub root: PathBuf,
    /// Commit (and make searchable) at least this often while there is new data.
    pub commit_interval_ms: u64,
    /// Commit early once this many documents wait uncommitted.
    pub commit_max_docs: usize,
    /// Most hour indexes with an open writer; the least recently used is committed and
    /// closed beyond this (each writer owns threads and an indexing buffer).
    pub max_open_writers: usize,
    /// Indexing buffer of each writer.
    pub writer_memory_bytes: usize,
}

impl SearchConfig {
    /// The defaults (commit every second or 50,000 documents, 4 writers of 32 MiB).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SearchConfig {
            root: root.into(),
            commit_interval_ms: 1000,
            commit_max_docs: 50_000,
            max_open_writers: 4,
            writer_memory_bytes: 32 << 20,
        }
    }
}

/// The fields of every hour index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    pub event: Field,
    pub all: Field,
    pub time: Field,
    pub partition: Field,
    pub offset: Field,
    pub raw: Field,
}

pub(crate) fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextFieldIndexing::default()
        .set_tokenizer("default")
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let event = builder.add_json_field(
        "_event",
        JsonObjectOptions::default()
            .set_indexing_options(text.clone())
            // Fast (columnar) too: `field:*` (exists) queries need it.
            .set_fast("raw")
            .set_expand_dots_enabled(),
    );
    let all = builder.add_text_field("_all", TextOptions::default().set_indexing_options(text));
    let time = builder.add_i64_field("_time", INDEXED | FAST | STORED);
    let partition = builder.add_u64_field("_partition", FAST | STORED);
    let offset = builder.add_u64_field("_offset", FAST | STORED);
    let raw = builder.add_text_field("_raw", STORED);
    (
        builder.build(),
        Fields {
            event,
            all,
            time,
            partition,
            offset,
            raw,
        },
    )
}

/// Start of the hour holding `time_ms`.
pub fn hour_of(time_ms: i64) -> i64 {
    time_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// Directory name of the hour starting at `hour_ms` (`2026-12-02T06`).
pub(crate) fn hour_dir_name(hour_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(hour_ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H")
        .to_string()
}

/// The hour a directory name stands for; `None` for anything else (tmp dirs, stray files).
pub(crate) fn parse_hour_dir(name: &str) -> Option<i64> {
    let time =
        chrono::NaiveDateTime::parse_from_str(&format!("{name}:00"), "%Y-%m-%dT%H:%M").ok()?;
    Some(time.and_utc().timestamp_millis())
}

/// An opened hour index with its reader, shared by the indexer and searches.
pub(crate) struct HourIndex {
    pub path: PathBuf,
    pub index: Index,
    pub reader: IndexReader,
}

/// The search indexes of every stream: opens hour indexes on demand and keeps them (with
/// their readers) for later searches. Cheap to clone.
#[derive(Clone)]
pub struct SearchIndexes {
    config: Arc<SearchConfig>,
    fields: Fields,
    open: Arc<Mutex<HashMap<(StreamName, i64), Arc<HourIndex>>>>,
}

impl std::fmt::Debug for SearchIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndexes")
            .field("root", &self.config.root)
            .finish_non_exhaustive()
    }
}

impl SearchIndexes {
    /// Opens (creating) the index root.
    pub fn open(config: SearchConfig) -> Result<Self, SearchError> {
        std::fs::create_dir_all(&config.root).map_err(SearchError::io(&config.root))?;
        Ok(SearchIndexes {
            config: Arc::new(config),
            fields: schema().1,
            open: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The indexer that keeps these indexes up to date (one per `SearchIndexes`).
    pub fn indexer(&self) -> SearchIndexer {
        SearchIndexer::new(self.clone())
    }

    pub(crate) fn config(&self) -> &SearchConfig {
        &self.config
    }

    pub(crate) fn fields(&self) -> Fields {
        self.fields
    }

    pub(crate) fn stream_dir(&self, stream: &StreamName) -> PathBuf {
        self.config.root.join(stream.as_str())
    }

    /// Hours that have an index for `stream`, ascending.
    pub(crate) fn hours(&self, stream: &StreamName) -> Result<Vec<i64>, SearchError> {
        let dir = self.stream_dir(stream);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(SearchError::io(&dir)(error)),
        };
        let mut hours = Vec::new();
        for entry in entries {
            let entry = entry.map_err(SearchError::io(&dir))?;
            if let Some(hour) = parse_hour_dir(&entry.file_name().to_string_lossy()) {
                hours.push(hour);
            }
        }
        hours.sort_unstable();
        Ok(hours)
    }

    /// The hour index of `stream` at `hour_ms`: cached, opened, or (when `create`) created.
    /// `None` when it does not exist and `create` is false.
    pub(crate) fn hour(
        &self,
        stream: &StreamName,
        hour_ms: i64,
        create: bool,
    ) -> Result<Option<Arc<HourIndex>>, SearchError> {
        let key = (stream.clone(), hour_ms);
        if let Some(found) = self.lock().get(&key) {
            return Ok(Some(found.clone()));
        }
        let dir = self.stream_dir(stream);
        let path = dir.join(hour_dir_name(hour_ms));
        if !path.join("meta.json").exists() {
            if !create {
                return Ok(None);
            }
            create_index(&dir, &path, hour_ms)?;
        }
        let index = Index::open_in_dir(&path).map_err(SearchError::index(&path))?;
        // Reloaded by the indexer right after each commit: no file watcher thread per index.
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(SearchError::index(&path))?;
        let opened = Arc::new(HourIndex {
            path,
            index,
            reader,
        });
        // Two threads may open the same hour at once; keep the first so both share a reader.
        Ok(Some(self.lock().entry(key).or_insert(opened).clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(StreamName, i64), Arc<HourIndex>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates an empty hour index in a tmp directory and renames it into place, so readers never
/// see a half-created index.
fn create_index(dir: &Path, path: &Path, hour_ms: i64) -> Result<(), SearchError> {
    let tmp = dir.join(format!(".{}.tmp", hour_dir_name(hour_ms)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(SearchError::io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(SearchError::io(&tmp))?;
    Index::create_in_dir(&tmp, schema().0).map_err(SearchError::index(&tmp))?;
    std::fs::rename(&tmp, path).map_err(SearchError::io(path))?;
    Ok(())
}

#[cfg(test)]
mod tests;
