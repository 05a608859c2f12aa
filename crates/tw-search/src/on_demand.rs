//! [`OnDemandDirectory`]: the directory an hour index's writer, and so its merges, read
//! through. Reads are copied into buffers that are freed when tantivy drops them, instead of
//! being windows into one memory map of the whole file.
//!
//! Why: tantivy's `MmapDirectory` maps each segment file whole, for as long as anything holds
//! a part of it. A merge reads every byte of its input segments, and every page it touched
//! stays resident in the process until the merged-away files are unmapped, which for the
//! segments a reader still holds is its next reload. So a merge of an hour's large segments
//! kept about the whole index resident: ~700 of the bench's 1,145 MB peak RSS were these
//! file-backed pages (BENCHMARKS.md, session 19). Through this directory a merge holds only
//! what it is reading at the moment: a window of each input's postings and positions, the
//! inputs' dictionaries of the field being merged, one input's document store, one column.
//!
//! Searches keep `MmapDirectory` (a second `Index` on the same directory): they read little,
//! and keep what they read (dictionaries' indexes, columns) for as long as the reader lives,
//! which a memory map serves without copying.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tantivy::HasLen;
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    Directory, DirectoryLock, FileHandle, Lock, MmapDirectory, OwnedBytes, WatchCallback,
    WatchHandle, WritePtr,
};

/// Bytes read at once when reads go forward through a file: a merge reads each term's
/// postings and positions right after the previous term's, and a system call per term would
/// cost more than the merge itself. Longer reads are read alone. Each file a merge reads
/// forward holds one window while the merge runs: 32 MiB for the postings and positions of
/// 16 inputs.
const WINDOW_BYTES: usize = 1 << 20;

/// A directory of segment files read on demand; writes, deletes and locks are
/// `MmapDirectory`'s.
#[derive(Debug, Clone)]
pub(crate) struct OnDemandDirectory {
    root: PathBuf,
    inner: MmapDirectory,
}

impl OnDemandDirectory {
    pub(crate) fn open(root: &Path) -> tantivy::Result<Self> {
        Ok(OnDemandDirectory {
            root: root.to_path_buf(),
            inner: MmapDirectory::open(root)?,
        })
    }
}

impl Directory for OnDemandDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        let full_path = self.root.join(path);
        let file = File::open(&full_path).map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => OpenReadError::FileDoesNotExist(path.to_path_buf()),
            _ => OpenReadError::wrap_io_error(error, path.to_path_buf()),
        })?;
        let len = file
            .metadata()
            .map_err(|error| OpenReadError::wrap_io_error(error, path.to_path_buf()))?
            .len();
        let len = usize::try_from(len).map_err(|_| {
            OpenReadError::wrap_io_error(
                io::Error::new(io::ErrorKind::FileTooLarge, "file larger than memory"),
                path.to_path_buf(),
            )
        })?;
        Ok(Arc::new(OnDemandFile {
            file,
            len,
            window: Mutex::default(),
        }))
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        self.inner.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        self.inner.open_write(path)
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.inner.atomic_read(path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.inner.atomic_write(path, data)
    }

    fn sync_directory(&self) -> io::Result<()> {
        self.inner.sync_directory()
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        self.inner.acquire_lock(lock)
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(watch_callback)
    }
}

/// An open segment file (segment files never change once written).
#[derive(Debug)]
struct OnDemandFile {
    file: File,
    len: usize,
    window: Mutex<Window>,
}

/// The bytes last read from a file, and where the last read ended.
#[derive(Debug, Default)]
struct Window {
    start: usize,
    bytes: Option<OwnedBytes>,
    last_end: usize,
}

impl HasLen for OnDemandFile {
    fn len(&self) -> usize {
        self.len
    }
}

impl FileHandle for OnDemandFile {
    /// A slice of the window when it holds the range; else the range is read (a whole window
    /// ahead when the read continues the previous one) and becomes the window. Slices share
    /// the window's buffer, which is freed when the last of them is dropped.
    fn read_bytes(&self, range: Range<usize>) -> io::Result<OwnedBytes> {
        if range.start > range.end || range.end > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("read of {range:?} in a file of {} bytes", self.len),
            ));
        }
        if range.is_empty() {
            return Ok(OwnedBytes::empty());
        }
        if range.len() > WINDOW_BYTES {
            return self.read_exact(range);
        }
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let sequential = range.start == window.last_end;
        window.last_end = range.end;
        if let Some(bytes) = &window.bytes
            && range.start >= window.start
            && range.end <= window.start + bytes.len()
        {
            return Ok(bytes.slice(range.start - window.start..range.end - window.start));
        }
        let end = if sequential {
            (range.start + WINDOW_BYTES).min(self.len)
        } else {
            range.end
        };
        let bytes = self.read_exact(range.start..end)?;
        let read = bytes.slice(0..range.len());
        window.start = range.start;
        window.bytes = Some(bytes);
        Ok(read)
    }
}

impl OnDemandFile {
    fn read_exact(&self, range: Range<usize>) -> io::Result<OwnedBytes> {
        let mut buffer = vec![0; range.len()];
        self.file.read_exact_at(&mut buffer, range.start as u64)?;
        Ok(OwnedBytes::new(buffer))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Pseudo-random bytes, so a read from the wrong place does not pass by accident.
    fn content(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn reads_return_the_file_bytes_whatever_the_order_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let data = content(3 * WINDOW_BYTES + 12_345);
        File::create(dir.path().join("segment.idx"))
            .unwrap()
            .write_all(&data)
            .unwrap();
        let directory = OnDemandDirectory::open(dir.path()).unwrap();
        let file = directory.open_read(Path::new("segment.idx")).unwrap();
        assert_eq!(file.len(), data.len());

        // Forward runs of small reads (served from windows), jumps, reads across a window's
        // end, and reads longer than a window (mapped); earlier reads stay valid after the
        // window moved on.
        let mut kept = Vec::new();
        let mut check = |range: Range<usize>| {
            let bytes = file.read_bytes_slice(range.clone()).unwrap();
            assert_eq!(bytes.as_slice(), &data[range.clone()], "read of {range:?}");
            kept.push((range, bytes));
        };
        let mut at = 0;
        for len in (1..4000).step_by(7) {
            check(at..at + len);
            at += len;
        }
        check(at - 10..at + 20);
        check(WINDOW_BYTES - 5..WINDOW_BYTES + 5);
        check(WINDOW_BYTES + 5..WINDOW_BYTES + 70_000);
        check(100..WINDOW_BYTES + 200);
        check(data.len() - 3..data.len());
        check(0..data.len());
        let mut state = 7u64;
        for _ in 0..2000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let start = (state >> 33) as usize % data.len();
            let len = ((state >> 13) as usize % 5000).min(data.len() - start);
            check(start..start + len);
        }
        for (range, bytes) in &kept {
            assert_eq!(
                bytes.as_slice(),
                &data[range.clone()],
                "kept read of {range:?}"
            );
        }

        let handle = directory.get_file_handle(Path::new("segment.idx")).unwrap();
        assert!(handle.read_bytes(0..0).unwrap().is_empty());
        assert!(handle.read_bytes(data.len() - 1..data.len() + 1).is_err());
        assert!(matches!(
            directory.get_file_handle(Path::new("missing.idx")),
            Err(OpenReadError::FileDoesNotExist(_))
        ));
    }
}
