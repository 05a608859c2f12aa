//! What the query engine needs from the lake: the seam between tw-query and tw-lake.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use object_store::ObjectStore;
use tw_core::{Offset, PartitionId, StreamName};

/// Events not yet flushed to Parquet, as one consistent snapshot.
#[derive(Debug, Clone)]
pub struct HotData {
    /// Schema of `batches`.
    pub schema: SchemaRef,
    /// The hot rows.
    pub batches: Vec<RecordBatch>,
    /// Per partition, the first offset held in `batches`: file rows at or past it are
    /// duplicates of hot rows and are skipped. Partitions absent here are read from files only.
    pub hot_start: BTreeMap<PartitionId, Offset>,
}

/// The read side of the lake, as the query engine sees it.
///
/// Implemented by `tw_lake::Lake`; tests implement it over fixture directories.
pub trait LakeCatalog: Send + Sync + 'static {
    /// Every stream that has data (files, hot rows or both).
    fn streams(&self) -> Vec<StreamName>;
    /// The union schema of the stream's files (no Hive columns), if any file was written.
    fn table_schema(&self, stream: &StreamName) -> Option<SchemaRef>;
    /// The directory holding the stream's Hive partitions, as `ListingTableUrl::parse`
    /// accepts it (a local path or `s3://bucket/prefix/{stream}/`); `None` when the stream
    /// certainly has no file (a local directory that does not exist).
    fn stream_location(&self, stream: &StreamName) -> Option<String>;
    /// An object store to register under a URL (`s3://bucket`) for reading the files;
    /// `None` when DataFusion's own local file access reads them.
    fn object_store(&self) -> Option<(String, Arc<dyn ObjectStore>)> {
        None
    }
    /// A snapshot of the stream's not-yet-flushed rows.
    fn hot_snapshot(&self, stream: &StreamName) -> HotData;
}
