//! A consumer for the runner's tests: records (partition, offset, receive time) of every record
//! handed over, in order, optionally taking its time over each batch (like a lake writing
//! Parquet), and reports everything it handled as safe.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tw_core::{Offset, StreamName};
use tw_pipeline::{Consumer, ConsumerError, EventBatch, StreamPartition};

/// (partition, offset, receive time) of each record handed over, in the order handed over.
pub type Seen = Arc<Mutex<Vec<(u32, Offset, i64)>>>;

pub struct Recorder {
    seen: Seen,
    per_batch: Duration,
    handled: BTreeMap<StreamPartition, Offset>,
}

impl Recorder {
    /// A recorder into `seen` that sleeps `per_batch` over every batch.
    pub fn boxed(seen: Seen, per_batch: Duration) -> Box<Self> {
        Box::new(Self {
            seen,
            per_batch,
            handled: BTreeMap::new(),
        })
    }
}

impl Consumer for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn start(
        &mut self,
        committed: &BTreeMap<StreamPartition, Offset>,
    ) -> Result<(), ConsumerError> {
        self.handled = committed.clone();
        Ok(())
    }
    fn handle(&mut self, batch: &EventBatch) -> Result<(), ConsumerError> {
        if !self.per_batch.is_zero() {
            std::thread::sleep(self.per_batch);
        }
        let mut seen = self.seen.lock().unwrap();
        for record in &batch.records {
            seen.push((batch.partition, record.offset, record.ingest_time_ms));
            self.handled
                .insert((batch.stream.clone(), batch.partition), record.offset + 1);
        }
        Ok(())
    }
    fn tick(&mut self, _now_ms: i64) -> Result<(), ConsumerError> {
        Ok(())
    }
    fn forget_stream(&mut self, stream: &StreamName) -> Result<(), ConsumerError> {
        self.handled.retain(|(s, _), _| s != stream);
        Ok(())
    }
    fn safe_offsets(&self) -> BTreeMap<StreamPartition, Offset> {
        self.handled.clone()
    }
    fn flush(&mut self) -> Result<(), ConsumerError> {
        Ok(())
    }
}
