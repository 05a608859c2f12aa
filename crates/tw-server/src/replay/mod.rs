//! Dry runs and backtests: one rule through the live [`tw_detect::Engine`] over inline events
//! or a range of stored records — the same code that evaluates live, never a second
//! implementation.
//!
//! Stored records are read from every partition of the log, and from the lake where only the
//! lake holds them (`lake`), merged by ingest time, the order in which
//! live detection sees them (reading partition after partition would put every later
//! partition's events behind the first one's watermark, as late). At the end the engine is
//! told every event was delivered ([`tw_detect::Engine::finish`]), so windows that ended by the
//! newest event close and "below" bounds and `until` sequences are decided.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tw_core::{Alert, FieldPath, FieldSelection, Record, StreamName, now_ms};
use tw_detect::{CompiledRule, Engine, EngineConfig};
use tw_log::{Log, LogError};

use crate::ApiError;

mod lake;

pub use lake::LakeHistory;
use lake::LakePages;

/// Most stored events one replay reads.
pub const MAX_REPLAY_EVENTS: u64 = 10_000_000;
/// Records read from one partition at a time.
const READ_CHUNK: usize = 2048;

/// What a dry run produced.
#[derive(Debug, Default)]
pub struct ReplayOutcome {
    /// The alerts the rule would have raised.
    pub alerts: Vec<Alert>,
    /// Events read and evaluated.
    pub evaluated: u64,
    /// Whether the replay stopped at [`MAX_REPLAY_EVENTS`] before the end of the range.
    pub truncated: bool,
    /// Stored records stepped over because damage on disk made them unreadable (the log
    /// names them; the consumers dead-letter them).
    pub unreadable: u64,
}

fn engine_for(rule: Arc<CompiledRule>, config: &EngineConfig) -> Engine {
    let mut engine = Engine::new(config.clone());
    engine.set_rules(vec![rule]);
    engine
}

/// Runs `rule` over inline events; `time_of` gives each event's event time.
pub fn replay_events(
    rule: Arc<CompiledRule>,
    config: &EngineConfig,
    events: &[Value],
    time_of: &dyn Fn(&Value) -> i64,
) -> ReplayOutcome {
    let stream = rule.rule().stream.clone();
    // Inline events were never received: their times are all there is to go by.
    let config = EngineConfig {
        max_time_ahead_ms: -1,
        ..config.clone()
    };
    let mut engine = engine_for(rule, &config);
    let now = now_ms();
    let records: Vec<Record> = events
        .iter()
        .enumerate()
        .map(|(i, event)| Record {
            offset: i as u64,
            ingest_time_ms: now,
            event_time_ms: time_of(event),
            key: Bytes::new(),
            payload: Bytes::new(),
        })
        .collect();
    let mut alerts = engine.evaluate(&stream, 0, &records, events, now);
    alerts.extend(engine.finish(&stream, now));
    ReplayOutcome {
        alerts,
        evaluated: events.len() as u64,
        ..ReplayOutcome::default()
    }
}

/// Where a cursor of the merge reads.
enum Source {
    /// One partition of the log, from `next` up to `end`.
    Log { partition: u32, next: u64, end: u64 },
    /// The rows of every partition that only the lake holds (see `lake`).
    Lake(LakePages),
}

/// A record read but not evaluated yet, with its partition; a lake row comes with its event,
/// rebuilt from the columns (its payload is empty: there are no bytes as sent to read).
struct Pending {
    partition: u32,
    record: Record,
    event: Option<Value>,
}

/// One cursor of the merge: its source and the records read from it, not evaluated yet.
struct Cursor {
    source: Source,
    buffered: VecDeque<Pending>,
    done: bool,
    /// Records of the log stepped over as unreadable.
    unreadable: u64,
}

impl Cursor {
    /// Reads until something is buffered or the cursor is done; a log partition is done at
    /// its end or past `to`.
    fn refill(
        &mut self,
        log: &dyn Log,
        stream: &StreamName,
        from: i64,
        to: i64,
    ) -> Result<(), ApiError> {
        // A read can buffer nothing and still not be the end: its records were all before
        // `from`, or it stepped over damage.
        while self.buffered.is_empty() && !self.done {
            self.read_more(log, stream, from, to)?;
        }
        Ok(())
    }

    fn read_more(
        &mut self,
        log: &dyn Log,
        stream: &StreamName,
        from: i64,
        to: i64,
    ) -> Result<(), ApiError> {
        match &mut self.source {
            Source::Log {
                partition,
                next,
                end,
            } => {
                if *next >= *end {
                    self.done = true;
                    return Ok(());
                }
                let batch = match log.read(stream, *partition, *next, READ_CHUNK, 4 << 20) {
                    Ok(batch) => batch,
                    Err(damage @ LogError::Corrupt { resume_at, .. }) => {
                        tracing::warn!(%stream, partition, from = *next, resume_at, %damage, "the backtest steps over records on damaged disk");
                        self.unreadable += resume_at.min(*end).saturating_sub(*next);
                        *next = resume_at;
                        return Ok(());
                    }
                    Err(error) => return Err(error.into()),
                };
                match batch.last() {
                    Some(last) => *next = last.offset + 1,
                    None => *next = *end,
                }
                let partition = *partition;
                self.buffered.extend(
                    (batch.into_iter())
                        .filter(|record| record.ingest_time_ms >= from)
                        .map(|record| Pending {
                            partition,
                            record,
                            event: None,
                        }),
                );
                if (self.buffered.back()).is_some_and(|p| p.record.ingest_time_ms > to) {
                    self.buffered.retain(|p| p.record.ingest_time_ms <= to);
                    *next = *end;
                }
            }
            Source::Lake(pages) => {
                let page = pages.next_page()?;
                self.done = page.is_empty();
                self.buffered.extend(page);
            }
        }
        Ok(())
    }

