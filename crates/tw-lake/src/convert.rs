//! Turning a batch of stored JSON records into one Arrow `RecordBatch` (once, at `handle`
//! time, straight from the payload bytes), and reshaping buffered batches to a later, wider
//! schema.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int32Array, Int64Array, Int64Builder,
    RecordBatch, RecordBatchOptions, StringBuilder, TimestampMillisecondArray, new_null_array,
};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use serde_json::{Map, Value};
use tw_core::{Record, StreamName};

use crate::catalog::{Catalog, ColumnType, Placement};
use crate::flatten::{Leaf, for_each_leaf};
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

/// A flattened value and the event column it goes into. The values of a batch are held in
/// row order, the row boundaries aside, until the catalog has seen every record.
struct Placed<'v> {
    position: usize,
    leaf: Leaf<'v>,
}

/// A value kept in `_overflow` (column limit reached, or a second field of one event under
/// the same name): its row, its name, the value.
type Overflowed<'v> = (usize, String, Leaf<'v>);

/// Converts `records` of one partition. Updates `catalog` first (new columns, widenings), so
/// that every value fits the resulting schema. A record that is not valid JSON is left out and
/// reported in [`Converted::unreadable`]: the runner checked only that each payload starts
/// as an object, and the JSON is read here, once.
pub(crate) fn convert<'a>(
    catalog: &mut Catalog,
    max_columns: usize,
    partition: u32,
    records: &[&'a Record],
    now_ms: i64,
) -> Result<Converted, LakeError> {
    let stream = catalog.stream.to_string();
    let mut conflicts: BTreeMap<String, u64> = BTreeMap::new();
    let mut unreadable = Vec::new();
    // Sized after the first record (a batch's events mostly have the same fields): grown by
    // doubling, this vector of a few MB was copied and page-faulted in anew at every step.
    let mut slots: Vec<Placed<'a>> = Vec::new();
    // Where each readable record's values end in `slots`.
    let mut row_ends: Vec<usize> = Vec::with_capacity(records.len());
    let mut overflow: Vec<Overflowed<'a>> = Vec::new();
    let mut seen = vec![usize::MAX; catalog.fields.len()];
    let mut path = String::new();
    // Columns that conflicted in the current record: counted once the record proves readable.
    let mut record_conflicts: Vec<String> = Vec::new();
    // The column of each typed leaf of the previous readable record, in document order (and
    // of the current one, being filled): the guesses for the next record's leaves.
    let (mut previous_shape, mut shape): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    for (index, &record) in records.iter().enumerate() {
        let row = row_ends.len();
        let mark = catalog.mark();
        let (first_slot, first_overflow) = (slots.len(), overflow.len());
        let mut place = |name: &str, leaf: Leaf<'a>| {
            let Some(kind) = leaf.column_type() else {
                // A null carries no type: it neither creates nor widens a column.
                return;
            };
            let guess = previous_shape.get(shape.len()).copied();
            let placement = catalog.observe(name, guess, kind, max_columns, now_ms);
            shape.push(match placement.0 {
                Placement::Column(position) => position,
                Placement::Overflow => usize::MAX,
            });
            match placement {
                (Placement::Column(position), conflict) => {
                    if conflict {
                        record_conflicts.push(name.to_string());
                    }
                    if seen.len() <= position {
                        seen.resize(position + 1, usize::MAX);
                    }
                    if seen[position] == row {
                        // Two fields of one event flatten to the same name (`{"a.b":1,"a":{"b":2}}`
                        // or a repeated key): the first wins the column, the other is kept in
                        // `_overflow`.
                        overflow.push((row, name.to_string(), leaf));
                    } else {
                        seen[position] = row;
                        slots.push(Placed { position, leaf });
                    }
                }
                (Placement::Overflow, _) => overflow.push((row, name.to_string(), leaf)),
            }
        };
        match for_each_leaf(&record.payload, &mut path, &mut place) {
            Ok(()) => {
                for column in record_conflicts.drain(..) {
                    *conflicts.entry(column).or_default() += 1;
                }
                row_ends.push(slots.len());
                if row == 0 {
                    // A value takes at least 4 bytes of JSON (`"a":1,`): never more than the
                    // bytes left allow, should the first event be much wider than the others.
                    let bytes_left: usize = records[index + 1..]
                        .iter()
                        .map(|record| record.payload.len())
                        .sum();
                    let expected = slots.len() * (records.len() - index - 1);
                    slots.reserve(expected.min(bytes_left / 4));
                }
                std::mem::swap(&mut previous_shape, &mut shape);
            }
            Err(error) => {
                // Undo what the readable part did, so the next record reuses this row.
                for placed in slots.drain(first_slot..) {
                    seen[placed.position] = usize::MAX;
                }
                overflow.truncate(first_overflow);
                record_conflicts.clear();
                catalog.rollback(mark);
                seen.truncate(catalog.fields.len());
                unreadable.push((index, error.to_string()));
            }
        }
        shape.clear();
    }
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
    let overflow_position = (!overflow.is_empty()).then(|| catalog.overflow_position(now_ms));

    // Each builder sized for its column up front, instead of grown by doubling: the text
    // bytes of its string values (other values written as text grow it past that).
    let mut text_bytes = vec![0usize; catalog.fields.len()];
    for placed in &slots {
        if let Leaf::Str(text) = &placed.leaf {
            text_bytes[placed.position] += text.len();
        }
    }
    let mut builders: Vec<ColumnBuilder> = catalog
        .fields
        .iter()
        .zip(text_bytes)
        .map(|(field, bytes)| {
            ColumnBuilder::with_capacity(field.column_type, row_ends.len(), bytes)
        })
        .collect();
    let mut row_start = 0;
    for (row, &row_end) in row_ends.iter().enumerate() {
        for placed in &slots[row_start..row_end] {
            builders[placed.position].push(row, &placed.leaf);
        }
        row_start = row_end;
    }
    if let Some(position) = overflow_position {
        for rows in overflow.chunk_by(|a, b| a.0 == b.0) {
            let mut object = Map::new();
            for (_, name, leaf) in rows {
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
            builders[position].push(rows[0].0, &Leaf::Str(text.into()));
        }
    }
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
            .map(|builder| builder.finish(records.len())),
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

/// A builder for one event column that pads skipped rows with nulls.
enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
}

