//! `tidewatch.toml`: every setting with its default; unknown keys are errors.
//!
//! Precedence: defaults < config file < `TIDEWATCH_*` environment < command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The whole server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP API (port 0 picks a free port, printed at start).
    pub listen: String,
    /// Where the log, lake, rules, alerts and offsets live.
    pub data_dir: PathBuf,
    /// Rule files (YAML or JSON) loaded at start, in addition to the rules stored by the API.
    pub rules_dir: Option<PathBuf>,
    /// How long a graceful stop may take before in-flight work is abandoned (it stays in the log).
    pub shutdown_timeout_secs: u64,
    /// The durable log.
    pub log: LogSection,
    /// Ingest limits.
    pub ingest: IngestSection,
    /// Defaults for streams created by their first event.
    pub streams: StreamsSection,
    /// The Parquet lake.
    pub lake: LakeSection,
    /// Detection.
    pub detect: DetectSection,
    /// SQL.
    pub query: QuerySection,
    /// Where alerts are delivered.
    pub sinks: Vec<tw_alerts::SinkConfig>,
    /// Credentials (none: every endpoint is open).
    pub auth: tw_compat::AuthConfig,
    /// Sigma import: `[[sigma.logsources]]` (product/service/category → stream),
    /// `[sigma.fields]` (`rename`, `prefix`) and `[sigma.placeholders]` (for `|expand`).
    pub sigma: tw_sigma::SigmaConfig,
    /// Sources that pull data into streams (`[[sources]]`: dir, s3, nats).
    pub sources: Vec<tw_sources::SourceConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7070".into(),
            data_dir: PathBuf::from("./tidewatch-data"),
            rules_dir: None,
            shutdown_timeout_secs: 30,
            log: LogSection::default(),
            ingest: IngestSection::default(),
            streams: StreamsSection::default(),
            lake: LakeSection::default(),
            detect: DetectSection::default(),
            query: QuerySection::default(),
            sinks: Vec::new(),
            auth: tw_compat::AuthConfig::default(),
            sigma: tw_sigma::SigmaConfig::default(),
            sources: Vec::new(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A partition's active segment is rolled past this size.
    pub segment_max_bytes: u64,
    /// Extra wait to gather a bigger group commit (0: commit whatever queued during the last fsync).
    pub commit_interval_ms: u64,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            segment_max_bytes: 64 << 20,
            commit_interval_ms: 0,
        }
    }
}

/// `[ingest]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// Largest request body as sent.
    pub max_body_bytes: usize,
    /// Largest body after gzip decompression.
    pub max_decompressed_bytes: usize,
    /// Largest single event.
    pub max_event_bytes: usize,
}

impl Default for IngestSection {
    fn default() -> Self {
        let limits = tw_pipeline::IngestLimits::default();
        Self {
            max_body_bytes: limits.max_body_bytes,
            max_decompressed_bytes: limits.max_decompressed_bytes,
            max_event_bytes: limits.max_event_bytes,
        }
    }
}

/// `[streams]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsSection {
    /// Partitions of a new stream.
    pub partitions: u32,
    /// Partition key of a new stream (field path); round-robin when unset.
    pub partition_key: Option<String>,
    /// Event-time field of a new stream; `eventTime`, `@timestamp`, `timestamp` are tried when unset.
    pub event_time_field: Option<String>,
    /// Per-stream partition keys for streams created implicitly (`cloudtrail = "userIdentity.arn"`).
    pub partition_keys: BTreeMap<String, String>,
    /// Lake settings of a new stream (`[streams.lake]`: retention, sort_column,
    /// bloom_filter_columns); a stream's own configuration (`PUT`) overrides them.
    pub lake: tw_core::StreamLakeConfig,
}

impl Default for StreamsSection {
    fn default() -> Self {
        Self {
            partitions: 4,
            partition_key: None,
            event_time_field: None,
            partition_keys: BTreeMap::new(),
            lake: tw_core::StreamLakeConfig::default(),
        }
    }
}

