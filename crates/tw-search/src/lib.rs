//! Full-text search over raw events: one tantivy index per stream and event-time hour (the
//! lake's time partition) under `{root}/{stream}/{YYYY-MM-DDTHH}/`, written by
//! [`SearchIndexer`] (a `tw_pipeline::Consumer` with its own offsets) and read by
//! [`SearchIndexes::search`].
//!
//! Document shape (layout [`LAYOUT_VERSION`]): `_event` is a JSON field holding the event's
//! indexed fields (strings tokenised with the default tokenizer, numbers and booleans typed,
//! fast for ranges and `field:*`), so `userIdentity.userName:alice` and `bytes:>1000` work;
//! `_all` holds the raw text of a record that is not JSON; a bare term means any string field
//! of `_event` (expanded per segment, see `any_field`) or `_all`; `_ip` holds, for every
//! string value that is an IP address, `path \0 address` and `\0 address` (16 bytes, IPv4
//! mapped into IPv6), so an exact IP is a term and a CIDR block a term range; `_time` (event
//! time, Unix ms, indexed and fast) orders results and filters `from`/`to`; `_partition`,
//! `_offset` and `_raw` (the original record, stored) let a hit be returned as the event it
//! came from. The query language is in `lang`.
//!
//! Invariants:
//! - an hour index appears complete: it is created in a `.{hour}.tmp` directory and renamed;
//! - every commit of an hour index carries, as its payload, for each partition of the stream
//!   the next offset below which every record of that hour is in the index; replaying the
//!   log after a crash skips records below it, so each record is indexed exactly once;
//! - the indexer reports offsets as safe only after a commit round that committed every
//!   index it had written to;
//! - every hour index under a root has the schema of [`schema`]: the root's `LAYOUT` file
//!   names the layout version, and indexes of another version are removed (and the caller
//!   replays the log into new ones) before anything opens them; an hour index whose schema
//!   differs anyway is an error, never read with the wrong field ids.

mod any_field;
mod error;
mod indexer;
mod lang;
mod on_demand;
mod query;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tantivy::schema::{
    BytesOptions, FAST, Field, INDEXED, IndexRecordOption, JsonObjectOptions, STORED, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{Index, IndexReader, IndexSettings, ReloadPolicy};
use tw_core::StreamName;

pub use crate::error::SearchError;
pub use crate::indexer::{DeletionTicket, FieldsOf, RetentionOf, SearchDeletion, SearchIndexer};
pub use crate::query::{MAX_LIMIT, SearchHit, SearchRequest, SearchResult, parse_time_bound};

/// One hour in Unix milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// Version of the index layout (the schema and what goes into each field). Bumped whenever
/// an index written by an older version could not be read correctly; see [`SearchIndexes`].
pub const LAYOUT_VERSION: u32 = 3;

/// File under the root naming the layout version of the indexes there.
const LAYOUT_FILE: &str = "LAYOUT";

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
    /// Most hour indexes kept open for searches; the least recently used beyond it are
    /// closed (those a writer holds stay open). Each holds a memory map per segment file, and
    /// a process may have at most `vm.max_map_count` maps (65,530 by default): a search over
    /// a year of hours must not keep all of them.
    pub max_open_hours: usize,
}

