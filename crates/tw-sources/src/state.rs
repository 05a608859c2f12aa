//! The durable memory of a file source: which files are finished, and how far each file
//! started and not yet finished got.
//!
//! Two files in the source's state directory:
//! - `files.ndjson`, an append-only journal with one line per finished file (ingested or
//!   failed), fsynced per line. Appending keeps the cost per file constant however many files
//!   a bucket holds; a torn last line (crash mid-write) is cut on open.
//! - `progress.json`, one [`Progress`] per file started and not finished, keyed by file: the
//!   last line acknowledged by a durable append and, while an append is in flight, the log
//!   positions taken just before it ([`Pending`]), so a restart can tell which of the in-flight
//!   events were stored. Usually one file at most; more while a started file cannot be read.
//!   Replaced atomically. A file's progress is only ever replaced by a later progress of the
//!   same file, or removed when that file is journaled: starting another file never drops it.
//!
//! A file listed in the journal is never read again, even if `progress.json` still names it
//! (crash between the journal line and the rewrite of `progress.json`).
//!
//! Format history: version 1 kept a single progress in `current.json` (the file in progress,
//! or `null`). [`FileState::open`] migrates it explicitly: it writes `progress.json` holding
//! that progress, then removes `current.json`; when both exist (crash in between),
//! `progress.json` is the migrated one and wins.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::SourceError;

/// Version written in every journal line and progress record.
const STATE_VERSION: u32 = 1;
/// Version of `progress.json` (version 1 was the single progress of `current.json`).
const PROGRESS_FILE_VERSION: u32 = 2;
const JOURNAL: &str = "files.ndjson";
const PROGRESS: &str = "progress.json";
/// The progress file of version 1, migrated on open.
const LEGACY_CURRENT: &str = "current.json";

/// How a file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOutcome {
    /// Every record was stored or dead-lettered.
    Done,
    /// The file could not be decoded at all (bad gzip, too large, not JSON); never retried.
    Failed,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedFile {
    /// Format version.
    pub v: u32,
    /// The object's path in the store (relative to the directory or bucket).
    pub key: String,
    /// How it ended.
    pub outcome: FileOutcome,
    /// Size in bytes when it was read.
    pub size: u64,
    /// Events stored.
    pub events: u64,
    /// Records refused (in the dead-letter queue).
    pub rejected: u64,
    /// Why a failed file failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it finished, Unix milliseconds.
    pub finished_at_ms: i64,
}

/// How far a started file got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Format version.
    pub v: u32,
    /// The object's path in the store.
    pub key: String,
    /// Size in bytes when it was first read.
    pub size: u64,
    /// Every record (line or array element) up to and including this 1-based number is stored
    /// or dead-lettered.
    pub acked_line: usize,
    /// Events stored so far.
    pub events: u64,
    /// Records refused so far.
    pub rejected: u64,
    /// An append in flight, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

/// The log positions just before an append of records `acked_line + 1 ..= upto_line`: after a
/// crash, what lies past them in the log is compared with those records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Last record number of the batch.
    pub upto_line: usize,
    /// End offset of each partition of the stream.
    pub log_ends: Vec<u64>,
    /// End offset of the dead-letter queue.
    pub dlq_end: u64,
}

/// The content of `progress.json`.
#[derive(Debug, Serialize, Deserialize)]
struct ProgressFile {
    v: u32,
    /// Sorted by key.
    files: Vec<Progress>,
}

impl Progress {
    /// Progress at the start of a file.
    pub fn start(key: &str, size: u64) -> Self {
        Self {
            v: STATE_VERSION,
            key: key.to_string(),
            size,
            acked_line: 0,
            events: 0,
            rejected: 0,
            pending: None,
        }
    }
}

/// The state of one file source (blocking file I/O: call from a blocking context).
pub struct FileState {
    dir: PathBuf,
    finished: HashMap<String, FinishedFile>,
    journal: File,
    /// Started files not finished, by key.
    started: BTreeMap<String, Progress>,
}

