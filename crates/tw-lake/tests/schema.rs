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
