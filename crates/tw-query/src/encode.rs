//! Result encoders: JSON rows, CSV, Arrow IPC stream, and a text table for the CLI.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder};
use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::WriterBuilder as JsonWriterBuilder;
use datafusion::arrow::json::writer::{EncoderOptions, JsonArray, make_encoder};
use datafusion::arrow::util::pretty::pretty_format_batches;
use serde_json::{Map, Value, json};

use crate::engine::QueryResult;
use crate::error::QueryError;

fn encode_error(
    format: &'static str,
) -> impl Fn(datafusion::arrow::error::ArrowError) -> QueryError {
    move |e| QueryError::Encode {
        format,
        message: e.to_string(),
    }
}

/// How a result is written for a client ([`crate::QueryEngine::query_encoded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFormat {
    /// The JSON document of [`to_json_document`].
    Json,
    /// CSV with a header line ([`to_csv`]).
    Csv,
    /// An Arrow IPC stream ([`to_arrow_ipc`]).
    ArrowIpc,
}

/// A finished query's result, written in one [`ResultFormat`].
#[derive(Debug, Clone)]
pub struct EncodedResult {
    /// The encoded result.
    pub body: Vec<u8>,
    /// Number of rows written.
    pub row_count: usize,
    /// Whether rows were cut at `max_result_rows`.
    pub truncated: bool,
    /// Wall-clock time of planning and execution.
    pub elapsed_ms: u64,
}

impl EncodedResult {
    /// Writes `result` as `format`.
    pub fn encode(result: &QueryResult, format: ResultFormat) -> Result<Self, QueryError> {
        let body = match format {
            ResultFormat::Json => to_json_document(result)?,
            ResultFormat::Csv => to_csv(&result.batches)?,
            ResultFormat::ArrowIpc => to_arrow_ipc(&result.batches, &result.schema)?,
        };
        Ok(Self {
            body,
            row_count: result.num_rows(),
            truncated: result.truncated,
            elapsed_ms: result.elapsed_ms,
        })
    }
}

/// The JSON answer of the query API, in one pass from the batches:
/// `{"columns":[{"name":..,"type":..}],"elapsed_ms":..,"row_count":..,"rows":[..],"truncated":..}`
/// (keys in this order, no spaces), `rows` as in [`to_json_rows`].
pub fn to_json_document(result: &QueryResult) -> Result<Vec<u8>, QueryError> {
    let columns: Vec<Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"columns\":");
    serde_json::to_writer(&mut out, &columns).map_err(|e| QueryError::Encode {
        format: "json",
        message: e.to_string(),
    })?;
    out.extend_from_slice(
        format!(
            ",\"elapsed_ms\":{},\"row_count\":{},\"rows\":",
            result.elapsed_ms,
            result.num_rows()
        )
        .as_bytes(),
    );
    write_json_rows(&result.batches, &mut out)?;
    out.extend_from_slice(format!(",\"truncated\":{}}}", result.truncated).as_bytes());
    Ok(out)
}

/// One JSON object per row, every column present (NULL as `null`), timestamps as RFC 3339.
pub fn to_json_rows(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, QueryError> {
    let mut bytes = Vec::new();
    write_json_rows(batches, &mut bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| QueryError::Encode {
        format: "json",
        message: e.to_string(),
    })
}

/// Appends the rows to `out` as one JSON array of objects, keys in column order (`[]`
/// without rows).
fn write_json_rows(batches: &[RecordBatch], out: &mut Vec<u8>) -> Result<(), QueryError> {
    // A type JSON has no encoding for (a union, a map keyed by numbers) is the query's doing:
    // name the column rather than fail as an internal error.
    let options = json_options();
    for batch in batches {
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            make_encoder(field, column.as_ref(), &options)
                .map_err(unrepresentable("json", field))?;
        }
    }
    if batches.iter().all(|b| b.num_rows() == 0) {
        out.extend_from_slice(b"[]");
        return Ok(());
    }
    let mut writer = JsonWriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(out);
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).map_err(encode_error("json"))?;
    writer.finish().map_err(encode_error("json"))
}

