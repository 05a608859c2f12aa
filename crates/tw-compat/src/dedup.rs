//! Durable "seen before" ids: Firehose request ids and Elasticsearch `_id`s.
//!
//! An id is remembered in the internal log stream `_compat_dedup` (one partition, so it has
//! the log's fsync, CRC framing and retention) and in memory as a 128-bit hash (SHA-256 of
//! scope and id, cut to 16 bytes) with the time it was seen. At start the stream is read back
//! from `horizon` ago, so a retry after a restart is still recognised.
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
use tw_core::{AppendRecord, Retention, StreamName, now_ms};
use tw_log::{Log, LogError};

/// Name of the internal stream of remembered ids.
pub const DEDUP_STREAM: &str = "_compat_dedup";

/// How long an id is remembered (Firehose retries for up to 2 hours; agents far less).
pub const DEFAULT_HORIZON_MS: i64 = 24 * 3600 * 1000;

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

/// The remembered ids.
pub struct DedupStore {
    log: Arc<dyn Log>,
    stream: StreamName,
    horizon_ms: i64,
    seen: Mutex<HashMap<DedupKey, Seen>>,
}

impl DedupStore {
    /// Opens the store, reading back the ids of the last `horizon_ms`. Blocking (reads the log).
    pub fn open(log: Arc<dyn Log>, horizon_ms: i64) -> Result<Arc<Self>, LogError> {
        let stream = StreamName::internal(DEDUP_STREAM);
        log.create_stream(&stream, 1)?;
        let since = now_ms() - horizon_ms;
        let mut next = log.offset_for_time(&stream, 0, since)?;
        let end = log.end_offset(&stream, 0)?;
        let mut seen = HashMap::new();
        while next < end {
            let records = log.read(&stream, 0, next, 4096, 4 << 20)?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for record in records {
                // Each record's payload is one or more 16-byte keys.
                for chunk in record.payload.chunks_exact(16) {
                    let key = u128::from_be_bytes(chunk.try_into().unwrap_or([0; 16]));
                    seen.insert(key, Seen::Done(record.ingest_time_ms));
                }
            }
        }
        tracing::info!(
            ids = seen.len(),
            "loaded remembered request and document ids"
        );
        Ok(Arc::new(Self {
            log,
            stream,
            horizon_ms,
            seen: Mutex::new(seen),
        }))
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<DedupKey, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a set of claims for one request.
    pub fn claims(self: &Arc<Self>) -> Claims {
        Claims {
            store: self.clone(),
            held: HashSet::new(),
        }
    }

    /// Forgets ids older than the horizon and lets the log drop their segments. Blocking.
    pub fn maintain(&self) -> Result<(), LogError> {
        let cutoff = now_ms() - self.horizon_ms;
        self.map()
            .retain(|_, seen| !matches!(seen, Seen::Done(at) if *at < cutoff));
        let retention = Retention {
            max_age_secs: Some((self.horizon_ms / 1000) as u64 * 2),
            max_bytes: None,
        };
        self.log
            .apply_retention(&self.stream, 0, &retention, now_ms())?;
        Ok(())
    }
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
        let mut map = self.store.map();
        match map.get(&key) {
            Some(Seen::Done(at)) if *at >= now_ms() - self.store.horizon_ms => Claim::Seen,
            Some(Seen::Pending) => Claim::InFlight,
            _ => {
                map.insert(key, Seen::Pending);
                drop(map);
                self.held.insert(key);
                Claim::New
            }
        }
    }

    /// Gives a held key back (its record was not stored).
    pub fn release(&mut self, key: DedupKey) {
        if self.held.remove(&key) {
            self.store.map().remove(&key);
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
        let mut map = self.store.map();
        for key in keys {
            map.insert(key, Seen::Done(now));
            self.held.remove(&key);
        }
        Ok(())
    }
}

impl Claims {
    /// Marks `keys` (held by this request, their data stored) as seen in memory only, for when
    /// [`Claims::confirm`] failed: retries are still recognised until a restart, and the
    /// caller can answer the truth (stored) instead of a failure that would make the client
    /// store the data again.
    pub fn keep_in_memory(&mut self, keys: &[DedupKey]) {
        let now = now_ms();
        let mut map = self.store.map();
        for key in keys {
            if self.held.remove(key) {
                map.insert(*key, Seen::Done(now));
            }
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut map = self.store.map();
        for key in self.held.drain() {
            map.remove(&key);
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
}
