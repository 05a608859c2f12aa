//! The lake in an S3 (or S3-compatible) bucket under a key prefix, through `object_store`.
//!
//! Sync over async: the lake writer runs on a plain thread (`tw_pipeline::Consumer`), while
//! `object_store` is async and needs a tokio runtime (retries sleep on tokio's timer, the HTTP
//! client spawns connection tasks). The bucket therefore owns a small dedicated runtime
//! (`tw-lake-io`, one worker): each operation is spawned onto it and the calling thread waits
//! on a channel. This never needs the caller to be inside a runtime and never runs a runtime
//! inside another (`Runtime::block_on` would panic there, and `Lake::open` is called from
//! async code). When the caller does happen to be a worker of a multi-thread runtime, the wait
//! goes through `block_in_place`, so that runtime moves its other tasks elsewhere meanwhile.
//!
//! The HTTP connections themselves are also driven by that runtime
//! (`SpawnedReqwestConnector`), including those of queries, which poll the same store from the
//! query engine's runtime: a pooled connection never belongs to a runtime that may go away
//! first.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::client::SpawnedReqwestConnector;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use tokio::runtime::{Handle, Runtime, RuntimeFlavor};
use tw_s3::{S3Connection, S3Url};

use super::StoredObject;
use crate::LakeError;

/// A lake under `s3://{bucket}/{prefix}`.
pub(super) struct S3Bucket {
    url: S3Url,
    connection: S3Connection,
    store: Arc<dyn ObjectStore>,
    io: IoRuntime,
}

impl S3Bucket {
    /// Builds the client (no request is made: the first listing reveals a bad endpoint,
    /// bucket or credentials, with the error naming the location).
    pub(super) fn open(url: &S3Url, connection: &S3Connection) -> Result<S3Bucket, LakeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tw-lake-io")
            .enable_all()
            .build()
            .map_err(|error| LakeError::Storage {
                operation: "start of the i/o runtime",
                location: url.to_string(),
                message: error.to_string(),
            })?;
        // Fewer and shorter retries than object_store's default (10 over 3 minutes): a failed
        // operation fails the lake batch, which the consumer runner retries anyway, and a bad
        // configuration should be reported at start within seconds.
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(15),
        };
        let store = connection
            .builder(&url.bucket)
            .with_retry(retry)
            .with_http_connector(SpawnedReqwestConnector::new(runtime.handle().clone()))
            .build()
            .map_err(|error| LakeError::Storage {
                operation: "configuration",
                location: url.to_string(),
                message: error.to_string(),
            })?;
        Ok(S3Bucket {
            url: url.clone(),
            connection: connection.clone(),
            store: Arc::new(store),
            io: IoRuntime {
                handle: runtime.handle().clone(),
                runtime: Some(runtime),
            },
        })
    }

    pub(super) fn url(&self) -> &S3Url {
        &self.url
    }

    pub(super) fn connection(&self) -> &S3Connection {
        &self.connection
    }

    pub(super) fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// The key of `path` (relative to the lake root) in the bucket.
    pub(super) fn key(&self, path: &str) -> String {
        if self.url.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.url.prefix)
        }
    }

    /// `s3://bucket/prefix/{path}`.
    pub(super) fn describe(&self, path: &str) -> String {
        format!("s3://{}/{}", self.url.bucket, self.key(path))
    }

    fn object_path(&self, path: &str) -> Result<ObjectPath, LakeError> {
        ObjectPath::parse(self.key(path)).map_err(|_| LakeError::InvalidPath {
            path: path.to_string(),
        })
    }

    fn error(
        &self,
        operation: &'static str,
        path: &str,
    ) -> impl FnOnce(object_store::Error) -> LakeError {
        let location = self.describe(path);
        move |error| LakeError::Storage {
            operation,
            location,
            message: error.to_string(),
        }
    }

    pub(super) fn put(&self, path: &str, bytes: Bytes) -> Result<(), LakeError> {
        let key = self.object_path(path)?;
        let store = self.store();
        // One PUT of the whole object: S3 stores it atomically, and answers only once stored.
        let result = self.run(
            "put",
            path,
            async move { store.put(&key, PutPayload::from(bytes)).await },
        )?;
        result.map(|_| ()).map_err(self.error("put", path))
    }

    pub(super) fn get(&self, path: &str) -> Result<Option<Bytes>, LakeError> {
        let key = self.object_path(path)?;
        let store = self.store();
        let result = self.run("get", path, async move {
            match store.get(&key).await {
                Ok(object) => object.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(error) => Err(error),
            }
        })?;
        result.map_err(self.error("get", path))
    }

    pub(super) fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, LakeError> {
        let base = self.key(prefix);
        let base = base.trim_end_matches('/').to_string();
        let location = if prefix.is_empty() { "" } else { prefix };
        let listed = if base.is_empty() {
            None
        } else {
            Some(
                ObjectPath::parse(&base).map_err(|_| LakeError::InvalidPath {
                    path: prefix.to_string(),
                })?,
            )
        };
        let store = self.store();
        let result = self.run("list", location, async move {
            store.list(listed.as_ref()).try_collect::<Vec<_>>().await
        })?;
        let metas = result.map_err(self.error("list", location))?;
        let root = self.key("");
        let mut objects = Vec::with_capacity(metas.len());
        for meta in metas {
            // Keys outside the root cannot come back from a prefix listing; skip defensively.
            if let Some(relative) = meta.location.as_ref().strip_prefix(root.as_str()) {
                objects.push(StoredObject {
                    path: relative.to_string(),
                    size: meta.size,
                });
            }
        }
        Ok(objects)
    }

    pub(super) fn delete(&self, path: &str) -> Result<(), LakeError> {
        let key = self.object_path(path)?;
        let store = self.store();
        let result = self.run("delete", path, async move {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(error) => Err(error),
            }
        })?;
        result.map_err(self.error("delete", path))
    }

    /// Runs `work` on the i/o runtime and waits for it (see the module comment).
    fn run<T: Send + 'static>(
        &self,
        operation: &'static str,
        path: &str,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, LakeError> {
        let (done, outcome) = std::sync::mpsc::sync_channel(1);
        self.io.handle.spawn(async move {
            // The receiver is gone only if the caller is; nothing is left to tell.
            let _ = done.send(work.await);
        });
        let wait = move || outcome.recv();
        let received = match Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        received.map_err(|_| LakeError::Storage {
            operation,
            location: self.describe(path),
            message: "the lake's i/o task stopped before finishing (runtime shut down)".into(),
        })
    }
}

/// The bucket's runtime; dropped in the background because the last lake handle may be
/// dropped inside async code, where dropping a runtime panics.
struct IoRuntime {
    handle: Handle,
    runtime: Option<Runtime>,
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
