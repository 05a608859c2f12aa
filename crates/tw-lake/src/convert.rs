//! Turning a batch of stored JSON records into one Arrow `RecordBatch` (once, at `handle`
//! time, straight from the payload bytes), and reshaping buffered batches to a later, wider
//! schema.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, RecordBatchOptions, TimestampMillisecondArray,
    new_null_array,
};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use serde_json::{Map, Value};
use tw_core::{Record, StreamName};

use crate::builder::ColumnBuilder;
use crate::catalog::{Catalog, CatalogMark, ColumnType, Placement};
use crate::flatten::{Leaf, for_each_leaf};
use crate::scan::scan_leaves;
use crate::{Lake, LakeError, StreamState};

/// The result of converting one batch.
pub(crate) struct Converted {
    /// The rows, conforming to the catalog's schema after the conversion.
    pub(crate) batch: RecordBatch,
    /// Values stored as text because their type conflicted with their column, per column.
    pub(crate) conflicts: BTreeMap<String, u64>,
    /// Fields sent to `_overflow` (column limit reached, or a duplicate name in one event).
    pub(crate) overflowed: u64,
    /// Records that are not valid JSON, as (index in the records given, the parser's
    /// message): they have no row and left no trace in the catalog.
    pub(crate) unreadable: Vec<(usize, String)>,
}

impl Lake {
    /// Converts `records` of one partition of `stream` into a batch of its table: the
    /// catalog is extended and widened first, persisted when it changed (before any file can
    /// use it), then published for readers, and the type conflicts are counted.
    pub(crate) fn convert_records(
        &self,
        stream: &StreamName,
        partition: u32,
        records: &[&Record],
        now: i64,
    ) -> Result<Converted, LakeError> {
        let _catalog_writer = self
            .shared
            .catalog_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The catalog leaves the lock while converting so queries are not blocked meanwhile;
        // `catalog_writer` keeps every other converter out.
        let (mut catalog, persisted_revision) = {
            let mut state = self.lock();
            let stream_state = state.streams.entry(stream.clone()).or_insert_with(|| {
                let mut fresh = StreamState::new(Catalog::new(stream.clone()));
                fresh.persisted_revision = u64::MAX;
                fresh
            });
            (
                std::mem::replace(&mut stream_state.catalog, Catalog::new(stream.clone())),
                stream_state.persisted_revision,
            )
        };
        let max_columns = self.shared.max_columns;
        let converted =
            convert(&mut catalog, max_columns, partition, records, now).and_then(|converted| {
                if catalog.revision != persisted_revision {
                    catalog.save(self.storage())?;
                }
                Ok(converted)
            });

        let mut state = self.lock();
        let stream_state = state
            .streams
            .entry(stream.clone())
            .or_insert_with(|| StreamState::new(Catalog::new(stream.clone())));
        stream_state.catalog = catalog;
        let converted = converted?;
        stream_state.persisted_revision = stream_state.catalog.revision;
        if stream_state.schema_revision != stream_state.catalog.revision {
            stream_state.schema = stream_state.catalog.schema();
            stream_state.schema_revision = stream_state.catalog.revision;
            stream_state.published = stream_state.catalog.clone();
        }
        for (column, count) in &converted.conflicts {
            *stream_state
                .type_conflicts
                .entry(column.clone())
                .or_default() += count;
        }
        drop(state);
        for (column, count) in &converted.conflicts {
            metrics::counter!("tidewatch_lake_type_conflicts_total", "stream" => stream.to_string(), "column" => column.clone())
                .increment(*count);
        }
        if converted.overflowed > 0 {
            metrics::counter!("tidewatch_lake_overflow_fields_total", "stream" => stream.to_string())
                .increment(converted.overflowed);
        }
        Ok(converted)
    }

