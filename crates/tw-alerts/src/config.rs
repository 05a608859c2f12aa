//! Sink configuration: serde structs read from the server's TOML (`[[sinks]]`), and a pure
//! `validate()` that reports every problem at once.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::AlertError;

/// One configured alert sink; `type` selects the kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkConfig {
    /// HTTP POST of each alert (JSON or Slack-compatible body), with retries.
    Webhook(WebhookSinkConfig),
    /// One alert per line appended to a local NDJSON file, fsynced per batch.
    File(FileSinkConfig),
}

/// Body format of a webhook sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The alert itself, as JSON (the same JSON the API returns).
    #[default]
    Json,
    /// `{"text": "..."}`, understood by Slack-compatible incoming webhooks.
    Slack,
}

/// A webhook sink: `POST url` once per alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Unique name of the sink (used by rules to pick sinks, in metrics and in failure records).
    pub name: String,
    /// Target URL (`http` or `https`).
    pub url: String,
    /// Body format.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Extra request headers (for example `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Timeout of one attempt, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts before the alert goes to the failed-deliveries file (at least 1).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry, milliseconds; doubles after each attempt.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Upper bound of the delay between attempts, milliseconds.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Allow targets that are `localhost` or a literal IP in a private, loopback, link-local or
    /// otherwise non-public range (refused by default so a config cannot aim alerts, with their
    /// headers, at internal services).
    #[serde(default)]
    pub allow_private_targets: bool,
    /// Alerts waiting for this sink; when full, new alerts go to the failed-deliveries file.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
}

/// A file sink: appends one alert JSON per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Unique name of the sink.
    pub name: String,
    /// File to append to (created if missing; its directory must exist).
    pub path: PathBuf,
    /// Alerts waiting for this sink; when full, new alerts go to the failed-deliveries file.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
}

fn default_timeout_ms() -> u64 {
    5_000
}
fn default_max_attempts() -> u32 {
    8
}
fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_queue_capacity() -> usize {
    1_024
}

/// One problem found in the sink configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfigProblem {
    /// Name of the sink (as written in the config, possibly empty).
    pub sink: String,
    /// What is wrong, in words a user can act on.
    pub problem: String,
}

impl std::fmt::Display for SinkConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sink {:?}: {}", self.sink, self.problem)
    }
}

impl SinkConfig {
    /// Name of the sink.
    pub fn name(&self) -> &str {
        match self {
            Self::Webhook(sink) => &sink.name,
            Self::File(sink) => &sink.name,
        }
    }

    /// Capacity of the sink's queue.
    pub fn queue_capacity(&self) -> usize {
        match self {
            Self::Webhook(sink) => sink.queue_capacity,
            Self::File(sink) => sink.queue_capacity,
        }
    }

    /// Every problem of this one sink (empty when valid). Pure: no I/O, no DNS.
    pub fn validate(&self) -> Vec<SinkConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |text: String| {
            problems.push(SinkConfigProblem {
                sink: self.name().to_owned(),
                problem: text,
            });
        };
        if self.name().trim().is_empty() {
            problem("name must not be empty".to_owned());
        }
        if self.queue_capacity() == 0 {
            problem("queue_capacity must be at least 1".to_owned());
        }
        match self {
            Self::Webhook(sink) => {
                for text in webhook_problems(sink) {
                    problem(text);
                }
            }
            Self::File(sink) => {
                if sink.path.as_os_str().is_empty() {
                    problem("path must not be empty".to_owned());
                }
            }
        }
        problems
    }
}

/// Validates a whole list of sinks: each sink's problems plus duplicate names.
pub fn validate_sinks(sinks: &[SinkConfig]) -> Result<(), AlertError> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for sink in sinks {
        problems.extend(sink.validate());
        if !seen.insert(sink.name()) {
            problems.push(SinkConfigProblem {
                sink: sink.name().to_owned(),
                problem: "name is used by more than one sink".to_owned(),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(AlertError::InvalidSinks(problems))
    }
}

fn webhook_problems(sink: &WebhookSinkConfig) -> Vec<String> {
    let mut problems = Vec::new();
    match reqwest::Url::parse(&sink.url) {
        Err(error) => problems.push(format!("url {:?} is not a valid URL: {error}", sink.url)),
        Ok(url) => {
            if url.scheme() != "http" && url.scheme() != "https" {
                problems.push(format!("url {:?} must use http or https", sink.url));
            }
            match url.host_str() {
                None => problems.push(format!("url {:?} has no host", sink.url)),
                Some(host) if !sink.allow_private_targets && is_private_host(host) => problems.push(format!(
                    "url {:?} targets a private, loopback or link-local address; set allow_private_targets = true to allow it",
                    sink.url
                )),
                Some(_) => {}
            }
        }
    }
    if sink.timeout_ms == 0 {
        problems.push("timeout_ms must be at least 1".to_owned());
    }
    if sink.max_attempts == 0 {
        problems.push("max_attempts must be at least 1".to_owned());
    }
    if sink.initial_backoff_ms > sink.max_backoff_ms {
        problems.push(format!(
            "initial_backoff_ms ({}) must not exceed max_backoff_ms ({})",
            sink.initial_backoff_ms, sink.max_backoff_ms
        ));
    }
    for (name, value) in &sink.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(format!(
                "header name {name:?} is not a valid HTTP header name"
            ));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            problems.push(format!(
                "value of header {name:?} is not a valid HTTP header value"
            ));
        }
    }
    problems
}