    fn head_time(&self) -> Option<i64> {
        self.buffered.front().map(|p| p.record.ingest_time_ms)
    }
}

/// Runs `rule` over the stored records of its stream whose ingest time is in `[from, to]`:
/// those the log holds, and, with `lake`, those only the lake holds (past the log's retention,
/// or imported). `progress(read, total)` is called now and then (`total` is the number of
/// records in the offset ranges, an upper bound).
pub fn replay_stored(
    log: &dyn Log,
    lake: Option<&LakeHistory>,
    rule: Arc<CompiledRule>,
    config: &EngineConfig,
    from: i64,
    to: i64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayOutcome, ApiError> {
    let stream =
        StreamName::new(&rule.rule().stream).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let partitions = log.partitions(&stream);
    if partitions.is_none() && lake.is_none() {
        return Err(ApiError::not_found(format!(
            "stream {stream} does not exist"
        )));
    }
    let mut cursors = Vec::new();
    let mut total = 0;
    if let Some(lake) = lake
        && let Some(pages) = LakePages::open(lake, log, &stream, from, to)?
    {
        total += pages.total;
        cursors.push(Cursor {
            source: Source::Lake(pages),
            buffered: VecDeque::new(),
            done: false,
            unreadable: 0,
        });
    }
    for partition in 0..partitions.unwrap_or(0) {
        let next = log.offset_for_time(&stream, partition, from)?;
        let end = log.end_offset(&stream, partition)?;
        total += end.saturating_sub(next);
        cursors.push(Cursor {
            source: Source::Log {
                partition,
                next,
                end,
            },
            buffered: VecDeque::new(),
            done: false,
            unreadable: 0,
        });
    }
    let mut engine = engine_for(rule, config);
    let whole = FieldSelection::new([&FieldPath::new("")]);
    let mut outcome = ReplayOutcome::default();
    let mut last_report = 0;
    progress(0, total);
    loop {
        for cursor in &mut cursors {
            cursor.refill(log, &stream, from, to)?;
        }
        // The cursor whose next record was ingested first, then its run of records of one
        // partition up to the next cursor's head: evaluated as one batch.
        let Some(index) = (0..cursors.len())
            .filter(|&i| !cursors[i].buffered.is_empty())
            .min_by_key(|&i| cursors[i].head_time())
        else {
            break;
        };
        let limit = (cursors.iter().enumerate())
            .filter(|(i, _)| *i != index)
            .filter_map(|(_, c)| c.head_time())
            .min()
            .unwrap_or(i64::MAX);
        let cursor = &mut cursors[index];
        let partition = cursor.buffered[0].partition;
        let mut run = Vec::new();
        while let Some(head) = cursor.buffered.front()
            && head.partition == partition
            && (run.is_empty() || head.record.ingest_time_ms <= limit)
        {
            run.extend(cursor.buffered.pop_front());
        }
        // Whole trees (a dry-run rule reads what it likes), with the parser's word for each
        // payload, so an event the rule keeps or alerts on is taken as its text unread; a lake
        // row's event is already a tree.
        let mut records = Vec::with_capacity(run.len());
        let mut events = Vec::with_capacity(run.len());
        let mut checked = Vec::with_capacity(run.len());
        for Pending { record, event, .. } in run {
            let (event, word) = match event {
                Some(event) => (event, None),
                None => match whole.parse_checked(&record.payload) {
                    Ok((event, word)) => (event, Some(word)),
                    Err(_) => (Value::Null, None),
                },
            };
            records.push(record);
            events.push(event);
            checked.push(word);
        }
        outcome.evaluated += records.len() as u64;
        outcome.alerts.extend(engine.evaluate_checked(
            stream.as_str(),
            partition,
            &records,
            &events,
            &checked,
            now_ms(),
        ));
        if outcome.evaluated >= last_report + 100_000 {
            last_report = outcome.evaluated;
            progress(outcome.evaluated, total);
        }
        if outcome.evaluated >= MAX_REPLAY_EVENTS {
            outcome.truncated = true;
            break;
        }
    }
    outcome.unreadable = cursors.iter().map(|c| c.unreadable).sum();
    outcome
        .alerts
        .extend(engine.finish(stream.as_str(), now_ms()));
    progress(outcome.evaluated, total);
    Ok(outcome)
}
