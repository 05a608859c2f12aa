//! Alerts after detection: the durable alert store and the sinks that deliver alerts.
//!
//! This crate owns:
//! - [`AlertStore`]: alerts persisted as versioned NDJSON, deduplicated by `dedup_key`, listed
//!   newest first, announced to subscribers (SSE);
//! - sink configuration ([`SinkConfig`]) with a pure validation that reports every problem;
//! - [`Dispatcher`]: one task per sink behind a bounded queue, webhook retries with exponential
//!   backoff and jitter, a file sink, and the failed-deliveries file.
//!
//! Invariants:
//! - an alert returned by [`AlertStore::insert`] is fsynced, and its `dedup_key` is never
//!   accepted again (a replay does not page twice);
//! - a complete line of the store that does not decode stops `open` with an error naming the
//!   line; only a torn last line (no trailing newline) is cut;
//! - [`Dispatcher::dispatch`] never waits on a sink: an alert a sink cannot take (queue full,
//!   unknown sink, delivery failed after its attempts, shutdown deadline reached) is appended
//!   to `failed_deliveries.ndjson` with the sink name and the error, never silently dropped;
//! - with [`Dispatcher::start_tracked`], a stored alert dispatched to sinks is delivered at
//!   least once across crashes: the delivery mark (`delivered_through`) stays before the first
//!   alert some sink has not delivered or recorded, and a restart dispatches again what follows
//!   it;
//! - webhook targets that are `localhost` or literal private/loopback/link-local IPs are refused
//!   unless the sink sets `allow_private_targets`, and redirects are never followed.

mod config;
mod dispatcher;
mod error;
mod failed;
mod outbox;
mod store;
mod webhook;

pub use config::{
    FileSinkConfig, SinkConfig, SinkConfigProblem, WebhookFormat, WebhookSinkConfig, validate_sinks,
};
pub use dispatcher::{DispatchReport, Dispatcher};
pub use error::AlertError;
pub use failed::{FAILED_DELIVERIES_FILE, FailedDelivery};
pub use outbox::DELIVERY_MARK_FILE;
pub use store::{
    ALERTS_FILE, AlertFilter, AlertStore, DEFAULT_MAX_IN_MEMORY, STORE_VERSION, StoreOptions,
};
pub use webhook::slack_text;
