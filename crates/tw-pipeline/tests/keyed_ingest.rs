//! Idempotent ingest (`Ingestor::ingest_keyed`): a request repeated with the same key stores
//! nothing and gets the first answer, also after a restart; a repeat of a request that failed
//! part-way (a partition's append, the dead-letter queue) stores only what was not stored; a
//! duplicate while the first is in flight is refused; a key reused for another body is refused.
//! Every check counts the stored events exactly.

use std::convert::Infallible;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tw_core::{StreamConfig, StreamName};
use tw_log::testing::FaultyLog;
use tw_log::{DiskLog, Log, LogConfig};
use tw_pipeline::dedup::{DEFAULT_HORIZON_MS, DedupStore};
use tw_pipeline::{
    ContentEncoding, DLQ_STREAM, DeadLetterQueue, IdempotencyKey, IngestError, IngestLimits,
    Ingestor, KeyedBody, KeyedOutcome, StreamDefaults, StreamRegistry,
};

/// The ingest path over a [`FaultyLog`] in `dir`, with its dedup store.
struct Node {
    log: Arc<FaultyLog>,
    ingestor: Arc<Ingestor>,
    dlq: DeadLetterQueue,
    dedup: Arc<DedupStore>,
}

impl Node {
    fn open(dir: &Path) -> Node {
        let disk = DiskLog::open(LogConfig::new(dir.join("log"))).unwrap();
        let log = Arc::new(FaultyLog::new(disk));
        let shared: Arc<dyn Log> = log.clone();
        let registry = Arc::new(
            StreamRegistry::open(
                &dir.join("streams"),
                shared.clone(),
                StreamDefaults::default(),
            )
            .unwrap(),
        );
        let dlq = DeadLetterQueue::open(shared.clone()).unwrap();
        let ingestor = Arc::new(Ingestor::new(
            shared.clone(),
            registry,
            dlq.clone(),
            IngestLimits::default(),
        ));
        let dedup = DedupStore::open(shared, DEFAULT_HORIZON_MS).unwrap();
        Node {
            log,
            ingestor,
            dlq,
            dedup,
        }
    }

    /// Sends `body` (plain, in two chunks) to `stream` under `key`.
    async fn send(&self, stream: &str, key: &str, body: &str) -> Result<KeyedOutcome, IngestError> {
        let key = IdempotencyKey::parse(key.as_bytes()).unwrap();
        let (first, second) = body.split_at(body.len() / 2);
        let chunks = futures::stream::iter([
            Ok::<_, Infallible>(Bytes::copy_from_slice(first.as_bytes())),
            Ok(Bytes::copy_from_slice(second.as_bytes())),
        ]);
        self.ingestor
            .ingest_keyed(&self.dedup, stream, &key, KeyedBody::Chunks(chunks))
            .await
    }

    /// The `n` of every event stored in `stream`, sorted.
    fn numbers(&self, stream: &str) -> Vec<u64> {
        let name = StreamName::new(stream).unwrap();
        let mut numbers = Vec::new();
        for partition in 0..self.log.partitions(&name).unwrap_or(0) {
            let records = self
                .log
                .read(&name, partition, 0, 100_000, 64 << 20)
                .unwrap();
            numbers.extend(records.iter().map(|r| {
                let value: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                value["n"].as_u64().unwrap()
            }));
        }
        numbers.sort_unstable();
        numbers
    }

    fn two_partitions(&self, stream: &str) {
        let config = StreamConfig {
            partitions: 2,
            ..StreamConfig::default()
        };
        let name = StreamName::new(stream).unwrap();
        self.ingestor.registry().put(&name, config, false).unwrap();
    }
}

/// `count` events `{"n": i}` (1-based) with `not json` as line `bad_line`.
fn body(count: u64, bad_line: usize) -> String {
    let mut lines: Vec<String> = (1..=count).map(|n| format!("{{\"n\":{n}}}")).collect();
    lines.insert(bad_line - 1, "not json".into());
    lines.join("\n") + "\n"
}

fn rejected_lines(outcome: &KeyedOutcome) -> Vec<usize> {
    outcome.outcome.rejected.iter().map(|r| r.line).collect()
}

#[tokio::test]
async fn a_repeat_stores_nothing_and_gets_the_first_answer_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let body = body(3, 2);
    {
        let node = Node::open(dir.path());
        let first = node.send("s", "key-1", &body).await.unwrap();
        assert!(!first.replayed);
        assert_eq!(
            (first.outcome.accepted, rejected_lines(&first)),
            (3, vec![2])
        );
        let repeat = node.send("s", "key-1", &body).await.unwrap();
        assert!(repeat.replayed);
        assert_eq!(repeat.outcome.accepted, 3);
        assert_eq!(
            serde_json::to_value(&repeat.outcome).unwrap(),
            serde_json::to_value(&first.outcome).unwrap(),
            "the same answer, reasons included"
        );
        assert_eq!(node.numbers("s"), [1, 2, 3]);
        assert_eq!(node.dlq.len().unwrap(), 1, "nothing dead-lettered twice");

        // The same content gzipped is the same body.
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(body.as_bytes()).unwrap();
        let whole = KeyedBody::<futures::stream::Empty<Result<Bytes, Infallible>>>::Whole(
            Bytes::from(gzip.finish().unwrap()),
            ContentEncoding::Gzip,
        );
        let key = IdempotencyKey::parse(b"key-1").unwrap();
        let gzipped = node
            .ingestor
            .ingest_keyed(&node.dedup, "s", &key, whole)
            .await
            .unwrap();
        assert!(gzipped.replayed);

        // The key is the client's per stream; another stream stores its own.
        let other = node.send("t", "key-1", &body).await.unwrap();
        assert!(!other.replayed);
        assert_eq!(node.numbers("t"), [1, 2, 3]);

        // Another body under a used key would be answered for events never stored.
        let error = node
            .send("s", "key-1", &self::body(4, 2))
            .await
            .unwrap_err();
        assert!(
            matches!(error, IngestError::IdempotencyKeyReused { .. }),
            "{error:?}"
        );
        assert!(error.is_client_error());
        assert_eq!(node.numbers("s"), [1, 2, 3]);
    }
    let node = Node::open(dir.path());
    let repeat = node.send("s", "key-1", &body).await.unwrap();
    assert!(repeat.replayed, "remembered across a restart");
    assert_eq!(
        (repeat.outcome.accepted, rejected_lines(&repeat)),
        (3, vec![2])
    );
    assert_eq!(node.numbers("s"), [1, 2, 3]);
}

