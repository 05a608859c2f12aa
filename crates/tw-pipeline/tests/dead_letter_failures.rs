//! "Nothing lost on bad input" when the dead-letter queue itself fails: a consumer holds the
//! batch (and its commits) until the queue has the batch's letters, a consumer restarted from
//! older offsets does not dead-letter a record twice, and an ingest request whose rejected
//! lines could not be kept fails with a retryable error instead of claiming they were (per
//! record for the compatible APIs' `ingest_records`). A letter whose record fills the log's
//! limit is stored all the same (cut to fit), not retried forever.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Recorder, Seen};
use tw_core::{AppendRecord, Offset, StreamName};
use tw_log::testing::FaultyLog;
use tw_log::{DiskLog, Log, LogConfig, LogError, OffsetStore};
use tw_pipeline::{
    CompatRecord, Consumer, ConsumerError, ContentEncoding, DLQ_STREAM, DeadLetterQueue,
    EventBatch, IngestError, IngestLimits, Ingestor, RecordOutcome, RunnerConfig, StreamDefaults,
    StreamPartition, StreamRegistry, spawn_consumer,
};

/// A disk log in `dir` whose appends to the dead-letter queue fail (with an i/o error, not a
/// full disk: the queue's trouble may be any) from the start when `dlq_broken`.
fn open_log(dir: &std::path::Path, dlq_broken: bool) -> Arc<FaultyLog> {
    let disk = DiskLog::open(LogConfig::new(dir.join("log"))).unwrap();
    let log = FaultyLog::new(disk).with_error(|path| LogError::Io {
        path: path.into(),
        source: std::io::Error::other("injected failure"),
    });
    if dlq_broken {
        log.fail_appends_when(|stream, _| stream.as_str() == DLQ_STREAM);
    }
    Arc::new(log)
}

fn payloads(payloads: &[&'static str]) -> Vec<AppendRecord> {
    payloads
        .iter()
        .map(|payload| AppendRecord {
            ingest_time_ms: 1,
            event_time_ms: 1,
            key: Bytes::new(),
            payload: Bytes::from_static(payload.as_bytes()),
        })
        .collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// (stage, source partition, source offset) of every dead letter.
fn letters(dlq: &DeadLetterQueue) -> Vec<(String, Option<u32>, Option<u64>)> {
    dlq.list(0, 100, None)
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.letter.stage,
                e.letter.source_partition,
                e.letter.source_offset,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_held_until_the_queue_has_its_dead_letters_and_commits_never_pass_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), true);
    let stream = StreamName::new("s").unwrap();
    log.create_stream(&stream, 1).unwrap();
    // Ingest validates; a record that is not JSON comes from another writer or a damaged disk.
    log.append(
        &stream,
        0,
        payloads(&["{\"a\":0}", "not json", "{\"a\":2}"]),
    )
    .await
    .unwrap();
    let dlq = DeadLetterQueue::open(log.clone()).unwrap();
    let offsets = Arc::new(OffsetStore::open(dir.path().join("offsets")).unwrap());
    let spawn = |seen: Seen, stop: Arc<AtomicBool>| {
        spawn_consumer(
            Recorder::boxed(seen, Duration::ZERO),
            log.clone(),
            offsets.clone(),
            dlq.clone(),
            RunnerConfig {
                commit_interval: Duration::from_millis(10),
                ..RunnerConfig::default()
            },
            stop,
        )
        .unwrap()
    };

    let stop = Arc::new(AtomicBool::new(false));
    let running = spawn(Seen::default(), stop.clone());
    let progress = running.progress.clone();
    eventually("a failed dead-letter write", || {
        progress
            .failing()
            .is_some_and(|f| f.attempts >= 2 && f.last_error.contains("dead-letter queue"))
    })
    .await;
    // The recorder took the batch, but the runner did not move past the unstored letter.
    assert_eq!(progress.position(&stream, 0), None);
    assert!(dlq.is_empty().unwrap());
    // A stop while the queue still refuses: the flush makes the whole batch safe for the
    // recorder, but the commit stops at the record whose letter is not stored.
    stop.store(true, Ordering::Relaxed);
    running.thread.join().unwrap();
    assert_eq!(
        offsets.load("recorder").unwrap(),
        BTreeMap::from([((stream.clone(), 0), 1)])
    );

    // Healed: the next start reads the record again and stores its letter, once.
    log.heal();
    let seen = Seen::default();
    let stop = Arc::new(AtomicBool::new(false));
    let running = spawn(seen.clone(), stop.clone());
    let progress = running.progress.clone();
    eventually("caught up", || progress.position(&stream, 0) == Some(3)).await;
    assert_eq!(
        letters(&dlq),
        vec![("consumer:recorder".to_string(), Some(0), Some(1))]
    );
    let handed: Vec<Offset> = seen.lock().unwrap().iter().map(|s| s.1).collect();
    assert_eq!(handed, vec![2], "read again from the held offset");
    assert_eq!(progress.failing(), None);
    stop.store(true, Ordering::Relaxed);
    running.thread.join().unwrap();
    assert_eq!(
        offsets.load("recorder").unwrap(),
        BTreeMap::from([((stream, 0), 3)])
    );
}