/// CSV with a header line (taken from the first batch: a result without rows is one empty
/// batch, see [`crate::QueryResult::batches`]); timestamps as RFC 3339; a list, struct or map
/// value as its JSON text (`["a","b"]`, `{"k":1}`, as in the JSON output) in one cell, quoted
/// as CSV needs.
pub fn to_csv(batches: &[RecordBatch]) -> Result<Vec<u8>, QueryError> {
    let mut writer = CsvWriterBuilder::new().with_header(true).build(Vec::new());
    for batch in batches {
        let batch = nested_as_json_text(batch)?;
        writer.write(&batch).map_err(encode_error("csv"))?;
    }
    Ok(writer.into_inner())
}

/// The options of the JSON output, also used for nested values in CSV.
fn json_options() -> EncoderOptions {
    EncoderOptions::default().with_explicit_nulls(true)
}

/// `batch` with every nested column (which the CSV writer refuses) as UTF-8 JSON text; NULL
/// stays NULL.
fn nested_as_json_text(batch: &RecordBatch) -> Result<RecordBatch, QueryError> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(batch.clone());
    }
    let options = json_options();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !field.data_type().is_nested() {
            fields.push(Arc::clone(field));
            columns.push(Arc::clone(column));
            continue;
        }
        let mut encoder = make_encoder(field, column.as_ref(), &options)
            .map_err(unrepresentable("csv", field))?;
        let mut text = StringBuilder::with_capacity(column.len(), column.len() * 16);
        let mut value = Vec::new();
        let nulls = column.logical_nulls();
        for row in 0..column.len() {
            if nulls.as_ref().is_some_and(|n| n.is_null(row)) || encoder.is_null(row) {
                text.append_null();
                continue;
            }
            value.clear();
            encoder.encode(row, &mut value);
            let value = std::str::from_utf8(&value).map_err(|e| QueryError::Encode {
                format: "csv",
                message: format!("column {}: {e}", field.name()),
            })?;
            text.append_value(value);
        }
        fields.push(Arc::new(
            Field::new(field.name(), DataType::Utf8, true).with_metadata(field.metadata().clone()),
        ));
        columns.push(Arc::new(text.finish()));
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    RecordBatch::try_new(schema, columns).map_err(encode_error("csv"))
}

/// A column whose type `format` cannot hold: the user's to change (a cast, another format).
fn unrepresentable(
    format: &'static str,
    field: &FieldRef,
) -> impl FnOnce(datafusion::arrow::error::ArrowError) -> QueryError {
    move |e| QueryError::Unrepresentable {
        format,
        column: field.name().clone(),
        data_type: field.data_type().to_string(),
        message: e.to_string(),
    }
}

/// The Arrow IPC stream format (schema first, so an empty result still carries its columns).
pub fn to_arrow_ipc(batches: &[RecordBatch], schema: &SchemaRef) -> Result<Vec<u8>, QueryError> {
    let mut writer =
        StreamWriter::try_new(Vec::new(), schema).map_err(encode_error("arrow ipc"))?;
    for batch in batches {
        writer.write(batch).map_err(encode_error("arrow ipc"))?;
    }
    writer.finish().map_err(encode_error("arrow ipc"))?;
    writer.into_inner().map_err(encode_error("arrow ipc"))
}

