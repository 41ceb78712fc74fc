//! The schedules table, beside the job writer: a tick is one transaction that moves the
//! schedule's `next_run_at` on only if it is still the one read (a compare-and-set, so of two
//! API replicas ticking the same schedule one makes the job) and inserts the tick's job in the
//! same transaction, so a tick is never lost (the schedule moved on without its job) nor made
//! twice (a job without the schedule moving on).

use std::borrow::Cow;

use serde_json::Value;
use time::OffsetDateTime;

use offload_shared::{JobId, JobStatus};

use super::{
    JobRecord, StoreError,
    dialect::{Dialect, NewJob, Stmt},
    ops::Db,
};

/// Whether a tick makes a job while the schedule's previous job has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// The tick is skipped (counted in `skipped`).
    Skip,
    /// The tick makes a job anyway.
    Allow,
}

impl Overlap {
    /// The name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "skip" => Some(Overlap::Skip),
            "allow" => Some(Overlap::Allow),
            _ => None,
        }
    }
}

/// A schedule as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    /// Its unique name.
    pub name: String,
    /// Its cron expression.
    pub cron: String,
    /// Its IANA time zone.
    pub timezone: String,
    /// What a tick does while the previous job runs.
    pub overlap: Overlap,
    /// The job each tick makes: a `POST /jobs` body (kind, payload, options), checked again at
    /// each tick against the kinds of the moment.
    pub job: Value,
    /// True while paused: no tick makes a job.
    pub paused: bool,
    /// Its next tick; `None` when it never ticks again.
    pub next_run_at: Option<OffsetDateTime>,
    /// The tick (or run-now) that made the latest job.
    pub last_run_at: Option<OffsetDateTime>,
    /// The latest job it made.
    pub last_job_id: Option<JobId>,
    /// Jobs it made.
    pub runs: u64,
    /// Ticks it skipped: the previous job still ran (`overlap: skip`), or its job could not be
    /// made (see `last_error`).
    pub skipped: u64,
    /// Why the latest skipped tick made no job, if it was not the overlap.
    pub last_error: Option<String>,
    /// The key that created it: the owner of its jobs.
    pub owner: Option<String>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

/// What one tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// It made its job.
    Made,
    /// The previous job has not finished and the schedule skips overlaps.
    Overlapped,
    /// The job could not be made (recorded in `last_error`).
    Failed,
    /// Someone else ticked it first (another replica), or it was paused, changed or deleted.
    Taken,
}

/// The columns a [`ScheduleRecord`] decodes from.
macro_rules! schedule_columns {
    () => {
        "SELECT name, cron, timezone, overlap, job, paused, next_run_at, last_run_at, \
         last_job_id, runs, skipped, last_error, owner, created_at, updated_at FROM schedules"
    };
}

const INSERT: &str = "INSERT INTO schedules (name, cron, timezone, overlap, job, paused, \
         next_run_at, runs, skipped, owner, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, $8, $9, $10)
     ON CONFLICT (name) DO NOTHING";

const ALL: &str = concat!(schedule_columns!(), " ORDER BY name");

const ONE: &str = concat!(schedule_columns!(), " WHERE name = $1");

const DUE: &str = concat!(
    schedule_columns!(),
    " WHERE paused = 0 AND next_run_at IS NOT NULL AND next_run_at <= $1 \
      ORDER BY next_run_at LIMIT $2"
);

const NEXT: &str = "SELECT MIN(next_run_at) AS next_run_at FROM schedules WHERE paused = 0";

/// Pauses (`$2` = 1) or resumes (`$2` = 0, with `$3` the next tick from now). Only a paused
/// schedule's next tick is reset: a resume of a running one must not move a tick back that a
/// replica has just made.
const SET_PAUSED: &str = "UPDATE schedules SET paused = $2, \
         next_run_at = CASE WHEN $2 = 0 AND paused <> 0 THEN $3 ELSE next_run_at END, \
         updated_at = $4
     WHERE name = $1";

const DELETE: &str = "DELETE FROM schedules WHERE name = $1";

