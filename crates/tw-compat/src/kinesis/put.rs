//! `PutRecord` and `PutRecords`: each entry placed on its shard (MD5 of the partition key, or
//! the explicit hash key), its data decoded into one buffer per request, then appended through
//! [`tw_pipeline::Ingestor::ingest_records`] and answered per record.
//!
//! This is the hot path of the Kinesis API (a producer sends 500 records per call), so it
//! avoids per-record work the native path does not have: the data stays borrowed from the
//! body until decoded, keys and data share one allocation, shards are found in precomputed
//! ranges, and the answer is written without a string per record.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tw_pipeline::{CompatRecord, RecordOutcome};

use super::{StreamRef, existing};
use crate::CompatState;
use crate::aws::{AwsError, decode_data_into};
use crate::shards::{
    SequenceNumber, ShardId, ShardRanges, hash_partition_key, parse_hash_key, sequence_number,
    shard_id,
};

/// Most records in one `PutRecords` call (as in Kinesis).
const MAX_PUT_RECORDS: usize = 500;
/// Longest partition key (as in Kinesis).
const MAX_PARTITION_KEY_CHARS: usize = 256;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct PutRecordInput {
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
    data: Cow<'a, [u8]>,
    #[serde(borrow)]
    partition_key: Cow<'a, str>,
    explicit_hash_key: Option<String>,
}

/// Where one entry goes: its partition, and its key and decoded bytes in the request's arena.
struct Placed {
    partition: u32,
    key: std::ops::Range<usize>,
    data: std::ops::Range<usize>,
}

/// Places one entry, copying its key and decoding its data onto the end of `arena` (one
/// allocation per request instead of two per record), or says why the entry is invalid.
fn place(
    entry: &RecordEntry<'_>,
    ranges: &ShardRanges,
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
    let data = start..arena.len();
    arena.extend_from_slice(entry.partition_key.as_bytes());
    Ok(Placed {
        partition: ranges.shard_for(hash),
        key: data.end..arena.len(),
        data,
    })
}

/// Turns placed entries into records over the frozen arena.
fn to_records(placed: Vec<Placed>, arena: Vec<u8>) -> Vec<CompatRecord> {
    let arena = Bytes::from(arena);
    placed
        .into_iter()
        .map(|p| CompatRecord {
            partition: Some(p.partition),
            key: arena.slice(p.key),
            payload: arena.slice(p.data),
        })
        .collect()
}

pub(super) async fn put_record(
    state: &CompatState,
    input: PutRecordInput,
) -> Result<Value, AwsError> {
    let reference = StreamRef {
        stream_name: input.stream_name,
        stream_arn: input.stream_arn,
    };
    let (name, stream) = existing(state, &reference)?;
    let entry = RecordEntry {
        data: Cow::Owned(input.data.into_bytes()),
        partition_key: Cow::Owned(input.partition_key),
        explicit_hash_key: input.explicit_hash_key,
    };
    let mut arena = Vec::new();
    let ranges = ShardRanges::new(stream.config.partitions);
    let placed = place(&entry, &ranges, &mut arena)?;
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
pub(super) struct PutRecordsInput<'a> {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(borrow)]
    records: Vec<RecordEntry<'a>>,
}

/// One entry of a `PutRecords` answer: where the record was stored, or an error.
enum PutRecordsEntry {
    Stored { partition: u32, offset: u64 },
    Failed { code: &'static str, message: String },
}

impl PutRecordsEntry {
    fn error(code: &'static str, message: String) -> Self {
        Self::Failed { code, message }
    }
}

/// A `PutRecords` answer.
pub(super) struct PutRecordsOutput {
    records: Vec<PutRecordsEntry>,
}

impl PutRecordsOutput {
    /// The answer's JSON, written directly: serde's generic path (a map per entry, the
    /// numbers formatted through `fmt`) cost more than the rest of the answer's work.
    pub(super) fn to_json(&self) -> Vec<u8> {
        let failed = self
            .records
            .iter()
            .filter(|r| matches!(r, PutRecordsEntry::Failed { .. }))
            .count();
        let mut out = Vec::with_capacity(64 + self.records.len() * 72);
        out.extend_from_slice(format!("{{\"FailedRecordCount\":{failed},\"Records\":[").as_bytes());
        for (i, record) in self.records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match record {
                PutRecordsEntry::Stored { partition, offset } => {
                    out.extend_from_slice(b"{\"SequenceNumber\":\"");
                    out.extend_from_slice(SequenceNumber(*offset).text(&mut [0; 20]).as_bytes());
                    out.extend_from_slice(b"\",\"ShardId\":\"");
                    out.extend_from_slice(ShardId(*partition).text(&mut [0; 20]).as_bytes());
                    out.extend_from_slice(b"\"}");
                }
                PutRecordsEntry::Failed { code, message } => {
                    let entry = json!({ "ErrorCode": code, "ErrorMessage": message });
                    out.extend_from_slice(entry.to_string().as_bytes());
                }
            }
        }
        out.extend_from_slice(b"],\"EncryptionType\":\"NONE\"}");
        out
    }
}

pub(super) async fn put_records(
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
    let arena_bytes: usize = input
        .records
        .iter()
        .map(|r| r.data.len() / 4 * 3 + r.partition_key.len())
        .sum();
    let mut arena = Vec::with_capacity(arena_bytes);
    let ranges = ShardRanges::new(stream.config.partitions);
    for (index, entry) in input.records.iter().enumerate() {
        match place(entry, &ranges, &mut arena) {
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
            RecordOutcome::Stored { partition, offset } => {
                PutRecordsEntry::Stored { partition, offset }
            }
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
    Ok(PutRecordsOutput { records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_the_json_kinesis_sends() {
        let output = PutRecordsOutput {
            records: vec![
                PutRecordsEntry::Stored {
                    partition: 3,
                    offset: 42,
                },
                PutRecordsEntry::error("InvalidArgumentException", "bad \"quote\"\n".into()),
                PutRecordsEntry::Stored {
                    partition: 0,
                    offset: u64::MAX,
                },
            ],
        };
        let parsed: Value = serde_json::from_slice(&output.to_json()).unwrap();
        assert_eq!(
            parsed,
            json!({
                "FailedRecordCount": 1,
                "Records": [
                    {"SequenceNumber": sequence_number(42), "ShardId": shard_id(3)},
                    {"ErrorCode": "InvalidArgumentException", "ErrorMessage": "bad \"quote\"\n"},
                    {"SequenceNumber": sequence_number(u64::MAX), "ShardId": shard_id(0)},
                ],
                "EncryptionType": "NONE",
            })
        );
    }
}
