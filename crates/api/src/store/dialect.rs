//! What really differs between SQLite and PostgreSQL, behind one trait: how ids and times are
//! bound and read (TEXT and Unix microseconds, or UUID and TIMESTAMPTZ), how a list of ids is
//! matched, multi-row inserts, row locks, and schema introspection. The operations themselves
//! are written once, in `ops.rs`; both databases read the same `$1`… placeholders.

use std::{borrow::Cow, future::Future};

use serde_json::Value;
use sqlx::{Database, migrate::Migrate};
use time::OffsetDateTime;

use offload_shared::JobId;

use super::{JobRecord, StoreError, migrate::Step};

/// One bound value of a statement written for both databases.
#[derive(Clone)]
pub(crate) enum Param<'a> {
    /// A job id (or NULL).
    Id(Option<JobId>),
    /// A list of job ids, matched by the dialect's `…_IN_IDS` statements.
    Ids(&'a [JobId]),
    /// A point in time (or NULL), stored to the microsecond.
    Time(Option<OffsetDateTime>),
    /// An integer (or NULL).
    Int(Option<i64>),
    /// Text (or NULL).
    Text(Option<Cow<'a, str>>),
    /// Bytes (BLOB, BYTEA).
    Bytes(&'a [u8]),
}

/// A statement and its parameters, in `$n` order.
#[derive(Clone)]
pub(crate) struct Stmt<'a> {
    /// The SQL: a constant, or (for a filtered listing) one put together from constant
    /// fragments only; whatever a client sent is always a bound parameter.
    pub sql: Cow<'static, str>,
    /// `$1`, `$2`, …
    pub params: Vec<Param<'a>>,
}

impl<'a> Stmt<'a> {
    /// `sql` with no parameters yet.
    pub fn new(sql: &'static str) -> Self {
        Self::built(Cow::Borrowed(sql))
    }

    /// SQL put together from constant fragments, with no parameters yet.
    pub fn built(sql: Cow<'static, str>) -> Self {
        Stmt {
            sql,
            params: Vec::with_capacity(12),
        }
    }

    fn with(mut self, param: Param<'a>) -> Self {
        self.params.push(param);
        self
    }

    /// Binds a job id.
    pub fn id(self, id: JobId) -> Self {
        self.with(Param::Id(Some(id)))
    }

    /// Binds a job id or NULL.
    pub fn maybe_id(self, id: Option<JobId>) -> Self {
        self.with(Param::Id(id))
    }

    /// Binds a list of job ids.
    pub fn ids(self, ids: &'a [JobId]) -> Self {
        self.with(Param::Ids(ids))
    }

    /// Binds a time or NULL.
    pub fn time(self, t: impl Into<Option<OffsetDateTime>>) -> Self {
        self.with(Param::Time(t.into()))
    }

    /// Binds an integer or NULL.
    pub fn int(self, n: impl Into<Option<i64>>) -> Self {
        self.with(Param::Int(n.into()))
    }

    /// Binds text or NULL.
    pub fn text(self, s: impl Into<Option<Cow<'a, str>>>) -> Self {
        self.with(Param::Text(s.into()))
    }

    /// Binds bytes.
    pub fn bytes(self, b: &'a [u8]) -> Self {
        self.with(Param::Bytes(b))
    }

    /// Binds borrowed text or NULL.
    pub fn str(self, s: Option<&'a str>) -> Self {
        self.with(Param::Text(s.map(Cow::Borrowed)))
    }
}

/// A row of a multi-row insert.
pub(crate) struct NewJob<'a> {
    /// The job.
    pub job: &'a JobRecord,
    /// Its payload.
    pub payload: &'a Value,
    /// When a pending job is due to be resolved.
    pub resolve_at: Option<OffsetDateTime>,
}

