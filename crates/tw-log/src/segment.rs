//! One segment file of a partition: `{base_offset:020}.log`, its sparse index and its recovery.
//!
//! Sealing: a partition only creates a new segment after every byte of the previous one was
//! fsynced (rolls happen between group commits, never inside one), so every segment but the
//! last is complete and immutable ("sealed" by the existence of a later segment; no marker is
//! written). Only the last segment can have a torn tail, and only it is ever cut on open. A bad
//! frame inside a sealed segment is real corruption: it is logged on open, never cut, and
//! reported as [`LogError::Corrupt`] to whoever reads the damaged records; the scan finds the
//! next intact frame (`resync`) and indexes the records after the damage.
//!
//! When a segment is sealed its summary (sparse index, ingest-time bounds, end offset) is
//! persisted beside it (`index_file`), so opening the log scans only the tail segments (and
//! sealed segments whose summary is missing or stale).

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use tw_core::{Offset, Record};

use crate::LogError;
use crate::frame::{self, FrameFault, HEADER_LEN};
use crate::fsutil::sync_dir;
use crate::index_file::{self, Summary};
use crate::resync;

/// A sparse index entry is added once at least this many bytes follow the previous one.
pub(crate) const INDEX_INTERVAL_BYTES: u64 = 4096;

/// Bytes read from a segment at a time when scanning.
const CHUNK_BYTES: usize = 256 * 1024;

/// Largest frame body accepted when decoding: a sanity bound independent of the configured
/// record limit, so that lowering `max_record_bytes` never makes stored records unreadable.
pub(crate) const MAX_BODY_BYTES: usize = 1 << 30;

/// One entry of the sparse index: the frame of `offset` starts at byte `pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Offset of the record.
    pub offset: Offset,
    /// Byte position of its frame in the segment file.
    pub pos: u64,
    /// Its ingest time, so `offset_for_time` can also seek near its answer.
    pub ingest_time_ms: i64,
}

/// A segment file and what is known about its durable content.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the first record (from the file name).
    pub base: Offset,
    /// The file.
    pub path: PathBuf,
    /// Read with positional reads by readers, written with positional writes by the writer
    /// thread only: no shared cursor, no lock on the data path.
    pub file: File,
    /// Bytes readers may read: everything below is fsynced.
    durable_len: AtomicU64,
    /// One past the last durable record of this segment.
    end_offset: AtomicU64,
    /// Ingest time of the first record (`i64::MAX` while empty).
    first_ingest_ms: AtomicI64,
    /// Largest ingest time of any record (`i64::MIN` while empty).
    max_ingest_ms: AtomicI64,
    index: Mutex<Vec<IndexEntry>>,
    /// Whether the recovery scan found damage: such a segment gets no persisted summary, so
    /// that every start scans it and reports the damage again.
    damaged: AtomicBool,
}

/// The file name of the segment starting at `base`.
pub(crate) fn file_name(base: Offset) -> String {
    format!("{base:020}.log")
}

