//! Which columns of a stream's flush files get a Parquet dictionary, learned from the stream's
//! previous flushes.
//!
//! A dictionary pays for a column whose values repeat (event names, regions, accounts): the
//! values are stored once and the rows as small indexes. For a column whose values hardly
//! repeat (request ids, event ids, `_offset`, `_time`) it saves nothing, yet every value still
//! goes through the writer's hash table until the dictionary is full and the writer falls back
//! to plain pages: that interning was about a third of the flush's instructions (BENCHMARKS.md).
//!
//! So each column chunk flushed with a dictionary is a measurement of its column: data pages
//! whose indexes are about as wide as for all-distinct values (or a dictionary that the writer
//! gave up on) mean the values hardly repeat, and the stream's next flush files write that
//! column plain. A plain chunk
//! tells nothing of how its values repeat, so every [`PROBE_EVERY`]th file of the stream is
//! written with every dictionary on, to measure again. Compacted files always get
//! dictionaries: they are written once and kept.

use std::collections::HashSet;

use parquet::basic::{Encoding, PageType};
use parquet::file::metadata::{ColumnChunkMetaData, RowGroupMetaData};
use parquet::file::properties::WriterPropertiesBuilder;
use parquet::schema::types::ColumnPath;

/// Chunks with fewer values say too little about their column to change its choice: in a
/// chunk of a few rows even a handful of event names fills most of the dictionary.
const MIN_VALUES: i64 = 4_096;

/// One file in this many is written with every dictionary on, so that a column whose values
/// started to repeat gets its dictionary back.
pub(crate) const PROBE_EVERY: u64 = 16;

/// The dictionary choices of one stream's flush files: every column gets a dictionary except
/// those whose last measured chunk said their values hardly repeat.
#[derive(Debug, Default)]
pub(crate) struct DictionaryChoice {
    plain: HashSet<ColumnPath>,
    /// Files learned from so far.
    files: u64,
}

impl DictionaryChoice {
    /// Turns the dictionary off in `builder` for the columns written plain, unless the next
    /// file is one that measures every column again.
    pub(crate) fn apply(&self, builder: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
        if self.files.is_multiple_of(PROBE_EVERY) {
            return builder;
        }
        self.plain.iter().fold(builder, |builder, column| {
            builder.set_column_dictionary_enabled(column.clone(), false)
        })
    }

    /// Learns from the column chunks of a file just written.
    pub(crate) fn learn(&mut self, row_groups: &[RowGroupMetaData]) {
        self.files += 1;
        for chunk in row_groups.iter().flat_map(RowGroupMetaData::columns) {
            match dictionary_pays(chunk) {
                Some(true) => {
                    self.plain.remove(chunk.column_path());
                }
                Some(false) => {
                    self.plain.insert(chunk.column_path().clone());
                }
                None => {}
            }
        }
    }

    /// Whether `column` (a top-level column's name) is written plain.
    #[cfg(test)]
    pub(crate) fn is_plain(&self, column: &str) -> bool {
        self.plain
            .contains(&ColumnPath::new(vec![column.to_string()]))
    }
}

/// Whether the dictionary of `chunk` paid for itself: whether its values repeat, on average,
/// at least twice. `None` when the chunk has no dictionary, or too few values to tell.
fn dictionary_pays(chunk: &ColumnChunkMetaData) -> Option<bool> {
    let nulls = chunk
        .statistics()
        .and_then(|statistics| statistics.null_count_opt())
        .map_or(0, |nulls| i64::try_from(nulls).unwrap_or(i64::MAX));
    let values = chunk.num_values().saturating_sub(nulls);
    if values < MIN_VALUES {
        return None;
    }
    let dictionary_start = chunk.dictionary_page_offset()?;
    if fell_back(chunk) {
        return Some(false);
    }
    // The count of distinct values is not in the metadata, but the data pages tell it: they
    // come right after the dictionary page and hold one index per value, of log2(distinct)
    // bits (less where zstd or runs shrink them), and the null markers, at most a bit a row.
    let dictionary_bytes = chunk.data_page_offset() - dictionary_start;
    let null_marker_bytes = if nulls > 0 { chunk.num_values() / 8 } else { 0 };
    let index_bytes = chunk.compressed_size() - dictionary_bytes - null_marker_bytes;
    let index_bits = 8.0 * index_bytes as f64 / values as f64;
    // Values that repeat twice on average: distinct = values / 2, log2(values) - 1 bits each.
    Some(index_bits < (values as f64).log2() - 1.0)
}