/// The tick's compare-and-set: `$2` the `next_run_at` read, `$3` the next one.
const ADVANCE_MADE: &str = "UPDATE schedules SET next_run_at = $3, last_run_at = $4, \
         last_job_id = $5, runs = runs + 1, last_error = NULL, updated_at = $6
     WHERE name = $1 AND next_run_at = $2 AND paused = 0";

const ADVANCE_SKIPPED: &str = "UPDATE schedules SET next_run_at = $3, skipped = skipped + 1, \
         last_error = $4, updated_at = $5
     WHERE name = $1 AND next_run_at = $2 AND paused = 0";

const RAN_NOW: &str = "UPDATE schedules SET last_run_at = $2, last_job_id = $3, runs = runs + 1, \
         updated_at = $2
     WHERE name = $1";

const JOB_STATUS: &str = "SELECT status FROM jobs WHERE id = $1";

/// A tick's job, ready to insert.
#[derive(Debug, Clone)]
pub struct TickJob {
    /// The job's row (`scheduled`, its `run_at` the tick).
    pub job: JobRecord,
    /// Its payload.
    pub payload: Value,
}

impl TickJob {
    /// Its row to insert: due at its tick, unless a concurrency limit holds it.
    fn row(&self) -> NewJob<'_> {
        NewJob {
            job: &self.job,
            payload: &self.payload,
            resolve_at: self.job.run_at.and_then(|at| self.job.resolve_at(at)),
        }
    }
}

impl<D: Dialect> Db<D> {
    /// Records a new schedule; false if the name is taken.
    pub(super) async fn create_schedule(&self, s: &ScheduleRecord) -> Result<bool, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let stmt = Stmt::new(INSERT)
            .str(Some(&s.name))
            .str(Some(&s.cron))
            .str(Some(&s.timezone))
            .str(Some(s.overlap.as_str()))
            .text(Some(Cow::Owned(s.job.to_string())))
            .int(i64::from(s.paused))
            .time(s.next_run_at)
            .str(s.owner.as_deref())
            .time(s.created_at)
            .time(s.updated_at);
        Ok(D::execute(&mut conn, stmt).await? > 0)
    }

    /// Every schedule, by name.
    pub(super) async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let rows = D::fetch_all(&mut conn, Stmt::new(ALL)).await?;
        rows.iter().map(schedule_row::<D>).collect()
    }

    /// The schedule `name`, if any.
    pub(super) async fn schedule(&self, name: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let row = D::fetch_optional(&mut conn, Stmt::new(ONE).str(Some(name))).await?;
        row.as_ref().map(schedule_row::<D>).transpose()
    }

    /// Up to `limit` unpaused schedules whose next tick is at or before `now`, earliest first.
    pub(super) async fn due_schedules(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let stmt = Stmt::new(DUE).time(now).int(i64::from(limit));
        let rows = D::fetch_all(&mut conn, stmt).await?;
        rows.iter().map(schedule_row::<D>).collect()
    }

    /// The earliest next tick of any unpaused schedule.
    pub(super) async fn next_tick(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let row = D::fetch_optional(&mut conn, Stmt::new(NEXT)).await?;
        match row {
            Some(row) => D::get_time(&row, "next_run_at"),
            None => Ok(None),
        }
    }

    /// Pauses or resumes `name` (a resumed schedule next ticks at `next`); false if unknown.
    pub(super) async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let stmt = Stmt::new(SET_PAUSED)
            .str(Some(name))
            .int(i64::from(paused))
            .time(next)
            .time(now);
        Ok(D::execute(&mut conn, stmt).await? > 0)
    }

    /// Deletes `name`; false if unknown. Its jobs stay.
    pub(super) async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool().acquire().await?;
        Ok(D::execute(&mut conn, Stmt::new(DELETE).str(Some(name))).await? > 0)
    }

    /// One tick of `schedule` (as read, due at its `next_run_at`): in one transaction, moves
    /// its next tick to `next` if it is still the one read, and inserts `job` (`Err` of the
    /// job: the reason no job could be made). With [`Overlap::Skip`], a previous job that has
    /// not finished skips the tick.
    pub(super) async fn tick_schedule(
        &self,
        schedule: &ScheduleRecord,
        next: Option<OffsetDateTime>,
        job: Result<&TickJob, &str>,
        now: OffsetDateTime,
    ) -> Result<Tick, StoreError> {
        let mut tx = self.pool().begin().await?;
        let running = match (schedule.overlap, schedule.last_job_id) {
            (Overlap::Skip, Some(last)) => {
                let row = D::fetch_optional(&mut tx, Stmt::new(JOB_STATUS).id(last)).await?;
                let status = match &row {
                    Some(row) => D::get_text(row, "status")?,
                    None => None,
                };
                status
                    .and_then(|s| s.parse::<JobStatus>().ok())
                    .is_some_and(|s| !s.is_terminal())
            }
            _ => false,
        };
        let (made, error) = match job {
            Ok(job) if !running => (Some(job), None),
            Ok(_) => (None, None),
            Err(why) => (None, Some(why)),
        };
        let advance = match made {
            Some(job) => Stmt::new(ADVANCE_MADE)
                .str(Some(&schedule.name))
                .time(schedule.next_run_at)
                .time(next)
                .time(schedule.next_run_at)
                .text(Some(Cow::Owned(job.job.id.to_string())))
                .time(now),
            None => Stmt::new(ADVANCE_SKIPPED)
                .str(Some(&schedule.name))
                .time(schedule.next_run_at)
                .time(next)
                .str(error)
                .time(now),
        };
        if D::execute(&mut tx, advance).await? == 0 {
            return Ok(Tick::Taken);
        }
        let tick = match made {
            Some(job) => {
                D::insert_jobs(&mut tx, &[job.row()]).await?;
                Tick::Made
            }
            None if error.is_some() => Tick::Failed,
            None => Tick::Overlapped,
        };
        tx.commit().await?;
        Ok(tick)
    }

    /// Makes `job` for `name` now (not a tick: its next tick stays); false if unknown.
    pub(super) async fn run_schedule_now(
        &self,
        name: &str,
        job: &TickJob,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let ran = Stmt::new(RAN_NOW)
            .str(Some(name))
            .time(now)
            .text(Some(Cow::Owned(job.job.id.to_string())));
        if D::execute(&mut tx, ran).await? == 0 {
            return Ok(false);
        }
        D::insert_jobs(&mut tx, &[job.row()]).await?;
        tx.commit().await?;
        Ok(true)
    }
}

