//! SQLite: one file, WAL mode, so reads never wait for the writer. Ids are TEXT, times Unix
//! microseconds; the one API process is the only writer, so rows need no locks.

use std::{borrow::Cow, future::Future, path::Path, str::FromStr, time::Duration};

use sqlx::{
    Row, Sqlite, SqliteConnection,
    query::Query,
    sqlite::{
        SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
        SqliteSynchronous,
    },
};
use time::OffsetDateTime;

use offload_shared::JobId;

use super::{
    Gate, StoreError,
    dialect::{Dialect, NewJob, Param, Stmt},
    migrate::{self, Step},
    ops::Db,
    sql::{
        cancel_sql, claim_sql, confirm_sql, purge_artifacts_of_jobs_sql, purge_inputs_of_jobs_sql,
        purge_jobs_sql, purge_keys_of_jobs_sql, purge_keys_sql, purge_steps_of_jobs_sql,
        unconfirm_sql,
    },
};

/// Opens (creating if needed) the database file at `url` and migrates it.
pub(super) async fn connect(url: &str) -> Result<Db<Sqlite>, StoreError> {
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    };
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
    }
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        // WAL: readers and the single writer do not block each other.
        .journal_mode(SqliteJournalMode::Wal)
        // With WAL, NORMAL survives process crashes; the broker, not this file, holds the jobs.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    migrate::run::<Sqlite>(&mut *pool.acquire().await?).await?;
    Ok(Db::new(pool))
}

/// Lists of ids are bound as a JSON array of strings and unpacked by `json_each`.
impl Dialect for Sqlite {
    const CONFIRM: &'static str = confirm_sql!("IN (SELECT value FROM json_each($2))");
    const UNCONFIRM: &'static str = unconfirm_sql!("IN (SELECT value FROM json_each($2))");
    const CANCEL: &'static str = cancel_sql!("");
    const CLAIM: &'static str = claim_sql!("");
    const PURGE_JOBS: &'static str = purge_jobs_sql!("");
    const PURGE_KEYS_OF_JOBS: &'static str =
        purge_keys_of_jobs_sql!("IN (SELECT value FROM json_each($1))");
    const PURGE_INPUTS_OF_JOBS: &'static str =
        purge_inputs_of_jobs_sql!("IN (SELECT value FROM json_each($1))");
    const PURGE_KEYS: &'static str = purge_keys_sql!("");
    const PURGE_ARTIFACTS_OF_JOBS: &'static str =
        purge_artifacts_of_jobs_sql!("IN (SELECT value FROM json_each($1))");
    const PURGE_STEPS_OF_JOBS: &'static str =
        purge_steps_of_jobs_sql!("IN (SELECT value FROM json_each($1))");
    const LOCKS_ROWS: bool = false;
    // ASCII case-insensitive: SQLite's own LIKE.
    const TEXT_MATCH: &'static str = "LIKE";
    const JSON_PATH_CHECK: Option<&'static str> = None;
    const DISTINCT_KINDS: &'static str = "group_concat(DISTINCT kind)";

    // Times are Unix microseconds.
    const RUN_MS: &'static str = "((finished_at - started_at) / 1000)";

    fn minutes_since(col: &str, since: &str) -> String {
        format!("(({col} - {since}) / 60000000)")
    }

    fn in_ids(param: &str) -> String {
        format!("IN (SELECT value FROM json_each({param}))")
    }

    fn in_text_list(param: &str) -> String {
        format!("IN (SELECT value FROM json_each({param}))")
    }

    fn json_path_match(_param: &str) -> String {
        // Refused before it runs (`JSON_PATH_CHECK` is `None`).
        "1 = 0".to_owned()
    }

    // One API process per file: its one dispatcher is alone.
    const GATE_LOCK: &'static str = "SELECT 1";
    const GATE_BEGIN: &'static str = "BEGIN IMMEDIATE";
    const MIGRATIONS: &'static [Step] = migrate::SQLITE;

