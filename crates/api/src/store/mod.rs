//! The job store: one row per job with its latest status. The API is its only owner.
//!
//! [`Store`] is a SQLite file (one API process) or PostgreSQL (several API replicas sharing one
//! database), chosen by the URL. Every operation is written once ([`ops`]) over a small
//! [`dialect::Dialect`] seam for what really differs between the two; the schema is versioned
//! ([`migrate`]). Reads go straight to the database; every write goes through the
//! [`writer::StoreWriter`] task, which groups concurrent writes into one transaction so the store
//! does not become the throughput ceiling.

pub mod dashboard;
mod decode;
mod dialect;
mod inputs;
pub mod keys;
mod leases;
mod limits;
mod migrate;
mod ops;
mod postgres;
pub mod registry;
pub mod schedules;
mod sql;
mod sqlite;
pub mod writer;

#[cfg(test)]
mod dashboard_tests;
#[cfg(test)]
mod inputs_tests;
#[cfg(test)]
mod keys_tests;
#[cfg(test)]
mod leases_tests;
#[cfg(test)]
mod registry_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upgrade_tests;

use std::{sync::Arc, time::Duration};

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use offload_shared::{JobEvent, JobId, JobKind, JobStatus, Priority, artifacts::ArtifactMeta};

pub use inputs::{InputMeta, StoredFile};
use keys::KeyRecord;
pub use leases::Lapsed;
use ops::Db;
use registry::{KindRecord, WorkerRecord};

/// The job store the API uses, whichever database holds it.
#[derive(Debug, Clone)]
pub struct Store(Backend);

#[derive(Debug, Clone)]
enum Backend {
    /// A SQLite file: one API process.
    Sqlite(Db<sqlx::Sqlite>),
    /// PostgreSQL: any number of API replicas.
    Postgres(Db<sqlx::Postgres>),
}

/// Runs the same expression on whichever backend the store is.
macro_rules! on_backend {
    ($store:expr, $db:ident => $call:expr) => {
        match &$store.0 {
            Backend::Sqlite($db) => $call,
            Backend::Postgres($db) => $call,
        }
    };
}

impl Store {
    /// Opens the store `url` names and brings its schema up to date (see [`migrate`]):
    /// `sqlite://path/to/file.db` or `postgres://user@host/db` (also `postgresql://`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            sqlite::connect(url)
                .await
                .map(|db| Store(Backend::Sqlite(db)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            postgres::connect(url)
                .await
                .map(|db| Store(Backend::Postgres(db)))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// The job with `id`, if any.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        on_backend!(self, db => db.get(id).await)
    }

    /// The job with `id` if `owner` submitted it (`None`: whoever did, for an admin).
    pub async fn get_owned(
        &self,
        id: JobId,
        owner: Option<&str>,
    ) -> Result<Option<JobRecord>, StoreError> {
        Ok(self
            .get(id)
            .await?
            .filter(|job| owner.is_none() || job.owner.as_deref() == owner))
    }

    /// The job's payload and attempt budget, for a redrive.
    pub async fn input(&self, id: JobId) -> Result<Option<StoredInput>, StoreError> {
        on_backend!(self, db => db.input(id).await)
    }

    /// Jobs matching `filter`, newest first, as summaries (no result, no payload).
    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobSummary>, StoreError> {
        on_backend!(self, db => db.list(filter).await)
    }

    /// True while job `id` is unresolved: recorded, its publish not confirmed yet (whether it
    /// shows `queued`, the publish still in flight, or `pending`, the confirm overdue).
    pub async fn unresolved(&self, id: JobId) -> Result<bool, StoreError> {
        on_backend!(self, db => db.unresolved(id).await)
    }

    /// The earliest `resolve_at` of any job: when the reconciler next has something to do (a
    /// scheduled job's time, or an unconfirmed publish's deadline). `None` when nothing waits.
    pub async fn next_resolve_at(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        on_backend!(self, db => db.next_resolve_at().await)
    }

    /// Cheap check that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, db => db.ping().await)
    }

