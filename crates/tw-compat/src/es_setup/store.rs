//! The index templates, legacy templates and ILM policies agents PUT at startup, kept durably.
//!
//! They live in the internal log stream `_compat_es_setup` (one partition), like the dedup ids
//! of [`tw_pipeline::dedup`]: under the data dir, with the log's fsync and CRC framing, and on
//! JetStream when the log is. Each PUT that changes a definition appends one JSON record
//! (format 1: kind, name, body, version, time); each DELETE appends one record naming every
//! definition it removes (format 2), so a crash keeps all of a DELETE or none of it. Opening
//! reads the stream back in order: the last record of a name wins. No retention applies to the
//! stream (it is in no stream's registry), so a definition stays until replaced or deleted.
//!
//! Invariant: a PUT or DELETE is acknowledged only after its record is durable, and the
//! in-memory map changes in the order of the log's records (writes are serialised), so what
//! GET answers is what a restart reads back.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, OwnedMutexGuard};
use tw_core::{AppendRecord, StreamName, now_ms};
use tw_log::{Log, LogError};

use super::error::SetupError;

/// Name of the internal stream of setup definitions.
pub const SETUP_STREAM: &str = "_compat_es_setup";

/// The format of a definition record ([`StoredRecord`]); every record starts with its format,
/// and a new shape gets a new number, so an older Tidewatch refuses a store it cannot read
/// rather than misread it.
const FORMAT: u32 = 1;

/// The format of a deletion record ([`StoredDeletion`]). A Tidewatch that knows only format 1
/// refuses to open a store with deletions instead of resurrecting the deleted definitions.
const DELETION_FORMAT: u32 = 2;

/// What kind of definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A composable index template (`/_index_template/{name}`).
    IndexTemplate,
    /// A legacy template (`/_template/{name}`).
    LegacyTemplate,
    /// An ILM policy (`/_ilm/policy/{name}`).
    IlmPolicy,
}

/// One stored definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The body as the agent sent it (after validation).
    pub body: Value,
    /// 1 for the first PUT of the name, plus one per change (ILM policies report it).
    pub version: u64,
    /// When it last changed (ms since the epoch).
    pub modified_ms: i64,
}

/// One record of the stream.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRecord {
    format: u32,
    kind: Kind,
    name: String,
    body: Value,
    version: u64,
    modified_ms: i64,
}

/// One deletion record of the stream: every name one DELETE removed.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredDeletion {
    format: u32,
    kind: Kind,
    names: Vec<String>,
    deleted_ms: i64,
}

/// The part of a record every format shares.
#[derive(Deserialize)]
struct RecordFormat {
    format: u32,
}

/// What a PUT did.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    /// The name was new.
    Created,
    /// The definition changed.
    Updated,
    /// The same body was already stored: nothing was written.
    Unchanged,
}

/// The stored definitions.
pub struct SetupStore {
    log: Arc<dyn Log>,
    stream: StreamName,
    /// Held across the append of a PUT or DELETE so the map follows the log's order.
    /// Shared with the task that finishes a write (see [`finish_write`]).
    definitions: Arc<Mutex<BTreeMap<(Kind, String), Definition>>>,
}

impl SetupStore {
    /// Opens the store, reading every stored definition back. Blocking (reads the log).
    pub fn open(log: Arc<dyn Log>) -> Result<Self, SetupError> {
        let stream = StreamName::internal(SETUP_STREAM);
        log.create_stream(&stream, 1)?;
        let mut next = log.start_offset(&stream, 0)?;
        let end = log.end_offset(&stream, 0)?;
        let mut definitions = BTreeMap::new();
        while next < end {
            let records = log.read(&stream, 0, next, 1024, 4 << 20)?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for record in records {
                apply(&mut definitions, &record.payload).map_err(|reason| {
                    SetupError::Unreadable {
                        offset: record.offset,
                        reason,
                    }
                })?;
            }
        }
        tracing::debug!(
            definitions = definitions.len(),
            "loaded Elasticsearch templates and policies"
        );
        Ok(Self {
            log,
            stream,
            definitions: Arc::new(Mutex::new(definitions)),
        })
    }

    /// The definition of `name`.
    pub async fn get(&self, kind: Kind, name: &str) -> Option<Definition> {
        self.definitions
            .lock()
            .await
            .get(&(kind, name.to_string()))
            .cloned()
    }

