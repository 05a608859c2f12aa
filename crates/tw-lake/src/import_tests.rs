//! Unit tests of `import.rs`: identity and resumption, placement, the Parquet path, refusals,
//! and how the writer's start, compaction and delete-by-query treat imported files.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int64Array, ListBuilder, StringArray, StringBuilder, StructArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::{Field, Fields, Int32Type, Int64Type, Schema, TimestampMillisecondType};
use parquet::arrow::ArrowWriter;
use serde_json::json;
use tw_core::{StreamConfig, StreamSchema};
use tw_log::{DiskLog, Log, LogConfig};
use tw_pipeline::{Consumer, StreamDefaults, StreamRegistry};

use super::*;
use crate::LakeConfig;
use crate::compact::read_file;
use crate::supersede::{by_dir, range_of_path, superseded_ranges};

/// 2024-05-01T10:00:00Z
const T10: i64 = 1_714_557_600_000;
const HOUR: i64 = 3_600_000;

struct Fixture {
    dir: tempfile::TempDir,
    lake: Lake,
    registry: StreamRegistry,
    stream: StreamName,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Chunks of 3 rows, so that sources of a few records write several files.
        let lake = Lake::open(LakeConfig {
            flush_max_rows: 3,
            ..LakeConfig::new(dir.path().join("lake"))
        })
        .unwrap();
        let log: Arc<dyn Log> = DiskLog::open(LogConfig::new(dir.path().join("log"))).unwrap();
        let registry =
            StreamRegistry::open(&dir.path().join("streams"), log, StreamDefaults::default())
                .unwrap();
        Fixture {
            dir,
            lake,
            registry,
            stream: StreamName::new("ct").unwrap(),
        }
    }

    /// Imports `content`, collecting dead letters into `letters`.
    fn import_with(
        &self,
        name: &str,
        content: impl Into<Bytes>,
        letters: &mut Vec<Rejection>,
    ) -> Result<ImportReport, LakeError> {
        let content = content.into();
        let rules = self.registry.get_or_default(&self.stream);
        let source = ImportSource {
            name: name.to_string(),
            format: ImportFormat::detect(&content),
            content,
            fallback_time_ms: T10 + 42,
        };
        self.lake.import(
            &self.stream,
            &rules,
            source,
            &IngestLimits::default(),
            &mut |rejected| {
                letters.extend_from_slice(rejected);
                Ok(())
            },
        )
    }

    fn import(&self, name: &str, content: impl Into<Bytes>) -> ImportReport {
        self.import_with(name, content, &mut Vec::new()).unwrap()
    }

    /// Every data file of the stream (relative to the stream directory), sorted.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = files::list_stream(self.lake.storage(), &self.stream)
            .unwrap()
            .into_iter()
            .map(|f| f.path.strip_prefix("ct/").unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    /// `(_partition, _offset)` of every row of the live (not superseded) files, sorted.
    fn rows(&self) -> Vec<(i32, i64)> {
        let mut rows = Vec::new();
        for batch in self.live_batches() {
            let partitions = batch.column_by_name("_partition").unwrap();
            let offsets = batch.column_by_name("_offset").unwrap();
            let partitions = partitions.as_primitive::<Int32Type>();
            let offsets = offsets.as_primitive::<Int64Type>();
            rows.extend(
                partitions
                    .values()
                    .iter()
                    .copied()
                    .zip(offsets.values().iter().copied()),
            );
        }
        rows.sort();
        rows
    }

    fn live_batches(&self) -> Vec<RecordBatch> {
        let data = files::list_stream(self.lake.storage(), &self.stream).unwrap();
        let mut batches = Vec::new();
        for files in by_dir(data).into_values() {
            let ranges: Vec<_> = files.iter().map(|f| range_of_path(&f.path)).collect();
            for (file, gone) in files.iter().zip(superseded_ranges(&ranges)) {
                if !gone {
                    batches.extend(read_file(self.lake.storage(), &file.path, "ct").unwrap());
                }
            }
        }
        batches
    }

    fn manifest_path(&self, report: &ImportReport) -> std::path::PathBuf {
        self.dir
            .path()
            .join("lake")
            .join(IMPORTS_DIR)
            .join("ct")
            .join(format!("{}.json", report.sha256))
    }
}

