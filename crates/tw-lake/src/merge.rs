//! Compaction's merge of sorted inputs: files that are each in (sort column, `_offset`) order
//! become one stream of batches in that order while only a small batch of each open input is
//! decoded at a time, and an input is opened only when the merge reaches its first row, so
//! merging an hour costs memory per overlapping input rather than per row. (Sorting the whole
//! group in memory held every row of it decoded: ~550 MB for a 500,000-event partition-hour,
//! the server's memory peak during a backfill; now ~200 MB, BENCHMARKS.md.)
//!
//! Flush files are written in (`_time`, `_offset`) order and compacted files in (sort column,
//! `_offset`) order, so with the default sort column every input qualifies. [`GroupKeys`]
//! reads only the key columns of each input and says whether they all are sorted; compaction
//! falls back to the in-memory sort when one is not (files of older versions, whose flush
//! left ties in `_time` unordered, or a stream sorted by another column than `_time`).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::{SortColumn, concat, interleave_record_batch, lexsort_to_indices};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::LakeError;
use crate::catalog::OFFSET_COLUMN;
use crate::convert::align;
use crate::storage::LakeStorage;

/// Rows decoded at a time from each input of a merge (~2 MB of CloudTrail events).
const INPUT_BATCH_ROWS: usize = 2048;

/// Reads the Parquet file at `path` in batches of `batch_rows`, only the top-level columns
/// named in `columns` when given (absent ones are skipped: `align` fills them with nulls).
pub(crate) fn open_reader(
    storage: &LakeStorage,
    path: &str,
    columns: Option<&[&str]>,
    batch_rows: usize,
) -> Result<ParquetRecordBatchReader, LakeError> {
    let Some(bytes) = storage.get(path)? else {
        return Err(LakeError::Vanished {
            path: storage.describe(path),
        });
    };
    reader_of(storage, path, bytes, columns, batch_rows)
}

/// [`open_reader`] over `bytes` already fetched from `path` (a caller reading a file twice
/// fetches it once).
pub(crate) fn reader_of(
    storage: &LakeStorage,
    path: &str,
    bytes: Bytes,
    columns: Option<&[&str]>,
    batch_rows: usize,
) -> Result<ParquetRecordBatchReader, LakeError> {
    let parquet_error = |source| LakeError::Parquet {
        path: storage.describe(path),
        source,
    };
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(parquet_error)?
        .with_batch_size(batch_rows);
    if let Some(columns) = columns {
        let file_schema = builder.schema().clone();
        let roots = columns
            .iter()
            .filter_map(|name| file_schema.index_of(name).ok());
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        builder = builder.with_projection(mask);
    }
    builder.build().map_err(parquet_error)
}

/// The sort keys of a group of compaction inputs: every row's (sort column, `_offset`), read
/// one input at a time without the other columns.
pub(crate) struct GroupKeys {
    /// Rows of the whole group.
    pub(crate) rows: usize,
    /// Whether each input is in key order on its own (then [`SortedMerge`] applies).
    pub(crate) inputs_sorted: bool,
    keys: Vec<ArrayRef>,
    offsets: Vec<ArrayRef>,
    /// The key of each input's first row (`None`: an empty input), as `converter` made it.
    first_keys: Vec<Option<OwnedRow>>,
    converter: RowConverter,
}

impl GroupKeys {
    /// Reads the keys of `paths` (aligned to `schema`, ordered by `sort_column` then
    /// `_offset`).
    pub(crate) fn read(
        storage: &LakeStorage,
        paths: &[&str],
        schema: &SchemaRef,
        sort_column: &str,
        stream: &str,
    ) -> Result<Self, LakeError> {
        let key_schema = key_schema(schema, sort_column, stream)?;
        let converter = key_converter(&key_schema, stream)?;
        let mut group = GroupKeys {
            rows: 0,
            inputs_sorted: true,
            keys: Vec::new(),
            offsets: Vec::new(),
            first_keys: Vec::with_capacity(paths.len()),
            converter,
        };
        let columns = [sort_column, OFFSET_COLUMN];
        for path in paths {
            let mut first: Option<OwnedRow> = None;
            let mut last: Option<OwnedRow> = None;
            for batch in open_reader(storage, path, Some(&columns), 64 * 1024)? {
                let batch = align(
                    &batch.map_err(LakeError::arrow(stream))?,
                    &key_schema,
                    stream,
                )?;
                group.rows += batch.num_rows();
                if group.inputs_sorted || first.is_none() {
                    let rows = group
                        .converter
                        .convert_columns(batch.columns())
                        .map_err(LakeError::arrow(stream))?;
                    if first.is_none() && rows.num_rows() > 0 {
                        first = Some(rows.row(0).owned());
                    }
                    let in_order = (1..rows.num_rows()).all(|i| rows.row(i - 1) <= rows.row(i));
                    let joined = match (&last, rows.num_rows()) {
                        (Some(last), 1..) => last.row() <= rows.row(0),
                        _ => true,
                    };
                    group.inputs_sorted = in_order && joined;
                    if let Some(row) = rows.num_rows().checked_sub(1) {
                        last = Some(rows.row(row).owned());
                    }
                }
                group.keys.push(batch.column(0).clone());
                group.offsets.push(batch.column(1).clone());
            }
            group.first_keys.push(first);
        }
        Ok(group)
    }

