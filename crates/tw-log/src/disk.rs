//! [`DiskLog`]: the embedded log, files under one directory.
//!
//! Layout:
//! ```text
//! {dir}/{stream}/meta.json                        {"version":1,"format_version":1,"partitions":P}
//! {dir}/{stream}/{partition}/{base_offset:020}.log  segments, frames as in `frame.rs`
//! {dir}/{stream}/{partition}/{base_offset:020}.idx  summary of a sealed segment (a cache)
//! ```
//! `meta.json` is written (atomically) after the partition directories, so a stream directory
//! without it is an interrupted creation: it is ignored on open and completed by the next
//! `create_stream`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tw_core::{AppendRecord, Offset, PartitionId, Record, Retention, StreamName};

use crate::fsutil::{sync_dir, write_atomic};
use crate::partition::Partition;
use crate::segment::MAX_BODY_BYTES;
use crate::writer::{AppendRequest, Command, Writer};
use crate::{Log, LogError, frame};

/// Version of `meta.json`'s own schema.
const META_VERSION: u32 = 1;

/// Append requests that may wait for the writer before `append` callers are held back.
const QUEUE_CAPACITY: usize = 4096;

/// Prefix of a deleted stream's directory between its rename and its removal (a crash in
/// between leaves it; the next open removes it).
const DELETED_PREFIX: &str = ".deleted-";

/// Source of [`Log::incarnation`] ids, unique within the process.
static NEXT_INCARNATION: AtomicU64 = AtomicU64::new(1);

fn next_incarnation() -> u64 {
    NEXT_INCARNATION.fetch_add(1, Ordering::Relaxed)
}

/// Settings of a [`DiskLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Directory holding every stream.
    pub dir: PathBuf,
    /// A partition starts a new segment once its active one holds at least this many bytes
    /// (checked between group commits, so a segment may exceed it by one group).
    pub segment_max_bytes: u64,
    /// 0: group commit, each fsync covers everything queued while the previous one ran.
    /// Above 0: the writer also waits this long after the first request to gather more.
    pub commit_interval_ms: u64,
    /// Largest accepted record (key + payload bytes).
    pub max_record_bytes: usize,
}

impl LogConfig {
    /// The defaults: 64 MiB segments, pure group commit, [`DEFAULT_MAX_RECORD_BYTES`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            segment_max_bytes: 64 * 1024 * 1024,
            commit_interval_ms: 0,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// The default largest record (key + payload bytes): 8 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;

/// What `meta.json` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamMeta {
    version: u32,
    format_version: u32,
    partitions: u32,
}

/// The embedded durable log (see the crate documentation for its invariants).
///
/// One writer thread owns every append (group commit, see `writer.rs`); reads use positional
/// reads on shared file handles and take locks only to copy a segment list. An `append` future
/// dropped after its request was queued still appends (its answer is simply lost), like a
/// client that disconnects after sending.
pub struct DiskLog {
    config: LogConfig,
    streams: RwLock<BTreeMap<StreamName, Arc<[Arc<Partition>]>>>,
    /// The [`Log::incarnation`] of each stream in `streams`.
    incarnations: RwLock<BTreeMap<StreamName, u64>>,
    /// Serialises stream creation and deletion (directory and metadata writes).
    create: Mutex<()>,
    tx: mpsc::Sender<Command>,
    closing: Arc<AtomicBool>,
    writer: Mutex<Option<JoinHandle<()>>>,
    commits: watch::Receiver<u64>,
    /// Holds the directory's exclusive lock for the life of the log: two writers on one
    /// directory would hand out the same offsets.
    _lock: std::fs::File,
}