    async fn execute<'a>(
        conn: &'a mut SqliteConnection,
        stmt: Stmt<'a>,
    ) -> Result<u64, sqlx::Error> {
        Ok(bind(stmt).execute(conn).await?.rows_affected())
    }

    fn fetch_all<'a>(
        conn: &'a mut SqliteConnection,
        stmt: Stmt<'a>,
    ) -> impl Future<Output = Result<Vec<SqliteRow>, sqlx::Error>> + Send + 'a {
        bind(stmt).fetch_all(conn)
    }

    fn fetch_optional<'a>(
        conn: &'a mut SqliteConnection,
        stmt: Stmt<'a>,
    ) -> impl Future<Output = Result<Option<SqliteRow>, sqlx::Error>> + Send + 'a {
        bind(stmt).fetch_optional(conn)
    }

    fn insert_jobs<'a>(
        conn: &'a mut SqliteConnection,
        rows: &'a [NewJob<'a>],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        insert_jobs(conn, rows)
    }

    async fn lock_jobs<'a>(
        _conn: &'a mut SqliteConnection,
        _ids: &'a [JobId],
    ) -> Result<(), sqlx::Error> {
        // One writer per file, and SQLite locks the whole file for a write transaction.
        Ok(())
    }

    fn is_conflict(_e: &sqlx::Error) -> bool {
        false
    }

    async fn has_table<'a>(
        conn: &'a mut SqliteConnection,
        table: &'a str,
    ) -> Result<bool, sqlx::Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
        )
        .bind(table)
        .fetch_one(conn)
        .await?;
        Ok(n > 0)
    }

    fn columns<'a>(
        conn: &'a mut SqliteConnection,
        table: &'a str,
    ) -> impl Future<Output = Result<Vec<String>, sqlx::Error>> + Send + 'a {
        sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
            .bind(table)
            .fetch_all(conn)
    }

    fn get_id(row: &SqliteRow, col: &str) -> Result<JobId, StoreError> {
        let text: String = row.try_get(col)?;
        text.parse().map_err(|e| StoreError::Corrupt {
            id: text.clone(),
            reason: format!("{col}: {e}"),
        })
    }

    fn get_time(row: &SqliteRow, col: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        let Some(us) = row.try_get::<Option<i64>, _>(col)? else {
            return Ok(None);
        };
        from_micros(us)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                id: row.try_get::<String, _>("id").unwrap_or_default(),
                reason: format!("{col}: {us} µs is out of range"),
            })
    }

    fn get_int(row: &SqliteRow, col: &str) -> Result<Option<i64>, sqlx::Error> {
        row.try_get(col)
    }

    fn get_text(row: &SqliteRow, col: &str) -> Result<Option<String>, sqlx::Error> {
        row.try_get(col)
    }

    fn get_bytes(row: &SqliteRow, col: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        row.try_get(col)
    }
}

/// `stmt` as a query with its parameters bound the SQLite way.
fn bind(stmt: Stmt<'_>) -> Query<'static, Sqlite, SqliteArguments> {
    let mut query = match stmt.sql {
        Cow::Borrowed(sql) => sqlx::query(sqlx::AssertSqlSafe(sql)),
        Cow::Owned(sql) => sqlx::query(sqlx::AssertSqlSafe(sql)),
    };
    for param in stmt.params {
        query = match param {
            Param::Id(id) => query.bind(id.map(|id| id.to_string())),
            Param::Ids(ids) => query.bind(json_array(ids)),
            Param::Time(t) => query.bind(t.map(micros)),
            Param::Int(n) => query.bind(n),
            Param::Text(s) => query.bind(s),
            Param::Bytes(b) => query.bind(b.to_vec()),
        };
    }
    query
}

/// `ids` as a JSON array of strings (a UUID needs no escaping).
fn json_array(ids: &[JobId]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
    format!("[{}]", quoted.join(","))
}

/// Rows per multi-row insert, largest first: a batch is cut into these few sizes so that the
/// connection's statement cache holds every statement it needs.
const INSERT_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// Inserts new jobs with as few statements as [`INSERT_CHUNKS`] allows: every statement is one
/// round trip to the database thread, which costs more than the row.
async fn insert_jobs(
    conn: &mut SqliteConnection,
    mut rows: &[NewJob<'_>],
) -> Result<(), sqlx::Error> {
    while !rows.is_empty() {
        let size = INSERT_CHUNKS
            .into_iter()
            .find(|&n| n <= rows.len())
            .unwrap_or(1);
        let (chunk, rest) = rows.split_at(size);
        let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; size].join(", ");
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, budget, timeout_ms, \
             submitted_at, payload, resolve_at, owner, run_at, priority, concurrency_key, \
             concurrency_limit, gate)
             VALUES {values}"
        ));
        let mut query = sqlx::query(sql);
        for NewJob {
            job,
            payload,
            resolve_at,
        } in chunk
        {
            query = query
                .bind(job.id.to_string())
                .bind(job.kind.as_str())
                .bind(job.status.as_str())
                .bind(job.status.progress(job.attempt))
                .bind(i64::from(job.attempt))
                .bind(i64::from(job.max_attempts))
                .bind(i64::from(job.max_attempts))
                .bind(i64::try_from(job.timeout_ms).unwrap_or(i64::MAX))
                .bind(micros(job.submitted_at))
                .bind(payload.to_string())
                .bind(resolve_at.map(micros))
                .bind(job.owner.as_deref())
                .bind(job.run_at.map(micros))
                .bind(job.priority.as_str())
                .bind(job.concurrency_key.as_deref())
                .bind(job.concurrency_limit.map(i64::from))
                .bind(job.gate.map(Gate::as_str));
        }
        query.execute(&mut *conn).await?;
        rows = rest;
    }
    Ok(())
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn from_micros(us: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).ok()
}
