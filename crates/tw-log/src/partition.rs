//! One partition: its segments, its durable end, reads, time lookup and retention.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use tw_core::{Offset, PartitionId, Record, Retention, StreamName};

use crate::LogError;
use crate::fsutil::sync_dir;
use crate::resync;
use crate::segment::{self, Segment, Step};

/// A partition of a stream.
#[derive(Debug)]
pub(crate) struct Partition {
    /// Stream the partition belongs to.
    pub stream: StreamName,
    /// Partition number.
    pub id: PartitionId,
    /// Directory holding the segment files.
    pub dir: PathBuf,
    /// Oldest first; the last one is the active segment. Never empty.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// One past the last fsynced record: readers never go at or beyond it.
    durable_end: AtomicU64,
    /// Append state, touched only by the writer thread (the mutex only makes it `Sync`).
    active: Mutex<ActiveState>,
    /// Set (under the `active` lock) when the stream is deleted: the writer then refuses the
    /// appends still queued, so it never creates a segment under that name again.
    deleted: AtomicBool,
}

/// The writer's view of the active segment.
#[derive(Debug)]
pub(crate) struct ActiveState {
    /// The segment being appended to (also the last of `segments`).
    pub segment: Arc<Segment>,
    /// Durable length of `segment`: where the next group is written.
    pub len: u64,
    /// Offset the next record gets.
    pub next_offset: Offset,
}

