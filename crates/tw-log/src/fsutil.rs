//! Small durable-filesystem helpers shared by the log and the offset store.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::LogError;

/// Fsyncs a directory so that the creation, rename or removal of an entry in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}

/// Replaces `path` with `bytes` atomically: write a hidden temporary sibling (`.name.tmp`, so
/// no reader globbing `*.json` or `*.parquet` sees a partial file), fsync it, rename it over
/// `path`, fsync the directory. A crash leaves either the old or the new content, never a mix.
/// Every durable small file of Tidewatch (configs, rules, catalogs, offsets) is written here.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        // Best effort: a half-written temporary must not linger and eat the space back.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// [`write_file_atomically`] with the log's error type.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    write_file_atomically(path, bytes).map_err(|e| LogError::io(path, e))
}