    /// The order of all rows of the group (numbered input after input) by key: what the
    /// in-memory merge needs when the inputs are not sorted on their own.
    pub(crate) fn order(&self, stream: &str) -> Result<Vec<usize>, LakeError> {
        let joined = |parts: &[ArrayRef]| -> Result<ArrayRef, LakeError> {
            let parts: Vec<&dyn Array> = parts.iter().map(|p| p.as_ref()).collect();
            concat(&parts).map_err(LakeError::arrow(stream))
        };
        if self.keys.is_empty() {
            return Ok(Vec::new());
        }
        let columns = [
            SortColumn {
                values: joined(&self.keys)?,
                options: None,
            },
            SortColumn {
                values: joined(&self.offsets)?,
                options: None,
            },
        ];
        let order = lexsort_to_indices(&columns, None).map_err(LakeError::arrow(stream))?;
        Ok(order.values().iter().map(|&row| row as usize).collect())
    }
}

/// The schema of the keys: the sort column and `_offset`, typed as in the table.
fn key_schema(schema: &SchemaRef, sort_column: &str, stream: &str) -> Result<SchemaRef, LakeError> {
    let field = |name: &str| {
        schema
            .field_with_name(name)
            .cloned()
            .map_err(LakeError::arrow(stream))
    };
    Ok(Arc::new(Schema::new(vec![
        field(sort_column)?,
        field(OFFSET_COLUMN)?,
    ])))
}

/// Comparable rows of the keys (ascending, nulls first: `lexsort`'s default order).
fn key_converter(key_schema: &SchemaRef, stream: &str) -> Result<RowConverter, LakeError> {
    let fields = key_schema
        .fields()
        .iter()
        .map(|field| SortField::new(field.data_type().clone()))
        .collect();
    RowConverter::new(fields).map_err(LakeError::arrow(stream))
}

/// One input of a [`SortedMerge`]: its reader and the batch being taken from.
struct Input {
    reader: ParquetRecordBatchReader,
    batch: RecordBatch,
    keys: Rows,
    /// The next row of `batch` to take.
    next: usize,
    /// Where `batch` is in [`SortedMerge::held`].
    slot: usize,
}

impl Input {
    /// The key of the next row to take.
    fn head(&self) -> Row<'_> {
        self.keys.row(self.next)
    }
}

/// How the batches of every input are decoded: aligned to the table, keys made comparable.
struct Decoder<'s> {
    schema: SchemaRef,
    key_columns: [usize; 2],
    converter: RowConverter,
    stream: &'s str,
}

impl Decoder<'_> {
    /// The next non-empty batch of `reader`, aligned, with its keys.
    fn next_batch(
        &self,
        reader: &mut ParquetRecordBatchReader,
    ) -> Result<Option<(RecordBatch, Rows)>, LakeError> {
        for batch in reader {
            let batch = batch.map_err(LakeError::arrow(self.stream))?;
            let batch = align(&batch, &self.schema, self.stream)?;
            if batch.num_rows() == 0 {
                continue;
            }
            let columns = self.key_columns.map(|index| batch.column(index).clone());
            let keys = self
                .converter
                .convert_columns(&columns)
                .map_err(LakeError::arrow(self.stream))?;
            return Ok(Some((batch, keys)));
        }
        Ok(None)
    }
}

/// An input of a [`SortedMerge`] not opened yet: it is opened (its file fetched and its
/// first batch decoded) only once the merge reaches its first key, so inputs that follow one
/// another in key order, as consecutive flushes of a partition do, are held one or two at a
/// time rather than all at once (every column of an open input also holds a decompression
/// context and a page).
struct Pending<'p> {
    first: OwnedRow,
    path: &'p str,
}

/// The rows of sorted inputs, merged in key order, as batches of up to `chunk_rows` rows
/// aligned to the table schema.
pub(crate) struct SortedMerge<'s> {
    storage: &'s LakeStorage,
    /// Inputs not opened yet, the one with the largest first key first (taken from the end).
    pending: Vec<Pending<'s>>,
    inputs: Vec<Input>,
    /// The batches the rows of the chunk being built come from (each input's current one,
    /// and those it finished during the chunk).
    held: Vec<RecordBatch>,
    decoder: Decoder<'s>,
    chunk_rows: usize,
}