    /// Every definition of `kind` whose name matches `pattern`: comma-separated names, each
    /// possibly with `*` wildcards (ES's name expressions), sorted by name.
    pub async fn matching(&self, kind: Kind, pattern: &str) -> Vec<(String, Definition)> {
        self.definitions
            .lock()
            .await
            .iter()
            .filter(|((k, name), _)| {
                *k == kind && pattern.split(',').any(|p| glob_matches(p.trim(), name))
            })
            .map(|((_, name), definition)| (name.clone(), definition.clone()))
            .collect()
    }

    /// Stores `body` as the definition of `name`, durably; with `only_if_absent`, an existing
    /// name is an error (ES's `create=true`).
    pub async fn put(
        &self,
        kind: Kind,
        name: &str,
        body: Value,
        only_if_absent: bool,
    ) -> Result<Put, SetupError> {
        let definitions = self.definitions.clone().lock_owned().await;
        let key = (kind, name.to_string());
        let previous = definitions.get(&key);
        if only_if_absent && previous.is_some() {
            return Err(SetupError::IllegalArgument(format!(
                "{} [{name}] already exists",
                kind_label(kind)
            )));
        }
        // Agents PUT their templates at every start: an unchanged body writes nothing.
        if previous.is_some_and(|p| p.body == body) {
            return Ok(Put::Unchanged);
        }
        let outcome = if previous.is_some() {
            Put::Updated
        } else {
            Put::Created
        };
        let stored = StoredRecord {
            format: FORMAT,
            kind,
            name: name.to_string(),
            body,
            version: previous.map_or(1, |p| p.version + 1),
            modified_ms: now_ms(),
        };
        let payload = serde_json::to_vec(&stored).map_err(SetupError::Encode)?;
        let record = AppendRecord {
            ingest_time_ms: stored.modified_ms,
            event_time_ms: stored.modified_ms,
            key: Bytes::new(),
            payload: Bytes::from(payload),
        };
        let append = self.log.append(&self.stream, 0, vec![record]);
        finish_write(definitions, append, move |definitions| {
            definitions.insert(
                key,
                Definition {
                    body: stored.body,
                    version: stored.version,
                    modified_ms: stored.modified_ms,
                },
            );
            outcome
        })
        .await
    }

    /// Removes the definitions of `kind` that `select` picks from the stored names (given
    /// sorted), durably and together: one record names them all. `select` runs under the
    /// store's lock, so what it decides from is what it deletes; its error is returned as is
    /// and writes nothing. Returns the names removed (none: nothing was written).
    pub async fn delete(
        &self,
        kind: Kind,
        select: impl FnOnce(&[&str]) -> Result<Vec<String>, SetupError>,
    ) -> Result<Vec<String>, SetupError> {
        let definitions = self.definitions.clone().lock_owned().await;
        let stored: Vec<&str> = definitions
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, name)| name.as_str())
            .collect();
        let mut names = select(&stored)?;
        names.sort();
        names.dedup();
        names.retain(|name| definitions.contains_key(&(kind, name.clone())));
        if names.is_empty() {
            return Ok(names);
        }
        let deletion = StoredDeletion {
            format: DELETION_FORMAT,
            kind,
            names,
            deleted_ms: now_ms(),
        };
        let payload = serde_json::to_vec(&deletion).map_err(SetupError::Encode)?;
        let record = AppendRecord {
            ingest_time_ms: deletion.deleted_ms,
            event_time_ms: deletion.deleted_ms,
            key: Bytes::new(),
            payload: Bytes::from(payload),
        };
        let append = self.log.append(&self.stream, 0, vec![record]);
        finish_write(definitions, append, move |definitions| {
            for name in &deletion.names {
                definitions.remove(&(kind, name.clone()));
            }
            deletion.names
        })
        .await
    }
}

/// Waits for a write's append, then applies it to the definitions (still locked), in a task
/// of its own: the log has the record as soon as the append is asked for, so the map must
/// follow it even when the request that asked is dropped (a client timing out), or GET
/// would answer other than what a restart reads back.
async fn finish_write<T: Send + 'static>(
    mut definitions: OwnedMutexGuard<BTreeMap<(Kind, String), Definition>>,
    append: impl Future<Output = Result<Range<u64>, LogError>> + Send + 'static,
    apply: impl FnOnce(&mut BTreeMap<(Kind, String), Definition>) -> T + Send + 'static,
) -> Result<T, SetupError> {
    tokio::spawn(async move {
        append.await?;
        Ok(apply(&mut definitions))
    })
    .await
    .map_err(|e| SetupError::Stopped {
        what: "storing a setup definition",
        reason: e.to_string(),
    })?
}

