//! Errors of the pipeline, each mapped by the server to one HTTP outcome.

use tw_log::LogError;

/// What can go wrong on the ingest path.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is larger than `max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body inflates past `max_decompressed_bytes`.
    #[error("decompressed body exceeds the limit of {limit} bytes")]
    DecompressedTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The gzip stream is invalid.
    #[error("invalid gzip body: {0}")]
    BadGzip(String),
    /// A `Content-Encoding` other than identity or gzip.
    #[error("unsupported content encoding {0:?} (use gzip or none)")]
    UnsupportedEncoding(String),
    /// A `Content-Type` the ingest path does not read.
    #[error(
        "unsupported content type {0:?} (use application/x-ndjson, application/json or text/plain)"
    )]
    UnsupportedContentType(String),
    /// The request body could not be read to its end (the client went away, say).
    #[error("reading the request body failed: {0}")]
    BodyRead(String),
    /// The body as a whole is not JSON (a JSON array that does not parse).
    #[error("invalid JSON body: {0}")]
    BadJson(String),
    /// The stream name or configuration is invalid.
    #[error("{0}")]
    BadStream(String),
    /// The stream does not exist (and the operation does not create it).
    #[error("stream {0} does not exist")]
    UnknownStream(String),
    /// The stream is being deleted: nothing can be written to it, nor can it be created, until
    /// the deletion is over.
    #[error("stream {0} is being deleted; retry once the deletion is over")]
    StreamDeleting(String),
    /// The log refused or failed the append.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The dead-letter queue did not store the request's refused records. The request fails
    /// as a whole rather than answer that they were kept; a retry may succeed (the events
    /// appended with them are then stored twice, unless the request carries an idempotency
    /// key: see [`crate::Ingestor::ingest_keyed`]).
    #[error("could not store {count} rejected record(s) in the dead-letter queue: {source}")]
    DeadLetterWrite {
        /// Refused records that were not stored.
        count: usize,
        /// Why.
        #[source]
        source: LogError,
    },
    /// An `Idempotency-Key` that is empty, too long or holds characters outside its set.
    #[error("invalid Idempotency-Key: {0}")]
    BadIdempotencyKey(String),
    /// A request with the same idempotency key (and stream) is being processed right now.
    #[error("a request with Idempotency-Key {key:?} is being processed; retry once it is answered")]
    IdempotencyKeyInFlight {
        /// The key.
        key: String,
    },
    /// The idempotency key was used before with another body: repeating it would answer for
    /// events that were never stored.
    #[error(
        "Idempotency-Key {key:?} was used before for a different body on this stream; use a new key for new events"
    )]
    IdempotencyKeyReused {
        /// The key.
        key: String,
    },
    /// What is remembered of an earlier request with the key (its answer, or which of its
    /// lines are stored) could not be read; nothing was stored.
    #[error("what is remembered for Idempotency-Key {key:?} could not be read: {reason}")]
    IdempotencyAnswerUnreadable {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Persisting the stream registry failed.
    #[error("stream registry i/o error on {path}: {message}")]
    Registry {
        /// File involved.
        path: String,
        /// What failed.
        message: String,
    },
}

impl IngestError {
    /// Whether the client can fix the request (4xx) rather than retry it (5xx/503).
    pub fn is_client_error(&self) -> bool {
        match self {
            IngestError::Log(LogError::RecordTooLarge { .. }) => true,
            IngestError::Log(_)
            | IngestError::DeadLetterWrite { .. }
            | IngestError::IdempotencyKeyInFlight { .. }
            | IngestError::IdempotencyAnswerUnreadable { .. }
            | IngestError::Registry { .. }
            | IngestError::StreamDeleting(_) => false,
            _ => true,
        }
    }

    /// Whether retrying later may succeed (disk full, log shutting down, the dead-letter queue
    /// failing).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            // A stream deleted while the request was on its way: a retry creates it anew.
            IngestError::Log(
                LogError::DiskFull { .. } | LogError::Closed | LogError::UnknownStream(_)
            ) | IngestError::StreamDeleting(_)
                // Whatever the queue's trouble, the client still holds the records: it must be
                // told to send them again (503), not that the server failed them for good.
                | IngestError::DeadLetterWrite { .. }
                // The first request with the key is answered soon; then a repeat gets its
                // answer (the native route answers 409 with Retry-After for this one).
                | IngestError::IdempotencyKeyInFlight { .. }
                | IngestError::IdempotencyAnswerUnreadable { .. }
        )
    }
}
