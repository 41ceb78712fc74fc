//! SQLite job store: one file, WAL mode, so reads never wait for the writer.

use std::{path::Path, str::FromStr, time::Duration};

use serde_json::Value;
use sqlx::{
    Row, Sqlite, SqlitePool, Transaction,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};
use time::OffsetDateTime;

use offload_shared::{JobId, JobStatus};

use super::{
    IdempotencyKey, JobFilter, JobRecord, StoreError, StoredInput, Stretch, Unresolved, Write,
    Written, stretches,
};

const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS jobs (
        id           TEXT PRIMARY KEY,
        kind         TEXT NOT NULL,
        status       TEXT NOT NULL,
        progress     INTEGER NOT NULL,
        attempt      INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        timeout_ms   INTEGER NOT NULL,
        budget       INTEGER NOT NULL,
        runs         INTEGER NOT NULL DEFAULT 0,
        worker       TEXT,
        submitted_at INTEGER NOT NULL,
        started_at   INTEGER,
        finished_at  INTEGER,
        payload      TEXT NOT NULL,
        result       TEXT,
        error        TEXT,
        resolve_at   INTEGER
    )",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, id)",
    "CREATE TABLE IF NOT EXISTS idempotency_keys (
        key         TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        job_id      TEXT NOT NULL
    )",
];

const JOB_COLUMNS: &str = "id, kind, status, attempt, max_attempts, timeout_ms, worker, \
    submitted_at, started_at, finished_at, result, error, runs";

/// The SQLite-backed store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` and its schema.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
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
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        Ok(SqliteStore { pool })
    }

    /// The job with `id`, if any.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"));
        let row = sqlx::query(sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(&r)).transpose()
    }

    /// The job's payload and attempt budget, for a redrive.
    pub async fn input(&self, id: JobId) -> Result<Option<StoredInput>, StoreError> {
        let row = sqlx::query("SELECT payload, budget FROM jobs WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.try_get("payload")?;
        let payload = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            id: id.to_string(),
            reason: format!("payload: {e}"),
        })?;
        Ok(Some(StoredInput {
            payload,
            budget: row.try_get("budget")?,
        }))
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        // Fixed SQL: an absent filter binds NULL and matches everything.
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR id < ?3)
             ORDER BY id DESC LIMIT ?4"
        ));
        let rows = sqlx::query(sql)
            .bind(filter.status.map(JobStatus::as_str))
            .bind(filter.kind.map(|k| k.as_str()))
            .bind(filter.before.map(|id| id.to_string()))
            .bind(filter.limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    /// Pending jobs whose `resolve_at` has passed, claimed for `lease`.
    pub async fn claim_unresolved(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Unresolved>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET resolve_at = ?2
             WHERE id IN (SELECT id FROM jobs WHERE status = 'pending' AND resolve_at <= ?1
                          ORDER BY resolve_at LIMIT ?3)
             RETURNING {JOB_COLUMNS}, payload"
        ));
        let rows = sqlx::query(sql)
            .bind(micros(now))
            .bind(micros(now + lease))
            .bind(limit)
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

    /// Applies `writes` in one transaction; one result per write.
    pub async fn apply(&self, writes: &[Write]) -> Result<Vec<Written>, StoreError> {
        let mut tx = self.pool.begin().await?;
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

/// Rows per multi-row insert, largest first: a batch is cut into these few sizes so that the
/// connection's statement cache holds every statement it needs.
const INSERT_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// Inserts new jobs with as few statements as [`INSERT_CHUNKS`] allows: every statement is one
/// round trip to the database thread, which costs more than the row.
async fn insert_rows(
    tx: &mut Transaction<'_, Sqlite>,
    mut rows: &[(&JobRecord, &Value, Option<OffsetDateTime>)],
) -> Result<(), StoreError> {
    while !rows.is_empty() {
        let size = INSERT_CHUNKS
            .into_iter()
            .find(|&n| n <= rows.len())
            .unwrap_or(1);
        let (chunk, rest) = rows.split_at(size);
        let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; size].join(", ");
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, budget, timeout_ms, submitted_at, payload, resolve_at)
             VALUES {values}"
        ));
        let mut query = sqlx::query(sql);
        for (job, payload, resolve_at) in chunk {
            query = query
                .bind(job.id.to_string())
                .bind(job.kind.as_str())
                .bind(job.status.as_str())
                .bind(job.status.progress(job.attempt))
                .bind(job.attempt)
                .bind(job.max_attempts)
                .bind(job.max_attempts)
                .bind(i64::try_from(job.timeout_ms).unwrap_or(i64::MAX))
                .bind(micros(job.submitted_at))
                .bind(payload.to_string())
                .bind(resolve_at.map(micros));
        }
        query.execute(&mut **tx).await?;
        rows = rest;
    }
    Ok(())
}

