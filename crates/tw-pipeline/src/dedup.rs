//! Durable "seen before" ids: Firehose request ids, Elasticsearch `_id`s and the native API's
//! `Idempotency-Key`s (which keep a note: the answer to repeat).
//!
//! An id is remembered in the internal log stream `_compat_dedup` (one partition, so it has
//! the log's fsync, CRC framing and retention; the name predates the native API's keys and is
//! kept so that ids remembered by an older version are still found) and in memory as a 128-bit
//! hash (SHA-256 of scope and id, cut to 16 bytes) with the time it was seen. At start the
//! stream is read back from `horizon` ago, so a retry after a restart is still recognised.
//!
//! Records: bare ids have an empty record key and a payload of 16-byte keys, many per record;
//! an id with a note has the record key [`NOTE_RECORD`] and a payload of its 16-byte key then
//! the note. A note stays in the log (memory holds its offset) and is read back when asked for,
//! so remembering answers costs no memory per request beyond the key. Records with another
//! record key (a later format) are skipped, never misread.
//!
//! Order of writes: the data first, then the id. A crash between the two makes a retry store
//! the data again (at-least-once, the same promise as a retried 503) but never answers
//! "already stored" for data that was not. While a request holds an id, another request with
//! the same id is told to retry later; a claim that is dropped before it is confirmed (the
//! request failed or the client went away) is released. The same id twice in one request is
//! not "seen": only the caller knows whether the first was stored.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ring::digest;
use tw_core::{AppendRecord, Offset, Retention, StreamName, now_ms};
use tw_log::{Log, LogError};

/// Name of the internal stream of remembered ids.
pub const DEDUP_STREAM: &str = "_compat_dedup";

/// How long an id is remembered (Firehose retries for up to 2 hours; agents far less).
pub const DEFAULT_HORIZON_MS: i64 = 24 * 3600 * 1000;

/// The record key of a record holding one id and its note (version 1 of that format).
pub const NOTE_RECORD: &[u8] = b"note/1";

/// The 128-bit key of an id within a scope (`firehose/{stream}`, `es/{stream}`).
pub type DedupKey = u128;

/// The key of `id` in `scope`.
pub fn dedup_key(scope: &str, id: &str) -> DedupKey {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(scope.as_bytes());
    context.update(&[0]);
    context.update(id.as_bytes());
    let hash = context.finish();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_ref()[..16]);
    u128::from_be_bytes(bytes)
}

#[derive(Debug, Clone, Copy)]
enum Seen {
    /// Durably recorded at this time.
    Done(i64),
    /// Held by a request in flight.
    Pending,
}

/// Where the note of a key is.
#[derive(Debug, Clone)]
enum NoteAt {
    /// In the record at this offset of the dedup stream.
    Log(Offset),
    /// Only here: writing it to the log failed (kept until a restart).
    Memory(Bytes),
}

/// What a claim found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not seen: the caller now holds it (in its [`Claims`]).
    New,
    /// Stored before.
    Seen,
    /// This request already holds it (the same id twice in one request): whether it is a
    /// duplicate depends on what became of the first, which only the caller knows.
    Held,
    /// Another request holds it right now.
    InFlight,
}

/// The ids in memory: every key, and where the notes of those that have one are.
#[derive(Default)]
struct Remembered {
    seen: HashMap<DedupKey, Seen>,
    notes: HashMap<DedupKey, NoteAt>,
}

/// The remembered ids.
pub struct DedupStore {
    log: Arc<dyn Log>,
    stream: StreamName,
    horizon_ms: i64,
    remembered: Mutex<Remembered>,
}