    /// Applies `writes` in one transaction; one result per write.
    pub async fn apply(&self, writes: &[Write]) -> Result<Vec<Written>, StoreError> {
        on_backend!(self, db => db.apply(writes).await)
    }

    /// Takes up to `limit` unresolved jobs whose `resolve_at` has passed (`<= now`), earliest
    /// `resolve_at` first, and in the same statement moves their `resolve_at` to `now + lease`:
    /// until then no other caller (another pass, another API replica) gets them. Runs beside
    /// the writer, not through it (one statement; SQLite's busy timeout and PostgreSQL's
    /// `SKIP LOCKED` keep it apart from the writer's transactions).
    pub async fn claim_unresolved(
        &self,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Unresolved>, StoreError> {
        on_backend!(self, db => db.claim_unresolved(now, lease, limit).await)
    }

    /// Acts on up to `limit` running long jobs whose lease lapsed before `now`: each is started
    /// again as its next attempt (`pending`, due now, so the reconciler publishes it) or, on its
    /// last attempt, ends dead; the old attempt's late events then change nothing. Beside the
    /// writer, like [`Store::claim_unresolved`].
    pub async fn reap_lapsed(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Lapsed>, StoreError> {
        on_backend!(self, db => db.reap_lapsed(now, limit).await)
    }

    /// Moves every running long job's lease that lapses before `until` to `until`; returns how
    /// many were moved. Beside the writer, like [`Store::claim_unresolved`].
    pub async fn extend_leases(&self, until: OffsetDateTime) -> Result<u64, StoreError> {
        on_backend!(self, db => db.extend_leases(until).await)
    }

    /// One retention batch: deletes up to `limit` finished jobs (with their keys) whose
    /// `finished_at` is before `finished_before`, and up to `limit` idempotency keys created
    /// before `keys_before`, except keys of pending jobs. Beside the writer, like
    /// [`Store::claim_unresolved`].
    pub async fn purge(
        &self,
        finished_before: OffsetDateTime,
        keys_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Purged, StoreError> {
        on_backend!(self, db => db.purge(finished_before, keys_before, limit).await)
    }

    /// Cancels up to `limit` unfinished jobs matching `filter` (its `before` is ignored): each
    /// becomes `cancelled` at `at`, its `error` saying `by` whom, and is never published again.
    /// Returns the ids it cancelled (none: nothing matched, or all had finished). One statement
    /// beside the writer, like [`Store::claim_unresolved`]; replicas cancelling at once never
    /// cancel one job twice.
    pub async fn cancel(
        &self,
        filter: &CancelFilter,
        by: &str,
        at: OffsetDateTime,
    ) -> Result<Vec<JobId>, StoreError> {
        on_backend!(self, db => db.cancel(filter, by, at).await)
    }

    /// Up to `limit` cancelled jobs, finished at `since` or later, that no worker has reported
    /// settled yet: their cancel is repeated to the workers.
    pub async fn unsettled_cancels(
        &self,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError> {
        on_backend!(self, db => db.unsettled_cancels(since, limit).await)
    }

    /// Stores an artifact (replacing one of the same job and name), beside the writer: one
    /// statement, so a large artifact never holds up a batch of events.
    pub async fn put_artifact(&self, artifact: &NewArtifact<'_>) -> Result<(), StoreError> {
        on_backend!(self, db => db.put_artifact(artifact).await)
    }

    /// The stored artifact `name` of job `job_id`, if it arrived.
    pub async fn artifact(
        &self,
        job_id: JobId,
        name: &str,
    ) -> Result<Option<StoredArtifact>, StoreError> {
        on_backend!(self, db => db.artifact(job_id, name).await)
    }
}

/// Concurrency limits (see `limits`).
impl Store {
    /// Releases the held jobs that fit under their key's and their kind's limits (`kinds`:
    /// `max_running` by kind); their ids, and whether any held job was due.
    pub async fn release_held(
        &self,
        kinds: &std::collections::HashMap<String, u32>,
        now: OffsetDateTime,
    ) -> Result<(Vec<JobId>, bool), StoreError> {
        on_backend!(self, db => db.release_held(kinds, now).await)
    }
}

/// Cron schedules (see [`schedules`]).
impl Store {
    /// Records a new schedule; false if its name is taken.
    pub async fn create_schedule(
        &self,
        schedule: &schedules::ScheduleRecord,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.create_schedule(schedule).await)
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<schedules::ScheduleRecord>, StoreError> {
        on_backend!(self, db => db.schedules().await)
    }

    /// The schedule `name`, if any.
    pub async fn schedule(
        &self,
        name: &str,
    ) -> Result<Option<schedules::ScheduleRecord>, StoreError> {
        on_backend!(self, db => db.schedule(name).await)
    }

    /// Up to `limit` unpaused schedules due at `now`, earliest first.
    pub async fn due_schedules(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<schedules::ScheduleRecord>, StoreError> {
        on_backend!(self, db => db.due_schedules(now, limit).await)
    }

    /// The earliest next tick of any unpaused schedule.
    pub async fn next_tick(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        on_backend!(self, db => db.next_tick().await)
    }

    /// Pauses or resumes `name` (resumed: next tick at `next`); false if unknown.
    pub async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.set_schedule_paused(name, paused, next, now).await)
    }

    /// Deletes `name`; false if unknown.
    pub async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        on_backend!(self, db => db.delete_schedule(name).await)
    }

    /// One tick of `schedule` (see `schedules::Db::tick_schedule`).
    pub async fn tick_schedule(
        &self,
        schedule: &schedules::ScheduleRecord,
        next: Option<OffsetDateTime>,
        job: Result<&schedules::TickJob, &str>,
        now: OffsetDateTime,
    ) -> Result<schedules::Tick, StoreError> {
        on_backend!(self, db => db.tick_schedule(schedule, next, job, now).await)
    }

    /// Makes `job` for schedule `name` now; false if unknown.
    pub async fn run_schedule_now(
        &self,
        name: &str,
        job: &schedules::TickJob,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.run_schedule_now(name, job, now).await)
    }
}

/// The kinds and workers registry, beside the writer (see [`registry`]).
impl Store {
    /// Every recorded kind, by name.
    pub async fn kinds(&self) -> Result<Vec<KindRecord>, StoreError> {
        on_backend!(self, db => db.kinds().await)
    }