#[tokio::test]
async fn a_retry_after_a_partial_failure_stores_only_what_was_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let body = body(10, 5);
    {
        let node = Node::open(dir.path());
        node.two_partitions("p");
        node.log
            .fail_appends_when(|stream, partition| stream.as_str() == "p" && partition == 1);
        let error = node.send("p", "batch-7", &body).await.unwrap_err();
        assert!(error.is_retryable(), "{error}");
        let stored = node.numbers("p");
        assert!(
            !stored.is_empty() && stored.len() < 10,
            "one partition stored, the other failed: {stored:?}"
        );
        assert_eq!(node.dlq.len().unwrap(), 1);
    }
    // The retry comes after a restart, with the disk healthy again.
    let node = Node::open(dir.path());
    let retry = node.send("p", "batch-7", &body).await.unwrap();
    assert!(!retry.replayed);
    assert_eq!(
        (retry.outcome.accepted, rejected_lines(&retry)),
        (10, vec![5]),
        "answered for the whole body"
    );
    assert_eq!(node.numbers("p"), (1..=10).collect::<Vec<_>>(), "each once");
    assert_eq!(
        node.dlq.len().unwrap(),
        1,
        "the bad line is not dead-lettered twice"
    );
    let repeat = node.send("p", "batch-7", &body).await.unwrap();
    assert!(repeat.replayed);
    assert_eq!(repeat.outcome.accepted, 10);
    assert_eq!(node.numbers("p").len(), 10);
}

#[tokio::test]
async fn a_dead_letter_failure_is_retried_without_storing_the_events_again() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path());
    let body = body(3, 4);
    node.log
        .fail_appends_when(|stream, partition| stream.as_str() == DLQ_STREAM && partition == 0);
    let error = node.send("d", "k", &body).await.unwrap_err();
    assert!(
        matches!(error, IngestError::DeadLetterWrite { count: 1, .. }),
        "{error:?}"
    );
    assert_eq!(node.numbers("d"), [1, 2, 3], "the events were stored");
    node.log.heal();
    let retry = node.send("d", "k", &body).await.unwrap();
    assert_eq!(
        (retry.outcome.accepted, rejected_lines(&retry)),
        (3, vec![4])
    );
    assert_eq!(node.numbers("d"), [1, 2, 3], "not stored twice");
    assert_eq!(node.dlq.len().unwrap(), 1);
}

#[tokio::test]
async fn a_duplicate_while_the_first_is_in_flight_is_refused_and_a_dropped_request_frees_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(Node::open(dir.path()));
    let key = IdempotencyKey::parse(b"slow").unwrap();
    // The first request's body is still arriving.
    let (sender, chunks) = futures::channel::mpsc::unbounded::<Result<Bytes, Infallible>>();
    sender
        .unbounded_send(Ok(Bytes::from_static(b"{\"n\":1}\n")))
        .unwrap();
    let first = {
        let (node, key) = (node.clone(), key.clone());
        tokio::spawn(async move {
            node.ingestor
                .ingest_keyed(&node.dedup, "c", &key, KeyedBody::Chunks(chunks))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let error = node.send("c", "slow", "{\"n\":1}\n").await.unwrap_err();
    assert!(
        matches!(error, IngestError::IdempotencyKeyInFlight { .. }),
        "{error:?}"
    );
    assert!(node.numbers("c").is_empty());
    sender
        .unbounded_send(Ok(Bytes::from_static(b"{\"n\":2}\n")))
        .unwrap();
    drop(sender);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.outcome.accepted, 2);
    let repeat = node
        .send("c", "slow", "{\"n\":1}\n{\"n\":2}\n")
        .await
        .unwrap();
    assert!(repeat.replayed);
    assert_eq!(node.numbers("c"), [1, 2]);

    // A request dropped while its body arrives (the client went away) stored nothing and
    // holds the key no more.
    let (sender, chunks) = futures::channel::mpsc::unbounded::<Result<Bytes, Infallible>>();
    let dropped = {
        let node = node.clone();
        let key = IdempotencyKey::parse(b"gone").unwrap();
        tokio::spawn(async move {
            node.ingestor
                .ingest_keyed(&node.dedup, "c", &key, KeyedBody::Chunks(chunks))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    dropped.abort();
    let _ = dropped.await;
    drop(sender);
    let after = node.send("c", "gone", "{\"n\":3}\n").await.unwrap();
    assert!(!after.replayed);
    assert_eq!(node.numbers("c"), [1, 2, 3]);
}
