//! Settings of the query engine.

use serde::{Deserialize, Serialize};

/// Limits and sizing of the [`QueryEngine`](crate::QueryEngine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Wall-clock limit of one query, planning included; the query is cancelled after it.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Rows returned at most; further rows are cut and the result is marked truncated.
    #[serde(default = "default_max_result_rows")]
    pub max_result_rows: usize,
    /// Memory all running queries may reserve together for sorts, joins and aggregates.
    #[serde(default = "default_memory_limit_bytes")]
    pub memory_limit_bytes: usize,
    /// Worker threads of the query runtime, and DataFusion's target partitions.
    #[serde(default = "default_threads")]
    pub threads: usize,
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_max_result_rows() -> usize {
    100_000
}

fn default_memory_limit_bytes() -> usize {
    512 * 1024 * 1024
}

fn default_threads() -> usize {
    2
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_timeout_ms(),
            max_result_rows: default_max_result_rows(),
            memory_limit_bytes: default_memory_limit_bytes(),
            threads: default_threads(),
        }
    }
}

impl QueryConfig {
    /// Reports every invalid setting at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.timeout_ms == 0 {
            problems.push("timeout_ms must be at least 1".to_string());
        }
        if self.max_result_rows == 0 {
            problems.push("max_result_rows must be at least 1".to_string());
        }
        if self.memory_limit_bytes < 1024 * 1024 {
            problems.push("memory_limit_bytes must be at least 1 MiB".to_string());
        }
        if self.threads == 0 {
            problems.push("threads must be at least 1".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let config: QueryConfig = serde_json::from_str("{}").expect("defaults apply");
        assert_eq!(config, QueryConfig::default());
        assert_eq!(config.timeout_ms, 30_000);
        assert!(config.validate().is_ok());
        let bad = QueryConfig {
            timeout_ms: 0,
            threads: 0,
            ..QueryConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().len(), 2);
        assert!(serde_json::from_str::<QueryConfig>(r#"{"timeout":1}"#).is_err());
    }
}