    /// Records `kind`, replacing the spec recorded under its name (its `first_seen_at` stays).
    pub async fn put_kind(&self, kind: &KindRecord) -> Result<(), StoreError> {
        on_backend!(self, db => db.put_kind(kind).await)
    }

    /// Records `kind` unless a kind of its name is recorded (by another API replica, say);
    /// true if this call recorded it.
    pub async fn record_kind(&self, kind: &KindRecord) -> Result<bool, StoreError> {
        on_backend!(self, db => db.record_kind(kind).await)
    }

    /// Replaces the kind's spec with `kind`'s if it was last changed at `seen`; true if it was
    /// (false: someone replaced it since it was read).
    pub async fn replace_kind(
        &self,
        kind: &KindRecord,
        seen: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.replace_kind(kind, seen).await)
    }

    /// Sets (or clears) the conflict text of the kind `name`.
    pub async fn set_kind_conflict(
        &self,
        name: &str,
        conflict: Option<&str>,
    ) -> Result<(), StoreError> {
        on_backend!(self, db => db.set_kind_conflict(name, conflict).await)
    }

    /// Every recorded worker, by name, live or not.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        on_backend!(self, db => db.workers().await)
    }

    /// Records a worker's latest announcement.
    pub async fn put_worker(&self, worker: &WorkerRecord) -> Result<(), StoreError> {
        on_backend!(self, db => db.put_worker(worker).await)
    }

    /// Forgets the workers last seen before `before`; how many.
    pub async fn forget_workers(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        on_backend!(self, db => db.forget_workers(before).await)
    }
}

/// API keys and browser sessions, beside the writer (see [`keys`]).
impl Store {
    /// Records a new key under the hash of its token.
    pub async fn create_key(
        &self,
        key: &KeyRecord,
        token_hash: &str,
    ) -> Result<(), keys::CreateKeyError> {
        on_backend!(self, db => db.create_key(key, token_hash).await)
    }