impl<'s> SortedMerge<'s> {
    /// A merge of the inputs at `paths`, each sorted, as `keys` (read from them) found.
    pub(crate) fn new(
        storage: &'s LakeStorage,
        paths: &[&'s str],
        keys: GroupKeys,
        schema: &SchemaRef,
        sort_column: &str,
        chunk_rows: usize,
        stream: &'s str,
    ) -> Result<Self, LakeError> {
        let index = |name: &str| schema.index_of(name).map_err(LakeError::arrow(stream));
        let mut pending: Vec<Pending<'s>> = paths
            .iter()
            .zip(keys.first_keys)
            .filter_map(|(path, first)| {
                Some(Pending {
                    first: first?,
                    path,
                })
            })
            .collect();
        pending.sort_by(|a, b| b.first.cmp(&a.first));
        Ok(SortedMerge {
            storage,
            pending,
            inputs: Vec::new(),
            held: Vec::new(),
            decoder: Decoder {
                schema: schema.clone(),
                key_columns: [index(sort_column)?, index(OFFSET_COLUMN)?],
                converter: keys.converter,
                stream,
            },
            chunk_rows: chunk_rows.max(1),
        })
    }

    /// Opens the pending inputs whose first key is not above every open input's next row.
    fn open_due(&mut self) -> Result<(), LakeError> {
        while let Some(next) = self.pending.last() {
            let smallest = self.inputs.iter().map(Input::head).min();
            if smallest.is_some_and(|head| head < next.first.row()) {
                return Ok(());
            }
            let path = next.path;
            self.pending.pop();
            let mut reader = open_reader(self.storage, path, None, INPUT_BATCH_ROWS)?;
            if let Some((batch, keys)) = self.decoder.next_batch(&mut reader)? {
                self.held.push(batch.clone());
                self.inputs.push(Input {
                    reader,
                    batch,
                    keys,
                    next: 0,
                    slot: self.held.len() - 1,
                });
            }
        }
        Ok(())
    }

    /// Picks the rows of the next chunk: (slot in `held`, row) of each, in key order.
    fn next_chunk(&mut self) -> Result<Vec<(usize, usize)>, LakeError> {
        let mut picks = Vec::with_capacity(self.chunk_rows);
        while picks.len() < self.chunk_rows {
            self.open_due()?;
            if self.inputs.is_empty() {
                break;
            }
            // The open input with the smallest next row, then the smallest next row of the
            // others and the first key of the next pending input: the first input's rows up
            // to that bound come next, as one run (consecutive flushes rarely overlap, so
            // runs are long).
            let mut best = 0;
            let mut bound: Option<Row<'_>> = self.pending.last().map(|next| next.first.row());
            for index in 1..self.inputs.len() {
                let candidate = self.inputs[index].head();
                if candidate < self.inputs[best].head() {
                    let previous = self.inputs[best].head();
                    bound = Some(bound.map_or(previous, |b| b.min(previous)));
                    best = index;
                } else if bound.is_none_or(|b| candidate < b) {
                    bound = Some(candidate);
                }
            }
            let input = &self.inputs[best];
            let wanted = self.chunk_rows - picks.len();
            let limit = input.keys.num_rows().min(input.next + wanted);
            let mut end = input.next + 1;
            match bound {
                Some(bound) => {
                    while end < limit && input.keys.row(end) <= bound {
                        end += 1;
                    }
                }
                None => end = limit,
            }
            picks.extend((input.next..end).map(|row| (input.slot, row)));
            let input = &mut self.inputs[best];
            input.next = end;
            if input.next == input.keys.num_rows() {
                match self.decoder.next_batch(&mut input.reader)? {
                    Some((batch, keys)) => {
                        self.held.push(batch.clone());
                        (input.batch, input.keys) = (batch, keys);
                        (input.next, input.slot) = (0, self.held.len() - 1);
                    }
                    None => {
                        self.inputs.swap_remove(best);
                    }
                }
            }
        }
        Ok(picks)
    }

    /// Gathers the picked rows into one batch, then lets go of the batches no input is still
    /// taking from.
    fn gather(&mut self, picks: &[(usize, usize)]) -> Result<RecordBatch, LakeError> {
        let held: Vec<&RecordBatch> = self.held.iter().collect();
        let chunk =
            interleave_record_batch(&held, picks).map_err(LakeError::arrow(self.decoder.stream))?;
        self.held.clear();
        for input in &mut self.inputs {
            self.held.push(input.batch.clone());
            input.slot = self.held.len() - 1;
        }
        Ok(chunk)
    }
}

impl Iterator for SortedMerge<'_> {
    type Item = Result<RecordBatch, LakeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let picks = match self.next_chunk() {
            Ok(picks) if picks.is_empty() => return None,
            Ok(picks) => picks,
            Err(error) => {
                // One error ends the merge (the caller writes nothing).
                self.inputs.clear();
                self.pending.clear();
                return Some(Err(error));
            }
        };
        Some(self.gather(&picks))
    }
}
