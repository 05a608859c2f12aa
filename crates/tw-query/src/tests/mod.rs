//! End-to-end tests of the engine over Parquet fixtures written with ArrowWriter.

mod fixture;
mod functions;
mod pruning;
mod queries;
