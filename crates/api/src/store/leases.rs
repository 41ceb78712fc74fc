//! Long jobs' leases: the running long jobs whose worker stopped renewing its lease (it died, or
//! lost the broker for longer than the lease) are started again as their next attempt, or end
//! dead when no attempt is left.

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use offload_shared::{JobId, JobStatus};

use super::{
    StoreError,
    decode::count,
    dialect::{Dialect, Stmt},
    ops::{Db, NewStep, record_step},
    sql,
};

/// A long job whose lease had lapsed, as the reaper left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lapsed {
    /// The job.
    pub id: JobId,
    /// The attempt whose lease lapsed.
    pub attempt: u32,
    /// The worker that held it.
    pub worker: Option<String>,
    /// Its latest heartbeat.
    pub heartbeat_at: Option<OffsetDateTime>,
    /// True if it was started again (`pending` as its next attempt, published by the
    /// reconciler); false if that was its last attempt and it ended dead.
    pub restarted: bool,
}

impl Lapsed {
    /// Why the job was started again, or ended dead: its `error` from then on.
    pub fn reason(&self) -> String {
        let heartbeat = self
            .heartbeat_at
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| "never".to_owned());
        let lost = format!(
            "attempt {}: worker {} stopped renewing its lease (last heartbeat {heartbeat}); it \
             died or lost the broker",
            self.attempt,
            self.worker.as_deref().unwrap_or("?"),
        );
        if self.restarted {
            format!("{lost}; started again as attempt {}", self.attempt + 1)
        } else {
            format!(
                "{lost}, on the job's last attempt (POST /jobs/{}/retry runs it again)",
                self.id
            )
        }
    }
}

impl<D: Dialect> Db<D> {
    /// See [`super::Store::extend_leases`].
    pub(super) async fn extend_leases(&self, until: OffsetDateTime) -> Result<u64, StoreError> {
        let mut conn = self.pool().acquire().await?;
        Ok(D::execute(&mut conn, Stmt::new(sql::EXTEND_LEASES).time(until)).await?)
    }

    /// See [`super::Store::reap_lapsed`].
    pub(super) async fn reap_lapsed(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Lapsed>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let look = Stmt::new(sql::LAPSED).time(now).int(i64::from(limit));
        let rows = D::fetch_all(&mut conn, look).await?;
        drop(conn);
        let mut reaped = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = D::get_id(row, "id")?;
            let corrupt = |reason: String| StoreError::Corrupt {
                id: id.to_string(),
                reason,
            };
            let attempt = count::<D>(row, "attempt").map_err(corrupt)?;
            let max_attempts = count::<D>(row, "max_attempts").map_err(corrupt)?;
            let lapsed = Lapsed {
                id,
                attempt,
                worker: D::get_text(row, "worker")?,
                heartbeat_at: D::get_time(row, "heartbeat_at")?,
                restarted: attempt < max_attempts,
            };
            let reason = lapsed.reason();
            // Each a compare-and-set on the lapsed attempt: of two replicas, one acts.
            let act = if lapsed.restarted {
                let next = attempt + 1;
                Stmt::new(sql::RESTART_LAPSED)
                    .id(id)
                    .int(JobStatus::Pending.progress(next))
                    .int(i64::from(next))
                    .str(Some(&reason))
                    .time(now)
            } else {
                Stmt::new(sql::BURY_LAPSED)
                    .id(id)
                    .int(JobStatus::Dead.progress(attempt))
                    .int(i64::from(attempt))
                    .str(Some(&reason))
                    .time(now)
            };
            // The restart and its step in the history, together.
            let mut tx = self.pool().begin().await?;
            if D::execute(&mut tx, act).await? > 0 {
                let status = if lapsed.restarted {
                    JobStatus::Retrying
                } else {
                    JobStatus::Dead
                };
                let step = NewStep {
                    worker: lapsed.worker.as_deref(),
                    error: Some(&reason),
                    ..NewStep::by_api(id, now, attempt, status)
                };
                record_step::<D>(&mut tx, step).await?;
                tx.commit().await?;
                reaped.push(lapsed);
            }
        }
        Ok(reaped)
    }
}