/// The base offset encoded in a segment file name, `None` for any other file.
pub(crate) fn parse_file_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Segment {
    /// Creates an empty segment file and makes its directory entry durable.
    pub(crate) fn create(dir: &Path, base: Offset) -> Result<Segment, LogError> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        sync_dir(dir)?;
        Ok(Segment::new(base, path, file, 0, base))
    }

    /// A segment over an already open file holding `len` durable bytes up to offset `end`.
    pub(crate) fn new(base: Offset, path: PathBuf, file: File, len: u64, end: Offset) -> Segment {
        Segment {
            base,
            path,
            file,
            durable_len: AtomicU64::new(len),
            end_offset: AtomicU64::new(end),
            first_ingest_ms: AtomicI64::new(i64::MAX),
            max_ingest_ms: AtomicI64::new(i64::MIN),
            index: Mutex::new(Vec::new()),
            damaged: AtomicBool::new(false),
        }
    }

    /// Bytes of durable data.
    pub(crate) fn durable_len(&self) -> u64 {
        self.durable_len.load(Ordering::Acquire)
    }

    /// One past the last durable record.
    pub(crate) fn end_offset(&self) -> Offset {
        self.end_offset.load(Ordering::Acquire)
    }

    /// Ingest time of the first record, `None` while empty.
    pub(crate) fn first_ingest_ms(&self) -> Option<i64> {
        Some(self.first_ingest_ms.load(Ordering::Acquire)).filter(|t| *t != i64::MAX)
    }

    /// Newest ingest time of any record, `None` while empty.
    pub(crate) fn max_ingest_ms(&self) -> Option<i64> {
        Some(self.max_ingest_ms.load(Ordering::Acquire)).filter(|t| *t != i64::MIN)
    }

    /// The last index entry at or before `offset` (the segment start when none).
    pub(crate) fn seek(&self, offset: Offset) -> (Offset, u64) {
        let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let at = index.partition_point(|e| e.offset <= offset);
        match at.checked_sub(1).map(|i| index[i]) {
            Some(e) => (e.offset, e.pos),
            None => (self.base, 0),
        }
    }

    /// The last index entry whose ingest time is below `ingest_time_ms` (segment start when
    /// none): a scan for the first record at or after that time may start there.
    pub(crate) fn seek_time(&self, ingest_time_ms: i64) -> (Offset, u64) {
        let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let at = index.partition_point(|e| e.ingest_time_ms < ingest_time_ms);
        match at.checked_sub(1).map(|i| index[i]) {
            Some(e) => (e.offset, e.pos),
            None => (self.base, 0),
        }
    }

    /// Publishes a group commit (writer thread, after fsync): new index entries, ingest times,
    /// then the durable length and end offset that make the records visible.
    pub(crate) fn publish(&self, group: &SegmentAppend) {
        if !group.index.is_empty() {
            let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
            index.extend_from_slice(&group.index);
        }
        if let Some(first) = group.first_ingest_ms {
            if self.first_ingest_ms().is_none() {
                self.first_ingest_ms.store(first, Ordering::Release);
            }
            self.max_ingest_ms
                .fetch_max(group.max_ingest_ms, Ordering::AcqRel);
        }
        self.durable_len.store(group.new_len, Ordering::Release);
        self.end_offset.store(group.end_offset, Ordering::Release);
    }

    /// Position of the last index entry (0 when none): where the writer measures the next
    /// sampling interval from.
    pub(crate) fn last_index_pos(&self) -> u64 {
        let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        index.last().map_or(0, |e| e.pos)
    }

    /// Whether the recovery scan found damage in this segment.
    pub(crate) fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Acquire)
    }

    /// What is known about the segment, for its persisted summary (once sealed).
    pub(crate) fn summary(&self) -> Summary {
        Summary {
            base: self.base,
            len: self.durable_len(),
            end_offset: self.end_offset(),
            first_ingest_ms: self.first_ingest_ms.load(Ordering::Acquire),
            max_ingest_ms: self.max_ingest_ms.load(Ordering::Acquire),
            index: self
                .index
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// A cursor over the frames in `[pos, limit)`.
    pub(crate) fn cursor(&self, pos: u64, limit: u64) -> FrameCursor<'_> {
        FrameCursor {
            segment: self,
            pos,
            limit,
            chunk: Bytes::new(),
            at: 0,
        }
    }

    /// Opens an existing segment, scans it, rebuilds its index and checks that it holds the
    /// dense offsets from `base`. Damage followed by intact frames is logged and left for
    /// readers to report; damage reaching the end of the file is cut in the tail segment
    /// (`is_tail`: a write torn by a crash) and left in a sealed one.
    pub(crate) fn recover(path: PathBuf, base: Offset, is_tail: bool) -> Result<Segment, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        let len = file.metadata().map_err(|e| LogError::io(&path, e))?.len();
        let segment = Segment::new(base, path, file, len, base);
        if !is_tail && let Some(summary) = index_file::load(&segment.path, base, len) {
            segment.publish(&summary.to_append());
            return Ok(segment);
        }
        let mut scan = SegmentAppend::new(0);
        let mut expected = base;
        let mut cursor = segment.cursor(0, len);
        let mut damaged = false;
        let fault = loop {
            let (reason, pos) = match cursor.next().map_err(|e| LogError::io(&segment.path, e))? {
                Step::End => break None,
                Step::Fault(fault, pos) => (format!("{fault:?}"), pos),
                Step::Frame(record, pos) if record.offset != expected => (
                    format!("offset {} where {expected} was expected", record.offset),
                    pos,
                ),
                Step::Frame(record, pos) => {
                    scan.add(pos, &record);
                    expected += 1;
                    continue;
                }
            };
            let found = resync::next_intact_frame(
                &segment,
                pos,
                len,
                expected.saturating_add(1)..Offset::MAX,
            )
            .map_err(|e| LogError::io(&segment.path, e))?;
            let Some(found) = found else {
                // Damage up to the end of the file. In the tail segment, a write torn by a
                // crash is cut below; but a last frame of its whole announced length, not
                // zeros, was written whole (and may be acknowledged): it keeps its offset, so
                // the next append never reuses an offset a consumer may have passed.
                let torn = is_tail && !self_contained_last_frame(&segment, pos, len)?;
                if !torn {
                    log_damage(&segment.path, pos, &reason, expected, None);
                    damaged = true;
                    if is_tail {
                        expected += 1;
                    }
                }
                break torn.then_some((reason, pos));
            };
            let unwritten = is_tail
                && resync::looks_unwritten(&segment, pos, found.pos, false)
                    .map_err(|e| LogError::io(&segment.path, e))?;
            if unwritten {
                // Pages of the last write reached the disk out of order before a crash: the
                // frames after the hole are of that unacknowledged write too.
                let reason = format!("{reason}, then pages a crash left unwritten");
                break Some((reason, pos));
            }
            // Intact frames after the damage: never cut (in the tail segment either, where
            // they are acknowledged records), but indexed, so that reads lose only the
            // damaged records and reads starting after them never meet the damage.
            log_damage(&segment.path, pos, &reason, expected, Some(found.offset));
            damaged = true;
            expected = found.offset;
            cursor = segment.cursor(found.pos, len);
        };
        let mut valid_len = len;
        if let Some((reason, pos)) = fault {
            // A torn tail is the normal result of a crash mid-write: cut it, so appends
            // continue right after the last complete record.
            tracing::warn!(
                segment = %segment.path.display(),
                position = pos,
                bytes_cut = len - pos,
                reason,
                "cutting the torn tail of the log"
            );
            metrics::counter!("tidewatch_log_torn_bytes_cut_total").increment(len - pos);
            segment
                .file
                .set_len(pos)
                .map_err(|e| LogError::io(&segment.path, e))?;
            segment
                .file
                .sync_data()
                .map_err(|e| LogError::io(&segment.path, e))?;
            valid_len = pos;
        }
        scan.new_len = valid_len;
        scan.end_offset = expected;
        segment.publish(&scan);
        segment.damaged.store(damaged, Ordering::Release);
        if !is_tail && !damaged {
            index_file::store(&segment.path, &segment.summary());
        }
        Ok(segment)
    }

    /// Deletes the file (retention). Readers still holding the segment keep reading the
    /// unlinked file through their open handle.
    pub(crate) fn delete(&self) -> Result<(), LogError> {
        fs::remove_file(&self.path).map_err(|e| LogError::io(&self.path, e))?;
        index_file::remove(&self.path);
        Ok(())
    }
}

