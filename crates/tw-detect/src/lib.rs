//! Detection: the rule language, its compiler and the evaluation engine.
//!
//! This crate owns rule documents ([`Rule`], read from YAML or JSON by [`parse_rule`]), their
//! validation ([`Rule::validate`] reports every problem with its place in the document),
//! compilation ([`Rule::compile`] → [`CompiledRule`]) and the [`Engine`] that evaluates batches
//! of already-parsed events and returns [`tw_core::Alert`]s. It does no I/O and starts no
//! tasks: the caller feeds events and delivers alerts.
//!
//! The match language: field operators (equality, lists, text, wildcards, regex, numeric and
//! time bounds, CIDR, field-to-field equality and order), keyword search over every field
//! (`field: "*"`), the `all`/`any`/`not` combinators, a short form (`{amount: {gt: 1000}}`) and
//! named selections combined by a condition string ([`condition_parse`], the Sigma model).
//! Sigma documents themselves are translated into these rules by the `tw-sigma` crate.
//!
//! Invariants:
//! - a rule that validates always compiles, and the engine never panics on any event;
//! - alert identity is deterministic (`dedup_key`, and `id = Alert::id_for(dedup_key)`), so a
//!   replay of the same records raises alerts with the same ids;
//! - state is bounded: at most the rule's `max_keys`, else the engine's `max_groups_per_rule`,
//!   keys per rule (a lowered `max_keys` is reached at the rule's next new key), and windows
//!   are dropped once the stream's watermark passes their end;
//! - window state survives [`Engine::set_rules`] exactly for rules whose definition
//!   ([`CompiledRule::same_definition`]: id, stream, condition, stateful sections) is
//!   unchanged.

mod alert;
mod batch;
mod checkpoint;
mod cidr;
mod compile;
pub mod condition_parse;
mod document;
mod duration;
mod engine;
mod error;
mod field_ref;
mod limits;
mod matcher;
mod parse;
mod prefilter;
mod selection;
mod spec;
mod state;
mod stateful;
pub mod wildcard;

pub use checkpoint::{CheckpointError, EngineSnapshot};
pub use cidr::Cidr;
pub use compile::{ANY_FIELD, CompiledRule, REGEX_SIZE_LIMIT};
pub use document::{Comparison, Condition, FieldCondition, FieldOp, Rule, Selections};
pub use duration::{MAX_DURATION_MS, parse_duration_ms};
pub use engine::Engine;
pub use error::{RuleError, RuleProblem};
pub use limits::{EngineConfig, MAX_RULE_KEYS, RuleStats};
pub use parse::{RuleFormat, parse_rule};
pub use spec::{MAX_DISTINCT_BOUND, MAX_SEQUENCE_STEPS};
pub use stateful::{
    CountBound, CountOp, DistinctCount, NewValue, Sequence, Suppression, Threshold,
};