impl std::fmt::Debug for DiskLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskLog")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DiskLog {
    /// Opens the log under `config.dir` (created if missing), recovering every stream found
    /// there (torn tails are cut), and starts the writer thread.
    pub fn open(config: LogConfig) -> Result<Arc<DiskLog>, LogError> {
        let dir = &config.dir;
        std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let lock = lock_dir(dir)?;
        let mut streams = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
            let entry = entry.map_err(|e| LogError::io(dir, e))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(DELETED_PREFIX)
            {
                // A deletion interrupted after its rename: finish it.
                std::fs::remove_dir_all(&path).map_err(|e| LogError::io(&path, e))?;
                continue;
            }
            let meta_path = path.join("meta.json");
            if !meta_path.exists() {
                tracing::warn!(dir = %path.display(), "ignoring a stream directory without meta.json");
                continue;
            }
            let meta = read_meta(&meta_path)?;
            let name = stream_name(&entry.file_name().to_string_lossy()).ok_or_else(|| {
                LogError::BadMeta {
                    path: meta_path.clone(),
                    reason: "invalid stream name".into(),
                }
            })?;
            let partitions = open_partitions(&name, &path, meta.partitions, &[])?;
            streams.insert(name, partitions);
        }
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (commits_tx, commits) = watch::channel(0);
        let closing = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            rx,
            commit_interval: Duration::from_millis(config.commit_interval_ms),
            segment_max_bytes: config.segment_max_bytes,
            commits: commits_tx,
            closing: Arc::clone(&closing),
        };
        let handle = std::thread::Builder::new()
            .name("tw-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| LogError::io(dir, e))?;
        let incarnations = streams
            .keys()
            .map(|name| (name.clone(), next_incarnation()))
            .collect();
        Ok(Arc::new(DiskLog {
            config,
            streams: RwLock::new(streams),
            incarnations: RwLock::new(incarnations),
            create: Mutex::new(()),
            tx,
            closing,
            writer: Mutex::new(Some(handle)),
            commits,
            _lock: lock,
        }))
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Stops the writer after completing the appends already queued; later appends fail with
    /// [`LogError::Closed`]. Also done when the last `Arc` is dropped. Blocks until the writer
    /// has stopped (at most one group commit).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        // When the queue is full the writer is busy and sees `closing` after its group.
        let _ = self.tx.try_send(Command::Shutdown);
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the log writer thread panicked");
        }
    }

    fn partition(
        &self,
        stream: &StreamName,
        partition: PartitionId,
    ) -> Result<Arc<Partition>, LogError> {
        let streams = self.streams.read().unwrap_or_else(PoisonError::into_inner);
        let partitions = streams
            .get(stream)
            .ok_or_else(|| LogError::UnknownStream(stream.to_string()))?;
        partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| LogError::UnknownPartition {
                stream: stream.to_string(),
                partition,
            })
    }

    fn record_limit(&self) -> usize {
        self.config
            .max_record_bytes
            .min(MAX_BODY_BYTES - frame::BODY_FIXED)
    }
}

impl Drop for DiskLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// Takes the exclusive lock of the log directory (released when the file is closed, also
/// when the process dies).
fn lock_dir(dir: &Path) -> Result<std::fs::File, LogError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| LogError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LogError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(LogError::io(&path, e)),
    }
}

/// Reads and checks a stream's `meta.json`.
fn read_meta(path: &Path) -> Result<StreamMeta, LogError> {
    let bytes = std::fs::read(path).map_err(|e| LogError::io(path, e))?;
    let bad = |reason: String| LogError::BadMeta {
        path: path.to_path_buf(),
        reason,
    };
    let meta: StreamMeta = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if meta.version != META_VERSION {
        return Err(bad(format!("unknown metadata version {}", meta.version)));
    }
    if meta.format_version != frame::FORMAT_VERSION {
        return Err(bad(format!(
            "unknown frame format version {}",
            meta.format_version
        )));
    }
    if meta.partitions == 0 {
        return Err(bad("zero partitions".into()));
    }
    Ok(meta)
}

/// The stream a directory name stands for; internal (`_`) names are taken as given.
fn stream_name(dir_name: &str) -> Option<StreamName> {
    match dir_name.strip_prefix('_') {
        Some(rest) if !rest.is_empty() && StreamName::new(&format!("x{rest}")).is_ok() => {
            Some(StreamName::internal(dir_name))
        }
        Some(_) => None,
        None => StreamName::new(dir_name).ok(),
    }
}