impl DedupStore {
    /// Opens the store, reading back the ids of the last `horizon_ms`. Blocking (reads the log).
    pub fn open(log: Arc<dyn Log>, horizon_ms: i64) -> Result<Arc<Self>, LogError> {
        let stream = StreamName::internal(DEDUP_STREAM);
        log.create_stream(&stream, 1)?;
        let since = now_ms() - horizon_ms;
        let mut next = log.offset_for_time(&stream, 0, since)?;
        let end = log.end_offset(&stream, 0)?;
        let mut remembered = Remembered::default();
        let mut unknown = 0usize;
        while next < end {
            let records = log.read(&stream, 0, next, 4096, 4 << 20)?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for record in records {
                let done = Seen::Done(record.ingest_time_ms);
                if record.key.is_empty() {
                    for chunk in record.payload.chunks_exact(16) {
                        remembered.seen.insert(key_of(chunk), done);
                    }
                } else if record.key == NOTE_RECORD && record.payload.len() >= 16 {
                    let key = key_of(&record.payload[..16]);
                    remembered.seen.insert(key, done);
                    // A later note of the same key replaces the earlier one.
                    remembered.notes.insert(key, NoteAt::Log(record.offset));
                } else {
                    unknown += 1;
                }
            }
        }
        if unknown > 0 {
            tracing::warn!(
                records = unknown,
                "skipped remembered-id records of an unknown format (written by a newer version?)"
            );
        }
        tracing::info!(
            ids = remembered.seen.len(),
            notes = remembered.notes.len(),
            "loaded remembered request and document ids"
        );
        Ok(Arc::new(Self {
            log,
            stream,
            horizon_ms,
            remembered: Mutex::new(remembered),
        }))
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.remembered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a set of claims for one request.
    pub fn claims(self: &Arc<Self>) -> Claims {
        Claims {
            store: self.clone(),
            held: HashSet::new(),
        }
    }

    /// The note last recorded with `key` (by [`Claims::confirm_noted`]) while the key is
    /// remembered; `None` when it has none. Reads the log on a blocking thread.
    pub async fn note(self: &Arc<Self>, key: DedupKey) -> Result<Option<Bytes>, LogError> {
        let offset = {
            let remembered = self.remembered();
            if !matches!(remembered.seen.get(&key), Some(Seen::Done(_))) {
                return Ok(None);
            }
            match remembered.notes.get(&key) {
                None => return Ok(None),
                Some(NoteAt::Memory(note)) => return Ok(Some(note.clone())),
                Some(NoteAt::Log(offset)) => *offset,
            }
        };
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_note(key, offset))
            .await
            .map_err(|e| LogError::Io {
                path: DEDUP_STREAM.into(),
                source: std::io::Error::other(format!("reading a note failed: {e}")),
            })?
    }

    /// The note of `key` in the record at `offset`, if that record is still there.
    fn read_note(&self, key: DedupKey, offset: Offset) -> Result<Option<Bytes>, LogError> {
        let records = self.log.read(&self.stream, 0, offset, 1, usize::MAX)?;
        Ok(records
            .into_iter()
            .next()
            .filter(|r| {
                r.offset == offset
                    && r.key == NOTE_RECORD
                    && r.payload.len() >= 16
                    && key_of(&r.payload[..16]) == key
            })
            .map(|r| r.payload.slice(16..)))
    }

    /// Forgets ids older than the horizon and lets the log drop their segments. Blocking.
    pub fn maintain(&self) -> Result<(), LogError> {
        let cutoff = now_ms() - self.horizon_ms;
        {
            let mut remembered = self.remembered();
            remembered
                .seen
                .retain(|_, seen| !matches!(seen, Seen::Done(at) if *at < cutoff));
            let Remembered { seen, notes } = &mut *remembered;
            notes.retain(|key, _| seen.contains_key(key));
        }
        let retention = Retention {
            max_age_secs: Some((self.horizon_ms / 1000) as u64 * 2),
            max_bytes: None,
        };
        self.log
            .apply_retention(&self.stream, 0, &retention, now_ms())?;
        Ok(())
    }

    /// Forgets expired ids every ten minutes (runs until aborted).
    pub async fn run_maintenance(self: Arc<Self>) {
        let mut interval = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            interval.tick().await;
            let store = self.clone();
            if let Ok(Err(error)) = tokio::task::spawn_blocking(move || store.maintain()).await {
                tracing::warn!(%error, "expiring remembered ids failed");
            }
        }
    }
}

fn key_of(bytes: &[u8]) -> DedupKey {
    u128::from_be_bytes(bytes.try_into().unwrap_or([0; 16]))
}

/// The ids one request holds; unconfirmed ones are released when this is dropped.
pub struct Claims {
    store: Arc<DedupStore>,
    held: HashSet<DedupKey>,
}

impl Claims {
    /// Claims `key` for this request.
    pub fn claim(&mut self, key: DedupKey) -> Claim {
        if self.held.contains(&key) {
            return Claim::Held;
        }
        let mut remembered = self.store.remembered();
        match remembered.seen.get(&key) {
            Some(Seen::Done(at)) if *at >= now_ms() - self.store.horizon_ms => Claim::Seen,
            Some(Seen::Pending) => Claim::InFlight,
            _ => {
                remembered.seen.insert(key, Seen::Pending);
                drop(remembered);
                self.held.insert(key);
                Claim::New
            }
        }
    }

