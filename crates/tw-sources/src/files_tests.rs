//! Tests of the file watcher over a real disk log: exact accounting, restarts, interrupted
//! appends, undecodable files, files and directories that cannot be read.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use tokio::sync::watch;
use tw_core::StreamName;
use tw_log::testing::FaultyLog;
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
    /// The log under `log`, whose disk can fill up after a number of appends, and which can
    /// raise a shutdown signal at an append (the source then stops before its next batch).
    test_log: Arc<FaultyLog>,
    log: Arc<dyn Log>,
    ingestor: Arc<Ingestor>,
    limits: IngestLimits,
}

fn fixture(limits: IngestLimits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    let disk = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let test_log = Arc::new(FaultyLog::new(disk));
    let log: Arc<dyn Log> = test_log.clone();
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
        test_log,
        log,
        ingestor,
        limits,
    }
}

impl Fixture {
    /// The disk is full after `appends` more appends (until `test_log.heal()`).
    fn fill_disk_after(&self, appends: usize) {
        let seen = AtomicUsize::new(0);
        self.test_log
            .fail_appends_when(move |_, _| seen.fetch_add(1, Ordering::SeqCst) + 1 > appends);
    }

    /// A shutdown signal raised at the `appends`-th append from now.
    fn stop_after(&self, appends: usize) -> watch::Receiver<bool> {
        let (sender, receiver) = watch::channel(false);
        let seen = AtomicUsize::new(0);
        self.test_log.fail_appends_when(move |_, _| {
            if seen.fetch_add(1, Ordering::SeqCst) + 1 >= appends {
                let _ = sender.send(true);
            }
            false
        });
        receiver
    }

