//! Stream configurations: persisted, validated, compiled once, created on first use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tw_core::{FieldPath, FieldSelection, StreamConfig, StreamName};
use tw_log::Log;

use crate::IngestError;
use crate::validate::CompiledSchema;

/// Event-time fields recognised when a stream declares none: CloudTrail's `eventTime`, then the
/// Elastic Common Schema `@timestamp`, then a plain `timestamp`.
const CONVENTIONAL_TIME_FIELDS: [&str; 3] = ["eventTime", "@timestamp", "timestamp"];

/// A stream's configuration with its field paths compiled.
#[derive(Debug)]
pub struct StreamState {
    /// The stream's name.
    pub name: StreamName,
    /// The configuration as stored.
    pub config: StreamConfig,
    pub(crate) partition_key: Option<FieldPath>,
    pub(crate) time_fields: Vec<FieldPath>,
    pub(crate) schema: Option<CompiledSchema>,
    /// Every field the ingest path reads (key, time, schema): all it parses out of a line.
    pub(crate) selection: FieldSelection,
    round_robin: AtomicU64,
}

impl StreamState {
    fn new(name: StreamName, config: StreamConfig) -> Self {
        let time_fields = match &config.event_time_field {
            Some(field) => vec![FieldPath::new(field)],
            None => CONVENTIONAL_TIME_FIELDS
                .iter()
                .map(|f| FieldPath::new(f))
                .collect(),
        };
        let partition_key = config.partition_key.as_deref().map(FieldPath::new);
        let schema_paths: Vec<FieldPath> = config
            .schema
            .iter()
            .flat_map(|schema| schema.fields.iter().map(|f| FieldPath::new(&f.name)))
            .collect();
        let selection = FieldSelection::new(
            partition_key
                .iter()
                .chain(&time_fields)
                .chain(&schema_paths),
        );
        Self {
            partition_key,
            schema: config.schema.as_ref().map(CompiledSchema::new),
            selection,
            time_fields,
            name,
            config,
            round_robin: AtomicU64::new(0),
        }
    }

    /// The event time of `event` by this stream's rules, or `fallback_ms` when it has none.
    pub fn event_time_of(&self, event: &serde_json::Value, fallback_ms: i64) -> i64 {
        self.time_fields
            .iter()
            .find_map(|path| path.get(event).and_then(tw_core::parse_time_ms))
            .unwrap_or(fallback_ms)
    }

    /// Checks `event` against the stream's declared schema (always `Ok` without one): the
    /// check ingest applies, for paths that bypass the log (lake import).
    pub fn check_schema(&self, event: &serde_json::Value) -> Result<(), String> {
        self.schema
            .as_ref()
            .map_or(Ok(()), |schema| schema.check(event))
    }

    /// Every field the ingest path reads from an event of this stream: what a source passes
    /// to [`crate::split_events_selecting`] so that lines are parsed only that deep.
    pub fn selection(&self) -> &FieldSelection {
        &self.selection
    }

    /// Reserves `count` consecutive round-robin slots; returns the first.
    pub(crate) fn next_round_robin(&self, count: usize) -> u64 {
        self.round_robin.fetch_add(count as u64, Ordering::Relaxed)
    }
}

/// Defaults for streams created implicitly by their first event.
#[derive(Debug, Clone, Default)]
pub struct StreamDefaults {
    /// The configuration a new stream starts with.
    pub config: StreamConfig,
    /// Per-stream-name partition key overrides (`cloudtrail` → `userIdentity.arn`).
    pub partition_keys: BTreeMap<String, String>,
}

/// All streams, persisted as `{dir}/{stream}.json`.
pub struct StreamRegistry {
    dir: PathBuf,
    log: Arc<dyn Log>,
    defaults: StreamDefaults,
    streams: RwLock<BTreeMap<StreamName, Arc<StreamState>>>,
    /// Streams being deleted: not found, and neither written to nor created meanwhile.
    deleting: std::sync::Mutex<BTreeSet<StreamName>>,
}

/// Marks a stream as being deleted while alive (see [`StreamRegistry::begin_delete`]).
pub struct DeletionMark<'a> {
    registry: &'a StreamRegistry,
    name: StreamName,
}

impl Drop for DeletionMark<'_> {
    fn drop(&mut self) {
        self.registry.deleting().remove(&self.name);
    }
}

