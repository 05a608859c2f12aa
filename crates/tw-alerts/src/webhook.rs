//! Webhook delivery: one POST per alert, retried with capped exponential backoff and jitter.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::watch;
use tw_core::{Alert, Severity};

use crate::AlertError;
use crate::config::{WebhookFormat, WebhookSinkConfig};

/// Longest part of a failing response body quoted in the error.
const BODY_EXCERPT_BYTES: usize = 200;

/// A webhook sink ready to deliver (validated config, built client).
#[derive(Debug)]
pub(crate) struct WebhookSink {
    config: WebhookSinkConfig,
    client: reqwest::Client,
}

/// Why a delivery ended without success.
#[derive(Debug)]
pub(crate) struct DeliveryFailure {
    pub(crate) error: String,
    pub(crate) attempts: u32,
}

impl WebhookSink {
    /// Builds the HTTP client. The config must have been validated.
    pub(crate) fn build(config: WebhookSinkConfig) -> Result<Self, AlertError> {
        let client_error = |reason: String| AlertError::HttpClient {
            sink: config.name.clone(),
            reason,
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| client_error(e.to_string()))?;
            let mut value =
                HeaderValue::from_str(value).map_err(|e| client_error(e.to_string()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            // A redirect could lead to a private address that validation refused.
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .map_err(|e| client_error(e.to_string()))?;
        Ok(Self { config, client })
    }

    /// Delivers one alert, retrying up to `max_attempts`. Returns the attempts used. Gives up
    /// early on a permanent client error (4xx other than 408 and 429) or when `stop` turns true.
    pub(crate) async fn deliver(
        &self,
        alert: &Alert,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<u32, DeliveryFailure> {
        let body = match self.config.format {
            WebhookFormat::Json => serde_json::to_vec(alert),
            WebhookFormat::Slack => {
                serde_json::to_vec(&serde_json::json!({ "text": slack_text(alert) }))
            }
        }
        .map_err(|e| DeliveryFailure {
            error: format!("alert could not be encoded: {e}"),
            attempts: 0,
        })?;

        let mut attempt = 0;
        loop {
            if *stop.borrow() {
                let error = if attempt == 0 {
                    "dispatcher shut down before delivery".to_owned()
                } else {
                    format!("dispatcher shut down after {attempt} attempts")
                };
                return Err(DeliveryFailure {
                    error,
                    attempts: attempt,
                });
            }
            attempt += 1;
            let request = self
                .client
                .post(&self.config.url)
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send();
            let outcome = tokio::select! {
                response = request => classify(response).await,
                () = stopped(stop) => Err(Attempt::Permanent("dispatcher shut down during the request".to_owned())),
            };
            let error = match outcome {
                Ok(()) => return Ok(attempt),
                Err(Attempt::Permanent(error)) => {
                    return Err(DeliveryFailure {
                        error,
                        attempts: attempt,
                    });
                }
                Err(Attempt::Retryable(error)) => error,
            };
            if attempt >= self.config.max_attempts {
                return Err(DeliveryFailure {
                    error: format!("gave up after {attempt} attempts: {error}"),
                    attempts: attempt,
                });
            }
            let delay = backoff_delay(
                self.config.initial_backoff_ms,
                self.config.max_backoff_ms,
                attempt - 1,
            );
            tracing::debug!(sink = %self.config.name, alert = %alert.id, attempt, %error, ?delay, "webhook delivery failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stopped(stop) => {
                    return Err(DeliveryFailure {
                        error: format!("dispatcher shut down before a retry; last error: {error}"),
                        attempts: attempt,
                    });
                }
            }
        }
    }
}

enum Attempt {
    Retryable(String),
    Permanent(String),
}

async fn classify(response: Result<reqwest::Response, reqwest::Error>) -> Result<(), Attempt> {
    let response = response.map_err(|e| Attempt::Retryable(describe(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.bytes().await.unwrap_or_default();
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT_BYTES)]).into_owned();
    let error = format!("http status {status}: {excerpt}");
    let retryable = status.is_server_error()
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
    Err(if retryable {
        Attempt::Retryable(error)
    } else {
        Attempt::Permanent(error)
    })
}

/// reqwest's top-level message is terse ("error sending request"); the cause says why.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        format!("timeout: {error}")
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves when `stop` becomes true; never if the dispatcher was dropped without shutdown
/// (then queued alerts are still delivered).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Delay before retry number `retry` (0-based): `initial * 2^retry` capped at `max`, then
/// "equal jitter": a random point in `[delay/2, delay]`, so retries of many alerts spread out
/// but never come sooner than half the nominal delay.
pub(crate) fn backoff_delay(initial_ms: u64, max_ms: u64, retry: u32) -> Duration {
    let nominal = initial_ms
        .saturating_mul(1u64.checked_shl(retry).unwrap_or(u64::MAX))
        .min(max_ms);
    let half = nominal / 2;
    // RandomState is seeded randomly per instance: enough randomness for jitter, no extra crate.
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u32(retry);
    let jitter = hasher.finish() % (nominal - half + 1);
    Duration::from_millis(half + jitter)
}

/// The `text` of a Slack-compatible message for an alert, for example
/// `[HIGH] Brute force (brute-force) on stream auth at 2024-05-01T10:00:00.000Z; group user=alice;
/// value 12; alert 1f2e...`.
pub fn slack_text(alert: &Alert) -> String {
    let severity = match alert.severity {
        Severity::Info => "INFO",
        Severity::Low => "LOW",
        Severity::Medium => "MEDIUM",
        Severity::High => "HIGH",
        Severity::Critical => "CRITICAL",
    };
    let mut text = format!(
        "[{severity}] {} ({}) on stream {} at {}",
        alert.rule_title,
        alert.rule_id,
        alert.stream,
        tw_core::format_rfc3339_ms(alert.event_time_ms)
    );
    if let Some(group) = alert.group.as_ref().filter(|group| !group.is_empty()) {
        let pairs: Vec<String> = group
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        text.push_str("; group ");
        text.push_str(&pairs.join(", "));
    }
    if let Some(value) = alert.value {
        text.push_str(&format!("; value {value}"));
    }
    text.push_str(&format!("; alert {}", alert.id));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jitters_within_half() {
        for _ in 0..50 {
            let first = backoff_delay(200, 30_000, 0).as_millis();
            assert!((100..=200).contains(&first), "{first}");
            let fourth = backoff_delay(200, 30_000, 3).as_millis();
            assert!((800..=1_600).contains(&fourth), "{fourth}");
            let capped = backoff_delay(200, 30_000, 40).as_millis();
            assert!((15_000..=30_000).contains(&capped), "{capped}");
            assert!(backoff_delay(200, 30_000, 200).as_millis() <= 30_000);
        }
        assert_eq!(backoff_delay(0, 0, 5), Duration::ZERO);
    }

    #[test]
    fn slack_text_names_rule_group_value_and_id() {
        let alert = Alert {
            id: Alert::id_for("k"),
            dedup_key: "k".to_owned(),
            rule_id: "brute-force".to_owned(),
            rule_title: "Brute force".to_owned(),
            rule_version: 3,
            severity: Severity::High,
            stream: "auth".to_owned(),
            event_time_ms: 1_714_557_600_000,
            created_at_ms: 1_714_557_601_000,
            group: Some(
                [
                    ("user".to_owned(), "alice".to_owned()),
                    ("ip".to_owned(), "1.2.3.4".to_owned()),
                ]
                .into(),
            ),
            window: Some((1_714_557_540_000, 1_714_557_600_000)),
            value: Some(12.0),
            events: vec![],
            event_refs: vec![],
            tags: vec![],
        };
        assert_eq!(
            slack_text(&alert),
            format!(
                "[HIGH] Brute force (brute-force) on stream auth at 2024-05-01T10:00:00.000Z; group ip=1.2.3.4, user=alice; value 12; alert {}",
                Alert::id_for("k")
            )
        );
    }
}
