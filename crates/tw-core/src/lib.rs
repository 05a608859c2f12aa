//! The vocabulary every Tidewatch stage shares: stream names, partitions, offsets, log
//! records, stream configuration, field paths and event time. No I/O happens here.
//!
//! Invariants:
//! - a [`StreamName`] is always valid (checked at construction), so every stage may use it in
//!   file names, URLs and SQL table names without escaping;
//! - a record's `offset` is assigned by the log and never reused within a partition;
//! - partition assignment ([`partition_for_key`]) is a pure function of the key bytes and the
//!   partition count, stable across versions and machines.

mod alert;
mod fields;
mod lake_config;
mod path;
mod record;
pub mod scan;
mod select;
mod shared;
mod stream;
mod time;

pub use alert::{Alert, EventLocation, Severity};
pub use fields::SelectedFields;
pub use lake_config::{StreamLakeConfig, parse_duration_ms};
pub use path::{FieldPath, value_text};
pub use record::{AppendRecord, Offset, PartitionId, Record, partition_for_key};
pub use select::FieldSelection;
pub use shared::{CheckedPayload, SharedEvent};
pub use stream::{
    FieldSpec, FieldType, MAX_PARTITIONS, Retention, StreamConfig, StreamConfigError, StreamName,
    StreamNameError, StreamSchema,
};
pub use time::{event_time_ms, format_rfc3339_ms, now_ms, parse_time_ms};
