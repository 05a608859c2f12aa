//! The Parquet reader factory of dictionary reads: each file's metadata reported with the
//! chosen columns' Arrow type hinted as a dictionary, where every data page of theirs is
//! dictionary-encoded.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::Result;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::CachedParquetMetaData;
use datafusion::execution::cache::cache_manager::{CachedFileMetadataEntry, FileMetadataCache};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectMeta;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ARROW_SCHEMA_META_KEY, encode_arrow_schema, parquet_to_arrow_schema};
use parquet::basic::{Encoding, PageType, Type as PhysicalType};
use parquet::file::metadata::{ColumnChunkMetaData, FileMetaData, KeyValue, ParquetMetaData};

use super::dictionary_type;

/// A Parquet reader factory whose readers report each file's metadata with `columns` hinted
/// as dictionaries where every data page of theirs is dictionary-encoded.
#[derive(Debug)]
pub(super) struct DictionaryHints {
    inner: Arc<dyn ParquetFileReaderFactory>,
    columns: Arc<BTreeSet<String>>,
    metadata_cache: Arc<FileMetadataCache>,
    /// Appended to a file's path, the key of its hinted metadata in `metadata_cache`.
    cache_suffix: String,
}

impl DictionaryHints {
    /// Readers of `inner` reporting `columns` as dictionaries, the hinted metadata kept in
    /// `metadata_cache`.
    pub(super) fn new(
        inner: Arc<dyn ParquetFileReaderFactory>,
        columns: BTreeSet<String>,
        metadata_cache: Arc<FileMetadataCache>,
    ) -> Self {
        // Each name with its length first: names may hold any character, the comma too.
        let names: Vec<String> = columns
            .iter()
            .map(|name| format!("{}.{name}", name.len()))
            .collect();
        Self {
            inner,
            cache_suffix: format!(":dictionaries:{}", names.join(",")),
            columns: Arc::new(columns),
            metadata_cache,
        }
    }
}

impl ParquetFileReaderFactory for DictionaryHints {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let file = partitioned_file.object_meta.clone();
        let cache_key = Path::from(format!("{}{}", file.location, self.cache_suffix));
        let inner = self.inner.create_reader(
            partition_index,
            partitioned_file,
            metadata_size_hint,
            metrics,
        )?;
        Ok(Box::new(HintedReader {
            inner,
            columns: Arc::clone(&self.columns),
            metadata_cache: Arc::clone(&self.metadata_cache),
            file,
            cache_key,
        }))
    }
}

struct HintedReader {
    inner: Box<dyn AsyncFileReader + Send>,
    columns: Arc<BTreeSet<String>>,
    metadata_cache: Arc<FileMetadataCache>,
    /// The file read: its size and mtime tell whether a cached entry is still its own.
    file: ObjectMeta,
    cache_key: Path,
}

impl HintedReader {
    /// The hinted metadata cached for this file, if it is still valid and holds the page
    /// index (column and offset index) whenever `metadata` does.
    fn cached(&self, metadata: &ParquetMetaData) -> Option<Arc<ParquetMetaData>> {
        let entry = self.metadata_cache.get(&self.cache_key)?;
        let hinted = entry
            .file_metadata
            .as_any()
            .downcast_ref::<CachedParquetMetaData>()?
            .parquet_metadata();
        let has_page_index = (hinted.column_index().is_some() || metadata.column_index().is_none())
            && (hinted.offset_index().is_some() || metadata.offset_index().is_none());
        (entry.is_valid_for(&self.file) && has_page_index).then(|| Arc::clone(hinted))
    }
}

impl AsyncFileReader for HintedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let metadata = self.inner.get_metadata(options).await?;
            if let Some(hinted) = self.cached(&metadata) {
                return Ok(hinted);
            }
            let hinted = with_dictionary_hints(Arc::clone(&metadata), &self.columns)?;
            // A file with no column to hint is cheap to check again, and caching its own
            // metadata a second time would only take room from other files' footers.
            if !Arc::ptr_eq(&hinted, &metadata) {
                let entry = CachedFileMetadataEntry::new(
                    self.file.clone(),
                    Arc::new(CachedParquetMetaData::new(Arc::clone(&hinted))),
                );
                self.metadata_cache.put(&self.cache_key, entry);
            }
            Ok(hinted)
        }
        .boxed()
    }
}

