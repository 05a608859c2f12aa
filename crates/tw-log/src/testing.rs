//! Fault injection for tests of the stages above the log: [`FaultyLog`] wraps a real log and
//! fails the appends and stream creations a test picks, as a full disk would, so a test can
//! check what a stage stores, answers and retries when the log refuses part of its work; and
//! [`damage_record`] flips a bit of one stored record on disk, as failing media would.
//!
//! Compiled only with the `testing` feature, which crates enable in their dev-dependencies.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use tw_core::{AppendRecord, Offset, PartitionId, Record, Retention, StreamName};

use crate::frame::{HEADER_LEN, bytes_at};
use crate::{Log, LogError};

type AppendPredicate = Arc<dyn Fn(&StreamName, PartitionId) -> bool + Send + Sync>;
type CreatePredicate = Arc<dyn Fn(&StreamName) -> bool + Send + Sync>;
type MakeError = Box<dyn Fn(String) -> LogError + Send + Sync>;

/// A [`Log`] that delegates to an inner log, except for the appends and stream creations its
/// predicates pick: those fail at once, with [`LogError::DiskFull`] (path
/// `(injected) {stream}/{partition}` for an append, `(injected) {stream}` for a creation)
/// unless [`FaultyLog::with_error`] chose another error, and reach nothing of the inner log.
///
/// The append predicate is called exactly once per append, before anything else, so a closure
/// holding a counter counts every append (failed ones too) and can act at a given one.
pub struct FaultyLog {
    inner: Arc<dyn Log>,
    failing_appends: Mutex<Option<AppendPredicate>>,
    failing_creates: Mutex<Option<CreatePredicate>>,
    error: MakeError,
}

impl FaultyLog {
    /// Wraps `inner`; nothing fails until a predicate is set.
    pub fn new(inner: Arc<dyn Log>) -> FaultyLog {
        FaultyLog {
            inner,
            failing_appends: Mutex::new(None),
            failing_creates: Mutex::new(None),
            error: Box::new(|path| LogError::DiskFull { path: path.into() }),
        }
    }

    /// Injected failures return `error(path)` instead of [`LogError::DiskFull`], with the path
    /// described on [`FaultyLog`].
    pub fn with_error(
        mut self,
        error: impl Fn(String) -> LogError + Send + Sync + 'static,
    ) -> FaultyLog {
        self.error = Box::new(error);
        self
    }

    /// From now on, an append to `(stream, partition)` fails when `fail` says so (replacing the
    /// previous append predicate).
    pub fn fail_appends_when(
        &self,
        fail: impl Fn(&StreamName, PartitionId) -> bool + Send + Sync + 'static,
    ) {
        *self.failing_appends.lock().unwrap() = Some(Arc::new(fail));
    }

    /// From now on, creating `stream` fails when `fail` says so (replacing the previous creation
    /// predicate).
    pub fn fail_creates_when(&self, fail: impl Fn(&StreamName) -> bool + Send + Sync + 'static) {
        *self.failing_creates.lock().unwrap() = Some(Arc::new(fail));
    }

    /// Everything works again: both predicates are dropped.
    pub fn heal(&self) {
        *self.failing_appends.lock().unwrap() = None;
        *self.failing_creates.lock().unwrap() = None;
    }
}

impl Log for FaultyLog {
    fn create_stream(&self, stream: &StreamName, partitions: u32) -> Result<(), LogError> {
        // Called outside the lock, so that a predicate may set predicates.
        let fail = self.failing_creates.lock().unwrap().clone();
        if fail.is_some_and(|fail| fail(stream)) {
            return Err((self.error)(format!("(injected) {stream}")));
        }
        self.inner.create_stream(stream, partitions)
    }
    fn delete_stream(&self, stream: &StreamName) -> Result<(), LogError> {
        self.inner.delete_stream(stream)
    }
    fn incarnation(&self, stream: &StreamName) -> Option<u64> {
        self.inner.incarnation(stream)
    }
    fn partitions(&self, stream: &StreamName) -> Option<u32> {
        self.inner.partitions(stream)
    }
    fn streams(&self) -> Vec<(StreamName, u32)> {
        self.inner.streams()
    }
    fn append(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        records: Vec<AppendRecord>,
    ) -> BoxFuture<'static, Result<Range<Offset>, LogError>> {
        let fail = self.failing_appends.lock().unwrap().clone();
        if fail.is_some_and(|fail| fail(stream, partition)) {
            let error = (self.error)(format!("(injected) {stream}/{partition}"));
            return futures::future::ready(Err(error)).boxed();
        }
        self.inner.append(stream, partition, records)
    }
    fn read(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        self.inner
            .read(stream, partition, from, max_records, max_bytes)
    }
    fn start_offset(
        &self,
        stream: &StreamName,
        partition: PartitionId,
    ) -> Result<Offset, LogError> {
        self.inner.start_offset(stream, partition)
    }
    fn end_offset(&self, stream: &StreamName, partition: PartitionId) -> Result<Offset, LogError> {
        self.inner.end_offset(stream, partition)
    }
    fn max_record_bytes(&self) -> usize {
        self.inner.max_record_bytes()
    }
    fn offset_for_time(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        ingest_time_ms: i64,
    ) -> Result<Offset, LogError> {
        self.inner
            .offset_for_time(stream, partition, ingest_time_ms)
    }
    fn apply_retention(
        &self,
        stream: &StreamName,
        partition: PartitionId,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<usize, LogError> {
        self.inner
            .apply_retention(stream, partition, retention, now_ms)
    }
    fn size_bytes(&self, stream: &StreamName, partition: PartitionId) -> Result<u64, LogError> {
        self.inner.size_bytes(stream, partition)
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.subscribe()
    }
}

