//! Firehose: the `Firehose_20150804.PutRecord` / `PutRecordBatch` API (a delivery stream is a
//! Tidewatch stream, created by its first record like with the native API), and the
//! HTTP-endpoint delivery format `POST /firehose/{stream}` that a delivery stream with an
//! "HTTP endpoint" destination sends.
//!
//! Each Firehose record is one event: its bytes (gunzipped when they are gzip, as CloudWatch
//! Logs subscriptions send them; surrounding whitespace such as the usual trailing newline
//! trimmed) must be a JSON object, or it goes to the dead-letter queue with the reason.
//!
//! The HTTP endpoint has no per-record failures: a request is answered 200 once every valid
//! record is stored and every invalid one dead-lettered, else 4xx/5xx and Firehose retries the
//! whole request with the same `X-Amz-Firehose-Request-Id`. The id is remembered durably
//! ([`tw_pipeline::dedup`]) once the request's records are stored, so a retry (even after a restart)
//! is answered 200 without storing anything twice. A request that fails part-way (one
//! partition's append failed, or the dead-letter queue did) is answered 503 after remembering,
//! just as durably, which of its records are done (stored or dead-lettered): its retry stores
//! only the others.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tw_core::{StreamName, now_ms};
use tw_pipeline::{CompatRecord, ContentEncoding, IngestError, RecordOutcome, decode_body};

use crate::CompatState;
use crate::aws::{AwsError, decode_data, json_response, operation_label, parse_input};
use tw_pipeline::dedup::{Claim, DedupKey, dedup_key};

/// Most records in one `PutRecordBatch` (as in Firehose).
const MAX_BATCH_RECORDS: usize = 500;

/// The API operations [`dispatch`] runs (every other one is refused).
const OPERATIONS: [&str; 2] = ["PutRecord", "PutRecordBatch"];