impl SearchConfig {
    /// The defaults (commit every second or 50,000 documents, 4 writers of 64 MiB, 256 hours
    /// open).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SearchConfig {
            root: root.into(),
            commit_interval_ms: 1000,
            commit_max_docs: 50_000,
            max_open_writers: 4,
            // 32 MiB flushed a segment every few thousand CloudTrail events, and merging
            // them cost more than indexing: 64 MiB took 28 % less CPU per event
            // (`examples/index_bench.rs`); more brought little.
            writer_memory_bytes: 64 << 20,
            max_open_hours: 256,
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
    pub ip: Field,
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
    // Indexed only: CIDR blocks are term ranges over the inverted index.
    let ip = builder.add_bytes_field("_ip", BytesOptions::default().set_indexed());
    (
        builder.build(),
        Fields {
            event,
            all,
            time,
            partition,
            offset,
            raw,
            ip,
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

/// Opened hour indexes by stream and hour, with when each was last asked for.
#[derive(Default)]
struct OpenHours {
    hours: HashMap<(StreamName, i64), (Arc<HourIndex>, u64)>,
    uses: u64,
}

impl OpenHours {
    fn get(&mut self, key: &(StreamName, i64)) -> Option<Arc<HourIndex>> {
        self.uses += 1;
        let (index, last_used) = self.hours.get_mut(key)?;
        *last_used = self.uses;
        Some(index.clone())
    }

    /// Keeps `opened` unless another thread opened the same hour first; returns the kept one.
    /// Beyond `max_open`, forgets the least recently used indexes that nothing else holds (a
    /// writer's index must stay: its commits reload that reader).
    fn insert(
        &mut self,
        key: (StreamName, i64),
        opened: Arc<HourIndex>,
        max_open: usize,
    ) -> Arc<HourIndex> {
        self.uses += 1;
        let uses = self.uses;
        let kept = self.hours.entry(key).or_insert((opened, uses)).0.clone();
        while self.hours.len() > max_open {
            let idle = (self.hours.iter())
                .filter(|(_, (index, _))| Arc::strong_count(index) == 1)
                .min_by_key(|(_, (_, last_used))| *last_used)
                .map(|(key, _)| key.clone());
            let Some(idle) = idle else { break };
            self.hours.remove(&idle);
        }
        kept
    }
}

/// The search indexes of every stream: opens hour indexes on demand and keeps them (with
/// their readers) for later searches. Cheap to clone.
#[derive(Clone)]
pub struct SearchIndexes {
    config: Arc<SearchConfig>,
    fields: Fields,
    schema: Schema,
    open: Arc<Mutex<OpenHours>>,
    /// Deletions queued for the indexer (see `indexer::delete`).
    deletions: Arc<Mutex<Vec<crate::indexer::PendingDeletion>>>,
    /// Indexes of an older layout were found at open and not yet replaced.
    stale_layout: bool,
}

impl std::fmt::Debug for SearchIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndexes")
            .field("root", &self.config.root)
            .finish_non_exhaustive()
    }
}

impl SearchIndexes {
    /// Opens (creating) the index root. When it holds indexes of an older layout,
    /// [`SearchIndexes::needs_rebuild`] is true and searches fail until
    /// [`SearchIndexes::finish_rebuild`] removed them.
    pub fn open(config: SearchConfig) -> Result<Self, SearchError> {
        let root = &config.root;
        std::fs::create_dir_all(root).map_err(SearchError::io(root))?;
        let marker = root.join(LAYOUT_FILE);
        let version = match std::fs::read_to_string(&marker) {
            Ok(text) => text.trim().parse::<u32>().ok(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(SearchError::io(&marker)(error)),
        };
        let stale_layout = version != Some(LAYOUT_VERSION) && !stream_dirs(root)?.is_empty();
        if version != Some(LAYOUT_VERSION) && !stale_layout {
            write_layout(root)?;
        }
        let (schema, fields) = schema();
        Ok(SearchIndexes {
            config: Arc::new(config),
            fields,
            schema,
            open: Arc::new(Mutex::new(OpenHours::default())),
            deletions: Arc::default(),
            stale_layout,
        })
    }

    /// The consumer name the indexer's offsets are stored under.
    pub fn indexer_name(&self) -> &'static str {
        crate::indexer::CONSUMER_NAME
    }

    /// Whether the root holds indexes of an older layout: the caller must make the indexer
    /// replay the log from its start (reset its offsets), then call
    /// [`SearchIndexes::finish_rebuild`].
    pub fn needs_rebuild(&self) -> bool {
        self.stale_layout
    }

