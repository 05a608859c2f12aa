//! Kinesis Data Streams (`X-Amz-Target: Kinesis_20131202.*`): a Kinesis stream is a Tidewatch
//! stream and a shard is a partition (see [`crate::shards`] for the addressing).
//!
//! Writes go through [`tw_pipeline::Ingestor::ingest_records`], so a record is acknowledged
//! only once fsynced, JSON records flow to detection and the lake like any event, and a record
//! that is not a JSON object goes to the dead-letter queue and is reported failed
//! (`InvalidArgumentException` for `PutRecord`, a per-record `ErrorCode` for `PutRecords`).
//! Reads (`GetShardIterator`, `GetRecords`) read the log directly, returning the stored bytes.
//!
//! `DeleteStream` deletes the stream as the native `DELETE /api/v1/streams/{stream}` does
//! ([`tw_pipeline::Ingestor::delete_stream`]): log, configuration, consumer offsets, hot data
//! and search indexes go, the lake files move to the lake's archive. It answers once the
//! deletion is done (while it runs, `DescribeStream` says `DELETING`), so a `DescribeStream`
//! right after answers `ResourceNotFoundException`, which is what boto3's
//! `stream_not_exists` waiter waits for.

use std::borrow::Cow;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tw_core::{StreamConfig, StreamName, now_ms};
use tw_pipeline::{CompatRecord, RecordOutcome, StreamState};

use crate::CompatState;
use crate::aws::{AwsError, decode_data_into, encode_data, json_response, parse_input};
use crate::shards::{
    IteratorError, ShardPosition, decode_iterator, encode_iterator, hash_key_range,
    hash_partition_key, parse_hash_key, parse_sequence_number, parse_shard_id, sequence_number,
    shard_for_hash, shard_id,
};

/// Most records in one `PutRecords` call (as in Kinesis).
const MAX_PUT_RECORDS: usize = 500;
/// Most records one `GetRecords` call returns (as in Kinesis).
const MAX_GET_RECORDS: usize = 10_000;
/// About the most payload bytes one `GetRecords` call returns (as in Kinesis).
const MAX_GET_BYTES: usize = 10 << 20;
/// Longest partition key (as in Kinesis).
const MAX_PARTITION_KEY_CHARS: usize = 256;