    /// Every key, by name.
    pub async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        on_backend!(self, db => db.keys().await)
    }

    /// The key whose token hashes to `token_hash`, usable or not.
    pub async fn key_by_hash(&self, token_hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        on_backend!(self, db => db.key_by_hash(token_hash).await)
    }

    /// Revokes the key `name` and ends its sessions; false if no unrevoked key has the name.
    pub async fn revoke_key(&self, name: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        on_backend!(self, db => db.revoke_key(name, now).await)
    }

    /// Records a browser session of key `key_id` under the hash of its id.
    pub async fn create_session(
        &self,
        id_hash: &str,
        key_id: &str,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        on_backend!(self, db => db.create_session(id_hash, key_id, now, expires_at).await)
    }

    /// The key of the live session whose id hashes to `id_hash`.
    pub async fn session_key(
        &self,
        id_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        on_backend!(self, db => db.session_key(id_hash, now).await)
    }

    /// Ends a browser session.
    pub async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        on_backend!(self, db => db.delete_session(id_hash).await)
    }

    /// Checks a search before it runs; `Ok(Err(reason))` for one the store cannot run.
    pub async fn check_search(
        &self,
        search: &dashboard::Search,
    ) -> Result<Result<(), String>, StoreError> {
        on_backend!(self, db => db.check_search(search).await)
    }

    /// A page of jobs matching `q`, newest first, older than `before`.
    pub async fn find_jobs(
        &self,
        q: &dashboard::JobQuery,
        before: Option<JobId>,
        limit: u32,
    ) -> Result<Vec<JobSummary>, StoreError> {
        on_backend!(self, db => db.find_jobs(q, before, limit).await)
    }

    /// How many dead jobs match `q`.
    pub async fn count_dead(&self, q: &dashboard::JobQuery) -> Result<u64, StoreError> {
        on_backend!(self, db => db.count_jobs(&q.dead()).await)
    }

    /// How many jobs match `q`.
    pub async fn count_jobs(&self, q: &dashboard::JobQuery) -> Result<u64, StoreError> {
        on_backend!(self, db => db.count_jobs(q).await)
    }

    /// Up to `limit` dead jobs matching `q`, oldest first.
    pub async fn dead_ids(
        &self,
        q: &dashboard::JobQuery,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError> {
        on_backend!(self, db => db.dead_ids(q, limit).await)
    }

    /// The dead jobs `owner` may see, grouped by reason, largest group first.
    pub async fn dead_groups(
        &self,
        owner: Option<&str>,
        limit: u32,
    ) -> Result<Vec<dashboard::DeadGroup>, StoreError> {
        on_backend!(self, db => db.dead_groups(owner, limit).await)
    }

    /// Deletes those of `ids` that are still dead; their ids.
    pub async fn delete_dead(&self, ids: &[JobId]) -> Result<Vec<JobId>, StoreError> {
        on_backend!(self, db => db.delete_dead(ids).await)
    }

    /// The overview's figures for the hour since `since`.
    pub async fn hour_stats(
        &self,
        since: OffsetDateTime,
    ) -> Result<dashboard::HourStats, StoreError> {
        on_backend!(self, db => db.hour_stats(since).await)
    }

    /// The paused work queues (short names), with who paused them and when.
    pub async fn paused_queues(&self) -> Result<Vec<(String, String, OffsetDateTime)>, StoreError> {
        on_backend!(self, db => db.paused_queues().await)
    }

    /// Pauses (or resumes) a work queue; false if it already was.
    pub async fn set_queue_paused(
        &self,
        queue: &str,
        paused: bool,
        by: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        on_backend!(self, db => db.set_queue_paused(queue, paused, by, at).await)
    }

    /// Adds an action to the audit list.
    pub async fn audit(
        &self,
        entry: &dashboard::NewAudit<'_>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        on_backend!(self, db => db.audit(entry, at).await)
    }

    /// Job `id`'s history (each start and end of its attempts), oldest first.
    pub async fn job_steps(&self, id: JobId) -> Result<Vec<dashboard::JobStep>, StoreError> {
        on_backend!(self, db => db.job_steps(id).await)
    }

    /// The audit list, newest first, before `before`.
    pub async fn audit_list(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<dashboard::AuditEntry>, StoreError> {
        on_backend!(self, db => db.audit_list(before, limit).await)
    }
}

/// `url` with its password, if any, replaced by `***`: database URLs end up in error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The credentials end at the last `@` before the path.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// A job as the store knows it, and as `GET /jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobRecord {
    /// The job's id.
    #[schema(value_type = String, example = "01936f5e-7c1a-7b3e-9f0a-2d4c6e8a0b1c")]
    pub id: JobId,
    /// Its kind.
    #[schema(value_type = String, example = "sleep")]
    pub kind: JobKind,
    /// Latest status.
    #[schema(value_type = String, example = "succeeded")]
    pub status: JobStatus,
    /// Attempt the status is about.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Run-time limit of one attempt.
    pub timeout_ms: u64,
    /// Worker that reported the status, once one has.
    pub worker: Option<String>,
    /// When the API accepted it.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub submitted_at: OffsetDateTime,
    /// When the latest attempt started.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached a final status.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
    /// The handler's output, on success.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// What went wrong, on failure.
    pub error: Option<String>,
    /// How many times a worker started it: above `attempt` when the broker redelivered it
    /// (its worker died, or lost its connection, mid-job).
    pub runs: u32,
    /// Files it returned beside its result, on success (download each at its `url`).
    #[serde(default)]
    pub artifacts: Vec<ArtifactLink>,
    /// The id of the API key that submitted it; `None` for jobs from before keys, from
    /// `OFFLOAD_AUTH=off`, or first heard of through their events. Not shown to clients.
    #[serde(skip)]
    #[schema(ignore)]
    pub owner: Option<String>,
    /// When it was asked to run (`run_at` or `delay_s` on submit): a `scheduled` job is
    /// published then. Absent for a job that ran at once.
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub run_at: Option<OffsetDateTime>,
    /// Its priority: a `high` job starts before every waiting `normal` job of its queue.
    #[schema(value_type = String, example = "normal")]
    pub priority: Priority,
    /// The key whose jobs share a concurrency limit (e.g. a tenant), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// At most this many jobs of its `concurrency_key` queued or running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u32>,
    /// Where it is in the concurrency gate: held (waiting for a slot, `scheduled` without a
    /// `run_at`) or released (counted against the limits until it finishes); `None` for a job
    /// no limit applies to. Not shown to clients.
    #[serde(skip)]
    #[schema(ignore)]
    pub gate: Option<Gate>,
    /// How far its running attempt has got, as the handler last reported (`ctx.progress`);
    /// absent until it reports, and cleared when an attempt starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<JobProgress>,
    /// A long job's latest heartbeat from the worker running it (its start is the first); kept
    /// once it has finished. Absent for other jobs.
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub heartbeat_at: Option<OffsetDateTime>,
    /// While a long job runs: when its worker's lease lapses unless a heartbeat renews it. Once
    /// it has lapsed the API starts the job again as its next attempt.
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub lease_until: Option<OffsetDateTime>,
    /// The files uploaded with it (a multipart submit), without their bytes.
    pub inputs: Vec<InputMeta>,
}

