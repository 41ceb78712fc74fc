//! PostgreSQL job store: what several API replicas share. Same rows and rules as the SQLite
//! store; each replica's writer commits its own batches, and row locks keep them apart.

use std::{borrow::Cow, str::FromStr, time::Duration};

use serde_json::Value;
use sqlx::{
    PgPool, Postgres, Row, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
};
use time::OffsetDateTime;
use uuid::Uuid;

use offload_shared::{JobId, JobStatus};

use super::{
    IdempotencyKey, JobFilter, JobRecord, StoreError, StoredInput, Stretch, Unresolved, Write,
    Written, stretches,
};

/// Schema, created idempotently at start-up. Timestamps are `TIMESTAMPTZ` (microseconds, like
/// the SQLite store's integers); JSON is kept as `TEXT` so it round-trips byte for byte (`JSONB`
/// would reorder keys and rejects `\u0000`, which a payload may carry).
const SCHEMA: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS jobs (
        id           UUID PRIMARY KEY,
        kind         TEXT NOT NULL,
        status       TEXT NOT NULL,
        progress     BIGINT NOT NULL,
        attempt      BIGINT NOT NULL,
        max_attempts BIGINT NOT NULL,
        timeout_ms   BIGINT NOT NULL,
        budget       BIGINT NOT NULL,
        runs         BIGINT NOT NULL DEFAULT 0,
        worker       TEXT,
        submitted_at TIMESTAMPTZ NOT NULL,
        started_at   TIMESTAMPTZ,
        finished_at  TIMESTAMPTZ,
        payload      TEXT NOT NULL,
        result       TEXT,
        error        TEXT,
        resolve_at   TIMESTAMPTZ
    )",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, id)",
    "CREATE TABLE IF NOT EXISTS idempotency_keys (
        key         TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        job_id      UUID NOT NULL
    )",
    // `Write::Delete` frees a job's key by job id.
    "CREATE INDEX IF NOT EXISTS idempotency_keys_by_job ON idempotency_keys (job_id)",
];

/// Advisory lock held while the schema is created: concurrent `CREATE … IF NOT EXISTS` from
/// replicas starting together can otherwise fail on PostgreSQL's catalog unique indexes.
const MIGRATION_LOCK: i64 = 0x6f66_666c_6f61_6401;

const JOB_COLUMNS: &str = "id, kind, status, attempt, max_attempts, timeout_ms, worker, \
    submitted_at, started_at, finished_at, result, error, runs";

/// Longest wait for a pooled connection: a health check or a request fails instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Times a batch is retried after a deadlock or serialization failure with another replica.
const CONFLICT_RETRIES: u32 = 5;