/// Flips a bit in the payload of the record at `offset`, on disk, in the segment files of the
/// partition directory `partition_dir` (`{log}/{stream}/{partition}`), walking the frames by
/// their documented layout. Returns the damaged segment file and the frame's byte position
/// in it. Panics when no frame holds `offset` (a test's mistake).
pub fn damage_record(partition_dir: &Path, offset: Offset) -> (PathBuf, u64) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(partition_dir)
        .expect("the partition directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    for file in files {
        let mut bytes = std::fs::read(&file).expect("a segment file");
        let mut pos = 0;
        while pos + HEADER_LEN + 8 <= bytes.len() {
            let end = pos + HEADER_LEN + u32::from_le_bytes(bytes_at(&bytes, pos)) as usize;
            if u64::from_le_bytes(bytes_at(&bytes, pos + HEADER_LEN)) == offset {
                // The last byte: payload (or key), covered by the CRC.
                bytes[end - 1] ^= 1;
                std::fs::write(&file, &bytes).expect("writing the segment file");
                return (file, pos as u64);
            }
            pos = end;
        }
    }
    panic!("no frame of offset {offset} in {}", partition_dir.display());
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use futures::executor::block_on;

    use super::*;
    use crate::{DiskLog, LogConfig};

    fn record() -> Vec<AppendRecord> {
        vec![AppendRecord {
            ingest_time_ms: 1,
            event_time_ms: 1,
            key: Bytes::new(),
            payload: Bytes::from_static(b"{}"),
        }]
    }

    #[test]
    fn fails_what_the_predicates_pick_until_healed() {
        let dir = tempfile::tempdir().unwrap();
        let log = FaultyLog::new(DiskLog::open(LogConfig::new(dir.path())).unwrap());
        let (a, b) = (StreamName::new("a").unwrap(), StreamName::new("b").unwrap());
        log.create_stream(&a, 2).unwrap();
        log.fail_creates_when(|stream| stream.as_str() == "b");
        log.fail_appends_when(|stream, partition| stream.as_str() == "a" && partition == 1);

        let error = log.create_stream(&b, 1).unwrap_err();
        assert!(
            matches!(&error, LogError::DiskFull { path } if path.to_str() == Some("(injected) b")),
            "{error:?}"
        );
        assert_eq!(log.partitions(&b), None, "the inner log was not asked");
        let error = block_on(log.append(&a, 1, record())).unwrap_err();
        assert!(
            matches!(&error, LogError::DiskFull { path } if path.to_str() == Some("(injected) a/1")),
            "{error:?}"
        );
        assert_eq!(block_on(log.append(&a, 0, record())).unwrap(), 0..1);
        assert_eq!(log.end_offset(&a, 1).unwrap(), 0, "nothing stored");

        log.heal();
        log.create_stream(&b, 1).unwrap();
        assert_eq!(block_on(log.append(&a, 1, record())).unwrap(), 0..1);
        assert_eq!(log.streams(), vec![(a, 2), (b, 1)]);
    }

    #[test]
    fn a_predicate_sees_every_append_once_and_the_error_can_be_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let log =
            FaultyLog::new(DiskLog::open(LogConfig::new(dir.path())).unwrap()).with_error(|path| {
                LogError::Io {
                    path: path.into(),
                    source: std::io::Error::other("injected failure"),
                }
            });
        let s = StreamName::new("s").unwrap();
        log.create_stream(&s, 1).unwrap();
        let appends = Arc::new(AtomicUsize::new(0));
        let counter = appends.clone();
        // The disk fills after two appends.
        log.fail_appends_when(move |_, _| counter.fetch_add(1, Ordering::SeqCst) + 1 > 2);

        for _ in 0..2 {
            block_on(log.append(&s, 0, record())).unwrap();
        }
        for _ in 0..2 {
            let error = block_on(log.append(&s, 0, record())).unwrap_err();
            assert!(matches!(error, LogError::Io { .. }), "{error:?}");
        }
        assert_eq!(appends.load(Ordering::SeqCst), 4);
        assert_eq!(log.end_offset(&s, 0).unwrap(), 2);
    }
}