fn schedule_row<D: Dialect>(row: &D::Row) -> Result<ScheduleRecord, StoreError> {
    let name = D::get_text(row, "name")?.unwrap_or_default();
    let bad = |reason: String| StoreError::Corrupt {
        id: format!("schedule {name}"),
        reason,
    };
    let text = |col: &str| -> Result<String, StoreError> {
        D::get_text(row, col)?.ok_or_else(|| bad(format!("{col}: NULL")))
    };
    let count = |col: &str| -> Result<u64, StoreError> {
        Ok(u64::try_from(D::get_int(row, col)?.unwrap_or(0)).unwrap_or(0))
    };
    let overlap = text("overlap")?;
    Ok(ScheduleRecord {
        cron: text("cron")?,
        timezone: text("timezone")?,
        overlap: Overlap::parse(&overlap).ok_or_else(|| bad(format!("overlap {overlap:?}")))?,
        job: serde_json::from_str(&text("job")?).map_err(|e| bad(format!("job: {e}")))?,
        paused: D::get_int(row, "paused")?.unwrap_or(0) != 0,
        next_run_at: D::get_time(row, "next_run_at")?,
        last_run_at: D::get_time(row, "last_run_at")?,
        last_job_id: D::get_text(row, "last_job_id")?
            .map(|id| id.parse().map_err(|e| bad(format!("last_job_id: {e}"))))
            .transpose()?,
        runs: count("runs")?,
        skipped: count("skipped")?,
        last_error: D::get_text(row, "last_error")?,
        owner: D::get_text(row, "owner")?,
        created_at: D::get_time(row, "created_at")?
            .ok_or_else(|| bad("created_at: NULL".into()))?,
        updated_at: D::get_time(row, "updated_at")?
            .ok_or_else(|| bad("updated_at: NULL".into()))?,
        name,
    })
}
