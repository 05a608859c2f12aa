//! The lake's storage: every object the lake writes, reads, lists or deletes (Parquet files,
//! catalogs) goes through [`LakeStorage`], over a local directory or an S3-compatible bucket.
//!
//! Paths are relative to the lake root and `/`-separated, e.g.
//! `ct/year=2024/month=05/day=01/hour=10/p000-…parquet` or `_catalog/ct.json`; a path is one or
//! more non-empty segments, none of them `.` or `..`.
//!
//! Invariants (what the rest of the lake relies on):
//! - [`LakeStorage::put`] is atomic and durable when it returns: a reader sees no object or the
//!   whole new one, never part of it. Locally: a hidden tmp file (`.{name}.tmp`), fsync, rename,
//!   fsync of the directory (object_store's `LocalFileSystem` does not fsync, hence our own
//!   code). On S3: one PUT of the whole object, which S3 makes visible atomically once stored;
//! - [`LakeStorage::list`] never returns an incomplete object (tmp files are hidden);
//! - [`LakeStorage::delete`] of a missing object succeeds, and a local deletion is fsynced;
//! - the methods block the calling thread until the operation is done (the lake writer runs
//!   on a plain thread, see `tw_pipeline::Consumer`); they may be called from any thread.

mod local;
mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use tw_s3::{S3Connection, S3Url};

use self::local::LocalDisk;
use self::s3::S3Bucket;
use crate::LakeError;

/// Where a lake keeps its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeLocation {
    /// A local directory.
    Local(PathBuf),
    /// A bucket and key prefix of S3 or an S3-compatible server.
    S3 {
        /// `s3://bucket/prefix`.
        url: S3Url,
        /// Endpoint, region, credentials.
        connection: S3Connection,
    },
}

impl std::fmt::Display for LakeLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LakeLocation::Local(root) => write!(f, "{}", root.display()),
            LakeLocation::S3 { url, .. } => write!(f, "{url}"),
        }
    }
}

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Path relative to the lake root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// The lake's objects: put (atomic), get, list, delete. Cheap to clone.
#[derive(Clone)]
pub struct LakeStorage {
    backend: Arc<Backend>,
}

enum Backend {
    Local(LocalDisk),
    S3(Box<S3Bucket>),
}

impl std::fmt::Debug for LakeStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeStorage")
            .field("location", &self.location())
            .finish_non_exhaustive()
    }
}

impl LakeStorage {
    /// Opens the storage at `location` (a local root directory is created if missing; an S3
    /// client is built, and its first request tells whether bucket and credentials work).
    pub fn open(location: &LakeLocation) -> Result<LakeStorage, LakeError> {
        let backend = match location {
            LakeLocation::Local(root) => Backend::Local(LocalDisk::open(root)?),
            LakeLocation::S3 { url, connection } => {
                Backend::S3(Box::new(S3Bucket::open(url, connection)?))
            }
        };
        Ok(LakeStorage {
            backend: Arc::new(backend),
        })
    }

    /// Where the objects live.
    pub fn location(&self) -> LakeLocation {
        match self.backend.as_ref() {
            Backend::Local(disk) => LakeLocation::Local(disk.root.clone()),
            Backend::S3(bucket) => LakeLocation::S3 {
                url: bucket.url().clone(),
                connection: bucket.connection().clone(),
            },
        }
    }

    /// The root directory of a local lake (`None` for an object store).
    pub fn local_root(&self) -> Option<&Path> {
        match self.backend.as_ref() {
            Backend::Local(disk) => Some(&disk.root),
            Backend::S3(_) => None,
        }
    }

    /// Stores `bytes` at `path`, replacing any object there, atomically and durably (see the
    /// module invariants). Missing local directories are created (and fsynced).
    pub fn put(&self, path: &str, bytes: Bytes) -> Result<(), LakeError> {
        check_path(path)?;
        match self.backend.as_ref() {
            Backend::Local(disk) => disk.put(path, &bytes),
            Backend::S3(bucket) => bucket.put(path, bytes),
        }
    }

    /// The whole object at `path`, or `None` if there is none.
    pub fn get(&self, path: &str) -> Result<Option<Bytes>, LakeError> {
        check_path(path)?;
        match self.backend.as_ref() {
            Backend::Local(disk) => disk.get(path),
            Backend::S3(bucket) => bucket.get(path),
        }
    }

