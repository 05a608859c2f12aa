//! Rule CRUD, enable/disable, history and dry-run (`POST /api/v1/rules/test`).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tw_core::{Alert, Record, StreamName, now_ms};
use tw_detect::{Engine, EngineConfig, Rule, RuleFormat, parse_rule};

use crate::rules::{RuleChange, RuleRegistryError};
use crate::{ApiError, AppState, who};

/// Most stored events a dry-run reads.
const MAX_DRY_RUN_EVENTS: usize = 1_000_000;

impl From<RuleRegistryError> for ApiError {
    fn from(error: RuleRegistryError) -> Self {
        let status = match &error {
            RuleRegistryError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RuleRegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RuleRegistryError::Exists(_) => StatusCode::CONFLICT,
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

/// A native rule (YAML or JSON), or a Sigma rule (YAML with top-level `detection:` and
/// `logsource:`), translated with the server's Sigma settings.
fn parse_body(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<Rule, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("rule body is not UTF-8"))?;
    let unprocessable = |message: String| ApiError::BadRequest {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message,
    };
    if tw_sigma::is_sigma(text) {
        return tw_sigma::translate(text, &state.sigma).map_err(|e| unprocessable(e.to_string()));
    }
    parse_rule(text, format_of(headers)).map_err(|e| unprocessable(e.to_string()))
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
) -> Result<(StatusCode, Json<Rule>), ApiError> {
    let rule = parse_body(&state, &headers, &body)?;
    let (stored, _) = state.rules.upsert(rule, &who(&headers), false)?;
    Ok((StatusCode::CREATED, Json(stored)))
}

pub(crate) async fn put(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let rule = parse_body(&state, &headers, &body)?;
    if rule.id != id {
        return Err(ApiError::bad_request(format!(
            "the rule's id {:?} does not match the URL's {id:?}",
            rule.id
        )));
    }
    let (stored, before) = state.rules.upsert(rule, &who(&headers), true)?;
    // Window state survives when only bookkeeping changed (title, severity, sinks...).
    let state_kept = match (&before, stored.compile()) {
        (Some(before), Ok(after)) => before
            .compile()
            .is_ok_and(|before| before.same_definition(&after)),
        _ => false,
    };
    Ok(Json(
        json!({ "rule": stored, "created": before.is_none(), "state_reset": before.is_some() && !state_kept }),
    ))
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

pub(crate) async fn test(
    State(state): State<Arc<AppState>>,
    Json(request): Json<DryRun>,
) -> Result<Json<Value>, ApiError> {
    let text = match &request.rule {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    // A Sigma rule can be dry-run before it is stored, like a native one.
    let parsed = if tw_sigma::is_sigma(&text) {
        tw_sigma::translate(&text, &state.sigma).map_err(|e| e.to_string())
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
    let stream_name = rule.stream.clone();
    let (alerts, evaluated) = match request.events {
        Some(events) => {
            let now = now_ms();
            let stream = StreamName::new(&stream_name).ok();
            let time_of = |event: &Value| {
                stream
                    .as_ref()
                    .and_then(|s| state.ingestor.registry().get(s))
                    .map_or(now, |s| s.event_time_of(event, now))
            };
            let records: Vec<Record> = events
                .iter()
                .enumerate()
                .map(|(i, event)| Record {
                    offset: i as u64,
                    ingest_time_ms: now,
                    event_time_ms: time_of(event),
                    key: Bytes::new(),
                    payload: Bytes::new(),
                })
                .collect();
            let mut engine = Engine::new(EngineConfig::default());
            engine.set_rules(vec![compiled]);
            (
                engine.evaluate(&stream_name, 0, &records, &events, now),
                events.len(),
            )
        }
        None => {
            let from = time_arg(request.from.as_ref(), "from")?.unwrap_or(0);
            let to = time_arg(request.to.as_ref(), "to")?.unwrap_or(i64::MAX);
            let stream =
                StreamName::new(&stream_name).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let log = state.log.clone();
            tokio::task::spawn_blocking(move || {
                replay_stored(log.as_ref(), &stream, compiled, from, to)
            })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??
        }
    };
    Ok(Json(json!({
        "rule_id": rule.id,
        "evaluated": evaluated,
        "alerts": alerts,
        "took_ms": started.elapsed().as_secs_f64() * 1000.0,
    })))
}

fn time_arg(value: Option<&Value>, name: &str) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            tw_core::parse_time_ms(v)
                .ok_or_else(|| ApiError::bad_request(format!("`{name}` is not a time: {v}")))
        })
        .transpose()
}

/// Runs one rule over stored events of `stream` whose ingest time is in `[from, to]`, through
/// the same engine the live path uses.
fn replay_stored(
    log: &dyn tw_log::Log,
    stream: &StreamName,
    rule: Arc<tw_detect::CompiledRule>,
    from: i64,
    to: i64,
) -> Result<(Vec<Alert>, usize), ApiError> {
    let partitions = log
        .partitions(stream)
        .ok_or_else(|| ApiError::not_found(format!("stream {stream} does not exist")))?;
    let mut engine = Engine::new(EngineConfig::default());
    engine.set_rules(vec![rule]);
    let (mut alerts, mut evaluated) = (Vec::new(), 0);
    for partition in 0..partitions {
        let mut next = log.offset_for_time(stream, partition, from)?;
        let end = log.end_offset(stream, partition)?;
        while next < end && evaluated < MAX_DRY_RUN_EVENTS {
            let batch = log.read(stream, partition, next, 4096, 4 << 20)?;
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            let read = batch.len();
            let records: Vec<Record> = batch
                .into_iter()
                .take_while(|r| r.ingest_time_ms <= to)
                .collect();
            let past_range = records.len() < read;
            let events: Vec<Value> = records
                .iter()
                .map(|r| serde_json::from_slice(&r.payload).unwrap_or(Value::Null))
                .collect();
            evaluated += records.len();
            alerts.extend(engine.evaluate(stream.as_str(), partition, &records, &events, now_ms()));
            if past_range {
                break;
            }
        }
    }
    Ok((alerts, evaluated))
}