/// A job's progress, as its handler last reported it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobProgress {
    /// From 0 to 1.
    pub fraction: f64,
    /// What the handler said it is doing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the worker sent the report.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
}

impl JobRecord {
    /// A freshly accepted job.
    pub fn queued(
        id: JobId,
        kind: JobKind,
        max_attempts: u32,
        timeout_ms: u64,
        submitted_at: OffsetDateTime,
    ) -> Self {
        JobRecord {
            id,
            kind,
            status: JobStatus::Queued,
            attempt: 1,
            max_attempts,
            timeout_ms,
            worker: None,
            submitted_at,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
            runs: 0,
            artifacts: Vec::new(),
            owner: None,
            run_at: None,
            priority: Priority::Normal,
            concurrency_key: None,
            concurrency_limit: None,
            gate: None,
            progress: None,
            heartbeat_at: None,
            lease_until: None,
            inputs: Vec::new(),
        }
    }

    /// The same job under a concurrency limit (its key's, or its kind's `max_running` when
    /// `gated` without a key): `scheduled` and held in the store until a slot frees.
    pub fn gated(mut self, key: Option<String>, limit: Option<u32>, gated: bool) -> Self {
        self.concurrency_key = key;
        self.concurrency_limit = limit;
        if gated {
            self.status = JobStatus::Scheduled;
            self.gate = Some(Gate::Held);
        }
        self
    }