    /// Numbers a new import of `stream` (see [`crate::import`]): the catalog's counter is
    /// bumped and persisted before the number is used, so it is never handed out twice.
    pub(crate) fn next_import_number(&self, stream: &StreamName) -> Result<u32, LakeError> {
        let _catalog_writer = self
            .shared
            .catalog_writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let catalog = {
            let mut state = self.lock();
            let stream_state = state.streams.entry(stream.clone()).or_insert_with(|| {
                let mut fresh = StreamState::new(Catalog::new(stream.clone()));
                fresh.persisted_revision = u64::MAX;
                fresh
            });
            stream_state.catalog.imports += 1;
            stream_state.catalog.revision += 1;
            stream_state.catalog.clone()
        };
        catalog.save(self.storage())?;
        let mut state = self.lock();
        if let Some(stream_state) = state.streams.get_mut(stream) {
            stream_state.persisted_revision = catalog.revision;
        }
        Ok(catalog.imports - 1)
    }
}

/// A flattened value of the record being read and the event column it goes into. A record's
/// values wait here until the record proves readable, then go to the column builders.
struct Placed<'v> {
    position: usize,
    leaf: Leaf<'v>,
}

/// A value kept in `_overflow` (column limit reached, or a second field of one event under
/// the same name): its row, its name, the value.
type Overflowed<'v> = (usize, String, Leaf<'v>);

/// Finds the column of each leaf of the record being read (extending and widening the
/// catalog), and can undo all of that when the record turns out unreadable, or when the fast
/// scanner gave up on it halfway (see [`crate::scan`]) and the general walk reads it again.
struct Placer<'c, 'a> {
    catalog: &'c mut Catalog,
    max_columns: usize,
    now_ms: i64,
    /// The row the record being read becomes.
    row: usize,
    /// The record's values with a column.
    pending: Vec<Placed<'a>>,
    /// Every overflowed value of the batch so far.
    overflow: Vec<Overflowed<'a>>,
    /// Per column, the last row that gave it a value (a second value in a row overflows).
    seen: Vec<usize>,
    /// Columns that conflicted in the current record: counted once the record proves readable.
    record_conflicts: Vec<String>,
    /// The column of each typed leaf of the previous readable record, in document order (and
    /// of the current one, being filled): the guesses for the next record's leaves.
    previous_shape: Vec<usize>,
    shape: Vec<usize>,
    /// Where the record being read started, to undo it.
    mark: CatalogMark,
    first_overflow: usize,
}

impl<'a> Placer<'_, 'a> {
    /// Starts reading the record that becomes row `row`.
    fn begin(&mut self, row: usize) {
        self.row = row;
        self.mark = self.catalog.mark();
        self.first_overflow = self.overflow.len();
    }

    fn place(&mut self, name: &str, leaf: Leaf<'a>) {
        let Some(kind) = leaf.column_type() else {
            // A null carries no type: it neither creates nor widens a column.
            return;
        };
        let guess = self.previous_shape.get(self.shape.len()).copied();
        let placement = self
            .catalog
            .observe(name, guess, kind, self.max_columns, self.now_ms);
        self.shape.push(match placement.0 {
            Placement::Column(position) => position,
            Placement::Overflow => usize::MAX,
        });
        match placement {
            (Placement::Column(position), conflict) => {
                if conflict {
                    self.record_conflicts.push(name.to_string());
                }
                if self.seen.len() <= position {
                    self.seen.resize(position + 1, usize::MAX);
                }
                if self.seen[position] == self.row {
                    // Two fields of one event flatten to the same name (`{"a.b":1,"a":{"b":2}}`
                    // or a repeated key): the first wins the column, the other is kept in
                    // `_overflow`.
                    self.overflow.push((self.row, name.to_string(), leaf));
                } else {
                    self.seen[position] = self.row;
                    self.pending.push(Placed { position, leaf });
                }
            }
            (Placement::Overflow, _) => self.overflow.push((self.row, name.to_string(), leaf)),
        }
    }

    /// Undoes what reading the current record did, so that it can be read again or its row
    /// reused by the next record.
    fn undo(&mut self) {
        for placed in self.pending.drain(..) {
            self.seen[placed.position] = usize::MAX;
        }
        self.overflow.truncate(self.first_overflow);
        self.record_conflicts.clear();
        self.catalog.rollback(self.mark);
        self.seen.truncate(self.catalog.fields.len());
        self.shape.clear();
    }

    /// Reads `payload` into `pending`, by the fast scanner when it can; fails only when
    /// `payload` is not valid JSON (having undone what it read).
    fn read(&mut self, payload: &'a [u8], path: &mut String) -> serde_json::Result<()> {
        if let Ok(text) = std::str::from_utf8(payload) {
            if scan_leaves(text, path, &mut |name, leaf| self.place(name, leaf)).is_ok() {
                return Ok(());
            }
            self.undo();
        }
        for_each_leaf(payload, path, &mut |name, leaf| self.place(name, leaf))
            .inspect_err(|_| self.undo())
    }
}

