//! Every store operation, written once for both databases over the [`Dialect`] seam.

use std::{borrow::Cow, time::Duration};

use sqlx::Pool;
use time::OffsetDateTime;

use offload_shared::{JobEvent, JobId, JobKind, JobStatus, limits::first_chars};

use super::{
    CancelFilter, JobFilter, JobRecord, JobSummary, NewArtifact, Purged, StoreError,
    StoredArtifact, StoredInput, Unresolved, Write, Written,
    decode::{count, job, json, summary},
    dialect::{Dialect, NewJob, Stmt},
    inputs, sql,
};

/// Times a batch is retried after a deadlock or serialization failure with another replica.
const CONFLICT_RETRIES: u32 = 5;

/// A store on database `D`.
pub(crate) struct Db<D: Dialect> {
    pool: Pool<D>,
}

impl<D: Dialect> Clone for Db<D> {
    fn clone(&self) -> Self {
        Db {
            pool: self.pool.clone(),
        }
    }
}

impl<D: Dialect> std::fmt::Debug for Db<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("database", &D::NAME).finish()
    }
}

impl<D: Dialect> Db<D> {
    /// A store on `pool`, whose schema is up to date.
    pub(super) fn new(pool: Pool<D>) -> Self {
        Db { pool }
    }

    /// The pool: for the registry's operations, and tests that reach under the store.
    pub(super) fn pool(&self) -> &Pool<D> {
        &self.pool
    }

    /// The job with `id`, if any.
    pub(super) async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row = D::fetch_optional(&mut conn, Stmt::new(sql::GET_JOB).id(id)).await?;
        let Some(mut job) = row.map(|r| job::<D>(&r)).transpose()? else {
            return Ok(None);
        };
        let rows = D::fetch_all(&mut conn, Stmt::new(sql::GET_INPUT_META).id(id)).await?;
        job.inputs = rows
            .iter()
            .map(|row| {
                let text = |col: &str| -> Result<String, StoreError> {
                    Ok(D::get_text(row, col)?.unwrap_or_default())
                };
                Ok(super::InputMeta {
                    field: text("field")?,
                    filename: D::get_text(row, "filename")?,
                    content_type: text("content_type")?,
                    size: u64::try_from(D::get_int(row, "size")?.unwrap_or(0)).unwrap_or(0),
                    sha256: text("sha256")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Some(job))
    }

    /// The job's payload and attempt budget, for a redrive.
    pub(super) async fn input(&self, id: JobId) -> Result<Option<StoredInput>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row = D::fetch_optional(&mut conn, Stmt::new(sql::GET_INPUT).id(id)).await?;
        let Some(row) = row else { return Ok(None) };
        let corrupt = |reason: String| StoreError::Corrupt {
            id: id.to_string(),
            reason,
        };
        Ok(Some(StoredInput {
            payload: json::<D>(&row, "payload")?.ok_or_else(|| corrupt("payload: NULL".into()))?,
            budget: count::<D>(&row, "budget").map_err(corrupt)?,
            files: inputs::load::<D>(&mut conn, id).await?,
        }))
    }

    /// Jobs matching `filter`, newest first, as summaries.
    pub(super) async fn list(&self, filter: &JobFilter) -> Result<Vec<JobSummary>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let stmt = Stmt::new(sql::LIST)
            .str(filter.status.map(JobStatus::as_str))
            .str(filter.kind.as_ref().map(|k| k.as_str()))
            .maybe_id(filter.before)
            .int(i64::from(filter.limit))
            .str(filter.owner.as_deref());
        let rows = D::fetch_all(&mut conn, stmt).await?;
        rows.iter().map(summary::<D>).collect()
    }

