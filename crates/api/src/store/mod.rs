//! The job store: one row per job with its latest status. The API is its only owner.
//!
//! Reads go straight to the database; every write goes through the [`writer::StoreWriter`]
//! task, which groups concurrent writes into one transaction so the store does not become the
//! throughput ceiling.

pub mod sqlite;
pub mod writer;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use offload_shared::{JobEvent, JobId, JobKind, JobStatus};

pub use sqlite::SqliteStore;

/// A job as the store knows it, and as `GET /jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// Its kind.
    pub kind: JobKind,
    /// Latest status.
    pub status: JobStatus,
    /// Attempt the status is about.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Run-time limit of one attempt.
    pub timeout_ms: u64,
    /// Worker that reported the status, once one has.
    pub worker: Option<String>,
    /// When the API accepted it.
    #[serde(with = "time::serde::rfc3339")]
    pub submitted_at: OffsetDateTime,
    /// When the latest attempt started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached a final status.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The handler's output, on success.
    pub result: Option<Value>,
    /// What went wrong, on failure.
    pub error: Option<String>,
    /// How many times a worker started it: above `attempt` when the broker redelivered it
    /// (its worker died, or lost its connection, mid-job).
    pub runs: u32,
}

impl JobRecord {
    /// A freshly accepted job.
    pub fn queued(
        id: JobId,
        kind: JobKind,
        max_attempts: u32,
        timeout_ms: u64,
        submitted_at: OffsetDateTime,
    ) -> Self {
        JobRecord {
            id,
            kind,
            status: JobStatus::Queued,
            attempt: 1,
            max_attempts,
            timeout_ms,
            worker: None,
            submitted_at,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
            runs: 0,
        }
    }
}

/// An `Idempotency-Key` and the fingerprint of the request that first used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The client's key.
    pub key: String,
    /// SHA-256 of the canonical request.
    pub fingerprint: String,
}

/// What a redrive needs that the job's status does not show.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInput {
    /// The payload as submitted.
    pub payload: Value,
    /// `max_attempts` as submitted: each redrive grants this many more attempts.
    pub budget: u32,
}

/// A filter for listing jobs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this kind.
    pub kind: Option<JobKind>,
    /// Only jobs older than this one (ids sort by submission time).
    pub before: Option<JobId>,
    /// At most this many.
    pub limit: u32,
}

/// One write, as the writer task applies it.
#[derive(Debug, Clone)]
pub enum Write {
    /// Record a job accepted by `POST /jobs`, with its payload and idempotency key. If the key
    /// is taken nothing is written and the result is [`Written::KeyTaken`].
    Insert(JobRecord, Value, Option<IdempotencyKey>),
    /// Forget a job (and its key) whose publish failed: the client got a 5xx, so it never existed.
    Delete(JobId),
    /// Apply a lifecycle event if it moves the job forward.
    Event(JobEvent),
    /// Put a dead job back to `queued` for another attempt; [`Written::Nothing`] unless it was dead.
    Redrive {
        /// The job.
        id: JobId,
        /// The new attempt.
        attempt: u32,
        /// The new attempt limit.
        max_attempts: u32,
    },
    /// Mark a job dead whatever its status (a redrive whose publish failed).
    MarkDead {
        /// The job.
        id: JobId,
        /// The attempt that did not get published.
        attempt: u32,
        /// Why.
        error: String,
    },
}

/// What one write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// It changed what it was meant to.
    Done,
    /// It matched nothing (a redrive of a job that is not dead).
    Nothing,
    /// The idempotency key already belongs to a job.
    KeyTaken {
        /// That job.
        job_id: JobId,
        /// The fingerprint of the request that created it.
        fingerprint: String,
    },
}

/// The store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("job store error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database URL is not one this build supports.
    #[error(
        "unsupported OFFLOAD_DATABASE_URL {0:?}: use sqlite://path/to/file.db (the file and its folder are created)"
    )]
    UnsupportedUrl(String),
    /// A stored row does not decode (written by another version?).
    #[error("stored job {id} does not decode: {reason}")]
    Corrupt {
        /// The row's id.
        id: String,
        /// What did not decode.
        reason: String,
    },
    /// The batch holding this write failed (the cause is logged by the writer).
    #[error("job store write failed: {0}")]
    WriteFailed(String),
    /// The writer task has stopped (the process is shutting down).
    #[error("the job store writer has stopped")]
    WriterGone,
}