/// True for `localhost` (and `*.localhost`) and for literal IPs that are not publicly routable.
/// Host names are not resolved: a public name pointing at a private address is not caught here.
pub(crate) fn is_private_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    // `Url::host_str` keeps the brackets of an IPv6 literal.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    match literal.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => is_private_v4(ip),
        Ok(IpAddr::V6(ip)) => is_private_v6(ip),
        Err(_) => false,
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        // 100.64.0.0/10, carrier-grade NAT (shared address space).
        || (a == 100 && (64..128).contains(&b))
        // 0.0.0.0/8 "this network": reaches the local host on many systems.
        || a == 0
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_private_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        // fc00::/7 unique local.
        || (first & 0xfe00) == 0xfc00
        // fe80::/10 link-local.
        || (first & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(url: &str) -> WebhookSinkConfig {
        WebhookSinkConfig {
            name: "hook".to_owned(),
            url: url.to_owned(),
            format: WebhookFormat::Json,
            headers: BTreeMap::new(),
            timeout_ms: default_timeout_ms(),
            max_attempts: default_max_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            allow_private_targets: false,
            queue_capacity: default_queue_capacity(),
        }
    }

    #[test]
    fn toml_example_parses_with_defaults() {
        #[derive(Deserialize)]
        struct Root {
            sinks: Vec<SinkConfig>,
        }
        let text = r#"
            [[sinks]]
            name = "soc-webhook"
            type = "webhook"
            url = "https://hooks.example.com/hook"
            format = "slack"
            headers = { Authorization = "Bearer x" }
            timeout_ms = 5000
            max_attempts = 8
            [[sinks]]
            name = "alerts-file"
            type = "file"
            path = "/var/log/tidewatch-alerts.ndjson"
        "#;
        let root: Root = toml::from_str(text).expect("config parses");
        let mut expected = webhook("https://hooks.example.com/hook");
        expected.name = "soc-webhook".to_owned();
        expected.format = WebhookFormat::Slack;
        expected
            .headers
            .insert("Authorization".to_owned(), "Bearer x".to_owned());
        assert_eq!(
            root.sinks,
            vec![
                SinkConfig::Webhook(expected),
                SinkConfig::File(FileSinkConfig {
                    name: "alerts-file".to_owned(),
                    path: PathBuf::from("/var/log/tidewatch-alerts.ndjson"),
                    queue_capacity: 1_024,
                }),
            ]
        );
        assert!(validate_sinks(&root.sinks).is_ok());
    }

    #[test]
    fn unknown_field_is_rejected() {
        let value =
            serde_json::json!({"type": "file", "name": "f", "path": "/tmp/x", "paht": "typo"});
        let error = serde_json::from_value::<SinkConfig>(value).expect_err("typo must fail");
        assert!(error.to_string().contains("paht"), "{error}");
        let value = serde_json::json!({"type": "webhook", "name": "w", "url": "https://a.example", "retries": 3});
        let error = serde_json::from_value::<SinkConfig>(value).expect_err("typo must fail");
        assert!(error.to_string().contains("retries"), "{error}");
    }

    #[test]
    fn private_targets_are_refused_and_name_the_sink() {
        for url in [
            "http://127.0.0.1:9000/hook",
            "http://localhost:9000/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:10.0.0.1]/",
        ] {
            let problems = SinkConfig::Webhook(webhook(url)).validate();
            assert_eq!(problems.len(), 1, "{url}: {problems:?}");
            assert_eq!(problems[0].sink, "hook");
            assert!(
                problems[0].to_string().starts_with("sink \"hook\": url"),
                "{}",
                problems[0]
            );
            assert!(
                problems[0].problem.contains("allow_private_targets"),
                "{url}"
            );
        }
    }

    #[test]
    fn allow_flag_and_public_targets_pass() {
        let mut allowed = webhook("http://127.0.0.1:9000/hook");
        allowed.allow_private_targets = true;
        assert_eq!(SinkConfig::Webhook(allowed).validate(), vec![]);
        for url in [
            "https://hooks.slack.com/services/x",
            "http://8.8.8.8/",
            "http://172.32.0.1/",
            "http://[2001:db8::1]/",
        ] {
            assert_eq!(
                SinkConfig::Webhook(webhook(url)).validate(),
                vec![],
                "{url}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut bad = webhook("ftp://files.example.com/");
        bad.name = "dup".to_owned();
        bad.max_attempts = 0;
        bad.timeout_ms = 0;
        bad.initial_backoff_ms = 10;
        bad.max_backoff_ms = 5;
        bad.headers.insert("Bad Name".to_owned(), "ok".to_owned());
        let file = SinkConfig::File(FileSinkConfig {
            name: "dup".to_owned(),
            path: PathBuf::new(),
            queue_capacity: 0,
        });
        let Err(AlertError::InvalidSinks(problems)) =
            validate_sinks(&[SinkConfig::Webhook(bad), file])
        else {
            panic!("must be invalid");
        };
        let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(texts.len(), 8, "{texts:#?}");
        assert!(
            texts.iter().all(|text| text.starts_with("sink \"dup\": ")),
            "{texts:#?}"
        );
        for needle in [
            "http or https",
            "timeout_ms",
            "max_attempts",
            "initial_backoff_ms",
            "header name",
            "queue_capacity",
            "path must not be empty",
            "more than one sink",
        ] {
            assert!(
                texts.iter().any(|text| text.contains(needle)),
                "missing {needle}: {texts:#?}"
            );
        }
    }
}
