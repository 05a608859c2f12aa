//! Schema inference, widening, the catalog, reserved names and the overflow column.

mod common;

use arrow::datatypes::{DataType, TimeUnit};
use common::*;
use serde_json::json;
use tw_lake::Lake;
use tw_pipeline::Consumer;

fn column_types(schema: &arrow::datatypes::Schema) -> Vec<(String, DataType)> {
    schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect()
}

#[test]
fn infers_and_widens_types_and_counts_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    let counters = Counters::default();
    metrics::with_local_recorder(&counters, || {
        writer.start(&Default::default()).unwrap();
        let first = [(
            T0,
            json!({"n": 1, "f": 1, "b": true, "s": "x", "nested": {"k": 2}, "arr": [1, "a"], "e": {}}),
        )];
        writer.handle(&batch("ct", 0, 0, &first)).unwrap();
        let second = [(
            T0,
            json!({"n": 2.5, "f": "text", "b": 3, "s": "y", "nested": {"k": 3}, "z": null}),
        )];
        writer.handle(&batch("ct", 0, 1, &second)).unwrap();
        let third = [(T0, json!({"s": false}))];
        writer.handle(&batch("ct", 0, 2, &third)).unwrap();
    });

    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let schema = lake.table_schema(&stream("ct")).unwrap();
    let mut event_columns = column_types(&schema)[4..].to_vec();
    event_columns.sort();
    assert_eq!(
        column_types(&schema)[..4],
        [
            ("_time".to_string(), ts.clone()),
            ("_ingest_time".to_string(), ts),
            ("_partition".to_string(), DataType::Int32),
            ("_offset".to_string(), DataType::Int64),
        ]
    );
    assert_eq!(
        event_columns,
        vec![
            ("arr".to_string(), DataType::Utf8),
            ("b".to_string(), DataType::Utf8),
            ("e".to_string(), DataType::Utf8),
            ("f".to_string(), DataType::Utf8),
            ("n".to_string(), DataType::Float64),
            ("nested.k".to_string(), DataType::Int64),
            ("s".to_string(), DataType::Utf8),
        ],
        "a field only ever null (`z`) gets no column"
    );

    let snapshot = lake.hot_snapshot(&stream("ct"));
    assert_eq!(snapshot.schema, schema);
    assert_eq!(column_text(&snapshot.batches, "n"), ["1.0", "2.5", "null"]);
    assert_eq!(column_text(&snapshot.batches, "f"), ["1", "text", "null"]);
    assert_eq!(column_text(&snapshot.batches, "b"), ["true", "3", "null"]);
    assert_eq!(column_text(&snapshot.batches, "s"), ["x", "y", "false"]);
    assert_eq!(
        column_text(&snapshot.batches, "arr"),
        [r#"[1,"a"]"#, "null", "null"]
    );
    assert_eq!(column_text(&snapshot.batches, "e"), ["{}", "null", "null"]);
    assert_eq!(
        counters.get("tidewatch_lake_type_conflicts_total{stream=ct,column=f}"),
        1
    );
    assert_eq!(
        counters.get("tidewatch_lake_type_conflicts_total{stream=ct,column=b}"),
        1
    );
    assert_eq!(
        counters.get("tidewatch_lake_type_conflicts_total{stream=ct,column=s}"),
        1
    );
    assert_eq!(
        counters.get("tidewatch_lake_type_conflicts_total{stream=ct,column=n}"),
        0,
        "int→float is no conflict"
    );

    // The files hold the same, widened, values.
    writer.flush().unwrap();
    let files = parquet_files(&stream_dir(&lake, "ct"));
    assert_eq!(files.len(), 1);
    let batches = read_parquet(&files[0]);
    assert_eq!(column_text(&batches, "b"), ["true", "3", "null"]);
    assert_eq!(column_text(&batches, "n"), ["1.0", "2.5", "null"]);
}

