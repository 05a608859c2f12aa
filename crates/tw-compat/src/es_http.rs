//! The Elasticsearch wire conventions every ES-compatible endpoint shares (`_bulk`, the cluster
//! root, the setup calls of [`crate::es_setup`]): the product header, the negotiated media type,
//! ES-shaped errors, the credential check, and the cluster root itself.
//!
//! Clients since 8.0 refuse a server without `X-Elastic-Product: Elasticsearch`, and send
//! `application/vnd.elasticsearch+json; compatible-with=N`: every answer built here carries the
//! header and echoes that media type, and the root reports a version of the major the client
//! asked for.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::CompatState;

/// The major version reported when the client does not ask for one.
const DEFAULT_MAJOR: u32 = 9;

/// The `compatible-with=N` a request asked for (Accept first, then Content-Type).
pub(crate) fn compatible_with(headers: &HeaderMap) -> Option<u32> {
    [header::ACCEPT, header::CONTENT_TYPE]
        .iter()
        .filter_map(|name| headers.get(name)?.to_str().ok())
        .find_map(|value| {
            let (_, rest) = value.split_once("compatible-with=")?;
            rest.trim()
                .trim_matches('"')
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
}

/// An Elasticsearch answer: JSON, the product header, the negotiated media type.
pub(crate) fn es_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<&Value>,
) -> Response {
    es_response_bytes(status, headers, body.map(|b| b.to_string().into_bytes()))
}

/// [`es_response`] for a body serialised by the caller.
pub(crate) fn es_response_bytes(
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<Vec<u8>>,
) -> Response {
    let content_type = match compatible_with(headers) {
        Some(major) => format!("application/vnd.elasticsearch+json;compatible-with={major}"),
        None => "application/json".to_string(),
    };
    let mut response = match body {
        Some(body) => (status, body).into_response(),
        None => status.into_response(),
    };
    let out = response.headers_mut();
    out.insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        out.insert(header::CONTENT_TYPE, value);
    }
    response
}

/// An ES error document (`{"error": {"root_cause": [...], "type", "reason"}, "status"}`).
pub(crate) fn es_error(
    status: StatusCode,
    headers: &HeaderMap,
    kind: &str,
    reason: &str,
) -> Response {
    let body = json!({
        "error": { "root_cause": [{ "type": kind, "reason": reason }], "type": kind, "reason": reason },
        "status": status.as_u16(),
    });
    es_response(status, headers, Some(&body))
}

/// The answer to a request whose credentials were refused; `head` answers without a body, as a
/// HEAD response must.
pub(crate) fn auth_error(
    denied: &crate::auth::Denied,
    headers: &HeaderMap,
    head: bool,
) -> Response {
    metrics::counter!("tidewatch_auth_denied_total", "api" => "bulk").increment(1);
    let mut response = if head {
        es_response(denied.status, headers, None)
    } else {
        es_error(
            denied.status,
            headers,
            "security_exception",
            &denied.message,
        )
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("ApiKey, Bearer realm=\"tidewatch\""),
    );
    response
}

fn root_document(major: u32) -> Value {
    // A version of the requested major that its clients accept (8.x clients check >= 8.0).
    let number = match major {
        7 => "7.17.0",
        8 => "8.17.0",
        _ => "9.0.0",
    };
    json!({
        "name": "tidewatch",
        "cluster_name": "tidewatch",
        "cluster_uuid": "tidewatch-compat",
        "version": {
            "number": number,
            "build_flavor": "default",
            "build_type": "tidewatch",
            // Tidewatch's own version, not an Elasticsearch build.
            "build_hash": env!("CARGO_PKG_VERSION"),
            "build_snapshot": false,
            "lucene_version": "10.1.0",
            "minimum_wire_compatibility_version": "8.18.0",
            "minimum_index_compatibility_version": "8.0.0",
        },
        "tagline": "You Know, for Search",
    })
}

/// `GET /`: the cluster root.
pub(crate) async fn root(State(state): State<Arc<CompatState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.auth.check_api_key(&headers) {
        return auth_error(&denied, &headers, false);
    }
    let major = compatible_with(&headers).unwrap_or(DEFAULT_MAJOR);
    es_response(StatusCode::OK, &headers, Some(&root_document(major)))
}

/// `HEAD /`: the ping clients send before anything else.
pub(crate) async fn root_head(
    State(state): State<Arc<CompatState>>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = state.auth.check_api_key(&headers) {
        return auth_error(&denied, &headers, true);
    }
    es_response(StatusCode::OK, &headers, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_follows_the_client() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            "application/vnd.elasticsearch+json; compatible-with=8"
                .parse()
                .unwrap(),
        );
        assert_eq!(compatible_with(&headers), Some(8));
        assert_eq!(root_document(8)["version"]["number"], "8.17.0");
        assert_eq!(compatible_with(&HeaderMap::new()), None);
    }
}
