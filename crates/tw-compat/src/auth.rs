//! Who may write and read: the `[auth]` section of `tidewatch.toml` and its checks.
//!
//! With nothing configured every endpoint is open (the laptop default). As soon as any
//! credential is configured, every endpoint requires its own kind: an API key
//! (`Authorization: Bearer KEY` or `ApiKey KEY`) on the native API and `_bulk`, an AWS
//! Signature Version 4 by a configured access key on the Kinesis and Firehose APIs, and the
//! `X-Amz-Firehose-Access-Key` header (or an API key) on the Firehose HTTP endpoint. An
//! endpoint whose kind of credential is not configured is then closed, never open by accident.
//! `/healthz` and `/readyz` stay open for load balancers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::sigv4::{self, SigV4Error, Signer, constant_time_eq};

/// `[auth]` in `tidewatch.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Keys accepted as `Authorization: Bearer KEY` or `ApiKey KEY` on the native API and
    /// `_bulk` (and as the Firehose HTTP endpoint's access key).
    pub api_keys: Vec<String>,
    /// Keys accepted in `X-Amz-Firehose-Access-Key` on `POST /firehose/{stream}`.
    pub firehose_access_keys: Vec<String>,
    /// AWS credentials whose SigV4 signatures the Kinesis and Firehose APIs accept.
    pub aws_keys: Vec<AwsKey>,
}

/// One AWS access key pair (`[[auth.aws_keys]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsKey {
    /// The access key id clients configure (`aws_access_key_id`).
    pub access_key_id: String,
    /// Its secret (`aws_secret_access_key`).
    pub secret_access_key: String,
}

impl AuthConfig {
    /// Every problem of the section (empty keys would match an empty header).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.api_keys.iter().any(String::is_empty) {
            problems.push("auth.api_keys: a key must not be empty".to_string());
        }
        if self.firehose_access_keys.iter().any(String::is_empty) {
            problems.push("auth.firehose_access_keys: a key must not be empty".to_string());
        }
        if self
            .aws_keys
            .iter()
            .any(|k| k.access_key_id.is_empty() || k.secret_access_key.is_empty())
        {
            problems.push(
                "auth.aws_keys: access_key_id and secret_access_key must not be empty".to_string(),
            );
        }
        problems
    }

    fn enabled(&self) -> bool {
        !(self.api_keys.is_empty()
            && self.firehose_access_keys.is_empty()
            && self.aws_keys.is_empty())
    }
}

/// A refused credential: 401 when none was given, 403 when the one given is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// 401 or 403.
    pub status: StatusCode,
    /// What to fix.
    pub message: String,
}

impl Denied {
    fn missing(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    fn wrong(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }
}

/// The configured credentials and the checks of each endpoint kind.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    config: AuthConfig,
}

impl Auth {
    /// Checks built from the `[auth]` section.
    pub fn new(config: AuthConfig) -> Self {
        Self { config }
    }

    /// Whether any credential is configured.
    pub fn enabled(&self) -> bool {
        self.config.enabled()
    }

    /// The API key check of the native API and `_bulk`.
    pub fn check_api_key(&self, headers: &HeaderMap) -> Result<(), Denied> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Err(Denied::missing(
                "missing credentials: send Authorization: Bearer <api key>",
            ));
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("ApiKey "))
            .unwrap_or_default()
            .trim();
        if self.config.api_keys.is_empty() {
            return Err(Denied::wrong("no API keys are configured on this server"));
        }
        if token.is_empty() || !matches_any(&self.config.api_keys, token) {
            return Err(Denied::wrong("invalid API key"));
        }
        Ok(())
    }

    /// The access-key check of the Firehose HTTP endpoint.
    pub fn check_firehose_key(&self, headers: &HeaderMap) -> Result<(), Denied> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(key) = headers
            .get("x-amz-firehose-access-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty())
        else {
            return Err(Denied::missing(
                "missing X-Amz-Firehose-Access-Key: configure the access key of the delivery stream's HTTP endpoint",
            ));
        };
        if matches_any(&self.config.firehose_access_keys, key)
            || matches_any(&self.config.api_keys, key)
        {
            Ok(())
        } else {
            Err(Denied::wrong("invalid X-Amz-Firehose-Access-Key"))
        }
    }

    /// The SigV4 check of the Kinesis and Firehose APIs. `Ok(None)` when auth is off.
    pub fn check_sigv4(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Option<Signer>, Denied> {
        if !self.enabled() {
            return Ok(None);
        }
        let secret_for = |id: &str| {
            self.config
                .aws_keys
                .iter()
                .find(|k| constant_time_eq(k.access_key_id.as_bytes(), id.as_bytes()))
                .map(|k| k.secret_access_key.clone())
        };
        sigv4::verify(
            method,
            path,
            query,
            headers,
            body,
            tw_core::now_ms(),
            secret_for,
        )
        .map(Some)
        .map_err(|error| match error {
            SigV4Error::Missing => Denied::missing(error.to_string()),
            _ => Denied::wrong(error.to_string()),
        })
    }
}

fn matches_any(keys: &[String], candidate: &str) -> bool {
    // Every key is compared, so the time taken does not tell which one nearly matched.
    keys.iter().fold(false, |found, key| {
        constant_time_eq(key.as_bytes(), candidate.as_bytes()) | found
    })
}

/// Middleware for the native API: requires an API key except on health checks.
pub async fn require_api_key(
    State(auth): State<Arc<Auth>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !auth.enabled() || path == "/healthz" || path == "/readyz" {
        return next.run(request).await;
    }
    match auth.check_api_key(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            metrics::counter!("tidewatch_auth_denied_total", "api" => "native").increment(1);
            let mut response = (
                denied.status,
                axum::Json(serde_json::json!({ "error": denied.message })),
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tidewatch\""),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn open_without_config_and_closed_per_kind_with_it() {
        let open = Auth::default();
        assert!(open.check_api_key(&HeaderMap::new()).is_ok());
        assert!(open.check_firehose_key(&HeaderMap::new()).is_ok());

        let auth = Auth::new(AuthConfig {
            api_keys: vec!["k1".into()],
            ..Default::default()
        });
        assert!(
            auth.check_api_key(&headers(&[("authorization", "Bearer k1")]))
                .is_ok()
        );
        assert!(
            auth.check_api_key(&headers(&[("authorization", "ApiKey k1")]))
                .is_ok()
        );
        assert_eq!(
            auth.check_api_key(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            auth.check_api_key(&headers(&[("authorization", "Bearer k2")]))
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
        // No AWS keys configured: signed calls are refused, not let through.
        assert!(
            auth.check_sigv4(&Method::POST, "/", None, &HeaderMap::new(), b"")
                .is_err()
        );
        assert!(
            auth.check_firehose_key(&headers(&[("x-amz-firehose-access-key", "k1")]))
                .is_ok()
        );
        assert!(
            auth.check_firehose_key(&headers(&[("x-amz-firehose-access-key", "nope")]))
                .is_err()
        );
    }
}
