//! Elasticsearch `_bulk` and the cluster root, enough for unmodified clients and shippers
//! (elasticsearch-py 8/9, Filebeat, Fluent Bit, Vector, Logstash) to write to Tidewatch.
//!
//! An index is a stream. `create` and `index` actions store their document; `delete` and
//! `update` are refused per item (the log is append-only). Each item is answered on its own
//! (HTTP 200, `errors: true` when any failed) and an item is answered 201 only once stored.
//! `_id` is a dedup key remembered durably ([`crate::dedup`]): a known `_id` is answered 409
//! `version_conflict_engine_exception` for `create` and 200 `noop` for `index` — nothing is
//! stored twice, and a retried bulk request is safe. A malformed action line fails the whole
//! request before anything is stored, as in Elasticsearch.
//!
//! Clients since 8.0 refuse a server without `X-Elastic-Product: Elasticsearch`, and send
//! `application/vnd.elasticsearch+json; compatible-with=N`: every answer carries the header and
//! echoes that media type, and the root reports a version of the major the client asked for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tw_core::StreamName;
use tw_pipeline::{CompatRecord, ContentEncoding, IngestError, RecordOutcome, decode_body};

use crate::CompatState;
use crate::dedup::{Claim, DedupKey, dedup_key};

/// The major version reported when the client does not ask for one.
const DEFAULT_MAJOR: u32 = 9;

/// The `compatible-with=N` a request asked for (Accept first, then Content-Type).
fn compatible_with(headers: &HeaderMap) -> Option<u32> {
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
fn es_response(status: StatusCode, headers: &HeaderMap, body: Option<&Value>) -> Response {
    es_response_bytes(status, headers, body.map(|b| b.to_string().into_bytes()))
}

fn es_response_bytes(status: StatusCode, headers: &HeaderMap, body: Option<Vec<u8>>) -> Response {
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

fn es_error(status: StatusCode, headers: &HeaderMap, kind: &str, reason: &str) -> Response {
    let body = json!({
        "error": { "root_cause": [{ "type": kind, "reason": reason }], "type": kind, "reason": reason },
        "status": status.as_u16(),
    });
    es_response(status, headers, Some(&body))
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
        return auth_error(&denied, &headers);
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
        return es_response(denied.status, &headers, None);
    }
    es_response(StatusCode::OK, &headers, None)
}

fn auth_error(denied: &crate::auth::Denied, headers: &HeaderMap) -> Response {
    metrics::counter!("tidewatch_auth_denied_total", "api" => "bulk").increment(1);
    let mut response = es_error(
        denied.status,
        headers,
        "security_exception",
        &denied.message,
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("ApiKey, Bearer realm=\"tidewatch\""),
    );
    response
}

/// `POST /_bulk`.
pub(crate) async fn bulk(
    State(state): State<Arc<CompatState>>,
    headers: HeaderMap,
    RawQuery(_query): RawQuery,
    body: Bytes,
) -> Response {
    run_bulk(&state, None, &headers, body).await
}

/// `POST /{index}/_bulk`: `index` is the default for actions that name none.
pub(crate) async fn bulk_index(
    State(state): State<Arc<CompatState>>,
    Path(index): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run_bulk(&state, Some(index), &headers, body).await
}

/// Per stream: the records to store and, for each, its item number and dedup key.
type StreamBatch = (
    StreamName,
    Vec<CompatRecord>,
    Vec<(usize, Option<DedupKey>)>,
);

/// The metadata of an action line (other keys, such as `routing`, are ignored).
#[derive(Deserialize)]
struct ActionMeta {
    #[serde(rename = "_index")]
    index: Option<String>,
    #[serde(rename = "_id")]
    id: Option<Value>,
}

/// One action of the body.
struct Item {
    action: String,
    index: Option<String>,
    id: Option<String>,
    source: Option<Bytes>,
}

/// Splits the body into actions; `Err` for a malformed action line (the whole request fails).
fn parse_items(body: &Bytes) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut lines = body
        .split(|b| *b == b'\n')
        .scan(0usize, |start, line| {
            let at = *start;
            *start += line.len() + 1;
            Some((at, line))
        })
        .filter(|(_, line)| !line.trim_ascii().is_empty());
    let mut number = 0;
    while let Some((_, line)) = lines.next() {
        number += 1;
        let mut action: BTreeMap<String, ActionMeta> = serde_json::from_slice(line)
            .map_err(|e| format!("malformed action/metadata line [{number}]: {e}"))?;
        let (name, meta) = match action.pop_first() {
            Some(entry) if action.is_empty() => entry,
            _ => {
                return Err(format!(
                    "malformed action/metadata line [{number}], expected a single object with one action"
                ));
            }
        };
        let source = match name.as_str() {
            "index" | "create" | "update" => {
                let (at, line) = lines.next().ok_or_else(|| {
                    format!("action [{name}] on line [{number}] has no source line")
                })?;
                number += 1;
                let trimmed = line.trim_ascii();
                let offset = trimmed.as_ptr() as usize - line.as_ptr() as usize;
                Some(body.slice(at + offset..at + offset + trimmed.len()))
            }
            "delete" => None,
            other => return Err(format!("unknown action [{other}] on line [{number}]")),
        };
        let id = match meta.id {
            Some(Value::String(id)) => Some(id),
            Some(Value::Number(id)) => Some(id.to_string()),
            _ => None,
        };
        items.push(Item {
            action: name,
            index: meta.index,
            id,
            source,
        });
    }
    Ok(items)
}

