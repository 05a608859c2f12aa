//! The selective parsers on real third-party events (`../shared/data`: Panther's labeled
//! CloudTrail test events, one per line, and the Sigma regression events, pretty-printed
//! Windows events full of escaped backslashes): for the path to every value of every event,
//! the row of `parse_fields` and the pruned tree of `parse` hold what the path finds in
//! serde_json's full parse. The fast path reads most of these events and serde_json the rest;
//! either way the answer must be the full parse's.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tw_core::{FieldPath, FieldSelection};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "json") {
            out.push(path);
        }
    }
}

/// The real events, as their text.
fn documents() -> Vec<String> {
    let data = data_dir();
    let ndjson = std::fs::read_to_string(
        data.join("cloudtrail/panther/panther_cloudtrail_labeled_tests.ndjson"),
    )
    .expect("the Panther CloudTrail tests in ../shared/data");
    let mut documents: Vec<String> = ndjson
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_string)
        .collect();
    let mut files = Vec::new();
    json_files(&data.join("sigma/regression_data"), &mut files);
    for file in files {
        // A file may hold several documents one after the other: each is an event.
        let text = std::fs::read_to_string(&file).unwrap();
        let mut stream = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
        let mut start = 0;
        while let Some(document) = stream.next() {
            document.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            documents.push(text[start..stream.byte_offset()].to_string());
            start = stream.byte_offset();
        }
    }
    documents
}

/// The dotted path of every value in `value` below `prefix`, arrays by index.
fn paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    let mut push = |key: &str, child: &Value| {
        let path = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        out.push(path.clone());
        paths(child, &path, out);
    };
    match value {
        Value::Object(object) => object.iter().for_each(|(key, child)| push(key, child)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(index, child)| push(&index.to_string(), child)),
        _ => {}
    }
}

fn check(selection: &FieldSelection, paths: &[FieldPath], text: &str, full: &Value) {
    let row = selection.parse_fields(text.as_bytes()).unwrap();
    let pruned = selection.parse(text.as_bytes()).unwrap();
    for path in paths {
        let expected = path.get(full);
        let slot = selection.slot(path).unwrap();
        assert_eq!(row.get(slot), expected, "row, {path} of {text}");
        assert_eq!(path.get(&pruned), expected, "pruned tree, {path} of {text}");
    }
}

#[test]
fn every_path_of_every_real_event_reads_as_in_the_full_parse() {
    let documents = documents();
    assert!(
        documents.len() > 500,
        "only {} events found",
        documents.len()
    );
    let mut checked = 0;
    for text in &documents {
        let full: Value = serde_json::from_str(text).unwrap();
        let mut texts = Vec::new();
        paths(&full, "", &mut texts);
        let all: Vec<FieldPath> = texts.iter().map(|text| FieldPath::new(text)).collect();
        // All at once (paths ending inside others), then each alone.
        check(&FieldSelection::new(&all), &all, text, &full);
        for path in &all {
            check(
                &FieldSelection::new([path]),
                std::slice::from_ref(path),
                text,
                &full,
            );
        }
        checked += all.len();
    }
    assert!(checked > 10_000, "only {checked} paths checked");
}
