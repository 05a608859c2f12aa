//! Events rebuilt from lake rows: the inverse of [`crate::flatten`], for the readers that need
//! events rather than columns (a rule backtest over history the log no longer holds, or that
//! was imported into the lake).
//!
//! Each column with a value in the row goes back to its place: a dotted name is a path of
//! nested objects (`a.b` → `{"a": {"b": …}}`), a renamed top-level name gets its name back
//! (`year_` → `year`), `_value` is a top-level value that was not an object, and the fields of
//! `_overflow` (column limit reached, or a name repeated in one event) are put back too, a
//! repeated name's later value winning as it does when the event is parsed.
//!
//! What the columns cannot tell, and so differs from the event as sent:
//! - arrays and empty objects are stored as compact JSON text in string columns: a string
//!   that is such text (starts with `[` or `{` and parses) comes back as the array or object,
//!   so a string field whose value was itself that text comes back parsed;
//! - a value stored as text after a type conflict (see `catalog`) comes back as that text;
//! - `null` fields and empty objects inside objects are not stored: they come back absent;
//! - a key that contains a dot comes back as nested objects; an event key that was literally
//!   `year_` (not renamed) comes back as `year`.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimestampMillisecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use serde_json::{Map, Value};
use tw_core::{Offset, PartitionId};

use crate::LakeError;
use crate::catalog::{
    INGEST_TIME_COLUMN, OFFSET_COLUMN, OVERFLOW_COLUMN, PARTITION_COLUMN, TIME_COLUMN,
};
use crate::flatten::is_reserved;

/// The Hive partition columns a query over the lake adds to every row.
const PARTITION_COLUMNS: [&str; 4] = ["year", "month", "day", "hour"];

/// The column of a top-level value that was not an object (see `flatten::column_name`).
const VALUE_COLUMN: &str = "_value";

/// One lake row as an event with its place in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct LakeRow {
    /// `_partition`.
    pub partition: PartitionId,
    /// `_offset`.
    pub offset: Offset,
    /// `_time`: event time, Unix milliseconds.
    pub time_ms: i64,
    /// `_ingest_time`, Unix milliseconds.
    pub ingest_time_ms: i64,
    /// The event rebuilt from the row's columns.
    pub event: Value,
}

/// The rows of `batch` (a query result over a stream's table that includes its four
/// metadata columns) as events; see the module documentation for what comes back.
pub fn rows_to_events(batch: &RecordBatch) -> Result<Vec<LakeRow>, LakeError> {
    let schema = batch.schema();
    let column = |name: &str| {
        schema
            .index_of(name)
            .map(|index| batch.column(index).clone())
            .map_err(|_| LakeError::RowShape(format!("the rows lack the {name} column")))
    };
    let times = column(TIME_COLUMN)?;
    let ingest_times = column(INGEST_TIME_COLUMN)?;
    let partitions = column(PARTITION_COLUMN)?;
    let offsets = column(OFFSET_COLUMN)?;
    let (Some(times), Some(ingest_times), Some(partitions), Some(offsets)) = (
        times.as_primitive_opt::<TimestampMillisecondType>(),
        ingest_times.as_primitive_opt::<TimestampMillisecondType>(),
        partitions.as_primitive_opt::<Int32Type>(),
        offsets.as_primitive_opt::<Int64Type>(),
    ) else {
        return Err(LakeError::RowShape(
            "the rows' metadata columns have unexpected types".to_string(),
        ));
    };
    let mut event_columns = Vec::new();
    let mut overflow = None;
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let name = field.name().as_str();
        match name {
            TIME_COLUMN | INGEST_TIME_COLUMN | PARTITION_COLUMN | OFFSET_COLUMN => {}
            _ if PARTITION_COLUMNS.contains(&name) => {}
            OVERFLOW_COLUMN => overflow = Some(array.clone()),
            _ => event_columns.push((path_of(name), array.clone())),
        }
    }
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut event = Value::Object(Map::new());
        for (path, array) in &event_columns {
            if let Some(value) = value_at(array, row) {
                place(&mut event, path, value);
            }
        }
        // Its text, an object, is parsed by `value_at` like any object stored as text.
        if let Some(Value::Object(fields)) = overflow.as_ref().and_then(|a| value_at(a, row)) {
            for (name, value) in fields {
                // A repeated name was suffixed `#2`, `#3`… in the order the event held them.
                let name = name.split_once('#').map_or(name.as_str(), |(base, _)| base);
                place(&mut event, &path_of(name), value);
            }
        }
        let (Some(partition), Some(offset)) = (
            partitions.is_valid(row).then(|| partitions.value(row)),
            offsets.is_valid(row).then(|| offsets.value(row)),
        ) else {
            return Err(LakeError::RowShape(format!(
                "row {row} has no _partition or _offset"
            )));
        };
        rows.push(LakeRow {
            partition: PartitionId::try_from(partition).unwrap_or_default(),
            offset: Offset::try_from(offset).unwrap_or_default(),
            time_ms: times.value(row),
            ingest_time_ms: ingest_times.value(row),
            event,
        });
    }
    Ok(rows)
}