    /// Every object under the directory `prefix` (all levels; `""` lists the whole lake),
    /// sorted by path. `prefix` matches whole segments: `ct` lists `ct/…`, not `ctx/…`.
    pub fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, LakeError> {
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            check_path(prefix)?;
        }
        let mut objects = match self.backend.as_ref() {
            Backend::Local(disk) => disk.list(prefix)?,
            Backend::S3(bucket) => bucket.list(prefix)?,
        };
        objects.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(objects)
    }

    /// Deletes the object at `path`; a missing object is not an error.
    pub fn delete(&self, path: &str) -> Result<(), LakeError> {
        check_path(path)?;
        match self.backend.as_ref() {
            Backend::Local(disk) => disk.delete(path),
            Backend::S3(bucket) => bucket.delete(path),
        }
    }

    /// Removes what interrupted puts left behind (local tmp files; nothing on S3, where a put
    /// leaves nothing partial). Call only while no put is running (the writer's start).
    pub fn remove_incomplete(&self) -> Result<(), LakeError> {
        match self.backend.as_ref() {
            Backend::Local(disk) => disk.remove_tmp_files(),
            Backend::S3(_) => Ok(()),
        }
    }

    /// The full location of `path`, for messages: a file path or an `s3://` URL.
    pub fn describe(&self, path: &str) -> String {
        match self.backend.as_ref() {
            Backend::Local(disk) => disk.root.join(path).display().to_string(),
            Backend::S3(bucket) => bucket.describe(path),
        }
    }

    /// The object store readers (DataFusion) use to read the lake's files directly, with
    /// the URL it must be registered under (`file://` or `s3://bucket`). Reads only: writes
    /// go through [`LakeStorage::put`] to keep its guarantees.
    pub fn object_store(&self) -> (String, Arc<dyn ObjectStore>) {
        match self.backend.as_ref() {
            Backend::Local(_) => ("file://".to_string(), Arc::new(LocalFileSystem::new())),
            Backend::S3(bucket) => (format!("s3://{}", bucket.url().bucket), bucket.store()),
        }
    }

    /// A location of the directory `prefix` that DataFusion's `ListingTableUrl::parse`
    /// accepts (trailing `/`: it is a directory): a local path or `s3://bucket/prefix/…/`.
    pub fn directory_url(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        match self.backend.as_ref() {
            Backend::Local(disk) => format!("{}/", disk.root.join(prefix).display()),
            Backend::S3(bucket) => format!("{}/", bucket.describe(prefix)),
        }
    }
}

/// Refuses a path the lake would never produce: empty, absolute, with empty, `.` or `..`
/// segments. Guards against a bug writing outside the lake root.
fn check_path(path: &str) -> Result<(), LakeError> {
    let valid = !path.is_empty()
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
        && !path.contains('\\');
    if valid {
        Ok(())
    } else {
        Err(LakeError::InvalidPath {
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> (tempfile::TempDir, LakeStorage) {
        let dir = tempfile::tempdir().unwrap();
        let storage = LakeStorage::open(&LakeLocation::Local(dir.path().join("lake"))).unwrap();
        (dir, storage)
    }

    #[test]
    fn local_put_get_list_delete() {
        let (dir, storage) = local();
        let root = dir.path().join("lake");
        storage
            .put(
                "ct/year=2024/hour=10/a.parquet",
                Bytes::from_static(b"aaaa"),
            )
            .unwrap();
        storage
            .put("ct/year=2024/hour=11/b.parquet", Bytes::from_static(b"bb"))
            .unwrap();
        storage
            .put("ctx/c.parquet", Bytes::from_static(b"c"))
            .unwrap();
        storage
            .put("_catalog/ct.json", Bytes::from_static(b"{}"))
            .unwrap();
        // A replacing put leaves the new content and no tmp file.
        storage
            .put("_catalog/ct.json", Bytes::from_static(b"{\"v\":2}"))
            .unwrap();
        assert_eq!(
            std::fs::read(root.join("_catalog/ct.json")).unwrap(),
            b"{\"v\":2}"
        );
        assert!(!root.join("_catalog/.ct.json.tmp").exists());

        // An interrupted put's tmp file is never listed, and is removed as incomplete.
        std::fs::write(root.join("ct/year=2024/hour=10/.d.parquet.tmp"), b"half").unwrap();
        let object = |path: &str, size| StoredObject {
            path: path.to_string(),
            size,
        };
        assert_eq!(
            storage.list("ct").unwrap(),
            vec![
                object("ct/year=2024/hour=10/a.parquet", 4),
                object("ct/year=2024/hour=11/b.parquet", 2),
            ],
            "whole segments only: ctx/ is not under ct"
        );
        assert_eq!(storage.list("").unwrap().len(), 4);
        assert_eq!(storage.list("nothing/here").unwrap(), vec![]);
        storage.remove_incomplete().unwrap();
        assert!(!root.join("ct/year=2024/hour=10/.d.parquet.tmp").exists());

        assert_eq!(
            storage.get("ct/year=2024/hour=11/b.parquet").unwrap(),
            Some(Bytes::from_static(b"bb"))
        );
        assert_eq!(storage.get("ct/missing.parquet").unwrap(), None);

        storage.delete("ct/year=2024/hour=10/a.parquet").unwrap();
        storage
            .delete("ct/year=2024/hour=10/a.parquet")
            .expect("deleting a missing object succeeds");
        assert_eq!(
            storage.list("ct").unwrap(),
            vec![object("ct/year=2024/hour=11/b.parquet", 2)]
        );
        assert_eq!(
            storage.directory_url("ct"),
            format!("{}/", root.join("ct").display())
        );
    }

    #[test]
    fn paths_outside_the_lake_are_refused() {
        let (_dir, storage) = local();
        for bad in ["", "/etc/passwd", "../x", "a//b", "a/./b", "a\\b", "a/"] {
            assert!(
                matches!(
                    storage.put(bad, Bytes::new()),
                    Err(LakeError::InvalidPath { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(storage.get("a/../../b").is_err());
        assert!(storage.delete("..").is_err());
    }
}
