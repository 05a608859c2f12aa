//! The per-stream catalog: the event columns, their types, when they appeared, and every
//! widening. Persisted as `_catalog/{stream}.json` under the lake root, put atomically (see
//! `storage`) whenever it changes and before any Parquet file that uses a new column or type
//! is written.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tw_core::StreamName;

use crate::LakeError;
use crate::storage::LakeStorage;

/// Format version written into every catalog file.
pub(crate) const CATALOG_FORMAT_VERSION: u32 = 1;

/// Name of the directory under the lake root holding the catalogs.
pub(crate) const CATALOG_DIR: &str = "_catalog";

/// Metadata column: event time.
pub(crate) const TIME_COLUMN: &str = "_time";
/// Metadata column: ingest time.
pub(crate) const INGEST_TIME_COLUMN: &str = "_ingest_time";
/// Metadata column: the log partition.
pub(crate) const PARTITION_COLUMN: &str = "_partition";
/// Metadata column: the log offset.
pub(crate) const OFFSET_COLUMN: &str = "_offset";
/// Column holding, as a JSON object, the fields that did not fit the column limit.
pub(crate) const OVERFLOW_COLUMN: &str = "_overflow";

/// Type of an event column. Widening only ever goes towards `Utf8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ColumnType {
    /// JSON `true` / `false`.
    Boolean,
    /// JSON integers that fit in `i64`.
    Int64,
    /// Every other JSON number.
    Float64,
    /// Strings, arrays and empty objects (as compact JSON), and anything after a conflict.
    Utf8,
}

impl ColumnType {
    /// The Arrow type of a column of this type.
    pub(crate) fn data_type(self) -> DataType {
        match self {
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Utf8 => DataType::Utf8,
        }
    }

    /// The type a column of type `self` must become to hold a value of type `value`, and
    /// whether that is a conflict (the value will be stored as its JSON text). Int64 and
    /// Float64 meet at Float64 without a conflict; any other disagreement becomes Utf8.
    pub(crate) fn widen(self, value: ColumnType) -> (ColumnType, bool) {
        use ColumnType::*;
        match (self, value) {
            (a, b) if a == b => (a, false),
            (Int64, Float64) | (Float64, Int64) => (Float64, false),
            _ => (Utf8, true),
        }
    }
}

/// One event column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CatalogField {
    /// Column name (the dotted path, renamed when it would collide with a reserved name).
    pub(crate) name: String,
    /// Current type.
    #[serde(rename = "type")]
    pub(crate) column_type: ColumnType,
    /// Wall-clock time the column was first seen, Unix milliseconds.
    pub(crate) first_seen_ms: i64,
}

/// One change of a column's type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Widening {
    /// The column.
    pub(crate) column: String,
    /// Type before.
    pub(crate) from: ColumnType,
    /// Type after.
    pub(crate) to: ColumnType,
    /// Wall-clock time of the change, Unix milliseconds.
    pub(crate) at_ms: i64,
}

/// The schema history of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Catalog {
    /// Format of this file ([`CATALOG_FORMAT_VERSION`]).
    pub(crate) format_version: u32,
    /// Bumped on every change, so readers can tell two versions apart.
    pub(crate) revision: u64,
    /// The stream.
    pub(crate) stream: StreamName,
    /// Event columns in order of first appearance (may include `_overflow`).
    pub(crate) fields: Vec<CatalogField>,
    /// Every type change, oldest first.
    pub(crate) history: Vec<Widening>,
    /// Imports numbered so far (`lake import`): import `n` (from 0) writes its rows under
    /// `_partition` = [`crate::IMPORT_PARTITION_BASE`] + `n`. Absent in catalogs without one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) imports: u32,
    /// Position of each field by name (rebuilt on load). Looked up for every value the lake
    /// writes, so hashed with foldhash (seeded at random) rather than SipHash.
    #[serde(skip)]
    index: HashMap<String, usize, foldhash::fast::RandomState>,
}

/// What [`Catalog::observe`] may change, as it was at one moment: [`Catalog::rollback`]
/// returns to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CatalogMark {
    fields: usize,
    history: usize,
    revision: u64,
}

/// What [`Catalog::observe`] decided for one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Stored in the event column at this position.
    Column(usize),
    /// The column limit is reached: stored in `_overflow`.
    Overflow,
}

impl Catalog {
    /// An empty catalog for `stream`.
    pub(crate) fn new(stream: StreamName) -> Self {
        Catalog {
            format_version: CATALOG_FORMAT_VERSION,
            revision: 0,
            stream,
            fields: Vec::new(),
            history: Vec::new(),
            imports: 0,
            index: HashMap::default(),
        }
    }

    /// The point [`Catalog::rollback`] returns to.
    pub(crate) fn mark(&self) -> CatalogMark {
        CatalogMark {
            fields: self.fields.len(),
            history: self.history.len(),
            revision: self.revision,
        }
    }

