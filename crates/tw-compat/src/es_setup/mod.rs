//! The calls Elasticsearch agents (Filebeat, Logstash, elasticsearch-py users) make at startup
//! before they write: the license, the X-Pack feature list, composable and legacy index
//! templates, ILM policies and their deletion ([`delete`]), index / data stream creation and
//! existence ([`indices`]), and the data streams' descriptions ([`data_streams`]).
//!
//! Templates and policies are stored durably ([`store`]) and answered back by GET, so an
//! agent's "does my template exist? else PUT it" sequence succeeds and converges. They do not
//! change Tidewatch: a stream's schema is inferred from its events (or set with
//! `PUT /api/v1/streams/{stream}`), its retention is the stream's, and no lifecycle runs.
//! That is why `GET /_xpack` reports ILM as available but not enabled: agents in ILM "auto"
//! mode then write to plain indexes instead of creating rollover aliases Tidewatch lacks.
//!
//! Every answer carries the ES wire conventions of `crate::es_http`; bad bodies get a 400
//! whose error type and reason name the problem ([`SetupError`]); every call needs the same
//! API key as `_bulk` when `[auth]` is on.

mod data_streams;
mod delete;
mod error;
mod indices;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, OnceCell};
use tw_core::now_ms;
use tw_pipeline::{ContentEncoding, decode_body};

pub use error::SetupError;
use store::{Definition, Kind, SetupStore, kind_label};

use crate::CompatState;
use crate::es_http::{auth_error, es_error, es_response};

/// What the setup routes share.
pub(crate) struct SetupState {
    compat: Arc<CompatState>,
    /// Opened on first use: `router()` stays infallible, and a server no agent sets up
    /// never reads the stream.
    store: OnceCell<Arc<SetupStore>>,
    /// Serialises "does the stream exist? create it" so that of two concurrent creations of
    /// one index, one is told it already exists, as in ES.
    creating: Mutex<()>,
    /// When this server started: the issue date of the license it reports.
    started_ms: i64,
}

impl SetupState {
    async fn store(&self) -> Result<&SetupStore, SetupError> {
        let store = self
            .store
            .get_or_try_init(|| async {
                let log = self.compat.log.clone();
                tokio::task::spawn_blocking(move || SetupStore::open(log))
                    .await
                    .map_err(|e| SetupError::Stopped {
                        what: "opening the setup store",
                        reason: e.to_string(),
                    })?
                    .map(Arc::new)
            })
            .await?;
        Ok(store)
    }
}

/// The setup routes (merged into [`crate::router`]).
pub(crate) fn router(compat: Arc<CompatState>) -> Router {
    let state = Arc::new(SetupState {
        compat,
        store: OnceCell::new(),
        creating: Mutex::new(()),
        started_ms: now_ms(),
    });
    Router::new()
        .route("/_license", get(license))
        .route("/_xpack", get(xpack))
        .route("/_index_template", get(get_all_index_templates))
        .route(
            "/_index_template/{name}",
            get(get_index_templates)
                .head(head_index_template)
                .put(put_index_template)
                .post(put_index_template)
                .delete(delete::delete_index_template),
        )
        .route("/_template", get(get_all_legacy_templates))
        .route(
            "/_template/{name}",
            get(get_legacy_templates)
                .head(head_legacy_template)
                .put(put_legacy_template)
                .post(put_legacy_template)
                .delete(delete::delete_legacy_template),
        )
        .route("/_ilm/policy", get(get_all_policies))
        .route(
            "/_ilm/policy/{name}",
            get(get_policies)
                .put(put_policy)
                .delete(delete::delete_policy),
        )
        .route("/_data_stream", get(data_streams::get_all_data_streams))
        .route(
            "/_data_stream/{name}",
            get(data_streams::get_data_streams).put(indices::put_data_stream),
        )
        .route(
            "/{index}",
            get(indices::get_index)
                .head(indices::head_index)
                .put(indices::put_index),
        )
        .with_state(state)
}

/// The outcome of a setup call: a status and body, or an error.
type Answer = Result<(StatusCode, Value), SetupError>;