#[test]
fn catalog_is_persisted_before_files_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    writer
        .handle(&batch(
            "ct",
            0,
            0,
            &[(T0, json!({"a": 1, "b": {"c": "x"}}))],
        ))
        .unwrap();
    writer
        .handle(&batch("ct", 1, 0, &[(T0, json!({"a": 1.5, "d": true}))]))
        .unwrap();
    writer
        .handle(&batch("web", 0, 0, &[(T0, json!({"u": "x"}))]))
        .unwrap();

    // Nothing is flushed yet, but the catalog already knows every column.
    assert!(parquet_files(dir.path()).is_empty());
    let text = std::fs::read_to_string(dir.path().join("_catalog/ct.json")).unwrap();
    let catalog: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(catalog["format_version"], 1);
    assert_eq!(
        catalog["history"],
        json!([{"column": "a", "from": "int64", "to": "float64", "at_ms": catalog["history"][0]["at_ms"]}])
    );
    let names: Vec<&str> = catalog["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b.c", "d"]);

    let reopened = open(dir.path());
    assert_eq!(reopened.streams(), vec![stream("ct"), stream("web")]);
    assert_eq!(
        reopened.table_schema(&stream("ct")),
        lake.table_schema(&stream("ct"))
    );
    assert_eq!(
        reopened.table_schema(&stream("web")),
        lake.table_schema(&stream("web"))
    );
    assert_eq!(reopened.table_schema(&stream("nope")), None);
    // A reloaded catalog keeps widening from where it was.
    let mut writer = reopened.writer();
    writer.start(&Default::default()).unwrap();
    writer
        .handle(&batch("ct", 0, 0, &[(T0, json!({"d": "text", "new": 1}))]))
        .unwrap();
    let schema = reopened.table_schema(&stream("ct")).unwrap();
    let names: Vec<&str> = schema
        .fields()
        .iter()
        .skip(4)
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["a", "b.c", "d", "new"]);
    assert_eq!(
        schema.field_with_name("d").unwrap().data_type(),
        &DataType::Utf8
    );
    assert_eq!(
        schema.field_with_name("a").unwrap().data_type(),
        &DataType::Float64
    );
}

#[test]
fn hive_and_metadata_names_are_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    writer
        .handle(&batch(
            "ct",
            0,
            0,
            &[(
                T0,
                json!({"year": 1999, "hour": "x", "_offset": 7, "date": {"day": 3}}),
            )],
        ))
        .unwrap();
    writer.flush().unwrap();
    let files = parquet_files(&stream_dir(&lake, "ct"));
    assert_eq!(files.len(), 1);
    let batches = read_parquet(&files[0]);
    let schema = batches[0].schema();
    let mut names: Vec<&str> = schema
        .fields()
        .iter()
        .skip(4)
        .map(|f| f.name().as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["_offset_", "date.day", "hour_", "year_"]);
    assert_eq!(column_text(&batches, "year_"), ["1999"]);
    assert_eq!(
        column_text(&batches, "_offset"),
        ["0"],
        "the metadata column keeps the log offset"
    );
    assert_eq!(column_text(&batches, "_offset_"), ["7"]);
}

#[test]
fn fields_beyond_the_column_limit_go_to_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open_with_column_limit(config(dir.path()), 2).unwrap();
    let mut writer = lake.writer();
    let counters = Counters::default();
    metrics::with_local_recorder(&counters, || {
        writer.start(&Default::default()).unwrap();
        writer
            .handle(&batch("ct", 0, 0, &[(T0, json!({"a": 1, "b": 2}))]))
            .unwrap();
        writer
            .handle(&batch(
                "ct",
                0,
                1,
                &[
                    (T0, json!({"a": 3, "c": {"d": [1]}, "e": "x"})),
                    (T0, json!({"b": 4})),
                ],
            ))
            .unwrap();
    });
    let snapshot = lake.hot_snapshot(&stream("ct"));
    let names: Vec<&str> = snapshot
        .schema
        .fields()
        .iter()
        .skip(4)
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["a", "b", "_overflow"]);
    assert_eq!(column_text(&snapshot.batches, "a"), ["1", "3", "null"]);
    assert_eq!(
        column_text(&snapshot.batches, "_overflow"),
        ["null", r#"{"c.d":[1],"e":"x"}"#, "null"]
    );
    assert_eq!(
        counters.get("tidewatch_lake_overflow_fields_total{stream=ct}"),
        2
    );
}