fn ndjson(lines: &[serde_json::Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn at(ms: i64) -> String {
    tw_core::format_rfc3339_ms(ms)
}

#[test]
fn json_rows_land_once_in_their_hours_and_a_reimport_adds_nothing() {
    let fixture = Fixture::new();
    let mut content = ndjson(&[
        json!({"eventTime": at(T10 + 5), "eventName": "A", "n": 1}),
        json!({"eventTime": at(T10 + HOUR), "eventName": "B", "n": 2}),
    ]);
    content.push_str("{\"eventName\": \n\n");
    content.push_str(&ndjson(&[json!({"eventName": "C", "n": "text"})]));
    let mut letters = Vec::new();
    let report = fixture
        .import_with("a.ndjson", content.clone(), &mut letters)
        .unwrap();
    assert_eq!(report.status, ImportStatus::Imported);
    assert_eq!(report.partition, IMPORT_PARTITION_BASE);
    assert_eq!((report.rows_imported, report.rows_rejected), (3, 1));
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].line, 3);
    assert!(
        report.rejected[0].reason.contains("invalid JSON"),
        "{report:?}"
    );
    assert_eq!(letters.len(), 1, "the refused line is dead-lettered");
    assert_eq!(letters[0].raw.as_ref(), b"{\"eventName\":");

    // `_offset` is the line; the record without a time takes the fallback (hour 10).
    let p = IMPORT_PARTITION_BASE as i32;
    assert_eq!(fixture.rows(), vec![(p, 1), (p, 2), (p, 5)]);
    let name = format!("p{IMPORT_PARTITION_BASE}-{:020}-{:020}.parquet", 1, 5);
    assert_eq!(
        fixture.files(),
        vec![
            format!("year=2024/month=05/day=01/hour=10/{name}"),
            format!("year=2024/month=05/day=01/hour=11/{name}"),
        ]
    );
    let times: Vec<i64> = fixture
        .live_batches()
        .iter()
        .flat_map(|b| {
            b.column_by_name("_time")
                .unwrap()
                .as_primitive::<TimestampMillisecondType>()
                .values()
                .to_vec()
        })
        .collect::<BTreeSet<i64>>()
        .into_iter()
        .collect();
    assert_eq!(times, vec![T10 + 5, T10 + 42, T10 + HOUR]);

    // Schema: merged with the catalog's rules (n: integer then text = a widening to Utf8).
    let schema = fixture.lake.stream_schema(&fixture.stream).unwrap();
    let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "_time",
            "_ingest_time",
            "_partition",
            "_offset",
            "eventName",
            "eventTime",
            "n"
        ]
    );
    let widenings: Vec<(&str, &str, &str)> = schema
        .widenings
        .iter()
        .map(|w| (w.column.as_str(), w.from.as_str(), w.to.as_str()))
        .collect();
    assert_eq!(widenings, [("n", "int64", "utf8")]);
    assert_eq!(schema.type_conflicts_total, 1);

    // Same content again (another name): nothing new.
    let again = fixture.import("copy.ndjson", content);
    assert_eq!(again.status, ImportStatus::AlreadyImported);
    assert_eq!((again.rows_imported, again.files_written), (3, 0));
    assert_eq!(fixture.rows().len(), 3);

    // Another source gets the next partition, and the counter survives a reopen.
    let other = fixture.import("b.ndjson", ndjson(&[json!({"x": 1})]));
    assert_eq!(other.partition, IMPORT_PARTITION_BASE + 1);
    let reopened = Lake::open(LakeConfig::new(fixture.dir.path().join("lake"))).unwrap();
    assert_eq!(reopened.next_import_number(&fixture.stream).unwrap(), 2);
}

#[test]
fn an_interrupted_import_is_redone_without_duplicates() {
    let fixture = Fixture::new();
    let lines: Vec<_> = (0..8)
        .map(|i| json!({"eventTime": at(T10 + i * 1000), "i": i}))
        .collect();
    let content = ndjson(&lines);
    let first = fixture.import("a.ndjson", content.clone());
    let files = fixture.files();
    let rows = fixture.rows();
    assert_eq!(rows.len(), 8);
    assert_eq!(files.len(), 3, "8 rows in chunks of 3: {files:?}");

    // A crash half-way: the manifest still says started, one chunk's file is missing and a
    // stray one (written before the crash under another range) is there.
    let manifest = fixture.manifest_path(&first);
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("\"done\"", "\"started\"")).unwrap();
    let stream_dir = fixture.dir.path().join("lake/ct");
    std::fs::remove_file(stream_dir.join(&files[1])).unwrap();
    let stray = format!(
        "year=2024/month=05/day=01/hour=12/p{}-{:020}-{:020}.parquet",
        first.partition, 100, 200
    );
    std::fs::create_dir_all(stream_dir.join("year=2024/month=05/day=01/hour=12")).unwrap();
    std::fs::copy(stream_dir.join(&files[0]), stream_dir.join(&stray)).unwrap();

    let resumed = fixture.import("a.ndjson", content.clone());
    assert_eq!(resumed.status, ImportStatus::Resumed);
    assert_eq!(resumed.partition, first.partition);
    assert_eq!(fixture.files(), files);
    assert_eq!(fixture.rows(), rows);
    assert_eq!(
        fixture.import("a.ndjson", content).status,
        ImportStatus::AlreadyImported
    );
}

