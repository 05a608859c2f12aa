//! The failed-deliveries file: where an alert goes when a sink cannot take or deliver it, so
//! it is not lost.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tw_core::Alert;

use crate::AlertError;

/// Name of the failed-deliveries file inside the dispatcher's `failed_dir`.
pub const FAILED_DELIVERIES_FILE: &str = "failed_deliveries.ndjson";
const RECORD_VERSION: u32 = 1;

/// One line of `failed_deliveries.ndjson`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedDelivery {
    /// Format version of the record (currently 1).
    pub version: u32,
    /// Name of the sink the alert was meant for.
    pub sink: String,
    /// Why it was not delivered.
    pub error: String,
    /// Delivery attempts made (0 when the alert never reached the sink's task).
    pub attempts: u32,
    /// When the failure was recorded, Unix milliseconds.
    pub failed_at_ms: i64,
    /// The alert itself.
    pub alert: Alert,
}

/// Appends failure records, each fsynced. Shared by the caller of `dispatch` (queue full,
/// unknown sink) and the sink tasks.
#[derive(Debug)]
pub(crate) struct FailedLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl FailedLog {
    pub(crate) fn open(dir: &Path) -> Result<Self, AlertError> {
        std::fs::create_dir_all(dir).map_err(|e| AlertError::io(dir, e))?;
        let path = dir.join(FAILED_DELIVERIES_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| AlertError::io(&path, e))?;
        Ok(Self {
            path,
            file: Mutex::new(file),
        })
    }

    /// Appends one record and fsyncs it. Blocking I/O.
    pub(crate) fn record(
        &self,
        sink: &str,
        error: &str,
        attempts: u32,
        alert: &Alert,
    ) -> Result<(), AlertError> {
        let record = FailedDelivery {
            version: RECORD_VERSION,
            sink: sink.to_owned(),
            error: error.to_owned(),
            attempts,
            failed_at_ms: tw_core::now_ms(),
            alert: alert.clone(),
        };
        let mut line = serde_json::to_vec(&record).map_err(|source| AlertError::Encode {
            id: alert.id.clone(),
            source,
        })?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // One write_all of a whole line under the lock: records never interleave.
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| AlertError::io(&self.path, e))
    }
}