/// Runs one Kinesis operation (`X-Amz-Target: Kinesis_20131202.{operation}`) on a request
/// body whose credentials were checked; `region` goes into the ARNs answered.
pub async fn dispatch(
    state: &Arc<CompatState>,
    operation: &str,
    body: &[u8],
    region: &str,
) -> Result<Response, AwsError> {
    metrics::counter!("tidewatch_compat_requests_total", "api" => "kinesis", "operation" => operation.to_string())
        .increment(1);
    let answer = match operation {
        "CreateStream" => create_stream(state, parse_input(body)?)?,
        "DeleteStream" => delete_stream(state, parse_input(body)?).await?,
        "DescribeStream" => describe_stream(state, parse_input(body)?, region, false)?,
        "DescribeStreamSummary" => describe_stream(state, parse_input(body)?, region, true)?,
        "ListStreams" => list_streams(state, parse_input(body)?, region),
        "ListShards" => list_shards(state, parse_input(body)?)?,
        "PutRecord" => put_record(state, parse_input(body)?).await?,
        "PutRecords" => {
            let output = put_records(state, parse_input(body)?).await?;
            return Ok(json_response(StatusCode::OK, &output));
        }
        "GetShardIterator" => get_shard_iterator(state, parse_input(body)?).await?,
        "GetRecords" => {
            let output = get_records(state, parse_input(body)?).await?;
            return Ok(json_response(StatusCode::OK, &output));
        }
        other => {
            return Err(AwsError::client(
                "UnknownOperationException",
                format!("operation Kinesis_20131202.{other} is not supported by Tidewatch"),
            ));
        }
    };
    Ok(json_response(StatusCode::OK, &answer))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StreamRef {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
}

/// The stream a request names (by name or ARN), which must exist.
fn existing(
    state: &CompatState,
    reference: &StreamRef,
) -> Result<(StreamName, Arc<StreamState>), AwsError> {
    let name = stream_name(reference)?;
    let stream = state
        .ingestor
        .registry()
        .get(&name)
        .ok_or_else(|| AwsError::not_found(format!("Stream {name} not found")))?;
    Ok((name, stream))
}

fn stream_name(reference: &StreamRef) -> Result<StreamName, AwsError> {
    let text = match (&reference.stream_name, &reference.stream_arn) {
        (Some(name), _) => name.as_str(),
        (None, Some(arn)) => arn
            .rsplit_once(":stream/")
            .map(|(_, name)| name)
            .ok_or_else(|| AwsError::invalid(format!("{arn:?} is not a Kinesis stream ARN")))?,
        (None, None) => {
            return Err(AwsError::invalid("StreamName or StreamARN is required"));
        }
    };
    StreamName::new(text).map_err(|e| AwsError::invalid(e.to_string()))
}

fn arn(region: &str, name: &StreamName) -> String {
    format!("arn:aws:kinesis:{region}:000000000000:stream/{name}")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateStreamInput {
    stream_name: String,
    shard_count: Option<u32>,
}

fn create_stream(state: &CompatState, input: CreateStreamInput) -> Result<Value, AwsError> {
    let name = StreamName::new(&input.stream_name).map_err(|e| AwsError::invalid(e.to_string()))?;
    let registry = state.ingestor.registry();
    if registry.get(&name).is_some() {
        return Err(AwsError::client(
            "ResourceInUseException",
            format!("Stream {name} already exists"),
        ));
    }
    let config = StreamConfig {
        partitions: input
            .shard_count
            .unwrap_or(registry.default_config(&name).partitions),
        ..registry.default_config(&name)
    };
    match registry.put(&name, config, false) {
        Ok(_) => Ok(json!({})),
        Err(tw_pipeline::IngestError::StreamDeleting(_)) => Err(in_deletion(&name)),
        Err(error) => Err(error.into()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteStreamInput {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    /// Kinesis refuses to delete a stream with registered (enhanced fan-out) consumers unless
    /// this is set; Tidewatch has none to register, so either value deletes.
    #[serde(default)]
    #[allow(dead_code)]
    enforce_consumer_deletion: Option<bool>,
}

async fn delete_stream(state: &CompatState, input: DeleteStreamInput) -> Result<Value, AwsError> {
    let reference = StreamRef {
        stream_name: input.stream_name,
        stream_arn: input.stream_arn,
    };
    let name = stream_name(&reference)?;
    match state
        .ingestor
        .delete_stream(&name, &state.consumers, tw_pipeline::DELETE_WAIT)
        .await
    {
        Ok(_) => Ok(json!({})),
        Err(tw_pipeline::IngestError::UnknownStream(_)) => {
            Err(AwsError::not_found(format!("Stream {name} not found")))
        }
        Err(tw_pipeline::IngestError::StreamDeleting(_)) => Err(in_deletion(&name)),
        Err(error) => Err(error.into()),
    }
}

/// What Kinesis answers for an operation on a stream in the `DELETING` state.
fn in_deletion(name: &StreamName) -> AwsError {
    AwsError::client(
        "ResourceInUseException",
        format!("Stream {name} is being deleted"),
    )
}

fn shards_of(partitions: u32, starts: &[u64]) -> Vec<Value> {
    (0..partitions)
        .map(|p| {
            let (start, end) = hash_key_range(p, partitions);
            json!({
                "ShardId": shard_id(p),
                "HashKeyRange": {
                    "StartingHashKey": start.to_string(),
                    "EndingHashKey": end.to_string(),
                },
                "SequenceNumberRange": {
                    "StartingSequenceNumber": sequence_number(starts.get(p as usize).copied().unwrap_or(0)),
                },
            })
        })
        .collect()
}

fn start_offsets(state: &CompatState, name: &StreamName, partitions: u32) -> Vec<u64> {
    (0..partitions)
        .map(|p| state.log.start_offset(name, p).unwrap_or(0))
        .collect()
}

fn retention_hours(stream: &StreamState) -> u64 {
    // Kinesis has no "forever"; report its maximum (one year) for streams kept indefinitely.
    stream
        .config
        .retention
        .max_age_secs
        .map_or(8760, |secs| secs.div_ceil(3600))
}

fn describe_stream(
    state: &CompatState,
    input: StreamRef,
    region: &str,
    summary: bool,
) -> Result<Value, AwsError> {
    let name = stream_name(&input)?;
    // While a deletion runs the stream is described as Kinesis does (`DELETING`, no shards),
    // so waiters keep polling until it is gone.
    let stream = if state.ingestor.registry().is_deleting(&name) {
        None
    } else {
        Some(existing(state, &input)?.1)
    };
    let partitions = stream.as_ref().map_or(0, |s| s.config.partitions);
    let mut description = json!({
        "StreamName": name,
        "StreamARN": arn(region, &name),
        "StreamStatus": if stream.is_some() { "ACTIVE" } else { "DELETING" },
        "StreamModeDetails": { "StreamMode": "PROVISIONED" },
        "RetentionPeriodHours": stream.as_deref().map_or(24, retention_hours),
        "EncryptionType": "NONE",
        "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
    });
    if summary {
        description["OpenShardCount"] = json!(partitions);
        description["ConsumerCount"] = json!(0);
        Ok(json!({ "StreamDescriptionSummary": description }))
    } else {
        description["Shards"] = Value::Array(shards_of(
            partitions,
            &start_offsets(state, &name, partitions),
        ));
        description["HasMoreShards"] = json!(false);
        Ok(json!({ "StreamDescription": description }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListStreamsInput {
    limit: Option<usize>,
    exclusive_start_stream_name: Option<String>,
}

fn list_streams(state: &CompatState, input: ListStreamsInput, region: &str) -> Value {
    let limit = input.limit.unwrap_or(100).clamp(1, 10_000);
    let names: Vec<StreamName> = state
        .ingestor
        .registry()
        .list()
        .into_iter()
        .map(|s| s.name.clone())
        .filter(|n| {
            input
                .exclusive_start_stream_name
                .as_deref()
                .is_none_or(|after| n.as_str() > after)
        })
        .collect();
    let more = names.len() > limit;
    let names = &names[..names.len().min(limit)];
    json!({
        "StreamNames": names,
        "HasMoreStreams": more,
        "StreamSummaries": names.iter().map(|n| json!({
            "StreamName": n,
            "StreamARN": arn(region, n),
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": { "StreamMode": "PROVISIONED" },
        })).collect::<Vec<_>>(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListShardsInput {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    next_token: Option<String>,
}

fn list_shards(state: &CompatState, input: ListShardsInput) -> Result<Value, AwsError> {
    // Every shard fits in one page, so a NextToken is only ever the stream name echoed back.
    let reference = StreamRef {
        stream_name: input.stream_name.or(input.next_token),
        stream_arn: input.stream_arn,
    };
    let (name, stream) = existing(state, &reference)?;
    let partitions = stream.config.partitions;
    Ok(json!({ "Shards": shards_of(partitions, &start_offsets(state, &name, partitions)) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordInput {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    data: String,
    partition_key: String,
    explicit_hash_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecordEntry<'a> {
    // Borrowed from the request body when it has no escapes: no copy of the base64 text.
    #[serde(borrow)]
    data: Cow<'a, str>,
    #[serde(borrow)]
    partition_key: Cow<'a, str>,
    explicit_hash_key: Option<String>,
}

/// Where one entry goes: its partition, its key, and its decoded bytes in the request's arena.
struct Placed {
    partition: u32,
    key: Bytes,
    data: std::ops::Range<usize>,
}

/// Places one entry, decoding its data onto the end of `arena` (one allocation per request
/// instead of one per record), or says why the entry is invalid.
fn place(
    entry: &RecordEntry<'_>,
    partitions: u32,
    arena: &mut Vec<u8>,
) -> Result<Placed, AwsError> {
    let chars = entry.partition_key.chars().count();
    if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
        return Err(AwsError::invalid(format!(
            "PartitionKey must be 1 to {MAX_PARTITION_KEY_CHARS} characters"
        )));
    }
    let hash = match &entry.explicit_hash_key {
        Some(text) => parse_hash_key(text).ok_or_else(|| {
            AwsError::invalid(format!(
                "ExplicitHashKey {text:?} is not a decimal in 0..2^128"
            ))
        })?,
        None => hash_partition_key(&entry.partition_key),
    };
    let start = arena.len();
    if let Err(error) = decode_data_into(&entry.data, arena) {
        arena.truncate(start);
        return Err(error);
    }
    Ok(Placed {
        partition: shard_for_hash(hash, partitions),
        key: Bytes::copy_from_slice(entry.partition_key.as_bytes()),
        data: start..arena.len(),
    })
}

/// Turns placed entries into records over the frozen arena.
fn to_records(placed: Vec<Placed>, arena: Vec<u8>) -> Vec<CompatRecord> {
    let arena = Bytes::from(arena);
    placed
        .into_iter()
        .map(|p| CompatRecord {
            partition: Some(p.partition),
            key: p.key,
            payload: arena.slice(p.data),
        })
        .collect()
}

async fn put_record(state: &CompatState, input: PutRecordInput) -> Result<Value, AwsError> {
    let reference = StreamRef {
        stream_name: input.stream_name,
        stream_arn: input.stream_arn,
    };
    let (name, stream) = existing(state, &reference)?;
    let entry = RecordEntry {
        data: Cow::Owned(input.data),
        partition_key: Cow::Owned(input.partition_key),
        explicit_hash_key: input.explicit_hash_key,
    };
    let mut arena = Vec::new();
    let placed = place(&entry, stream.config.partitions, &mut arena)?;
    let outcome = state
        .ingestor
        .ingest_records(&name, to_records(vec![placed], arena))
        .await?
        .pop();
    match outcome {
        Some(RecordOutcome::Stored { partition, offset }) => Ok(json!({
            "ShardId": shard_id(partition),
            "SequenceNumber": sequence_number(offset),
            "EncryptionType": "NONE",
        })),
        Some(RecordOutcome::Rejected { reason }) => Err(AwsError::invalid(format!(
            "record refused (kept in the dead-letter queue): {reason}"
        ))),
        Some(RecordOutcome::Failed { reason }) => Err(AwsError::unavailable(reason)),
        None => Err(AwsError::unavailable("record was not processed")),
    }
}

// No `#[serde(flatten)]` in inputs: serde buffers a flattened body whole before parsing it.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordsInput<'a> {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(borrow)]
    records: Vec<RecordEntry<'a>>,
}

/// One entry of a `PutRecords` answer: a sequence number, or an error.
#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
struct PutRecordsEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shard_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<String>,
}

impl PutRecordsEntry {
    fn error(code: &'static str, message: String) -> Self {
        Self {
            error_code: Some(code),
            error_message: Some(message),
            ..Self::default()
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordsOutput {
    failed_record_count: usize,
    records: Vec<PutRecordsEntry>,
    encryption_type: &'static str,
}

async fn put_records(
    state: &CompatState,
    input: PutRecordsInput<'_>,
) -> Result<PutRecordsOutput, AwsError> {
    let reference = StreamRef {
        stream_name: input.stream_name,
        stream_arn: input.stream_arn,
    };
    let (name, stream) = existing(state, &reference)?;
    if input.records.is_empty() || input.records.len() > MAX_PUT_RECORDS {
        return Err(AwsError::invalid(format!(
            "Records must hold 1 to {MAX_PUT_RECORDS} entries, got {}",
            input.records.len()
        )));
    }
    // An entry that is malformed (bad key, bad base64) fails alone, like a refused record.
    let mut results: Vec<Option<PutRecordsEntry>> = Vec::with_capacity(input.records.len());
    let mut placed = Vec::with_capacity(input.records.len());
    let mut indexes = Vec::with_capacity(input.records.len());
    let decoded_bytes: usize = input.records.iter().map(|r| r.data.len() / 4 * 3).sum();
    let mut arena = Vec::with_capacity(decoded_bytes);
    for (index, entry) in input.records.iter().enumerate() {
        match place(entry, stream.config.partitions, &mut arena) {
            Ok(record) => {
                placed.push(record);
                indexes.push(index);
                results.push(None);
            }
            Err(error) => results.push(Some(PutRecordsEntry::error(error.code, error.message))),
        }
    }
    drop(input.records);
    let outcomes = state
        .ingestor
        .ingest_records(&name, to_records(placed, arena))
        .await?;
    for (index, outcome) in indexes.into_iter().zip(outcomes) {
        results[index] = Some(match outcome {
            RecordOutcome::Stored { partition, offset } => PutRecordsEntry {
                sequence_number: Some(sequence_number(offset)),
                shard_id: Some(shard_id(partition)),
                ..PutRecordsEntry::default()
            },
            RecordOutcome::Rejected { reason } => PutRecordsEntry::error(
                "InvalidArgumentException",
                format!("record refused (kept in the dead-letter queue): {reason}"),
            ),
            RecordOutcome::Failed { reason } => PutRecordsEntry::error("InternalFailure", reason),
        });
    }
    let records: Vec<PutRecordsEntry> = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                PutRecordsEntry::error("InternalFailure", "record was not processed".into())
            })
        })
        .collect();
    Ok(PutRecordsOutput {
        failed_record_count: records.iter().filter(|r| r.error_code.is_some()).count(),
        records,
        encryption_type: "NONE",
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetShardIteratorInput {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    shard_id: String,
    shard_iterator_type: String,
    starting_sequence_number: Option<String>,
    /// Seconds since the epoch (AWS JSON timestamps).
    timestamp: Option<f64>,
}

async fn get_shard_iterator(
    state: &Arc<CompatState>,
    input: GetShardIteratorInput,
) -> Result<Value, AwsError> {
    let reference = StreamRef {
        stream_name: input.stream_name.clone(),
        stream_arn: input.stream_arn.clone(),
    };
    let (name, stream) = existing(state, &reference)?;
    let partition = parse_shard_id(&input.shard_id)
        .filter(|p| *p < stream.config.partitions)
        .ok_or_else(|| {
            AwsError::not_found(format!(
                "Shard {} in stream {name} does not exist",
                input.shard_id
            ))
        })?;
    let sequence = || -> Result<u64, AwsError> {
        let text = input.starting_sequence_number.as_deref().ok_or_else(|| {
            AwsError::invalid("StartingSequenceNumber is required for this iterator type")
        })?;
        parse_sequence_number(text)
            .ok_or_else(|| AwsError::invalid(format!("{text:?} is not a sequence number")))
    };
    let log = state.log.clone();
    let stream_name = name.clone();
    let offset = match input.shard_iterator_type.as_str() {
        "TRIM_HORIZON" => blocking(move || log.start_offset(&stream_name, partition)).await?,
        "LATEST" => blocking(move || log.end_offset(&stream_name, partition)).await?,
        "AT_SEQUENCE_NUMBER" => sequence()?,
        "AFTER_SEQUENCE_NUMBER" => sequence()?.saturating_add(1),
        "AT_TIMESTAMP" => {
            let seconds = input
                .timestamp
                .ok_or_else(|| AwsError::invalid("Timestamp is required for AT_TIMESTAMP"))?;
            let ms = (seconds * 1000.0) as i64;
            blocking(move || log.offset_for_time(&stream_name, partition, ms)).await?
        }
        other => {
            return Err(AwsError::invalid(format!(
                "ShardIteratorType {other:?} is not one of TRIM_HORIZON, LATEST, \
                 AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, AT_TIMESTAMP"
            )));
        }
    };
    let position = ShardPosition {
        stream: name.to_string(),
        partition,
        offset,
    };
    Ok(json!({ "ShardIterator": encode_iterator(&position, now_ms()) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetRecordsInput {
    shard_iterator: String,
    limit: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetRecordsOutput {
    records: Vec<OutputRecord>,
    next_shard_iterator: String,
    millis_behind_latest: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct OutputRecord {
    sequence_number: String,
    approximate_arrival_timestamp: f64,
    data: String,
    partition_key: String,
    encryption_type: &'static str,
}

async fn get_records(
    state: &Arc<CompatState>,
    input: GetRecordsInput,
) -> Result<GetRecordsOutput, AwsError> {
    let now = now_ms();
    let position = decode_iterator(&input.shard_iterator, now).map_err(|error| match error {
        IteratorError::Expired => AwsError::client(
            "ExpiredIteratorException",
            "Iterator expired: get a new one with GetShardIterator",
        ),
        IteratorError::Invalid => AwsError::invalid("ShardIterator is not valid"),
    })?;
    let name = StreamName::new(&position.stream).map_err(|e| AwsError::invalid(e.to_string()))?;
    let stream = state
        .ingestor
        .registry()
        .get(&name)
        .ok_or_else(|| AwsError::not_found(format!("Stream {name} not found")))?;
    if position.partition >= stream.config.partitions {
        return Err(AwsError::not_found("Shard of this iterator does not exist"));
    }
    let limit = input
        .limit
        .unwrap_or(MAX_GET_RECORDS)
        .clamp(1, MAX_GET_RECORDS);
    let log = state.log.clone();
    let (records, end) = blocking(move || {
        let records = log.read(
            &name,
            position.partition,
            position.offset,
            limit,
            MAX_GET_BYTES,
        )?;
        let end = log.end_offset(&name, position.partition)?;
        Ok((records, end))
    })
    .await?;
    let next = records.last().map_or(position.offset, |r| r.offset + 1);
    let behind = match records.last() {
        Some(last) if next < end => (now - last.ingest_time_ms).max(0),
        _ => 0,
    };
    let next_iterator = encode_iterator(
        &ShardPosition {
            offset: next.max(position.offset),
            ..position
        },
        now,
    );
    Ok(GetRecordsOutput {
        records: records
            .iter()
            .map(|r| OutputRecord {
                sequence_number: sequence_number(r.offset),
                approximate_arrival_timestamp: r.ingest_time_ms as f64 / 1000.0,
                data: encode_data(&r.payload),
                partition_key: String::from_utf8_lossy(&r.key).into_owned(),
                encryption_type: "NONE",
            })
            .collect(),
        next_shard_iterator: next_iterator,
        millis_behind_latest: behind,
    })
}

/// Runs blocking log I/O off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, tw_log::LogError> + Send + 'static,
) -> Result<T, AwsError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AwsError::unavailable(format!("read task failed: {e}")))?
        .map_err(AwsError::from)
}
