//! SQL over the lake: Apache DataFusion over Parquet files plus not-yet-flushed (hot) rows.
//!
//! Owns: the [`QueryEngine`] (a dedicated runtime, a memory limit per query, a time limit and
//! a row limit), the per-stream tables, the read-only gate, the rewrite that lets users write
//! flattened JSON fields as written (`requestParameters.policyArn`, unquoted and case kept),
//! and the result encoders (the API's JSON document, JSON rows, CSV, Arrow IPC, text table).
//!
//! Each stream is one table named after it (quote names that are not identifiers:
//! `"vpc-flow"`), with the lake's union schema plus the Hive columns `year, month, day, hour`
//! (Int32). Filters on those columns, and bounds on `_time`, prune hour directories; other
//! filters prune row groups by Parquet statistics.
//!
//! Invariants:
//! - every event is returned once: the snapshot is taken before the files are listed, the
//!   listing leaves out whole files at or past its `hot_start[partition]` (their rows are
//!   hot), and the hot rows are appended — no per-row offset filter;
//! - only reads run: DDL, DML, COPY and SET are refused before planning and again on the plan,
//!   so SQL can never write a file;
//! - a query never outlives `timeout_ms` and never returns more than `max_result_rows` rows;
//! - a query reserves at most `memory_limit_bytes` (other queries' reservations do not count
//!   against it), all running queries together at most
//!   [`QueryConfig::all_queries_memory_bytes`];
//! - planning, execution and (through [`QueryEngine::query_encoded`]) result encoding run on
//!   the engine's runtime, never the caller's.

mod catalog;
mod config;
mod dictionary_read;
mod encode;
mod engine;
mod error;
mod files;
mod functions;
mod lake;
mod live_files;
mod memory;
mod per_value;
mod predicate;
mod statement;
mod table;

#[cfg(test)]
mod tests;

pub use catalog::{HotData, LakeCatalog};
pub use config::QueryConfig;
pub use encode::{
    EncodedResult, ResultFormat, to_arrow_ipc, to_csv, to_json_document, to_json_rows,
    to_pretty_table,
};
pub use engine::{QueryEngine, QueryResult};
pub use error::{ErrorOutcome, QueryError};
pub use live_files::{HotStarts, LiveFiles};
pub use predicate::check_predicate;
pub use table::PARTITION_COLUMNS;