/// The PostgreSQL-backed store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://…` or `postgresql://…`; a schema may be
    /// chosen with `?options=-c%20search_path%3Dname`) and creates the schema if needed.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        Ok(PostgresStore { pool })
    }

    /// The job with `id`, if any.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"));
        let row = sqlx::query(sql)
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(&r)).transpose()
    }

    /// The job's payload and attempt budget, for a redrive.
    pub async fn input(&self, id: JobId) -> Result<Option<StoredInput>, StoreError> {
        let row = sqlx::query("SELECT payload, budget FROM jobs WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let corrupt = |reason: String| StoreError::Corrupt {
            id: id.to_string(),
            reason,
        };
        let text: String = row.try_get("payload")?;
        let payload = serde_json::from_str(&text).map_err(|e| corrupt(format!("payload: {e}")))?;
        Ok(Some(StoredInput {
            payload,
            budget: count(&row, "budget").map_err(corrupt)?,
        }))
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        // Fixed SQL: an absent filter binds NULL and matches everything.
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE ($1::TEXT IS NULL OR status = $1) AND ($2::TEXT IS NULL OR kind = $2)
               AND ($3::UUID IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4"
        ));
        let rows = sqlx::query(sql)
            .bind(filter.status.map(JobStatus::as_str))
            .bind(filter.kind.map(|k| k.as_str()))
            .bind(filter.before.map(|id| id.as_uuid()))
            .bind(i64::from(filter.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Pending jobs whose `resolve_at` has passed, claimed for `lease`; rows another replica
    /// is claiming are skipped.
    pub async fn claim_unresolved(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Unresolved>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET resolve_at = $2
             WHERE id IN (SELECT id FROM jobs WHERE status = 'pending' AND resolve_at <= $1
                          ORDER BY resolve_at LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING {JOB_COLUMNS}, payload"
        ));
        let rows = sqlx::query(sql)
            .bind(now)
            .bind(now + lease)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let job = decode(row)?;
                let text: String = row.try_get("payload")?;
                let payload = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    id: job.id.to_string(),
                    reason: format!("payload: {e}"),
                })?;
                Ok(Unresolved { job, payload })
            })
            .collect()
    }

    /// Cheap check that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Applies `writes` in one transaction; one result per write. Another replica's writer may
    /// commit at the same time: a batch PostgreSQL aborts as a deadlock victim is retried whole.
    pub async fn apply(&self, writes: &[Write]) -> Result<Vec<Written>, StoreError> {
        let mut retries = 0;
        loop {
            match self.apply_once(writes).await {
                Err(StoreError::Database(e)) if retries < CONFLICT_RETRIES && is_conflict(&e) => {
                    retries += 1;
                    tracing::warn!(error = %e, retries, batch = writes.len(), "job store batch conflicted with another writer; retrying");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(retries))).await;
                }
                outcome => return outcome,
            }
        }
    }

    async fn apply_once(&self, writes: &[Write]) -> Result<Vec<Written>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Lock every existing row the batch touches, in id order, before changing any: two
        // replicas' batches over the same jobs then queue behind each other instead of
        // deadlocking. (Rows locked in sorted order because FOR UPDATE applies after ORDER BY.)
        let mut touched: Vec<Uuid> = writes.iter().filter_map(touches).collect();
        touched.sort_unstable();
        touched.dedup();
        if !touched.is_empty() {
            sqlx::query("SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&touched)
                .fetch_all(&mut *tx)
                .await?;
        }
        let mut results = Vec::with_capacity(writes.len());
        for stretch in stretches(writes) {
            match stretch {
                Stretch::Inserts(rows) => {
                    insert_rows(&mut tx, &rows).await?;
                    results.extend(rows.iter().map(|_| Written::Done));
                }
                Stretch::One(write) => results.push(apply_one(&mut tx, write).await?),
            }
        }
        tx.commit().await?;
        Ok(results)
    }
}

