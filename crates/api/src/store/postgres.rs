//! PostgreSQL: what several API replicas share. Ids are UUID, times TIMESTAMPTZ; each
//! replica's writer commits its own batches, and row locks keep them apart.

use std::{borrow::Cow, future::Future, str::FromStr, time::Duration};

use sqlx::{
    Connection, PgConnection, Postgres, Row,
    postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow},
    query::Query,
};
use time::OffsetDateTime;
use uuid::Uuid;

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

/// Longest wait for a pooled connection: a health check or a request fails instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the database at `url` (`postgres://…` or `postgresql://…`; a schema may be
/// chosen with `?options=-c%20search_path%3Dname`) and migrates it.
pub(super) async fn connect(url: &str) -> Result<Db<Postgres>, StoreError> {
    let options = PgConnectOptions::from_str(url)?;
    // Migrations run on a connection of their own: the migrator's advisory lock belongs to
    // the session, and closing the connection releases it whatever happened.
    let mut conn = PgConnection::connect_with(&options).await?;
    let migrated = migrate_schema(&mut conn).await;
    let _ = conn.close().await;
    migrated?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    Ok(Db::new(pool))
}

/// Migrates the first schema of the `search_path`, which must exist.
async fn migrate_schema(conn: &mut PgConnection) -> Result<(), StoreError> {
    let row =
        sqlx::query("SELECT current_schema() AS schema, current_setting('search_path') AS path")
            .fetch_one(&mut *conn)
            .await?;
    if row.try_get::<Option<String>, _>("schema")?.is_none() {
        return Err(StoreError::NoSchema(row.try_get("path")?));
    }
    migrate::run::<Postgres>(conn).await
}

/// Lists of ids are bound as `UUID[]`; rows are claimed with `SKIP LOCKED`, so a replica never
/// waits on rows another replica is busy with.
impl Dialect for Postgres {
    const CONFIRM: &'static str = confirm_sql!("= ANY($2)");
    const UNCONFIRM: &'static str = unconfirm_sql!("= ANY($2)");
    const CANCEL: &'static str = cancel_sql!(" FOR UPDATE SKIP LOCKED");
    const CLAIM: &'static str = claim_sql!(" FOR UPDATE SKIP LOCKED");
    const PURGE_JOBS: &'static str = purge_jobs_sql!(" FOR UPDATE SKIP LOCKED");
    const PURGE_KEYS_OF_JOBS: &'static str = purge_keys_of_jobs_sql!("= ANY($1)");
    const PURGE_INPUTS_OF_JOBS: &'static str = purge_inputs_of_jobs_sql!("= ANY($1)");
    const PURGE_KEYS: &'static str = purge_keys_sql!(" FOR UPDATE SKIP LOCKED");
    const PURGE_ARTIFACTS_OF_JOBS: &'static str = purge_artifacts_of_jobs_sql!("= ANY($1)");
    const PURGE_STEPS_OF_JOBS: &'static str = purge_steps_of_jobs_sql!("= ANY($1)");
    const LOCKS_ROWS: bool = true;
    const TEXT_MATCH: &'static str = "ILIKE";
    const JSON_PATH_CHECK: Option<&'static str> = Some("SELECT CAST($1 AS jsonpath) AS path");
    const DISTINCT_KINDS: &'static str = "string_agg(DISTINCT kind, ',' ORDER BY kind)";

    const RUN_MS: &'static str =
        "CAST(EXTRACT(EPOCH FROM (finished_at - started_at)) * 1000 AS BIGINT)";

    fn minutes_since(col: &str, since: &str) -> String {
        format!(
            "CAST(FLOOR(EXTRACT(EPOCH FROM ({col} - CAST({since} AS TIMESTAMPTZ))) / 60) AS BIGINT)"
        )
    }

    fn in_ids(param: &str) -> String {
        format!("= ANY({param})")
    }

    fn in_text_list(param: &str) -> String {
        format!("IN (SELECT jsonb_array_elements_text(CAST({param} AS jsonb)))")
    }

    fn json_path_match(param: &str) -> String {
        // `offload_jsonb` (migration 15) reads text jsonb refuses as no match; `@?` is lax, so a
        // path that does not fit a document is no match either.
        format!(
            "(offload_jsonb(payload) @? CAST({param} AS jsonpath) \
             OR offload_jsonb(result) @? CAST({param} AS jsonpath))"
        )
    }

    // One key for the dispatchers of every replica, released at the end of the transaction.
    const GATE_LOCK: &'static str = "SELECT pg_advisory_xact_lock(7262635410)";
    const GATE_BEGIN: &'static str = "BEGIN";
    const MIGRATIONS: &'static [Step] = migrate::POSTGRES;