/// `metadata` whose Arrow schema hint says `Dictionary(Int32, Utf8)` for each of `columns`
/// that is a top-level string column dictionary-encoded on every data page of the file;
/// `metadata` itself when none is.
pub(super) fn with_dictionary_hints(
    metadata: Arc<ParquetMetaData>,
    columns: &BTreeSet<String>,
) -> parquet::errors::Result<Arc<ParquetMetaData>> {
    let file = metadata.file_metadata();
    let descriptor = file.schema_descr();
    let chosen: BTreeSet<&str> = descriptor
        .columns()
        .iter()
        .enumerate()
        .filter_map(|(leaf, column)| match column.path().parts() {
            [name]
                if columns.contains(name)
                    && column.physical_type() == PhysicalType::BYTE_ARRAY
                    && metadata
                        .row_groups()
                        .iter()
                        .all(|group| all_pages_dictionary_encoded(group.column(leaf))) =>
            {
                Some(name.as_str())
            }
            _ => None,
        })
        .collect();
    if chosen.is_empty() {
        return Ok(metadata);
    }
    let schema = parquet_to_arrow_schema(descriptor, file.key_value_metadata())?;
    let mut hinted_any = false;
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|field| {
            let is_text = matches!(field.data_type(), DataType::Utf8 | DataType::Utf8View);
            if is_text && chosen.contains(field.name().as_str()) {
                hinted_any = true;
                Arc::new(field.as_ref().clone().with_data_type(dictionary_type()))
            } else {
                Arc::clone(field)
            }
        })
        .collect();
    if !hinted_any {
        return Ok(metadata);
    }
    let mut key_values: Vec<KeyValue> = file
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|pair| pair.key != ARROW_SCHEMA_META_KEY)
        .cloned()
        .collect();
    // The converted schema's metadata holds the file's key-value pairs too; the reader adds
    // those itself, so the hint keeps only what came from the original hint.
    let hint_metadata = schema
        .metadata()
        .iter()
        .filter(|(key, _)| !key_values.iter().any(|pair| &pair.key == *key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let hinted = Schema::new_with_metadata(fields, hint_metadata);
    key_values.push(KeyValue::new(
        ARROW_SCHEMA_META_KEY.to_string(),
        encode_arrow_schema(&hinted),
    ));
    let file_metadata = FileMetaData::new(
        file.version(),
        file.num_rows(),
        file.created_by().map(str::to_string),
        Some(key_values),
        file.schema_descr_ptr(),
        file.column_orders().cloned(),
    );
    let rebuilt = ParquetMetaData::new(file_metadata, metadata.row_groups().to_vec())
        .into_builder()
        .set_column_index(metadata.column_index().cloned())
        .set_offset_index(metadata.offset_index().cloned())
        .build();
    Ok(Arc::new(rebuilt))
}

/// Whether every data page of `chunk` is dictionary-encoded (so that the reader keeps the
/// dictionary rather than building one), as the page encoding statistics say; a chunk
/// without them is taken as not.
fn all_pages_dictionary_encoded(chunk: &ColumnChunkMetaData) -> bool {
    if chunk.dictionary_page_offset().is_none() {
        return false;
    }
    // The metadata reader's default: the data pages' encodings as a bit mask.
    if let Some(mask) = chunk.page_encoding_stats_mask() {
        return mask.is_only(Encoding::RLE_DICTIONARY) || mask.is_only(Encoding::PLAIN_DICTIONARY);
    }
    chunk.page_encoding_stats().is_some_and(|pages| {
        pages.iter().all(|page| {
            let is_data = matches!(page.page_type, PageType::DATA_PAGE | PageType::DATA_PAGE_V2);
            !is_data
                || matches!(
                    page.encoding,
                    Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY
                )
        })
    })
}