    /// Removes the indexes of the older layout and records the current one. Called after the
    /// indexer's offsets were reset, so a crash in between only repeats the reset.
    pub fn finish_rebuild(&mut self) -> Result<(), SearchError> {
        for dir in stream_dirs(&self.config.root)? {
            std::fs::remove_dir_all(&dir).map_err(SearchError::io(&dir))?;
        }
        self.lock().hours.clear();
        write_layout(&self.config.root)?;
        self.stale_layout = false;
        Ok(())
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
        let cached = self.lock().get(&key);
        if let Some(found) = cached {
            // A search that opened the hour while retention removed it may have cached it
            // after the removal: never hand out an index whose directory is gone.
            if found.path.join("meta.json").exists() {
                return Ok(Some(found));
            }
            self.lock().hours.remove(&key);
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
        if self.stale_layout || index.schema() != self.schema {
            return Err(SearchError::OldLayout { path });
        }
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
        let max_open = self.config.max_open_hours;
        Ok(Some(self.lock().insert(key, opened, max_open)))
    }

    /// The streams that have a directory of indexes.
    pub(crate) fn streams(&self) -> Result<Vec<StreamName>, SearchError> {
        Ok(stream_dirs(&self.config.root)?
            .iter()
            .filter_map(|dir| StreamName::new(dir.file_name()?.to_str()?).ok())
            .collect())
    }

    /// Removes the hour indexes of `stream` whose hour start `expired` says; searches already
    /// running over one keep its open files until they finish. Returns how many were removed.
    pub(crate) fn remove_hours(
        &self,
        stream: &StreamName,
        expired: impl Fn(i64) -> bool,
    ) -> Result<usize, SearchError> {
        let mut removed = 0;
        for hour in self.hours(stream)? {
            if !expired(hour) {
                continue;
            }
            self.lock().hours.remove(&(stream.clone(), hour));
            let path = self.stream_dir(stream).join(hour_dir_name(hour));
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(SearchError::io(&path)(error)),
            }
        }
        Ok(removed)
    }

    /// Removes every index of a deleted stream (searches already running keep their open
    /// files until they finish). Nothing of it is searchable afterwards.
    pub fn remove_stream(&self, stream: &StreamName) -> Result<(), SearchError> {
        self.lock().hours.retain(|(s, _), _| s != stream);
        let dir = self.stream_dir(stream);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(SearchError::io(&dir)(error)),
        }
    }

    pub(crate) fn deletions(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<crate::indexer::PendingDeletion>> {
        self.deletions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenHours> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The stream directories under the root (anything else is the layout file or stray).
fn stream_dirs(root: &Path) -> Result<Vec<PathBuf>, SearchError> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(root).map_err(SearchError::io(root))? {
        let entry = entry.map_err(SearchError::io(root))?;
        if entry
            .file_type()
            .map_err(SearchError::io(entry.path()))?
            .is_dir()
        {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

fn write_layout(root: &Path) -> Result<(), SearchError> {
    let marker = root.join(LAYOUT_FILE);
    let tmp = root.join(".LAYOUT.tmp");
    std::fs::write(&tmp, format!("{LAYOUT_VERSION}\n")).map_err(SearchError::io(&tmp))?;
    std::fs::rename(&tmp, &marker).map_err(SearchError::io(&marker))
}

/// Creates an empty hour index in a tmp directory and renames it into place, so readers never
/// see a half-created index.
fn create_index(dir: &Path, path: &Path, hour_ms: i64) -> Result<(), SearchError> {
    let tmp = dir.join(format!(".{}.tmp", hour_dir_name(hour_ms)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(SearchError::io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(SearchError::io(&tmp))?;
    // The document store (each event's text) is the largest part of an index; zstd makes it
    // a third smaller than lz4 did (BENCHMARKS.md, session 18). Indexes made by earlier
    // versions keep lz4, which stays readable.
    let settings = IndexSettings {
        docstore_compression: Compressor::Zstd(ZstdCompressor::default()),
        ..IndexSettings::default()
    };
    Index::builder()
        .schema(schema().0)
        .settings(settings)
        .create_in_dir(&tmp)
        .map_err(SearchError::index(&tmp))?;
    std::fs::rename(&tmp, path).map_err(SearchError::io(path))?;
    Ok(())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_delete;
#[cfg(test)]
mod tests_lang;