/// Whether the bad frame at `pos` is the last of the file in full: its announced length ends
/// exactly at `len`, and its bytes hold no page a crash left unwritten.
fn self_contained_last_frame(segment: &Segment, pos: u64, len: u64) -> Result<bool, LogError> {
    let io = |e| LogError::io(&segment.path, e);
    let mut header = Vec::new();
    if tw_os::read_at_into(&segment.file, &mut header, 4, pos).map_err(io)? < 4 {
        return Ok(false);
    }
    let body_len = frame::body_len(&header).map_or(0, |l| l as u64);
    let whole = body_len >= frame::BODY_FIXED as u64 && pos + HEADER_LEN as u64 + body_len == len;
    Ok(whole && !resync::looks_unwritten(segment, pos, len, true).map_err(io)?)
}

/// Logs damage found by the recovery scan: `first_unreadable` is the offset the damaged frame
/// should hold, `readable_again_from` the offset of the next intact frame, if any.
fn log_damage(
    path: &Path,
    position: u64,
    reason: &str,
    first_unreadable: Offset,
    readable_again_from: Option<Offset>,
) {
    tracing::error!(
        segment = %path.display(),
        position,
        reason,
        first_unreadable,
        readable_again_from,
        "log segment is corrupted: reads of its damaged records will fail"
    );
    metrics::counter!("tidewatch_log_damaged_ranges_total").increment(1);
}

/// What one group commit (or the recovery scan) adds to a segment.
#[derive(Debug, Default)]
pub(crate) struct SegmentAppend {
    /// New sparse index entries.
    pub index: Vec<IndexEntry>,
    /// Ingest time of the first record added, if any.
    pub first_ingest_ms: Option<i64>,
    /// Largest ingest time added.
    pub max_ingest_ms: i64,
    /// Durable length after the group.
    pub new_len: u64,
    /// End offset after the group.
    pub end_offset: Offset,
    last_index_pos: u64,
}

impl SegmentAppend {
    /// Starts a group whose index sampling continues from `last_index_pos`.
    pub(crate) fn new(last_index_pos: u64) -> Self {
        SegmentAppend {
            max_ingest_ms: i64::MIN,
            last_index_pos,
            ..Default::default()
        }
    }