impl FileState {
    /// Opens (creating) the state in `dir`, cutting a torn journal tail.
    pub fn open(dir: &Path) -> Result<Self, SourceError> {
        std::fs::create_dir_all(dir).map_err(|e| SourceError::state(dir, e))?;
        let journal_path = dir.join(JOURNAL);
        let mut journal = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&journal_path)
            .map_err(|e| SourceError::state(&journal_path, e))?;
        let mut text = Vec::new();
        journal
            .read_to_end(&mut text)
            .map_err(|e| SourceError::state(&journal_path, e))?;
        let mut finished = HashMap::new();
        // Only newline-terminated lines were completely written; the rest is a torn append.
        let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        for (index, line) in text[..complete].split(|b| *b == b'\n').enumerate() {
            if line.trim_ascii().is_empty() {
                continue;
            }
            let entry: FinishedFile =
                serde_json::from_slice(line).map_err(|e| SourceError::StateCorrupt {
                    path: journal_path.clone(),
                    line: index + 1,
                    message: e.to_string(),
                })?;
            finished.insert(entry.key.clone(), entry);
        }
        if complete < text.len() {
            tracing::warn!(path = %journal_path.display(), "cutting a torn line off the source journal");
            journal
                .set_len(complete as u64)
                .and_then(|()| journal.seek(SeekFrom::End(0)).map(|_| ()))
                .and_then(|()| journal.sync_all())
                .map_err(|e| SourceError::state(&journal_path, e))?;
        }
        let mut started = read_progress(dir)?;
        started.retain(|key, _| !finished.contains_key(key));
        Ok(Self {
            dir: dir.to_path_buf(),
            finished,
            journal,
            started,
        })
    }

    /// Whether `key` is finished (ingested or failed).
    pub fn is_finished(&self, key: &str) -> bool {
        self.finished.contains_key(key)
    }

    /// The journal entry of a finished file.
    pub fn finished(&self, key: &str) -> Option<&FinishedFile> {
        self.finished.get(key)
    }

    /// How many files are finished.
    pub fn finished_count(&self) -> usize {
        self.finished.len()
    }

    /// The progress recorded for `key`, if it was started and is not finished.
    pub fn progress(&self, key: &str) -> Option<&Progress> {
        self.started.get(key)
    }

    /// Every file started and not finished, by key.
    pub fn started(&self) -> impl Iterator<Item = &Progress> {
        self.started.values()
    }

    /// Durably records the progress of one file (the other started files keep theirs).
    pub fn save_progress(&mut self, progress: Progress) -> Result<(), SourceError> {
        let key = progress.key.clone();
        let previous = self.started.insert(key.clone(), progress);
        if let Err(error) = self.write_progress() {
            // Memory stays what the disk holds.
            match previous {
                Some(previous) => self.started.insert(key, previous),
                None => self.started.remove(&key),
            };
            return Err(error);
        }
        Ok(())
    }

    /// Durably records a finished file (journal first, then the removal of its progress).
    pub fn finish(&mut self, entry: FinishedFile) -> Result<(), SourceError> {
        let path = self.dir.join(JOURNAL);
        let mut line = serde_json::to_vec(&entry).map_err(|e| SourceError::state(&path, e))?;
        line.push(b'\n');
        self.journal
            .write_all(&line)
            .and_then(|()| self.journal.sync_data())
            .map_err(|e| SourceError::state(&path, e))?;
        let was_started = self.started.remove(&entry.key).is_some();
        self.finished.insert(entry.key.clone(), entry);
        if was_started {
            // Failing here leaves a stale progress on disk, which the journal overrides.
            self.write_progress()?;
        }
        Ok(())
    }

    fn write_progress(&self) -> Result<(), SourceError> {
        write_progress_file(&self.dir, self.started.values().cloned().collect())
    }
}

fn write_progress_file(dir: &Path, files: Vec<Progress>) -> Result<(), SourceError> {
    let path = dir.join(PROGRESS);
    let content = ProgressFile {
        v: PROGRESS_FILE_VERSION,
        files,
    };
    let bytes = serde_json::to_vec(&content).map_err(|e| SourceError::state(&path, e))?;
    tw_log::write_file_atomically(&path, &bytes).map_err(|e| SourceError::state(&path, e))
}