#[test]
fn writer_start_compaction_and_delete_treat_imported_files_as_flushed() {
    let fixture = Fixture::new();
    let lines: Vec<_> = (0..7)
        .map(|i| json!({"eventTime": at(T10 + i * 1000), "user": format!("u{i}")}))
        .collect();
    let report = fixture.import("a.ndjson", ndjson(&lines));
    let p = report.partition as i32;
    let expected: Vec<(i32, i64)> = (1..=7).map(|o| (p, o)).collect();

    // The writer's start cuts files past the committed offsets: imported ones are not the
    // log's, so they stay, and their partition is never reported as a log position.
    let mut writer = fixture.lake.writer();
    writer.start(&BTreeMap::new()).unwrap();
    assert_eq!(fixture.rows(), expected);
    assert!(writer.safe_offsets().is_empty());

    let compacted = fixture.lake.compact(T10 + 10 * HOUR, 0).unwrap();
    assert_eq!(compacted.files_compacted, 3, "{compacted:?}");
    assert_eq!(compacted.rows, 7);
    assert_eq!(fixture.rows(), expected);

    let rows = BTreeMap::from([(report.partition, BTreeSet::from([2, 6]))]);
    let deleted = fixture
        .lake
        .delete_rows(&fixture.stream, &rows, "test", "user IN ('u1','u5')")
        .unwrap();
    assert_eq!(deleted.rows_deleted, 2, "{deleted:?}");
    let left: Vec<(i32, i64)> = expected
        .into_iter()
        .filter(|(_, o)| *o != 2 && *o != 6)
        .collect();
    assert_eq!(fixture.rows(), left);
}

/// A Parquet file as other tools write them: a timestamp, strings, a struct and a list.
fn foreign_parquet() -> Vec<u8> {
    let identity = StructArray::from(vec![
        (
            Arc::new(Field::new("userName", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![Some("alice"), None])) as Arc<dyn Array>,
        ),
        (
            Arc::new(Field::new("n", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![Some(7), Some(8)])) as Arc<dyn Array>,
        ),
    ]);
    let mut tags = ListBuilder::new(StringBuilder::new());
    tags.values().append_value("x");
    tags.append(true);
    tags.append(false);
    let tags = tags.finish();
    let time_type = DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None);
    let schema = Arc::new(Schema::new(vec![
        Field::new("eventTime", time_type, true),
        Field::new("eventName", DataType::Utf8, false),
        Field::new(
            "userIdentity",
            DataType::Struct(Fields::from(vec![
                Field::new("userName", DataType::Utf8, true),
                Field::new("n", DataType::Int64, true),
            ])),
            true,
        ),
        Field::new("tags", tags.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(T10 + 1),
                Some(T10 + HOUR),
            ])),
            Arc::new(StringArray::from(vec!["Login", "Logout"])),
            Arc::new(identity),
            Arc::new(tags),
        ],
    )
    .unwrap();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.into_inner().unwrap()
}

#[test]
fn parquet_columns_map_by_name_and_structs_flatten() {
    let fixture = Fixture::new();
    let content = foreign_parquet();

    let report = fixture.import("other-tool.parquet", content);
    assert_eq!((report.rows_imported, report.rows_rejected), (2, 0));
    let p = report.partition as i32;
    assert_eq!(fixture.rows(), vec![(p, 1), (p, 2)]);
    let table = fixture.lake.table_schema(&fixture.stream).unwrap();
    let columns: Vec<(&str, &DataType)> = table
        .fields()
        .iter()
        .skip(4)
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    assert_eq!(
        columns,
        vec![
            ("eventTime", &DataType::Utf8),
            ("eventName", &DataType::Utf8),
            ("userIdentity.userName", &DataType::Utf8),
            ("userIdentity.n", &DataType::Int64),
            ("tags", &DataType::Utf8),
        ]
    );
    let mut batches = fixture.live_batches();
    batches.sort_by_key(|b| {
        b.column_by_name("_offset")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0)
    });
    let value = |batch: &RecordBatch, name: &str| {
        let column = batch.column_by_name(name).unwrap();
        arrow::util::display::array_value_to_string(column, 0).unwrap()
    };
    assert_eq!(value(&batches[0], "userIdentity.userName"), "alice");
    assert_eq!(value(&batches[0], "tags"), "[\"x\"]");
    assert_eq!(value(&batches[1], "userIdentity.n"), "8");
    // 2024-05-01T11:00:00Z, compared as a number: displaying a time in the "UTC" zone needs
    // arrow's `chrono-tz` feature, which only other crates of the workspace turn on.
    let time = batches[1].column_by_name("_time").unwrap();
    assert_eq!(
        time.as_primitive::<TimestampMillisecondType>().value(0),
        1_714_561_200_000
    );
}

