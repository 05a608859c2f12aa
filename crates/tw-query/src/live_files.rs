//! [`LiveFiles`]: the object store the query engine lists the lake through. A listing shows
//! each stream's files as of the query's hot snapshot: it hides the files the snapshot's hot
//! rows cover and the files compaction has superseded.
//!
//! Why here: DataFusion 55's ListingTable finds a table's files with one recursive
//! `ObjectStore::list` of the table prefix (`list_with_cache` in datafusion-datasource's
//! `url.rs`; `list_with_delimiter` is used by `list_partitions` only). Filtering that listing
//! is the one place that sees every file of a directory at once, which the superseding rule
//! needs (`tw_lake::superseded`). Reads pass through unchanged, so a query that listed a file
//! before it was superseded still opens it (compaction deletes it only after a grace period).
//!
//! The hot/cold split is per file, not per row (which would decode `_partition` and `_offset`
//! of every row of every query): a file of partition `p` ending at or past the snapshot's
//! `hot_start[p]` was stored after the snapshot, so the snapshot's hot rows hold its rows
//! (a flush) or the part of them past `hot_start[p]` (a compaction that merged such a flush
//! with older files). Such files are left out *before* superseding is decided, so the older
//! files a merged one covers stay visible: they were superseded after the snapshot, so the
//! grace period keeps them on disk for the query. What remains holds exactly the offsets
//! below `hot_start`, once each. Each query gets its own `LiveFiles` with its snapshots
//! (`register_streams` fills them before planning lists anything).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use tw_core::{Offset, PartitionId};

/// Per stream name, the `hot_start` of the query's snapshot of it.
pub type HotStarts = Arc<RwLock<HashMap<String, BTreeMap<PartitionId, Offset>>>>;

/// An [`ObjectStore`] whose listings leave out the lake files a query must not read: those
/// its hot snapshot covers and superseded ones.
#[derive(Debug)]
pub struct LiveFiles {
    inner: Arc<dyn ObjectStore>,
    hot: HotStarts,
}

impl LiveFiles {
    /// Wraps the store holding the lake, for a query whose snapshots go into `hot`. Streams
    /// absent from `hot`, and partitions absent from a stream's map, are not filtered.
    pub fn new(inner: Arc<dyn ObjectStore>, hot: HotStarts) -> Self {
        Self { inner, hot }
    }
}

impl fmt::Display for LiveFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LiveFiles({})", self.inner)
    }
}

/// The stream of a lake directory `…/{stream}/year=/month=/day=/hour=`.
fn stream_of(dir: &str) -> Option<&str> {
    let mut parts = dir.rsplit('/');
    let (_hour, _day, _month, year) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    year.starts_with("year=").then(|| parts.next()).flatten()
}

/// Drops, per directory, the files at or past the snapshot's `hot_start`, then the
/// superseded ones among the rest.
fn keep_live(
    objects: Vec<ObjectMeta>,
    hot: &HashMap<String, BTreeMap<PartitionId, Offset>>,
) -> Vec<ObjectMeta> {
    let mut by_dir: BTreeMap<String, Vec<ObjectMeta>> = BTreeMap::new();
    for object in objects {
        let location = object.location.as_ref();
        let dir = location.rsplit_once('/').map_or("", |(dir, _)| dir);
        by_dir.entry(dir.to_string()).or_default().push(object);
    }
    let mut live = Vec::new();
    for (dir, objects) in by_dir {
        let hot_start = stream_of(&dir).and_then(|stream| hot.get(stream));
        let flushed: Vec<ObjectMeta> = objects
            .into_iter()
            .filter(|object| {
                let name = object.location.filename().unwrap_or("");
                let covered_by_hot =
                    tw_lake::data_file_range(name).is_some_and(|(partition, _first, last)| {
                        hot_start
                            .and_then(|starts| starts.get(&partition))
                            .is_some_and(|start| last >= *start)
                    });
                !covered_by_hot
            })
            .collect();
        let names: Vec<&str> = flushed
            .iter()
            .map(|o| o.location.filename().unwrap_or(""))
            .collect();
        let superseded = tw_lake::superseded(&names);
        live.extend(
            flushed
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
        let hot = Arc::clone(&self.hot);
        futures::stream::once(async move {
            let objects: Vec<ObjectMeta> = listing.try_collect().await?;
            let hot = hot.read().unwrap_or_else(|p| p.into_inner()).clone();
            Ok::<_, object_store::Error>(futures::stream::iter(
                keep_live(objects, &hot).into_iter().map(Ok),
            ))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        let hot = self.hot.read().unwrap_or_else(|p| p.into_inner()).clone();
        result.objects = keep_live(result.objects, &hot);
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
        let live = LiveFiles::new(store, HotStarts::default());
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

    #[tokio::test]
    async fn files_past_the_snapshot_are_hidden_before_superseding() {
        let store = Arc::new(InMemory::new());
        let name =
            |p: u32, first: u64, last: u64| format!("p{p:03}-{first:020}-{last:020}.parquet");
        let hour = "lake/s/year=2024/month=01/day=01/hour=01";
        let other = "lake/t/year=2024/month=01/day=01/hour=01";
        let files = [
            format!("{hour}/{}", name(0, 0, 9)),
            // Flushed after the snapshot (hot_start[0] = 10): the hot rows hold it.
            format!("{hour}/{}", name(0, 10, 19)),
            // Compaction merged both after the snapshot: it straddles hot_start, so it is
            // left out and the file it covers stays visible.
            format!("{hour}/{}", name(0, 0, 19)),
            format!("{hour}/{}", name(1, 0, 4)),
            // An imported partition is never hot.
            format!("{hour}/{}", name(1_000_000_000, 1, 70)),
            // A stream without a snapshot in this query is not filtered.
            format!("{other}/{}", name(0, 10, 19)),
        ];
        for file in &files {
            store
                .put(&Path::from(file.as_str()), PutPayload::from_static(b"x"))
                .await
                .expect("put");
        }
        let hot = HotStarts::default();
        hot.write()
            .expect("lock")
            .insert("s".to_string(), BTreeMap::from([(0, 10), (1, 5)]));
        let live = LiveFiles::new(store, hot);
        let mut listed: Vec<String> = live
            .list(Some(&Path::from("lake")))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .expect("list");
        listed.sort();
        let mut expected = vec![
            files[0].clone(),
            files[3].clone(),
            files[4].clone(),
            files[5].clone(),
        ];
        expected.sort();
        assert_eq!(listed, expected);
        assert_eq!(stream_of(hour), Some("s"));
        assert_eq!(stream_of("s/hour=01"), None);
    }
}