/// Reads `progress.json`, migrating a version 1 `current.json` first if there is one.
fn read_progress(dir: &Path) -> Result<BTreeMap<String, Progress>, SourceError> {
    let path = dir.join(PROGRESS);
    let legacy_path = dir.join(LEGACY_CURRENT);
    let corrupt = |path: &Path, message: String| SourceError::StateCorrupt {
        path: path.to_path_buf(),
        line: 1,
        message,
    };
    let files = match std::fs::read(&path) {
        Ok(bytes) => {
            let content: ProgressFile =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e.to_string()))?;
            if content.v != PROGRESS_FILE_VERSION {
                return Err(corrupt(
                    &path,
                    format!(
                        "unsupported version {} (expected {PROGRESS_FILE_VERSION})",
                        content.v
                    ),
                ));
            }
            content.files
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::read(&legacy_path) {
            Ok(bytes) => {
                let current: Option<Progress> = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(&legacy_path, e.to_string()))?;
                let files: Vec<Progress> = current.into_iter().collect();
                tracing::info!(path = %legacy_path.display(), "migrating the progress of a file source to progress.json");
                write_progress_file(dir, files.clone())?;
                files
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(SourceError::state(&legacy_path, e)),
        },
        Err(e) => return Err(SourceError::state(&path, e)),
    };
    // Migrated (now or before a crash that left both files): progress.json holds it.
    match std::fs::remove_file(&legacy_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SourceError::state(&legacy_path, e)),
    }
    Ok(files.into_iter().map(|p| (p.key.clone(), p)).collect())
}

