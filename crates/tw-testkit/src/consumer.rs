//! A consumer that fails on demand, for the tests of the consumer runner's failure handling and
//! of what reports it (readiness, metrics).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tw_core::Offset;
use tw_pipeline::{Consumer, ConsumerError, EventBatch, StreamPartition};

/// Fails every batch while `broken` is set, like a lake whose disk is full; otherwise takes
/// every batch and reports it safe at once.
pub struct Flaky {
    name: &'static str,
    broken: Arc<AtomicBool>,
    handled: BTreeMap<StreamPartition, Offset>,
}

impl Flaky {
    /// A consumer named `name`, failing while `broken` holds.
    pub fn boxed(name: &'static str, broken: Arc<AtomicBool>) -> Box<Self> {
        Box::new(Self {
            name,
            broken,
            handled: BTreeMap::new(),
        })
    }
}

impl Consumer for Flaky {
    fn name(&self) -> &str {
        self.name
    }
    fn start(
        &mut self,
        committed: &BTreeMap<StreamPartition, Offset>,
    ) -> Result<(), ConsumerError> {
        self.handled = committed.clone();
        Ok(())
    }
    fn handle(&mut self, batch: &EventBatch) -> Result<(), ConsumerError> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(ConsumerError {
                consumer: self.name.into(),
                message: "disk full".into(),
            });
        }
        if let Some(last) = batch.records.last() {
            self.handled
                .insert((batch.stream.clone(), batch.partition), last.offset + 1);
        }
        Ok(())
    }
    fn tick(&mut self, _now_ms: i64) -> Result<(), ConsumerError> {
        Ok(())
    }
    fn safe_offsets(&self) -> BTreeMap<StreamPartition, Offset> {
        self.handled.clone()
    }
    fn flush(&mut self) -> Result<(), ConsumerError> {
        Ok(())
    }
}