/// Whether some data page of `chunk` is not dictionary-encoded: the writer's dictionary
/// filled up and it fell back to plain pages. (The writer's own metadata lists every page's
/// encoding; only metadata read back from a file is reduced to a mask.)
fn fell_back(chunk: &ColumnChunkMetaData) -> bool {
    chunk.page_encoding_stats().is_some_and(|stats| {
        stats.iter().any(|stat| {
            matches!(stat.page_type, PageType::DATA_PAGE | PageType::DATA_PAGE_V2)
                && !matches!(
                    stat.encoding,
                    Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY
                )
        })
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;

    use super::*;

    /// Writes `batch` the way a flush does under `choice` and returns its row groups.
    fn flush(choice: &DictionaryChoice, batch: &RecordBatch) -> Vec<RowGroupMetaData> {
        let builder = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level")));
        let properties = choice.apply(builder).build();
        let mut writer =
            ArrowWriter::try_new(Vec::new(), batch.schema(), Some(properties)).expect("writer");
        writer.write(batch).expect("write");
        writer.flush().expect("flush");
        writer.flushed_row_groups().to_vec()
    }

    fn batch(
        rows: usize,
        id: impl Fn(usize) -> String,
        name: impl Fn(usize) -> String,
    ) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(StringArray::from_iter_values((0..rows).map(id))) as _,
            ),
            (
                "eventName",
                Arc::new(StringArray::from_iter_values((0..rows).map(name))) as _,
            ),
            (
                // 5,000 users in random order: values repeat ~4 times in 20,000 rows.
                "user",
                Arc::new(StringArray::from_iter_values((0..rows).map(|i| {
                    let user = (i as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f) % 5_000;
                    format!("arn:aws:iam::123456789012:user/user{user}")
                }))) as _,
            ),
            (
                "_offset",
                Arc::new(Int64Array::from_iter_values(
                    (0..rows as i64).map(|i| i * 7),
                )) as _,
            ),
        ])
        .expect("batch")
    }

    fn unique_id(i: usize) -> String {
        format!("{:032x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn few_names(i: usize) -> String {
        ["ConsoleLogin", "GetObject", "AssumeRole"][i % 3].to_string()
    }

    #[test]
    fn unique_columns_go_plain_and_repeating_ones_keep_their_dictionary() {
        let mut choice = DictionaryChoice::default();
        let first = batch(20_000, unique_id, few_names);
        choice.learn(&flush(&choice, &first));
        assert!(choice.is_plain("id"));
        assert!(choice.is_plain("_offset"));
        assert!(!choice.is_plain("eventName"));
        assert!(!choice.is_plain("user"));

        // Written plain, the unique columns stay plain; the file has no dictionary for them.
        let groups = flush(&choice, &first);
        let dictionary_of = |name: &str| {
            groups[0]
                .columns()
                .iter()
                .find(|chunk| chunk.column_path().string() == name)
                .expect("column")
                .dictionary_page_offset()
        };
        assert_eq!(dictionary_of("id"), None);
        assert!(dictionary_of("eventName").is_some());
        choice.learn(&groups);
        assert!(choice.is_plain("id"));
        assert!(!choice.is_plain("eventName"));
    }

    #[test]
    fn a_plain_column_whose_values_start_repeating_gets_its_dictionary_back_at_the_next_probe() {
        let mut choice = DictionaryChoice::default();
        choice.learn(&flush(&choice, &batch(20_000, unique_id, few_names)));
        assert!(choice.is_plain("id"));
        let repeating = batch(20_000, |i| format!("user{}", i % 4), few_names);
        for _ in 1..PROBE_EVERY {
            choice.learn(&flush(&choice, &repeating));
            assert!(choice.is_plain("id"), "plain chunks measure nothing");
        }
        choice.learn(&flush(&choice, &repeating));
        assert!(!choice.is_plain("id"));
    }

    #[test]
    fn small_or_empty_chunks_change_nothing() {
        let mut choice = DictionaryChoice::default();
        choice.learn(&flush(&choice, &batch(20_000, unique_id, few_names)));
        // A few rows of repeating ids say nothing: `id` stays plain.
        choice.learn(&flush(&choice, &batch(100, |_| "same".into(), few_names)));
        assert!(choice.is_plain("id"));
        let nulls = RecordBatch::try_from_iter([(
            "id",
            Arc::new(StringArray::from(vec![None::<&str>; 10_000])) as _,
        )])
        .expect("batch");
        choice.learn(&flush(&choice, &nulls));
        assert!(choice.is_plain("id"));
    }

    #[test]
    fn a_dictionary_the_writer_gave_up_on_means_plain() {
        let mut choice = DictionaryChoice::default();
        // Long unique values overflow the default 1 MiB dictionary page: the writer falls back.
        let long = batch(40_000, |i| format!("{}{i:08}", "x".repeat(200)), few_names);
        let groups = flush(&choice, &long);
        let id = groups[0]
            .columns()
            .iter()
            .find(|chunk| chunk.column_path().string() == "id")
            .expect("column");
        assert!(fell_back(id));
        choice.learn(&groups);
        assert!(choice.is_plain("id"));
    }
}