/// A journal entry for `progress` ending with `outcome`.
pub fn finished_entry(
    progress: &Progress,
    outcome: FileOutcome,
    reason: Option<String>,
) -> FinishedFile {
    FinishedFile {
        v: STATE_VERSION,
        key: progress.key.clone(),
        outcome,
        size: progress.size,
        events: progress.events,
        rejected: progress.rejected,
        reason,
        finished_at_ms: tw_core::now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_files_and_progress_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = FileState::open(dir.path()).unwrap();
        let mut a = Progress::start("a.json", 10);
        a.events = 3;
        state
            .finish(finished_entry(&a, FileOutcome::Done, None))
            .unwrap();
        let mut b = Progress::start("sub/b.ndjson.gz", 99);
        b.acked_line = 7;
        b.pending = Some(Pending {
            upto_line: 12,
            log_ends: vec![1, 2],
            dlq_end: 5,
        });
        state.save_progress(b.clone()).unwrap();
        drop(state);

        let state = FileState::open(dir.path()).unwrap();
        assert!(state.is_finished("a.json"));
        assert_eq!(state.finished("a.json").unwrap().events, 3);
        assert!(!state.is_finished("sub/b.ndjson.gz"));
        assert_eq!(state.progress("sub/b.ndjson.gz"), Some(&b));
        assert_eq!(state.progress("a.json"), None);
    }

    #[test]
    fn a_torn_journal_line_is_cut_and_later_appends_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = FileState::open(dir.path()).unwrap();
        state
            .finish(finished_entry(
                &Progress::start("one", 1),
                FileOutcome::Done,
                None,
            ))
            .unwrap();
        drop(state);
        let mut journal = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        journal.write_all(br#"{"v":1,"key":"tw"#).unwrap();
        drop(journal);

        let mut state = FileState::open(dir.path()).unwrap();
        assert!(state.is_finished("one"));
        assert_eq!(state.finished_count(), 1);
        state
            .finish(finished_entry(
                &Progress::start("two", 2),
                FileOutcome::Failed,
                Some("invalid gzip".into()),
            ))
            .unwrap();
        drop(state);
        let state = FileState::open(dir.path()).unwrap();
        assert_eq!(state.finished_count(), 2);
        assert_eq!(state.finished("two").unwrap().outcome, FileOutcome::Failed);
    }

    #[test]
    fn a_finished_file_wins_over_stale_progress() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = FileState::open(dir.path()).unwrap();
        let progress = Progress::start("x", 1);
        state.save_progress(progress.clone()).unwrap();
        // Crash between the journal line and the rewrite of progress.json: simulate by writing
        // the journal line directly.
        let line =
            serde_json::to_string(&finished_entry(&progress, FileOutcome::Done, None)).unwrap();
        std::fs::write(dir.path().join(JOURNAL), format!("{line}\n")).unwrap();
        drop(state);
        let state = FileState::open(dir.path()).unwrap();
        assert!(state.is_finished("x"));
        assert_eq!(state.progress("x"), None);
    }

    /// The first version kept one slot: starting another file overwrote the progress of an
    /// unfinished one, which was then read again from its first record.
    #[test]
    fn starting_another_file_keeps_the_progress_of_an_unfinished_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = FileState::open(dir.path()).unwrap();
        let mut m = Progress::start("m.ndjson", 100);
        m.acked_line = 8;
        m.events = 8;
        m.pending = Some(Pending {
            upto_line: 12,
            log_ends: vec![3, 3, 2],
            dlq_end: 0,
        });
        state.save_progress(m.clone()).unwrap();
        let mut a = Progress::start("a.ndjson", 10);
        a.acked_line = 2;
        state.save_progress(a.clone()).unwrap();
        assert_eq!(state.progress("m.ndjson"), Some(&m));
        a.acked_line = 3;
        state
            .finish(finished_entry(&a, FileOutcome::Done, None))
            .unwrap();
        drop(state);

        let state = FileState::open(dir.path()).unwrap();
        assert_eq!(state.progress("m.ndjson"), Some(&m));
        assert_eq!(state.progress("a.ndjson"), None);
        assert!(state.is_finished("a.ndjson"));
        let started: Vec<&str> = state.started().map(|p| p.key.as_str()).collect();
        assert_eq!(started, ["m.ndjson"]);
    }

    #[test]
    fn a_version_1_current_json_is_migrated_to_progress_json() {
        let dir = tempfile::tempdir().unwrap();
        // What version 1 wrote, byte for byte.
        std::fs::write(
            dir.path().join(LEGACY_CURRENT),
            r#"{"v":1,"key":"sub/b.ndjson.gz","size":99,"acked_line":7,"events":6,"rejected":1,"pending":{"upto_line":12,"log_ends":[1,2],"dlq_end":5}}"#,
        )
        .unwrap();
        let expected = Progress {
            v: 1,
            key: "sub/b.ndjson.gz".into(),
            size: 99,
            acked_line: 7,
            events: 6,
            rejected: 1,
            pending: Some(Pending {
                upto_line: 12,
                log_ends: vec![1, 2],
                dlq_end: 5,
            }),
        };
        let state = FileState::open(dir.path()).unwrap();
        assert_eq!(state.progress("sub/b.ndjson.gz"), Some(&expected));
        drop(state);
        assert!(!dir.path().join(LEGACY_CURRENT).exists());
        let state = FileState::open(dir.path()).unwrap();
        assert_eq!(state.progress("sub/b.ndjson.gz"), Some(&expected));

        // `null`: no file was in progress.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEGACY_CURRENT), "null").unwrap();
        let state = FileState::open(dir.path()).unwrap();
        assert_eq!(state.started().count(), 0);
        assert!(!dir.path().join(LEGACY_CURRENT).exists());
        assert!(dir.path().join(PROGRESS).exists());
    }

    #[test]
    fn after_a_crash_in_the_middle_of_the_migration_progress_json_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = FileState::open(dir.path()).unwrap();
        let mut migrated = Progress::start("m.ndjson", 50);
        migrated.acked_line = 4;
        state.save_progress(migrated.clone()).unwrap();
        drop(state);
        // The version 1 file the migration had not removed yet.
        let legacy = Progress::start("m.ndjson", 50);
        std::fs::write(
            dir.path().join(LEGACY_CURRENT),
            serde_json::to_vec(&Some(&legacy)).unwrap(),
        )
        .unwrap();
        let state = FileState::open(dir.path()).unwrap();
        assert_eq!(state.progress("m.ndjson"), Some(&migrated));
        assert!(!dir.path().join(LEGACY_CURRENT).exists());
    }

    #[test]
    fn a_progress_file_of_an_unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PROGRESS), r#"{"v":3,"files":[]}"#).unwrap();
        let error = FileState::open(dir.path()).err().unwrap();
        assert!(
            matches!(error, SourceError::StateCorrupt { .. })
                && error.to_string().contains("version 3"),
            "{error}"
        );
    }

    #[test]
    fn a_corrupted_journal_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(JOURNAL), "garbage\n").unwrap();
        let error = FileState::open(dir.path()).err().unwrap();
        assert!(
            matches!(error, SourceError::StateCorrupt { line: 1, .. }),
            "{error}"
        );
    }
}