async fn apply_one(tx: &mut Transaction<'_, Sqlite>, write: &Write) -> Result<Written, StoreError> {
    match write {
        Write::Insert {
            job,
            payload,
            key,
            resolve_at,
        } => {
            if let Some(IdempotencyKey { key, fingerprint }) = key {
                let claimed = sqlx::query(
                    "INSERT INTO idempotency_keys (key, fingerprint, job_id) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(fingerprint)
                .bind(job.id.to_string())
                .execute(&mut **tx)
                .await?;
                if claimed.rows_affected() == 0 {
                    let row = sqlx::query(
                        "SELECT fingerprint, job_id FROM idempotency_keys WHERE key = ?1",
                    )
                    .bind(key)
                    .fetch_one(&mut **tx)
                    .await?;
                    let job_id: String = row.try_get("job_id")?;
                    return Ok(Written::KeyTaken {
                        job_id: job_id.parse().map_err(|e| StoreError::Corrupt {
                            id: job_id.clone(),
                            reason: format!("idempotency key's job id: {e}"),
                        })?,
                        fingerprint: row.try_get("fingerprint")?,
                    });
                }
            }
            sqlx::query(
                "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, budget, timeout_ms, submitted_at, payload, resolve_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?9, ?7, ?8, ?10)",
            )
            .bind(job.id.to_string())
            .bind(job.kind.as_str())
            .bind(job.status.as_str())
            .bind(job.status.progress(job.attempt))
            .bind(job.attempt)
            .bind(job.max_attempts)
            .bind(micros(job.submitted_at))
            .bind(payload.to_string())
            .bind(i64::try_from(job.timeout_ms).unwrap_or(i64::MAX))
            .bind(resolve_at.map(micros))
            .execute(&mut **tx)
            .await?;
        }
        Write::Confirmed(ids) => {
            let list = serde_json::to_string(&ids).unwrap_or_default();
            sqlx::query(
                "UPDATE jobs SET status = 'queued', progress = attempt * 4, resolve_at = NULL
                 WHERE id IN (SELECT value FROM json_each(?1)) AND status = 'pending'",
            )
            .bind(list)
            .execute(&mut **tx)
            .await?;
        }
        Write::Delete(id) => {
            for sql in [
                "DELETE FROM jobs WHERE id = ?1",
                "DELETE FROM idempotency_keys WHERE job_id = ?1",
            ] {
                sqlx::query(sql)
                    .bind(id.to_string())
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Write::Event(ev) => {
            let at = micros(ev.at);
            let finished = ev.status.is_terminal().then_some(at);
            let started = ev.start().map(micros);
            // One statement (one round trip to the database thread): every start counts, even
            // a duplicate's; the rest applies only if it moves the job forward, so duplicates and
            // late events change nothing else. SET reads the row as it was, so each CASE sees the
            // old progress.
            sqlx::query(
                "UPDATE jobs SET runs = runs + ?11,
                     status = CASE WHEN progress < ?3 THEN ?2 ELSE status END,
                     attempt = CASE WHEN progress < ?3 THEN ?4 ELSE attempt END,
                     worker = CASE WHEN progress < ?3 THEN ?5 ELSE worker END,
                     started_at = CASE WHEN progress < ?3 THEN COALESCE(?6, started_at, ?7) ELSE started_at END,
                     finished_at = CASE WHEN progress < ?3 THEN ?8 ELSE finished_at END,
                     result = CASE WHEN progress < ?3 THEN ?9 ELSE result END,
                     error = CASE WHEN progress < ?3 THEN ?10 ELSE error END,
                     progress = MAX(progress, ?3)
                 WHERE id = ?1 AND (progress < ?3 OR ?11 > 0)",
            )
            .bind(ev.job_id.to_string())
            .bind(ev.status.as_str())
            .bind(ev.status.progress(ev.attempt))
            .bind(ev.attempt)
            .bind(&ev.worker)
            .bind(started)
            .bind(at)
            .bind(finished)
            .bind(ev.result.as_ref().map(Value::to_string))
            .bind(ev.error.as_deref())
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
                "UPDATE jobs SET status = 'pending', progress = ?2, attempt = ?3, max_attempts = ?4,
                     worker = NULL, started_at = NULL, finished_at = NULL, result = NULL, error = NULL,
                     resolve_at = ?5
                 WHERE id = ?1 AND status = 'dead'",
            )
            .bind(id.to_string())
            .bind(JobStatus::Pending.progress(*attempt))
            .bind(attempt)
            .bind(max_attempts)
            .bind(micros(*resolve_at))
            .execute(&mut **tx)
            .await?;
            if changed.rows_affected() == 0 {
                return Ok(Written::Nothing);
            }
        }
        Write::MarkDead { id, attempt, error } => {
            sqlx::query(
                "UPDATE jobs SET status = 'dead', progress = ?2, attempt = ?3, error = ?4, finished_at = ?5
                 WHERE id = ?1",
            )
            .bind(id.to_string())
            .bind(JobStatus::Dead.progress(*attempt))
            .bind(attempt)
            .bind(error)
            .bind(micros(OffsetDateTime::now_utc()))
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(Written::Done)
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn from_micros(us: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).ok()
}

fn decode(row: &SqliteRow) -> Result<JobRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |reason: String| StoreError::Corrupt {
        id: id.clone(),
        reason,
    };
    let json = |col: &str| -> Result<Option<Value>, StoreError> {
        let text: Option<String> = row.try_get(col)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(format!("{col}: {e}"))))
            .transpose()
    };
    let submitted: i64 = row.try_get("submitted_at")?;
    Ok(JobRecord {
        id: id.parse().map_err(|e| corrupt(format!("id: {e}")))?,
        kind: row
            .try_get::<String, _>("kind")?
            .parse()
            .map_err(|e| corrupt(format!("kind: {e}")))?,
        status: row
            .try_get::<String, _>("status")?
            .parse()
            .map_err(|e| corrupt(format!("status: {e}")))?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        timeout_ms: u64::try_from(row.try_get::<i64, _>("timeout_ms")?).unwrap_or(0),
        worker: row.try_get("worker")?,
        submitted_at: from_micros(submitted).ok_or_else(|| corrupt("submitted_at".into()))?,
        started_at: row
            .try_get::<Option<i64>, _>("started_at")?
            .and_then(from_micros),
        finished_at: row
            .try_get::<Option<i64>, _>("finished_at")?
            .and_then(from_micros),
        result: json("result")?,
        error: row.try_get("error")?,
        runs: row.try_get("runs")?,
    })
}