/// Buffers like the search indexer (nothing safe until a flush) and, like it, is restarted
/// from its committed offsets after a failure; fails the first batch holding offset 3.
struct Restarting {
    failed_once: bool,
    handled: Arc<Mutex<Vec<Offset>>>,
}

impl Consumer for Restarting {
    fn name(&self) -> &str {
        "restarting"
    }
    fn start(&mut self, _: &BTreeMap<StreamPartition, Offset>) -> Result<(), ConsumerError> {
        Ok(())
    }
    fn handle(&mut self, batch: &EventBatch) -> Result<(), ConsumerError> {
        if !self.failed_once && batch.records.iter().any(|r| r.offset == 3) {
            self.failed_once = true;
            return Err(ConsumerError {
                consumer: "restarting".into(),
                message: "index writer died".into(),
            });
        }
        let mut handled = self.handled.lock().unwrap();
        handled.extend(batch.records.iter().map(|r| r.offset));
        Ok(())
    }
    fn tick(&mut self, _now_ms: i64) -> Result<(), ConsumerError> {
        Ok(())
    }
    fn restart_after_failure(&self) -> bool {
        true
    }
    fn safe_offsets(&self) -> BTreeMap<StreamPartition, Offset> {
        BTreeMap::new()
    }
    fn flush(&mut self) -> Result<(), ConsumerError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_for_a_record_at_the_logs_limit_is_stored_cut_and_the_consumer_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 * 1024;
    let log: Arc<dyn Log> = DiskLog::open(LogConfig {
        max_record_bytes: limit,
        ..LogConfig::new(dir.path().join("log"))
    })
    .unwrap();
    let stream = StreamName::new("s").unwrap();
    log.create_stream(&stream, 1).unwrap();
    // Not JSON, and each control character takes six bytes in the letter's JSON: the letter
    // of this record would be six times the log's limit, and a third over it in base64.
    let huge = vec![0x01u8; limit];
    let mut records = payloads(&["{\"a\":0}"]);
    records.push(AppendRecord {
        payload: Bytes::from(huge.clone()),
        ..records[0].clone()
    });
    records.extend(payloads(&["{\"a\":2}"]));
    log.append(&stream, 0, records).await.unwrap();
    let dlq = DeadLetterQueue::open(log.clone()).unwrap();
    let offsets = Arc::new(OffsetStore::open(dir.path().join("offsets")).unwrap());
    let seen = Seen::default();
    let stop = Arc::new(AtomicBool::new(false));
    let running = spawn_consumer(
        Recorder::boxed(seen.clone(), Duration::ZERO),
        log.clone(),
        offsets,
        dlq.clone(),
        RunnerConfig::default(),
        stop.clone(),
    )
    .unwrap();
    let progress = running.progress.clone();
    eventually("the consumer past the huge record", || {
        progress.position(&stream, 0) == Some(3)
    })
    .await;
    assert_eq!(progress.failing(), None);
    let entries = dlq.list(0, 10, None).unwrap();
    assert_eq!(entries.len(), 1);
    let letter = &entries[0].letter;
    assert_eq!(letter.source_offset, Some(1));
    assert_eq!(letter.raw_truncated_from, Some(limit));
    let kept = letter.raw_bytes();
    assert!(!kept.is_empty() && huge.starts_with(&kept));
    let handed: Vec<Offset> = seen.lock().unwrap().iter().map(|s| s.1).collect();
    assert_eq!(handed, vec![0, 2]);
    stop.store(true, Ordering::Relaxed);
    running.thread.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_restarted_from_older_offsets_does_not_dead_letter_a_record_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), false);
    let stream = StreamName::new("s").unwrap();
    log.create_stream(&stream, 1).unwrap();
    log.append(
        &stream,
        0,
        payloads(&["not json", "{\"a\":1}", "{\"a\":2}", "{\"a\":3}"]),
    )
    .await
    .unwrap();
    let dlq = DeadLetterQueue::open(log.clone()).unwrap();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let running = spawn_consumer(
        Box::new(Restarting {
            failed_once: false,
            handled: handled.clone(),
        }),
        log.clone(),
        Arc::new(OffsetStore::open(dir.path().join("offsets")).unwrap()),
        dlq.clone(),
        // Batches [0, 1] and [2, 3]: the failure of the second restarts from offset 0.
        RunnerConfig {
            max_batch_records: 2,
            ..RunnerConfig::default()
        },
        stop.clone(),
    )
    .unwrap();
    let progress = running.progress.clone();
    eventually("caught up", || progress.position(&stream, 0) == Some(4)).await;
    assert_eq!(
        *handled.lock().unwrap(),
        vec![1, 1, 2, 3],
        "restarted from 0"
    );
    assert_eq!(
        letters(&dlq),
        vec![("consumer:restarting".to_string(), Some(0), Some(0))]
    );
    stop.store(true, Ordering::Relaxed);
    running.thread.join().unwrap();
}

