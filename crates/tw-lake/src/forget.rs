//! Forgetting a deleted stream: its hot rows and catalog leave the lake's state at once (SQL
//! no longer has the table), and its files move out of the way into the lake's archive,
//! `.deleted/{stream}/{deleted_at_ms}/` (the same `year=…/…/*.parquet` layout, plus the
//! catalog as `_catalog.json`).
//!
//! Why move rather than keep or delete: files left in place would still be the stream's table,
//! so a stream created again under the name would show the old rows; but the lake is the
//! history the user may still want, so it is kept, readable by any Parquet reader. The
//! archive is not a stream: its first path segment is no stream name, so the writer's clean-up,
//! compaction, retention and the query engine never list it. Deleting it is up to the user.

use tw_core::{StreamName, now_ms};

use crate::catalog::{CATALOG_DIR, Catalog};
use crate::import::IMPORTS_DIR;
use crate::{LakeError, LakeWriter};

/// The archive directory of deleted streams, relative to the lake root.
pub const DELETED_DIR: &str = ".deleted";

impl LakeWriter {
    /// Drops `stream`'s hot rows, catalog and offsets and moves its files to the archive;
    /// returns the archive's location (`None` when the stream had no files). Idempotent: a
    /// retry after an error moves what is left.
    pub fn forget_stream(&mut self, stream: &StreamName) -> Result<Option<String>, LakeError> {
        let lake = self.lake.clone();
        let _maintenance = lake.maintenance();
        self.lake.lock().streams.remove(stream);
        self.committed.retain(|(s, _), _| s != stream);
        let prefix = format!("{stream}/");
        self.lake
            .shared
            .superseded_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|path, _| !path.starts_with(&prefix));
        let storage = self.lake.storage().clone();
        let archive = format!("{DELETED_DIR}/{stream}/{}", now_ms());
        let catalog = Catalog::path(stream);
        let moved = match storage.local_root() {
            Some(root) => {
                // One rename of the stream's directory, then of its catalog.
                let from = root.join(stream.as_str());
                let to = root.join(&archive);
                let exists = from.exists();
                if exists {
                    let parent = to.parent().unwrap_or(root);
                    std::fs::create_dir_all(parent).map_err(LakeError::io(parent))?;
                    std::fs::rename(&from, &to).map_err(LakeError::io(&from))?;
                    sync_dir(parent)?;
                    sync_dir(root)?;
                }
                let catalog_file = root.join(&catalog);
                if catalog_file.exists() {
                    std::fs::create_dir_all(&to).map_err(LakeError::io(&to))?;
                    std::fs::rename(&catalog_file, to.join("_catalog.json"))
                        .map_err(LakeError::io(&catalog_file))?;
                    sync_dir(&to)?;
                    sync_dir(&root.join(CATALOG_DIR))?;
                }
                exists
            }
            None => {
                // Object stores cannot rename: copy each object, then delete it.
                let mut objects = storage.list(stream.as_str())?;
                let moved = !objects.is_empty();
                objects.extend(
                    storage
                        .list(CATALOG_DIR)?
                        .into_iter()
                        .filter(|o| o.path == catalog),
                );
                for object in objects {
                    let target = if object.path == catalog {
                        format!("{archive}/_catalog.json")
                    } else {
                        format!("{archive}/{}", &object.path[prefix.len()..])
                    };
                    if let Some(bytes) = storage.get(&object.path)? {
                        storage.put(&target, bytes)?;
                    }
                    storage.delete(&object.path)?;
                }
                moved
            }
        };
        // The import manifests go with the data they describe: a stream created again under
        // this name must import the same files afresh, not find them "already imported".
        let manifests = format!("{IMPORTS_DIR}/{stream}/");
        for object in storage.list(manifests.trim_end_matches('/'))? {
            if let Some(name) = object.path.strip_prefix(&manifests)
                && let Some(bytes) = storage.get(&object.path)?
            {
                storage.put(&format!("{archive}/{IMPORTS_DIR}/{name}"), bytes)?;
            }
            storage.delete(&object.path)?;
        }
        let location = moved.then(|| storage.describe(&archive));
        tracing::info!(%stream, archive = ?location, "lake forgot a deleted stream");
        Ok(location)
    }
}

fn sync_dir(dir: &std::path::Path) -> Result<(), LakeError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LakeError::io(dir))
}
