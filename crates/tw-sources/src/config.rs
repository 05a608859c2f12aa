//! `[[sources]]` tables of `tidewatch.toml`: one per source, `kind` selects the variant.
//! Unknown keys are errors; `validate` is pure and reports every problem at once.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;
use tw_core::StreamName;

use crate::SourceError;

/// One configured source.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    /// New files in a local directory (recursively).
    Dir(DirSourceConfig),
    /// New objects under an S3 (or S3-compatible) prefix.
    S3(S3SourceConfig),
    /// Messages of a NATS subject (core NATS, or a JetStream durable consumer).
    Nats(NatsSourceConfig),
}

/// `kind = "dir"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirSourceConfig {
    /// Name of the source (its state directory and metric label); default `dir-<stream>`.
    pub name: Option<String>,
    /// Stream the events go to.
    pub stream: String,
    /// The directory watched.
    pub path: PathBuf,
    /// Time between two listings.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// A file modified more recently than this is left for a later poll (it may still be
    /// being written; writers that create a hidden file and rename it need no delay).
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// Records (lines or array elements) per durable append.
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
}

/// `kind = "s3"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SourceConfig {
    /// Name of the source (its state directory and metric label); default `s3-<stream>`.
    pub name: Option<String>,
    /// Stream the events go to.
    pub stream: String,
    /// The bucket.
    pub bucket: String,
    /// Key prefix watched (a "directory" of the bucket; empty: the whole bucket).
    #[serde(default)]
    pub prefix: String,
    /// AWS region (default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else us-east-1).
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Access key (default: `AWS_ACCESS_KEY_ID`, then the instance/container credentials).
    pub access_key_id: Option<String>,
    /// Secret key (default: `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Allow a plain `http://` endpoint (local S3-compatible servers).
    #[serde(default)]
    pub allow_http: bool,
    /// Address the bucket as `bucket.endpoint` rather than `endpoint/bucket` (path style,
    /// the default, which S3-compatible servers expect).
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// Time between two listings.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// A file modified more recently than this is left for a later poll (it may still be
    /// being written; writers that create a hidden file and rename it need no delay).
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// Records (lines or array elements) per durable append.
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
}

/// Polling and batching of a file source.
#[derive(Debug, Clone, Copy)]
pub struct PollConfig {
    /// Time between two listings.
    pub poll_interval_ms: u64,
    /// Files modified more recently are left for a later poll.
    pub settle_ms: u64,
    /// Records per durable append.
    pub batch_records: usize,
}

macro_rules! poll_of {
    ($config:expr) => {
        PollConfig {
            poll_interval_ms: $config.poll_interval_ms,
            settle_ms: $config.settle_ms,
            batch_records: $config.batch_records,
        }
    };
}

impl DirSourceConfig {
    /// Its polling settings.
    pub fn poll(&self) -> PollConfig {
        poll_of!(self)
    }
}

impl S3SourceConfig {
    /// Its polling settings.
    pub fn poll(&self) -> PollConfig {
        poll_of!(self)
    }

    /// Its connection settings (kept as flat keys of the source table for compatibility).
    pub fn connection(&self) -> tw_s3::S3Connection {
        tw_s3::S3Connection {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            session_token: self.session_token.clone(),
            allow_http: self.allow_http,
            virtual_hosted_style: self.virtual_hosted_style,
        }
    }
}

fn default_poll_interval_ms() -> u64 {
    5_000
}
fn default_settle_ms() -> u64 {
    1_000
}
fn default_batch_records() -> usize {
    5_000
}

/// `kind = "nats"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// Name of the source (metric label, default durable name); default `nats-<stream>`.
    pub name: Option<String>,
    /// Stream the events go to.
    pub stream: String,
    /// Server URL(s), comma separated.
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// Subject consumed (wildcards allowed).
    pub subject: String,
    /// Consume through this JetStream stream with a durable pull consumer (at-least-once);
    /// unset: a core NATS subscription (best effort: messages published while Tidewatch is
    /// down or slow are lost, as core NATS does not keep them).
    pub jetstream_stream: Option<String>,
    /// Durable consumer name (JetStream only); default: the source name.
    pub durable: Option<String>,
    /// Queue group of a core subscription (several servers share the subject's messages).
    pub queue_group: Option<String>,
    /// Most messages per durable append.
    #[serde(default = "default_nats_batch")]
    pub batch_messages: usize,
    /// Longest wait to fill a batch.
    #[serde(default = "default_nats_wait")]
    pub batch_wait_ms: u64,
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_nats_batch() -> usize {
    1_000
}
fn default_nats_wait() -> u64 {
    200
}

impl SourceConfig {
    /// The source's name: as configured, else `<kind>-<stream>`.
    pub fn name(&self) -> String {
        let (name, kind, stream) = match self {
            Self::Dir(c) => (&c.name, "dir", &c.stream),
            Self::S3(c) => (&c.name, "s3", &c.stream),
            Self::Nats(c) => (&c.name, "nats", &c.stream),
        };
        name.clone().unwrap_or_else(|| format!("{kind}-{stream}"))
    }