    /// Undoes every [`Catalog::observe`] since `mark`: the columns added since are removed
    /// and the types widened since restored (used when an event turns out unreadable halfway
    /// through, so that it leaves no trace in the schema).
    pub(crate) fn rollback(&mut self, mark: CatalogMark) {
        for widening in self.history.drain(mark.history..).rev() {
            if let Some(&position) = self.index.get(&widening.column) {
                self.fields[position].column_type = widening.from;
            }
        }
        for field in self.fields.drain(mark.fields..) {
            self.index.remove(&field.name);
        }
        self.revision = mark.revision;
    }

    /// Position of the column named `name`.
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Number of event columns counted against the limit (`_overflow` is not).
    fn limited_len(&self) -> usize {
        self.fields.len() - usize::from(self.index.contains_key(OVERFLOW_COLUMN))
    }

    /// Records that column `name` received a value of type `value_type` and returns where the
    /// value goes, plus whether it was a type conflict. Adds or widens columns as needed;
    /// never refuses a value. `guess` is where the column probably is: events of a stream
    /// mostly share their shape, and comparing one name costs less than hashing it.
    // Called for every leaf of every event, from the converter's code generation unit.
    #[inline]
    pub(crate) fn observe(
        &mut self,
        name: &str,
        guess: Option<usize>,
        value_type: ColumnType,
        max_columns: usize,
        now_ms: i64,
    ) -> (Placement, bool) {
        let guessed = guess.filter(|&position| {
            self.fields
                .get(position)
                .is_some_and(|field| field.name == name)
        });
        if let Some(position) = guessed.or_else(|| self.position(name)) {
            let field = &mut self.fields[position];
            let (widened, conflict) = field.column_type.widen(value_type);
            if widened != field.column_type {
                self.history.push(Widening {
                    column: name.to_string(),
                    from: field.column_type,
                    to: widened,
                    at_ms: now_ms,
                });
                field.column_type = widened;
                self.revision += 1;
            }
            return (Placement::Column(position), conflict);
        }
        if self.limited_len() >= max_columns {
            return (Placement::Overflow, false);
        }
        (
            Placement::Column(self.push(name, value_type, now_ms)),
            false,
        )
    }

    /// Position of the `_overflow` column, adding it if needed.
    pub(crate) fn overflow_position(&mut self, now_ms: i64) -> usize {
        match self.position(OVERFLOW_COLUMN) {
            Some(position) => position,
            None => self.push(OVERFLOW_COLUMN, ColumnType::Utf8, now_ms),
        }
    }

    fn push(&mut self, name: &str, column_type: ColumnType, now_ms: i64) -> usize {
        self.fields.push(CatalogField {
            name: name.to_string(),
            column_type,
            first_seen_ms: now_ms,
        });
        self.index.insert(name.to_string(), self.fields.len() - 1);
        self.revision += 1;
        self.fields.len() - 1
    }

    /// The table schema: metadata columns, then the event columns, all event columns nullable.
    pub(crate) fn schema(&self) -> SchemaRef {
        let mut fields = metadata_fields();
        fields.extend(
            self.fields
                .iter()
                .map(|field| Field::new(&field.name, field.column_type.data_type(), true)),
        );
        Arc::new(Schema::new(fields))
    }

    /// Path of the catalog object of `stream`, relative to the lake root.
    pub(crate) fn path(stream: &StreamName) -> String {
        format!("{CATALOG_DIR}/{stream}.json")
    }

    /// Loads every catalog of the lake (none when there is none).
    pub(crate) fn load_all(storage: &LakeStorage) -> Result<Vec<Catalog>, LakeError> {
        let mut catalogs = Vec::new();
        for object in storage.list(CATALOG_DIR)? {
            if !object.path.ends_with(".json") {
                continue;
            }
            // Listed a moment ago, so gone only if something else deletes catalogs.
            let bytes = storage
                .get(&object.path)?
                .ok_or_else(|| LakeError::Vanished {
                    path: storage.describe(&object.path),
                })?;
            catalogs.push(Self::parse(&bytes, &storage.describe(&object.path))?);
        }
        catalogs.sort_by(|a, b| a.stream.cmp(&b.stream));
        Ok(catalogs)
    }

    fn parse(bytes: &[u8], location: &str) -> Result<Catalog, LakeError> {
        let mut catalog: Catalog =
            serde_json::from_slice(bytes).map_err(|source| LakeError::CatalogInvalid {
                path: location.to_string(),
                source,
            })?;
        if catalog.format_version != CATALOG_FORMAT_VERSION {
            return Err(LakeError::CatalogVersion {
                path: location.to_string(),
                version: catalog.format_version,
            });
        }
        catalog.index = catalog
            .fields
            .iter()
            .enumerate()
            .map(|(i, field)| (field.name.clone(), i))
            .collect();
        Ok(catalog)
    }