    async fn execute<'a>(conn: &'a mut PgConnection, stmt: Stmt<'a>) -> Result<u64, sqlx::Error> {
        Ok(bind(stmt).execute(conn).await?.rows_affected())
    }

    fn fetch_all<'a>(
        conn: &'a mut PgConnection,
        stmt: Stmt<'a>,
    ) -> impl Future<Output = Result<Vec<PgRow>, sqlx::Error>> + Send + 'a {
        bind(stmt).fetch_all(conn)
    }

    fn fetch_optional<'a>(
        conn: &'a mut PgConnection,
        stmt: Stmt<'a>,
    ) -> impl Future<Output = Result<Option<PgRow>, sqlx::Error>> + Send + 'a {
        bind(stmt).fetch_optional(conn)
    }

    fn insert_jobs<'a>(
        conn: &'a mut PgConnection,
        rows: &'a [NewJob<'a>],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        insert_jobs(conn, rows)
    }

    fn lock_jobs<'a>(
        conn: &'a mut PgConnection,
        ids: &'a [JobId],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
        // Locked in sorted order because FOR UPDATE applies after ORDER BY.
        let ids: Vec<Uuid> = ids.iter().map(JobId::as_uuid).collect();
        async move {
            sqlx::query("SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(ids)
                .fetch_all(conn)
                .await?;
            Ok(())
        }
    }

    /// Deadlock (40P01) or serialization failure (40001): the transaction was rolled back and
    /// can simply run again.
    fn is_conflict(e: &sqlx::Error) -> bool {
        e.as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| code == "40P01" || code == "40001")
    }

    fn has_table<'a>(
        conn: &'a mut PgConnection,
        table: &'a str,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'a {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables
                            WHERE schemaname = current_schema() AND tablename = $1)",
        )
        .bind(table)
        .fetch_one(conn)
    }

    fn columns<'a>(
        conn: &'a mut PgConnection,
        table: &'a str,
    ) -> impl Future<Output = Result<Vec<String>, sqlx::Error>> + Send + 'a {
        sqlx::query_scalar(
            "SELECT column_name::TEXT FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table)
        .fetch_all(conn)
    }

    fn get_id(row: &PgRow, col: &str) -> Result<JobId, StoreError> {
        let uuid: Uuid = row.try_get(col)?;
        let mut buf = Uuid::encode_buffer();
        uuid.hyphenated()
            .encode_lower(&mut buf)
            .parse()
            .map_err(|e: uuid::Error| StoreError::Corrupt {
                id: uuid.to_string(),
                reason: format!("{col}: {e}"),
            })
    }

    fn get_time(row: &PgRow, col: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(row.try_get(col)?)
    }

    fn get_int(row: &PgRow, col: &str) -> Result<Option<i64>, sqlx::Error> {
        row.try_get(col)
    }

    fn get_text(row: &PgRow, col: &str) -> Result<Option<String>, sqlx::Error> {
        row.try_get(col)
    }

    fn get_bytes(row: &PgRow, col: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        row.try_get(col)
    }
}

/// `stmt` as a query with its parameters bound the PostgreSQL way.
fn bind(stmt: Stmt<'_>) -> Query<'static, Postgres, PgArguments> {
    let mut query = match stmt.sql {
        Cow::Borrowed(sql) => sqlx::query(sqlx::AssertSqlSafe(sql)),
        Cow::Owned(sql) => sqlx::query(sqlx::AssertSqlSafe(sql)),
    };
    for param in stmt.params {
        query = match param {
            Param::Id(id) => query.bind(id.map(|id| id.as_uuid())),
            Param::Ids(ids) => query.bind(ids.iter().map(JobId::as_uuid).collect::<Vec<_>>()),
            Param::Time(t) => query.bind(t),
            Param::Int(n) => query.bind(n),
            Param::Bytes(b) => query.bind(b.to_vec()),
            Param::Text(s) => {
                let s = s.as_deref().map(text);
                query.bind(s.as_deref())
            }
        };
    }
    query
}

/// PostgreSQL text cannot hold NUL, which a worker's error message may: one such event would
/// fail every batch it lands in, so NUL becomes U+FFFD. (JSON text escapes NUL, so payloads
/// and results are never changed.)
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Inserts new jobs in one statement, one array per column: one round trip for the lot.
async fn insert_jobs(conn: &mut PgConnection, rows: &[NewJob<'_>]) -> Result<(), sqlx::Error> {
    let column = |f: &dyn Fn(&NewJob<'_>) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    sqlx::query(
        "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, budget, timeout_ms,
                           submitted_at, payload, resolve_at, owner, run_at, priority,
                           concurrency_key, concurrency_limit, gate)
         SELECT id, kind, status, progress, attempt, max_attempts, max_attempts, timeout_ms,
                submitted_at, payload, resolve_at, owner, run_at, priority, concurrency_key,
                concurrency_limit, gate
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],
                     $7::bigint[], $8::timestamptz[], $9::text[], $10::timestamptz[], $11::text[],
                     $12::timestamptz[], $13::text[], $14::text[], $15::bigint[], $16::text[])
           AS t (id, kind, status, progress, attempt, max_attempts, timeout_ms, submitted_at,
                 payload, resolve_at, owner, run_at, priority, concurrency_key,
                 concurrency_limit, gate)",
    )
    .bind(rows.iter().map(|r| r.job.id.as_uuid()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.job.kind.as_str()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.job.status.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(column(&|r| r.job.status.progress(r.job.attempt)))
    .bind(column(&|r| i64::from(r.job.attempt)))
    .bind(column(&|r| i64::from(r.job.max_attempts)))
    .bind(column(&|r| {
        i64::try_from(r.job.timeout_ms).unwrap_or(i64::MAX)
    }))
    .bind(rows.iter().map(|r| r.job.submitted_at).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.payload.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.resolve_at).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.job.owner.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.job.run_at).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.job.priority.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.job.concurrency_key.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.job.concurrency_limit.map(i64::from))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.job.gate.map(Gate::as_str))
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}
