//! `Ingestor::ingest_records`, the entry point of the compatible APIs: per-record outcomes,
//! explicit partitions honoured, refused records dead-lettered, stored bytes exactly as sent.

use std::sync::Arc;

use bytes::Bytes;
use tw_core::{FieldSpec, FieldType, StreamConfig, StreamName, StreamSchema};
use tw_log::{DiskLog, Log, LogConfig};
use tw_pipeline::{
    CompatRecord, DeadLetterQueue, IngestLimits, Ingestor, RecordOutcome, StreamDefaults,
    StreamRegistry,
};

fn record(partition: Option<u32>, payload: &str) -> CompatRecord {
    CompatRecord {
        partition,
        key: Bytes::from_static(b"pk"),
        payload: Bytes::from(payload.to_string()),
    }
}

#[tokio::test]
async fn every_record_gets_its_own_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let registry = Arc::new(
        StreamRegistry::open(
            &dir.path().join("streams"),
            log.clone(),
            StreamDefaults::default(),
        )
        .unwrap(),
    );
    let dlq = DeadLetterQueue::open(log.clone()).unwrap();
    let ingestor = Ingestor::new(
        log.clone(),
        registry.clone(),
        dlq.clone(),
        IngestLimits {
            max_event_bytes: 64,
            ..IngestLimits::default()
        },
    );
    let stream = StreamName::new("s").unwrap();
    let schema = StreamSchema {
        fields: vec![FieldSpec {
            name: "n".into(),
            field_type: FieldType::Integer,
            required: true,
        }],
    };
    registry
        .put(
            &stream,
            StreamConfig {
                partitions: 3,
                schema: Some(schema),
                ..StreamConfig::default()
            },
            false,
        )
        .unwrap();
    let pretty = "{\n  \"n\": 3\n}";
    let outcomes = ingestor
        .ingest_records(
            &stream,
            vec![
                record(Some(2), r#"{"n":1}"#),
                record(Some(2), "not json"),
                record(Some(0), r#"{"n":"x"}"#),
                record(Some(2), pretty),
                record(Some(7), r#"{"n":4}"#),
                record(None, r#"{"n":5}"#),
                record(Some(1), &format!(r#"{{"n":6,"pad":"{}"}}"#, "x".repeat(80))),
                record(Some(1), "[1]"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes[0],
        RecordOutcome::Stored {
            partition: 2,
            offset: 0
        }
    );
    assert_eq!(
        outcomes[3],
        RecordOutcome::Stored {
            partition: 2,
            offset: 1
        },
        "order within a partition is the order given"
    );
    assert!(
        matches!(&outcomes[1], RecordOutcome::Rejected { reason } if reason.contains("invalid JSON"))
    );
    assert!(
        matches!(&outcomes[2], RecordOutcome::Rejected { .. }),
        "schema violation"
    );
    assert!(
        matches!(&outcomes[4], RecordOutcome::Failed { reason } if reason.contains("partition 7"))
    );
    assert!(matches!(outcomes[5], RecordOutcome::Stored { .. }));
    assert!(
        matches!(&outcomes[6], RecordOutcome::Rejected { reason } if reason.contains("exceeds"))
    );
    assert!(
        matches!(&outcomes[7], RecordOutcome::Rejected { reason } if reason.contains("object"))
    );

    let stored = log.read(&stream, 2, 0, 10, 1 << 20).unwrap();
    assert_eq!(
        stored[1].payload,
        Bytes::from(pretty),
        "bytes are stored as sent"
    );
    assert_eq!(stored[0].key, Bytes::from_static(b"pk"));
    let letters = dlq.list(0, 100, Some("s")).unwrap();
    assert_eq!(letters.len(), 4, "every refused record is dead-lettered");
    assert_eq!(letters[0].letter.raw, "not json");
}
