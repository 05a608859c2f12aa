//! The durable alert store: an append-only NDJSON file, a bounded in-memory window of the newest
//! alerts, and the full set of dedup keys.
//!
//! File format (`{dir}/alerts.ndjson`): the first line is a header
//! `{"format":"tidewatch-alerts","version":1}`, every following line is one alert as JSON.
//! Appends end with `\n` and are fsynced before `insert` returns.
//!
//! Recovery at open: a last line without its terminating `\n` is a write torn by a crash (its
//! `insert` never returned, so nobody was told about it); it is cut with a warning. A complete
//! line that does not decode is corruption: `open` fails with [`AlertError::Corrupt`] naming the
//! line, rather than skipping it and silently forgetting its dedup key (which would page again
//! on replay).
//!
//! Memory: the newest `max_in_memory` alerts (by `created_at_ms`) are kept for `list`/`get`, as
//! their JSON lines (decoded on read); older ones stay in the file only. Every dedup key ever stored is kept (exact strings, no
//! hashing, no expiry), so dedup never forgets: memory grows with the number of distinct alerts
//! (about key length + 50 bytes each). The file is never compacted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tw_core::{Alert, Severity};

use crate::AlertError;

/// Name of the store file inside the store directory.
pub const ALERTS_FILE: &str = "alerts.ndjson";
/// Format version written in the header line.
pub const STORE_VERSION: u64 = 1;
const FORMAT_NAME: &str = "tidewatch-alerts";
/// Default number of alerts kept in memory.
pub const DEFAULT_MAX_IN_MEMORY: usize = 100_000;
/// Alerts buffered per slow subscriber before it starts lagging.
const SUBSCRIBER_CAPACITY: usize = 1_024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u64,
}

/// Tuning of an [`AlertStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Newest alerts kept in memory for `list` and `get` (at least 1 is kept).
    pub max_in_memory: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_in_memory: DEFAULT_MAX_IN_MEMORY,
        }
    }
}

/// Which alerts [`AlertStore::list`] returns. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Only alerts with `created_at_ms >= since_ms`.
    pub since_ms: Option<i64>,
    /// Only alerts of this rule.
    pub rule_id: Option<String>,
    /// Only alerts at least this severe.
    pub min_severity: Option<Severity>,
    /// Only alerts from this stream.
    pub stream: Option<String>,
    /// At most this many alerts; `0` means no limit.
    pub limit: usize,
}

impl AlertFilter {
    fn matches(&self, alert: &Stored) -> bool {
        self.since_ms
            .is_none_or(|since| alert.created_at_ms >= since)
            && self
                .rule_id
                .as_ref()
                .is_none_or(|rule| *alert.rule_id == **rule)
            && self.min_severity.is_none_or(|min| alert.severity >= min)
            && self
                .stream
                .as_ref()
                .is_none_or(|stream| *alert.stream == **stream)
    }
}

/// An alert of the in-memory window: the fields [`AlertFilter`] reads, and the alert as its
/// JSON line. Why not the [`Alert`] itself: its events are `serde_json::Value` trees, several
/// times the size of their text, and the window holds up to 100,000 alerts; `list` and `get`
/// decode only the few they return.
struct Stored {
    id: Box<str>,
    rule_id: Box<str>,
    stream: Box<str>,
    severity: Severity,
    created_at_ms: i64,
    json: Box<[u8]>,
}

impl Stored {
    fn new(alert: &Alert, json: &[u8]) -> Self {
        Stored {
            id: alert.id.as_str().into(),
            rule_id: alert.rule_id.as_str().into(),
            stream: alert.stream.as_str().into(),
            severity: alert.severity,
            created_at_ms: alert.created_at_ms,
            json: json.into(),
        }
    }

    /// The alert back from its line; `None` (logged) cannot happen for a line this process
    /// encoded or loaded, but a decode error must not take the API down.
    fn decode(&self) -> Option<Alert> {
        serde_json::from_slice(&self.json)
            .inspect_err(
                |error| tracing::error!(id = %self.id, %error, "alert in memory does not decode"),
            )
            .ok()
    }
}

