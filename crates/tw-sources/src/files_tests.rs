//! Tests of the file watcher over a real disk log: exact accounting, restarts, interrupted
//! appends, undecodable files.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use tokio::sync::watch;
use tw_core::StreamName;
use tw_log::{DiskLog, Log, LogConfig};
use tw_pipeline::{
    DLQ_STREAM, DeadLetterQueue, IngestLimits, Ingestor, StreamDefaults, StreamRegistry,
    split_events,
};

use super::*;
use crate::recover::log_positions;

struct Fixture {
    _dir: tempfile::TempDir,
    watched: std::path::PathBuf,
    state_dir: std::path::PathBuf,
    log: Arc<dyn Log>,
    ingestor: Arc<Ingestor>,
    limits: IngestLimits,
}

fn fixture(limits: IngestLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let dlq = DeadLetterQueue::open(log.clone()).unwrap();
    let mut defaults = StreamDefaults::default();
    defaults.config.partitions = 3;
    let registry =
        Arc::new(StreamRegistry::open(&dir.path().join("streams"), log.clone(), defaults).unwrap());
    let ingestor = Arc::new(Ingestor::new(log.clone(), registry, dlq, limits));
    Fixture {
        state_dir: dir.path().join("state"),
        watched,
        _dir: dir,
        log,
        ingestor,
        limits,
    }
}

