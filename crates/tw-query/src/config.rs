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
    /// Memory one query may reserve for sorts, joins and aggregates; past it the query
    /// spills or fails. Other queries do not count against it; all running queries together
    /// are bounded by [`QueryConfig::all_queries_memory_bytes`].
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
    /// Memory all running queries may reserve together: `memory_limit_bytes` times the
    /// query threads, at least twice it, so as many queries as there are threads can each
    /// use their whole limit at once and one query at its limit never starves all others.
    pub fn all_queries_memory_bytes(&self) -> usize {
        self.memory_limit_bytes.saturating_mul(self.threads.max(2))
    }

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
        assert_eq!(
            config.all_queries_memory_bytes(),
            2 * config.memory_limit_bytes
        );
        let one_thread = QueryConfig {
            threads: 1,
            ..QueryConfig::default()
        };
        assert_eq!(
            one_thread.all_queries_memory_bytes(),
            2 * one_thread.memory_limit_bytes
        );
        let many = QueryConfig {
            threads: 8,
            ..QueryConfig::default()
        };
        assert_eq!(many.all_queries_memory_bytes(), 8 * many.memory_limit_bytes);
        assert!(serde_json::from_str::<QueryConfig>(r#"{"timeout":1}"#).is_err());
    }
}
