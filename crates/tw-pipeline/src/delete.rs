//! Deleting a stream: the one sequence behind the native `DELETE /api/v1/streams/{stream}` and
//! Kinesis `DeleteStream`.
//!
//! Order, each step making the next safe: the registry hides the stream and refuses writes
//! and re-creation under its name; the log deletes it (an atomic rename is the point of no
//! return); its persisted configuration goes; then every consumer is given time to forget
//! it ([`crate::Consumer::forget_stream`]: lake hot rows and files, search indexes, detection
//! positions, committed offsets), so that a stream created next under the name starts empty
//! and nothing of the old one shows in SQL or search. Only then is the name free again. The
//! new stream's partitions continue at the offsets where the old one's ended (the log never
//! reuses an offset: alert identities and lake file names are made of them).
//!
//! A crash between the log's deletion and the configuration's removal brings the stream back
//! empty at the next start, but what the consumers had not forgotten yet (lake files, search
//! indexes) is then still shown under its name: deleting it again removes it.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tw_core::StreamName;

use crate::{ConsumerProgress, IngestError, Ingestor};

/// How long the APIs' deletions wait for the consumers to forget the stream: long enough for
/// a lake consumer in the middle of a large flush, short enough for an HTTP client.
pub const DELETE_WAIT: Duration = Duration::from_secs(30);

/// What a deletion did.
#[derive(Debug, Clone, Serialize)]
pub struct StreamDeletion {
    /// The deleted stream.
    pub stream: String,
    /// Consumers that had not forgotten the stream when the wait ended (they still will; until
    /// then a stream created again under the name may show their leftovers).
    pub consumers_pending: Vec<String>,
}

impl Ingestor {
    /// Deletes `stream` (see the module documentation), waiting up to `wait` for the
    /// consumers to forget it.
    pub async fn delete_stream(
        &self,
        stream: &StreamName,
        consumers: &[(String, Arc<ConsumerProgress>)],
        wait: Duration,
    ) -> Result<StreamDeletion, IngestError> {
        if stream.is_internal() {
            return Err(IngestError::BadStream(format!(
                "{stream} is an internal stream and cannot be deleted"
            )));
        }
        let registry = self.registry();
        let (state, _mark) = registry.begin_delete(stream)?;
        let log = self.log().clone();
        let incarnation = log.incarnation(stream);
        let name = stream.clone();
        let deleted = tokio::task::spawn_blocking(move || log.delete_stream(&name))
            .await
            .map_err(|e| IngestError::Registry {
                path: stream.to_string(),
                message: format!("deletion task failed: {e}"),
            })?;
        match deleted {
            Ok(()) | Err(tw_log::LogError::UnknownStream(_)) => {}
            Err(error) => {
                registry.restore(state);
                return Err(error.into());
            }
        }
        registry.forget(stream)?;
        tracing::info!(%stream, "stream deleted");
        metrics::counter!("tidewatch_streams_deleted_total").increment(1);
        let mut consumers_pending = Vec::new();
        if let Some(incarnation) = incarnation {
            let waits = consumers
                .iter()
                .map(|(_, progress)| progress.wait_forgotten(stream, incarnation, wait));
            let forgotten = futures::future::join_all(waits).await;
            for ((name, _), forgotten) in consumers.iter().zip(forgotten) {
                if !forgotten {
                    tracing::warn!(%stream, consumer = %name, "consumer has not forgotten the deleted stream yet");
                    consumers_pending.push(name.clone());
                }
            }
        }
        Ok(StreamDeletion {
            stream: stream.to_string(),
            consumers_pending,
        })
    }
}