/// Converts `records` of one partition, in one pass: each record is read, its columns found
/// in (or added to) `catalog`, and its values appended to the column builders. A value that
/// widens a column which already holds values of this batch rebuilds that column's builder
/// at the wider type (rare: once per column and widening). A record that is not valid JSON is
/// left out and reported in [`Converted::unreadable`]: the runner checked only that each
/// payload starts as an object, and the JSON is read here (a second time only when the
/// scanner leaves the event to the general walk).
pub(crate) fn convert(
    catalog: &mut Catalog,
    max_columns: usize,
    partition: u32,
    records: &[&Record],
    now_ms: i64,
) -> Result<Converted, LakeError> {
    let stream = catalog.stream.to_string();
    let mut conflicts: BTreeMap<String, u64> = BTreeMap::new();
    let mut unreadable = Vec::new();
    // One builder per catalog column that received a value in this batch, made at its first.
    let mut builders: Vec<Option<ColumnBuilder>> = Vec::new();
    // The catalog's widenings the builders were last checked against.
    let mut widenings_checked = catalog.history.len();
    let mut rows = 0;
    // The payload bytes from the first record that made a builder on (computed once).
    let mut bytes_left: Option<usize> = None;
    let mut path = String::new();
    let mut placer = Placer {
        seen: vec![usize::MAX; catalog.fields.len()],
        mark: catalog.mark(),
        catalog,
        max_columns,
        now_ms,
        row: 0,
        pending: Vec::new(),
        overflow: Vec::new(),
        record_conflicts: Vec::new(),
        previous_shape: Vec::new(),
        shape: Vec::new(),
        first_overflow: 0,
    };
    for (index, &record) in records.iter().enumerate() {
        let row = rows;
        placer.begin(row);
        if let Err(error) = placer.read(&record.payload, &mut path) {
            unreadable.push((index, error.to_string()));
            continue;
        }
        for column in placer.record_conflicts.drain(..) {
            *conflicts.entry(column).or_default() += 1;
        }
        let catalog = &*placer.catalog;
        if catalog.history.len() != widenings_checked {
            widen_builders(&mut builders, catalog, row);
            widenings_checked = catalog.history.len();
        }
        if builders.len() < catalog.fields.len() {
            builders.resize_with(catalog.fields.len(), || None);
        }
        for Placed { position, leaf } in placer.pending.drain(..) {
            let builder = match &mut builders[position] {
                Some(builder) => builder,
                none => none.insert(ColumnBuilder::sized_from(
                    catalog.fields[position].column_type,
                    &leaf,
                    &records[index..],
                    &mut bytes_left,
                )),
            };
            builder.push(row, &leaf);
        }
        rows += 1;
        std::mem::swap(&mut placer.previous_shape, &mut placer.shape);
        placer.shape.clear();
    }
    let overflow = std::mem::take(&mut placer.overflow);
    let catalog = placer.catalog;
    let records: Cow<'_, [&Record]> = if unreadable.is_empty() {
        Cow::Borrowed(records)
    } else {
        let mut left_out = unreadable.iter().map(|(index, _)| *index).peekable();
        records
            .iter()
            .enumerate()
            .filter(|(index, _)| left_out.next_if_eq(index).is_none())
            .map(|(_, record)| *record)
            .collect()
    };
    if !overflow.is_empty() {
        let position = catalog.overflow_position(now_ms);
        if builders.len() <= position {
            builders.resize_with(position + 1, || None);
        }
        let builder = builders[position]
            .get_or_insert_with(|| ColumnBuilder::with_capacity(ColumnType::Utf8, rows, 0));
        for fields in overflow.chunk_by(|a, b| a.0 == b.0) {
            let mut object = Map::new();
            for (_, name, leaf) in fields {
                // Names may repeat here too (renamed or dotted keys): suffix, never overwrite.
                let mut key = name.clone();
                let mut copy = 1;
                while object.contains_key(&key) {
                    copy += 1;
                    key = format!("{name}#{copy}");
                }
                object.insert(key, leaf.to_value());
            }
            let text = Value::Object(object).to_string();
            builder.push(fields[0].0, &Leaf::Str(text.into()));
        }
    }
    builders.resize_with(catalog.fields.len(), || None);
    let overflowed = overflow.len() as u64;

    let mut columns: Vec<ArrayRef> = Vec::with_capacity(4 + builders.len());
    let times: Vec<i64> = records.iter().map(|record| record.event_time_ms).collect();
    let ingest: Vec<i64> = records.iter().map(|record| record.ingest_time_ms).collect();
    let offsets = records
        .iter()
        .map(|record| {
            i64::try_from(record.offset).map_err(|_| LakeError::OffsetRange {
                stream: stream.clone(),
                partition,
                offset: record.offset,
            })
        })
        .collect::<Result<Vec<i64>, LakeError>>()?;
    columns.push(Arc::new(
        TimestampMillisecondArray::from(times).with_timezone("UTC"),
    ));
    columns.push(Arc::new(
        TimestampMillisecondArray::from(ingest).with_timezone("UTC"),
    ));
    let partition_value = i32::try_from(partition).map_err(|_| LakeError::PartitionRange {
        stream: stream.clone(),
        partition,
    })?;
    columns.push(Arc::new(Int32Array::from(vec![
        partition_value;
        records.len()
    ])));
    columns.push(Arc::new(Int64Array::from(offsets)));
    columns.extend(
        builders
            .into_iter()
            .zip(&catalog.fields)
            .map(|(builder, field)| {
                match builder {
                    Some(builder) => builder.finish(records.len()),
                    // A column of the catalog without a value in this batch.
                    None => new_null_array(&field.column_type.data_type(), records.len()),
                }
            }),
    );
    let options = RecordBatchOptions::new().with_row_count(Some(records.len()));
    let batch = RecordBatch::try_new_with_options(catalog.schema(), columns, &options)
        .map_err(LakeError::arrow(&stream))?;
    Ok(Converted {
        batch,
        conflicts,
        overflowed,
        unreadable,
    })
}

/// Rebuilds, at its column's current type, each builder whose column was widened since the
/// builder was made; `rows` rows have been appended so far.
fn widen_builders(builders: &mut [Option<ColumnBuilder>], catalog: &Catalog, rows: usize) {
    for (slot, field) in builders.iter_mut().zip(&catalog.fields) {
        if let Some(builder) = slot.take_if(|builder| builder.column_type() != field.column_type) {
            *slot = Some(builder.widened(field.column_type, rows));
        }
    }
}

/// Reshapes `batch` to `schema`: columns are matched by name, cast where a column was widened
/// since the batch was built, and filled with nulls where the column is newer than the batch.
pub(crate) fn align(
    batch: &RecordBatch,
    schema: &SchemaRef,
    stream: &str,
) -> Result<RecordBatch, LakeError> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => cast(column, field.data_type()).map_err(LakeError::arrow(stream)),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
        .map_err(LakeError::arrow(stream))
}