/// `[lake]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeSection {
    /// Where the Parquet files and catalogs live: a directory, or `s3://bucket/prefix` for S3
    /// or an S3-compatible server (default: `{data_dir}/lake`).
    pub location: Option<String>,
    /// `[lake.s3]`: endpoint, region, credentials and addressing of an `s3://` location
    /// (unset keys come from the `AWS_*` environment).
    pub s3: Option<tw_s3::S3Connection>,
    /// Flush a partition's buffer at this many rows.
    pub flush_max_rows: usize,
    /// Flush a partition's buffer at about this many bytes.
    pub flush_max_bytes: usize,
    /// Flush a partition's buffer when its oldest row is this old.
    pub flush_max_age_ms: u64,
    /// Background compaction and retention (`[lake.compaction]`).
    pub compaction: CompactionSection,
}

/// `[lake.compaction]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionSection {
    /// Seconds between background passes of compaction and lake retention (0: never).
    pub interval_secs: u64,
    /// An hour is compacted once it ended this many seconds ago.
    pub min_age_secs: u64,
    /// Small files are merged up to about this size.
    pub target_file_bytes: u64,
    /// Files superseded by a compacted file are deleted after this many seconds.
    pub grace_secs: u64,
    /// Rows per row group in compacted files.
    pub row_group_rows: usize,
}

impl Default for CompactionSection {
    fn default() -> Self {
        let defaults = tw_lake::CompactionConfig::default();
        Self {
            interval_secs: 60,
            min_age_secs: defaults.min_age_ms / 1000,
            target_file_bytes: defaults.target_file_bytes,
            grace_secs: defaults.grace_ms / 1000,
            row_group_rows: defaults.row_group_rows,
        }
    }
}

impl CompactionSection {
    /// The lake's compaction settings.
    pub fn to_lake(&self) -> tw_lake::CompactionConfig {
        tw_lake::CompactionConfig {
            min_age_ms: self.min_age_secs.saturating_mul(1000),
            target_file_bytes: self.target_file_bytes,
            grace_ms: self.grace_secs.saturating_mul(1000),
            row_group_rows: self.row_group_rows,
        }
    }
}

impl Default for LakeSection {
    fn default() -> Self {
        Self {
            location: None,
            s3: None,
            flush_max_rows: 100_000,
            flush_max_bytes: 16 << 20,
            flush_max_age_ms: 10_000,
            compaction: CompactionSection::default(),
        }
    }
}

/// `[detect]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectSection {
    /// How far behind the newest event time an event may arrive and still count in its window.
    pub allowed_lateness_ms: i64,
    /// How far ahead of its receive time an event's time may move the watermark (an event
    /// dated further ahead is evaluated, but cannot make later events late); negative: no
    /// limit.
    pub max_time_ahead_ms: i64,
    /// Most keys one stateful rule keeps (windows × groups, sequence keys, new-value pairs,
    /// suppression groups); beyond it the oldest are evicted, logged and counted.
    pub max_keys_per_rule: usize,
}

impl Default for DetectSection {
    fn default() -> Self {
        Self {
            allowed_lateness_ms: 60_000,
            max_time_ahead_ms: 300_000,
            max_keys_per_rule: 100_000,
        }
    }
}

/// `[query]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuerySection {
    /// A query running longer is cancelled.
    pub timeout_ms: u64,
    /// Results are cut (and marked truncated) past this many rows.
    pub max_result_rows: usize,
    /// Memory a query may use.
    pub memory_limit_bytes: usize,
    /// Threads of the query runtime.
    pub threads: usize,
    /// How long a query waits for the lake consumer to catch up with the log (read-your-writes).
    pub freshness_wait_ms: u64,
}

impl Default for QuerySection {
    fn default() -> Self {
        Self {
            timeout_ms: 30_000,
            max_result_rows: 100_000,
            memory_limit_bytes: 512 << 20,
            threads: 2,
            freshness_wait_ms: 5_000,
        }
    }
}