/// Opens a stream's partitions; a partition created now starts at `first_offsets[id]` (0
/// beyond the slice).
fn open_partitions(
    stream: &StreamName,
    dir: &Path,
    count: u32,
    first_offsets: &[Offset],
) -> Result<Arc<[Arc<Partition>]>, LogError> {
    (0..count)
        .map(|id| {
            Ok(Arc::new(Partition::open(
                stream.clone(),
                id,
                dir.join(id.to_string()),
                first_offsets.get(id as usize).copied().unwrap_or(0),
            )?))
        })
        .collect()
}

/// What the log keeps of a deleted stream, `{dir}/.tombstone-{stream}.json`: where each of
/// its partitions ended, so that a stream created again under the name continues there and
/// an offset is never reused (consumers' offsets, lake file names and alert identities all
/// name records by stream, partition and offset).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tombstone {
    version: u32,
    next_offsets: Vec<Offset>,
}

fn tombstone_path(dir: &Path, stream: &StreamName) -> PathBuf {
    dir.join(format!(".tombstone-{stream}.json"))
}

/// The tombstone of `stream`, if it was deleted before.
fn read_tombstone(dir: &Path, stream: &StreamName) -> Result<Option<Tombstone>, LogError> {
    let path = tombstone_path(dir, stream);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(LogError::io(&path, error)),
    };
    let tombstone: Tombstone = serde_json::from_slice(&bytes).map_err(|e| LogError::BadMeta {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if tombstone.version != META_VERSION {
        return Err(LogError::BadMeta {
            path,
            reason: format!("unknown tombstone version {}", tombstone.version),
        });
    }
    Ok(Some(tombstone))
}

impl Log for DiskLog {
    fn create_stream(&self, stream: &StreamName, partitions: u32) -> Result<(), LogError> {
        let _guard = self.create.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = self.partitions(stream) {
            if existing == partitions {
                return Ok(());
            }
            return Err(LogError::PartitionCountMismatch {
                stream: stream.to_string(),
                existing,
                requested: partitions,
            });
        }
        if partitions == 0 {
            return Err(LogError::NoPartitions(stream.to_string()));
        }
        let dir = self.config.dir.join(stream.as_str());
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let first_offsets = read_tombstone(&self.config.dir, stream)?
            .map(|t| t.next_offsets)
            .unwrap_or_default();
        let opened = open_partitions(stream, &dir, partitions, &first_offsets)?;
        sync_dir(&dir)?;
        let meta = StreamMeta {
            version: META_VERSION,
            format_version: frame::FORMAT_VERSION,
            partitions,
        };
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| LogError::io(&dir, std::io::Error::other(e)))?;
        write_atomic(&dir.join("meta.json"), &json)?;
        sync_dir(&self.config.dir)?;
        self.streams
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(stream.clone(), opened);
        self.incarnations
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(stream.clone(), next_incarnation());
        Ok(())
    }

    fn delete_stream(&self, stream: &StreamName) -> Result<(), LogError> {
        let _guard = self.create.lock().unwrap_or_else(PoisonError::into_inner);
        let incarnation = self
            .incarnations
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(stream);
        let removed = self
            .streams
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(stream)
            .ok_or_else(|| LogError::UnknownStream(stream.to_string()))?;
        // From here readers get UnknownStream; appends already queued are refused by the
        // writer, which checks the mark under the lock it writes with.
        for partition in removed.iter() {
            partition.mark_deleted();
        }
        // Before the rename: once the directory is gone, its offsets must be remembered.
        let mut tombstone = read_tombstone(&self.config.dir, stream)?.unwrap_or_default();
        tombstone.version = META_VERSION;
        for (id, partition) in removed.iter().enumerate() {
            let end = partition.durable_end();
            match tombstone.next_offsets.get_mut(id) {
                Some(next) => *next = (*next).max(end),
                None => tombstone.next_offsets.push(end),
            }
        }
        let json = serde_json::to_vec(&tombstone)
            .map_err(|e| LogError::io(&self.config.dir, std::io::Error::other(e)))?;
        write_atomic(&tombstone_path(&self.config.dir, stream), &json)?;
        // The rename is the point of deletion: atomic, and it frees the name at once (a
        // stream created next gets a fresh directory).
        let dir = self.config.dir.join(stream.as_str());
        let trash = self.config.dir.join(format!(
            "{DELETED_PREFIX}{stream}-{}",
            incarnation.unwrap_or_default()
        ));
        std::fs::rename(&dir, &trash).map_err(|e| LogError::io(&dir, e))?;
        sync_dir(&self.config.dir)?;
        drop(removed);
        if let Err(error) = std::fs::remove_dir_all(&trash) {
            // Retried by the next open; the stream is deleted either way.
            tracing::warn!(%error, dir = %trash.display(), "could not remove a deleted stream's files");
        }
        Ok(())
    }

    fn incarnation(&self, stream: &StreamName) -> Option<u64> {
        self.incarnations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(stream)
            .copied()
    }

    fn partitions(&self, stream: &StreamName) -> Option<u32> {
        let streams = self.streams.read().unwrap_or_else(PoisonError::into_inner);
        streams.get(stream).map(|p| p.len() as u32)
    }

    fn streams(&self) -> Vec<(StreamName, u32)> {
        let streams = self.streams.read().unwrap_or_else(PoisonError::into_inner);
        streams
            .iter()
            .map(|(name, p)| (name.clone(), p.len() as u32))
            .collect()
    }

    fn append(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        records: Vec<AppendRecord>,
    ) -> BoxFuture<'static, Result<Range<Offset>, LogError>> {
        let partition = match self.partition(stream, partition) {
            Ok(p) => p,
            Err(e) => return futures::future::ready(Err(e)).boxed(),
        };
        if self.closing.load(Ordering::Acquire) {
            return futures::future::ready(Err(LogError::Closed)).boxed();
        }
        let limit = self.record_limit();
        if let Some(size) = records
            .iter()
            .map(|r| r.key.len() + r.payload.len())
            .find(|s| *s > limit)
        {
            return futures::future::ready(Err(LogError::RecordTooLarge { size, limit })).boxed();
        }
        if records.is_empty() {
            let end = partition.durable_end();
            return futures::future::ready(Ok(end..end)).boxed();
        }
        let tx = self.tx.clone();
        async move {
            let (done, answer) = oneshot::channel();
            let request = AppendRequest {
                partition,
                records,
                done,
            };
            tx.send(Command::Append(request))
                .await
                .map_err(|_| LogError::Closed)?;
            answer.await.map_err(|_| LogError::Closed)?
        }
        .boxed()
    }

    fn read(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        self.partition(stream, partition)?
            .read(from, max_records, max_bytes)
    }

    fn start_offset(
        &self,
        stream: &StreamName,
        partition: PartitionId,
    ) -> Result<Offset, LogError> {
        Ok(self.partition(stream, partition)?.start_offset())
    }

    fn end_offset(&self, stream: &StreamName, partition: PartitionId) -> Result<Offset, LogError> {
        Ok(self.partition(stream, partition)?.durable_end())
    }

    fn offset_for_time(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        ingest_time_ms: i64,
    ) -> Result<Offset, LogError> {
        self.partition(stream, partition)?
            .offset_for_time(ingest_time_ms)
    }

    fn apply_retention(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<usize, LogError> {
        self.partition(stream, partition)?
            .apply_retention(retention, now_ms)
    }

    fn size_bytes(&self, stream: &StreamName, partition: PartitionId) -> Result<u64, LogError> {
        Ok(self.partition(stream, partition)?.size_bytes())
    }

    fn max_record_bytes(&self) -> usize {
        self.record_limit()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.commits.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    use bytes::Bytes;

    use crate::segment::Segment;

    fn record(n: u8) -> AppendRecord {
        AppendRecord {
            ingest_time_ms: 1,
            event_time_ms: 2,
            key: Bytes::new(),
            payload: Bytes::from(vec![n; 10]),
        }
    }

    #[test]
    fn a_deleted_stream_is_gone_and_its_name_continues_its_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let block_on = futures::executor::block_on;
        let s = StreamName::new("s").unwrap();
        {
            let log = DiskLog::open(LogConfig::new(dir.path())).unwrap();
            log.create_stream(&s, 2).unwrap();
            block_on(log.append(&s, 1, vec![record(1), record(2)])).unwrap();
            let first = log.incarnation(&s).unwrap();
            log.delete_stream(&s).unwrap();
            assert!(log.partitions(&s).is_none() && log.incarnation(&s).is_none());
            assert!(matches!(
                log.read(&s, 1, 0, 10, 1 << 20),
                Err(LogError::UnknownStream(_))
            ));
            assert!(matches!(
                block_on(log.append(&s, 0, vec![record(3)])),
                Err(LogError::UnknownStream(_))
            ));
            assert!(matches!(
                log.delete_stream(&s),
                Err(LogError::UnknownStream(_))
            ));
            log.create_stream(&s, 3).unwrap();
            assert_ne!(log.incarnation(&s), Some(first));
            assert_eq!(log.end_offset(&s, 0).unwrap(), 0);
            // Empty, but where the deleted stream ended: offsets are never reused.
            assert_eq!(log.start_offset(&s, 1).unwrap(), 2);
            assert!(log.read(&s, 1, 0, 10, 1 << 20).unwrap().is_empty());
            assert_eq!(block_on(log.append(&s, 1, vec![record(4)])).unwrap(), 2..3);
            // A deletion interrupted after its rename is finished by the next open.
            std::fs::create_dir_all(dir.path().join(".deleted-x-9/0")).unwrap();
        }
        let log = DiskLog::open(LogConfig::new(dir.path())).unwrap();
        assert!(!dir.path().join(".deleted-x-9").exists());
        assert_eq!(log.streams(), vec![(s.clone(), 3)]);
        let records = log.read(&s, 1, 0, 10, 1 << 20).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].offset, &records[0].payload),
            (2, &Bytes::from(vec![4u8; 10]))
        );
        // Deleted again and created again: still no reuse.
        log.delete_stream(&s).unwrap();
        log.create_stream(&s, 2).unwrap();
        assert_eq!(log.end_offset(&s, 1).unwrap(), 3);
    }

    #[test]
    fn disk_full_fails_the_append_without_advancing_and_the_log_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let log = DiskLog::open(LogConfig::new(dir.path())).unwrap();
        let s = StreamName::new("s").unwrap();
        log.create_stream(&s, 1).unwrap();
        let block_on = futures::executor::block_on;
        assert_eq!(
            block_on(log.append(&s, 0, vec![record(1), record(2)])).unwrap(),
            0..2
        );
        // Point the active segment at /dev/full: every write fails with ENOSPC.
        let partition = log.partition(&s, 0).unwrap();
        let original = {
            let mut active = partition.active();
            let full = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/full")
                .unwrap();
            let full = Segment::new(0, PathBuf::from("/dev/full"), full, active.len, 2);
            std::mem::replace(&mut active.segment, Arc::new(full))
        };
        match block_on(log.append(&s, 0, vec![record(3)])) {
            Err(LogError::DiskFull { path }) => assert_eq!(path, PathBuf::from("/dev/full")),
            other => panic!("expected disk full, got {other:?}"),
        }
        assert_eq!(
            log.end_offset(&s, 0).unwrap(),
            2,
            "a failed append publishes nothing"
        );
        partition.active().segment = original;
        assert_eq!(
            block_on(log.append(&s, 0, vec![record(4)])).unwrap(),
            2..3,
            "no offset was burnt"
        );
        let read = log.read(&s, 0, 0, 10, usize::MAX).unwrap();
        let payloads: Vec<u8> = read.iter().map(|r| r.payload[0]).collect();
        assert_eq!(payloads, vec![1, 2, 4]);
    }
}
