//! The job store: one row per job with its latest status. The API is its only owner.
//!
//! [`Store`] is a SQLite file (one API process) or PostgreSQL (several API replicas sharing one
//! database), chosen by the URL. Reads go straight to the database; every write goes through the
//! [`writer::StoreWriter`] task, which groups concurrent writes into one transaction so the store
//! does not become the throughput ceiling.

pub mod postgres;
pub mod sqlite;
pub mod writer;

#[cfg(test)]
mod tests;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use offload_shared::{JobEvent, JobId, JobKind, JobStatus};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The job store the API uses, whichever database holds it.
#[derive(Debug, Clone)]
pub enum Store {
    /// A SQLite file: one API process.
    Sqlite(SqliteStore),
    /// PostgreSQL: any number of API replicas.
    Postgres(PostgresStore),
}

impl Store {
    /// Opens the store `url` names, creating its schema if needed: `sqlite://path/to/file.db`
    /// or `postgres://user@host/db` (also `postgresql://`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            SqliteStore::connect(url).await.map(Store::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            PostgresStore::connect(url).await.map(Store::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// The job with `id`, if any.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.get(id).await,
            Store::Postgres(s) => s.get(id).await,
        }
    }

    /// The job's payload and attempt budget, for a redrive.
    pub async fn input(&self, id: JobId) -> Result<Option<StoredInput>, StoreError> {
        match self {
            Store::Sqlite(s) => s.input(id).await,
            Store::Postgres(s) => s.input(id).await,
        }
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.list(filter).await,
            Store::Postgres(s) => s.list(filter).await,
        }
    }

    /// Pending jobs whose `resolve_at` has passed (oldest first, at most `limit`), claimed for
    /// `lease`: their `resolve_at` moves to `now + lease` in the same statement.
    pub async fn claim_unresolved(
        &self,
        now: OffsetDateTime,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<Unresolved>, StoreError> {
        match self {
            Store::Sqlite(s) => s.claim_unresolved(now, lease, limit).await,
            Store::Postgres(s) => s.claim_unresolved(now, lease, limit).await,
        }
    }

    /// Cheap check that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ping().await,
            Store::Postgres(s) => s.ping().await,
        }
    }

    /// Applies `writes` in one transaction; one result per write.
    pub async fn apply(&self, writes: &[Write]) -> Result<Vec<Written>, StoreError> {
        match self {
            Store::Sqlite(s) => s.apply(writes).await,
            Store::Postgres(s) => s.apply(writes).await,
        }
    }
}

/// `url` with its password, if any, replaced by `***`: database URLs end up in error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The credentials end at the last `@` before the path.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// A job as the store knows it, and as `GET /jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobRecord {
    /// The job's id.
    #[schema(value_type = String, example = "01936f5e-7c1a-7b3e-9f0a-2d4c6e8a0b1c")]
    pub id: JobId,
    /// Its kind.
    #[schema(value_type = String, example = "sleep")]
    pub kind: JobKind,
    /// Latest status.
    #[schema(value_type = String, example = "succeeded")]
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
    #[schema(value_type = String, format = DateTime)]
    pub submitted_at: OffsetDateTime,
    /// When the latest attempt started.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached a final status.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
    /// The handler's output, on success.
    #[schema(value_type = Option<Object>)]
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

/// A pending job claimed for republishing.
#[derive(Debug, Clone, PartialEq)]
pub struct Unresolved {
    /// The job.
    pub job: JobRecord,
    /// Its payload.
    pub payload: Value,
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
    Insert {
        /// The job (status `pending` until its publish is confirmed).
        job: JobRecord,
        /// Its payload.
        payload: Value,
        /// Its idempotency key.
        key: Option<IdempotencyKey>,
        /// When a pending job may be republished if nothing resolved it.
        resolve_at: Option<OffsetDateTime>,
    },
    /// The broker confirmed these jobs' publish: rows still `pending` become `queued`.
    Confirmed(Vec<JobId>),
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
        /// When it may be republished if nothing resolved it.
        resolve_at: OffsetDateTime,
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

/// A stretch of a batch as a backend applies it: plain inserts (no idempotency key) that
/// multi-row statements write together, or one write of any other kind.
enum Stretch<'a> {
    /// Consecutive inserts without a key; each one's result is [`Written::Done`].
    Inserts(Vec<(&'a JobRecord, &'a Value, Option<OffsetDateTime>)>),
    /// Any other write.
    One(&'a Write),
}

/// `writes` cut into [`Stretch`]es, in order.
fn stretches(writes: &[Write]) -> Vec<Stretch<'_>> {
    let mut out = Vec::new();
    for write in writes {
        match (write, out.last_mut()) {
            (
                Write::Insert {
                    job,
                    payload,
                    key: None,
                    resolve_at,
                },
                Some(Stretch::Inserts(rows)),
            ) => {
                rows.push((job, payload, *resolve_at));
            }
            (
                Write::Insert {
                    job,
                    payload,
                    key: None,
                    resolve_at,
                },
                _,
            ) => out.push(Stretch::Inserts(vec![(job, payload, *resolve_at)])),
            (other, _) => out.push(Stretch::One(other)),
        }
    }
    out
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
        "unsupported OFFLOAD_DATABASE_URL {0:?}: use sqlite://path/to/file.db (the file and its folder are created) \
         for one API process, or postgres://user@host/db (the tables are created) for several API replicas"
    )]
    UnsupportedUrl(String),
    /// No schema of PostgreSQL's `search_path` exists, so there is nowhere to create the tables.
    #[error(
        "no schema of the search_path {0:?} exists in this PostgreSQL database: create it \
         (CREATE SCHEMA name) or choose another with ?options=-c%20search_path%3Dname in OFFLOAD_DATABASE_URL"
    )]
    NoSchema(String),
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
