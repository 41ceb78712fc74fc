//! Cron schedules: a name, a cron expression (seconds optional) in an IANA time zone, and the
//! job each tick makes (a `POST /jobs` body). Kept in the store; every API replica runs
//! [`run_ticker`], and a tick is one transaction that moves the schedule on only if it is still
//! the one read and inserts the tick's job, so each tick makes exactly one job across replicas
//! and restarts. The job is recorded `scheduled` at the tick and published by the reconciler
//! (`crate::accept`), like a `run_at` job, so a tick whose publish is interrupted is published
//! later, never lost.
//!
//! **Misfires:** a tick missed while every API was down (or the store was away) runs once, as
//! soon as an API is back; the further ticks it missed are skipped, and the schedule goes on
//! from its next tick after now. A paused schedule makes no jobs; resuming it goes on from the
//! next tick after the resume (ticks missed while paused are not made up).
//!
//! **Overlap:** `allow` makes every tick's job; `skip` makes no job while the schedule's
//! previous job has not finished (the tick is counted in `skipped`).

pub mod timing;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use offload_shared::{JobId, JobStatus};

use crate::{
    error::ApiError,
    state::AppState,
    store::schedules::{Overlap, ScheduleRecord, Tick, TickJob},
    submit::{BodyFormat, NewJob},
};

pub use timing::Timing;

/// Most schedules one deployment keeps.
pub const MAX_SCHEDULES: usize = 1000;

/// Longest schedule name.
pub const MAX_NAME_LEN: usize = 64;

/// Most due schedules one ticker pass takes.
const TICK_BATCH: u32 = 100;

/// Longest the ticker sleeps between looks (a schedule created or resumed wakes it sooner).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The body of `POST /schedules`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// Its unique name: 1–64 of `a-z 0-9 _ . -`, starting with a letter or digit.
    #[schema(example = "nightly-report")]
    pub name: String,
    /// A cron expression: 5 fields (minute hour day-of-month month day-of-week) or 6 with
    /// seconds first.
    #[schema(example = "0 30 2 * * *")]
    pub cron: String,
    /// The IANA time zone the expression is read in (default `UTC`).
    #[serde(default)]
    #[schema(example = "Europe/Paris")]
    pub timezone: Option<String>,
    /// `skip`: no job while the previous one has not finished; `allow` (default): a job
    /// every tick.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "skip")]
    pub overlap: Option<Overlap>,
    /// Created paused (default false).
    #[serde(default)]
    pub paused: Option<bool>,
    /// The job each tick makes: a `POST /jobs` body without `run_at` and `delay_s`.
    #[schema(value_type = Object)]
    pub job: Value,
}

/// A schedule, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    /// Its name.
    pub name: String,
    /// Its cron expression.
    pub cron: String,
    /// Its time zone.
    pub timezone: String,
    /// `skip` or `allow`.
    #[schema(value_type = String)]
    pub overlap: Overlap,
    /// The job each tick makes.
    #[schema(value_type = Object)]
    pub job: Value,
    /// True while paused.
    pub paused: bool,
    /// Its next tick (absent while paused, or when the expression never matches again).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_run_at: Option<OffsetDateTime>,
    /// When the latest job it made was due.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_run_at: Option<OffsetDateTime>,
    /// The latest job it made.
    #[schema(value_type = Option<String>)]
    pub last_job_id: Option<JobId>,
    /// Jobs it made.
    pub runs: u64,
    /// Ticks that made no job: the previous one still ran (`overlap: skip`), or the job could
    /// not be made (`last_error` says why).
    pub skipped: u64,
    /// Why the latest tick made no job, when it was not an overlap.
    pub last_error: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<ScheduleRecord> for ScheduleView {
    fn from(s: ScheduleRecord) -> Self {
        ScheduleView {
            next_run_at: if s.paused { None } else { s.next_run_at },
            name: s.name,
            cron: s.cron,
            timezone: s.timezone,
            overlap: s.overlap,
            job: s.job,
            paused: s.paused,
            last_run_at: s.last_run_at,
            last_job_id: s.last_job_id,
            runs: s.runs,
            skipped: s.skipped,
            last_error: s.last_error,
            created_at: s.created_at,
        }
    }
}

/// `[a-z0-9][a-z0-9_.-]{0,63}`.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let first = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if first && rest && name.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!(
            "schedule name {:?} is not valid: use 1 to {MAX_NAME_LEN} of a-z 0-9 _ . -, starting \
             with a letter or digit",
            name.chars().take(80).collect::<String>()
        )))
    }
}

impl ScheduleRequest {
    /// Checks the request against the kinds of the moment: a valid name, expression, zone and
    /// job. The record of a schedule created at `now` by `owner`.
    pub async fn check(
        self,
        state: &AppState,
        owner: Option<String>,
        now: OffsetDateTime,
    ) -> Result<ScheduleRecord, ApiError> {
        check_name(&self.name)?;
        let timezone = self.timezone.unwrap_or_else(|| "UTC".to_owned());
        let timing = Timing::parse(&self.cron, &timezone).map_err(ApiError::Invalid)?;
        if let Some(object) = self.job.as_object() {
            for field in ["run_at", "delay_s"] {
                if object.contains_key(field) {
                    return Err(ApiError::Invalid(format!(
                        "job.{field}: a schedule's jobs run at its ticks; leave out run_at and delay_s"
                    )));
                }
            }
        }
        job_of(state, &self.job).await.map_err(|e| match e {
            ApiError::Invalid(why) => ApiError::Invalid(format!("job: {why}")),
            other => other,
        })?;
        let paused = self.paused.unwrap_or(false);
        Ok(ScheduleRecord {
            name: self.name,
            cron: self.cron,
            timezone,
            overlap: self.overlap.unwrap_or(Overlap::Allow),
            job: self.job,
            paused,
            next_run_at: timing.next_after(now),
            last_run_at: None,
            last_job_id: None,
            runs: 0,
            skipped: 0,
            last_error: None,
            owner,
            created_at: now,
            updated_at: now,
        })
    }
}