    /// Gives a held key back (its record was not stored).
    pub fn release(&mut self, key: DedupKey) {
        if self.held.remove(&key) {
            self.store.remembered().seen.remove(&key);
        }
    }

    /// Durably records `keys` (held by this request, their data stored) as seen.
    pub async fn confirm(&mut self, keys: &[DedupKey]) -> Result<(), LogError> {
        let keys: Vec<DedupKey> = keys
            .iter()
            .copied()
            .filter(|k| self.held.contains(k))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        // Many keys per record keep a 500-document bulk request to one small frame.
        let records = keys
            .chunks(4096)
            .map(|chunk| AppendRecord {
                ingest_time_ms: now,
                event_time_ms: now,
                key: Bytes::new(),
                payload: Bytes::from(
                    chunk
                        .iter()
                        .flat_map(|k| k.to_be_bytes())
                        .collect::<Vec<u8>>(),
                ),
            })
            .collect();
        self.store
            .log
            .append(&self.store.stream, 0, records)
            .await?;
        let mut remembered = self.store.remembered();
        for key in keys {
            remembered.seen.insert(key, Seen::Done(now));
            self.held.remove(&key);
        }
        Ok(())
    }

    /// Durably records `key` as seen with `note` (replacing an earlier note of the key). The
    /// key is held by this request, or reachable only through a key it holds (the marker of a
    /// request that failed part-way, written by the request holding the request's key).
    pub async fn confirm_noted(&mut self, key: DedupKey, note: Bytes) -> Result<(), LogError> {
        let now = now_ms();
        let mut payload = Vec::with_capacity(16 + note.len());
        payload.extend_from_slice(&key.to_be_bytes());
        payload.extend_from_slice(&note);
        let record = AppendRecord {
            ingest_time_ms: now,
            event_time_ms: now,
            key: Bytes::from_static(NOTE_RECORD),
            payload: Bytes::from(payload),
        };
        let written = self
            .store
            .log
            .append(&self.store.stream, 0, vec![record])
            .await?;
        let mut remembered = self.store.remembered();
        remembered.seen.insert(key, Seen::Done(now));
        remembered.notes.insert(key, NoteAt::Log(written.start));
        self.held.remove(&key);
        Ok(())
    }

    /// Marks `keys` (held by this request, their data stored) as seen in memory only, for when
    /// [`Claims::confirm`] failed: retries are still recognised until a restart, and the
    /// caller can answer the truth (stored) instead of a failure that would make the client
    /// store the data again.
    pub fn keep_in_memory(&mut self, keys: &[DedupKey]) {
        let now = now_ms();
        let mut remembered = self.store.remembered();
        for key in keys {
            if self.held.remove(key) {
                remembered.seen.insert(*key, Seen::Done(now));
            }
        }
    }

