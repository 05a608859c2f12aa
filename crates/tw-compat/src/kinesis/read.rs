//! `GetShardIterator` and `GetRecords`: reads straight from the log, answering the stored
//! bytes (base64) with sequence numbers that are the offsets.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tw_core::{StreamName, now_ms};

use super::{StreamRef, existing};
use crate::CompatState;
use crate::aws::{AwsError, encode_data};
use crate::shards::{
    IteratorError, ShardPosition, decode_iterator, encode_iterator, parse_sequence_number,
    parse_shard_id, sequence_number,
};

/// Most records one `GetRecords` call returns (as in Kinesis).
const MAX_GET_RECORDS: usize = 10_000;
/// About the most payload bytes one `GetRecords` call returns (as in Kinesis).
const MAX_GET_BYTES: usize = 10 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct GetShardIteratorInput {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    shard_id: String,
    shard_iterator_type: String,
    starting_sequence_number: Option<String>,
    /// Seconds since the epoch (AWS JSON timestamps).
    timestamp: Option<f64>,
}

pub(super) async fn get_shard_iterator(
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
pub(super) struct GetRecordsInput {
    shard_iterator: String,
    limit: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct GetRecordsOutput {
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

pub(super) async fn get_records(
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
    let (shard, from) = (position.partition, position.offset);
    let (records, next, end) = blocking(move || {
        let (records, next) = match log.read(&name, shard, from, limit, MAX_GET_BYTES) {
            Ok(records) => {
                let next = records.last().map_or(from, |r| r.offset + 1);
                (records, next)
            }
            // A shard reader has no dead-letter queue: it is told nothing but the iterator,
            // which steps over what cannot be read, as the pipeline's consumers do (each of
            // those stores a dead letter naming the range).
            Err(damage @ tw_log::LogError::Corrupt { resume_at, .. }) => {
                tracing::error!(stream = %name, shard, from, resume_at, %damage, "GetRecords steps over records on damaged disk");
                metrics::counter!("tidewatch_kinesis_skipped_unreadable_total")
                    .increment(resume_at.saturating_sub(from));
                (Vec::new(), resume_at)
            }
            Err(error) => return Err(error),
        };
        let end = log.end_offset(&name, shard)?;
        Ok((records, next, end))
    })
    .await?;
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
