//! The lake under a local directory: atomic, durable puts of our own (tmp file, fsync, rename,
//! fsync of the directory; object_store's `LocalFileSystem` does not fsync).

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::StoredObject;
use crate::LakeError;

/// A lake under a local directory, with the durability of `tw_log::write_file_atomically`.
pub(super) struct LocalDisk {
    pub(super) root: PathBuf,
}

impl LocalDisk {
    pub(super) fn open(root: &Path) -> Result<LocalDisk, LakeError> {
        std::fs::create_dir_all(root).map_err(LakeError::io(root))?;
        Ok(LocalDisk {
            root: root.to_path_buf(),
        })
    }

    pub(super) fn put(&self, path: &str, bytes: &[u8]) -> Result<(), LakeError> {
        let file = self.root.join(path);
        if let Some(dir) = file.parent() {
            create_dir_synced(dir)?;
        }
        tw_log::write_file_atomically(&file, bytes).map_err(LakeError::io(&file))
    }

    pub(super) fn get(&self, path: &str) -> Result<Option<Bytes>, LakeError> {
        let file = self.root.join(path);
        match std::fs::read(&file) {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(LakeError::io(&file)(error)),
        }
    }

    pub(super) fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, LakeError> {
        let mut objects = Vec::new();
        self.walk(prefix, &mut |relative, entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !is_tmp_name(&name) {
                let size = entry
                    .metadata()
                    .map_err(LakeError::io(entry.path()))?
                    .len();
                objects.push(StoredObject {
                    path: relative,
                    size,
                });
            }
            Ok(())
        })?;
        Ok(objects)
    }

    pub(super) fn delete(&self, path: &str) -> Result<(), LakeError> {
        let file = self.root.join(path);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(LakeError::io(&file)(error)),
        }
        sync_dir(file.parent().unwrap_or(Path::new(".")))
    }

    pub(super) fn remove_tmp_files(&self) -> Result<(), LakeError> {
        let mut tmp = Vec::new();
        self.walk("", &mut |relative, entry| {
            if is_tmp_name(&entry.file_name().to_string_lossy()) {
                tmp.push(relative);
            }
            Ok(())
        })?;
        for path in tmp {
            self.delete(&path)?;
        }
        Ok(())
    }

    /// Calls `visit` with the relative path of every file under `prefix`, all levels. Names
    /// that are not UTF-8 cannot be lake objects and are skipped.
    fn walk(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(String, &std::fs::DirEntry) -> Result<(), LakeError>,
    ) -> Result<(), LakeError> {
        let mut pending = vec![prefix.to_string()];
        while let Some(relative_dir) = pending.pop() {
            let dir = self.root.join(&relative_dir);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(LakeError::io(&dir)(error)),
            };
            for entry in entries {
                let entry = entry.map_err(LakeError::io(&dir))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    tracing::debug!(path = %entry.path().display(), "ignoring a non-UTF-8 name in the lake");
                    continue;
                };
                let relative = if relative_dir.is_empty() {
                    name
                } else {
                    format!("{relative_dir}/{name}")
                };
                if entry
                    .file_type()
                    .map_err(LakeError::io(entry.path()))?
                    .is_dir()
                {
                    pending.push(relative);
                } else {
                    visit(relative, &entry)?;
                }
            }
        }
        Ok(())
    }
}

/// The hidden tmp files of atomic puts: `.{name}.tmp`.
fn is_tmp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Creates `dir` and its missing ancestors, fsyncing each new entry's parent so the directory
/// survives a power loss together with the file renamed into it.
fn create_dir_synced(dir: &Path) -> Result<(), LakeError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_synced(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(LakeError::io(dir)(error)),
    }
    sync_dir(dir.parent().unwrap_or(Path::new(".")))
}

/// Fsyncs a directory so that a rename or deletion inside it survives a power loss.
fn sync_dir(dir: &Path) -> Result<(), LakeError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(LakeError::io(dir))
}