#[tokio::test]
async fn ingest_fails_retryably_when_rejected_lines_cannot_be_kept() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), true);
    let log_dyn: Arc<dyn Log> = log.clone();
    let registry = Arc::new(
        StreamRegistry::open(
            &dir.path().join("streams"),
            log_dyn.clone(),
            StreamDefaults::default(),
        )
        .unwrap(),
    );
    let dlq = DeadLetterQueue::open(log_dyn.clone()).unwrap();
    let ingestor = Ingestor::new(log_dyn, registry, dlq.clone(), IngestLimits::default());
    let body = Bytes::from_static(b"{\"a\":1}\nnot json\n");

    let error = ingestor
        .ingest_body("s", body.clone(), ContentEncoding::Identity)
        .await
        .unwrap_err();
    assert!(
        matches!(error, IngestError::DeadLetterWrite { count: 1, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable() && !error.is_client_error(), "{error}");

    let stream = StreamName::new("s").unwrap();
    let records = vec![CompatRecord {
        partition: None,
        key: Bytes::new(),
        payload: Bytes::from_static(b"[1]"),
    }];
    // Per record: the refused record whose letter could not be written is failed (retryable),
    // the stored one stays stored, so a client retrying its failed records stores nothing
    // twice (a whole-request error made `_bulk` answer the stored items 503 too).
    let mut records = records;
    records.push(CompatRecord {
        partition: None,
        key: Bytes::new(),
        payload: Bytes::from_static(b"{\"ok\":1}"),
    });
    let outcomes = ingestor
        .ingest_records(&stream, records.clone())
        .await
        .unwrap();
    assert!(
        matches!(&outcomes[0], RecordOutcome::Failed { reason } if reason.contains("dead-letter queue") && reason.contains("an event must be a JSON object")),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[1], RecordOutcome::Stored { .. }),
        "{outcomes:?}"
    );
    assert!(dlq.is_empty().unwrap());
    records.pop();

    // The client's retry, once the queue works again, keeps the lines.
    log.heal();
    let outcome = ingestor
        .ingest_body("s", body, ContentEncoding::Identity)
        .await
        .unwrap();
    assert_eq!(outcome.rejected.len(), 1);
    ingestor.ingest_records(&stream, records).await.unwrap();
    assert_eq!(dlq.len().unwrap(), 2);
}