    /// Writes the catalog atomically: a reader sees the old or the new version, never half.
    pub(crate) fn save(&self, storage: &LakeStorage) -> Result<(), LakeError> {
        let path = Self::path(&self.stream);
        // Serialising plain data to a Vec cannot fail; the error arm only satisfies the type.
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|source| LakeError::CatalogInvalid {
                path: storage.describe(&path),
                source,
            })?;
        storage.put(&path, Bytes::from(bytes))
    }
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// The four metadata columns every table starts with.
pub(crate) fn metadata_fields() -> Vec<Field> {
    let timestamp = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    vec![
        Field::new(TIME_COLUMN, timestamp.clone(), false),
        Field::new(INGEST_TIME_COLUMN, timestamp, false),
        Field::new(PARTITION_COLUMN, DataType::Int32, false),
        Field::new(OFFSET_COLUMN, DataType::Int64, false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LakeLocation;

    #[test]
    fn widening_rules() {
        use ColumnType::*;
        assert_eq!(Int64.widen(Int64), (Int64, false));
        assert_eq!(Int64.widen(Float64), (Float64, false));
        assert_eq!(Float64.widen(Int64), (Float64, false));
        assert_eq!(Int64.widen(Utf8), (Utf8, true));
        assert_eq!(Boolean.widen(Int64), (Utf8, true));
        assert_eq!(Utf8.widen(Boolean), (Utf8, true));
        assert_eq!(Float64.widen(Boolean), (Utf8, true));
    }

    #[test]
    fn catalog_round_trips_through_disk_with_history() {
        let dir = tempfile::tempdir().unwrap();
        let stream = StreamName::new("ct").unwrap();
        let mut catalog = Catalog::new(stream.clone());
        assert_eq!(
            catalog.observe("a", None, ColumnType::Int64, 10, 1),
            (Placement::Column(0), false)
        );
        assert_eq!(
            catalog.observe("b.c", None, ColumnType::Boolean, 10, 2),
            (Placement::Column(1), false)
        );
        assert_eq!(
            catalog.observe("a", None, ColumnType::Float64, 10, 3),
            (Placement::Column(0), false)
        );
        assert_eq!(
            catalog.observe("b.c", None, ColumnType::Utf8, 10, 4),
            (Placement::Column(1), true)
        );
        let storage = LakeStorage::open(&LakeLocation::Local(dir.path().to_path_buf())).unwrap();
        catalog.save(&storage).unwrap();
        assert!(
            !dir.path().join("_catalog/.ct.json.tmp").exists(),
            "tmp file left behind"
        );

        let loaded = Catalog::load_all(&storage).unwrap();
        assert_eq!(loaded, vec![catalog.clone()]);
        let mut loaded = loaded.into_iter().next().unwrap();
        assert_eq!(loaded.position("b.c"), Some(1), "index rebuilt on load");
        assert_eq!(loaded.history.len(), 2);
        assert_eq!(
            loaded.history[0],
            Widening {
                column: "a".into(),
                from: ColumnType::Int64,
                to: ColumnType::Float64,
                at_ms: 3
            }
        );
        assert_eq!(loaded.revision, 4);
        assert_eq!(
            loaded.observe("d", None, ColumnType::Utf8, 10, 5),
            (Placement::Column(2), false)
        );
    }

    #[test]
    fn column_limit_sends_new_fields_to_overflow() {
        let mut catalog = Catalog::new(StreamName::new("s").unwrap());
        assert_eq!(
            catalog.observe("a", None, ColumnType::Int64, 2, 0).0,
            Placement::Column(0)
        );
        assert_eq!(catalog.overflow_position(0), 1);
        assert_eq!(
            catalog.observe("b", None, ColumnType::Int64, 2, 0).0,
            Placement::Column(2),
            "_overflow is not counted"
        );
        assert_eq!(
            catalog.observe("c", None, ColumnType::Int64, 2, 0).0,
            Placement::Overflow
        );
        assert_eq!(
            catalog.observe("a", None, ColumnType::Utf8, 2, 0),
            (Placement::Column(0), true),
            "known columns still widen"
        );
    }

    #[test]
    fn unknown_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(CATALOG_DIR)).unwrap();
        let text = r#"{"format_version":99,"revision":1,"stream":"s","fields":[],"history":[]}"#;
        std::fs::write(dir.path().join(CATALOG_DIR).join("s.json"), text).unwrap();
        let storage = LakeStorage::open(&LakeLocation::Local(dir.path().to_path_buf())).unwrap();
        assert!(matches!(
            Catalog::load_all(&storage),
            Err(LakeError::CatalogVersion { version: 99, .. })
        ));
    }
}