impl Fixture {
    fn source(&self, batch_records: usize) -> FileSource {
        FileSource::new(
            FileSourceParts {
                name: "test".into(),
                stream: StreamName::new("files").unwrap(),
                location: self.watched.display().to_string(),
                store: Arc::new(LocalFileSystem::new_with_prefix(&self.watched).unwrap()),
                prefix: None,
                poll: PollConfig {
                    poll_interval_ms: 10,
                    settle_ms: 0,
                    batch_records,
                },
                state: FileState::open(&self.state_dir).unwrap(),
            },
            self.ingestor.clone(),
            self.log.clone(),
        )
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        let path = self.watched.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Every payload stored in the stream, with its count.
    fn stored(&self) -> BTreeMap<String, usize> {
        let mut stored = BTreeMap::new();
        let stream = StreamName::new("files").unwrap();
        for partition in 0..self.log.partitions(&stream).unwrap_or(0) {
            for record in self
                .log
                .read(&stream, partition, 0, 1_000_000, 1 << 30)
                .unwrap()
            {
                let text = String::from_utf8(record.payload.to_vec()).unwrap();
                *stored.entry(text).or_default() += 1;
            }
        }
        stored
    }

    fn dead_letters(&self) -> Vec<tw_pipeline::DeadLetter> {
        self.log
            .read(&StreamName::internal(DLQ_STREAM), 0, 0, 1_000_000, 1 << 30)
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(&r.payload).unwrap())
            .collect()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn ndjson(prefix: &str, count: usize) -> String {
    (1..=count)
        .map(|i| format!("{{\"id\":\"{prefix}-{i}\"}}\n"))
        .collect()
}

fn no_shutdown() -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    std::mem::forget(sender);
    receiver
}

#[test]
fn candidates_are_json_files_without_hidden_parts() {
    for yes in ["a.json", "x/b.ndjson", "c.json.gz", "d.NDJSON.GZ"] {
        assert!(is_candidate(yes), "{yes}");
    }
    for no in [
        "a.txt",
        "a.gz",
        ".a.json",
        "x/.tmp/a.json",
        "a.json.tmp",
        "a.jsonl",
    ] {
        assert!(!is_candidate(no), "{no}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_is_ingested_once_and_survives_a_restart() {
    let f = fixture(IngestLimits::default());
    f.write("a.ndjson", ndjson("a", 25).as_bytes());
    f.write("sub/b.ndjson.gz", &gzip(ndjson("b", 7).as_bytes()));
    let trail = r#"{"Records":[{"eventName":"c-1"},{"eventName":"c-2"},{"eventName":"c-3"}]}"#;
    f.write("sub/deeper/trail.json.gz", &gzip(trail.as_bytes()));
    f.write("array.json", br#"[{"id":"d-1"}, 5, {"id":"d-2"}]"#);
    f.write(
        "bad-line.ndjson",
        b"{\"id\":\"e-1\"}\nnot json\n{\"id\":\"e-2\"}\n",
    );
    f.write("ignored.txt", b"{\"id\":\"nope\"}");
    f.write(".hidden.json", b"{\"id\":\"nope\"}");

    let mut source = f.source(4);
    source.poll_once(&no_shutdown()).await.unwrap();
    let stored = f.stored();
    assert_eq!(
        stored.values().sum::<usize>(),
        25 + 7 + 3 + 2 + 2,
        "{stored:?}"
    );
    assert!(stored.values().all(|count| *count == 1), "{stored:?}");
    assert!(stored.contains_key(r#"{"eventName":"c-2"}"#));
    assert!(!stored.keys().any(|k| k.contains("nope")));
    let letters = f.dead_letters();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters
            .iter()
            .any(|l| l.line == Some(2) && l.raw == "not json")
    );
    assert!(letters.iter().any(|l| l.line == Some(2) && l.raw == "5"));

    // Same source again, and a fresh one over the same state (a restart): nothing new.
    source.poll_once(&no_shutdown()).await.unwrap();
    drop(source);
    let mut restarted = f.source(4);
    restarted.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(f.stored(), stored);
    assert_eq!(f.dead_letters().len(), 2);

    // A new file after the restart is taken, alone.
    f.write("later.ndjson", ndjson("later", 3).as_bytes());
    restarted.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(f.stored().values().sum::<usize>(), 39 + 3);
    let state = FileState::open(&f.state_dir).unwrap();
    assert_eq!(state.finished_count(), 6);
    assert_eq!(state.finished("sub/b.ndjson.gz").unwrap().events, 7);
    assert_eq!(state.finished("bad-line.ndjson").unwrap().rejected, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_interrupted_halfway_is_completed_without_duplicates() {
    let f = fixture(IngestLimits::default());
    // 12 records, line 5 invalid.
    let mut text = ndjson("r", 4);
    text.push_str("{broken\n");
    text.push_str(&ndjson("s", 7));
    f.write("big.ndjson", text.as_bytes());
    let body = Bytes::from(text.clone());
    let (events, rejected) = split_events(&body, &f.limits).unwrap();
    let stream = StreamName::new("files").unwrap();

    // Before the "crash": lines 1-2 acknowledged; the batch 3..=9 was in flight and only
    // lines 3, 4 and 8 of it (part of the partitions) reached the log, the dead letter of
    // line 5 did not.
    let pick = |lines: &[usize]| -> Vec<_> {
        events
            .iter()
            .filter(|e| lines.contains(&e.line))
            .cloned()
            .collect()
    };
    f.ingestor
        .ingest_events(&stream, pick(&[1, 2]), Vec::new())
        .await
        .unwrap();
    let (log_ends, dlq_end) = log_positions(&*f.log, &stream, 3).unwrap();
    f.ingestor
        .ingest_events(&stream, pick(&[3, 4, 8]), Vec::new())
        .await
        .unwrap();
    let mut state = FileState::open(&f.state_dir).unwrap();
    let mut progress = Progress::start("big.ndjson", text.len() as u64);
    progress.acked_line = 2;
    progress.events = 2;
    progress.pending = Some(Pending {
        upto_line: 9,
        log_ends,
        dlq_end,
    });
    state.save_progress(progress).unwrap();
    drop(state);
    assert_eq!(rejected.len(), 1);

    let mut source = f.source(2);
    source.poll_once(&no_shutdown()).await.unwrap();
    let stored = f.stored();
    assert_eq!(stored.len(), 11, "{stored:?}");
    assert!(stored.values().all(|count| *count == 1), "{stored:?}");
    let letters = f.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].raw, "{broken");
    let state = FileState::open(&f.state_dir).unwrap();
    let finished = state.finished("big.ndjson").unwrap();
    assert_eq!((finished.events, finished.rejected), (11, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_append_that_fully_landed_is_not_repeated() {
    let f = fixture(IngestLimits::default());
    let text = ndjson("t", 6);
    f.write("t.ndjson", text.as_bytes());
    let (events, _) = split_events(&Bytes::from(text.clone()), &f.limits).unwrap();
    let stream = StreamName::new("files").unwrap();
    f.ingestor.registry().get_or_create(&stream).unwrap();
    let (log_ends, dlq_end) = log_positions(&*f.log, &stream, 3).unwrap();
    f.ingestor
        .ingest_events(&stream, events, Vec::new())
        .await
        .unwrap();
    let mut state = FileState::open(&f.state_dir).unwrap();
    let mut progress = Progress::start("t.ndjson", text.len() as u64);
    progress.pending = Some(Pending {
        upto_line: 6,
        log_ends,
        dlq_end,
    });
    state.save_progress(progress).unwrap();
    drop(state);

    f.source(100).poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(f.stored().values().sum::<usize>(), 6);
    assert_eq!(
        FileState::open(&f.state_dir)
            .unwrap()
            .finished("t.ndjson")
            .unwrap()
            .events,
        6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_files_fail_once_with_their_reason() {
    let f = fixture(IngestLimits {
        max_decompressed_bytes: 64 << 10,
        ..IngestLimits::default()
    });
    f.write("bad.json.gz", b"this is not gzip");
    f.write("broken-array.json", b"[{\"a\":1}, {\"b\":");
    f.write("bomb.ndjson.gz", &gzip(&vec![b' '; 1 << 20]));
    f.write("too-big.ndjson", ndjson("x", 5_000).as_bytes());
    f.write("good.ndjson", ndjson("g", 2).as_bytes());

    let mut source = f.source(100);
    source.poll_once(&no_shutdown()).await.unwrap();
    source.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(f.stored().values().sum::<usize>(), 2);
    let letters = f.dead_letters();
    assert_eq!(letters.len(), 4, "{letters:?}");
    assert!(letters.iter().all(|l| l.stage == "source:test"));
    let state = FileState::open(&f.state_dir).unwrap();
    let reason = |key: &str| {
        let entry = state.finished(key).unwrap();
        assert_eq!(entry.outcome, FileOutcome::Failed);
        entry.reason.clone().unwrap()
    };
    assert!(reason("bad.json.gz").contains("gzip"));
    assert!(reason("broken-array.json").contains("invalid JSON"));
    assert!(reason("bomb.ndjson.gz").contains("exceeds"));
    assert!(reason("too-big.ndjson").contains("exceeds the limit"));
    assert_eq!(
        state.finished("good.ndjson").unwrap().outcome,
        FileOutcome::Done
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsettled_files_wait_for_a_later_poll() {
    let f = fixture(IngestLimits::default());
    f.write("fresh.ndjson", ndjson("f", 2).as_bytes());
    let mut source = f.source(10);
    source.poll.settle_ms = 60_000;
    source.poll_once(&no_shutdown()).await.unwrap();
    assert!(f.stored().is_empty());
    source.poll.settle_ms = 0;
    source.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(f.stored().len(), 2);
}