/// Runs one Firehose API operation.
pub(crate) async fn dispatch(
    state: &Arc<CompatState>,
    operation: &str,
    body: &[u8],
) -> Result<Response, AwsError> {
    metrics::counter!("tidewatch_compat_requests_total", "api" => "firehose", "operation" => operation_label(operation, &OPERATIONS))
        .increment(1);
    let answer = match operation {
        "PutRecord" => put_record(state, parse_input(body)?).await?,
        "PutRecordBatch" => put_record_batch(state, parse_input(body)?).await?,
        other => {
            return Err(AwsError::client(
                "UnknownOperationException",
                format!("operation Firehose_20150804.{other} is not supported by Tidewatch"),
            ));
        }
    };
    Ok(json_response(StatusCode::OK, &answer))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FirehoseRecord {
    data: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordInput {
    delivery_stream_name: String,
    record: FirehoseRecord,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordBatchInput {
    delivery_stream_name: String,
    records: Vec<FirehoseRecord>,
}

fn delivery_stream(name: &str) -> Result<StreamName, AwsError> {
    StreamName::new(name).map_err(|e| AwsError::invalid(e.to_string()))
}

/// A record's event bytes: gunzipped if gzip, whitespace trimmed.
fn event_bytes(data: Vec<u8>, state: &CompatState) -> Result<Bytes, IngestError> {
    let data = Bytes::from(data);
    let data = if data.starts_with(&[0x1f, 0x8b]) {
        decode_body(data, ContentEncoding::Gzip, state.ingestor.limits())?
    } else {
        data
    };
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    let end = data
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    Ok(data.slice(start..end.max(start)))
}

fn record_id(partition: u32, offset: u64) -> String {
    format!("{partition:06}-{offset:020}")
}

async fn put_record(state: &CompatState, input: PutRecordInput) -> Result<Value, AwsError> {
    let name = delivery_stream(&input.delivery_stream_name)?;
    let payload = event_bytes(decode_data(&input.record.data)?, state)?;
    let outcome = state
        .ingestor
        .ingest_records(
            &name,
            vec![CompatRecord {
                partition: None,
                key: Bytes::new(),
                payload,
            }],
        )
        .await?
        .pop();
    match outcome {
        Some(RecordOutcome::Stored { partition, offset }) => {
            Ok(json!({ "RecordId": record_id(partition, offset), "Encrypted": false }))
        }
        Some(RecordOutcome::Rejected { reason }) => Err(AwsError::invalid(format!(
            "record refused (kept in the dead-letter queue): {reason}"
        ))),
        Some(RecordOutcome::Failed { reason }) => Err(AwsError::unavailable(reason)),
        None => Err(AwsError::unavailable("record was not processed")),
    }
}

async fn put_record_batch(
    state: &CompatState,
    input: PutRecordBatchInput,
) -> Result<Value, AwsError> {
    let name = delivery_stream(&input.delivery_stream_name)?;
    if input.records.is_empty() || input.records.len() > MAX_BATCH_RECORDS {
        return Err(AwsError::invalid(format!(
            "Records must hold 1 to {MAX_BATCH_RECORDS} entries, got {}",
            input.records.len()
        )));
    }
    let mut responses: Vec<Option<Value>> = vec![None; input.records.len()];
    let (mut records, mut indexes) = (Vec::new(), Vec::new());
    for (index, record) in input.records.into_iter().enumerate() {
        let payload = decode_data(&record.data)
            .and_then(|data| event_bytes(data, state).map_err(AwsError::from));
        match payload {
            Ok(payload) => {
                records.push(CompatRecord {
                    partition: None,
                    key: Bytes::new(),
                    payload,
                });
                indexes.push(index);
            }
            Err(error) => {
                responses[index] =
                    Some(json!({ "ErrorCode": error.code, "ErrorMessage": error.message }))
            }
        }
    }
    let outcomes = state.ingestor.ingest_records(&name, records).await?;
    for (index, outcome) in indexes.into_iter().zip(outcomes) {
        responses[index] = Some(match outcome {
            RecordOutcome::Stored { partition, offset } => {
                json!({ "RecordId": record_id(partition, offset) })
            }
            RecordOutcome::Rejected { reason } => json!({
                "ErrorCode": "InvalidArgumentException",
                "ErrorMessage": format!("record refused (kept in the dead-letter queue): {reason}"),
            }),
            RecordOutcome::Failed { reason } => {
                json!({ "ErrorCode": "ServiceUnavailableException", "ErrorMessage": reason })
            }
        });
    }
    let responses: Vec<Value> = responses
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    let failed = responses
        .iter()
        .filter(|r| r.get("ErrorCode").is_some())
        .count();
    Ok(json!({ "FailedPutCount": failed, "Encrypted": false, "RequestResponses": responses }))
}

/// The body Firehose POSTs to an HTTP endpoint.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryRequest {
    request_id: Option<String>,
    records: Vec<DeliveryRecord>,
}

#[derive(Deserialize)]
struct DeliveryRecord {
    data: String,
}

/// An HTTP-endpoint answer: Firehose reads `requestId`, `timestamp` and `errorMessage`.
fn delivery_answer(status: StatusCode, request_id: &str, error: Option<String>) -> Response {
    let mut body = json!({ "requestId": request_id, "timestamp": now_ms() });
    if let Some(message) = error {
        body["errorMessage"] = json!(message);
    }
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    response
}

/// `POST /firehose/{stream}`: the Firehose HTTP-endpoint delivery format.
pub(crate) async fn http_endpoint(
    State(state): State<Arc<CompatState>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    metrics::counter!("tidewatch_compat_requests_total", "api" => "firehose", "operation" => "HttpEndpoint")
        .increment(1);
    let header_id = headers
        .get("x-amz-firehose-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let shown_id = header_id.clone().unwrap_or_default();
    if let Err(denied) = state.auth.check_firehose_key(&headers) {
        metrics::counter!("tidewatch_auth_denied_total", "api" => "firehose").increment(1);
        return delivery_answer(denied.status, &shown_id, Some(denied.message));
    }
    // In a task of its own: a Firehose giving up on the request (its timeout) must not cancel
    // it between the append and the remembering of the request id, or its retry would store
    // the records again.
    let task = {
        let (state, headers, header_id) = (state.clone(), headers.clone(), header_id.clone());
        tokio::spawn(async move { deliver(&state, &stream, &headers, header_id, body).await })
    };
    let delivered = match task.await {
        Ok(delivered) => delivered,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            header_id,
            "the server is stopping; retry".into(),
        )),
    };
    match delivered {
        Ok(request_id) => delivery_answer(StatusCode::OK, &request_id, None),
        Err((status, request_id, message)) => delivery_answer(
            status,
            request_id.as_deref().unwrap_or(&shown_id),
            Some(message),
        ),
    }
}

type DeliveryError = (StatusCode, Option<String>, String);

async fn deliver(
    state: &Arc<CompatState>,
    stream: &str,
    headers: &HeaderMap,
    header_id: Option<String>,
    body: Bytes,
) -> Result<String, DeliveryError> {
    let bad = |id: &Option<String>, message: String| (StatusCode::BAD_REQUEST, id.clone(), message);
    let name = StreamName::new(stream).map_err(|e| bad(&header_id, e.to_string()))?;
    let encoding = ContentEncoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )
    .map_err(|e| ingest_failure(&header_id, e))?;
    let body = decode_body(body, encoding, state.ingestor.limits())
        .map_err(|e| ingest_failure(&header_id, e))?;
    let request: DeliveryRequest = serde_json::from_slice(&body)
        .map_err(|e| bad(&header_id, format!("invalid Firehose delivery body: {e}")))?;
    let request_id = header_id
        .or(request.request_id)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad(&None, "missing X-Amz-Firehose-Request-Id".into()))?;
    let id = Some(request_id.clone());
    let ids = RequestIds::new(&name, &request_id);
    let mut claims = state.dedup.claims();
    match claims.claim(ids.request) {
        Claim::Seen => {
            metrics::counter!("tidewatch_compat_duplicates_total", "api" => "firehose")
                .increment(1);
            return Ok(request_id);
        }
        Claim::InFlight => {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                id,
                "a request with this id is being processed; retry later".into(),
            ));
        }
        // `Held` cannot happen on fresh claims.
        Claim::New | Claim::Held => {}
    }
    // Only a retry of a request that failed part-way has records to skip: the marker spares
    // every other request a key per record.
    let resumed = claims.claim(ids.partial) == Claim::Seen;
    let total = request.records.len();
    let mut records = Vec::with_capacity(total);
    let mut numbers = Vec::with_capacity(total);
    for (index, record) in request.records.into_iter().enumerate() {
        if resumed && claims.claim(ids.record(index)) == Claim::Seen {
            continue;
        }
        let data = decode_data(&record.data)
            .map_err(|e| bad(&id, format!("record {}: {}", index + 1, e.message)))?;
        let payload = event_bytes(data, state).map_err(|e| ingest_failure(&id, e))?;
        records.push(CompatRecord {
            partition: None,
            key: Bytes::new(),
            payload,
        });
        numbers.push(index);
    }
    if numbers.len() < total {
        metrics::counter!("tidewatch_compat_duplicates_total", "api" => "firehose").increment(1);
    }
    let outcomes = state
        .ingestor
        .ingest_records(&name, records)
        .await
        .map_err(|e| ingest_failure(&id, e))?;
    if let Some(reason) = outcomes.iter().find_map(|o| match o {
        RecordOutcome::Failed { reason } => Some(reason.clone()),
        _ => None,
    }) {
        // Firehose retries the whole request: remember which records are done (stored, or
        // refused and dead-lettered) so the retry sends only the others to the log.
        let mut done = vec![ids.partial];
        for (index, outcome) in numbers.into_iter().zip(&outcomes) {
            if !matches!(outcome, RecordOutcome::Failed { .. }) {
                let key = ids.record(index);
                claims.claim(key);
                done.push(key);
            }
        }
        if let Err(error) = claims.confirm(&done).await {
            tracing::warn!(%error, request_id, "remembering the stored records of a failed Firehose request failed; kept in memory only");
            claims.keep_in_memory(&done);
        }
        return Err((StatusCode::SERVICE_UNAVAILABLE, id, reason));
    }
    if let Err(error) = claims.confirm(&[ids.request]).await {
        // Every record is stored: answering a failure would make Firehose store them again.
        tracing::warn!(%error, request_id, "remembering a Firehose request id failed; kept in memory only");
        claims.keep_in_memory(&[ids.request]);
    }
    Ok(request_id)
}

/// The dedup keys of one HTTP-endpoint request: the request itself, the marker left when it
/// failed part-way, and each of its records (by position: a retry carries the same body).
struct RequestIds {
    request: DedupKey,
    partial: DedupKey,
    record_scope: String,
    request_id: String,
}

impl RequestIds {
    fn new(stream: &StreamName, request_id: &str) -> Self {
        Self {
            request: dedup_key(&format!("firehose/{stream}"), request_id),
            partial: dedup_key(&format!("firehose-partial/{stream}"), request_id),
            record_scope: format!("firehose-record/{stream}"),
            request_id: request_id.to_string(),
        }
    }

    fn record(&self, index: usize) -> DedupKey {
        dedup_key(&self.record_scope, &format!("{}/{index}", self.request_id))
    }
}

fn ingest_failure(id: &Option<String>, error: IngestError) -> DeliveryError {
    let status = crate::ingest_status(&error);
    (status, id.clone(), error.to_string())
}