impl Config {
    /// Reads a TOML file; a typo in a key is an error naming it.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Where the lake lives, from `lake.location` and `[lake.s3]`.
    pub fn lake_location(&self) -> Result<tw_lake::LakeLocation, String> {
        let location = match self.lake.location.as_deref() {
            None => return Ok(tw_lake::LakeLocation::Local(self.data_dir.join("lake"))),
            Some(location) => location,
        };
        if location.starts_with("s3://") {
            let url = tw_s3::S3Url::parse(location).map_err(|e| format!("lake.location: {e}"))?;
            return Ok(tw_lake::LakeLocation::S3 {
                url,
                connection: self.lake.s3.clone().unwrap_or_default(),
            });
        }
        if let Some((scheme, _)) = location.split_once("://") {
            return Err(format!(
                "lake.location: {scheme}:// is not supported (a directory or s3://bucket/prefix)"
            ));
        }
        if location.trim().is_empty() {
            return Err("lake.location must not be empty".into());
        }
        if self.lake.s3.is_some() {
            return Err(format!(
                "lake.s3 is set but lake.location {location:?} is not an s3:// URL"
            ));
        }
        Ok(tw_lake::LakeLocation::Local(PathBuf::from(location)))
    }

    /// Checks every setting and reports every problem at once.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "listen: {:?} is not an address like 127.0.0.1:7070",
                self.listen
            ));
        }
        if self.streams.partitions == 0 || self.streams.partitions > tw_core::MAX_PARTITIONS {
            problems.push(format!(
                "streams.partitions must be 1 to {}",
                tw_core::MAX_PARTITIONS
            ));
        }
        if self.lake.flush_max_rows == 0 {
            problems.push("lake.flush_max_rows must be at least 1".into());
        }
        if self.lake.compaction.row_group_rows == 0 {
            problems.push("lake.compaction.row_group_rows must be at least 1".into());
        }
        if self.lake.compaction.target_file_bytes == 0 {
            problems.push("lake.compaction.target_file_bytes must be at least 1".into());
        }
        problems.extend(
            self.streams
                .lake
                .problems()
                .into_iter()
                .map(|p| format!("streams.{p}")),
        );
        match self.lake_location() {
            Ok(tw_lake::LakeLocation::S3 { connection, .. }) => problems.extend(
                connection
                    .problems()
                    .into_iter()
                    .map(|problem| format!("lake.s3: {problem}")),
            ),
            Ok(tw_lake::LakeLocation::Local(_)) => {}
            Err(problem) => problems.push(problem),
        }
        if self.query.threads == 0 {
            problems.push("query.threads must be at least 1".into());
        }
        if self.detect.max_keys_per_rule == 0 {
            problems.push("detect.max_keys_per_rule must be at least 1".into());
        }
        if let Err(error) = tw_alerts::validate_sinks(&self.sinks) {
            problems.push(error.to_string());
        }
        problems.extend(self.auth.problems());
        if let Err(error) = tw_sources::validate_sources(&self.sources) {
            problems.push(error.to_string());
        }
        anyhow::ensure!(
            problems.is_empty(),
            "invalid configuration:\n  {}",
            problems.join("\n  ")
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every TOML example of the README loads and validates as a config file: a user copies
    /// them as they are (a duplicated `[detect]` table once made the main example refuse to load).
    #[test]
    fn every_toml_example_of_the_readme_is_a_valid_config() {
        let readme = include_str!("../../../README.md");
        let mut examples = 0;
        for block in readme.split("```toml\n").skip(1) {
            let text = block.split("```").next().unwrap_or_default();
            let config: Config = toml::from_str(text)
                .unwrap_or_else(|e| panic!("README example does not load: {e}\n{text}"));
            config
                .validate()
                .unwrap_or_else(|e| panic!("README example does not validate: {e:#}\n{text}"));
            examples += 1;
        }
        assert!(examples >= 3, "only {examples} TOML examples found");
    }
}
