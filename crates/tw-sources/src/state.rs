//! The durable memory of a file source: which files are finished, and how far the one in
//! progress got.
//!
//! Two files in the source's state directory:
//! - `files.ndjson`, an append-only journal with one line per finished file (ingested or
//!   failed), fsynced per line. Appending keeps the cost per file constant however many files
//!   a bucket holds; a torn last line (crash mid-write) is cut on open.
//! - `current.json`, the file in progress: the last line acknowledged by a durable append and,
//!   while an append is in flight, the log positions taken just before it ([`Pending`]), so a
//!   restart can tell which of the in-flight events were stored. Replaced atomically.
//!
//! A file listed in the journal is never read again, even if `current.json` still names it
//! (crash between the journal line and the reset of `current.json`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::SourceError;

/// Version written in every persisted record.
const STATE_VERSION: u32 = 1;
const JOURNAL: &str = "files.ndjson";
const CURRENT: &str = "current.json";

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

/// The file in progress.
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
    current: Option<Progress>,
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
        let current_path = dir.join(CURRENT);
        let current = match std::fs::read(&current_path) {
            Ok(bytes) => {
                let progress: Option<Progress> =
                    serde_json::from_slice(&bytes).map_err(|e| SourceError::StateCorrupt {
                        path: current_path.clone(),
                        line: 1,
                        message: e.to_string(),
                    })?;
                progress.filter(|p| !finished.contains_key(&p.key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(SourceError::state(&current_path, e)),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            finished,
            journal,
            current,
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

    /// The progress recorded for `key`, if it is the file in progress.
    pub fn progress(&self, key: &str) -> Option<&Progress> {
        self.current.as_ref().filter(|p| p.key == key)
    }

    /// Durably records the progress of the file in progress.
    pub fn save_progress(&mut self, progress: Progress) -> Result<(), SourceError> {
        self.write_current(Some(&progress))?;
        self.current = Some(progress);
        Ok(())
    }

    /// Durably records a finished file (journal first, then the reset of the progress).
    pub fn finish(&mut self, entry: FinishedFile) -> Result<(), SourceError> {
        let path = self.dir.join(JOURNAL);
        let mut line = serde_json::to_vec(&entry).map_err(|e| SourceError::state(&path, e))?;
        line.push(b'\n');
        self.journal
            .write_all(&line)
            .and_then(|()| self.journal.sync_data())
            .map_err(|e| SourceError::state(&path, e))?;
        let was_current = self.current.as_ref().is_some_and(|p| p.key == entry.key);
        self.finished.insert(entry.key.clone(), entry);
        if was_current {
            self.write_current(None)?;
            self.current = None;
        }
        Ok(())
    }

    fn write_current(&self, progress: Option<&Progress>) -> Result<(), SourceError> {
        let path = self.dir.join(CURRENT);
        let bytes = serde_json::to_vec(&progress).map_err(|e| SourceError::state(&path, e))?;
        tw_log::write_file_atomically(&path, &bytes).map_err(|e| SourceError::state(&path, e))
    }
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
        // Crash between the journal line and the reset of current.json: simulate by writing
        // the journal line directly.
        let line =
            serde_json::to_string(&finished_entry(&progress, FileOutcome::Done, None)).unwrap();
        std::fs::write(dir.path().join(JOURNAL), format!("{line}\n")).unwrap();
        drop(state);
        let state = FileState::open(dir.path()).unwrap();
        assert!(state.is_finished("x"));
        assert_eq!(state.progress("x"), None);
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