/// Durable, deduplicating alert store. Cheap to clone (shared state).
///
/// `insert` does blocking file I/O (write + fsync): call it from `spawn_blocking` or a
/// dedicated thread when on an async runtime.
#[derive(Clone)]
pub struct AlertStore {
    inner: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    state: Mutex<State>,
    subscribers: broadcast::Sender<Alert>,
}

struct State {
    file: File,
    /// Length of the file's valid content; a failed append is truncated back to it.
    file_len: u64,
    dedup_keys: HashSet<String>,
    /// In-memory window, ordered by (created_at_ms, insertion sequence).
    newest: BTreeMap<(i64, u64), Stored>,
    by_id: HashMap<String, (i64, u64)>,
    next_seq: u64,
    total: usize,
    max_in_memory: usize,
}

impl std::fmt::Debug for AlertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl AlertStore {
    /// Opens (or creates) the store in `dir` with default options.
    pub fn open(dir: &Path) -> Result<AlertStore, AlertError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir`, loading it into memory and recovering a torn tail.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<AlertStore, AlertError> {
        std::fs::create_dir_all(dir).map_err(|e| AlertError::io(dir, e))?;
        let path = dir.join(ALERTS_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| AlertError::io(&path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| AlertError::io(&path, e))?;

        let mut state = State {
            file,
            file_len: 0,
            dedup_keys: HashSet::new(),
            newest: BTreeMap::new(),
            by_id: HashMap::new(),
            next_seq: 0,
            total: 0,
            max_in_memory: options.max_in_memory.max(1),
        };
        let complete_len = bytes
            .iter()
            .rposition(|byte| *byte == b'\n')
            .map_or(0, |last| last + 1);
        if complete_len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                cut_bytes = bytes.len() - complete_len,
                "alert store ends with a torn line (crash during a write); cutting it"
            );
        }
        let saw_header = load_lines(&path, &bytes[..complete_len], &mut state)?;

        state.file_len = complete_len as u64;
        if complete_len < bytes.len() {
            state
                .file
                .set_len(state.file_len)
                .map_err(|e| AlertError::io(&path, e))?;
            state
                .file
                .sync_all()
                .map_err(|e| AlertError::io(&path, e))?;
        }
        if !saw_header {
            let mut header = serde_json::to_vec(&Header {
                format: FORMAT_NAME.to_owned(),
                version: STORE_VERSION,
            })
            .map_err(|source| AlertError::Encode {
                id: "header".to_owned(),
                source,
            })?;
            header.push(b'\n');
            state.append(&path, &header)?;
        }
        sync_dir(dir)?;

        let (subscribers, _) = broadcast::channel(SUBSCRIBER_CAPACITY);
        Ok(AlertStore {
            inner: Arc::new(Shared {
                path,
                state: Mutex::new(state),
                subscribers,
            }),
        })
    }

    /// Stores the alerts whose `dedup_key` is not stored yet (nor repeated earlier in the same
    /// batch), fsyncs, then announces them to subscribers. Returns the newly stored alerts, in
    /// input order. On error nothing of this batch is stored.
    pub fn insert(&self, mut alerts: Vec<Alert>) -> Result<Vec<Alert>, AlertError> {
        self.insert_pending(&mut alerts)
    }

    /// [`insert`](Self::insert) for a caller that keeps the alerts to retry them: on success
    /// `pending` is emptied (its alerts moved, not copied, into the answer), on error it is
    /// left as it was.
    pub fn insert_pending(&self, pending: &mut Vec<Alert>) -> Result<Vec<Alert>, AlertError> {
        self.insert_numbered(pending).map(|(_, fresh)| fresh)
    }

    /// [`insert_pending`](Self::insert_pending), also answering the ordinal of the first
    /// newly stored alert (the others follow it): what the dispatcher's delivery mark counts.
    pub fn insert_numbered(
        &self,
        pending: &mut Vec<Alert>,
    ) -> Result<(u64, Vec<Alert>), AlertError> {
        let mut state = self.lock();
        let first = state.total as u64;
        let mut is_fresh = vec![false; pending.len()];
        let mut bytes = Vec::new();
        let mut line_ends = Vec::new();
        {
            let mut batch_keys = HashSet::new();
            for (alert, fresh) in pending.iter().zip(&mut is_fresh) {
                if state.dedup_keys.contains(&alert.dedup_key)
                    || !batch_keys.insert(alert.dedup_key.as_str())
                {
                    continue;
                }
                *fresh = true;
                serde_json::to_writer(&mut bytes, alert).map_err(|source| AlertError::Encode {
                    id: alert.id.clone(),
                    source,
                })?;
                line_ends.push(bytes.len());
                bytes.push(b'\n');
            }
        }
        if line_ends.is_empty() {
            pending.clear();
            return Ok((first, Vec::new()));
        }
        state.append(&self.inner.path, &bytes)?;
        let fresh: Vec<Alert> = pending
            .drain(..)
            .zip(is_fresh)
            .filter_map(|(alert, fresh)| fresh.then_some(alert))
            .collect();
        let announce = self.inner.subscribers.receiver_count() > 0;
        let mut line_start = 0;
        for (alert, line_end) in fresh.iter().zip(line_ends) {
            state.remember(alert, &bytes[line_start..line_end]);
            line_start = line_end + 1;
            if announce {
                // A subscriber leaving meanwhile is not an error: SSE clients come and go.
                let _ = self.inner.subscribers.send(alert.clone());
            }
        }
        Ok((first, fresh))
    }

    /// The stored alerts from ordinal `from` on (0-based, in the order they were stored),
    /// each with its ordinal, read back from the file: what a restart sends again to sinks
    /// that had not confirmed them. Blocking I/O.
    pub fn read_from(&self, from: u64) -> Result<Vec<(u64, Alert)>, AlertError> {
        let state = self.lock();
        if from >= state.total as u64 {
            return Ok(Vec::new());
        }
        let path = &self.inner.path;
        let mut bytes = std::fs::read(path).map_err(|e| AlertError::io(path, e))?;
        bytes.truncate(state.file_len as usize);
        let mut alerts = Vec::new();
        // The header is the first line; blank lines carry nothing (as `load_lines` reads it).
        let lines = bytes.split(|byte| *byte == b'\n').skip(1);
        let mut ordinal = 0u64;
        for (index, line) in lines.filter(|line| !line.is_empty()).enumerate() {
            ordinal = index as u64;
            if ordinal < from {
                continue;
            }
            let alert = serde_json::from_slice(line).map_err(|e| AlertError::Corrupt {
                path: path.clone(),
                line: index + 2,
                reason: format!("invalid alert: {e}"),
            })?;
            alerts.push((ordinal, alert));
        }
        debug_assert!(alerts.is_empty() || ordinal + 1 == state.total as u64);
        Ok(alerts)
    }

    /// Alerts in memory matching `filter`, newest `created_at_ms` first.
    pub fn list(&self, filter: &AlertFilter) -> Vec<Alert> {
        let state = self.lock();
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        state
            .newest
            .values()
            .rev()
            .filter(|alert| filter.matches(alert))
            .take(limit)
            .filter_map(Stored::decode)
            .collect()
    }

    /// The alert with this id, if it is in the in-memory window.
    pub fn get(&self, id: &str) -> Option<Alert> {
        let state = self.lock();
        state
            .by_id
            .get(id)
            .and_then(|key| state.newest.get(key))
            .and_then(Stored::decode)
    }

    /// Whether an alert with this dedup key has ever been stored.
    pub fn contains_dedup_key(&self, dedup_key: &str) -> bool {
        self.lock().dedup_keys.contains(dedup_key)
    }

    /// Number of alerts stored (in the file, including those no longer in memory).
    pub fn len(&self) -> usize {
        self.lock().total
    }

    /// Whether no alert is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Alerts stored from now on (not the ones already stored). A receiver that falls more than
    /// 1024 alerts behind gets `RecvError::Lagged` and continues with newer ones.
    pub fn subscribe(&self) -> broadcast::Receiver<Alert> {
        self.inner.subscribers.subscribe()
    }

    /// Path of the store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated: `append` either
        // completes or rolls the file back before memory is touched.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// Counts `alert` (whose JSON line is `json`), keeps its dedup key and puts it in the
    /// in-memory window, evicting the oldest beyond the window's size.
    fn remember(&mut self, alert: &Alert, json: &[u8]) {
        self.total += 1;
        self.dedup_keys.insert(alert.dedup_key.clone());
        let key = (alert.created_at_ms, self.next_seq);
        self.next_seq += 1;
        self.by_id.insert(alert.id.clone(), key);
        self.newest.insert(key, Stored::new(alert, json));
        while self.newest.len() > self.max_in_memory {
            if let Some((evicted_key, evicted)) = self.newest.pop_first() {
                // Only forget the id if it still points at the evicted entry (ids are derived
                // from dedup keys, so they only repeat on a hash collision).
                if self.by_id.get(&*evicted.id) == Some(&evicted_key) {
                    self.by_id.remove(&*evicted.id);
                }
            }
        }
    }

    /// Appends `bytes` at the end of the valid content and fsyncs; on failure the file is cut
    /// back so a later append does not follow a partial line.
    fn append(&mut self, path: &Path, bytes: &[u8]) -> Result<(), AlertError> {
        let result = (|| {
            self.file.seek(SeekFrom::Start(self.file_len))?;
            self.file.write_all(bytes)?;
            self.file.sync_data()
        })();
        match result {
            Ok(()) => {
                self.file_len += bytes.len() as u64;
                Ok(())
            }
            Err(error) => {
                if let Err(cut) = self.file.set_len(self.file_len) {
                    tracing::error!(path = %path.display(), error = %cut, "could not cut a failed alert append");
                }
                Err(AlertError::io(path, error))
            }
        }
    }
}

/// Replays the complete lines of the store file (header first) into `state`. Returns whether a
/// header was found (an empty file has none yet).
fn load_lines(path: &Path, complete_bytes: &[u8], state: &mut State) -> Result<bool, AlertError> {
    let mut saw_header = false;
    // Without its final newline, `split` yields exactly the complete lines (none if empty).
    let complete = complete_bytes.strip_suffix(b"\n").unwrap_or_default();
    let lines = if complete_bytes.is_empty() {
        None
    } else {
        Some(complete.split(|byte| *byte == b'\n'))
    };
    for (index, line) in lines.into_iter().flatten().enumerate() {
        // A blank line carries nothing.
        if saw_header && line.is_empty() {
            continue;
        }
        let corrupt = |reason: String| AlertError::Corrupt {
            path: path.to_path_buf(),
            line: index + 1,
            reason,
        };
        if !saw_header {
            let header: Header = serde_json::from_slice(line)
                .map_err(|e| corrupt(format!("invalid header: {e}")))?;
            if header.format != FORMAT_NAME {
                return Err(corrupt(format!(
                    "header names format {:?}, expected {FORMAT_NAME:?}",
                    header.format
                )));
            }
            if header.version != STORE_VERSION {
                return Err(AlertError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    version: header.version,
                    supported: STORE_VERSION,
                });
            }
            saw_header = true;
            continue;
        }
        let alert: Alert =
            serde_json::from_slice(line).map_err(|e| corrupt(format!("invalid alert: {e}")))?;
        state.remember(&alert, line);
    }

    Ok(saw_header)
}

/// Makes the creation of the store file durable (its directory entry).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), AlertError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| AlertError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