/// One item of a bulk answer: `{"<action>": {...}}`.
struct BulkItem<'a> {
    action: &'a str,
    answer: ItemAnswer<'a>,
}

impl Serialize for BulkItem<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.action, &self.answer)?;
        map.end()
    }
}

#[derive(Serialize)]
struct ItemAnswer<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id")]
    id: Option<String>,
    #[serde(rename = "_version", skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'static str>,
    #[serde(rename = "_shards", skip_serializing_if = "Option::is_none")]
    shards: Option<Shards>,
    #[serde(rename = "_seq_no", skip_serializing_if = "Option::is_none")]
    seq_no: Option<u64>,
    #[serde(rename = "_primary_term", skip_serializing_if = "Option::is_none")]
    primary_term: Option<u64>,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ItemError>,
}

#[derive(Serialize)]
struct Shards {
    total: u32,
    successful: u32,
    failed: u32,
}

const ONE_SHARD: Shards = Shards {
    total: 1,
    successful: 1,
    failed: 0,
};

#[derive(Serialize)]
struct ItemError {
    #[serde(rename = "type")]
    kind: &'static str,
    reason: String,
}

impl<'a> ItemAnswer<'a> {
    fn done(index: &'a str, id: Option<String>, result: &'static str, status: u16) -> Self {
        Self {
            index,
            id,
            version: Some(1),
            result: Some(result),
            shards: Some(ONE_SHARD),
            seq_no: None,
            primary_term: None,
            status,
            error: None,
        }
    }

    fn failed(
        index: &'a str,
        id: Option<&str>,
        status: u16,
        kind: &'static str,
        reason: String,
    ) -> Self {
        Self {
            index,
            id: id.map(str::to_string),
            version: None,
            result: None,
            shards: None,
            seq_no: None,
            primary_term: None,
            status,
            error: Some(ItemError { kind, reason }),
        }
    }
}

#[derive(Serialize)]
struct BulkAnswer<'a> {
    took: u64,
    errors: bool,
    items: Vec<BulkItem<'a>>,
}

