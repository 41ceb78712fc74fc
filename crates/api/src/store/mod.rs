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
}

impl JobRecord {
    /// A freshly accepted job.
    pub fn queued(
        id: JobId,
        kind: JobKind,
        max_attempts: u32,
        submitted_at: OffsetDateTime,
    ) -> Self {
        JobRecord {
            id,
            kind,
            status: JobStatus::Queued,
            attempt: 1,
            max_attempts,
            worker: None,
            submitted_at,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
        }
    }
}

/// One write, as the writer task applies it.
#[derive(Debug, Clone)]
pub enum Write {
    /// Record a job accepted by `POST /jobs`, with its payload.
    Insert(JobRecord, Value),
    /// Forget a job whose publish failed (the client got a 5xx, so it never existed).
    Delete(JobId),
    /// Apply a lifecycle event if it moves the job forward.
    Event(JobEvent),
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