/// Where a column's values go: its dotted path, the first name restored if it was renamed;
/// empty for `_value` (the whole event).
fn path_of(column: &str) -> Vec<String> {
    if column == VALUE_COLUMN {
        return Vec::new();
    }
    let mut path: Vec<String> = column.split('.').map(str::to_string).collect();
    if let Some(first) = path.first_mut()
        && let Some(original) = first.strip_suffix('_')
        && is_reserved(original)
    {
        first.truncate(original.len());
    }
    path
}

/// Puts `value` at `path` in `event`, making the objects on the way. Where the way is taken
/// by a value that is not an object (an event with both `a` and `a.b` as keys), the value
/// goes under its dotted name at the deepest object reached, so that nothing is lost.
fn place(event: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        *event = value;
        return;
    };
    let mut at = event;
    for (depth, name) in parents.iter().enumerate() {
        let Value::Object(object) = at else { return };
        let next = object
            .entry(name.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            object.insert(path[depth..].join("."), value);
            return;
        }
        at = object.get_mut(name).expect("inserted above");
    }
    if let Value::Object(object) = at {
        object.insert(last.clone(), value);
    }
}

/// The value of `array` at `row` as JSON; `None` for null.
fn value_at(array: &ArrayRef, row: usize) -> Option<Value> {
    if array.is_null(row) {
        return None;
    }
    macro_rules! number {
        ($t:ty) => {
            Some(Value::from(array.as_primitive::<$t>().value(row)))
        };
    }
    match array.data_type() {
        DataType::Boolean => Some(Value::Bool(array.as_boolean().value(row))),
        DataType::Int8 => number!(Int8Type),
        DataType::Int16 => number!(Int16Type),
        DataType::Int32 => number!(Int32Type),
        DataType::Int64 => number!(Int64Type),
        DataType::UInt8 => number!(UInt8Type),
        DataType::UInt16 => number!(UInt16Type),
        DataType::UInt32 => number!(UInt32Type),
        DataType::UInt64 => number!(UInt64Type),
        DataType::Float32 => number!(Float32Type),
        DataType::Float64 => number!(Float64Type),
        DataType::Utf8 => Some(text(array.as_string::<i32>().value(row))),
        DataType::LargeUtf8 => Some(text(array.as_string::<i64>().value(row))),
        DataType::Utf8View => Some(text(array.as_string_view().value(row))),
        // Dictionary-encoded strings, and anything else: as the text arrow writes for it.
        _ => {
            let one = array.slice(row, 1);
            let cast = arrow::compute::cast(&one, &DataType::Utf8).ok()?;
            Some(text(cast.as_string::<i32>().value(0)))
        }
    }
}

