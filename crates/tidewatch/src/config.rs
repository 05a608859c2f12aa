//! `tidewatch.toml`: every setting with its default; unknown keys are errors.
//!
//! Precedence: defaults < config file < `TIDEWATCH_*` environment < command-line flags.
//! Every setting of the file has a variable: `TIDEWATCH_` and its key path in upper case, table
//! levels joined by `__` (`TIDEWATCH_LAKE__FLUSH_MAX_AGE_MS`; see [`env`]).
//!
//! Invariants: whatever can be checked without starting anything is checked at load time
//! ([`Config::validate`] is pure and reports every problem at once, each naming its setting);
//! the only I/O before `serve` starts is reading the file and resolving the `listen` host.

mod env;
mod listen;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

pub use env::from_process as environment;
use listen::{parse_listen, resolve_listen};

/// Smallest `log.segment_max_bytes`: below it the log is mostly files of a few appends each.
const MIN_SEGMENT_BYTES: u64 = 64 << 10;
/// Smallest `query.memory_limit_bytes` a query can do anything with.
const MIN_QUERY_MEMORY_BYTES: usize = 1 << 20;

/// The whole server configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP API: `IP:PORT` or `HOST:PORT`, a host name resolved at start
    /// (port 0 picks a free port, printed at start).
    pub listen: String,
    /// Where the log, lake, rules, alerts and offsets live.
    pub data_dir: PathBuf,
    /// Rule files (YAML or JSON) loaded at start, in addition to the rules stored by the API.
    pub rules_dir: Option<PathBuf>,
    /// How long a graceful stop may take before in-flight work is abandoned (it stays in the log).
    pub shutdown_timeout_secs: u64,
    /// A consumer (lake, search, detection) failing for longer than this makes `/readyz`
    /// answer 503.
    pub unready_after_failing_secs: u64,
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
            unready_after_failing_secs: 30,
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
    /// Retention of the dead-letter queue (`_dlq`), which no stream configuration reaches:
    /// `{ max_age_secs = …, max_bytes = … }`; empty keeps every dead letter.
    pub dlq_retention: tw_core::Retention,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            segment_max_bytes: 64 << 20,
            commit_interval_ms: 0,
            dlq_retention: tw_core::Retention::default(),
        }
    }
}

/// The largest `max_event_bytes`: half the log's record limit. A stored record holds the
/// event and its partition key, taken from the event; a dead letter holds a refused event in
/// base64 (a third longer) when JSON's escapes would make its text longer.
const MAX_EVENT_BYTES: usize = tw_log::DEFAULT_MAX_RECORD_BYTES / 2;

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