    /// [`Claims::keep_in_memory`] for [`Claims::confirm_noted`]: `key` and its note are kept
    /// in memory only (until a restart).
    pub fn keep_noted_in_memory(&mut self, key: DedupKey, note: Bytes) {
        let mut remembered = self.store.remembered();
        remembered.seen.insert(key, Seen::Done(now_ms()));
        remembered.notes.insert(key, NoteAt::Memory(note));
        self.held.remove(&key);
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut remembered = self.store.remembered();
        for key in self.held.drain() {
            remembered.seen.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tw_log::{DiskLog, LogConfig};

    #[tokio::test]
    async fn ids_survive_a_restart_and_unconfirmed_claims_are_released() {
        let dir = tempfile::tempdir().unwrap();
        let open_log = || -> Arc<dyn Log> { DiskLog::open(LogConfig::new(dir.path())).unwrap() };
        let key = dedup_key("firehose/s", "req-1");
        assert_ne!(key, dedup_key("firehose/t", "req-1"), "scopes differ");
        {
            let log = open_log();
            let store = DedupStore::open(log.clone(), DEFAULT_HORIZON_MS).unwrap();
            let mut first = store.claims();
            assert_eq!(first.claim(key), Claim::New);
            assert_eq!(
                first.claim(key),
                Claim::Held,
                "same id twice in one request"
            );
            let mut second = store.claims();
            assert_eq!(second.claim(key), Claim::InFlight);
            drop(first);
            assert_eq!(second.claim(key), Claim::New, "a dropped claim is released");
            second.confirm(&[key]).await.unwrap();
            assert_eq!(store.claims().claim(key), Claim::Seen);
            let other = dedup_key("es/s", "doc-9");
            let mut third = store.claims();
            assert_eq!(third.claim(other), Claim::New);
            third.release(other);
            assert_eq!(store.claims().claim(other), Claim::New);
        }
        let store = DedupStore::open(open_log(), DEFAULT_HORIZON_MS).unwrap();
        assert_eq!(
            store.claims().claim(key),
            Claim::Seen,
            "remembered after reopen"
        );
        store.maintain().unwrap();
        assert_eq!(store.claims().claim(key), Claim::Seen);
    }

    #[tokio::test]
    async fn ids_kept_in_memory_are_seen_until_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path())).unwrap();
        let store = DedupStore::open(log.clone(), DEFAULT_HORIZON_MS).unwrap();
        let (kept, released) = (dedup_key("es/s", "a"), dedup_key("es/s", "b"));
        let mut claims = store.claims();
        assert_eq!(claims.claim(kept), Claim::New);
        assert_eq!(claims.claim(released), Claim::New);
        claims.keep_in_memory(&[kept]);
        drop(claims);
        assert_eq!(store.claims().claim(kept), Claim::Seen);
        assert_eq!(
            store.claims().claim(released),
            Claim::New,
            "not kept: released"
        );
        drop(store);
        drop(log);
        let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path())).unwrap();
        let store = DedupStore::open(log, DEFAULT_HORIZON_MS).unwrap();
        assert_eq!(store.claims().claim(kept), Claim::New, "memory only");
    }
    #[tokio::test]
    async fn notes_are_read_back_after_a_restart_and_a_later_note_replaces_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let open_log = || -> Arc<dyn Log> { DiskLog::open(LogConfig::new(dir.path())).unwrap() };
        let (request, marker) = (
            dedup_key("ingest/s", "k1"),
            dedup_key("ingest-partial/s", "k1"),
        );
        {
            let log = open_log();
            let store = DedupStore::open(log.clone(), DEFAULT_HORIZON_MS).unwrap();
            assert_eq!(store.note(marker).await.unwrap(), None);
            let mut claims = store.claims();
            assert_eq!(claims.claim(request), Claim::New);
            assert_eq!(
                store.note(request).await.unwrap(),
                None,
                "pending: no note yet"
            );
            claims
                .confirm_noted(marker, Bytes::from_static(b"first"))
                .await
                .unwrap();
            claims
                .confirm_noted(marker, Bytes::from_static(b"second"))
                .await
                .unwrap();
            // Bare keys and noted keys share the stream.
            claims.confirm(&[request]).await.unwrap();
            assert_eq!(
                store.note(marker).await.unwrap().as_deref(),
                Some(&b"second"[..])
            );
            assert_eq!(
                store.note(request).await.unwrap(),
                None,
                "confirmed without a note"
            );
            let memory = dedup_key("ingest/s", "k2");
            let mut other = store.claims();
            assert_eq!(other.claim(memory), Claim::New);
            other.keep_noted_in_memory(memory, Bytes::from_static(b"kept"));
            assert_eq!(store.claims().claim(memory), Claim::Seen);
            assert_eq!(
                store.note(memory).await.unwrap().as_deref(),
                Some(&b"kept"[..])
            );
        }
        let store = DedupStore::open(open_log(), DEFAULT_HORIZON_MS).unwrap();
        assert_eq!(store.claims().claim(marker), Claim::Seen);
        assert_eq!(
            store.note(marker).await.unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(store.claims().claim(request), Claim::Seen);
        assert_eq!(
            store.note(dedup_key("ingest/s", "k2")).await.unwrap(),
            None,
            "memory only"
        );
        store.maintain().unwrap();
        assert_eq!(
            store.note(marker).await.unwrap().as_deref(),
            Some(&b"second"[..])
        );
    }

    #[tokio::test]
    async fn expired_notes_are_forgotten_with_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path())).unwrap();
        let store = DedupStore::open(log, 50).unwrap();
        let key = dedup_key("ingest/s", "old");
        let mut claims = store.claims();
        assert_eq!(claims.claim(key), Claim::New);
        claims
            .confirm_noted(key, Bytes::from_static(b"note"))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        store.maintain().unwrap();
        assert_eq!(store.note(key).await.unwrap(), None);
        assert_eq!(store.claims().claim(key), Claim::New, "past the horizon");
        assert!(store.remembered().notes.is_empty());
    }
}