impl Partition {
    /// Opens (or creates, when `dir` has no segment, with `first_offset` as its first offset)
    /// a partition and recovers its segments.
    pub(crate) fn open(
        stream: StreamName,
        id: PartitionId,
        dir: PathBuf,
        first_offset: Offset,
    ) -> Result<Self, LogError> {
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let mut bases = list_segments(&dir)?;
        bases.sort_unstable();
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, base) in bases.iter().enumerate() {
            let is_tail = i + 1 == bases.len();
            let segment = Segment::recover(dir.join(segment::file_name(*base)), *base, is_tail)?;
            if let Some(next) = bases
                .get(i + 1)
                .filter(|next| **next != segment.end_offset())
            {
                tracing::error!(
                    segment = %segment.path.display(),
                    end_offset = segment.end_offset(),
                    next_segment = next,
                    "log segments do not hold contiguous offsets; reads across the gap will fail"
                );
            }
            segments.push(Arc::new(segment));
        }
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(&dir, first_offset)?));
        }
        let active = Arc::clone(segments.last().expect("segments is never empty"));
        let state = ActiveState {
            len: active.durable_len(),
            next_offset: active.end_offset(),
            segment: active,
        };
        Ok(Partition {
            stream,
            id,
            dir,
            durable_end: AtomicU64::new(state.next_offset),
            segments: RwLock::new(segments),
            active: Mutex::new(state),
            deleted: AtomicBool::new(false),
        })
    }

    /// One past the last durable offset.
    pub(crate) fn durable_end(&self) -> Offset {
        self.durable_end.load(Ordering::Acquire)
    }

    /// Publishes a new durable end (writer thread, after fsync and [`Segment::publish`]).
    pub(crate) fn publish_end(&self, end: Offset) {
        self.durable_end.store(end, Ordering::Release);
    }

    /// The writer's append state.
    pub(crate) fn active(&self) -> MutexGuard<'_, ActiveState> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the partition deleted; waits for a group being written to it to finish first.
    pub(crate) fn mark_deleted(&self) {
        let _active = self.active();
        self.deleted.store(true, Ordering::Release);
    }

    /// Whether the partition's stream was deleted (check while holding [`Partition::active`]).
    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Adds a freshly created active segment (writer thread, when rolling).
    pub(crate) fn push_segment(&self, segment: Arc<Segment>) {
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(segment);
    }

    /// The first retained offset and a snapshot of the segments from the one holding `offset`
    /// (or the first) on. The lock is held only for the copy, which skips older segments so
    /// a consumer near the tail copies one or two entries, however long the log.
    fn segments_from(&self, offset: Offset) -> (Offset, Vec<Arc<Segment>>) {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        let first = segments
            .partition_point(|s| s.base <= offset)
            .saturating_sub(1);
        (segments[0].base, segments[first..].to_vec())
    }

    /// A snapshot of the whole segment list.
    fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments_from(0).1
    }

    /// First retained offset.
    pub(crate) fn start_offset(&self) -> Offset {
        self.segments.read().unwrap_or_else(PoisonError::into_inner)[0].base
    }

    /// Bytes of durable data on disk.
    pub(crate) fn size_bytes(&self) -> u64 {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        segments.iter().map(|s| s.durable_len()).sum()
    }

    fn corrupt(&self, segment: &Segment, position: u64, resume_at: Offset) -> LogError {
        LogError::Corrupt {
            stream: self.stream.to_string(),
            partition: self.id,
            segment: segment.base,
            position,
            resume_at,
        }
    }

    /// Reads durable records from `from` (see [`crate::Log::read`]). Damage ends a read: the
    /// records before it are returned, and the next read, which starts at the damage, fails
    /// with [`LogError::Corrupt`].
    pub(crate) fn read(
        &self,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        // Order matters: the end is loaded before the segment list and lengths, which the
        // writer publishes before the end, so everything below `end` is found.
        let end = self.durable_end();
        let (start, segments) = self.segments_from(from);
        let mut next = from.max(start);
        let mut out = Vec::new();
        if next >= end || max_records == 0 {
            return Ok(out);
        }
        let mut bytes = 0usize;
        for (i, segment) in segments.iter().enumerate() {
            if segment.base > next {
                // The previous segment ended early: offsets in between are missing.
                let previous = &segments[i - 1];
                let error = self.corrupt(previous, previous.durable_len(), segment.base);
                return records_before(out, error);
            }
            // Read before the length, which the writer publishes first: every record below
            // this end lies below that length.
            let segment_end = segment.end_offset();
            let limit = segment.durable_len();
            let (mut expected, pos) = segment.seek(next);
            let mut cursor = segment.cursor(pos, limit);
            loop {
                let damage_at = match cursor.next().map_err(|e| LogError::io(&segment.path, e))? {
                    Step::End => break,
                    Step::Fault(_, at) => at,
                    Step::Frame(record, at) if record.offset != expected => at,
                    Step::Frame(record, _) => {
                        expected += 1;
                        if record.offset < next {
                            continue;
                        }
                        if record.offset >= end
                            || (!out.is_empty() && bytes + record.payload.len() > max_bytes)
                        {
                            return Ok(out);
                        }
                        bytes += record.payload.len();
                        next = record.offset + 1;
                        out.push(record);
                        if out.len() >= max_records {
                            return Ok(out);
                        }
                        continue;
                    }
                };
                // Damage where the record `expected` should be: find where it ends.
                let next_segment = segments.get(i + 1).map(|s| s.base);
                let range = expected.saturating_add(1)..next_segment.unwrap_or(Offset::MAX);
                let resume_at = match resync::next_intact_frame(segment, damage_at, limit, range)
                    .map_err(|e| LogError::io(&segment.path, e))?
                {
                    // The damage lies wholly below what was asked for: read on after it.
                    Some(found) if found.offset <= next => {
                        expected = found.offset;
                        cursor = segment.cursor(found.pos, limit);
                        continue;
                    }
                    Some(found) => found.offset,
                    // The damage reaches the end of the segment's durable bytes: reading
                    // continues with the next segment or, in the active one, after its last
                    // record (`next` itself is in the damage: it is below the end).
                    None => next_segment.unwrap_or(segment_end.max(next + 1)),
                };
                return records_before(out, self.corrupt(segment, damage_at, resume_at));
            }
            if next >= end {
                break;
            }
        }
        Ok(out)
    }

    /// First offset whose ingest time is at or after `ingest_time_ms` (see
    /// [`crate::Log::offset_for_time`]). Assumes ingest times do not decrease along the log;
    /// where a clock stepped back, the answer is the first match found from the located spot.
    pub(crate) fn offset_for_time(&self, ingest_time_ms: i64) -> Result<Offset, LogError> {
        let end = self.durable_end();
        let segments = self.segments();
        // Segments whose first record is older than the time: the answer is in the last of
        // them, or is the first record of the segment after.
        let after =
            segments.partition_point(|s| s.first_ingest_ms().is_some_and(|t| t < ingest_time_ms));
        let Some(candidate) = after.checked_sub(1).map(|i| &segments[i]) else {
            let first = &segments[0];
            return Ok(if first.first_ingest_ms().is_some() {
                first.base.min(end)
            } else {
                end
            });
        };
        let upper = segments.get(after).map_or(Offset::MAX, |s| s.base);
        let limit = candidate.durable_len();
        let (mut expected, pos) = candidate.seek_time(ingest_time_ms);
        let mut cursor = candidate.cursor(pos, limit);
        loop {
            let damage_at = match cursor
                .next()
                .map_err(|e| LogError::io(&candidate.path, e))?
            {
                Step::End => break,
                Step::Fault(_, at) => at,
                Step::Frame(record, at) if record.offset != expected => at,
                Step::Frame(record, _) => {
                    expected += 1;
                    if record.offset >= end {
                        return Ok(end);
                    }
                    if record.ingest_time_ms >= ingest_time_ms {
                        return Ok(record.offset);
                    }
                    continue;
                }
            };
            // Damaged records have no readable time: the answer is among those after.
            let range = expected.saturating_add(1)..upper;
            match resync::next_intact_frame(candidate, damage_at, limit, range)
                .map_err(|e| LogError::io(&candidate.path, e))?
            {
                Some(found) => {
                    expected = found.offset;
                    cursor = candidate.cursor(found.pos, limit);
                }
                None => break,
            }
        }
        Ok(match segments.get(after) {
            Some(next) if next.first_ingest_ms().is_some() => next.base.min(end),
            _ => end,
        })
    }

    /// Deletes sealed segments outside `retention`, oldest first (so the retained offsets
    /// stay contiguous); returns how many were deleted.
    pub(crate) fn apply_retention(
        &self,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<usize, LogError> {
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let sealed = segments.len() - 1;
            let mut count = 0;
            if let Some(max_age_secs) = retention.max_age_secs {
                let max_age_ms =
                    i64::try_from(max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
                let cutoff = now_ms.saturating_sub(max_age_ms);
                while count < sealed && segments[count].max_ingest_ms().is_none_or(|t| t < cutoff) {
                    count += 1;
                }
            }
            if let Some(max_bytes) = retention.max_bytes {
                let mut total: u64 = segments[count..].iter().map(|s| s.durable_len()).sum();
                while count < sealed && total > max_bytes {
                    total -= segments[count].durable_len();
                    count += 1;
                }
            }
            segments.drain(..count).collect()
        };
        for segment in &removed {
            segment.delete()?;
        }
        if !removed.is_empty() {
            sync_dir(&self.dir)?;
            tracing::info!(
                stream = %self.stream,
                partition = self.id,
                segments = removed.len(),
                start_offset = self.start_offset(),
                "retention deleted log segments"
            );
        }
        Ok(removed.len())
    }
}

/// Base offsets of the segment files in `dir` (other files are ignored).
fn list_segments(dir: &Path) -> Result<Vec<Offset>, LogError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        if let Some(base) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_file_name)
        {
            bases.push(base);
        }
    }
    Ok(bases)
}

/// The records read before damage was found, or the damage itself when there are none (a read
/// that starts at the damage).
fn records_before(out: Vec<Record>, damage: LogError) -> Result<Vec<Record>, LogError> {
    if out.is_empty() { Err(damage) } else { Ok(out) }
}
