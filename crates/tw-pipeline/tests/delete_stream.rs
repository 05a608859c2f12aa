//! `Ingestor::delete_stream` with a running consumer: the stream goes from the log and the
//! registry, the consumer forgets it (and its committed offsets go) before the deletion
//! answers, and a stream created again under the name is read from its new start — offsets
//! continuing where the deleted stream's ended, never reused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tw_core::{Offset, StreamName};
use tw_log::{DiskLog, Log, LogConfig, OffsetStore};
use tw_pipeline::{
    Consumer, ConsumerError, ContentEncoding, DeadLetterQueue, EventBatch, IngestError,
    IngestLimits, Ingestor, RunnerConfig, StreamDefaults, StreamPartition, StreamRegistry,
    spawn_consumer,
};

/// What the recording consumer saw: (stream, partition, offset, payload) and forgotten streams.
#[derive(Default)]
struct Seen {
    records: Vec<(String, u32, Offset, String)>,
    forgotten: Vec<String>,
}

struct Recorder {
    seen: Arc<Mutex<Seen>>,
    handled: BTreeMap<StreamPartition, Offset>,
}

impl Consumer for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn start(
        &mut self,
        committed: &BTreeMap<StreamPartition, Offset>,
    ) -> Result<(), ConsumerError> {
        self.handled = committed.clone();
        Ok(())
    }

    fn handle(&mut self, batch: &EventBatch) -> Result<(), ConsumerError> {
        let mut seen = self.seen.lock().unwrap();
        for record in &batch.records {
            let text = String::from_utf8_lossy(&record.payload).into_owned();
            seen.records.push((
                batch.stream.to_string(),
                batch.partition,
                record.offset,
                text,
            ));
            self.handled
                .insert((batch.stream.clone(), batch.partition), record.offset + 1);
        }
        Ok(())
    }

    fn tick(&mut self, _now_ms: i64) -> Result<(), ConsumerError> {
        Ok(())
    }

    fn forget_stream(&mut self, stream: &StreamName) -> Result<(), ConsumerError> {
        self.handled.retain(|(s, _), _| s != stream);
        self.seen.lock().unwrap().forgotten.push(stream.to_string());
        Ok(())
    }

    fn safe_offsets(&self) -> BTreeMap<StreamPartition, Offset> {
        self.handled.clone()
    }

    fn flush(&mut self) -> Result<(), ConsumerError> {
        Ok(())
    }
}

fn events(tag: &str, n: usize) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| format!("{{\"tag\":\"{tag}\",\"i\":{i}}}\n"))
            .collect::<String>(),
    )
}

async fn wait_for(seen: &Mutex<Seen>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().records.len() < count {
        assert!(
            Instant::now() < deadline,
            "consumer never saw {count} records"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_is_forgotten_and_its_name_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let mut defaults = StreamDefaults::default();
    defaults.config.partitions = 2;
    let registry =
        Arc::new(StreamRegistry::open(&dir.path().join("streams"), log.clone(), defaults).unwrap());
    let dlq = DeadLetterQueue::open(log.clone()).unwrap();
    let ingestor = Ingestor::new(
        log.clone(),
        registry.clone(),
        dlq.clone(),
        IngestLimits::default(),
    );
    let offsets = Arc::new(OffsetStore::open(dir.path().join("offsets")).unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shutdown = Arc::new(AtomicBool::new(false));
    let consumer = spawn_consumer(
        Box::new(Recorder {
            seen: seen.clone(),
            handled: BTreeMap::new(),
        }),
        log.clone(),
        offsets.clone(),
        dlq,
        RunnerConfig {
            commit_interval: Duration::from_millis(10),
            ..RunnerConfig::default()
        },
        shutdown.clone(),
    )
    .unwrap();
    let consumers = vec![("recorder".to_string(), consumer.progress.clone())];
    let s = StreamName::new("s").unwrap();

    let outcome = ingestor
        .ingest_body("s", events("old", 10), ContentEncoding::Identity)
        .await
        .unwrap();
    assert_eq!(outcome.accepted, 10);
    ingestor
        .ingest_body("other", events("other", 3), ContentEncoding::Identity)
        .await
        .unwrap();
    wait_for(&seen, 13).await;
    let ends: Vec<Offset> = (0..2).map(|p| log.end_offset(&s, p).unwrap()).collect();
    // Let a commit happen, so there are committed offsets of `s` to drop.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        offsets
            .load("recorder")
            .unwrap()
            .keys()
            .any(|(name, _)| *name == s)
    );

    let deletion = ingestor
        .delete_stream(&s, &consumers, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(deletion.stream, "s");
    assert!(deletion.consumers_pending.is_empty());
    // Forgotten before the answer: offsets of `s` are no longer committed, those of the
    // other stream are.
    assert_eq!(seen.lock().unwrap().forgotten, vec!["s".to_string()]);
    let committed = offsets.load("recorder").unwrap();
    assert!(
        !committed.keys().any(|(name, _)| *name == s),
        "{committed:?}"
    );
    assert!(committed.keys().any(|(name, _)| name.as_str() == "other"));
    assert!(registry.get(&s).is_none() && log.partitions(&s).is_none());
    assert!(consumer.progress.position(&s, 0).is_none());
    assert!(!dir.path().join("streams/s.json").exists());

    // Unknown, internal: refused.
    assert!(matches!(
        ingestor
            .delete_stream(&s, &consumers, Duration::from_secs(1))
            .await,
        Err(IngestError::UnknownStream(_))
    ));
    assert!(matches!(
        ingestor
            .delete_stream(
                &StreamName::internal("_dlq"),
                &consumers,
                Duration::from_secs(1)
            )
            .await,
        Err(IngestError::BadStream(_))
    ));

    // The name again: empty, continuing at the old ends; the consumer reads only new records.
    ingestor
        .ingest_body("s", events("new", 6), ContentEncoding::Identity)
        .await
        .unwrap();
    for (p, end) in ends.iter().enumerate() {
        assert_eq!(log.start_offset(&s, p as u32).unwrap(), *end);
    }
    wait_for(&seen, 19).await;
    let seen = seen.lock().unwrap();
    let new: Vec<_> = seen.records[13..].iter().collect();
    assert!(
        new.iter()
            .all(|(stream, _, _, text)| stream == "s" && text.contains("new"))
    );
    for (_, partition, offset, _) in &new {
        assert!(
            *offset >= ends[*partition as usize],
            "offset {offset} reused"
        );
    }
    drop(seen);
    shutdown.store(true, Ordering::Relaxed);
    consumer.thread.join().unwrap();
}
