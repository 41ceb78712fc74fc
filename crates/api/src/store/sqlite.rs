//! SQLite job store: one file, WAL mode, so reads never wait for the writer.

use std::{path::Path, str::FromStr, time::Duration};

use serde_json::Value;
use sqlx::{
    Row, SqlitePool,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};
use time::OffsetDateTime;

use offload_shared::{JobId, JobStatus};

use super::{JobRecord, StoreError, Write};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    progress     INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    worker       TEXT,
    submitted_at INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    payload      TEXT NOT NULL,
    result       TEXT,
    error        TEXT
)";

const SELECT_JOB: &str = "SELECT id, kind, status, attempt, max_attempts, worker, submitted_at,
    started_at, finished_at, result, error FROM jobs WHERE id = ?1";

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
        sqlx::query(SCHEMA).execute(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// The job with `id`, if any.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(SELECT_JOB)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(&r)).transpose()
    }

    /// Cheap check that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Applies `writes` in one transaction.
    pub async fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for write in writes {
            match write {
                Write::Insert(job, payload) => {
                    sqlx::query(
                        "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, submitted_at, payload)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )
                    .bind(job.id.to_string())
                    .bind(job.kind.as_str())
                    .bind(job.status.as_str())
                    .bind(job.status.progress(job.attempt))
                    .bind(job.attempt)
                    .bind(job.max_attempts)
                    .bind(micros(job.submitted_at))
                    .bind(payload.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                Write::Delete(id) => {
                    sqlx::query("DELETE FROM jobs WHERE id = ?1")
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                Write::Event(ev) => {
                    let at = micros(ev.at);
                    let finished = ev.status.is_terminal().then_some(at);
                    let started = (ev.status == JobStatus::Running).then_some(at);
                    // Applied only if it moves the job forward: duplicates and late events are no-ops.
                    sqlx::query(
                        "UPDATE jobs SET status = ?2, progress = ?3, attempt = ?4, worker = ?5,
                             started_at = COALESCE(?6, started_at, ?7),
                             finished_at = ?8, result = ?9, error = ?10
                         WHERE id = ?1 AND progress < ?3",
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
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use offload_shared::{JobEvent, JobKind};
    use serde_json::json;

    async fn store() -> SqliteStore {
        SqliteStore::connect("sqlite::memory:")
            .await
            .expect("in-memory store")
    }

    #[tokio::test]
    async fn events_only_move_jobs_forward() {
        let store = store().await;
        let id = JobId::new();
        let job = JobRecord::queued(id, JobKind::Noop, 5, OffsetDateTime::now_utc());
        store
            .apply(&[Write::Insert(job, json!({}))])
            .await
            .expect("insert");

        let running = JobEvent::now(id, 1, JobStatus::Running, "w1");
        let mut done = JobEvent::now(id, 1, JobStatus::Succeeded, "w2");
        done.result = Some(json!({"ok": 1}));
        // Succeeded arrives, then a late and a duplicate `running`: the job stays succeeded.
        store
            .apply(&[Write::Event(done.clone()), Write::Event(running.clone())])
            .await
            .expect("events");
        store
            .apply(&[Write::Event(running), Write::Event(done)])
            .await
            .expect("again");

        let got = store.get(id).await.expect("get").expect("exists");
        assert_eq!(got.status, JobStatus::Succeeded);
        assert_eq!(got.worker.as_deref(), Some("w2"));
        assert_eq!(got.result, Some(json!({"ok": 1})));
        assert!(got.started_at.is_some() && got.finished_at.is_some());
    }

    #[tokio::test]
    async fn unknown_ids_and_deleted_jobs_are_absent() {
        let store = store().await;
        assert!(store.get(JobId::new()).await.expect("get").is_none());
        let id = JobId::new();
        let job = JobRecord::queued(id, JobKind::Noop, 5, OffsetDateTime::now_utc());
        store
            .apply(&[Write::Insert(job, json!({})), Write::Delete(id)])
            .await
            .expect("apply");
        assert!(store.get(id).await.expect("get").is_none());
    }

    #[tokio::test]
    async fn other_urls_are_refused_with_the_fix() {
        let err = SqliteStore::connect("mysql://x")
            .await
            .expect_err("unsupported");
        assert!(err.to_string().contains("sqlite://"), "{err}");
    }
}