/// A database the store runs on. Implemented for [`sqlx::Sqlite`] and [`sqlx::Postgres`].
pub(crate) trait Dialect: Database<Connection: Migrate> {
    /// Confirmed publishes: `$1` the progress step from pending to queued, `$2` the ids.
    const CONFIRM: &'static str;
    /// Unconfirmed publishes: `$1` the progress step from pending to queued, `$2` the ids.
    const UNCONFIRM: &'static str;
    /// Claim unresolved jobs: `$1` now, `$2` the new `resolve_at`, `$3` the limit.
    const CLAIM: &'static str;
    /// [`super::sql::cancel_sql`] with its row lock.
    const CANCEL: &'static str;
    /// Delete finished jobs: `$1` the cut-off, `$2` the limit; returns their ids.
    const PURGE_JOBS: &'static str;
    /// Delete the keys of the jobs `$1`.
    const PURGE_KEYS_OF_JOBS: &'static str;
    /// Delete the input files of the jobs `$1`.
    const PURGE_INPUTS_OF_JOBS: &'static str;
    /// Delete the artifacts of the jobs `$1`.
    const PURGE_ARTIFACTS_OF_JOBS: &'static str;
    /// Delete the history of the jobs `$1`.
    const PURGE_STEPS_OF_JOBS: &'static str;
    /// Delete expired keys: `$1` the cut-off, `$2` the limit.
    const PURGE_KEYS: &'static str;
    /// Whether a batch must lock the rows it touches first (several writers share the rows).
    const LOCKS_ROWS: bool;
    /// Serialises the concurrency dispatchers of several API replicas for one transaction.
    const GATE_LOCK: &'static str;
    /// Begins the dispatcher's transaction.
    const GATE_BEGIN: &'static str;
    /// The schema's versions.
    const MIGRATIONS: &'static [Step];
    /// The case-insensitive `LIKE`.
    const TEXT_MATCH: &'static str;
    /// Checks that `$1` is a JSON path, if the database has them.
    const JSON_PATH_CHECK: Option<&'static str>;
    /// A group's distinct kinds, comma-separated.
    const DISTINCT_KINDS: &'static str;

    /// A finished job's run time in milliseconds (`finished_at - started_at`).
    const RUN_MS: &'static str;

    /// Whole minutes from the time bound as `since` to the time column `col`.
    fn minutes_since(col: &str, since: &str) -> String;
    /// `IN …` a list of job ids bound as `param`.
    fn in_ids(param: &str) -> String;
    /// `IN …` a JSON array of strings bound as `param`.
    fn in_text_list(param: &str) -> String;
    /// True where the JSON path bound as `param` finds something in the payload or the result.
    fn json_path_match(param: &str) -> String;

    /// Runs `stmt`; the number of rows it changed.
    fn execute<'a>(
        conn: &'a mut Self::Connection,
        stmt: Stmt<'a>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'a;

    /// Runs `stmt`; every row it returned.
    fn fetch_all<'a>(
        conn: &'a mut Self::Connection,
        stmt: Stmt<'a>,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send + 'a;

    /// Runs `stmt`; its first row, if any.
    fn fetch_optional<'a>(
        conn: &'a mut Self::Connection,
        stmt: Stmt<'a>,
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send + 'a;

    /// Inserts jobs with as few statements as the database allows (keys are claimed apart).
    fn insert_jobs<'a>(
        conn: &'a mut Self::Connection,
        rows: &'a [NewJob<'a>],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// Locks the existing rows of `ids` (sorted), when [`Dialect::LOCKS_ROWS`].
    fn lock_jobs<'a>(
        conn: &'a mut Self::Connection,
        ids: &'a [JobId],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// True if `e` rolled the transaction back in a way that simply running it again fixes
    /// (a deadlock with another replica's writer).
    fn is_conflict(e: &sqlx::Error) -> bool;

    /// Whether the table exists in the schema the store writes to.
    fn has_table<'a>(
        conn: &'a mut Self::Connection,
        table: &'a str,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'a;

    /// The table's column names.
    fn columns<'a>(
        conn: &'a mut Self::Connection,
        table: &'a str,
    ) -> impl Future<Output = Result<Vec<String>, sqlx::Error>> + Send + 'a;

    /// A job id column.
    fn get_id(row: &Self::Row, col: &str) -> Result<JobId, StoreError>;
    /// A time column.
    fn get_time(row: &Self::Row, col: &str) -> Result<Option<OffsetDateTime>, StoreError>;
    /// An integer column.
    fn get_int(row: &Self::Row, col: &str) -> Result<Option<i64>, sqlx::Error>;
    /// A text column.
    fn get_text(row: &Self::Row, col: &str) -> Result<Option<String>, sqlx::Error>;
    /// A bytes column.
    fn get_bytes(row: &Self::Row, col: &str) -> Result<Option<Vec<u8>>, sqlx::Error>;
}
