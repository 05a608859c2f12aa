//! [`LiveFiles`]: the object store the query engine lists the lake through, which hides the
//! files compaction has superseded.
//!
//! Why here: DataFusion 55's ListingTable finds a table's files with one recursive
//! `ObjectStore::list` of the table prefix (`list_with_cache` in datafusion-datasource's
//! `url.rs`; `list_with_delimiter` is used by `list_partitions` only). Filtering that listing
//! is the one place that sees every file of a directory at once, which the superseding rule
//! needs (`tw_lake::superseded`). Reads pass through unchanged, so a query that listed a file
//! before it was superseded still opens it (compaction deletes it only after a grace period).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// An [`ObjectStore`] whose listings leave out superseded lake files.
#[derive(Debug)]
pub struct LiveFiles {
    inner: Arc<dyn ObjectStore>,
}

impl LiveFiles {
    /// Wraps the store holding the lake.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

impl fmt::Display for LiveFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LiveFiles({})", self.inner)
    }
}

/// Drops the superseded files of `objects`, deciding per directory.
fn keep_live(objects: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
    let mut by_dir: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    for object in objects {
        let location = object.location.as_ref();
        let dir = location.rsplit_once('/').map_or("", |(dir, _)| dir);
        by_dir.entry(dir.to_string()).or_default().push(object);
    }
    let mut live = Vec::new();
    for objects in by_dir.into_values() {
        let names: Vec<&str> = objects
            .iter()
            .map(|o| o.location.filename().unwrap_or(""))
            .collect();
        let superseded = tw_lake::superseded(&names);
        live.extend(
            objects
                .into_iter()
                .zip(superseded)
                .filter_map(|(object, gone)| (!gone).then_some(object)),
        );
    }
    live
}

#[async_trait]
impl ObjectStore for LiveFiles {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    /// The whole listing is gathered first: a file's fate depends on its neighbours.
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let listing = self.inner.list(prefix);
        futures::stream::once(async move {
            let objects: Vec<ObjectMeta> = listing.try_collect().await?;
            Ok::<_, object_store::Error>(futures::stream::iter(
                keep_live(objects).into_iter().map(Ok),
            ))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        result.objects = keep_live(result.objects);
        Ok(result)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn listings_hide_superseded_files_per_directory() {
        let store = Arc::new(InMemory::new());
        let name =
            |p: u32, first: u64, last: u64| format!("p{p:03}-{first:020}-{last:020}.parquet");
        let files = [
            format!("s/hour=01/{}", name(0, 0, 9)),
            format!("s/hour=01/{}", name(0, 10, 19)),
            format!("s/hour=01/{}", name(0, 0, 19)),
            // Same range in another hour: a different directory, not superseded.
            format!("s/hour=02/{}", name(0, 0, 9)),
            "s/hour=02/readme.txt".to_string(),
        ];
        for file in &files {
            store
                .put(&Path::from(file.as_str()), PutPayload::from_static(b"x"))
                .await
                .expect("put");
        }
        let live = LiveFiles::new(store);
        let mut listed: Vec<String> = live
            .list(Some(&Path::from("s")))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .expect("list");
        listed.sort();
        let mut expected = vec![files[2].clone(), files[3].clone(), files[4].clone()];
        expected.sort();
        assert_eq!(listed, expected);
        let level = live
            .list_with_delimiter(Some(&Path::from("s/hour=01")))
            .await
            .expect("list");
        let names: Vec<String> = level
            .objects
            .iter()
            .map(|o| o.location.to_string())
            .collect();
        assert_eq!(names, vec![files[2].clone()]);
        // Superseded files can still be read by a query that listed them earlier.
        assert!(live.head(&Path::from(files[0].as_str())).await.is_ok());
    }
}