/// Applies one stored record to the definitions read so far.
fn apply(
    definitions: &mut BTreeMap<(Kind, String), Definition>,
    payload: &[u8],
) -> Result<(), String> {
    let format = serde_json::from_slice::<RecordFormat>(payload)
        .map_err(|e| e.to_string())?
        .format;
    match format {
        FORMAT => {
            let stored: StoredRecord =
                serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            definitions.insert(
                (stored.kind, stored.name),
                Definition {
                    body: stored.body,
                    version: stored.version,
                    modified_ms: stored.modified_ms,
                },
            );
        }
        DELETION_FORMAT => {
            let stored: StoredDeletion =
                serde_json::from_slice(payload).map_err(|e| e.to_string())?;
            for name in stored.names {
                definitions.remove(&(stored.kind, name));
            }
        }
        other => {
            return Err(format!(
                "format {other} is not {FORMAT} or {DELETION_FORMAT} (written by a newer \
                 Tidewatch?)"
            ));
        }
    }
    Ok(())
}

/// How ES names a kind in its messages.
pub fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::IndexTemplate => "index template",
        Kind::LegacyTemplate => "index_template",
        Kind::IlmPolicy => "lifecycle policy",
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub(crate) fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole name.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tw_log::{DiskLog, LogConfig};

    #[test]
    fn name_expressions_match_like_elasticsearch() {
        assert!(glob_matches("logs", "logs"));
        assert!(!glob_matches("logs", "logs-1"));
        assert!(glob_matches("logs*", "logs-1"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("*-default", "logs-generic-default"));
        assert!(glob_matches("l*g*t", "logs-generic-default-t"));
        assert!(!glob_matches("l*x*", "logs"));
        assert!(
            !glob_matches("ab*ba", "aba"),
            "prefix and suffix must not overlap"
        );
    }

    /// A request dropped while its append is in flight (a client timing out) still updates
    /// the map once the append is stored: otherwise GET would answer other than what a
    /// restart reads back from the log.
    #[tokio::test]
    async fn a_write_whose_request_is_dropped_still_finishes() {
        let definitions = Arc::new(Mutex::new(BTreeMap::new()));
        let (stored, append_done) = tokio::sync::oneshot::channel::<()>();
        let append = async move {
            append_done.await.unwrap();
            Ok::<_, LogError>(0..1)
        };
        let guard = definitions.clone().lock_owned().await;
        let key = (Kind::IlmPolicy, "p".to_string());
        let write = finish_write(guard, append, {
            let key = key.clone();
            move |definitions| {
                let definition = Definition {
                    body: json!({}),
                    version: 1,
                    modified_ms: 1,
                };
                definitions.insert(key, definition);
            }
        });
        // The request gives up before the append is stored.
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(20), write).await;
        assert!(gave_up.is_err(), "the append was still in flight");
        stored.send(()).unwrap();
        let definitions = definitions.lock().await;
        assert!(definitions.contains_key(&key), "the write finished");
    }

    #[tokio::test]
    async fn definitions_survive_a_reopen_and_unchanged_puts_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let open_log = || -> Arc<dyn Log> { DiskLog::open(LogConfig::new(dir.path())).unwrap() };
        let stream = StreamName::internal(SETUP_STREAM);
        let v1 = json!({"index_patterns": ["logs-*"]});
        let v2 = json!({"index_patterns": ["logs-*"], "priority": 5});
        {
            let log = open_log();
            let store = SetupStore::open(log.clone()).unwrap();
            let put = |body: &Value| store.put(Kind::IndexTemplate, "logs", body.clone(), false);
            assert_eq!(put(&v1).await.unwrap(), Put::Created);
            assert_eq!(put(&v1).await.unwrap(), Put::Unchanged);
            assert_eq!(
                log.end_offset(&stream, 0).unwrap(),
                1,
                "no record for a no-op"
            );
            assert_eq!(put(&v2).await.unwrap(), Put::Updated);
            let error = store
                .put(Kind::IndexTemplate, "logs", v1.clone(), true)
                .await
                .unwrap_err();
            assert!(error.to_string().contains("already exists"), "{error}");
            store
                .put(Kind::IlmPolicy, "logs", json!({"policy": {}}), false)
                .await
                .unwrap();
        }
        let store = SetupStore::open(open_log()).unwrap();
        let template = store.get(Kind::IndexTemplate, "logs").await.unwrap();
        assert_eq!((template.body, template.version), (v2, 2));
        assert_eq!(
            store.get(Kind::IlmPolicy, "logs").await.unwrap().body,
            json!({"policy": {}}),
            "kinds are separate namespaces"
        );
        assert!(store.get(Kind::LegacyTemplate, "logs").await.is_none());
        let names: Vec<String> = store
            .matching(Kind::IndexTemplate, "nope,log*")
            .await
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, ["logs"]);
    }

    #[tokio::test]
    async fn deletions_survive_a_reopen_and_remove_all_their_names_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let open_log = || -> Arc<dyn Log> { DiskLog::open(LogConfig::new(dir.path())).unwrap() };
        let stream = StreamName::internal(SETUP_STREAM);
        let body = json!({"index_patterns": ["x-*"]});
        {
            let log = open_log();
            let store = SetupStore::open(log.clone()).unwrap();
            for name in ["a", "b", "c"] {
                store
                    .put(Kind::IndexTemplate, name, body.clone(), false)
                    .await
                    .unwrap();
            }
            store
                .put(Kind::LegacyTemplate, "a", body.clone(), false)
                .await
                .unwrap();
            let written = log.end_offset(&stream, 0).unwrap();
            let refused = store
                .delete(Kind::IndexTemplate, |_| {
                    Err(SetupError::NotFound("no".into()))
                })
                .await;
            assert!(matches!(refused, Err(SetupError::NotFound(_))));
            let nothing = store.delete(Kind::IndexTemplate, |_| Ok(vec![])).await;
            assert!(nothing.unwrap().is_empty());
            assert_eq!(
                log.end_offset(&stream, 0).unwrap(),
                written,
                "a refused or empty deletion writes nothing"
            );
            let deleted = store
                .delete(Kind::IndexTemplate, |stored| {
                    assert_eq!(stored, ["a", "b", "c"], "only the kind's names, sorted");
                    Ok(vec!["c".into(), "a".into(), "a".into(), "zz".into()])
                })
                .await
                .unwrap();
            assert_eq!(
                deleted,
                ["a", "c"],
                "sorted, once each, only what was stored"
            );
            assert_eq!(
                log.end_offset(&stream, 0).unwrap(),
                written + 1,
                "one record for the whole deletion"
            );
            assert!(store.get(Kind::IndexTemplate, "a").await.is_none());
        }
        let store = SetupStore::open(open_log()).unwrap();
        let names = |found: Vec<(String, Definition)>| -> Vec<String> {
            found.into_iter().map(|(name, _)| name).collect()
        };
        assert_eq!(names(store.matching(Kind::IndexTemplate, "*").await), ["b"]);
        assert_eq!(
            names(store.matching(Kind::LegacyTemplate, "*").await),
            ["a"],
            "kinds are separate namespaces"
        );
        // A name PUT again after its deletion starts over, as in ES.
        store
            .put(
                Kind::IndexTemplate,
                "a",
                json!({"index_patterns": "y"}),
                true,
            )
            .await
            .unwrap();
        assert_eq!(
            store.get(Kind::IndexTemplate, "a").await.unwrap().version,
            1
        );
    }

    #[tokio::test]
    async fn a_record_of_an_unknown_format_is_refused_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path())).unwrap();
        let stream = StreamName::internal(SETUP_STREAM);
        log.create_stream(&stream, 1).unwrap();
        let record = AppendRecord {
            ingest_time_ms: 0,
            event_time_ms: 0,
            key: Bytes::new(),
            payload: Bytes::from_static(br#"{"format": 3, "kind": "ilm_policy"}"#),
        };
        log.append(&stream, 0, vec![record]).await.unwrap();
        let error = SetupStore::open(log).err().unwrap();
        assert!(
            matches!(&error, SetupError::Unreadable { offset: 0, reason } if reason.contains("format 3")),
            "{error}"
        );
    }
}
