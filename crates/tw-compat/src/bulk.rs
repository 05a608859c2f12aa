//! Elasticsearch `_bulk`, enough for unmodified clients and shippers
//! (elasticsearch-py 8/9, Filebeat, Fluent Bit, Vector, Logstash) to write to Tidewatch.
//!
//! An index is a stream. `create` and `index` actions store their document; `delete` and
//! `update` are refused per item (the log is append-only). Each item is answered on its own
//! (HTTP 200, `errors: true` when any failed) and an item is answered 201 only once stored.
//! `_id` is a dedup key remembered durably ([`tw_pipeline::dedup`]): a known `_id` is answered 409
//! `version_conflict_engine_exception` for `create` and 200 `noop` for `index` — nothing is
//! stored twice, and a retried bulk request is safe. A malformed action line fails the whole
//! request before anything is stored, as in Elasticsearch.
//!
//! The same `_id` twice in one request: the second is a duplicate only of a first that was
//! stored; when the first was refused (invalid JSON, schema) or failed, the second is tried on
//! its own. A request naming several indexes is answered per item even when one index cannot
//! be written at all (disk full, stream being deleted): the other indexes' items are stored
//! and answered 201, that index's items 503 (or 400 for a request it can never accept). When
//! the dead-letter queue cannot be written, only the refused items are answered 503 (their
//! letters are not kept; the retry refuses and keeps them) while the stored ones are 201. Should
//! remembering the stored ids fail, they are remembered in memory only (until a restart)
//! rather than stored documents answered as failed.
//!
//! The wire conventions (product header, media types, errors) are `crate::es_http`'s.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tw_core::StreamName;
use tw_pipeline::{CompatRecord, ContentEncoding, IngestError, RecordOutcome, decode_body};

use crate::CompatState;
use crate::es_http::{auth_error, es_error, es_response_bytes};
use tw_pipeline::dedup::{Claim, Claims, DedupKey, dedup_key};

/// `POST /_bulk`.
pub(crate) async fn bulk(
    State(state): State<Arc<CompatState>>,
    headers: HeaderMap,
    RawQuery(_query): RawQuery,
    body: Bytes,
) -> Response {
    run_bulk_detached(state, None, headers, body).await
}

/// `POST /{index}/_bulk`: `index` is the default for actions that name none.
pub(crate) async fn bulk_index(
    State(state): State<Arc<CompatState>>,
    Path(index): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run_bulk_detached(state, Some(index), headers, body).await
}

/// Runs a bulk request in a task of its own: a client giving up on it (its timeout) must not
/// cancel it between the appends and the remembering of the stored `_id`s, or its retry would
/// store those documents again.
async fn run_bulk_detached(
    state: Arc<CompatState>,
    default_index: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer_headers = headers.clone();
    let task = tokio::spawn(async move { run_bulk(&state, default_index, &headers, body).await });
    match task.await {
        Ok(response) => response,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => es_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &answer_headers,
            "tidewatch_exception",
            "the server is stopping; retry",
        ),
    }
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
        return auth_error(&denied, headers, false);
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
    let mut run = BulkRun {
        items: &items,
        indexes: &indexes,
        answers: Vec::with_capacity(items.len()),
        claims: state.dedup.claims(),
        stored_keys: HashSet::new(),
    };
    run.answers.resize_with(items.len(), || None);
    // Rounds: an item whose `_id` an earlier item of this request holds waits for that item's
    // outcome (a duplicate only of a stored document, tried on its own otherwise), so each
    // round resolves at least the first holder of every id and the loop ends.
    let mut pending: Vec<usize> = (0..items.len()).collect();
    while !pending.is_empty() {
        let (batches, deferred) = run.plan_round(pending);
        run.store_round(state, batches).await;
        pending = deferred;
    }
    let confirmed: Vec<DedupKey> = run.stored_keys.iter().copied().collect();
    if let Err(error) = run.claims.confirm(&confirmed).await {
        // The documents are stored: answering them failed would make the client store them
        // again. Their ids are remembered until a restart instead of durably.
        tracing::warn!(%error, "remembering stored _ids failed; kept in memory only");
        run.claims.keep_in_memory(&confirmed);
    }
    let items: Vec<BulkItem<'_>> = items
        .iter()
        .zip(run.answers)
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

/// The state of one bulk request across its rounds.
struct BulkRun<'a> {
    items: &'a [Item],
    indexes: &'a [String],
    answers: Vec<Option<ItemAnswer<'a>>>,
    claims: Claims,
    /// Ids whose document this request stored (held by `claims` until confirmed).
    stored_keys: HashSet<DedupKey>,
}

