//! The single writer thread: group commit.
//!
//! Append requests arrive over a bounded channel. The writer takes one request, then everything
//! else already queued (requests that arrived while the previous fsync ran, plus, with a
//! commit interval, whatever arrives while it waits), encodes each partition's share of the
//! group into one buffer, writes it with one positional write, fsyncs every touched file once,
//! and only then publishes the new durable ends and answers the requests.

use std::collections::HashMap;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tw_core::{AppendRecord, Offset};

use crate::LogError;
use crate::frame;
use crate::index_file;
use crate::partition::Partition;
use crate::segment::{Segment, SegmentAppend};

/// Stop gathering a group once it holds this many bytes of records.
const GROUP_MAX_BYTES: usize = 32 * 1024 * 1024;

/// What an append resolves to.
pub(crate) type AppendResult = Result<Range<Offset>, LogError>;

/// One `append` call on its way to the writer.
pub(crate) struct AppendRequest {
    /// Target partition.
    pub partition: Arc<Partition>,
    /// Records, already checked against the size limit.
    pub records: Vec<AppendRecord>,
    /// Answered after the fsync covering the records (or with the error that prevented it).
    pub done: oneshot::Sender<AppendResult>,
}

/// A message to the writer thread.
pub(crate) enum Command {
    /// Append records.
    Append(AppendRequest),
    /// Complete everything queued, then stop.
    Shutdown,
}

/// The writer thread's state.
pub(crate) struct Writer {
    /// Incoming requests.
    pub rx: mpsc::Receiver<Command>,
    /// Extra wait to gather a larger group (zero: pure group commit).
    pub commit_interval: Duration,
    /// Roll the active segment once it holds at least this many bytes.
    pub segment_max_bytes: u64,
    /// Bumped after each group commit.
    pub commits: watch::Sender<u64>,
    /// Set by `close`: finish what is queued, then stop.
    pub closing: Arc<AtomicBool>,
}

/// The share of a group that goes to one partition.
struct PartitionGroup {
    partition: Arc<Partition>,
    requests: Vec<(AppendRequest, Range<Offset>)>,
}

/// A partition group written but not yet fsynced.
struct Written {
    group: PartitionGroup,
    segment: Arc<Segment>,
    old_len: u64,
    append: SegmentAppend,
}

impl Writer {
    /// Runs until shutdown; every request received is answered.
    pub(crate) fn run(mut self) {
        let mut buf = Vec::new();
        loop {
            let Some(first) = self.rx.blocking_recv() else {
                break;
            };
            let mut group = Vec::new();
            let mut stop = self.take(first, &mut group);
            if !self.commit_interval.is_zero() && !stop {
                std::thread::sleep(self.commit_interval);
            }
            let mut bytes = 0;
            while bytes < GROUP_MAX_BYTES {
                let Ok(command) = self.rx.try_recv() else {
                    break;
                };
                stop |= self.take(command, &mut group);
                bytes += group.last().map_or(0, request_bytes);
            }
            self.commit(group, &mut buf);
            if stop || self.closing.load(Ordering::Acquire) {
                // Answer whatever was queued before the stop; later sends fail once the
                // receiver is dropped, and their callers get `Closed`.
                self.rx.close();
                loop {
                    let mut group = Vec::new();
                    while let Ok(command) = self.rx.try_recv() {
                        self.take(command, &mut group);
                    }
                    if group.is_empty() {
                        break;
                    }
                    self.commit(group, &mut buf);
                }
                break;
            }
        }
    }

    /// Adds a command to the group; true when it asks to stop.
    fn take(&self, command: Command, group: &mut Vec<AppendRequest>) -> bool {
        match command {
            Command::Append(request) => {
                group.push(request);
                false
            }
            Command::Shutdown => true,
        }
    }

    /// Writes, fsyncs and publishes one group, then answers its requests.
    fn commit(&self, requests: Vec<AppendRequest>, buf: &mut Vec<u8>) {
        if requests.is_empty() {
            return;
        }
        let mut written = Vec::new();
        for group in group_by_partition(requests) {
            match self.write(group, buf) {
                Ok(w) => written.push(w),
                Err((group, error)) => fail(group, &error),
            }
        }
        let started = Instant::now();
        let synced = sync_all(&written);
        metrics::histogram!("tidewatch_log_fsync_seconds").record(started.elapsed().as_secs_f64());
        let mut acknowledged = Vec::new();
        for (w, result) in written.into_iter().zip(synced) {
            match result {
                Ok(()) => {
                    w.segment.publish(&w.append);
                    let mut active = w.group.partition.active();
                    active.len = w.append.new_len;
                    active.next_offset = w.append.end_offset;
                    drop(active);
                    w.group.partition.publish_end(w.append.end_offset);
                    let stream = w.group.partition.stream.to_string();
                    let records: u64 = w
                        .group
                        .requests
                        .iter()
                        .map(|(_, range)| range.end - range.start)
                        .sum();
                    metrics::counter!("tidewatch_log_appended_records_total", "stream" => stream.clone())
                        .increment(records);
                    metrics::counter!("tidewatch_log_appended_bytes_total", "stream" => stream)
                        .increment(w.append.new_len - w.old_len);
                    acknowledged.extend(w.group.requests);
                }
                Err(error) => {
                    // After a failed fsync the page cache state is unknown: drop the unsynced
                    // bytes so that the file again ends at the last durable record.
                    let _ = w.segment.file.set_len(w.old_len);
                    fail(w.group, &error);
                }
            }
        }
        metrics::counter!("tidewatch_log_group_commits_total").increment(1);
        if !acknowledged.is_empty() {
            // Bumped before answering, so whoever awaited an append sees the new count.
            self.commits.send_modify(|count| *count += 1);
        }
        for (request, range) in acknowledged {
            let _ = request.done.send(Ok(range));
        }
    }

