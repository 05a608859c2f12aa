//! What operators see of a running consumer: the lag gauges, the failing gauge and error
//! counter, and the failure state readiness reads from [`ConsumerProgress`].
//!
//! The lag gauges are set after each handled batch, and for every partition after each
//! failure: a consumer stuck on a failing batch handles nothing, and gauges set only on success
//! would freeze at their last value while the log grows behind it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tw_core::{Offset, StreamName, now_ms};
use tw_log::Log;

use crate::StreamPartition;
use crate::progress::{ConsumerProgress, Duty};

/// The runner's handle on one consumer's health metrics and shared failure state.
pub(crate) struct ConsumerHealth {
    consumer: String,
    progress: Arc<ConsumerProgress>,
}

impl ConsumerHealth {
    pub(crate) fn new(consumer: &str, progress: Arc<ConsumerProgress>) -> Self {
        // Registered at 0 up front, so a dashboard sees the series before the first failure.
        metrics::gauge!("tidewatch_consumer_failing", "consumer" => consumer.to_string()).set(0.0);
        Self {
            consumer: consumer.to_string(),
            progress,
        }
    }

    /// Notes a failed attempt at `duty` and refreshes every lag gauge from the log's ends
    /// (`positions` are where the consumer is stuck).
    pub(crate) fn failed(
        &self,
        duty: Duty,
        error: &str,
        log: &dyn Log,
        positions: &BTreeMap<StreamPartition, Offset>,
    ) {
        metrics::counter!("tidewatch_consumer_errors_total", "consumer" => self.consumer.clone())
            .increment(1);
        if self.progress.fail(duty.clone(), error) {
            metrics::gauge!("tidewatch_consumer_failing", "consumer" => self.consumer.clone())
                .set(1.0);
            tracing::warn!(consumer = %self.consumer, ?duty, %error, "consumer is failing");
        }
        self.refresh_lag(log, positions);
    }

    /// Notes a success of `duty`, which ends the failure of that duty.
    pub(crate) fn succeeded(&self, duty: &Duty) {
        if self.progress.recover(duty) {
            self.recovered();
        }
    }

    /// Notes that the consumer forgot a deleted stream: failures about it are over.
    pub(crate) fn forgot(&self, stream: &StreamName) {
        if self.progress.recover_stream(stream) {
            self.recovered();
        }
    }

    fn recovered(&self) {
        metrics::gauge!("tidewatch_consumer_failing", "consumer" => self.consumer.clone()).set(0.0);
        tracing::info!(consumer = %self.consumer, "consumer recovered");
    }

    /// Notes that the consumer stopped for good.
    pub(crate) fn stopped(&self, message: String) {
        metrics::gauge!("tidewatch_consumer_failing", "consumer" => self.consumer.clone()).set(1.0);
        *self
            .progress
            .failed
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(message);
    }

    /// Sets the lag of one partition after a handled batch: `next` is the next offset to read,
    /// `last_ingest_ms` the receive time of the last record handled.
    pub(crate) fn batch_lag(
        &self,
        log: &dyn Log,
        stream: &StreamName,
        partition: u32,
        next: Offset,
        last_ingest_ms: i64,
    ) {
        let end = log.end_offset(stream, partition).unwrap_or(next);
        let lag = end.saturating_sub(next);
        let behind_ms = if lag == 0 {
            0
        } else {
            now_ms() - last_ingest_ms
        };
        self.set_lag(stream, partition, lag, behind_ms);
    }

    /// Sets the lag of every partition of every stream from where the consumer is: events
    /// between its position and the log's end, and the age of the oldest record not handled.
    fn refresh_lag(&self, log: &dyn Log, positions: &BTreeMap<StreamPartition, Offset>) {
        let now = now_ms();
        for (stream, partitions) in log.streams() {
            if stream.is_internal() {
                continue;
            }
            for partition in 0..partitions {
                let (Ok(start), Ok(end)) = (
                    log.start_offset(&stream, partition),
                    log.end_offset(&stream, partition),
                ) else {
                    continue; // deleted meanwhile
                };
                // A partition never read starts at the log's first offset.
                let position = positions
                    .get(&(stream.clone(), partition))
                    .copied()
                    .unwrap_or(start)
                    .max(start);
                let lag = end.saturating_sub(position);
                let behind_ms = if lag == 0 {
                    0
                } else {
                    log.read(&stream, partition, position, 1, 1)
                        .ok()
                        .and_then(|records| records.first().map(|r| now - r.ingest_time_ms))
                        .unwrap_or(0)
                };
                self.set_lag(&stream, partition, lag, behind_ms);
            }
        }
    }

    fn set_lag(&self, stream: &StreamName, partition: u32, lag: u64, behind_ms: i64) {
        let labels = [
            ("consumer", self.consumer.clone()),
            ("stream", stream.to_string()),
            ("partition", partition.to_string()),
        ];
        metrics::gauge!("tidewatch_consumer_lag_events", &labels).set(lag as f64);
        metrics::gauge!("tidewatch_consumer_lag_seconds", &labels)
            .set(behind_ms.max(0) as f64 / 1000.0);
    }
}
