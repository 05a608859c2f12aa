//! Sources that pull data into streams: a watched directory, an S3 prefix, a NATS subject.
//!
//! Every source appends through [`tw_pipeline::Ingestor`], the append path of the native HTTP
//! API: the same decoding and limits, the same durability promise (an event counts as taken
//! only once it is fsynced), the same dead-letter queue for records that cannot be taken.
//!
//! Invariants:
//! - a file source takes each file once: finished files are journaled durably, every file
//!   started and not finished keeps its own record of the last record acknowledged by a
//!   durable append (starting another file never drops it), and an append interrupted by a
//!   crash or an error is completed by comparing the log with the batch (`recover`) before
//!   anything else is appended, so a restart neither skips nor duplicates records;
//! - a file that cannot be decoded is recorded as failed with its reason and never retried;
//!   an object or directory that cannot be listed or read is reported and retried at the next
//!   poll while the other files go on (only a file with an interrupted append holds them back);
//! - a JetStream message is acknowledged only after its events are durable (at-least-once);
//!   core NATS is best effort, like core NATS itself;
//! - sources stop between two appends when asked (`run` takes the shutdown signal).
//!
//! Lifecycle: [`validate_sources`] is pure; [`build`] opens state and stores but spawns
//! nothing; [`Source::run`] owns the work until the shutdown signal.

mod config;
mod error;
mod file_format;
mod files;
mod listing;
mod nats;
mod recover;
mod state;

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use tokio::sync::watch;
use tw_core::StreamName;
use tw_log::Log;
use tw_pipeline::Ingestor;

pub use config::{
    DirSourceConfig, NatsSourceConfig, PollConfig, S3SourceConfig, SourceConfig, validate_sources,
};
pub use error::SourceError;
pub use file_format::is_candidate;
pub use files::{FileSource, FileSourceParts};
pub use listing::{Listed, Lister, Unlisted};
pub use nats::NatsSource;
pub use state::{FileOutcome, FileState, FinishedFile, Pending, Progress};

/// What every source is built from.
#[derive(Clone)]
pub struct SourceContext {
    /// The append path.
    pub ingestor: Arc<Ingestor>,
    /// The log (read when completing an interrupted append).
    pub log: Arc<dyn Log>,
    /// Where sources keep their state (`<data_dir>/sources`); one subdirectory per source.
    pub state_dir: PathBuf,
}

/// A built source, ready to run.
pub enum Source {
    /// A directory or S3 watcher.
    Files(Box<FileSource>),
    /// A NATS subject.
    Nats(Box<NatsSource>),
}

impl Source {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        match self {
            Source::Files(source) => source.run(shutdown).await,
            Source::Nats(source) => source.run(shutdown).await,
        }
    }
}

/// Builds one source: opens its state and its store (I/O, no tasks).
pub fn build(config: &SourceConfig, context: &SourceContext) -> Result<Source, SourceError> {
    let name = config.name();
    let stream = StreamName::new(config.stream())
        .map_err(|e| SourceError::Config(format!("source {name:?}: {e}")))?;
    let (store, lister, prefix, location, poll): (Arc<dyn ObjectStore>, _, _, _, _) = match config {
        SourceConfig::Nats(nats) => {
            return Ok(Source::Nats(Box::new(NatsSource::new(
                name,
                stream,
                nats.clone(),
                context.ingestor.clone(),
            ))));
        }
        SourceConfig::Dir(dir) => {
            let store = LocalFileSystem::new_with_prefix(&dir.path)
                .map_err(|e| SourceError::store(dir.path.display().to_string(), e))?;
            let store = Arc::new(store);
            (
                store.clone(),
                Lister::Directory(store),
                None,
                dir.path.display().to_string(),
                dir.poll(),
            )
        }
        SourceConfig::S3(s3) => {
            let location = format!("s3://{}/{}", s3.bucket, s3.prefix);
            let store = s3
                .connection()
                .builder(&s3.bucket)
                .build()
                .map_err(|e| SourceError::store(location.clone(), e))?;
            let prefix = s3.prefix.trim_matches('/');
            let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
            let store = Arc::new(store);
            (
                store.clone(),
                Lister::Bucket(store),
                prefix,
                location,
                s3.poll(),
            )
        }
    };
    let state = FileState::open(&context.state_dir.join(&name))?;
    Ok(Source::Files(Box::new(FileSource::new(
        FileSourceParts {
            name,
            stream,
            location,
            store,
            lister,
            prefix,
            poll,
            state,
        },
        context.ingestor.clone(),
        context.log.clone(),
    ))))
}

/// Running sources and the signal that stops them.
pub struct RunningSources {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningSources {
    /// Spawns every source on the current runtime.
    pub fn start(sources: Vec<Source>) -> Self {
        let (stop, signal) = watch::channel(false);
        let tasks = sources
            .into_iter()
            .map(|source| tokio::spawn(source.run(signal.clone())))
            .collect();
        Self { stop, tasks }
    }

    /// Asks every source to stop after its current append and waits up to `timeout`; a source
    /// still busy then is abandoned (its progress is durable up to its last append).
    pub async fn stop(self, timeout: std::time::Duration) {
        let _ = self.stop.send(true);
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("sources did not stop in time; they resume from their saved progress");
        }
    }
}
