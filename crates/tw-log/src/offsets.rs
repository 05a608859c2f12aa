//! [`OffsetStore`]: the committed offsets of every consumer, one JSON file per consumer.
//!
//! File `{dir}/{consumer}.json` (the name escaped so any consumer name maps to one safe file):
//! ```json
//! {"version":1,"consumer":"lake","offsets":[{"stream":"web","partition":0,"offset":42}]}
//! ```
//! Commits replace the file atomically (temporary file, fsync, rename, fsync of the directory).
//! A file that cannot be parsed is an error naming it: resetting a consumer to offset 0 would
//! silently replay (or, for the lake, duplicate) a whole stream.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tw_core::{Offset, StreamName};

use crate::LogError;
use crate::fsutil::write_atomic;

/// Version of the offsets file format.
const OFFSETS_VERSION: u32 = 1;

/// Durable per-consumer, per-partition offsets (the next offset each consumer will read).
#[derive(Debug)]
pub struct OffsetStore {
    dir: PathBuf,
    /// Serialises commits: two commits of one consumer must not share the temporary file.
    commit: Mutex<()>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OffsetsFile {
    version: u32,
    consumer: String,
    offsets: Vec<OffsetEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OffsetEntry {
    stream: StreamName,
    partition: u32,
    offset: Offset,
}

impl OffsetStore {
    /// Opens (creating if needed) the offsets directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<OffsetStore, LogError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        Ok(OffsetStore {
            dir,
            commit: Mutex::new(()),
        })
    }

    /// The file holding `consumer`'s offsets.
    pub fn path_of(&self, consumer: &str) -> PathBuf {
        self.dir.join(format!("{}.json", escape(consumer)))
    }

    /// The committed offsets of `consumer`; empty when it never committed.
    pub fn load(&self, consumer: &str) -> Result<BTreeMap<(StreamName, u32), Offset>, LogError> {
        let path = self.path_of(consumer);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(LogError::io(&path, e)),
        };
        parse(&path, consumer, &bytes)
    }

    /// Replaces `consumer`'s committed offsets with `offsets`, durably and atomically.
    pub fn commit(
        &self,
        consumer: &str,
        offsets: &BTreeMap<(StreamName, u32), Offset>,
    ) -> Result<(), LogError> {
        let file = OffsetsFile {
            version: OFFSETS_VERSION,
            consumer: consumer.to_string(),
            offsets: offsets
                .iter()
                .map(|((stream, partition), offset)| OffsetEntry {
                    stream: stream.clone(),
                    partition: *partition,
                    offset: *offset,
                })
                .collect(),
        };
        let path = self.path_of(consumer);
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| LogError::io(&path, std::io::Error::other(e)))?;
        let _guard = self.commit.lock().unwrap_or_else(PoisonError::into_inner);
        write_atomic(&path, &json)
    }
}

fn parse(
    path: &Path,
    consumer: &str,
    bytes: &[u8],
) -> Result<BTreeMap<(StreamName, u32), Offset>, LogError> {
    let bad = |reason: String| LogError::BadOffsetFile {
        path: path.to_path_buf(),
        reason,
    };
    let file: OffsetsFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if file.version != OFFSETS_VERSION {
        return Err(bad(format!("unknown version {}", file.version)));
    }
    if file.consumer != consumer {
        return Err(bad(format!(
            "holds the offsets of consumer {:?}",
            file.consumer
        )));
    }
    let mut offsets = BTreeMap::new();
    for entry in file.offsets {
        let key = (entry.stream, entry.partition);
        if offsets.insert(key.clone(), entry.offset).is_some() {
            return Err(bad(format!("{}/{} appears twice", key.0, key.1)));
        }
    }
    Ok(offsets)
}

/// Maps a consumer name to a file stem of `[A-Za-z0-9_-]` plus `%XX` escapes: injective, and
/// no name can climb out of the directory or collide with the temporary files.
fn escape(consumer: &str) -> String {
    let mut out = String::with_capacity(consumer.len());
    for byte in consumer.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets() -> BTreeMap<(StreamName, u32), Offset> {
        BTreeMap::from([
            ((StreamName::new("web").unwrap(), 0), 17),
            ((StreamName::new("web").unwrap(), 3), 0),
            ((StreamName::internal("_dlq"), 1), u64::MAX),
        ])
    }

    #[test]
    fn commit_then_load_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        assert!(
            store.load("lake").unwrap().is_empty(),
            "never committed: empty"
        );
        store.commit("lake", &offsets()).unwrap();
        let mut newer = offsets();
        newer.insert((StreamName::new("web").unwrap(), 0), 99);
        store.commit("detect", &newer).unwrap();
        let reopened = OffsetStore::open(dir.path()).unwrap();
        assert_eq!(reopened.load("lake").unwrap(), offsets());
        assert_eq!(reopened.load("detect").unwrap(), newer);
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| n.ends_with(".json")), "{names:?}");
    }

    #[test]
    fn garbage_torn_or_foreign_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        store.commit("lake", &offsets()).unwrap();
        let path = store.path_of("lake");
        let good = std::fs::read(&path).unwrap();
        let cases: Vec<Vec<u8>> = vec![
            good[..good.len() / 2].to_vec(),
            b"\0\0\0\0garbage".to_vec(),
            Vec::new(),
            br#"{"version":2,"consumer":"lake","offsets":[]}"#.to_vec(),
            br#"{"version":1,"consumer":"other","offsets":[]}"#.to_vec(),
            br#"{"version":1,"consumer":"lake","offsets":[{"stream":"a","partition":0,"offset":1},{"stream":"a","partition":0,"offset":2}]}"#.to_vec(),
        ];
        for bytes in cases {
            std::fs::write(&path, &bytes).unwrap();
            match store.load("lake") {
                Err(LogError::BadOffsetFile { path: named, .. }) => assert_eq!(named, path),
                other => panic!("{:?} loaded as {other:?}", String::from_utf8_lossy(&bytes)),
            }
        }
    }

    #[test]
    fn consumer_names_map_to_distinct_safe_files() {
        let names = ["lake", "../etc", "a/b", "a%2Fb", "", ".", "detect:rules"];
        let stems: std::collections::BTreeSet<String> = names.iter().map(|n| escape(n)).collect();
        assert_eq!(stems.len(), names.len());
        for stem in &stems {
            assert!(
                stem.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-%".contains(&b)),
                "{stem}"
            );
        }
    }
}