/// Checks the credentials, runs `call` and answers in ES's shape (no body for HEAD).
async fn guarded(
    state: &SetupState,
    headers: &HeaderMap,
    operation: &'static str,
    head: bool,
    call: impl Future<Output = Answer>,
) -> Response {
    metrics::counter!("tidewatch_compat_requests_total", "api" => "elasticsearch", "operation" => operation)
        .increment(1);
    if let Err(denied) = state.compat.auth.check_api_key(headers) {
        return auth_error(&denied, headers, head);
    }
    match call.await {
        Ok((status, _)) if head => es_response(status, headers, None),
        Ok((status, body)) => es_response(status, headers, Some(&body)),
        Err(error) => {
            let status = error.status();
            if status.is_server_error() {
                tracing::warn!(%error, operation, "Elasticsearch setup call failed");
            }
            if head {
                es_response(status, headers, None)
            } else {
                es_error(status, headers, error.es_type(), &error.to_string())
            }
        }
    }
}

/// The JSON object a call sent (`None` for an empty body), gunzipped when gzip.
fn json_object(
    state: &SetupState,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Option<Map<String, Value>>, SetupError> {
    let encoding = ContentEncoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )?;
    let body = decode_body(body, encoding, state.compat.ingestor.limits())?;
    if body.trim_ascii().is_empty() {
        return Ok(None);
    }
    match serde_json::from_slice(&body) {
        Ok(Value::Object(object)) => Ok(Some(object)),
        Ok(_) => Err(SetupError::BadBody(
            "the request body must be a JSON object".into(),
        )),
        Err(error) => Err(SetupError::BadBody(format!(
            "the request body is not valid JSON: {error}"
        ))),
    }
}

fn required(object: Option<Map<String, Value>>) -> Result<Map<String, Value>, SetupError> {
    object.ok_or_else(|| SetupError::BadBody("request body is required".into()))
}

/// Checks that `field`, when present, is a JSON value of the kind `is_kind` accepts.
fn check_field(
    object: &Map<String, Value>,
    field: &str,
    expected: &str,
    is_kind: impl Fn(&Value) -> bool,
) -> Result<(), SetupError> {
    match object.get(field) {
        Some(value) if !is_kind(value) => Err(SetupError::BadBody(format!(
            "[{field}] must be {expected}, got {value}"
        ))),
        _ => Ok(()),
    }
}

/// `index_patterns`: required, a string or a non-empty array of non-empty strings.
fn check_index_patterns(object: &Map<String, Value>) -> Result<(), SetupError> {
    let valid = match object.get("index_patterns") {
        None => return Err(SetupError::Validation("index patterns are missing".into())),
        Some(Value::String(pattern)) => !pattern.is_empty(),
        Some(Value::Array(patterns)) => {
            !patterns.is_empty()
                && patterns
                    .iter()
                    .all(|p| p.as_str().is_some_and(|p| !p.is_empty()))
        }
        Some(_) => false,
    };
    if valid {
        Ok(())
    } else {
        Err(SetupError::BadBody(
            "[index_patterns] must be a non-empty string or array of non-empty strings".into(),
        ))
    }
}

/// Template and policy names: ES refuses the characters of its name expressions.
fn check_name(kind: Kind, name: &str) -> Result<(), SetupError> {
    match name.chars().find(|c| {
        matches!(
            c,
            '*' | ',' | ' ' | '"' | '\\' | '/' | '?' | '<' | '>' | '|' | '#'
        )
    }) {
        Some(c) => Err(SetupError::IllegalArgument(format!(
            "{} [{name}] invalid, cause [name must not contain '{c}']",
            kind_label(kind)
        ))),
        None => Ok(()),
    }
}

/// Whether the query string asks for `create=true`.
fn create_only(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
        key == "create" && value == "true"
    })
}

/// The definitions a name expression selects; a plain name that is not stored is a 404, as in
/// ES, while a wildcard may match nothing.
async fn lookup(
    state: &SetupState,
    kind: Kind,
    pattern: &str,
) -> Result<Vec<(String, Definition)>, SetupError> {
    let found = state.store().await?.matching(kind, pattern).await;
    for name in pattern.split(',').map(str::trim) {
        if !name.contains('*') && !found.iter().any(|(stored, _)| stored == name) {
            return Err(SetupError::NotFound(match kind {
                Kind::IlmPolicy => format!("Lifecycle policy not found: {name}"),
                _ => format!("{} matching [{name}] not found", kind_label(kind)),
            }));
        }
    }
    Ok(found)
}