#[test]
fn colliding_flattened_names_keep_both_values() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    writer
        .handle(&batch(
            "ct",
            0,
            0,
            &[(T0, json!({"a.b": 1, "a": {"b": 2}}))],
        ))
        .unwrap();
    let snapshot = lake.hot_snapshot(&stream("ct"));
    let mut values = column_text(&snapshot.batches, "a.b");
    values.extend(column_text(&snapshot.batches, "_overflow"));
    values.sort();
    assert_eq!(values.len(), 2);
    assert!(
        values == ["1", r#"{"a.b":2}"#] || values == ["2", r#"{"a.b":1}"#],
        "{values:?}"
    );
}

/// The converter guesses each field's column from the previous event's shape: events whose
/// fields come in another order, with one more or one less, or with a null in between, still
/// put every value in its own column.
#[test]
fn events_of_changing_shapes_fill_the_right_columns() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    let events = [
        json!({"a": 1, "b": "x", "c": {"d": true}}),
        json!({"a": 2, "b": "y", "c": {"d": false}}),
        json!({"b": "z", "a": 3}),
        json!({"a": null, "b": "w", "c": {"d": true}, "e": 5}),
        json!({"e": 6, "c": {"d": false}, "a": 4, "b": "v"}),
        json!({"a": 5, "b": "u", "c": {"d": true}, "e": 7}),
    ];
    let events: Vec<(i64, serde_json::Value)> = events.into_iter().map(|e| (T0, e)).collect();
    writer.handle(&batch("ct", 0, 0, &events)).unwrap();
    let snapshot = lake.hot_snapshot(&stream("ct"));
    let column = |name| column_text(&snapshot.batches, name);
    assert_eq!(column("a"), ["1", "2", "3", "null", "4", "5"]);
    assert_eq!(column("b"), ["x", "y", "z", "w", "v", "u"]);
    assert_eq!(
        column("c.d"),
        ["true", "false", "null", "true", "false", "true"]
    );
    assert_eq!(column("e"), ["null", "null", "null", "5", "6", "7"]);
}

/// The converter fills column builders as it reads: a value that widens a column already
/// holding values of the same batch must carry those earlier values over, as their widened
/// form, with nulls where rows had none.
#[test]
fn a_column_widened_within_one_batch_keeps_its_earlier_values() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    writer.start(&Default::default()).unwrap();
    let events = [
        json!({"n": 1, "b": true, "f": 1.5, "s": "x"}),
        json!({"s": "y"}),
        json!({"n": 2.5, "b": 3, "f": "text", "s": "z"}),
        json!({"n": 4, "b": false, "f": 2, "s": 7}),
    ];
    let events: Vec<(i64, serde_json::Value)> = events.into_iter().map(|e| (T0, e)).collect();
    writer.handle(&batch("ct", 0, 0, &events)).unwrap();
    let snapshot = lake.hot_snapshot(&stream("ct"));
    let column = |name| column_text(&snapshot.batches, name);
    // `json!` writes keys in byte order.
    let types: Vec<(String, DataType)> = column_types(&snapshot.schema)[4..].to_vec();
    assert_eq!(
        types,
        [
            ("b".to_string(), DataType::Utf8),
            ("f".to_string(), DataType::Utf8),
            ("n".to_string(), DataType::Float64),
            ("s".to_string(), DataType::Utf8),
        ]
    );
    assert_eq!(column("n"), ["1.0", "null", "2.5", "4.0"]);
    assert_eq!(column("b"), ["true", "null", "3", "false"]);
    assert_eq!(column("f"), ["1.5", "null", "text", "2"]);
    assert_eq!(column("s"), ["x", "y", "z", "7"]);
}