/// A boxed text table, for the CLI.
pub fn to_pretty_table(batches: &[RecordBatch]) -> Result<String, QueryError> {
    pretty_format_batches(batches)
        .map(|table| table.to_string())
        .map_err(encode_error("table"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::arrow::ipc::reader::StreamReader;
    use serde_json::json;

    use super::*;

    fn sample() -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "_time",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new("eventName", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(
                    TimestampMillisecondArray::from(vec![Some(1_704_103_200_123), None])
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec![
                    Some("ConsoleLogin"),
                    Some("a,\"b\""),
                ])),
                Arc::new(Int64Array::from(vec![None, Some(7)])),
            ],
        )
        .expect("valid batch");
        (schema, vec![batch])
    }

    #[test]
    fn json_rows_keep_nulls_and_format_times() {
        let (_, batches) = sample();
        let rows = to_json_rows(&batches).expect("encodes");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            Value::Object(rows[0].clone()),
            json!({"_time": "2024-01-01T10:00:00.123Z", "eventName": "ConsoleLogin", "n": null})
        );
        assert_eq!(
            Value::Object(rows[1].clone()),
            json!({"_time": null, "eventName": "a,\"b\"", "n": 7})
        );
        assert!(to_json_rows(&[]).expect("empty encodes").is_empty());
    }

    fn result(schema: SchemaRef, batches: Vec<RecordBatch>, truncated: bool) -> QueryResult {
        QueryResult {
            schema,
            batches,
            truncated,
            elapsed_ms: 7,
        }
    }

    /// The document as the route built it before it was written in one pass: rows parsed back
    /// into values, the whole serialised again.
    fn document_via_values(result: &QueryResult) -> String {
        let rows = to_json_rows(&result.batches).expect("rows");
        let columns: Vec<Value> = result
            .schema
            .fields()
            .iter()
            .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
            .collect();
        json!({
            "columns": columns,
            "rows": rows,
            "row_count": rows.len(),
            "truncated": result.truncated,
            "elapsed_ms": result.elapsed_ms,
        })
        .to_string()
    }

    #[test]
    fn json_document_is_written_in_one_pass_with_the_same_bytes() {
        let (schema, batches) = sample();
        let cut = result(Arc::clone(&schema), batches, true);
        let text = String::from_utf8(to_json_document(&cut).expect("encodes")).expect("utf8");
        // The sample's columns are in alphabetical order, as the parsed-back rows were.
        assert_eq!(text, document_via_values(&cut));
        assert!(
            text.contains(
                r#""row_count":2,"rows":[{"_time":"2024-01-01T10:00:00.123Z","eventName":"ConsoleLogin","n":null},"#
            ) && text.ends_with(r#""truncated":true}"#),
            "{text}"
        );

        let empty = result(
            Arc::clone(&schema),
            vec![RecordBatch::new_empty(Arc::clone(&schema))],
            false,
        );
        let text = String::from_utf8(to_json_document(&empty).expect("encodes")).expect("utf8");
        assert_eq!(text, document_via_values(&empty));
        assert!(text.contains(r#""row_count":0,"rows":[],"#), "{text}");
    }

    #[test]
    fn json_document_rows_keep_column_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("z", DataType::Int64, true),
            Field::new("a", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1)])),
                Arc::new(StringArray::from(vec![Some("x")])),
            ],
        )
        .expect("valid batch");
        let doc = result(schema, vec![batch], false);
        let text = String::from_utf8(to_json_document(&doc).expect("encodes")).expect("utf8");
        assert!(text.contains(r#""rows":[{"z":1,"a":"x"}]"#), "{text}");
        let parsed: Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(
            parsed,
            serde_json::from_str::<Value>(&document_via_values(&doc)).expect("json")
        );
    }

    #[test]
    fn csv_has_header_and_quotes() {
        let (_, batches) = sample();
        let text = String::from_utf8(to_csv(&batches).expect("encodes")).expect("utf8");
        assert_eq!(
            text,
            "_time,eventName,n\n2024-01-01T10:00:00.123Z,ConsoleLogin,\n,\"a,\"\"b\"\"\",7\n"
        );
    }

    #[test]
    fn ipc_round_trips() {
        let (schema, batches) = sample();
        let bytes = to_arrow_ipc(&batches, &schema).expect("encodes");
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).expect("reads");
        assert_eq!(reader.schema(), schema);
        let read: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("batches");
        assert_eq!(read, batches);
    }

    #[test]
    fn pretty_table_shows_values() {
        let (_, batches) = sample();
        let table = to_pretty_table(&batches).expect("formats");
        assert!(table.contains("| ConsoleLogin |"), "{table}");
        assert!(
            table.lines().next().is_some_and(|l| l.starts_with("+---")),
            "{table}"
        );
    }
}