/// Inserts new jobs in one statement, one array per column: one round trip for the lot.
async fn insert_rows(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(&JobRecord, &Value, Option<OffsetDateTime>)],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, budget, timeout_ms, submitted_at, payload, resolve_at)
         SELECT id, kind, status, progress, attempt, max_attempts, max_attempts, timeout_ms, submitted_at, payload, resolve_at
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[],
                     $7::bigint[], $8::timestamptz[], $9::text[], $10::timestamptz[])
           AS t (id, kind, status, progress, attempt, max_attempts, timeout_ms, submitted_at, payload, resolve_at)",
    )
    .bind(rows.iter().map(|(j, _, _)| j.id.as_uuid()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(j, _, _)| j.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(j, _, _)| j.status.as_str()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(j, _, _)| j.status.progress(j.attempt))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(j, _, _)| i64::from(j.attempt)).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(j, _, _)| i64::from(j.max_attempts))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(j, _, _)| i64::try_from(j.timeout_ms).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(j, _, _)| j.submitted_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, p, _)| p.to_string()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, _, r)| *r).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Creates the tables under an advisory lock, in the first schema of the `search_path`.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let row =
        sqlx::query("SELECT current_schema() AS schema, current_setting('search_path') AS path")
            .fetch_one(&mut *tx)
            .await?;
    if row.try_get::<Option<String>, _>("schema")?.is_none() {
        return Err(StoreError::NoSchema(row.try_get("path")?));
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    for statement in SCHEMA {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Deadlock (40P01) or serialization failure (40001): the transaction was rolled back and can
/// simply run again.
fn is_conflict(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

/// The existing row a write changes, if any (an insert creates its row).
fn touches(write: &Write) -> Option<Uuid> {
    match write {
        Write::Insert { .. } | Write::Confirmed(_) => None,
        Write::Delete(id) | Write::Redrive { id, .. } | Write::MarkDead { id, .. } => {
            Some(id.as_uuid())
        }
        Write::Event(ev) => Some(ev.job_id.as_uuid()),
    }
}

async fn apply_one(
    tx: &mut Transaction<'_, Postgres>,
    write: &Write,
) -> Result<Written, StoreError> {
    match write {
        Write::Insert {
            job,
            payload,
            key,
            resolve_at,
        } => {
            if let Some(IdempotencyKey { key, fingerprint }) = key {
                // Race-free across replicas: a concurrent claim of the same key waits for the
                // first transaction and then conflicts, so exactly one job gets the key.
                let claimed = sqlx::query(
                    "INSERT INTO idempotency_keys (key, fingerprint, job_id) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(text(key))
                .bind(text(fingerprint))
                .bind(job.id.as_uuid())
                .execute(&mut **tx)
                .await?;
                if claimed.rows_affected() == 0 {
                    let row = sqlx::query(
                        "SELECT fingerprint, job_id FROM idempotency_keys WHERE key = $1",
                    )
                    .bind(text(key))
                    .fetch_one(&mut **tx)
                    .await?;
                    let job_id: Uuid = row.try_get("job_id")?;
                    return Ok(Written::KeyTaken {
                        job_id: job_id_from(job_id).map_err(|reason| StoreError::Corrupt {
                            id: job_id.to_string(),
                            reason: format!("idempotency key's job id: {reason}"),
                        })?,
                        fingerprint: row.try_get("fingerprint")?,
                    });
                }
            }
            sqlx::query(
                "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, budget, timeout_ms, submitted_at, payload, resolve_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $9, $7, $8, $10)",
            )
            .bind(job.id.as_uuid())
            .bind(job.kind.as_str())
            .bind(job.status.as_str())
            .bind(job.status.progress(job.attempt))
            .bind(i64::from(job.attempt))
            .bind(i64::from(job.max_attempts))
            .bind(job.submitted_at)
            .bind(payload.to_string())
            .bind(i64::try_from(job.timeout_ms).unwrap_or(i64::MAX))
            .bind(resolve_at)
            .execute(&mut **tx)
            .await?;
        }
        Write::Confirmed(ids) => {
            sqlx::query(
                "UPDATE jobs SET status = 'queued', progress = attempt * 4, resolve_at = NULL
                 WHERE id = ANY($1) AND status = 'pending'",
            )
            .bind(ids.iter().map(JobId::as_uuid).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await?;
        }
        Write::Delete(id) => {
            for sql in [
                "DELETE FROM jobs WHERE id = $1",
                "DELETE FROM idempotency_keys WHERE job_id = $1",
            ] {
                sqlx::query(sql)
                    .bind(id.as_uuid())
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Write::Event(ev) => {
            let finished = ev.status.is_terminal().then_some(ev.at);
            let started = ev.start();
            // One statement (one round trip): every start counts, even a duplicate's; the rest
            // applies only if it moves the job forward, so duplicates and late events change
            // nothing else. SET reads the row as it was, so each CASE sees the old progress.
            // Atomic per row: a concurrent writer's update is waited for, then the condition is
            // checked again against the row it committed.
            sqlx::query(
                "UPDATE jobs SET runs = runs + $11,
                     status = CASE WHEN progress < $3 THEN $2 ELSE status END,
                     attempt = CASE WHEN progress < $3 THEN $4 ELSE attempt END,
                     worker = CASE WHEN progress < $3 THEN $5 ELSE worker END,
                     started_at = CASE WHEN progress < $3 THEN COALESCE($6, started_at, $7) ELSE started_at END,
                     finished_at = CASE WHEN progress < $3 THEN $8 ELSE finished_at END,
                     result = CASE WHEN progress < $3 THEN $9 ELSE result END,
                     error = CASE WHEN progress < $3 THEN $10 ELSE error END,
                     progress = GREATEST(progress, $3)
                 WHERE id = $1 AND (progress < $3 OR $11 > 0)",
            )
            .bind(ev.job_id.as_uuid())
            .bind(ev.status.as_str())
            .bind(ev.status.progress(ev.attempt))
            .bind(i64::from(ev.attempt))
            .bind(text(&ev.worker))
            .bind(started)
            .bind(ev.at)
            .bind(finished)
            .bind(ev.result.as_ref().map(Value::to_string))
            .bind(ev.error.as_deref().map(text))
            .bind(i64::from(started.is_some()))
            .execute(&mut **tx)
            .await?;
        }
        Write::Redrive {
            id,
            attempt,
            max_attempts,
            resolve_at,
        } => {
            let changed = sqlx::query(
                "UPDATE jobs SET status = 'pending', progress = $2, attempt = $3, max_attempts = $4,
                     worker = NULL, started_at = NULL, finished_at = NULL, result = NULL, error = NULL,
                     resolve_at = $5
                 WHERE id = $1 AND status = 'dead'",
            )
            .bind(id.as_uuid())
            .bind(JobStatus::Pending.progress(*attempt))
            .bind(i64::from(*attempt))
            .bind(i64::from(*max_attempts))
            .bind(resolve_at)
            .execute(&mut **tx)
            .await?;
            if changed.rows_affected() == 0 {
                return Ok(Written::Nothing);
            }
        }
        Write::MarkDead { id, attempt, error } => {
            sqlx::query(
                "UPDATE jobs SET status = 'dead', progress = $2, attempt = $3, error = $4, finished_at = $5
                 WHERE id = $1",
            )
            .bind(id.as_uuid())
            .bind(JobStatus::Dead.progress(*attempt))
            .bind(i64::from(*attempt))
            .bind(text(error))
            .bind(OffsetDateTime::now_utc())
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(Written::Done)
}

/// PostgreSQL text cannot hold NUL, which a worker's error message may: one such event would
/// fail every batch it lands in, so NUL becomes U+FFFD.
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn job_id_from(id: Uuid) -> Result<JobId, String> {
    let mut buf = Uuid::encode_buffer();
    id.hyphenated()
        .encode_lower(&mut buf)
        .parse()
        .map_err(|e: uuid::Error| e.to_string())
}

/// A non-negative `BIGINT` column as the `u32` the record holds.
fn count(row: &PgRow, col: &str) -> Result<u32, String> {
    let n: i64 = row.try_get(col).map_err(|e| format!("{col}: {e}"))?;
    u32::try_from(n).map_err(|e| format!("{col} {n}: {e}"))
}

fn decode(row: &PgRow) -> Result<JobRecord, StoreError> {
    let uuid: Uuid = row.try_get("id")?;
    let corrupt = |reason: String| StoreError::Corrupt {
        id: uuid.to_string(),
        reason,
    };
    let json = |col: &str| -> Result<Option<Value>, StoreError> {
        let text: Option<String> = row.try_get(col)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(format!("{col}: {e}"))))
            .transpose()
    };
    Ok(JobRecord {
        id: job_id_from(uuid).map_err(|e| corrupt(format!("id: {e}")))?,
        kind: row
            .try_get::<String, _>("kind")?
            .parse()
            .map_err(|e| corrupt(format!("kind: {e}")))?,
        status: row
            .try_get::<String, _>("status")?
            .parse()
            .map_err(|e| corrupt(format!("status: {e}")))?,
        attempt: count(row, "attempt").map_err(corrupt)?,
        max_attempts: count(row, "max_attempts").map_err(corrupt)?,
        timeout_ms: u64::try_from(row.try_get::<i64, _>("timeout_ms")?).unwrap_or(0),
        worker: row.try_get("worker")?,
        submitted_at: row.try_get("submitted_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        result: json("result")?,
        error: row.try_get("error")?,
        runs: count(row, "runs").map_err(corrupt)?,
    })
}
