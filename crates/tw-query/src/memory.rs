//! Memory accounting of queries: each query may reserve up to its own limit, and all running
//! queries together up to a bound, so one heavy query cannot make the others fail.
//!
//! Invariant: every byte a query's [`QueryMemoryPool`] holds is also counted in the
//! [`SharedQueryMemory`], and released from both when DataFusion frees its reservation (also
//! when a query fails or is cancelled: dropping a reservation frees it).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, human_readable_size,
};

/// Memory reserved by all running queries together, within a bound.
#[derive(Debug)]
pub(crate) struct SharedQueryMemory {
    limit_bytes: usize,
    reserved_bytes: AtomicUsize,
}

impl SharedQueryMemory {
    pub(crate) fn new(limit_bytes: usize) -> Self {
        Self {
            limit_bytes,
            reserved_bytes: AtomicUsize::new(0),
        }
    }

    /// Bytes reserved by all queries now.
    pub(crate) fn reserved(&self) -> usize {
        self.reserved_bytes.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` if the bound allows; else the bytes still available.
    fn try_reserve(&self, bytes: usize) -> Result<(), usize> {
        self.reserved_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |reserved| {
                reserved
                    .checked_add(bytes)
                    .filter(|total| *total <= self.limit_bytes)
            })
            .map(|_| ())
            .map_err(|reserved| self.limit_bytes.saturating_sub(reserved))
    }

    /// Reserves `bytes` past the bound if need be: DataFusion's infallible `grow`.
    fn reserve(&self, bytes: usize) {
        self.reserved_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        self.reserved_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The memory pool of one query: DataFusion's [`FairSpillPool`] over the query's own limit
/// (its sorts and aggregates that can spill share it fairly, as before), every byte also
/// reserved in the [`SharedQueryMemory`] of all queries.
#[derive(Debug)]
pub(crate) struct QueryMemoryPool {
    own: FairSpillPool,
    limit_bytes: usize,
    shared: Arc<SharedQueryMemory>,
}

impl QueryMemoryPool {
    pub(crate) fn new(limit_bytes: usize, shared: Arc<SharedQueryMemory>) -> Self {
        Self {
            own: FairSpillPool::new(limit_bytes),
            limit_bytes,
            shared,
        }
    }
}

impl MemoryPool for QueryMemoryPool {
    fn name(&self) -> &str {
        "tidewatch_query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.own.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.own.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.own.grow(reservation, additional);
        self.shared.reserve(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.own.shrink(reservation, shrink);
        self.shared.release(shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        // The query's own limit first: the usual refusal then touches no other query's count.
        // The variant must stay `ResourcesExhausted`: DataFusion's operators spill on it.
        self.own
            .try_grow(reservation, additional)
            .map_err(|error| {
                DataFusionError::ResourcesExhausted(format!(
                    "the query reached its memory limit of {} (query.memory_limit_bytes): {}",
                    human_readable_size(self.limit_bytes),
                    match &error {
                        DataFusionError::ResourcesExhausted(reason) => reason.clone(),
                        other => other.strip_backtrace(),
                    }
                ))
            })?;
        if let Err(available) = self.shared.try_reserve(additional) {
            self.own.shrink(reservation, additional);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the running queries together reached their memory bound of {} ({} available); \
                 retry when fewer queries run: {} wanted {} more",
                human_readable_size(self.shared.limit_bytes),
                human_readable_size(available),
                reservation.consumer().name(),
                human_readable_size(additional),
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.own.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit_bytes)
    }
}

impl fmt::Display for QueryMemoryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(reserved: {}, limit: {}, all queries: {} of {})",
            self.name(),
            human_readable_size(self.reserved()),
            human_readable_size(self.limit_bytes),
            human_readable_size(self.shared.reserved()),
            human_readable_size(self.shared.limit_bytes),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn pool(limit: usize, shared: &Arc<SharedQueryMemory>) -> Arc<dyn MemoryPool> {
        Arc::new(QueryMemoryPool::new(limit, Arc::clone(shared)))
    }

    #[test]
    fn each_query_gets_its_own_limit_within_the_shared_bound() {
        let shared = Arc::new(SharedQueryMemory::new(3 * MIB));
        let (first, second, third) = (
            pool(2 * MIB, &shared),
            pool(2 * MIB, &shared),
            pool(2 * MIB, &shared),
        );
        let a = MemoryConsumer::new("a").register(&first);
        let b = MemoryConsumer::new("b").register(&second);
        let c = MemoryConsumer::new("c").register(&third);

        // Over its own limit: refused, and nothing stays counted.
        let error = a.try_grow(2 * MIB + 1).expect_err("over the query's limit");
        assert!(
            matches!(error, DataFusionError::ResourcesExhausted(_)),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("the query reached its memory limit of 2.0 MB"),
            "{error}"
        );
        assert_eq!((first.reserved(), shared.reserved()), (0, 0));

        // Two queries each under their limit, together over one limit: both fit.
        a.try_grow(3 * MIB / 2).expect("first query fits");
        b.try_grow(3 * MIB / 2).expect("second query fits too");
        assert_eq!(shared.reserved(), 3 * MIB);

        // A third past the shared bound: refused as such, its own count rolled back.
        let error = c.try_grow(MIB).expect_err("over the shared bound");
        assert!(
            matches!(error, DataFusionError::ResourcesExhausted(_)),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("the running queries together reached their memory bound of 3.0 MB"),
            "{error}"
        );
        assert_eq!((third.reserved(), shared.reserved()), (0, 3 * MIB));

        // Freed memory (a finished or cancelled query) is available again.
        drop(a);
        assert_eq!(shared.reserved(), 3 * MIB / 2);
        c.try_grow(MIB)
            .expect("fits after the first query freed its memory");
        c.grow(4 * MIB);
        drop((b, c));
        assert_eq!(shared.reserved(), 0);
    }
}