    /// Notes a record whose frame starts at `pos`.
    pub(crate) fn add_parts(&mut self, pos: u64, offset: Offset, ingest_time_ms: i64) {
        if pos >= self.last_index_pos + INDEX_INTERVAL_BYTES {
            self.index.push(IndexEntry {
                offset,
                pos,
                ingest_time_ms,
            });
            self.last_index_pos = pos;
        }
        self.first_ingest_ms.get_or_insert(ingest_time_ms);
        self.max_ingest_ms = self.max_ingest_ms.max(ingest_time_ms);
    }

    fn add(&mut self, pos: u64, record: &Record) {
        self.add_parts(pos, record.offset, record.ingest_time_ms);
    }
}

/// One step of a [`FrameCursor`].
#[derive(Debug)]
pub(crate) enum Step {
    /// A valid frame starting at the given byte position.
    Frame(Record, u64),
    /// The end of the range was reached exactly at a frame boundary.
    End,
    /// The frame at the given position is torn or corrupted.
    Fault(FrameFault, u64),
}

/// Reads frames of one segment in chunks with positional reads (safe beside the writer).
pub(crate) struct FrameCursor<'a> {
    segment: &'a Segment,
    pos: u64,
    limit: u64,
    chunk: Bytes,
    at: usize,
}

impl FrameCursor<'_> {
    /// The next frame, the end, or the first fault (after which the cursor must not be used).
    pub(crate) fn next(&mut self) -> std::io::Result<Step> {
        if self.pos >= self.limit {
            return Ok(Step::End);
        }
        loop {
            let avail = self.chunk.len() - self.at;
            let need = match frame::body_len(&self.chunk[self.at..]) {
                Some(len) if !(frame::BODY_FIXED..=MAX_BODY_BYTES).contains(&len) => {
                    return Ok(Step::Fault(FrameFault::BadLength, self.pos));
                }
                Some(len) => HEADER_LEN + len,
                None => HEADER_LEN,
            };
            // Stop loading when the frame is in memory or the range (or file) has no more:
            // `decode` then reports the frame as short.
            if avail >= need || self.pos + avail as u64 >= self.limit {
                break;
            }
            if !self.refill(need)? {
                break;
            }
        }
        match frame::decode(&self.chunk, self.at, MAX_BODY_BYTES) {
            Ok((record, used)) => {
                let pos = self.pos;
                self.at += used;
                self.pos += used as u64;
                Ok(Step::Frame(record, pos))
            }
            Err(fault) => Ok(Step::Fault(fault, self.pos)),
        }
    }

    /// Loads a chunk starting at the current frame holding at least `need` bytes (if the range
    /// has them). Returns false when the file ended before the range did.
    fn refill(&mut self, need: usize) -> std::io::Result<bool> {
        let remaining = self.limit - self.pos;
        let want = remaining.min(need.max(CHUNK_BYTES) as u64) as usize;
        // A fresh buffer each time: the records of the last chunk point into it.
        let mut buf = Vec::new();
        let filled = tw_os::read_at_into(&self.segment.file, &mut buf, want, self.pos)?;
        self.chunk = Bytes::from(buf);
        self.at = 0;
        Ok(filled == want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_others_are_ignored() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        for other in [
            "42.log",
            "00000000000000000042.log.tmp",
            "meta.json",
            "0000000000000000004x.log",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn index_samples_every_interval_and_seeks_to_the_floor() {
        let mut group = SegmentAppend::new(0);
        // Frames of 1000 bytes: entries land at the first frame at or past each 4096 bytes.
        for i in 0..20u64 {
            group.add_parts(i * 1000, 100 + i, 10 * i as i64);
        }
        let positions: Vec<u64> = group.index.iter().map(|e| e.pos).collect();
        assert_eq!(positions, vec![5000, 10000, 15000]);
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::create(dir.path(), 100).unwrap();
        group.new_len = 20_000;
        group.end_offset = 120;
        segment.publish(&group);
        assert_eq!(segment.seek(100), (100, 0));
        assert_eq!(segment.seek(104), (100, 0));
        assert_eq!(segment.seek(105), (105, 5000));
        assert_eq!(segment.seek(113), (110, 10000));
        assert_eq!(segment.seek(119), (115, 15000));
        assert_eq!(segment.seek_time(50), (100, 0));
        assert_eq!(segment.seek_time(51), (105, 5000));
        assert_eq!(segment.first_ingest_ms(), Some(0));
        assert_eq!(segment.max_ingest_ms(), Some(190));
        assert_eq!(segment.last_index_pos(), 15000);
    }
}
