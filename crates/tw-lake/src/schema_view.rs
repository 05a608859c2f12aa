//! A stream's lake schema as users see it (`GET /api/v1/streams/{stream}/schema`): every
//! column with its type, when it appeared, how many values conflicted with its type, and
//! every widening.

use std::collections::BTreeMap;

use arrow::datatypes::DataType;
use serde::Serialize;

use crate::catalog::{Catalog, ColumnType, OVERFLOW_COLUMN, metadata_fields};

/// The schema of one stream in the lake.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamSchema {
    /// The stream.
    pub stream: String,
    /// The catalog revision this view was taken from (bumped on every change).
    pub revision: u64,
    /// Metadata columns first, then event columns in order of first appearance.
    pub columns: Vec<ColumnInfo>,
    /// Every type change, oldest first.
    pub widenings: Vec<WideningInfo>,
    /// Values stored as text because their type conflicted with their column, all columns,
    /// since the server started.
    pub type_conflicts_total: u64,
}

/// One column of a [`StreamSchema`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnInfo {
    /// Column name as SQL sees it (flattened fields keep their dots).
    pub name: String,
    /// `boolean`, `int64`, `float64`, `utf8`, or `timestamp` / `int32` for metadata columns.
    #[serde(rename = "type")]
    pub column_type: String,
    /// `system` (written by Tidewatch), `event` (from the events) or `overflow` (the JSON
    /// object of fields beyond the column limit).
    pub kind: &'static str,
    /// When the column first appeared, Unix milliseconds (None for system columns).
    pub first_seen_ms: Option<i64>,
    /// Values of this column stored as their JSON text because their type conflicted with
    /// the column's, since the server started.
    pub type_conflicts: u64,
}

/// One widening of a column's type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WideningInfo {
    /// The column.
    pub column: String,
    /// Type before.
    pub from: String,
    /// Type after.
    pub to: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
}

fn type_name(column_type: ColumnType) -> String {
    match column_type {
        ColumnType::Boolean => "boolean",
        ColumnType::Int64 => "int64",
        ColumnType::Float64 => "float64",
        ColumnType::Utf8 => "utf8",
    }
    .to_string()
}

/// The view of `catalog`, with the conflict counts kept beside it.
pub(crate) fn stream_schema(catalog: &Catalog, conflicts: &BTreeMap<String, u64>) -> StreamSchema {
    let system = metadata_fields().into_iter().map(|field| ColumnInfo {
        name: field.name().clone(),
        column_type: match field.data_type() {
            DataType::Timestamp(..) => "timestamp".to_string(),
            other => other.to_string().to_lowercase(),
        },
        kind: "system",
        first_seen_ms: None,
        type_conflicts: 0,
    });
    let events = catalog.fields.iter().map(|field| ColumnInfo {
        name: field.name.clone(),
        column_type: type_name(field.column_type),
        kind: if field.name == OVERFLOW_COLUMN {
            "overflow"
        } else {
            "event"
        },
        first_seen_ms: Some(field.first_seen_ms),
        type_conflicts: conflicts.get(&field.name).copied().unwrap_or(0),
    });
    StreamSchema {
        stream: catalog.stream.to_string(),
        revision: catalog.revision,
        columns: system.chain(events).collect(),
        widenings: catalog
            .history
            .iter()
            .map(|w| WideningInfo {
                column: w.column.clone(),
                from: type_name(w.from),
                to: type_name(w.to),
                at_ms: w.at_ms,
            })
            .collect(),
        type_conflicts_total: conflicts.values().sum(),
    }
}
