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

//!
//! Code map: this file (dispatch and the stream operations), `put` (`PutRecord`,
//! `PutRecords`), `read` (`GetShardIterator`, `GetRecords`).

mod put;
mod read;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use tw_core::{StreamConfig, StreamName};
use tw_pipeline::StreamState;

use crate::CompatState;
use crate::aws::{AwsError, json_bytes_response, json_response, operation_label, parse_input};
use crate::shards::{hash_key_range, sequence_number, shard_id};

/// The operations [`dispatch`] runs (every other one is refused).
const OPERATIONS: [&str; 10] = [
    "CreateStream",
    "DeleteStream",
    "DescribeStream",
    "DescribeStreamSummary",
    "ListStreams",
    "ListShards",
    "PutRecord",
    "PutRecords",
    "GetShardIterator",
    "GetRecords",
];

/// Runs one Kinesis operation (`X-Amz-Target: Kinesis_20131202.{operation}`) on a request
/// body whose credentials were checked; `region` goes into the ARNs answered.
pub async fn dispatch(
    state: &Arc<CompatState>,
    operation: &str,
    body: &[u8],
    region: &str,
) -> Result<Response, AwsError> {
    metrics::counter!("tidewatch_compat_requests_total", "api" => "kinesis", "operation" => operation_label(operation, &OPERATIONS))
        .increment(1);
    let answer = match operation {
        "CreateStream" => create_stream(state, parse_input(body)?)?,
        "DeleteStream" => delete_stream(state, parse_input(body)?).await?,
        "DescribeStream" => describe_stream(state, parse_input(body)?, region, false)?,
        "DescribeStreamSummary" => describe_stream(state, parse_input(body)?, region, true)?,
        "ListStreams" => list_streams(state, parse_input(body)?, region),
        "ListShards" => list_shards(state, parse_input(body)?)?,
        "PutRecord" => put::put_record(state, parse_input(body)?).await?,
        "PutRecords" => {
            let output = put::put_records(state, parse_input(body)?).await?;
            return Ok(json_bytes_response(StatusCode::OK, output.to_json()));
        }
        "GetShardIterator" => read::get_shard_iterator(state, parse_input(body)?).await?,
        "GetRecords" => {
            let output = read::get_records(state, parse_input(body)?).await?;
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