    /// When a new job is due to be resolved: never for one held by a concurrency limit (the
    /// dispatcher releases it), else `due`.
    pub fn resolve_at(&self, due: OffsetDateTime) -> Option<OffsetDateTime> {
        (self.gate != Some(Gate::Held)).then_some(due)
    }

    /// The same job, of priority `priority`.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// The same job, submitted by the key `owner`.
    pub fn owned_by(mut self, owner: Option<String>) -> Self {
        self.owner = owner;
        self
    }

    /// The same job, to run at `run_at`: `scheduled` until then if that is still to come.
    pub fn run_at(mut self, run_at: Option<OffsetDateTime>, now: OffsetDateTime) -> Self {
        self.run_at = run_at;
        if Self::waits(run_at, now) {
            self.status = JobStatus::Scheduled;
        }
        self
    }

    /// True if a job submitted at `now` to run at `run_at` waits, `scheduled`, in the store:
    /// its time is still to come. Otherwise it is published at once.
    pub fn waits(run_at: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
        run_at.is_some_and(|t| t > now)
    }
}

/// Longest `error` a [`JobSummary`] carries, in characters; `GET /jobs/{id}` has all of it.
pub const SUMMARY_ERROR_CHARS: usize = 256;

/// A job as a page of `GET /jobs` shows it: everything but the result (and the payload), so
/// a page has a bounded size. `GET /jobs/{id}` has the full job.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobSummary {
    /// The job's id.
    #[schema(value_type = String, example = "01936f5e-7c1a-7b3e-9f0a-2d4c6e8a0b1c")]
    pub id: JobId,
    /// Its kind.
    #[schema(value_type = String, example = "sleep")]
    pub kind: JobKind,
    /// Latest status.
    #[schema(value_type = String, example = "succeeded")]
    pub status: JobStatus,
    /// Attempt the status is about.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Run-time limit of one attempt.
    pub timeout_ms: u64,
    /// Worker that reported the status, once one has.
    pub worker: Option<String>,
    /// When the API accepted it.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub submitted_at: OffsetDateTime,
    /// When the latest attempt started.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached a final status.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<OffsetDateTime>,
    /// True if the job has a result (read it with `GET /jobs/{id}`).
    pub has_result: bool,
    /// What went wrong, on failure: at most 256 characters, ending in `…` when cut.
    pub error: Option<String>,
    /// How many times a worker started it.
    pub runs: u32,
    /// Files it returned beside its result, on success.
    pub artifacts: Vec<ArtifactLink>,
    /// When it was asked to run (`run_at` or `delay_s` on submit): a `scheduled` job is
    /// published then. Absent for a job that ran at once.
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub run_at: Option<OffsetDateTime>,
    /// Its priority.
    #[schema(value_type = String, example = "normal")]
    pub priority: Priority,
    /// The key whose jobs share a concurrency limit, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
}

/// Where a job limited by a concurrency key or its kind's `max_running` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Waiting in the store for a slot.
    Held,
    /// Given a slot: counted against the limits until it finishes.
    Released,
}

impl Gate {
    /// The name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Held => "held",
            Gate::Released => "released",
        }
    }

    /// Reads a stored name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "held" => Some(Gate::Held),
            "released" => Some(Gate::Released),
            _ => None,
        }
    }
}

/// A pending job whose publish is still unresolved, with what republishing it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Unresolved {
    /// The job.
    pub job: JobRecord,
    /// Its payload as submitted.
    pub payload: Value,
    /// Its input files, with their bytes.
    pub files: Vec<StoredFile>,
}