    /// Encodes and writes one partition's share (rolling first if the active segment is full).
    fn write(
        &self,
        mut group: PartitionGroup,
        buf: &mut Vec<u8>,
    ) -> Result<Written, (PartitionGroup, LogError)> {
        let partition = Arc::clone(&group.partition);
        let mut active = partition.active();
        if partition.is_deleted() {
            drop(active);
            let error = LogError::UnknownStream(partition.stream.to_string());
            return Err((group, error));
        }
        if active.len > 0 && active.len >= self.segment_max_bytes {
            // Safe to roll here: the previous group's fsync covered every byte of the old
            // segment, so it is complete before the new one exists.
            match Segment::create(&partition.dir, active.next_offset) {
                Ok(segment) => {
                    let segment = Arc::new(segment);
                    partition.push_segment(Arc::clone(&segment));
                    let sealed = std::mem::replace(&mut active.segment, segment);
                    if !sealed.is_damaged() {
                        index_file::store(&sealed.path, &sealed.summary());
                    }
                    active.len = 0;
                }
                Err(error) => return Err((group, error)),
            }
        }
        buf.clear();
        let old_len = active.len;
        let mut append = SegmentAppend::new(active.segment.last_index_pos());
        let mut next = active.next_offset;
        for (request, range) in &mut group.requests {
            let start = next;
            for record in &request.records {
                append.add_parts(old_len + buf.len() as u64, next, record.ingest_time_ms);
                frame::encode(buf, next, record);
                next += 1;
            }
            *range = start..next;
        }
        append.new_len = old_len + buf.len() as u64;
        append.end_offset = next;
        let segment = Arc::clone(&active.segment);
        drop(active);
        if let Err(error) = segment.file.write_all_at(buf, old_len) {
            // Cut what was partially written (ENOSPC mid-write) so the file ends at the last
            // durable record and later appends continue cleanly.
            let _ = segment.file.set_len(old_len);
            return Err((group, LogError::io(&segment.path, error)));
        }
        Ok(Written {
            group,
            segment,
            old_len,
            append,
        })
    }
}

/// Splits a group by partition, keeping each partition's requests in arrival order.
fn group_by_partition(requests: Vec<AppendRequest>) -> Vec<PartitionGroup> {
    let mut groups: Vec<PartitionGroup> = Vec::new();
    let mut by_ptr: HashMap<*const Partition, usize> = HashMap::new();
    for request in requests {
        let key = Arc::as_ptr(&request.partition);
        let at = *by_ptr.entry(key).or_insert_with(|| {
            groups.push(PartitionGroup {
                partition: Arc::clone(&request.partition),
                requests: Vec::new(),
            });
            groups.len() - 1
        });
        groups[at].requests.push((request, 0..0));
    }
    groups
}

/// Fsyncs every written file once; several files are synced in parallel, since each
/// fdatasync waits for the device and they do not depend on one another.
fn sync_all(written: &[Written]) -> Vec<Result<(), LogError>> {
    let sync = |w: &Written| {
        w.segment
            .file
            .sync_data()
            .map_err(|e| LogError::io(&w.segment.path, e))
    };
    if written.len() <= 1 {
        return written.iter().map(sync).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = written[1..]
            .iter()
            .map(|w| scope.spawn(move || sync(w)))
            .collect();
        let mut results = vec![sync(&written[0])];
        for (handle, w) in handles.into_iter().zip(&written[1..]) {
            results.push(handle.join().unwrap_or_else(|_| {
                Err(LogError::io(
                    &w.segment.path,
                    std::io::Error::other("fsync thread panicked"),
                ))
            }));
        }
        results
    })
}

fn request_bytes(request: &AppendRequest) -> usize {
    request.records.iter().map(frame::frame_len).sum()
}

/// Answers every request of a failed partition group with `error`.
fn fail(group: PartitionGroup, error: &LogError) {
    let kind = if matches!(error, LogError::DiskFull { .. }) {
        "disk_full"
    } else {
        "io"
    };
    tracing::error!(stream = %group.partition.stream, partition = group.partition.id, %error, "log append failed");
    metrics::counter!("tidewatch_log_append_errors_total", "stream" => group.partition.stream.to_string(), "kind" => kind)
        .increment(1);
    for (request, _) in group.requests {
        let _ = request.done.send(Err(clone_error(error)));
    }
}

/// `LogError` is not `Clone` (it holds an `io::Error`): rebuild an equivalent per request.
fn clone_error(error: &LogError) -> LogError {
    match error {
        LogError::Io { path, source } => LogError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        LogError::DiskFull { path } => LogError::DiskFull { path: path.clone() },
        other => LogError::Io {
            path: Default::default(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}