impl ColumnBuilder {
    /// A builder for `rows` rows, with room for `text_bytes` bytes of strings.
    fn with_capacity(column_type: ColumnType, rows: usize, text_bytes: usize) -> Self {
        match column_type {
            ColumnType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(rows)),
            ColumnType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(rows)),
            ColumnType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(rows)),
            ColumnType::Utf8 => ColumnBuilder::Utf8(StringBuilder::with_capacity(rows, text_bytes)),
        }
    }

    fn len(&self) -> usize {
        match self {
            ColumnBuilder::Boolean(b) => b.len(),
            ColumnBuilder::Int64(b) => b.len(),
            ColumnBuilder::Float64(b) => b.len(),
            ColumnBuilder::Utf8(b) => b.len(),
        }
    }

    fn pad_to(&mut self, rows: usize) {
        let missing = rows.saturating_sub(self.len());
        if missing == 0 {
            // The usual case (a field every event has): no null to append.
            return;
        }
        match self {
            ColumnBuilder::Boolean(b) => b.append_nulls(missing),
            ColumnBuilder::Int64(b) => b.append_nulls(missing),
            ColumnBuilder::Float64(b) => b.append_nulls(missing),
            ColumnBuilder::Utf8(b) => b.append_nulls(missing),
        }
    }

    /// Appends `leaf` as row `row`. The catalog was widened for every value beforehand, so
    /// each arm receives a value of its type; Utf8 takes anything as JSON text.
    fn push(&mut self, row: usize, leaf: &Leaf<'_>) {
        // Checked here, not only in `pad_to`, which is not inlined: most columns are filled
        // by every event and need no padding.
        if self.len() < row {
            self.pad_to(row);
        }
        match (self, leaf) {
            (ColumnBuilder::Boolean(b), Leaf::Bool(flag)) => b.append_value(*flag),
            (ColumnBuilder::Int64(b), Leaf::Int(number)) => b.append_value(*number),
            (ColumnBuilder::Float64(b), Leaf::Float(number)) => b.append_value(*number),
            (ColumnBuilder::Float64(b), Leaf::Int(number)) => b.append_value(*number as f64),
            (ColumnBuilder::Utf8(b), other) => b.append_value(other.to_text()),
            // Unreachable given the widening above; a null keeps the row count right.
            (other, _) => other.pad_to(row + 1),
        }
    }

    fn finish(mut self, rows: usize) -> ArrayRef {
        self.pad_to(rows);
        match self {
            ColumnBuilder::Boolean(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8(mut b) => Arc::new(b.finish()),
        }
    }
}
