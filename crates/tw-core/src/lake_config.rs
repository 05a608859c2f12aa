//! A stream's lake settings: retention of its Parquet files, the column compaction sorts by,
//! and the string columns that get Parquet bloom filters. Pure data and parsing, no I/O.

use serde::{Deserialize, Serialize};

/// How a stream is laid out and kept in the lake (`"lake"` in a stream's configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamLakeConfig {
    /// Hour partitions whose hour ended longer ago than this are deleted: `"30d"`, `"12h"`,
    /// `"90m"`, `"3600s"`. Unset keeps the lake forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// Column the rows of a compacted file are sorted by (default `_time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_column: Option<String>,
    /// Flattened column names (`sourceIPAddress`, `userIdentity.arn`) whose values get a
    /// bloom filter in every Parquet file, so `col = 'value'` skips row groups without it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bloom_filter_columns: Vec<String>,
}

impl StreamLakeConfig {
    /// The retention in milliseconds, if set and valid.
    pub fn retention_ms(&self) -> Option<u64> {
        self.retention
            .as_deref()
            .and_then(|text| parse_duration_ms(text).ok())
    }

    /// Every problem of these settings, prefixed with `lake.`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(text) = &self.retention
            && let Err(reason) = parse_duration_ms(text)
        {
            problems.push(format!("lake.retention: {reason}"));
        }
        if self.sort_column.as_deref().is_some_and(str::is_empty) {
            problems.push("lake.sort_column must not be empty".to_string());
        }
        if self.bloom_filter_columns.iter().any(String::is_empty) {
            problems.push("lake.bloom_filter_columns must not hold an empty name".to_string());
        }
        problems
    }
}

/// Parses `<N><s|m|h|d>` (e.g. `30d`) into milliseconds; N is a positive integer.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let unit_ms: u64 = match text.chars().last() {
        Some('s') => 1_000,
        Some('m') => 60_000,
        Some('h') => 3_600_000,
        Some('d') => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?} is not a duration like \"30d\", \"12h\", \"90m\" or \"3600s\""
            ));
        }
    };
    let number = &text[..text.len() - 1];
    match number.parse::<u64>() {
        Ok(0) => Err(format!("{text:?} must be longer than zero")),
        Ok(n) => n
            .checked_mul(unit_ms)
            .ok_or_else(|| format!("{text:?} is too long")),
        Err(_) => Err(format!(
            "{text:?} is not a duration like \"30d\", \"12h\", \"90m\" or \"3600s\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_the_rest() {
        assert_eq!(parse_duration_ms("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_duration_ms("12h"), Ok(12 * 3_600_000));
        assert_eq!(parse_duration_ms(" 90m "), Ok(90 * 60_000));
        assert_eq!(parse_duration_ms("3600s"), Ok(3_600_000));
        for bad in ["", "30", "d", "-1d", "1.5h", "0d", "1w"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_report_every_problem() {
        let config: StreamLakeConfig = serde_json::from_str(
            r#"{"retention": "forever", "sort_column": "", "bloom_filter_columns": ["a", ""]}"#,
        )
        .expect("parses");
        assert_eq!(config.problems().len(), 3, "{:?}", config.problems());
        assert_eq!(config.retention_ms(), None);
        assert!(serde_json::from_str::<StreamLakeConfig>(r#"{"retain": "1d"}"#).is_err());
        let good = StreamLakeConfig {
            retention: Some("2h".into()),
            ..Default::default()
        };
        assert!(good.problems().is_empty());
        assert_eq!(good.retention_ms(), Some(7_200_000));
    }
}