/// The template `job` read as a `POST /jobs` body, against the kinds of the moment (reloaded
/// once if its kind is unknown: another replica may have recorded it).
async fn job_of(state: &AppState, job: &Value) -> Result<NewJob, ApiError> {
    if !job.is_object() {
        return Err(ApiError::Invalid(
            "job must be an object: the body of POST /jobs".to_owned(),
        ));
    }
    let body = job.to_string();
    let max_timeout_s = state.settings.max_job_timeout_s;
    let parse = || {
        NewJob::parse(
            BodyFormat::Json,
            body.as_bytes(),
            &state.kinds,
            max_timeout_s,
        )
    };
    match parse() {
        Err(ApiError::UnknownKind(_)) if state.kinds.reload(&state.store).await => parse(),
        parsed => parsed,
    }
}

/// The job a tick (or a run-now) of `schedule` makes: `scheduled`, due at `due`, so the
/// reconciler publishes it.
pub async fn tick_job(
    state: &AppState,
    schedule: &ScheduleRecord,
    due: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<TickJob, ApiError> {
    let new = job_of(state, &schedule.job).await?;
    let mut job = new
        .record(JobId::new(), now, state.settings.job_timeout_s)
        .owned_by(schedule.owner.clone());
    job.status = JobStatus::Scheduled;
    job.run_at = Some(due);
    Ok(TickJob {
        job,
        payload: new.payload,
    })
}

/// Ticks every due schedule, for as long as the API runs; sleeps until the next tick (at most
/// [`MAX_WAIT`], or until a schedule is created or resumed).
pub async fn run_ticker(state: AppState) {
    loop {
        let wait = match tick_due(&state).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(error = %e, "could not tick the schedules; trying again in a second");
                MAX_WAIT
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.schedules_changed.notified() => {}
            () = state.stopping.cancelled() => return,
        }
    }
}

/// One pass: ticks the due schedules; how long to wait for the next.
async fn tick_due(state: &AppState) -> Result<Duration, ApiError> {
    let now = OffsetDateTime::now_utc();
    let due = state.store.due_schedules(now, TICK_BATCH).await?;
    let mut made = 0;
    for schedule in &due {
        match tick_one(state, schedule, now).await {
            Ok(true) => made += 1,
            Ok(false) => {}
            // Left due: the next pass (within a second) tries it again.
            Err(e) => {
                tracing::warn!(schedule = %schedule.name, error = %e, "could not tick a schedule; trying again");
            }
        }
    }
    if made > 0 {
        state.reconcile_soon.notify_one();
        state.gate_changed.notify_one();
    }
    if due.len() == TICK_BATCH as usize {
        return Ok(Duration::ZERO);
    }
    let next = state.store.next_tick().await?;
    let now = OffsetDateTime::now_utc();
    Ok(next.map_or(MAX_WAIT, |t| {
        Duration::try_from(t - now)
            .unwrap_or_default()
            .min(MAX_WAIT)
    }))
}

/// One due schedule's tick; true if it made its job. A store error leaves the tick due.
async fn tick_one(
    state: &AppState,
    schedule: &ScheduleRecord,
    now: OffsetDateTime,
) -> Result<bool, ApiError> {
    // Stored only after they were checked; a schedule that no longer reads never ticks
    // again, and says why.
    let timing = Timing::parse(&schedule.cron, &schedule.timezone);
    // Misfires: this tick runs once; the ticks missed since are skipped.
    let next = timing.as_ref().ok().and_then(|t| t.next_after(now));
    let due_at = schedule.next_run_at.unwrap_or(now);
    let job = match &timing {
        Ok(_) => match tick_job(state, schedule, due_at, now).await {
            Ok(job) => Ok(job),
            Err(e @ ApiError::Store(_)) => return Err(e),
            Err(e) => Err(e.to_string()),
        },
        Err(why) => Err(why.clone()),
    };
    let tick = state
        .store
        .tick_schedule(schedule, next, job.as_ref().map_err(String::as_str), now)
        .await?;
    match tick {
        Tick::Made => {
            state.metrics.schedule_tick("made");
            tracing::debug!(schedule = %schedule.name, "schedule ticked");
            return Ok(true);
        }
        Tick::Overlapped => {
            state.metrics.schedule_tick("overlapped");
            tracing::info!(schedule = %schedule.name, "tick skipped: the previous job has not finished (overlap: skip)");
        }
        Tick::Failed => {
            state.metrics.schedule_tick("failed");
            tracing::warn!(schedule = %schedule.name, error = job.err().unwrap_or_default(), "tick made no job");
        }
        Tick::Taken => {}
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for good in ["nightly", "a", "9-to-5", "report.daily_1", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Nightly",
            "-a",
            "has space",
            "a/b",
            &"x".repeat(65),
            "ünï",
        ] {
            assert!(
                matches!(check_name(bad), Err(ApiError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
