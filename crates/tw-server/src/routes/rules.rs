//! Rule CRUD, enable/disable, history and dry-run (`POST /api/v1/rules/test`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tw_core::{StreamName, now_ms};
use tw_detect::{Rule, RuleFormat, parse_rule};
use tw_sigma::Translation;

use crate::replay::{LakeHistory, ReplayOutcome, replay_events, replay_stored};
use crate::rules::{RuleChange, RuleRegistryError};
use crate::{ApiError, AppState, who};

impl From<RuleRegistryError> for ApiError {
    fn from(error: RuleRegistryError) -> Self {
        let status = match &error {
            RuleRegistryError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RuleRegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RuleRegistryError::Exists(_)
            | RuleRegistryError::InUse { .. }
            | RuleRegistryError::BreaksCorrelation { .. } => StatusCode::CONFLICT,
            RuleRegistryError::Io { .. } => return ApiError::Internal(error.to_string()),
        };
        ApiError::BadRequest {
            status,
            message: error.to_string(),
        }
    }
}

fn format_of(headers: &HeaderMap) -> RuleFormat {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.contains("yaml") {
        RuleFormat::Yaml
    } else if content_type.contains("json") {
        RuleFormat::Json
    } else {
        RuleFormat::Auto
    }
}

/// A Sigma file translated with the server's Sigma settings; a correlation's references that
/// the file does not hold are looked up among the stored rules (by id, else by Sigma name).
/// The main rule comes first.
fn translate_sigma(state: &AppState, text: &str) -> Result<Translation, String> {
    tw_sigma::translate_file_with_stored(text, &state.sigma, state.rules.as_ref())
        .map_err(|e| e.to_string())
}

/// A native rule (YAML or JSON), or a Sigma file (YAML with top-level `detection:` and
/// `logsource:`, or `correlation:`): the rules to store, the main one first (a Sigma
/// correlation with `generate: true` also stores the rules it refers to), and the sources of
/// the correlations that follow stored rules.
fn parse_body(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Translation, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("rule body is not UTF-8"))?;
    let unprocessable = |message: String| ApiError::BadRequest {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message,
    };
    if tw_sigma::is_sigma(text) {
        return translate_sigma(state, text).map_err(unprocessable);
    }
    parse_rule(text, format_of(headers))
        .map(|rule| Translation {
            rules: vec![rule],
            sources: BTreeMap::new(),
        })
        .map_err(|e| unprocessable(e.to_string()))
}

/// The main rule as JSON, with `also_stored` listing the ids of the other rules of the body
/// and `correlations_updated` the Sigma correlations stored again because they follow one.
fn with_others(main: &Rule, others: &[(Rule, Option<Rule>)], followed: &[String]) -> Value {
    let mut value = serde_json::to_value(main).unwrap_or(Value::Null);
    if let Value::Object(object) = &mut value {
        if !others.is_empty() {
            let ids: Vec<&str> = others.iter().map(|(rule, _)| rule.id.as_str()).collect();
            object.insert("also_stored".into(), json!(ids));
        }
        if !followed.is_empty() {
            object.insert("correlations_updated".into(), json!(followed));
        }
    }
    value
}

pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Json<Vec<Rule>> {
    Json(state.rules.list())
}

pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Rule>, ApiError> {
    state
        .rules
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("rule {id} does not exist")))
}

pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let translation = parse_body(&state, &headers, &body)?;
    let upserted = state.rules.upsert_all_with_sources(
        translation.rules,
        translation.sources,
        &who(&headers),
        false,
    )?;
    let mut stored = upserted.rules;
    let (main, _) = stored.remove(0);
    Ok((
        StatusCode::CREATED,
        Json(with_others(&main, &stored, &upserted.followed)),
    ))
}

pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let translation = parse_body(&state, &headers, &body)?;
    if translation.rules[0].id != id {
        return Err(ApiError::bad_request(format!(
            "the rule's id {:?} does not match the URL's {id:?}",
            translation.rules[0].id
        )));
    }
    let upserted = state.rules.upsert_all_with_sources(
        translation.rules,
        translation.sources,
        &who(&headers),
        true,
    )?;
    let mut all = upserted.rules;
    let (stored, before) = all.remove(0);
    // Window state survives when only bookkeeping changed (title, severity, sinks...).
    let state_kept = match (&before, stored.compile()) {
        (Some(before), Ok(after)) => before
            .compile()
            .is_ok_and(|before| before.same_definition(&after)),
        _ => false,
    };
    let mut answer = json!({ "rule": stored, "created": before.is_none(), "state_reset": before.is_some() && !state_kept });
    if !all.is_empty() {
        let ids: Vec<&str> = all.iter().map(|(rule, _)| rule.id.as_str()).collect();
        answer["also_stored"] = json!(ids);
    }
    if !upserted.followed.is_empty() {
        answer["correlations_updated"] = json!(upserted.followed);
    }
    Ok(Json(answer))
}

pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Rule>, ApiError> {
    Ok(Json(state.rules.delete(&id, &who(&headers))?))
}