    fn source(&self, batch_records: usize) -> FileSource {
        let store = Arc::new(LocalFileSystem::new_with_prefix(&self.watched).unwrap());
        FileSource::new(
            FileSourceParts {
                name: "test".into(),
                stream: StreamName::new("files").unwrap(),
                location: self.watched.display().to_string(),
                store: store.clone(),
                lister: Lister::Directory(store),
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

    /// Replaces `name` by a file that cannot be opened, also by root (for whom permissions
    /// would not stop a read): a link to a write-only sysctl, where the kernel checks the
    /// mode for root too. The file's own content is kept aside, for `make_readable`.
    fn make_unreadable(&self, name: &str) {
        const WRITE_ONLY: &str = "/proc/sys/vm/drop_caches";
        assert!(
            std::fs::metadata(WRITE_ONLY).is_ok_and(|m| m.is_file())
                && std::fs::File::open(WRITE_ONLY).is_err(),
            "this test needs Linux's {WRITE_ONLY}, a regular file no one may read"
        );
        let path = self.watched.join(name);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(WRITE_ONLY, path).unwrap();
    }

    /// Replaces the link of `make_unreadable` by a file holding `bytes`.
    fn make_readable(&self, name: &str, bytes: &[u8]) {
        std::fs::remove_file(self.watched.join(name)).unwrap();
        self.write(name, bytes);
    }

    fn symlink(&self, name: &str, target: &str) {
        std::os::unix::fs::symlink(target, self.watched.join(name)).unwrap();
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

/// Each record of `files` (prefix, record count, as written by `ndjson`) once.
fn each_once(files: &[(&str, usize)]) -> BTreeMap<String, usize> {
    files
        .iter()
        .flat_map(|(prefix, count)| {
            (1..=*count).map(move |i| (format!("{{\"id\":\"{prefix}-{i}\"}}"), 1))
        })
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

/// Issue 4 regression: the progress of an unfinished file sat in one slot, and a file whose
/// key sorts earlier, taken first at the next poll, overwrote it: the unfinished file was then
/// read again from its first record and every batch already stored was stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_stopped_by_a_full_disk_is_resumed_before_an_earlier_new_file() {
    let f = fixture(IngestLimits::default());
    f.write("m.ndjson", ndjson("m", 20).as_bytes());
    let mut source = f.source(4);
    f.fill_disk_after(4);
    let error = source.poll_once(&no_shutdown()).await.unwrap_err();
    assert!(
        matches!(&error, SourceError::Ingest(e) if e.is_retryable()),
        "{error}"
    );
    let progress = FileState::open(&f.state_dir)
        .unwrap()
        .progress("m.ndjson")
        .cloned()
        .unwrap();
    assert!(
        progress.acked_line > 0 && progress.pending.is_some(),
        "{progress:?}"
    );

    // Space is freed; a file whose key sorts first arrives before the next poll.
    f.test_log.heal();
    f.write("a.ndjson", ndjson("a", 3).as_bytes());
    source.poll_once(&no_shutdown()).await.unwrap();

    assert_eq!(f.stored(), each_once(&[("m", 20), ("a", 3)]));
    let state = FileState::open(&f.state_dir).unwrap();
    assert_eq!(state.finished("m.ndjson").unwrap().events, 20);
    assert_eq!(state.finished("a.ndjson").unwrap().events, 3);
    assert_eq!(state.started().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_stopped_by_a_shutdown_is_resumed_first_after_a_restart() {
    let f = fixture(IngestLimits::default());
    f.write("m.ndjson", ndjson("m", 20).as_bytes());
    let stop = f.stop_after(4);
    f.source(4).poll_once(&stop).await.unwrap();
    let progress = FileState::open(&f.state_dir)
        .unwrap()
        .progress("m.ndjson")
        .cloned()
        .unwrap();
    assert!(
        (1..20).contains(&progress.acked_line) && progress.pending.is_none(),
        "{progress:?}"
    );

    // Restart, with new files on both sides of the unfinished one.
    f.write("a.ndjson", ndjson("a", 3).as_bytes());
    f.write("z.ndjson", ndjson("z", 2).as_bytes());
    f.source(4).poll_once(&no_shutdown()).await.unwrap();

    assert_eq!(f.stored(), each_once(&[("m", 20), ("a", 3), ("z", 2)]));
    let state = FileState::open(&f.state_dir).unwrap();
    assert_eq!(state.finished("m.ndjson").unwrap().events, 20);
    assert_eq!(state.finished_count(), 3);
}

/// Issue 4 regression: one object the store refused to read ended the poll, so every file
/// after it waited forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_file_is_reported_and_retried_while_the_others_are_taken() {
    let f = fixture(IngestLimits::default());
    f.write("a.ndjson", ndjson("a", 3).as_bytes());
    f.make_unreadable("b.ndjson");
    f.write("c.ndjson", ndjson("c", 2).as_bytes());

    let mut source = f.source(10);
    source.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(f.stored(), each_once(&[("a", 3), ("c", 2)]));
    let unreadable: Vec<&String> = source.unreadable().keys().collect();
    assert_eq!(unreadable, ["b.ndjson"]);
    assert!(
        source.unreadable()["b.ndjson"].contains("b.ndjson"),
        "{:?}",
        source.unreadable()
    );
    assert!(
        !FileState::open(&f.state_dir)
            .unwrap()
            .is_finished("b.ndjson")
    );

    // Still unreadable at the next poll: still reported, nothing else happens.
    source.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(source.unreadable().len(), 1);
    assert_eq!(f.stored(), each_once(&[("a", 3), ("c", 2)]));

    // Readable again: taken at the next poll.
    f.make_readable("b.ndjson", ndjson("b", 4).as_bytes());
    source.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(f.stored(), each_once(&[("a", 3), ("b", 4), ("c", 2)]));
    assert!(source.unreadable().is_empty());
}

/// Issue 4 regression: an error while listing (here a symlink loop, which walkdir refuses
/// like a directory it may not open) ended the listing and the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_cannot_be_listed_does_not_hide_the_others() {
    let f = fixture(IngestLimits::default());
    f.write("a.ndjson", ndjson("a", 2).as_bytes());
    f.write("bad/x.ndjson", ndjson("x", 2).as_bytes());
    f.symlink("bad/loop", ".");
    f.write("ok/y.ndjson", ndjson("y", 2).as_bytes());
    // A link back to the root: followed once would list every file again under ok/up/.
    f.symlink("ok/up", "..");
    // Hidden: not even listed, so its loop is no problem.
    f.write(".spool/h.ndjson", ndjson("h", 2).as_bytes());
    f.symlink(".spool/loop", ".");
    f.write("z.ndjson", ndjson("z", 2).as_bytes());

    let mut source = f.source(10);
    source.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(f.stored(), each_once(&[("a", 2), ("y", 2), ("z", 2)]));
    let unreadable: Vec<&String> = source.unreadable().keys().collect();
    assert_eq!(unreadable, ["bad/"]);
    assert!(
        source.unreadable()["bad/"].contains("loop"),
        "{:?}",
        source.unreadable()
    );

    std::fs::remove_file(f.watched.join("bad/loop")).unwrap();
    source.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(
        f.stored(),
        each_once(&[("a", 2), ("x", 2), ("y", 2), ("z", 2)])
    );
    assert!(source.unreadable().is_empty());
}

/// A file whose append was interrupted is completed before anything else is appended (the
/// check of what that append stored reads the log past its positions): if it cannot be read,
/// new files wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_file_with_an_interrupted_append_holds_back_new_files() {
    let f = fixture(IngestLimits::default());
    let text = ndjson("m", 20);
    f.write("m.ndjson", text.as_bytes());
    let mut source = f.source(4);
    f.fill_disk_after(4);
    source.poll_once(&no_shutdown()).await.unwrap_err();
    f.test_log.heal();
    let before = f.stored();

    f.make_unreadable("m.ndjson");
    f.write("a.ndjson", ndjson("a", 3).as_bytes());
    source.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(
        f.stored(),
        before,
        "nothing appended while m cannot be read"
    );
    assert!(
        source.unreadable()["m.ndjson"].contains("no other file is taken"),
        "{:?}",
        source.unreadable()
    );

    f.make_readable("m.ndjson", text.as_bytes());
    source.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(f.stored(), each_once(&[("m", 20), ("a", 3)]));
    assert!(source.unreadable().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_started_file_without_an_append_in_flight_lets_new_files_pass() {
    let f = fixture(IngestLimits::default());
    let text = ndjson("m", 20);
    f.write("m.ndjson", text.as_bytes());
    let stop = f.stop_after(4);
    f.source(4).poll_once(&stop).await.unwrap();

    f.make_unreadable("m.ndjson");
    f.write("a.ndjson", ndjson("a", 3).as_bytes());
    let mut source = f.source(4);
    source.poll_once(&no_shutdown()).await.unwrap();
    assert!(f.stored().contains_key(r#"{"id":"a-3"}"#));
    assert!(!source.unreadable()["m.ndjson"].contains("no other file"));

    f.make_readable("m.ndjson", text.as_bytes());
    source.poll_once(&no_shutdown()).await.unwrap();
    assert_eq!(f.stored(), each_once(&[("m", 20), ("a", 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_file_that_was_removed_is_recorded_as_failed() {
    let f = fixture(IngestLimits::default());
    f.write("m.ndjson", ndjson("m", 20).as_bytes());
    let mut source = f.source(4);
    f.fill_disk_after(4);
    source.poll_once(&no_shutdown()).await.unwrap_err();
    f.test_log.heal();
    let before = f.stored();
    assert!(!before.is_empty());

    std::fs::remove_file(f.watched.join("m.ndjson")).unwrap();
    f.write("a.ndjson", ndjson("a", 3).as_bytes());
    source.poll_once(&no_shutdown()).await.unwrap();

    let mut expected = before;
    expected.extend(each_once(&[("a", 3)]));
    assert_eq!(f.stored(), expected);
    let state = FileState::open(&f.state_dir).unwrap();
    let entry = state.finished("m.ndjson").unwrap();
    assert_eq!(entry.outcome, FileOutcome::Failed);
    assert!(
        entry.reason.as_ref().unwrap().contains("removed after"),
        "{entry:?}"
    );
    assert_eq!(state.started().count(), 0);
    assert!(source.unreadable().is_empty());
    let letters = f.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].stage, "source:test");
}

/// The check of an interrupted append matches records by their bytes past the log positions
/// taken before it: another file resumed first could append the same bytes there and have
/// them taken for the interrupted append's own (here two files with the same content).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_append_is_completed_before_another_started_file_is_resumed() {
    let f = fixture(IngestLimits::default());
    let text = ndjson("x", 20);
    // b: started, stopped after its first batch (no append in flight).
    f.write("b.ndjson", text.as_bytes());
    let stop = f.stop_after(1);
    f.source(4).poll_once(&stop).await.unwrap();
    // m: same content, started while b could not be read, interrupted by a full disk in the
    // middle of an append of records that b has not taken yet.
    f.make_unreadable("b.ndjson");
    f.write("m.ndjson", text.as_bytes());
    let mut source = f.source(4);
    f.fill_disk_after(4);
    source.poll_once(&no_shutdown()).await.unwrap_err();
    let state = FileState::open(&f.state_dir).unwrap();
    let (b, m) = (
        state.progress("b.ndjson").unwrap().clone(),
        state.progress("m.ndjson").unwrap().clone(),
    );
    drop(state);
    assert!(b.pending.is_none() && m.pending.is_some(), "{b:?} {m:?}");
    assert!(
        b.acked_line < m.pending.as_ref().unwrap().upto_line,
        "b would append records of m's interrupted batch: {b:?} {m:?}"
    );

    f.make_readable("b.ndjson", text.as_bytes());
    f.test_log.heal();
    source.poll_once(&no_shutdown()).await.unwrap();

    let expected: BTreeMap<String, usize> = each_once(&[("x", 20)])
        .into_keys()
        .map(|k| (k, 2))
        .collect();
    assert_eq!(f.stored(), expected);
}

/// A directory listing also shows sockets and FIFOs (opening a FIFO waits for a writer):
/// they are not files to take, nor problems to report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_and_fifos_are_not_read() {
    let f = fixture(IngestLimits::default());
    f.write("a.ndjson", ndjson("a", 2).as_bytes());
    let _socket = std::os::unix::net::UnixListener::bind(f.watched.join("socket.ndjson")).unwrap();
    let fifo = f.watched.join("fifo.json");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());

    let mut source = f.source(10);
    let polled = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        source.poll_once(&no_shutdown()),
    )
    .await;
    if polled.is_err() {
        // Release the read stuck on the FIFO, so that the test fails instead of hanging.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        panic!("a poll must not wait on a FIFO");
    }
    polled.unwrap().unwrap();
    assert_eq!(f.stored(), each_once(&[("a", 2)]));
    assert!(source.unreadable().is_empty(), "{:?}", source.unreadable());
}