    /// True while job `id` is unresolved: recorded, its publish not confirmed yet.
    pub(super) async fn unresolved(&self, id: JobId) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row = D::fetch_optional(&mut conn, Stmt::new(sql::UNRESOLVED).id(id)).await?;
        Ok(row.is_some())
    }

    /// See [`super::Store::next_resolve_at`].
    pub(super) async fn next_resolve_at(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row = D::fetch_optional(&mut conn, Stmt::new(sql::NEXT_RESOLVE_AT)).await?;
        match row {
            Some(row) => D::get_time(&row, "next"),
            None => Ok(None),
        }
    }

    /// Cheap check that the database answers.
    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        D::execute(&mut conn, Stmt::new(sql::PING)).await?;
        Ok(())
    }

    /// Applies `writes` in one transaction; one result per write. Another replica's writer may
    /// commit at the same time: a batch the database aborts as a deadlock victim is retried.
    pub(super) async fn apply(&self, writes: &[Write]) -> Result<Vec<Written>, StoreError> {
        let mut retries = 0;
        loop {
            match self.apply_once(writes).await {
                Err(StoreError::Database(e))
                    if retries < CONFLICT_RETRIES && D::is_conflict(&e) =>
                {
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
        if D::LOCKS_ROWS {
            // Every existing row the batch touches, in id order, before changing any: two
            // replicas' batches over the same jobs then queue behind each other instead of
            // deadlocking.
            let mut touched: Vec<JobId> = writes.iter().flat_map(touches).collect();
            touched.sort_unstable();
            touched.dedup();
            if !touched.is_empty() {
                D::lock_jobs(&mut tx, &touched).await?;
            }
        }
        let mut results = Vec::with_capacity(writes.len());
        for stretch in stretches(writes) {
            match stretch {
                Stretch::Inserts(rows) => {
                    D::insert_jobs(&mut tx, &rows).await?;
                    results.extend(rows.iter().map(|_| Written::Done));
                }
                Stretch::One(write) => results.push(apply_one::<D>(&mut tx, write).await?),
            }
        }
        tx.commit().await?;
        Ok(results)
    }

    /// See [`super::Store::claim_unresolved`].
    pub(super) async fn claim_unresolved(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Unresolved>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let stmt = Stmt::new(D::CLAIM)
            .time(now)
            .time(now + lease)
            .int(i64::from(limit));
        let rows = D::fetch_all(&mut conn, stmt).await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let job = job::<D>(row)?;
                let payload = json::<D>(row, "payload")?.ok_or_else(|| StoreError::Corrupt {
                    id: job.id.to_string(),
                    reason: "payload: NULL".into(),
                })?;
                Ok(Unresolved {
                    job,
                    payload,
                    files: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        for u in &mut claimed {
            u.files = inputs::load::<D>(&mut conn, u.job.id).await?;
        }
        // RETURNING has no order; ids sort by submission.
        claimed.sort_unstable_by_key(|u| u.job.id);
        Ok(claimed)
    }

    /// See [`super::Store::cancel`].
    pub(super) async fn cancel(
        &self,
        filter: &CancelFilter,
        by: &str,
        at: OffsetDateTime,
    ) -> Result<Vec<JobId>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let reason = format!("cancelled by {by}");
        let stmt = Stmt::new(D::CANCEL)
            .maybe_id(filter.id)
            .str(filter.status.map(JobStatus::as_str))
            .str(filter.kind.as_ref().map(JobKind::as_str))
            .int(i64::from(filter.limit))
            .int(JobStatus::Cancelled.progress(1))
            .str(filter.owner.as_deref())
            .str(Some(&reason))
            .time(at);
        let mut ids = D::fetch_all(&mut conn, stmt)
            .await?
            .iter()
            .map(|row| D::get_id(row, "id"))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// See [`super::Store::unsettled_cancels`].
    pub(super) async fn unsettled_cancels(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let stmt = Stmt::new(sql::UNSETTLED_CANCELS)
            .time(since)
            .int(i64::from(limit));
        D::fetch_all(&mut conn, stmt)
            .await?
            .iter()
            .map(|row| D::get_id(row, "id"))
            .collect()
    }

    /// See [`super::Store::purge`].
    pub(super) async fn purge(
        &self,
        finished_before: OffsetDateTime,
        keys_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Purged, StoreError> {
        let limit = i64::from(limit);
        let mut tx = self.pool.begin().await?;
        let stmt = Stmt::new(D::PURGE_JOBS).time(finished_before).int(limit);
        let jobs = D::fetch_all(&mut tx, stmt)
            .await?
            .iter()
            .map(|row| D::get_id(row, "id"))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut keys, mut artifacts) = delete_what_jobs_leave::<D>(&mut tx, &jobs).await?;
        // Orphans as old as a finished job kept: the event that would have listed them never
        // came, or their job is gone.
        let stmt = Stmt::new(sql::PURGE_ORPHAN_ARTIFACTS).time(finished_before);
        artifacts += D::execute(&mut tx, stmt).await?;
        let stmt = Stmt::new(D::PURGE_KEYS).time(keys_before).int(limit);
        keys += D::execute(&mut tx, stmt).await?;
        tx.commit().await?;
        Ok(Purged {
            jobs: jobs.len() as u64,
            keys,
            artifacts,
        })
    }

    /// See [`super::Store::put_artifact`].
    pub(super) async fn put_artifact(&self, a: &NewArtifact<'_>) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let stmt = Stmt::new(sql::PUT_ARTIFACT)
            .id(a.job_id)
            .str(Some(a.name))
            .str(Some(a.content_type))
            .int(i64::try_from(a.data.len()).unwrap_or(i64::MAX))
            .str(Some(a.sha256))
            .bytes(a.data)
            .int(i64::from(a.attempt))
            .time(a.stored_at);
        D::execute(&mut conn, stmt).await?;
        Ok(())
    }

    /// See [`super::Store::artifact`].
    pub(super) async fn artifact(
        &self,
        job_id: JobId,
        name: &str,
    ) -> Result<Option<StoredArtifact>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let stmt = Stmt::new(sql::GET_ARTIFACT).id(job_id).str(Some(name));
        let Some(row) = D::fetch_optional(&mut conn, stmt).await? else {
            return Ok(None);
        };
        Ok(Some(StoredArtifact {
            content_type: D::get_text(&row, "content_type")?.unwrap_or_default(),
            sha256: D::get_text(&row, "sha256")?.unwrap_or_default(),
            data: D::get_bytes(&row, "data")?.unwrap_or_default(),
        }))
    }
}

/// A stretch of a batch as it is applied: plain inserts (no idempotency key) that multi-row
/// statements write together, or one write of any other kind.
enum Stretch<'a> {
    /// Consecutive inserts without a key; each one's result is [`Written::Done`].
    Inserts(Vec<NewJob<'a>>),
    /// Any other write.
    One(&'a Write),
}

/// `writes` cut into [`Stretch`]es, in order.
fn stretches(writes: &[Write]) -> Vec<Stretch<'_>> {
    let mut out = Vec::new();
    for write in writes {
        if let Write::Insert {
            job,
            payload,
            key: None,
            resolve_at,
            inputs,
        } = write
            && inputs.is_empty()
        {
            let row = NewJob {
                job,
                payload,
                resolve_at: *resolve_at,
            };
            match out.last_mut() {
                Some(Stretch::Inserts(rows)) => rows.push(row),
                _ => out.push(Stretch::Inserts(vec![row])),
            }
        } else {
            out.push(Stretch::One(write));
        }
    }
    out
}

/// The existing rows a write changes (an insert creates its row).
fn touches(write: &Write) -> Vec<JobId> {
    match write {
        Write::Insert { .. } => Vec::new(),
        Write::Delete(id) | Write::Redrive { id, .. } | Write::MarkDead { id, .. } => vec![*id],
        Write::Event(ev) => vec![ev.job_id],
        Write::Confirmed(ids) | Write::Unconfirmed(ids) => ids.clone(),
    }
}

/// Deletes what the deleted jobs `ids` leave behind: their keys, input files, artifacts and
/// history. How many keys and artifacts that was.
pub(super) async fn delete_what_jobs_leave<D: Dialect>(
    tx: &mut D::Connection,
    ids: &[JobId],
) -> Result<(u64, u64), StoreError> {
    if ids.is_empty() {
        return Ok((0, 0));
    }
    let keys = D::execute(tx, Stmt::new(D::PURGE_KEYS_OF_JOBS).ids(ids)).await?;
    D::execute(tx, Stmt::new(D::PURGE_INPUTS_OF_JOBS).ids(ids)).await?;
    let artifacts = D::execute(tx, Stmt::new(D::PURGE_ARTIFACTS_OF_JOBS).ids(ids)).await?;
    D::execute(tx, Stmt::new(D::PURGE_STEPS_OF_JOBS).ids(ids)).await?;
    Ok((keys, artifacts))
}

/// A step of a job's history, as [`sql::RECORD_STEP`] adds it.
pub(super) struct NewStep<'a> {
    pub id: JobId,
    pub at: OffsetDateTime,
    pub attempt: u32,
    pub status: JobStatus,
    /// `None`: the API decided it.
    pub worker: Option<&'a str>,
    /// When the attempt started, on an end whose start was reported with it.
    pub started_at: Option<OffsetDateTime>,
    pub run_ms: Option<u64>,
    pub error: Option<&'a str>,
}

impl NewStep<'_> {
    /// A step the API took: no worker, no run.
    pub fn by_api(id: JobId, at: OffsetDateTime, attempt: u32, status: JobStatus) -> Self {
        NewStep {
            id,
            at,
            attempt,
            status,
            worker: None,
            started_at: None,
            run_ms: None,
            error: None,
        }
    }
}

/// Longest error a step keeps, in characters (the job's own row keeps the latest whole).
const MAX_STEP_ERROR_CHARS: usize = 4096;
/// Longest worker name a step keeps, in characters.
const MAX_STEP_WORKER_CHARS: usize = 200;

/// Adds `step` to its job's history (nothing if the store does not have the job).
pub(super) async fn record_step<D: Dialect>(
    tx: &mut D::Connection,
    step: NewStep<'_>,
) -> Result<(), StoreError> {
    let stmt = Stmt::new(sql::RECORD_STEP)
        .id(step.id)
        .time(step.at)
        .int(i64::from(step.attempt))
        .str(Some(step.status.as_str()))
        .str(step.worker.map(|w| first_chars(w, MAX_STEP_WORKER_CHARS)))
        .time(step.started_at)
        .int(step.run_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)))
        .str(step.error.map(|e| first_chars(e, MAX_STEP_ERROR_CHARS)))
        .int(i64::from(super::dashboard::MAX_STEPS));
    D::execute(tx, stmt).await?;
    Ok(())
}