/// What one retention batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Finished jobs deleted.
    pub jobs: u64,
    /// Idempotency keys deleted: expired ones and those of the deleted jobs.
    pub keys: u64,
    /// Artifacts deleted: those of the deleted jobs and old orphans.
    pub artifacts: u64,
}

/// An artifact as the artifacts consumer stores it.
#[derive(Debug, Clone, Copy)]
pub struct NewArtifact<'a> {
    /// Its job (which the store may not know yet).
    pub job_id: JobId,
    /// Its name.
    pub name: &'a str,
    /// Its media type.
    pub content_type: &'a str,
    /// Lowercase hex SHA-256 of `data`.
    pub sha256: &'a str,
    /// Its bytes.
    pub data: &'a [u8],
    /// The attempt that produced it.
    pub attempt: u32,
    /// When it was stored.
    pub stored_at: OffsetDateTime,
}

/// A stored artifact, as `GET /jobs/{id}/result` serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    /// Its media type.
    pub content_type: String,
    /// Lowercase hex SHA-256 of `data`.
    pub sha256: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// An artifact as a job lists it: what its success event said, and where to download it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ArtifactLink {
    /// Its file name, unique within the job.
    pub name: String,
    /// Its media type.
    pub content_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of its bytes (its download's `ETag`).
    pub sha256: String,
    /// Where to download it: `/jobs/{id}/result?name=<name, percent-encoded>`.
    pub url: String,
}

impl ArtifactLink {
    /// The link to `meta`, an artifact of job `id`.
    pub fn new(id: JobId, meta: ArtifactMeta) -> Self {
        ArtifactLink {
            url: format!("/jobs/{id}/result?name={}", percent_encode(&meta.name)),
            name: meta.name,
            content_type: meta.content_type,
            size: meta.size,
            sha256: meta.sha256,
        }
    }
}

/// `text` with every byte but RFC 3986's unreserved characters percent-encoded (UTF-8).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An `Idempotency-Key` and the fingerprint of the request that first used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The client's key.
    pub key: String,
    /// SHA-256 of the canonical request.
    pub fingerprint: String,
}

/// What a redrive needs that the job's status does not show.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInput {
    /// The payload as submitted.
    pub payload: Value,
    /// `max_attempts` as submitted: each redrive grants this many more attempts.
    pub budget: u32,
    /// Its input files, with their bytes.
    pub files: Vec<StoredFile>,
}

/// A filter for listing jobs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this kind.
    pub kind: Option<JobKind>,
    /// Only jobs older than this one (ids sort by submission time).
    pub before: Option<JobId>,
    /// At most this many.
    pub limit: u32,
    /// Only jobs this key submitted (`None`: every job, for an admin).
    pub owner: Option<String>,
}

/// Which jobs [`Store::cancel`] cancels: those matching every field set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CancelFilter {
    /// Only this job.
    pub id: Option<JobId>,
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this kind.
    pub kind: Option<JobKind>,
    /// Only jobs this key submitted (`None`: every job, for an admin).
    pub owner: Option<String>,
    /// At most this many.
    pub limit: u32,
}

