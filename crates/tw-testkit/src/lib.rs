//! Support shared by the workspace's tests, which test crates cannot share otherwise (a crate's
//! `tests/common` is its own): the real Python clients of the test venv ([`python`]),
//! moto's S3 server ([`moto`]), a consumer that fails on demand ([`consumer`]) and the
//! seeded generator of the fuzzing tests ([`rng`]). Only ever a dev-dependency: the binary never builds it.
//!
//! Real components, not mocks: the clients are the ones users run (boto3, elasticsearch-py,
//! DuckDB), and a missing one fails the test with a message naming `scripts/test.sh`, never a
//! skip.

pub mod consumer;
pub mod moto;
pub mod python;
pub mod rng;