/// HEAD of a name expression: 200 when it selects any definition (a wildcard matching nothing
/// is a 404 here, unlike GET).
async fn exists(state: &SetupState, kind: Kind, pattern: &str) -> Answer {
    if lookup(state, kind, pattern).await?.is_empty() {
        return Err(SetupError::NotFound(format!(
            "{} matching [{pattern}] not found",
            kind_label(kind)
        )));
    }
    Ok((StatusCode::OK, Value::Null))
}

fn acknowledged() -> Answer {
    Ok((StatusCode::OK, json!({ "acknowledged": true })))
}

fn iso_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `GET /_license`: a basic, active license (what a cluster without a paid one reports).
async fn license(State(state): State<Arc<SetupState>>, headers: HeaderMap) -> Response {
    let started_ms = state.started_ms;
    guarded(&state, &headers, "license", false, async move {
        Ok((
            StatusCode::OK,
            json!({ "license": {
                "status": "active",
                "uid": "tidewatch-basic",
                "type": "basic",
                "issue_date": iso_time(started_ms),
                "issue_date_in_millis": started_ms,
                "max_nodes": 1000,
                "max_resource_units": null,
                "issued_to": "tidewatch",
                "issuer": "tidewatch",
                "start_date_in_millis": -1,
            }}),
        ))
    })
    .await
}

/// `GET /_xpack`: the build, the license, and ILM as available but not enabled (see the
/// module documentation).
async fn xpack(State(state): State<Arc<SetupState>>, headers: HeaderMap) -> Response {
    let started_ms = state.started_ms;
    guarded(&state, &headers, "xpack", false, async move {
        Ok((
            StatusCode::OK,
            json!({
                "build": { "hash": env!("CARGO_PKG_VERSION"), "date": iso_time(started_ms) },
                "license": { "uid": "tidewatch-basic", "type": "basic", "mode": "basic", "status": "active" },
                "features": { "ilm": { "available": true, "enabled": false } },
                "tagline": "You know, for X",
            }),
        ))
    })
    .await
}

async fn index_templates(state: &SetupState, pattern: &str) -> Answer {
    let templates: Vec<Value> = lookup(state, Kind::IndexTemplate, pattern)
        .await?
        .into_iter()
        .map(|(name, definition)| {
            let mut template = definition.body;
            // ES answers the patterns as a list whichever way they were sent.
            if let Some(pattern @ Value::String(_)) = template.get_mut("index_patterns") {
                *pattern = json!([pattern.take()]);
            }
            json!({ "name": name, "index_template": template })
        })
        .collect();
    Ok((StatusCode::OK, json!({ "index_templates": templates })))
}

async fn get_all_index_templates(
    State(state): State<Arc<SetupState>>,
    headers: HeaderMap,
) -> Response {
    let call = index_templates(&state, "*");
    guarded(&state, &headers, "get_index_template", false, call).await
}

async fn get_index_templates(
    State(state): State<Arc<SetupState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = index_templates(&state, &name);
    guarded(&state, &headers, "get_index_template", false, call).await
}

async fn head_index_template(
    State(state): State<Arc<SetupState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = exists(&state, Kind::IndexTemplate, &name);
    guarded(&state, &headers, "exists_index_template", true, call).await
}

async fn put_index_template(
    State(state): State<Arc<SetupState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = async {
        check_name(Kind::IndexTemplate, &name)?;
        let template = required(json_object(&state, &headers, body)?)?;
        check_index_patterns(&template)?;
        check_field(
            &template,
            "priority",
            "a non-negative integer",
            Value::is_u64,
        )?;
        check_field(&template, "version", "an integer", Value::is_i64)?;
        check_field(&template, "template", "an object", Value::is_object)?;
        check_field(&template, "data_stream", "an object", Value::is_object)?;
        check_field(&template, "_meta", "an object", Value::is_object)?;
        check_field(&template, "composed_of", "an array of names", |v| {
            v.as_array()
                .is_some_and(|names| names.iter().all(Value::is_string))
        })?;
        let store = state.store().await?;
        let create = create_only(query.as_deref());
        store
            .put(Kind::IndexTemplate, &name, Value::Object(template), create)
            .await?;
        acknowledged()
    };
    guarded(&state, &headers, "put_index_template", false, call).await
}