/// A string column's value: an array or object stored as its JSON text comes back parsed.
fn text(value: &str) -> Value {
    if matches!(value.as_bytes().first(), Some(b'[' | b'{'))
        && let Ok(parsed @ (Value::Array(_) | Value::Object(_))) =
            serde_json::from_str::<Value>(value)
    {
        return parsed;
    }
    Value::String(value.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        BooleanArray, Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
    };
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use serde_json::json;

    use super::*;

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let timestamp = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let mut fields = vec![
            Field::new(TIME_COLUMN, timestamp.clone(), false),
            Field::new(INGEST_TIME_COLUMN, timestamp, false),
            Field::new(PARTITION_COLUMN, DataType::Int32, false),
            Field::new(OFFSET_COLUMN, DataType::Int64, false),
        ];
        let rows = columns[0].1.len();
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::from(vec![1000; rows]).with_timezone("UTC")),
            Arc::new(TimestampMillisecondArray::from(vec![2000; rows]).with_timezone("UTC")),
            Arc::new(Int32Array::from(vec![3; rows])),
            Arc::new(Int64Array::from((0..rows as i64).collect::<Vec<_>>())),
        ];
        for (name, array) in columns {
            fields.push(Field::new(name, array.data_type().clone(), true));
            arrays.push(array);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    }

    #[test]
    fn rows_come_back_as_the_events_they_were_flattened_from() {
        let rows = rows_to_events(&batch(vec![
            (
                "userIdentity.userName",
                Arc::new(StringArray::from(vec![Some("alice"), None])),
            ),
            (
                "userIdentity.type",
                Arc::new(StringArray::from(vec![Some("IAMUser"), Some("Root")])),
            ),
            ("bytes", Arc::new(Int64Array::from(vec![Some(5), None]))),
            ("ratio", Arc::new(Float64Array::from(vec![None, Some(0.5)]))),
            ("readOnly", Arc::new(BooleanArray::from(vec![true, false]))),
            (
                "resources",
                Arc::new(StringArray::from(vec![Some(r#"[{"arn":"a"}]"#), None])),
            ),
            (
                "year_",
                Arc::new(StringArray::from(vec![Some("2026"), None])),
            ),
            ("year", Arc::new(StringArray::from(vec!["2026", "2026"]))),
            (
                "_overflow",
                Arc::new(StringArray::from(vec![
                    None,
                    Some(r#"{"bytes":7,"x.y":"z"}"#),
                ])),
            ),
        ]))
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].partition, rows[0].offset, rows[0].time_ms),
            (3, 0, 1000)
        );
        assert_eq!(rows[0].ingest_time_ms, 2000);
        assert_eq!(
            rows[0].event,
            json!({
                "userIdentity": {"userName": "alice", "type": "IAMUser"},
                "bytes": 5,
                "readOnly": true,
                "resources": [{"arn": "a"}],
                "year": "2026",
            })
        );
        assert_eq!(
            rows[1].event,
            json!({
                "userIdentity": {"type": "Root"},
                "ratio": 0.5,
                "readOnly": false,
                "bytes": 7,
                "x": {"y": "z"},
            })
        );
    }

    #[test]
    fn a_top_level_value_and_colliding_paths_lose_nothing() {
        let rows = rows_to_events(&batch(vec![(
            "_value",
            Arc::new(StringArray::from(vec!["plain text"])),
        )]))
        .unwrap();
        assert_eq!(rows[0].event, json!("plain text"));
        let rows = rows_to_events(&batch(vec![
            ("a", Arc::new(Int64Array::from(vec![1]))),
            ("a.b", Arc::new(Int64Array::from(vec![2]))),
        ]))
        .unwrap();
        assert_eq!(rows[0].event, json!({"a": 1, "a.b": 2}));
    }

    #[test]
    fn rows_without_the_metadata_columns_are_an_error() {
        let schema = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(Int64Array::from(vec![1])) as ArrayRef],
        )
        .unwrap();
        let error = rows_to_events(&batch).unwrap_err().to_string();
        assert!(error.contains("_time"), "{error}");
    }
}
