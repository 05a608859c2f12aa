//! The lake's part of a backtest: the rows of the range that the log no longer holds (older
//! than its retention) or never held (imported with `tidewatch lake import`), read with SQL a
//! page at a time in the order live detection would have seen them (ingest time, then
//! partition and offset) and rebuilt as events ([`tw_lake::rows_to_events`], which says what
//! the columns cannot give back).
//!
//! Pages are cut by a keyset (the last row's ingest time, partition, offset) within a window
//! of ingest time, so each query reads the files of that window only (files carry row-group
//! statistics of `_ingest_time`); a window with no rows doubles the next one, so that a gap of
//! months costs a few queries.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, TimestampMillisecondType};
use bytes::Bytes;
use tw_core::{Offset, PartitionId, Record, StreamName};
use tw_log::Log;
use tw_query::QueryEngine;

use super::Pending;
use crate::ApiError;

/// Rows per query.
const PAGE_ROWS: usize = 20_000;
/// The first window of ingest time, and the one after a window with rows.
const WINDOW_MS: i64 = 3_600_000;
/// The widest window.
const MAX_WINDOW_MS: i64 = 32 * 24 * WINDOW_MS;

/// What a backtest needs to read the lake: the query engine, and the runtime it runs on (the
/// backtest itself runs on a blocking thread).
#[derive(Clone)]
pub struct LakeHistory {
    /// The SQL engine over the lake.
    pub query: Arc<QueryEngine>,
    /// A handle of the runtime the engine's futures run on.
    pub runtime: tokio::runtime::Handle,
}

/// Pages of lake rows of one stream in a range of ingest time.
pub(super) struct LakePages {
    history: LakeHistory,
    stream: StreamName,
    /// SQL condition: the row is one the log does not hold.
    not_in_log: String,
    /// Rows in the range (for progress).
    pub(super) total: u64,
    window_start: i64,
    window_ms: i64,
    /// Ingest time of the newest row in the range (the range ends there).
    last: i64,
    /// The last row returned, when the window continues past it.
    after: Option<(i64, PartitionId, Offset)>,
}

impl LakePages {
    /// The lake rows of `stream` with ingest time in `[from, to]` that the log does not hold;
    /// `None` when there are none.
    pub(super) fn open(
        history: &LakeHistory,
        log: &dyn Log,
        stream: &StreamName,
        from: i64,
        to: i64,
    ) -> Result<Option<LakePages>, ApiError> {
        let partitions = log.partitions(stream).unwrap_or(0);
        let mut not_in_log = vec![format!("_partition >= {partitions}")];
        for partition in 0..partitions {
            let start = log.start_offset(stream, partition)?;
            if start > 0 {
                not_in_log.push(format!("(_partition = {partition} AND _offset < {start})"));
            }
        }
        let not_in_log = format!("({})", not_in_log.join(" OR "));
        let sql = format!(
            "SELECT count(*), min(_ingest_time), max(_ingest_time) FROM \"{stream}\" \
             WHERE {not_in_log} AND {}",
            time_range(from, to)
        );
        let result = history.runtime.block_on(history.query.query(&sql))?;
        let Some(batch) = result.batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let (Some(count), Some(first), Some(last)) = (
            batch.column(0).as_primitive_opt::<Int64Type>(),
            batch
                .column(1)
                .as_primitive_opt::<TimestampMillisecondType>(),
            batch
                .column(2)
                .as_primitive_opt::<TimestampMillisecondType>(),
        ) else {
            return Err(ApiError::Internal(
                "the lake's row count has unexpected types".to_string(),
            ));
        };
        if count.value(0) == 0 || first.is_null(0) || last.is_null(0) {
            return Ok(None);
        }
        Ok(Some(LakePages {
            history: history.clone(),
            stream: stream.clone(),
            not_in_log,
            total: u64::try_from(count.value(0)).unwrap_or(0),
            window_start: first.value(0),
            window_ms: WINDOW_MS,
            last: last.value(0),
            after: None,
        }))
    }

    /// The next page of rows as records with their partitions, in order; empty at the end.
    pub(super) fn next_page(&mut self) -> Result<Vec<Pending>, ApiError> {
        while self.window_start <= self.last {
            let window_end = self.window_start.saturating_add(self.window_ms);
            let keyset = match self.after {
                Some((time, partition, offset)) => format!(
                    " AND (_ingest_time > {t} OR (_ingest_time = {t} AND (_partition > {partition} \
                     OR (_partition = {partition} AND _offset > {offset}))))",
                    t = timestamp(time)
                ),
                None => String::new(),
            };
            let sql = format!(
                "SELECT * FROM \"{}\" WHERE {} AND {}{keyset} \
                 ORDER BY _ingest_time, _partition, _offset LIMIT {PAGE_ROWS}",
                self.stream,
                self.not_in_log,
                // Never past the newest row of the range: a window may reach beyond `to`.
                time_range(self.window_start, (window_end - 1).min(self.last)),
            );
            let result = self
                .history
                .runtime
                .block_on(self.history.query.query(&sql))?;
            let mut page = Vec::new();
            for batch in &result.batches {
                let rows = tw_lake::rows_to_events(batch)
                    .map_err(|error| ApiError::Internal(error.to_string()))?;
                // The rebuilt tree goes to the engine as it is (no text to serialise and parse
                // again): an empty payload tells it to take the event from the tree.
                page.extend(rows.into_iter().map(|row| Pending {
                    partition: row.partition,
                    record: Record {
                        offset: row.offset,
                        ingest_time_ms: row.ingest_time_ms,
                        event_time_ms: row.time_ms,
                        key: Bytes::new(),
                        payload: Bytes::new(),
                    },
                    event: Some(row.event),
                }));
            }
            if page.len() >= PAGE_ROWS {
                let last = page.last().expect("a full page");
                let record = &last.record;
                self.after = Some((record.ingest_time_ms, last.partition, record.offset));
                return Ok(page);
            }
            // The window is done: the next starts where it ended, wider if this one was empty.
            self.after = None;
            self.window_start = window_end;
            self.window_ms = if page.is_empty() {
                (self.window_ms * 2).min(MAX_WINDOW_MS)
            } else {
                WINDOW_MS
            };
            if !page.is_empty() {
                return Ok(page);
            }
        }
        Ok(Vec::new())
    }
}

/// SQL condition: ingest time in `[from, to]` (Unix milliseconds).
fn time_range(from: i64, to: i64) -> String {
    format!(
        "_ingest_time >= {} AND _ingest_time <= {}",
        timestamp(from),
        timestamp(to)
    )
}

/// A SQL timestamp literal of Unix milliseconds, typed like the lake's time columns.
fn timestamp(ms: i64) -> String {
    format!("arrow_cast({ms}, 'Timestamp(Millisecond, Some(\"UTC\"))')")
}