async fn legacy_templates(state: &SetupState, pattern: &str) -> Answer {
    let mut templates = Map::new();
    for (name, definition) in lookup(state, Kind::LegacyTemplate, pattern).await? {
        let mut template = definition.body;
        // The shape ES answers: every part present.
        if let Value::Object(parts) = &mut template {
            parts.entry("order").or_insert(json!(0));
            for part in ["settings", "mappings", "aliases"] {
                parts.entry(part).or_insert(json!({}));
            }
            if let Some(pattern @ Value::String(_)) = parts.get_mut("index_patterns") {
                *pattern = json!([pattern.take()]);
            }
        }
        templates.insert(name, template);
    }
    Ok((StatusCode::OK, Value::Object(templates)))
}

async fn get_all_legacy_templates(
    State(state): State<Arc<SetupState>>,
    headers: HeaderMap,
) -> Response {
    let call = legacy_templates(&state, "*");
    guarded(&state, &headers, "get_template", false, call).await
}

async fn get_legacy_templates(
    State(state): State<Arc<SetupState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = legacy_templates(&state, &name);
    guarded(&state, &headers, "get_template", false, call).await
}

async fn head_legacy_template(
    State(state): State<Arc<SetupState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = exists(&state, Kind::LegacyTemplate, &name);
    guarded(&state, &headers, "exists_template", true, call).await
}

async fn put_legacy_template(
    State(state): State<Arc<SetupState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = async {
        check_name(Kind::LegacyTemplate, &name)?;
        let template = required(json_object(&state, &headers, body)?)?;
        check_index_patterns(&template)?;
        check_field(&template, "order", "an integer", Value::is_i64)?;
        check_field(&template, "version", "an integer", Value::is_i64)?;
        for part in ["settings", "mappings", "aliases"] {
            check_field(&template, part, "an object", Value::is_object)?;
        }
        let store = state.store().await?;
        let create = create_only(query.as_deref());
        store
            .put(Kind::LegacyTemplate, &name, Value::Object(template), create)
            .await?;
        acknowledged()
    };
    guarded(&state, &headers, "put_template", false, call).await
}

async fn policies(state: &SetupState, pattern: &str) -> Answer {
    let mut policies = Map::new();
    for (name, definition) in lookup(state, Kind::IlmPolicy, pattern).await? {
        policies.insert(
            name,
            json!({
                "version": definition.version,
                "modified_date": iso_time(definition.modified_ms),
                "policy": definition.body["policy"],
            }),
        );
    }
    Ok((StatusCode::OK, Value::Object(policies)))
}

async fn get_all_policies(State(state): State<Arc<SetupState>>, headers: HeaderMap) -> Response {
    let call = policies(&state, "*");
    guarded(&state, &headers, "get_lifecycle", false, call).await
}

async fn get_policies(
    State(state): State<Arc<SetupState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let call = policies(&state, &name);
    guarded(&state, &headers, "get_lifecycle", false, call).await
}

async fn put_policy(
    State(state): State<Arc<SetupState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = async {
        check_name(Kind::IlmPolicy, &name)?;
        let request = required(json_object(&state, &headers, body)?)?;
        if let Some(unknown) = request.keys().find(|key| *key != "policy") {
            return Err(SetupError::BadBody(format!(
                "[put_lifecycle_request] unknown field [{unknown}]"
            )));
        }
        let Some(Value::Object(policy)) = request.get("policy") else {
            return Err(SetupError::BadBody(
                "[policy] is required and must be an object: {\"policy\": {\"phases\": {...}}}"
                    .into(),
            ));
        };
        check_field(policy, "phases", "an object", Value::is_object)?;
        check_field(policy, "_meta", "an object", Value::is_object)?;
        let store = state.store().await?;
        store
            .put(Kind::IlmPolicy, &name, Value::Object(request), false)
            .await?;
        acknowledged()
    };
    guarded(&state, &headers, "put_lifecycle", false, call).await
}