/// The `serve` command-line flags that override settings: the last layer.
#[derive(Debug, Default)]
pub struct Flags {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--rules-dir`.
    pub rules_dir: Option<PathBuf>,
}

impl Config {
    /// The configuration of `tidewatch serve`: defaults < `file` < `env` (the `TIDEWATCH_*`
    /// variables, as [`environment`] reads them) < `flags`; validated, and with a host name in
    /// `listen` resolved to its address.
    pub fn for_serve(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: Flags,
    ) -> anyhow::Result<Self> {
        let text = match file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading config {}", path.display()))?,
            ),
            None => None,
        };
        let mut config = Self::parse(text.as_deref(), file, env)?;
        config.apply_flags(flags);
        config.validate()?;
        config.resolve_listen()?;
        Ok(config)
    }

    /// The file's settings (`text`, none: every default) with the `TIDEWATCH_*` variables of
    /// `env` applied; a typo in a key or a variable's name is an error naming it.
    pub fn parse(
        text: Option<&str>,
        origin: Option<&Path>,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let text = text.unwrap_or_default();
        let invalid = || match origin {
            Some(path) => format!("invalid config {}", path.display()),
            None => "invalid config".to_string(),
        };
        // Deserialised from the text first, so that an error points at its line.
        let _: Self = toml::from_str(text).with_context(invalid)?;
        let mut table: toml::Table = toml::from_str(text).with_context(invalid)?;
        env::apply(&mut table, env).map_err(|problems| {
            anyhow::anyhow!(
                "invalid TIDEWATCH_* environment variables:\n  {}",
                problems.join("\n  ")
            )
        })?;
        table
            .try_into()
            .context("the configuration with its TIDEWATCH_* environment variables")
    }

    /// Applies the command-line flags given.
    pub fn apply_flags(&mut self, flags: Flags) {
        if let Some(dir) = flags.data_dir {
            self.data_dir = dir;
        }
        if let Some(listen) = flags.listen {
            self.listen = listen;
        }
        if flags.rules_dir.is_some() {
            self.rules_dir = flags.rules_dir;
        }
    }

    /// Replaces a host name in `listen` by the address it resolves to (`localhost` is
    /// 127.0.0.1; otherwise the first IPv4 address, else the first address).
    pub fn resolve_listen(&mut self) -> anyhow::Result<()> {
        let address = resolve_listen(&self.listen).map_err(anyhow::Error::msg)?;
        self.listen = address.to_string();
        Ok(())
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

    /// Checks every setting and reports every problem at once. Pure: a host name in `listen`
    /// is checked for its form here and resolved by [`Config::resolve_listen`].
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if let Err(problem) = parse_listen(&self.listen) {
            problems.push(problem);
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir must not be empty".into());
        }
        if self
            .rules_dir
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            problems.push("rules_dir must not be empty (leave it out for none)".into());
        }
        if self.ingest.max_event_bytes > MAX_EVENT_BYTES {
            problems.push(format!(
                "ingest.max_event_bytes must be at most {MAX_EVENT_BYTES} (4 MiB), got {}",
                self.ingest.max_event_bytes
            ));
        }
        let mut at_least = |setting: &str, value: u64, minimum: u64| {
            if value < minimum {
                problems.push(format!("{setting} must be at least {minimum}, got {value}"));
            }
        };
        let size = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
        at_least("shutdown_timeout_secs", self.shutdown_timeout_secs, 1);
        at_least(
            "unready_after_failing_secs",
            self.unready_after_failing_secs,
            1,
        );
        at_least(
            "log.segment_max_bytes",
            self.log.segment_max_bytes,
            MIN_SEGMENT_BYTES,
        );
        at_least("ingest.max_body_bytes", size(self.ingest.max_body_bytes), 1);
        at_least(
            "ingest.max_decompressed_bytes",
            size(self.ingest.max_decompressed_bytes),
            1,
        );
        at_least(
            "ingest.max_event_bytes",
            size(self.ingest.max_event_bytes),
            1,
        );
        at_least("lake.flush_max_rows", size(self.lake.flush_max_rows), 1);
        at_least("lake.flush_max_bytes", size(self.lake.flush_max_bytes), 1);
        at_least("lake.flush_max_age_ms", self.lake.flush_max_age_ms, 1);
        at_least(
            "lake.compaction.row_group_rows",
            size(self.lake.compaction.row_group_rows),
            1,
        );
        at_least(
            "lake.compaction.target_file_bytes",
            self.lake.compaction.target_file_bytes,
            1,
        );
        at_least("query.timeout_ms", self.query.timeout_ms, 1);
        at_least("query.max_result_rows", size(self.query.max_result_rows), 1);
        at_least(
            "query.memory_limit_bytes",
            size(self.query.memory_limit_bytes),
            size(MIN_QUERY_MEMORY_BYTES),
        );
        at_least("query.threads", size(self.query.threads), 1);
        at_least(
            "detect.max_keys_per_rule",
            size(self.detect.max_keys_per_rule),
            1,
        );
        if self.detect.allowed_lateness_ms < 0 {
            problems.push(format!(
                "detect.allowed_lateness_ms must not be negative, got {}",
                self.detect.allowed_lateness_ms
            ));
        }
        problems.extend(self.stream_problems());
        match self.lake_location() {
            Ok(tw_lake::LakeLocation::S3 { connection, .. }) => problems.extend(
                connection
                    .problems()
                    .into_iter()
                    .chain(endpoint_problem(connection.endpoint.as_deref()))
                    .map(|problem| format!("lake.s3: {problem}")),
            ),
            Ok(tw_lake::LakeLocation::Local(_)) => {}
            Err(problem) => problems.push(problem),
        }
        if let Err(error) = tw_alerts::validate_sinks(&self.sinks) {
            problems.push(error.to_string());
        }
        problems.extend(self.auth.problems());
        for (i, row) in self.sigma.logsources.iter().enumerate() {
            if let Err(error) = tw_core::StreamName::new(&row.stream) {
                problems.push(format!("sigma.logsources[{i}].stream: {error}"));
            }
        }
        if let Err(error) = tw_sources::validate_sources(&self.sources) {
            problems.push(error.to_string());
        }
        problems.extend(self.source_url_problems());
        anyhow::ensure!(
            problems.is_empty(),
            "invalid configuration:\n  {}",
            problems.join("\n  ")
        );
        Ok(())
    }

    /// `[streams]`: the defaults of a new stream as a stream's own configuration is checked,
    /// and the per-stream partition keys.
    fn stream_problems(&self) -> Vec<String> {
        let defaults = tw_core::StreamConfig {
            partitions: self.streams.partitions,
            partition_key: self.streams.partition_key.clone(),
            event_time_field: self.streams.event_time_field.clone(),
            lake: self.streams.lake.clone(),
            ..tw_core::StreamConfig::default()
        };
        let mut problems: Vec<String> = match defaults.validate() {
            Ok(()) => Vec::new(),
            Err(error) => error
                .problems
                .into_iter()
                .map(|problem| format!("streams.{problem}"))
                .collect(),
        };
        for (stream, key) in &self.streams.partition_keys {
            if let Err(error) = tw_core::StreamName::new(stream) {
                problems.push(format!("streams.partition_keys: {error}"));
            }
            if key.is_empty() || key.split('.').any(str::is_empty) {
                problems.push(format!(
                    "streams.partition_keys.{stream}: {key:?} is not a dotted field path like `a.b`"
                ));
            }
        }
        problems
    }

    /// URLs of `[[sources]]` that their own validation checks only for their scheme.
    fn source_url_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for source in &self.sources {
            let problem = match source {
                tw_sources::SourceConfig::S3(s3) => endpoint_problem(s3.endpoint.as_deref()),
                tw_sources::SourceConfig::Nats(nats) => nats_url_problem(&nats.url),
                tw_sources::SourceConfig::Dir(_) => None,
            };
            if let Some(problem) = problem {
                problems.push(format!("source {:?}: {problem}", source.name()));
            }
        }
        problems
    }
}

/// An `http(s)://` endpoint that is not a URL with a host (other schemes are refused by
/// [`tw_s3::S3Connection::problems`]).
fn endpoint_problem(endpoint: Option<&str>) -> Option<String> {
    let endpoint = endpoint?;
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return None;
    }
    match reqwest::Url::parse(endpoint) {
        Err(error) => Some(format!("endpoint {endpoint:?} is not a valid URL: {error}")),
        Ok(url) if url.host_str().is_none_or(str::is_empty) => {
            Some(format!("endpoint {endpoint:?} has no host"))
        }
        Ok(_) => None,
    }
}

/// A NATS `url` as the client reads it: comma-separated servers, each `host:port` or a URL
/// with scheme nats, tls, ws or wss.
fn nats_url_problem(urls: &str) -> Option<String> {
    let mut problems = Vec::new();
    for server in urls.split(',').map(str::trim) {
        if server.is_empty() {
            problems.push(format!("url {urls:?} has an empty server"));
            continue;
        }
        let text = if server.contains("://") {
            server.to_string()
        } else {
            format!("nats://{server}")
        };
        match reqwest::Url::parse(&text) {
            Err(error) => problems.push(format!("url {server:?} is not a valid URL: {error}")),
            Ok(url) if !matches!(url.scheme(), "nats" | "tls" | "ws" | "wss") => problems.push(
                format!("url {server:?} must use nats://, tls://, ws:// or wss://"),
            ),
            Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                problems.push(format!("url {server:?} has no host"));
            }
            Ok(_) => {}
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}