impl StreamRegistry {
    /// Loads every persisted stream configuration and makes sure the log has each stream.
    pub fn open(
        dir: &Path,
        log: Arc<dyn Log>,
        defaults: StreamDefaults,
    ) -> Result<Self, IngestError> {
        std::fs::create_dir_all(dir).map_err(|e| registry_error(dir, e))?;
        let mut streams = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| registry_error(dir, e))? {
            let path = entry.map_err(|e| registry_error(dir, e))?.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let text = std::fs::read(&path).map_err(|e| registry_error(&path, e))?;
            let config: StreamConfig =
                serde_json::from_slice(&text).map_err(|e| IngestError::Registry {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let name = StreamName::new(stem).map_err(|e| IngestError::BadStream(e.to_string()))?;
            log.create_stream(&name, config.partitions)?;
            streams.insert(name.clone(), Arc::new(StreamState::new(name, config)));
        }
        // Streams present in the log but without a config file (written by an older version or
        // a crash between the log and the registry) get the defaults with the log's partitions.
        for (name, partitions) in log.streams() {
            if !name.is_internal() && !streams.contains_key(&name) {
                let config = StreamConfig {
                    partitions,
                    ..defaults.config.clone()
                };
                streams.insert(name.clone(), Arc::new(StreamState::new(name, config)));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            log,
            defaults,
            streams: RwLock::new(streams),
            deleting: std::sync::Mutex::new(BTreeSet::new()),
        })
    }

    /// The stream, if it exists.
    pub fn get(&self, name: &StreamName) -> Option<Arc<StreamState>> {
        self.streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The stream, created with the defaults when it does not exist yet (an error while a
    /// stream of that name is being deleted).
    pub fn get_or_create(&self, name: &StreamName) -> Result<Arc<StreamState>, IngestError> {
        if let Some(state) = self.get(name) {
            return Ok(state);
        }
        self.put(name, self.default_config(name), false)
    }

    /// Starts deleting a stream: from now on it is not found, and it can be neither written
    /// to through the registry nor created again until the returned mark is dropped. The
    /// caller then deletes it from the log and calls [`StreamRegistry::forget`].
    pub fn begin_delete(
        &self,
        name: &StreamName,
    ) -> Result<(Arc<StreamState>, DeletionMark<'_>), IngestError> {
        let mut streams = self.streams.write().unwrap_or_else(|p| p.into_inner());
        if !self.deleting().insert(name.clone()) {
            return Err(IngestError::StreamDeleting(name.to_string()));
        }
        let mark = DeletionMark {
            registry: self,
            name: name.clone(),
        };
        let state = streams
            .remove(name)
            .ok_or_else(|| IngestError::UnknownStream(name.to_string()))?;
        Ok((state, mark))
    }

    /// Puts back a stream whose deletion failed before the log deleted it.
    pub fn restore(&self, state: Arc<StreamState>) {
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(state.name.clone(), state);
    }

    /// Removes a deleted stream's persisted configuration (durably).
    pub fn forget(&self, name: &StreamName) -> Result<(), IngestError> {
        let path = self.dir.join(format!("{name}.json"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(registry_error(&path, error)),
        }
        std::fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| registry_error(&self.dir, e))
    }

    /// Whether a stream of this name is being deleted right now.
    pub fn is_deleting(&self, name: &StreamName) -> bool {
        self.deleting().contains(name)
    }

    fn deleting(&self) -> std::sync::MutexGuard<'_, BTreeSet<StreamName>> {
        self.deleting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stream, or — without creating it — the state it would have if its first event
    /// arrived now (dry runs read event times as the stream will).
    pub fn get_or_default(&self, name: &StreamName) -> Arc<StreamState> {
        self.get(name)
            .unwrap_or_else(|| Arc::new(StreamState::new(name.clone(), self.default_config(name))))
    }

    /// The configuration a stream named `name` gets when it is created implicitly.
    pub fn default_config(&self, name: &StreamName) -> StreamConfig {
        let mut config = self.defaults.config.clone();
        if let Some(key) = self.defaults.partition_keys.get(name.as_str()) {
            config.partition_key = Some(key.clone());
        }
        config
    }

    /// Creates or replaces a stream's configuration. The partition count of a stream that
    /// exists cannot change (records are already placed by it).
    pub fn put(
        &self,
        name: &StreamName,
        config: StreamConfig,
        replace: bool,
    ) -> Result<Arc<StreamState>, IngestError> {
        config
            .validate()
            .map_err(|e| IngestError::BadStream(e.to_string()))?;
        let mut streams = self.streams.write().unwrap_or_else(|p| p.into_inner());
        if self.deleting().contains(name) {
            return Err(IngestError::StreamDeleting(name.to_string()));
        }
        if let Some(existing) = streams.get(name) {
            if !replace {
                return Ok(existing.clone());
            }
            if existing.config.partitions != config.partitions {
                return Err(IngestError::BadStream(format!(
                    "stream {name} has {} partitions; the partition count cannot be changed",
                    existing.config.partitions
                )));
            }
        }
        self.log.create_stream(name, config.partitions)?;
        let path = self.dir.join(format!("{name}.json"));
        write_atomically(
            &path,
            &serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )?;
        let state = Arc::new(StreamState::new(name.clone(), config));
        streams.insert(name.clone(), state.clone());
        Ok(state)
    }

    /// Every stream, sorted by name.
    pub fn list(&self) -> Vec<Arc<StreamState>> {
        self.streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

fn registry_error(path: &Path, error: std::io::Error) -> IngestError {
    IngestError::Registry {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), IngestError> {
    tw_log::write_file_atomically(path, bytes).map_err(|e| registry_error(path, e))
}
