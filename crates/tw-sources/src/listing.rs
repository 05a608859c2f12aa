//! Listing a watched directory or bucket so that an entry that cannot be listed costs only
//! itself.
//!
//! `ObjectStore::list` ends its stream at the first error: a directory it may not open
//! (`lost+found` owned by root), a symlink loop, a key `object_store` cannot represent (an
//! empty segment as in `logs//x.json`, a `.` or `..` segment). Stopping there would hide every
//! file listed after the bad entry, at every poll. The listers here go around it and report it:
//! - a directory is listed one directory at a time (`list_with_delimiter`); a directory that
//!   cannot be listed is reported and the others are listed. A symlink back to a directory
//!   above is not followed (its files are listed under their own path); one to the directory
//!   holding it makes that directory unlistable (walkdir refuses the loop), which is reported;
//! - a bucket is listed page by page. `object_store` fails a whole page when one of its keys
//!   cannot be represented, so that page is asked for again in smaller pages until the bad key
//!   is alone in one; the key is reported and the listing goes on after it (`start-after`).
//!   Any other error ends the listing; what was listed until then is kept.
//!
//! Hidden directories are not listed: no file below them is a candidate. A directory listing
//! also shows sockets, FIFOs and devices; [`Lister::regular_files`] drops them before they are
//! read (opening a FIFO waits for a writer).

use std::path::PathBuf;
use std::sync::Arc;

use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore};

/// Keys per page S3 returns when not asked for fewer.
const S3_PAGE_KEYS: usize = 1000;

/// How a watcher lists its store.
#[derive(Clone)]
pub enum Lister {
    /// A local directory, listed directory by directory.
    Directory(Arc<LocalFileSystem>),
    /// An S3 (or S3-compatible) bucket, listed page by page.
    Bucket(Arc<dyn PaginatedListStore>),
}

/// What one listing found.
#[derive(Debug, Default)]
pub struct Listed {
    /// Every object listed.
    pub objects: Vec<ObjectMeta>,
    /// What could not be listed.
    pub problems: Vec<Unlisted>,
}

/// Something that could not be listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlisted {
    /// A directory or prefix (ending in `/`; `/` alone is the root) or an object key.
    pub path: String,
    /// The store's error.
    pub reason: String,
}

impl Lister {
    /// Lists everything below `prefix` (none: everything); never fails as a whole, the
    /// problems come with what was listed.
    pub async fn list(&self, prefix: Option<&ObjectPath>) -> Listed {
        let mut listed = Listed::default();
        match self {
            Lister::Directory(store) => list_directories(store, prefix, &mut listed).await,
            Lister::Bucket(store) => list_bucket(&**store, prefix, &mut listed).await,
        }
        listed
    }

    /// Keeps, of `locations`, what can be read as a file: in a directory, regular files (and
    /// links to them), and what cannot be inspected (its read reports why); in a bucket,
    /// everything.
    pub async fn regular_files(&self, locations: Vec<ObjectPath>) -> Vec<ObjectPath> {
        let Lister::Directory(store) = self else {
            return locations;
        };
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            locations
                .into_iter()
                .filter(|location| {
                    match store.path_to_filesystem(location).map(std::fs::metadata) {
                        Ok(Ok(metadata)) => metadata.is_file(),
                        _ => true,
                    }
                })
                .collect()
        })
        .await
        // The task panicked: nothing this poll.
        .unwrap_or_default()
    }
}

/// How a directory is reported: its path and a `/`; the root as `/`.
fn directory_name(dir: &ObjectPath) -> String {
    if dir.as_ref().is_empty() {
        "/".to_string()
    } else {
        format!("{dir}/")
    }
}

async fn list_directories(
    store: &LocalFileSystem,
    prefix: Option<&ObjectPath>,
    listed: &mut Listed,
) {
    // Depth first; each directory carries the canonical paths of the directories above it.
    let mut to_list = vec![(prefix.cloned().unwrap_or_default(), Vec::<PathBuf>::new())];
    while let Some((dir, mut ancestors)) = to_list.pop() {
        if let Some(canonical) = canonical_directory(store, &dir).await {
            if ancestors.contains(&canonical) {
                tracing::debug!(directory = %dir, "not following a symlink back to a directory being listed");
                continue;
            }
            ancestors.push(canonical);
        }
        match store.list_with_delimiter(Some(&dir)).await {
            Ok(result) => {
                listed.objects.extend(result.objects);
                to_list.extend(
                    result
                        .common_prefixes
                        .into_iter()
                        .filter(|sub| !sub.filename().is_some_and(|name| name.starts_with('.')))
                        .map(|sub| (sub, ancestors.clone())),
                );
            }
            Err(error) => listed.problems.push(Unlisted {
                path: directory_name(&dir),
                reason: error.to_string(),
            }),
        }
    }
}

/// The canonical path of `dir` on disk, if it can be resolved (if not, its listing fails
/// and says why).
async fn canonical_directory(store: &LocalFileSystem, dir: &ObjectPath) -> Option<PathBuf> {
    // `path_to_filesystem` maps files: map a child and take its parent.
    let child = store.path_to_filesystem(&dir.clone().join("_")).ok()?;
    let on_disk = child.parent()?.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::canonicalize(on_disk).ok())
        .await
        .ok()
        .flatten()
}

async fn list_bucket(
    store: &dyn PaginatedListStore,
    prefix: Option<&ObjectPath>,
    listed: &mut Listed,
) {
    // Like `ObjectStore::list`: the prefix is a directory.
    let prefix = prefix
        .filter(|p| !p.as_ref().is_empty())
        .map(|p| format!("{p}/"));
    // Where the next page starts: after a continuation token, else after a key.
    let mut page_token: Option<String> = None;
    let mut start_after: Option<String> = None;
    let mut max_keys: Option<usize> = None;
    loop {
        let options = PaginatedListOptions {
            offset: start_after.clone(),
            page_token: page_token.clone(),
            max_keys,
            ..Default::default()
        };
        match store.list_paginated(prefix.as_deref(), options).await {
            Ok(page) => {
                listed.objects.extend(page.result.objects);
                match page.page_token {
                    Some(token) if !token.is_empty() => {
                        page_token = Some(token);
                        start_after = None;
                    }
                    _ => return,
                }
            }
            Err(error) => match unrepresentable_key(&error) {
                // The page holds only the bad key: report it, go on after it.
                Some(key) if max_keys == Some(1) => {
                    listed.problems.push(Unlisted {
                        path: key.clone(),
                        reason: error.to_string(),
                    });
                    page_token = None;
                    start_after = Some(key);
                    max_keys = None;
                }
                // Same start, half the page: the keys before the bad one come back.
                Some(_) => max_keys = Some((max_keys.unwrap_or(S3_PAGE_KEYS) / 2).max(1)),
                None => {
                    listed.problems.push(Unlisted {
                        path: prefix.clone().unwrap_or_else(|| "/".to_string()),
                        reason: error.to_string(),
                    });
                    return;
                }
            },
        }
    }
}

/// The key `object_store` refused to represent, if that is what `error` is.
fn unrepresentable_key(error: &object_store::Error) -> Option<String> {
    use object_store::path::Error as PathError;
    match error {
        object_store::Error::InvalidPath {
            source: PathError::EmptySegment { path } | PathError::BadSegment { path, .. },
        } => Some(path.clone()),
        _ => None,
    }
}

#[cfg(test)]
#[path = "listing_tests.rs"]
mod tests;