pub(crate) async fn enable(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Rule>, ApiError> {
    Ok(Json(state.rules.set_enabled(&id, true, &who(&headers))?))
}

pub(crate) async fn disable(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Rule>, ApiError> {
    Ok(Json(state.rules.set_enabled(&id, false, &who(&headers))?))
}

pub(crate) async fn history(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<RuleChange>>, ApiError> {
    let changes = state.rules.history(&id)?;
    if changes.is_empty() && state.rules.get(&id).is_none() {
        return Err(ApiError::not_found(format!("rule {id} has no history")));
    }
    Ok(Json(changes))
}

/// Body of a dry-run: the rule (object, or YAML/JSON text) and either inline events or a time
/// range of stored events (ingest time, RFC 3339 or Unix milliseconds).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DryRun {
    rule: Value,
    #[serde(default)]
    events: Option<Vec<Value>>,
    #[serde(default)]
    from: Option<Value>,
    #[serde(default)]
    to: Option<Value>,
}

fn result_json(rule_id: &str, outcome: &ReplayOutcome, took: std::time::Duration) -> Value {
    json!({
        "rule_id": rule_id,
        "evaluated": outcome.evaluated,
        "truncated": outcome.truncated,
        "unreadable": outcome.unreadable,
        "alerts": outcome.alerts,
        "took_ms": took.as_secs_f64() * 1000.0,
    })
}

/// `POST /api/v1/rules/test`. With `Accept: application/x-ndjson` the answer is a stream of
/// `{"progress": {"read": n, "total": m}}` lines ending with `{"result": {...}}` (what
/// `tidewatch replay` shows as a progress bar); otherwise one JSON document.
pub(crate) async fn test(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(request): Json<DryRun>,
) -> Result<Response, ApiError> {
    let text = match &request.rule {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    // A Sigma rule can be dry-run before it is stored, like a native one (a file's main rule:
    // a correlation is dry-run, not the rules it refers to).
    let parsed = if tw_sigma::is_sigma(&text) {
        translate_sigma(&state, &text).map(|mut translation| translation.rules.remove(0))
    } else {
        parse_rule(&text, RuleFormat::Auto).map_err(|e| e.to_string())
    };
    let mut rule = parsed.map_err(|message| ApiError::BadRequest {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message,
    })?;
    rule.enabled = true;
    let compiled = Arc::new(rule.compile().map_err(|e| ApiError::BadRequest {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: e.to_string(),
    })?);
    let started = Instant::now();
    let config = state.engine_config.clone();
    if let Some(events) = request.events {
        if request.from.is_some() || request.to.is_some() {
            return Err(ApiError::bad_request(
                "give either `events` or a `from`/`to` range, not both",
            ));
        }
        let now = now_ms();
        let stream = StreamName::new(&rule.stream)
            .ok()
            .map(|name| state.ingestor.registry().get_or_default(&name));
        let time_of = |event: &Value| stream.as_ref().map_or(now, |s| s.event_time_of(event, now));
        let outcome = replay_events(compiled, &config, &events, &time_of);
        return Ok(Json(result_json(&rule.id, &outcome, started.elapsed())).into_response());
    }
    let from = time_arg(request.from.as_ref(), "from")?.unwrap_or(0);
    let to = time_arg(request.to.as_ref(), "to")?.unwrap_or(i64::MAX);
    if from > to {
        return Err(ApiError::bad_request("`from` is after `to`"));
    }
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    let log = state.log.clone();
    let rule_id = rule.id.clone();
    // The lake too, where it holds rows of the stream (the log's retention may be shorter).
    let lake = StreamName::new(&rule.stream)
        .ok()
        .filter(|stream| state.lake.table_schema(stream).is_some())
        .map(|_| LakeHistory {
            query: state.query.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
    if lake.is_some() {
        // As before any query: the lake shows its files once its consumer has started and
        // caught up (a file past the hot start is hidden until then), right after a restart
        // too.
        let stream = StreamName::new(&rule.stream).ok();
        state
            .lake_progress
            .wait_caught_up(
                state.log.as_ref(),
                stream.as_ref(),
                state.query_freshness_wait,
            )
            .await;
    }
    if !streaming {
        let outcome = tokio::task::spawn_blocking(move || {
            replay_stored(
                log.as_ref(),
                lake.as_ref(),
                compiled,
                &config,
                from,
                to,
                &mut |_, _| {},
            )
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        return Ok(Json(result_json(&rule_id, &outcome, started.elapsed())).into_response());
    }
    // Validate before answering 200: a missing stream is still a 404.
    let stream = StreamName::new(&rule.stream).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if state.log.partitions(&stream).is_none() && lake.is_none() {
        return Err(ApiError::not_found(format!(
            "stream {stream} does not exist"
        )));
    }
    let (lines, receiver) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        let line = |value: Value| {
            let mut bytes = value.to_string().into_bytes();
            bytes.push(b'\n');
            Bytes::from(bytes)
        };
        let mut report = |read: u64, total: u64| {
            let _ = lines.blocking_send(line(json!({"progress": {"read": read, "total": total}})));
        };
        let outcome = replay_stored(
            log.as_ref(),
            lake.as_ref(),
            compiled,
            &config,
            from,
            to,
            &mut report,
        );
        let last = match outcome {
            Ok(outcome) => json!({"result": result_json(&rule_id, &outcome, started.elapsed())}),
            Err(error) => json!({"error": error.to_string()}),
        };
        let _ = lines.blocking_send(line(last));
    });
    let body = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), receiver))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

fn time_arg(value: Option<&Value>, name: &str) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            tw_core::parse_time_ms(v)
                .ok_or_else(|| ApiError::bad_request(format!("`{name}` is not a time: {v}")))
        })
        .transpose()
}