/// Records the job of an event whose id the store does not have (a job another producer
/// published straight to the jobs exchange), when the event says enough to show it: its kind,
/// attempt limit and submission time (a `running` event, or an end with its start folded in).
/// Its payload is unknown (JSON `null`) and its timeout shows 0. True if a row was added, so
/// the event is applied to it.
async fn adopt<D: Dialect>(tx: &mut D::Connection, ev: &JobEvent) -> Result<bool, StoreError> {
    let (Some(kind), Some(max_attempts), Some(submitted_at)) =
        (&ev.kind, ev.max_attempts, ev.submitted_at)
    else {
        return Ok(false);
    };
    let stmt = Stmt::new(sql::ADOPT)
        .id(ev.job_id)
        .str(Some(kind.as_str()))
        .int(i64::from(ev.attempt))
        .int(i64::from(max_attempts))
        .time(submitted_at);
    Ok(D::execute(tx, stmt).await? > 0)
}

async fn apply_one<D: Dialect>(
    tx: &mut D::Connection,
    write: &Write,
) -> Result<Written, StoreError> {
    match write {
        Write::Insert {
            job,
            payload,
            key,
            resolve_at,
            inputs,
        } => {
            if let Some(key) = key {
                // Race-free across replicas: a concurrent claim of the same key waits for the
                // first transaction and then conflicts, so exactly one job gets the key.
                let claim = Stmt::new(sql::CLAIM_KEY)
                    .str(Some(&key.key))
                    .str(Some(&key.fingerprint))
                    .id(job.id)
                    .time(job.submitted_at);
                if D::execute(tx, claim).await? == 0 {
                    let owner = Stmt::new(sql::KEY_OWNER).str(Some(&key.key));
                    let row = D::fetch_optional(tx, owner)
                        .await?
                        .ok_or(sqlx::Error::RowNotFound)?;
                    return Ok(Written::KeyTaken {
                        job_id: D::get_id(&row, "job_id")?,
                        fingerprint: D::get_text(&row, "fingerprint")?.unwrap_or_default(),
                    });
                }
            }
            let row = NewJob {
                job,
                payload,
                resolve_at: *resolve_at,
            };
            D::insert_jobs(tx, std::slice::from_ref(&row)).await?;
            inputs::insert::<D>(tx, job.id, inputs).await?;
        }
        Write::Delete(id) => {
            D::execute(tx, Stmt::new(sql::DELETE_JOB).id(*id)).await?;
            delete_what_jobs_leave::<D>(tx, &[*id]).await?;
        }
        Write::Event(
            ev @ JobEvent {
                heartbeat: true, ..
            },
        ) => {
            let Some(lease_until) = ev.lease_until(OffsetDateTime::now_utc()) else {
                return Ok(Written::Nothing);
            };
            let stmt = Stmt::new(sql::HEARTBEAT)
                .id(ev.job_id)
                .time(lease_until)
                .time(ev.at)
                .int(i64::from(ev.attempt));
            if D::execute(tx, stmt).await? == 0 {
                return Ok(Written::Nothing);
            }
        }
        Write::Event(
            ev @ JobEvent {
                progress: Some(reported),
                ..
            },
        ) => {
            let progress = reported.bounded();
            #[allow(clippy::cast_possible_truncation)]
            let ppm = (progress.fraction * 1_000_000.0).round() as i64;
            let stmt = Stmt::new(sql::PROGRESS)
                .id(ev.job_id)
                .int(ppm)
                .str(progress.message.as_deref())
                .time(ev.at)
                .int(i64::from(ev.attempt));
            if D::execute(tx, stmt).await? == 0 {
                return Ok(Written::Nothing);
            }
        }
        Write::Event(ev) => {
            let started = ev.start();
            // Only a long job's start holds a lease; any later step of the job ends it.
            let lease_until = (ev.status == JobStatus::Running)
                .then(|| ev.lease_until(OffsetDateTime::now_utc()))
                .flatten();
            let stmt =
                Stmt::new(sql::EVENT)
                    .id(ev.job_id)
                    .str(Some(ev.status.as_str()))
                    .int(ev.status.progress(ev.attempt))
                    .int(i64::from(ev.attempt))
                    .str(Some(&ev.worker))
                    .time(started)
                    .time(ev.at)
                    .time(ev.status.is_terminal().then_some(ev.at))
                    .text(ev.result.as_ref().map(|r| Cow::Owned(r.to_string())))
                    .str(ev.error.as_deref())
                    .int(i64::from(started.is_some()))
                    .text((!ev.artifacts.is_empty()).then(|| {
                        Cow::Owned(serde_json::to_string(&ev.artifacts).unwrap_or_default())
                    }))
                    .time(lease_until)
                    .time(lease_until.map(|_| ev.at));
            if D::execute(tx, stmt.clone()).await? == 0 && adopt::<D>(tx, ev).await? {
                D::execute(tx, stmt).await?;
            }
            // Every step, even one too late to change the row: the history is what happened.
            let step = NewStep {
                id: ev.job_id,
                at: ev.at,
                attempt: ev.attempt,
                status: ev.status,
                worker: Some(&ev.worker),
                // A start folded into an end; a `running` event is itself the start.
                started_at: ev.started_at.filter(|_| ev.status != JobStatus::Running),
                run_ms: ev.run_ms,
                error: ev.error.as_deref(),
            };
            record_step::<D>(tx, step).await?;
            if ev.status == JobStatus::Cancelled {
                let settle = Stmt::new(sql::SETTLE_CANCEL).id(ev.job_id).time(ev.at);
                D::execute(tx, settle).await?;
            }
        }
        Write::Confirmed(ids) => {
            if ids.is_empty() {
                return Ok(Written::Nothing);
            }
            let step = JobStatus::Queued.progress(1) - JobStatus::Pending.progress(1);
            let from_scheduled = JobStatus::Queued.progress(1) - JobStatus::Scheduled.progress(1);
            let stmt = Stmt::new(D::CONFIRM).int(step).ids(ids).int(from_scheduled);
            if D::execute(tx, stmt).await? == 0 {
                return Ok(Written::Nothing);
            }
        }
        Write::Unconfirmed(ids) => {
            let step = JobStatus::Queued.progress(1) - JobStatus::Pending.progress(1);
            if ids.is_empty()
                || D::execute(tx, Stmt::new(D::UNCONFIRM).int(step).ids(ids)).await? == 0
            {
                return Ok(Written::Nothing);
            }
        }
        Write::Redrive {
            id,
            attempt,
            max_attempts,
            resolve_at,
        } => {
            let stmt = Stmt::new(sql::REDRIVE)
                .id(*id)
                .int(JobStatus::Pending.progress(*attempt))
                .int(i64::from(*attempt))
                .int(i64::from(*max_attempts))
                .time(*resolve_at);
            if D::execute(tx, stmt).await? == 0 {
                return Ok(Written::Nothing);
            }
            let step =
                NewStep::by_api(*id, OffsetDateTime::now_utc(), *attempt, JobStatus::Pending);
            record_step::<D>(tx, step).await?;
        }
        Write::MarkDead { id, attempt, error } => {
            let now = OffsetDateTime::now_utc();
            let stmt = Stmt::new(sql::MARK_DEAD)
                .id(*id)
                .int(JobStatus::Dead.progress(*attempt))
                .int(i64::from(*attempt))
                .str(Some(error))
                .time(now);
            if D::execute(tx, stmt).await? > 0 {
                let step = NewStep {
                    error: Some(error),
                    ..NewStep::by_api(*id, now, *attempt, JobStatus::Dead)
                };
                record_step::<D>(tx, step).await?;
            }
        }
    }
    Ok(Written::Done)
}