async fn run_bulk(
    state: &Arc<CompatState>,
    default_index: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    metrics::counter!("tidewatch_compat_requests_total", "api" => "bulk", "operation" => "bulk")
        .increment(1);
    if let Err(denied) = state.auth.check_api_key(headers) {
        return auth_error(&denied, headers);
    }
    let encoding = ContentEncoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    );
    let body = match encoding.and_then(|e| decode_body(body, e, state.ingestor.limits())) {
        Ok(body) => body,
        Err(error) => return ingest_error(&error, headers),
    };
    let items = match parse_items(&body) {
        Ok(items) => items,
        Err(reason) => {
            return es_error(
                StatusCode::BAD_REQUEST,
                headers,
                "illegal_argument_exception",
                &reason,
            );
        }
    };
    if items.is_empty() {
        return es_error(
            StatusCode::BAD_REQUEST,
            headers,
            "action_request_validation_exception",
            "Validation Failed: 1: no requests added;",
        );
    }
    // Index names are resolved first so answers can borrow them.
    let indexes: Vec<String> = items
        .iter()
        .map(|item| {
            item.index
                .clone()
                .or_else(|| default_index.clone())
                .unwrap_or_default()
        })
        .collect();
    let mut answers: Vec<Option<ItemAnswer<'_>>> = Vec::with_capacity(items.len());
    answers.resize_with(items.len(), || None);
    let mut batches: Vec<StreamBatch> = Vec::new();
    let mut claims = state.dedup.claims();
    for (number, item) in items.iter().enumerate() {
        let index = indexes[number].as_str();
        let action = item.action.as_str();
        let id = item.id.as_deref();
        if action == "delete" || action == "update" {
            answers[number] = Some(ItemAnswer::failed(
                index,
                id,
                400,
                "action_request_validation_exception",
                format!("[{action}] is not supported: Tidewatch streams are append-only"),
            ));
            continue;
        }
        let stream = match batches
            .iter()
            .position(|(name, _, _)| name.as_str() == index)
        {
            Some(position) => position,
            None => match StreamName::new(index) {
                Ok(stream) => {
                    batches.push((stream, Vec::new(), Vec::new()));
                    batches.len() - 1
                }
                Err(error) => {
                    let reason = if index.is_empty() {
                        "no index given (use /{index}/_bulk or _index)".to_string()
                    } else {
                        error.to_string()
                    };
                    answers[number] = Some(ItemAnswer::failed(
                        index,
                        id,
                        400,
                        "invalid_index_name_exception",
                        reason,
                    ));
                    continue;
                }
            },
        };
        let key = id.map(|id| dedup_key(&format!("es/{index}"), id));
        if let Some(key) = key {
            match claims.claim(key) {
                Claim::New => {}
                Claim::Seen if action == "create" => {
                    answers[number] = Some(ItemAnswer::failed(
                        index,
                        id,
                        409,
                        "version_conflict_engine_exception",
                        format!(
                            "[{}]: version conflict, document already exists",
                            id.unwrap_or_default()
                        ),
                    ));
                    continue;
                }
                Claim::Seen => {
                    answers[number] =
                        Some(ItemAnswer::done(index, id.map(str::to_string), "noop", 200));
                    continue;
                }
                Claim::InFlight => {
                    answers[number] = Some(ItemAnswer::failed(
                        index,
                        id,
                        429,
                        "es_rejected_execution_exception",
                        "a request with this _id is in flight; retry".to_string(),
                    ));
                    continue;
                }
            }
        }
        let (_, records, numbers) = &mut batches[stream];
        records.push(CompatRecord {
            partition: None,
            key: Bytes::new(),
            payload: item.source.clone().unwrap_or_default(),
        });
        numbers.push((number, key));
    }
    let mut confirmed = Vec::new();
    for (stream, records, numbers) in batches {
        if records.is_empty() {
            continue;
        }
        let outcomes = match state.ingestor.ingest_records(&stream, records).await {
            Ok(outcomes) => outcomes,
            Err(error) => return ingest_error(&error, headers),
        };
        for ((number, key), outcome) in numbers.into_iter().zip(outcomes) {
            let (index, id) = (indexes[number].as_str(), items[number].id.as_deref());
            answers[number] = Some(match outcome {
                RecordOutcome::Stored { partition, offset } => {
                    confirmed.extend(key);
                    let id = id.map_or_else(|| format!("{partition}-{offset}"), str::to_string);
                    ItemAnswer {
                        seq_no: Some(offset),
                        primary_term: Some(1),
                        ..ItemAnswer::done(index, Some(id), "created", 201)
                    }
                }
                RecordOutcome::Rejected { reason } => {
                    if let Some(key) = key {
                        claims.release(key);
                    }
                    ItemAnswer::failed(
                        index,
                        id,
                        400,
                        "document_parsing_exception",
                        format!("{reason} (kept in the dead-letter queue)"),
                    )
                }
                RecordOutcome::Failed { reason } => {
                    if let Some(key) = key {
                        claims.release(key);
                    }
                    ItemAnswer::failed(index, id, 503, "unavailable_shards_exception", reason)
                }
            });
        }
    }
    if let Err(error) = claims.confirm(&confirmed).await {
        // The documents are stored but their ids are not remembered: answer 503 so the client
        // retries; the retry stores them again (at-least-once, like any retried 503).
        return ingest_error(&IngestError::from(error), headers);
    }
    let items: Vec<BulkItem<'_>> = items
        .iter()
        .zip(answers)
        .zip(&indexes)
        .map(|((item, answer), index)| BulkItem {
            action: item.action.as_str(),
            answer: answer.unwrap_or_else(|| {
                ItemAnswer::failed(
                    index,
                    item.id.as_deref(),
                    500,
                    "tidewatch_exception",
                    "item was not processed".to_string(),
                )
            }),
        })
        .collect();
    let answer = BulkAnswer {
        took: started.elapsed().as_millis() as u64,
        errors: items.iter().any(|i| i.answer.error.is_some()),
        items,
    };
    es_response_bytes(
        StatusCode::OK,
        headers,
        Some(serde_json::to_vec(&answer).unwrap_or_default()),
    )
}

fn ingest_error(error: &IngestError, headers: &HeaderMap) -> Response {
    let status = crate::ingest_status(error);
    es_error(status, headers, "tidewatch_exception", &error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_bodies_split_into_actions() {
        let body = Bytes::from_static(
            b"{\"index\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{\"x\":1}\n\n{\"create\":{}}\n  {\"y\":2}  \n{\"delete\":{\"_id\":\"3\"}}\n",
        );
        let items = parse_items(&body).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].index.as_deref(), Some("a"));
        assert_eq!(items[0].id.as_deref(), Some("1"));
        assert_eq!(items[0].source.as_deref(), Some(&b"{\"x\":1}"[..]));
        assert_eq!(items[1].source.as_deref(), Some(&b"{\"y\":2}"[..]));
        assert!(items[2].source.is_none());
        assert!(parse_items(&Bytes::from_static(b"{\"index\":{}}\n")).is_err());
        assert!(parse_items(&Bytes::from_static(b"not json\n{}\n")).is_err());
        assert!(parse_items(&Bytes::from_static(b"{\"upsert\":{}}\n{}\n")).is_err());
    }

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