#[test]
fn unreadable_sources_are_refused_whole_and_leave_nothing() {
    let fixture = Fixture::new();
    for (name, content) in [
        ("broken.parquet", b"PAR1 this is not parquet".to_vec()),
        ("broken.json", b"[{\"a\": 1}, {\"b\":".to_vec()),
    ] {
        let error = fixture
            .import_with(name, content, &mut Vec::new())
            .unwrap_err();
        assert!(
            matches!(&error, LakeError::ImportSource { source_name, .. } if source_name == name),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot import {name}:"))
        );
    }
    assert!(fixture.files().is_empty());
    assert!(!fixture.dir.path().join("lake").join(IMPORTS_DIR).exists());
}

/// Mutation fuzzing of the Parquet path (seeded): a damaged file from another tool is imported
/// (when the damage is in values) or refused with an error naming it, never a panic. The
/// mutations aim at what a reader trusts: lengths and offsets in the footer and page headers.
#[test]
fn mutated_parquet_files_are_imported_or_refused_never_a_panic() {
    let fixture = Fixture::new();
    let original = foreign_parquet();
    let (mut imported, mut refused, mut reader_panics) = (0, 0, 0);
    // Each seed, within its rounds, reaches a panic of the `parquet` / `arrow-ipc` crates
    // that the import turns into a refusal (an embedded Arrow schema's decoder at round 632 of
    // the first, a negative column chunk offset at round 2239 of the second).
    for (seed, rounds) in [
        (0x9e37_79b9_7f4a_7c15_u64, 700),
        (0x1234_5678_9abc_def1, 2300),
    ] {
        let mut rng = tw_testkit::rng::Rng(seed);
        let mut next = |below: usize| rng.below(below);
        for round in 0..rounds {
            let mut content = original.clone();
            for _ in 0..1 + next(3) {
                // Half the mutations land in the last 200 bytes: the footer (schema, row groups,
                // offsets), where a wrong number sends a reader furthest.
                let len = content.len();
                let at = if next(2) == 0 {
                    len - 1 - next(200.min(len))
                } else {
                    next(len)
                };
                match next(4) {
                    0 => content[at] ^= 1 << next(8),
                    1 => content[at] = next(256) as u8,
                    2 => {
                        let end = (at + 4).min(len);
                        content[at..end].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff][..end - at]);
                    }
                    _ => {
                        // A cut that keeps the magic bytes at the end, as a torn copy would not.
                        content.drain(at.min(len - 8)..len - 8);
                    }
                }
            }
            let name = format!("mutated-{seed:x}-{round}.parquet");
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fixture.import_with(&name, content.clone(), &mut Vec::new())
            }));
            match result {
                Err(_) => panic!("seed {seed:x} round {round}: the import panicked"),
                Ok(Ok(_)) => imported += 1,
                Ok(Err(error)) => {
                    assert!(
                        error.to_string().contains(&name),
                        "seed {seed:x} round {round}: an error that does not name the file: {error}"
                    );
                    refused += 1;
                    reader_panics +=
                        usize::from(error.to_string().contains("the Parquet reader failed"));
                }
            }
        }
    }
    assert!(
        imported > 0 && refused > 0 && reader_panics > 0,
        "{imported} {refused} {reader_panics}"
    );
}

#[test]
fn records_the_stream_schema_refuses_are_rejected_with_their_line() {
    let fixture = Fixture::new();
    let config: StreamConfig = serde_json::from_value(json!({
        "event_time_field": "when",
        "schema": {"fields": [{"name": "user", "type": "string", "required": true}]}
    }))
    .unwrap();
    let _: &StreamSchema = config.schema.as_ref().unwrap();
    fixture.registry.put(&fixture.stream, config, true).unwrap();
    let content = json!({"Records": [
        {"user": "a", "when": at(T10 + 3 * HOUR)},
        {"user": 5},
        {"user": "c", "eventTime": at(T10)}
    ]})
    .to_string();
    let mut letters = Vec::new();
    let report = fixture
        .import_with("cloudtrail.json", content, &mut letters)
        .unwrap();
    assert_eq!((report.rows_imported, report.rows_rejected), (2, 1));
    assert_eq!(report.rejected[0].line, 2);
    assert_eq!(letters.len(), 1);
    // The configured field decides; `eventTime` is not looked at once one is configured.
    let hours: BTreeSet<String> = fixture
        .files()
        .iter()
        .map(|f| f.split('/').nth(3).unwrap().to_string())
        .collect();
    assert_eq!(hours, BTreeSet::from(["hour=10".into(), "hour=13".into()]));
}