    /// The target stream as configured.
    pub fn stream(&self) -> &str {
        match self {
            Self::Dir(c) => &c.stream,
            Self::S3(c) => &c.stream,
            Self::Nats(c) => &c.stream,
        }
    }

    fn problems(&self, problems: &mut Vec<String>) {
        let name = self.name();
        let mut problem = |text: String| problems.push(format!("source {name:?}: {text}"));
        if !valid_name(&name) {
            problem("name may contain only letters, digits, '_', '-' and '.', 1 to 128".into());
        }
        if let Err(error) = StreamName::new(self.stream()) {
            problem(error.to_string());
        }
        let poll = match self {
            Self::Dir(c) => {
                if c.path.as_os_str().is_empty() {
                    problem("path must not be empty".into());
                }
                Some(c.poll())
            }
            Self::S3(c) => {
                if c.bucket.is_empty() {
                    problem("bucket must not be empty".into());
                }
                for text in c.connection().problems() {
                    problem(text);
                }
                Some(c.poll())
            }
            Self::Nats(c) => {
                if c.subject.trim().is_empty() {
                    problem("subject must not be empty".into());
                }
                if c.batch_messages == 0 {
                    problem("batch_messages must be at least 1".into());
                }
                if c.jetstream_stream.is_none() && c.durable.is_some() {
                    problem("durable needs jetstream_stream".into());
                }
                if c.jetstream_stream.is_some() && c.queue_group.is_some() {
                    problem(
                        "queue_group is for core NATS; JetStream consumers share a durable".into(),
                    );
                }
                None
            }
        };
        if let Some(poll) = poll {
            if poll.poll_interval_ms == 0 {
                problem("poll_interval_ms must be at least 1".into());
            }
            if poll.batch_records == 0 {
                problem("batch_records must be at least 1".into());
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Checks every source and reports every problem at once (names must be unique: each names a
/// state directory).
pub fn validate_sources(sources: &[SourceConfig]) -> Result<(), SourceError> {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for source in sources {
        source.problems(&mut problems);
        if !names.insert(source.name()) {
            problems.push(format!(
                "source {:?} is configured twice (give each a distinct name)",
                source.name()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SourceError::Config(problems.join("\n  ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        sources: Vec<SourceConfig>,
    }

    fn parse(text: &str) -> Result<Vec<SourceConfig>, String> {
        toml::from_str::<File>(text)
            .map(|f| f.sources)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_kind_parses_with_defaults() {
        let sources = parse(
            r#"
            [[sources]]
            kind = "dir"
            stream = "trail"
            path = "/var/trail"

            [[sources]]
            kind = "s3"
            name = "bucket"
            stream = "trail"
            bucket = "logs"
            prefix = "AWSLogs/"
            endpoint = "http://127.0.0.1:9000"
            allow_http = true
            poll_interval_ms = 100

            [[sources]]
            kind = "nats"
            stream = "events"
            subject = "events.>"
            jetstream_stream = "EVENTS"
            "#,
        )
        .unwrap();
        validate_sources(&sources).unwrap();
        assert_eq!(sources[0].name(), "dir-trail");
        assert_eq!(sources[1].name(), "bucket");
        match &sources[1] {
            SourceConfig::S3(c) => {
                assert_eq!(c.poll_interval_ms, 100);
                assert_eq!(c.batch_records, 5_000);
            }
            other => panic!("{other:?}"),
        }
        match &sources[2] {
            SourceConfig::Nats(c) => assert_eq!(c.url, "nats://127.0.0.1:4222"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn typos_and_unknown_kinds_fail_loudly() {
        let error = parse(
            "[[sources]]\nkind = \"dir\"\nstream = \"a\"\npath = \"/x\"\npoll_intervall_ms = 5\n",
        )
        .unwrap_err();
        assert!(error.contains("poll_intervall_ms"), "{error}");
        let error = parse("[[sources]]\nkind = \"ftp\"\nstream = \"a\"\n").unwrap_err();
        assert!(error.contains("ftp"), "{error}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let sources = parse(
            r#"
            [[sources]]
            kind = "dir"
            stream = "_bad"
            path = "/x"
            batch_records = 0

            [[sources]]
            kind = "dir"
            stream = "_bad"
            path = "/y"

            [[sources]]
            kind = "nats"
            stream = "ok"
            subject = "a"
            durable = "d"
            "#,
        )
        .unwrap();
        let error = validate_sources(&sources).unwrap_err().to_string();
        for expected in [
            "invalid stream name",
            "batch_records",
            "configured twice",
            "durable needs",
        ] {
            assert!(error.contains(expected), "{expected} missing from {error}");
        }
    }
}