/// Records the runner passed as objects but that are not valid JSON (damaged in the log, or
/// written by another tool) are found while converting: they get no row, leave no column and
/// no widening behind, and are handed to the runner for the dead-letter queue, once.
#[test]
fn unreadable_records_are_left_out_reported_and_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    let counters = Counters::default();
    let payloads: [&[u8]; 5] = [
        br#"{"a": 1, "s": "x"}"#,
        // Would widen `a` (a conflict) and add two columns before the JSON breaks off.
        br#"{"a": "text", "fresh": 1, "nested": {"k": "#,
        // Complete, then trailing bytes: every leaf was seen before the error.
        br#"{"a": 3, "fresh2": true} {"#,
        br#"{"a": 4, "s": "y"}"#,
        br#"{"a": 5, "s": "z", "late": 1.5}"#,
    ];
    let batch = raw_batch("ct", 2, 10, &payloads);
    for record in &batch.records {
        assert!(
            writer.parse(&record.payload).is_ok(),
            "each starts as an object"
        );
    }
    metrics::with_local_recorder(&counters, || {
        writer.start(&Default::default()).unwrap();
        writer.handle(&batch).unwrap();
    });

    let unusable = writer.take_unusable();
    let found: Vec<(u32, u64)> = unusable.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(found, [(2, 11), (2, 12)]);
    for record in &unusable {
        assert_eq!(record.stream.as_str(), "ct");
        assert!(
            record
                .reason
                .starts_with("stored record is not valid JSON: "),
            "{}",
            record.reason
        );
        assert_eq!(record.payload, payloads[(record.offset - 10) as usize]);
    }
    assert!(writer.take_unusable().is_empty(), "reported once");

    let schema = lake.table_schema(&stream("ct")).unwrap();
    assert_eq!(
        column_types(&schema)[4..],
        [
            ("a".to_string(), DataType::Int64),
            ("s".to_string(), DataType::Utf8),
            ("late".to_string(), DataType::Float64),
        ]
    );
    assert_eq!(
        counters.get("tidewatch_lake_type_conflicts_total{stream=ct,column=a}"),
        0
    );
    let snapshot = lake.hot_snapshot(&stream("ct"));
    assert_eq!(visible(&lake, "ct", &snapshot), [(2, 10), (2, 13), (2, 14)]);
    // The readable records reuse the rows the unreadable ones started: nothing in `_overflow`.
    assert_eq!(column_text(&snapshot.batches, "a"), ["1", "4", "5"]);
    assert_eq!(column_text(&snapshot.batches, "s"), ["x", "y", "z"]);
}

/// Values kept in `_overflow` stay with their own rows when an unreadable record between them
/// is left out (its own overflowed values go with it).
#[test]
fn overflow_rows_stay_aligned_around_an_unreadable_record() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(dir.path());
    let mut writer = lake.writer();
    let payloads: [&[u8]; 4] = [
        br#"{"k": 1, "k": 2}"#,
        br#"{"k": 3, "k": 4, "broken": "#,
        br#"{"k": 5}"#,
        br#"{"k": 6, "k": 7}"#,
    ];
    let batch = raw_batch("ct", 0, 0, &payloads);
    writer.start(&Default::default()).unwrap();
    writer.handle(&batch).unwrap();
    assert_eq!(writer.take_unusable().len(), 1);
    let snapshot = lake.hot_snapshot(&stream("ct"));
    assert_eq!(column_text(&snapshot.batches, "k"), ["1", "5", "6"]);
    assert_eq!(
        column_text(&snapshot.batches, "_overflow"),
        [r#"{"k":2}"#, "null", r#"{"k":7}"#]
    );
}
