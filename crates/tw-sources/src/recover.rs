//! Exactly-once across a crash in the middle of an append.
//!
//! The log append and the source's progress file cannot be written in one atomic step. So
//! before each append a source records where the log ended ([`Pending`]); if the process dies
//! (or the append fails halfway, e.g. one partition's append succeeded and another hit a full
//! disk), the next attempt reads the log past those positions and removes from the batch
//! every record already stored there: events matched by their exact bytes in the stream's
//! partitions, refused records matched by line and bytes in the dead-letter queue. What is
//! left is appended again. The ingest path stores an event's original bytes, so a stored
//! event is recognised exactly; the only confusion possible is with a byte-identical event
//! written to the same stream by another producer inside the crash window.

use std::collections::HashMap;

use bytes::Bytes;
use tw_core::StreamName;
use tw_log::{Log, LogError};
use tw_pipeline::{DLQ_STREAM, DeadLetter, ParsedEvent, Rejection};

use crate::state::Pending;

/// Records read per log call while checking.
const READ_RECORDS: usize = 4096;
const READ_BYTES: usize = 8 << 20;

/// The end offsets of every partition of `stream` and of the dead-letter queue (blocking).
pub fn log_positions(
    log: &dyn Log,
    stream: &StreamName,
    partitions: u32,
) -> Result<(Vec<u64>, u64), LogError> {
    let ends = (0..partitions)
        .map(|partition| log.end_offset(stream, partition))
        .collect::<Result<Vec<_>, _>>()?;
    let dlq_end = log.end_offset(&StreamName::internal(DLQ_STREAM), 0)?;
    Ok((ends, dlq_end))
}

/// What an interrupted append had already stored.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AlreadyStored {
    /// Events of the batch found in the stream.
    pub events: u64,
    /// Refused records of the batch found in the dead-letter queue.
    pub rejected: u64,
}

/// Removes from `events` and `rejected` what the log holds past `pending`'s positions
/// (blocking: reads the log).
pub fn remove_stored(
    log: &dyn Log,
    stream: &StreamName,
    pending: &Pending,
    events: &mut Vec<ParsedEvent>,
    rejected: &mut Vec<Rejection>,
) -> Result<AlreadyStored, LogError> {
    let mut found = AlreadyStored::default();
    if !events.is_empty() {
        let mut wanted: HashMap<Bytes, usize> = HashMap::new();
        for event in events.iter() {
            *wanted.entry(event.raw.clone()).or_default() += 1;
        }
        let mut stored: HashMap<Bytes, usize> = HashMap::new();
        let mut missing = events.len();
        let partitions = log.partitions(stream).unwrap_or(0);
        for partition in 0..partitions {
            let from = pending
                .log_ends
                .get(partition as usize)
                .copied()
                .unwrap_or(0);
            scan(log, stream, partition, from, |payload| {
                if let Some(count) = wanted.get_mut(payload)
                    && *count > 0
                {
                    *count -= 1;
                    missing -= 1;
                    *stored.entry(Bytes::copy_from_slice(payload)).or_default() += 1;
                }
                missing > 0
            })?;
        }
        events.retain(|event| match stored.get_mut(&event.raw) {
            Some(count) if *count > 0 => {
                *count -= 1;
                found.events += 1;
                false
            }
            _ => true,
        });
    }
    if !rejected.is_empty() {
        let mut stored: HashMap<(usize, Vec<u8>), usize> = HashMap::new();
        scan(
            log,
            &StreamName::internal(DLQ_STREAM),
            0,
            pending.dlq_end,
            |payload| {
                if let Ok(letter) = serde_json::from_slice::<DeadLetter>(payload)
                    && letter.stream == stream.as_str()
                    && letter.stage == "ingest"
                    && let Some(line) = letter.line
                {
                    *stored.entry((line, letter.raw_bytes())).or_default() += 1;
                }
                true
            },
        )?;
        rejected.retain(|rejection| {
            match stored.get_mut(&(rejection.line, rejection.raw.to_vec())) {
                Some(count) if *count > 0 => {
                    *count -= 1;
                    found.rejected += 1;
                    false
                }
                _ => true,
            }
        });
    }
    Ok(found)
}

/// Calls `visit` with each payload of a partition from `from` to its end, while it returns
/// true.
fn scan(
    log: &dyn Log,
    stream: &StreamName,
    partition: u32,
    mut from: u64,
    mut visit: impl FnMut(&[u8]) -> bool,
) -> Result<(), LogError> {
    loop {
        let records = log.read(stream, partition, from, READ_RECORDS, READ_BYTES)?;
        let Some(last) = records.last() else {
            return Ok(());
        };
        from = last.offset + 1;
        for record in &records {
            if !visit(&record.payload) {
                return Ok(());
            }
        }
    }
}