/// One write, as the writer task applies it.
// `Insert` is by far the most common write and the largest: boxing it would allocate once more
// for every job accepted, to save space in the rarer ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Write {
    /// Record a job accepted by `POST /jobs`, with its payload and idempotency key. If the key
    /// is taken nothing is written and the result is [`Written::KeyTaken`]. A job recorded
    /// before its publish is confirmed carries `resolve_at`: it is *unresolved* until a confirm
    /// ([`Write::Confirmed`]) or one of its events clears it, and due to be republished then.
    Insert {
        /// The job (its status is `queued` while its publish is in flight, or `pending`).
        job: JobRecord,
        /// Its payload.
        payload: Value,
        /// The key it claims, if any.
        key: Option<IdempotencyKey>,
        /// When an unresolved job is due to be republished; `None` for a resolved one.
        resolve_at: Option<OffsetDateTime>,
        /// Its input files (kept for a republish or redrive).
        inputs: Vec<StoredFile>,
    },
    /// Forget a job (and its key).
    Delete(JobId),
    /// Apply a lifecycle event if it moves the job forward (a pending job included).
    Event(JobEvent),
    /// The broker confirmed these jobs' publish: those still unresolved are resolved (a
    /// `pending` one becomes `queued`); those that moved on (an event arrived first) are left
    /// alone. [`Written::Nothing`] if none was unresolved.
    Confirmed(Vec<JobId>),
    /// These jobs' publish was not confirmed in time: those still `queued` and unresolved show
    /// `pending` until resolved. [`Written::Nothing`] if none was.
    Unconfirmed(Vec<JobId>),
    /// Put a dead job back, `pending` its publish, for another attempt; [`Written::Nothing`]
    /// unless it was dead.
    Redrive {
        /// The job.
        id: JobId,
        /// The new attempt.
        attempt: u32,
        /// The new attempt limit.
        max_attempts: u32,
        /// When it is due to be resolved if its publish is not confirmed by then.
        resolve_at: OffsetDateTime,
    },
    /// Mark a job dead whatever its status (a redrive whose publish failed).
    MarkDead {
        /// The job.
        id: JobId,
        /// The attempt that did not get published.
        attempt: u32,
        /// Why.
        error: String,
    },
}

/// What one write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// It changed what it was meant to.
    Done,
    /// It matched nothing (a redrive of a job that is not dead, a confirm of jobs no longer
    /// pending).
    Nothing,
    /// The idempotency key already belongs to a job.
    KeyTaken {
        /// That job.
        job_id: JobId,
        /// The fingerprint of the request that created it.
        fingerprint: String,
    },
}

/// The store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("job store error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database URL is not one this build supports.
    #[error(
        "unsupported OFFLOAD_DATABASE_URL {0:?}: use sqlite://path/to/file.db (the file and its folder are created) \
         for one API process, or postgres://user@host/db (the tables are created) for several API replicas"
    )]
    UnsupportedUrl(String),
    /// No schema of PostgreSQL's `search_path` exists, so there is nowhere to create the tables.
    #[error(
        "no schema of the search_path {0:?} exists in this PostgreSQL database: create it \
         (CREATE SCHEMA name) or choose another with ?options=-c%20search_path%3Dname in OFFLOAD_DATABASE_URL"
    )]
    NoSchema(String),
    /// Bringing the schema up to date failed (nothing of the failed migration was applied).
    #[error("job store migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The database was migrated by a newer build than this one.
    #[error(
        "the job store's schema is at migration {applied}, newer than this build knows (up to {known}): \
         run the newer build, or restore the backup taken before the upgrade"
    )]
    SchemaTooNew {
        /// The newest migration the database has.
        applied: i64,
        /// The newest migration this build has.
        known: i64,
    },
    /// A database created before versioned migrations whose tables match no schema this
    /// project shipped.
    #[error(
        "the job store has tables but no migration history, and its columns match no schema Offload \
         shipped ({0}); point OFFLOAD_DATABASE_URL at Offload's database, or at an empty one"
    )]
    UnrecognisedSchema(String),
    /// A JSON path search that parsed but that PostgreSQL could not run (a datetime without a
    /// time zone, a variable): the client's to change, not the store's failure.
    #[error("the JSON path cannot be run: {0}")]
    BadSearch(String),
    /// A stored row does not decode (written by another version?).
    #[error("stored job {id} does not decode: {reason}")]
    Corrupt {
        /// The row's id.
        id: String,
        /// What did not decode.
        reason: String,
    },
    /// The batch holding this write failed; the writer logged the cause once, and every
    /// request of the batch shares it.
    #[error("job store write failed")]
    WriteFailed(#[source] Arc<StoreError>),
    /// The write did not commit within the request's deadline; if it commits later the
    /// writer undoes it.
    #[error("the job store did not commit the write within {0:?}")]
    WriteTimedOut(Duration),
    /// The writer task has stopped (the process is shutting down).
    #[error("the job store writer has stopped")]
    WriterGone,
}