impl<'a> BulkRun<'a> {
    /// Answers the `pending` items that need no storing and groups the others by stream;
    /// returns the batches and the items deferred to the next round.
    fn plan_round(&mut self, pending: Vec<usize>) -> (Vec<StreamBatch>, Vec<usize>) {
        let mut batches: Vec<StreamBatch> = Vec::new();
        let mut deferred = Vec::new();
        for number in pending {
            let item = &self.items[number];
            let index = self.indexes[number].as_str();
            let action = item.action.as_str();
            let id = item.id.as_deref();
            if action == "delete" || action == "update" {
                self.answers[number] = Some(ItemAnswer::failed(
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
                        self.answers[number] = Some(ItemAnswer::failed(
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
                let answer = match self.claims.claim(key) {
                    Claim::New => None,
                    Claim::Seen => Some(duplicate(action, index, id)),
                    Claim::Held if self.stored_keys.contains(&key) => {
                        Some(duplicate(action, index, id))
                    }
                    Claim::Held => {
                        // The holder is in this round: its outcome decides.
                        deferred.push(number);
                        continue;
                    }
                    Claim::InFlight => Some(ItemAnswer::failed(
                        index,
                        id,
                        429,
                        "es_rejected_execution_exception",
                        "a request with this _id is in flight; retry".to_string(),
                    )),
                };
                if answer.is_some() {
                    self.answers[number] = answer;
                    continue;
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
        (batches, deferred)
    }

    /// Stores the batches of one round and answers their items. A stream whose append fails
    /// as a whole fails only its own items: other streams' items may already be stored.
    async fn store_round(&mut self, state: &CompatState, batches: Vec<StreamBatch>) {
        for (stream, records, numbers) in batches {
            if records.is_empty() {
                continue;
            }
            let outcomes = match state.ingestor.ingest_records(&stream, records).await {
                Ok(outcomes) => outcomes,
                Err(error) => {
                    let (status, kind) = item_error(&error);
                    for (number, key) in numbers {
                        if let Some(key) = key {
                            self.claims.release(key);
                        }
                        self.answers[number] = Some(ItemAnswer::failed(
                            self.indexes[number].as_str(),
                            self.items[number].id.as_deref(),
                            status,
                            kind,
                            error.to_string(),
                        ));
                    }
                    continue;
                }
            };
            for ((number, key), outcome) in numbers.into_iter().zip(outcomes) {
                let (index, id) = (
                    self.indexes[number].as_str(),
                    self.items[number].id.as_deref(),
                );
                let answer = match outcome {
                    RecordOutcome::Stored { partition, offset } => {
                        self.stored_keys.extend(key);
                        let id = id.map_or_else(|| format!("{partition}-{offset}"), str::to_string);
                        ItemAnswer {
                            seq_no: Some(offset),
                            primary_term: Some(1),
                            ..ItemAnswer::done(index, Some(id), "created", 201)
                        }
                    }
                    RecordOutcome::Rejected { reason } => ItemAnswer::failed(
                        index,
                        id,
                        400,
                        "document_parsing_exception",
                        format!("{reason} (kept in the dead-letter queue)"),
                    ),
                    RecordOutcome::Failed { reason } => {
                        ItemAnswer::failed(index, id, 503, "unavailable_shards_exception", reason)
                    }
                };
                if answer.error.is_some()
                    && let Some(key) = key
                {
                    self.claims.release(key);
                }
                self.answers[number] = Some(answer);
            }
        }
    }
}

/// The answer to an item whose `_id` names a document already stored: a conflict for
/// `create`, a no-op for `index`.
fn duplicate<'a>(action: &str, index: &'a str, id: Option<&str>) -> ItemAnswer<'a> {
    if action == "create" {
        ItemAnswer::failed(
            index,
            id,
            409,
            "version_conflict_engine_exception",
            format!(
                "[{}]: version conflict, document already exists",
                id.unwrap_or_default()
            ),
        )
    } else {
        ItemAnswer::done(index, id.map(str::to_string), "noop", 200)
    }
}

/// The per-item status and ES error type of an item whose stream could not be written.
fn item_error(error: &IngestError) -> (u16, &'static str) {
    let status = crate::ingest_status(error);
    let kind = if error.is_retryable() {
        "unavailable_shards_exception"
    } else if error.is_client_error() {
        "illegal_argument_exception"
    } else {
        "tidewatch_exception"
    };
    (status.as_u16(), kind)
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
}
