//! The store's SQL, written once: both databases read `$n` placeholders. The few statements
//! whose text differs are macros here, filled in by each dialect with its fragment (how a list
//! of ids is matched, `FOR UPDATE SKIP LOCKED`), so the rest of their text is still shared.

/// The columns a [`super::JobRecord`] decodes from.
macro_rules! job_columns {
    () => {
        "id, kind, status, attempt, max_attempts, timeout_ms, worker, submitted_at, started_at, \
         finished_at, result, error, runs, owner, artifacts, run_at, progress_ppm, \
         progress_message, progress_at, priority, concurrency_key, concurrency_limit, gate, \
         lease_until, heartbeat_at"
    };
}

/// Statuses after which nothing happens to a job; retention deletes these.
macro_rules! finished_statuses {
    () => {
        "('succeeded', 'failed', 'dead', 'cancelled')"
    };
}

pub(super) const GET_JOB: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");

pub(super) const GET_INPUT: &str = "SELECT payload, budget FROM jobs WHERE id = $1";

/// An absent filter binds NULL and matches everything. The error is cut in the database so a
/// long one never leaves it; one character more than the summary keeps says it was cut.
pub(super) const LIST: &str =
    "SELECT id, kind, status, attempt, max_attempts, timeout_ms, worker, \
     submitted_at, started_at, finished_at, runs, substr(error, 1, 257) AS error, owner, artifacts, \
     run_at, progress_ppm, progress_message, progress_at, priority, concurrency_key, \
     concurrency_limit, gate, lease_until, heartbeat_at, \
     CAST(NULL AS TEXT) AS result, \
     CAST(CASE WHEN result IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_result
     FROM jobs
     WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR kind = $2) AND ($3 IS NULL OR id < $3)
       AND ($5 IS NULL OR owner = $5)
     ORDER BY id DESC LIMIT $4";

pub(super) const PING: &str = "SELECT 1";

/// Claims a key for a job; changes nothing if the key is taken.
pub(super) const CLAIM_KEY: &str =
    "INSERT INTO idempotency_keys (key, fingerprint, job_id, created_at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (key) DO NOTHING";

pub(super) const KEY_OWNER: &str =
    "SELECT fingerprint, job_id FROM idempotency_keys WHERE key = $1";

pub(super) const DELETE_JOB: &str = "DELETE FROM jobs WHERE id = $1";

pub(super) const INSERT_INPUT: &str =
    "INSERT INTO job_inputs (job_id, position, field, filename, content_type, size, sha256, data)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub(super) const GET_INPUTS: &str =
    "SELECT field, filename, content_type, size, sha256, data FROM job_inputs
     WHERE job_id = $1 ORDER BY position";

pub(super) const GET_INPUT_META: &str =
    "SELECT field, filename, content_type, size, sha256 FROM job_inputs
     WHERE job_id = $1 ORDER BY position";

/// Adds a step to job `$1`'s history, if the store has the job and its history holds fewer than
/// `$9` steps (a job redelivered without end, or events forged for it, cannot grow it without
/// bound); a step it has already (the same attempt reaching the same status at the same time)
/// is not added again.
pub(super) const RECORD_STEP: &str =
    "INSERT INTO job_steps (job_id, at, attempt, status, worker, started_at, run_ms, error)
     SELECT $1, $2, $3, $4, $5, $6, $7, $8
     WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1)
       AND (SELECT COUNT(*) FROM job_steps WHERE job_id = $1) < $9
     ON CONFLICT DO NOTHING";

/// Job `$1`'s latest `$2` steps, newest first.
pub(super) const JOB_STEPS: &str =
    "SELECT at, attempt, status, worker, started_at, run_ms, error FROM job_steps
     WHERE job_id = $1 ORDER BY at DESC, attempt DESC LIMIT $2";

/// Stores an artifact; a redelivery (or a later attempt's artifact of the same name) replaces it.
pub(super) const PUT_ARTIFACT: &str =
    "INSERT INTO artifacts (job_id, name, content_type, size, sha256, data, attempt, stored_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (job_id, name) DO UPDATE SET content_type = excluded.content_type,
         size = excluded.size, sha256 = excluded.sha256, data = excluded.data,
         attempt = excluded.attempt, stored_at = excluded.stored_at";

pub(super) const GET_ARTIFACT: &str =
    "SELECT content_type, sha256, data FROM artifacts WHERE job_id = $1 AND name = $2";

/// Artifacts of no job (the job was deleted, or its events never came) stored before `$1`.
pub(super) const PURGE_ORPHAN_ARTIFACTS: &str = "DELETE FROM artifacts
     WHERE stored_at < $1 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = artifacts.job_id)";

/// One statement (one round trip): every start counts (`$11`), even a duplicate's; the rest
/// applies only if it moves the job forward (`$3`, its progress), so duplicates and late
/// events change nothing else. SET reads the row as it was, so each CASE sees the old
/// progress. An event settles a pending job: it is no longer due to be resolved. On
/// PostgreSQL the row update is atomic: a concurrent writer's update is waited for, then the
/// condition is checked again against the row it committed. A long job's start sets its lease
/// (`$13`, when it lapses) and first heartbeat (`$14`); any other step clears the lease.
pub(super) const EVENT: &str = "UPDATE jobs SET runs = runs + $11,
         status = CASE WHEN progress < $3 THEN $2 ELSE status END,
         attempt = CASE WHEN progress < $3 THEN $4 ELSE attempt END,
         worker = CASE WHEN progress < $3 THEN $5 ELSE worker END,
         started_at = CASE WHEN progress < $3 THEN COALESCE($6, started_at, $7) ELSE started_at END,
         finished_at = CASE WHEN progress < $3 THEN $8 ELSE finished_at END,
         result = CASE WHEN progress < $3 THEN $9 ELSE result END,
         error = CASE WHEN progress < $3 THEN $10 ELSE error END,
         artifacts = CASE WHEN progress < $3 THEN $12 ELSE artifacts END,
         progress_ppm = CASE WHEN progress < $3 AND $2 = 'running' THEN NULL ELSE progress_ppm END,
         progress_message = CASE WHEN progress < $3 AND $2 = 'running' THEN NULL
                                 ELSE progress_message END,
         progress_at = CASE WHEN progress < $3 AND $2 = 'running' THEN NULL ELSE progress_at END,
         resolve_at = CASE WHEN progress < $3 THEN NULL ELSE resolve_at END,
         lease_until = CASE WHEN progress < $3 THEN $13 ELSE lease_until END,
         heartbeat_at = CASE WHEN progress < $3 AND $2 = 'running' THEN $14 ELSE heartbeat_at END,
         progress = CASE WHEN progress < $3 THEN $3 ELSE progress END
     WHERE id = $1 AND (progress < $3 OR $11 > 0)";

/// A heartbeat of job `$1`'s long attempt `$4` (sent at `$3`): its lease now lapses at `$2`.
/// Applied only while that attempt runs, and only if no later heartbeat was. It sets the lease
/// even where the attempt's start did not (a start without a lease of the same attempt was
/// applied first: a redelivery, or a worker that did not know the kind is long).
pub(super) const HEARTBEAT: &str = "UPDATE jobs SET lease_until = $2, heartbeat_at = $3
     WHERE id = $1 AND status = 'running' AND attempt = $4
       AND (heartbeat_at IS NULL OR heartbeat_at <= $3)";

/// Moves every running lease that lapses before `$1` to `$1`: at the reaper's start and after
/// the API was cut off from the broker, so that heartbeats still waiting in the events queue are
/// applied before any lease is taken for lapsed.
pub(super) const EXTEND_LEASES: &str = "UPDATE jobs SET lease_until = $1
     WHERE lease_until < $1 AND status = 'running'";

/// Running long jobs whose lease lapsed before `$1`, the longest lapsed first, at most `$2`.
pub(super) const LAPSED: &str = "SELECT id, attempt, max_attempts, worker, heartbeat_at FROM jobs
     WHERE lease_until < $1 AND status = 'running'
     ORDER BY lease_until LIMIT $2";

/// Starts job `$1` again as attempt `$3` (`pending`, progress `$2`, due to be published at
/// `$5`) if its attempt `$3 - 1` still runs under a lease that lapsed before `$5`: of two
/// replicas reaping at once, one does. Its old attempt's late events then rank below it.
pub(super) const RESTART_LAPSED: &str =
    "UPDATE jobs SET status = 'pending', progress = $2, attempt = $3, resolve_at = $5,
         error = $4, lease_until = NULL, progress_ppm = NULL, progress_message = NULL,
         progress_at = NULL
     WHERE id = $1 AND status = 'running' AND attempt = $3 - 1 AND lease_until < $5";

/// Ends job `$1` dead (progress `$2`, at `$5`, with the reason `$4`) if its last attempt `$3`
/// still runs under a lease that lapsed before `$5`.
pub(super) const BURY_LAPSED: &str =
    "UPDATE jobs SET status = 'dead', progress = $2, error = $4, finished_at = $5,
         lease_until = NULL
     WHERE id = $1 AND status = 'running' AND attempt = $3 AND lease_until < $5";

/// A progress report of job `$1`'s attempt `$5`: applied only while that attempt is running,
/// and only if no later report was applied (`$4` its time). A start of the next attempt clears
/// it ([`EVENT`]).
pub(super) const PROGRESS: &str = "UPDATE jobs SET progress_ppm = $2, progress_message = $3,
         progress_at = $4
     WHERE id = $1 AND status = 'running' AND attempt = $5
       AND (progress_at IS NULL OR progress_at <= $4)";

/// A job the store first hears of through its events: recorded below every status (progress
/// 0), so the event applied next moves it forward; nothing if the row exists.
pub(super) const ADOPT: &str =
    "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, budget, timeout_ms, \
         submitted_at, payload, resolve_at)
     VALUES ($1, $2, 'queued', 0, $3, $4, $4, 0, $5, 'null', NULL)
     ON CONFLICT (id) DO NOTHING";

pub(super) const REDRIVE: &str =
    "UPDATE jobs SET status = 'pending', progress = $2, attempt = $3, \
         max_attempts = $4, resolve_at = $5,
         worker = NULL, started_at = NULL, finished_at = NULL, result = NULL, error = NULL,
         artifacts = NULL
     WHERE id = $1 AND status = 'dead'";

pub(super) const MARK_DEAD: &str = "UPDATE jobs SET status = 'dead', progress = $2, attempt = $3, \
         error = $4, finished_at = $5, resolve_at = NULL, lease_until = NULL
     WHERE id = $1 AND status <> 'cancelled'";

/// A worker reported job `$1` cancelled (acked without running, or stopped): its cancel need
/// not be repeated to the workers any more.
pub(super) const SETTLE_CANCEL: &str = "UPDATE jobs SET cancel_settled_at = $2
     WHERE id = $1 AND status = 'cancelled' AND cancel_settled_at IS NULL";

/// Cancelled jobs, finished at `$1` or later, that no worker has reported settled; newest first.
pub(super) const UNSETTLED_CANCELS: &str = "SELECT id FROM jobs
     WHERE status = 'cancelled' AND cancel_settled_at IS NULL AND finished_at >= $1
     ORDER BY finished_at DESC LIMIT $2";

/// [`super::Store::cancel`]: up to `$4` unfinished jobs matching the filter (`$1` id, `$2`
/// status, `$3` kind, `$6` owner; NULL matches all) become `cancelled` (progress `$5`, so no
/// event moves them on), with `$7` saying who cancelled them and `$8` when; `resolve_at` is
/// cleared so an unpublished or scheduled one is never published. Picked like [`claim_sql`]'s;
/// conditions checked again on the row as it is when updated.
macro_rules! cancel_sql {
    ($lock:literal) => {
        concat!(
            "WITH target AS MATERIALIZED (
                 SELECT id FROM jobs
                 WHERE status NOT IN ",
            $crate::store::sql::finished_statuses!(),
            " AND ($1 IS NULL OR id = $1) AND ($2 IS NULL OR status = $2)
                   AND ($3 IS NULL OR kind = $3) AND ($6 IS NULL OR owner = $6)
                 ORDER BY id LIMIT $4",
            $lock,
            ")
             UPDATE jobs SET status = 'cancelled', progress = $5, error = $7, finished_at = $8,
                 resolve_at = NULL, lease_until = NULL
             WHERE id IN (SELECT id FROM target) AND status NOT IN ",
            $crate::store::sql::finished_statuses!(),
            " RETURNING id"
        )
    };
}

/// [`super::Write::Confirmed`]: `$1` the progress step from pending to queued, `$2` the ids
/// (matched by `$ids`, e.g. `IN (…)`), `$3` the step from scheduled to queued. An unconfirmed
/// job (`resolve_at` set) is resolved: a `queued` one keeps its status, a `pending` or a
/// `scheduled` one (published when its time came) becomes `queued`.
macro_rules! confirm_sql {
    ($ids:literal) => {
        concat!(
            "UPDATE jobs SET
                 status = CASE WHEN status IN ('pending', 'scheduled') THEN 'queued' ELSE status END,
                 progress = CASE WHEN status = 'pending' THEN progress + $1
                                 WHEN status = 'scheduled' THEN progress + $3
                                 ELSE progress END,
                 resolve_at = NULL
             WHERE resolve_at IS NOT NULL AND id ",
            $ids
        )
    };
}

/// [`super::Write::Unconfirmed`]: `$1` the progress step from pending to queued, `$2` the ids.
/// Only a job still `queued` and unconfirmed becomes `pending`; one an event moved on stays.
macro_rules! unconfirm_sql {
    ($ids:literal) => {
        concat!(
            "UPDATE jobs SET status = 'pending', progress = progress - $1
             WHERE status = 'queued' AND resolve_at IS NOT NULL AND id ",
            $ids
        )
    };
}

/// The earliest `resolve_at` (read from the partial index `jobs_unresolved`).
pub(super) const NEXT_RESOLVE_AT: &str =
    "SELECT MIN(resolve_at) AS next FROM jobs WHERE resolve_at IS NOT NULL";

/// Whether job `$1` is unresolved (its publish not confirmed yet).
pub(super) const UNRESOLVED: &str =
    "SELECT 1 AS unresolved FROM jobs WHERE id = $1 AND resolve_at IS NOT NULL";

/// [`super::Store::claim_unresolved`]. The CTE picks the rows once (`MATERIALIZED`: on
/// PostgreSQL a `LIMIT … SKIP LOCKED` subquery under `IN` is run again per row and, skipping
/// the rows it has just updated, takes more than the limit); `$lock` keeps two replicas off the
/// same rows. The outer conditions are checked again on the row as it is when updated, so a
/// row another replica claimed meanwhile is not taken twice.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "WITH due AS MATERIALIZED (
                 SELECT id FROM jobs WHERE resolve_at <= $1
                 ORDER BY resolve_at, id LIMIT $3",
            $lock,
            ")
             UPDATE jobs SET resolve_at = $2
             WHERE id IN (SELECT id FROM due) AND resolve_at <= $1
             RETURNING ",
            $crate::store::sql::job_columns!(),
            ", payload"
        )
    };
}

/// One retention batch of finished jobs, picked like [`claim_sql`]'s by `finished_at` alone
/// (only a finished job has one; a status condition there would have SQLite walk the status
/// index through every finished job); conditions checked again on the row as it is when
/// deleted (a job redriven meanwhile stays).
macro_rules! purge_jobs_sql {
    ($lock:literal) => {
        concat!(
            "WITH old AS MATERIALIZED (
                 SELECT id FROM jobs WHERE finished_at < $1 ORDER BY finished_at LIMIT $2",
            $lock,
            ")
             DELETE FROM jobs
             WHERE id IN (SELECT id FROM old) AND finished_at < $1 AND status IN ",
            $crate::store::sql::finished_statuses!(),
            " RETURNING id"
        )
    };
}

/// The keys of the jobs `$1` (matched by `$ids`).
macro_rules! purge_keys_of_jobs_sql {
    ($ids:literal) => {
        concat!("DELETE FROM idempotency_keys WHERE job_id ", $ids)
    };
}

/// The input files of the jobs `$1` (matched by `$ids`).
macro_rules! purge_inputs_of_jobs_sql {
    ($ids:literal) => {
        concat!("DELETE FROM job_inputs WHERE job_id ", $ids)
    };
}

/// The artifacts of the jobs `$1` (matched by `$ids`).
macro_rules! purge_artifacts_of_jobs_sql {
    ($ids:literal) => {
        concat!("DELETE FROM artifacts WHERE job_id ", $ids)
    };
}

/// The history of the jobs `$1` (matched by `$ids`).
macro_rules! purge_steps_of_jobs_sql {
    ($ids:literal) => {
        concat!("DELETE FROM job_steps WHERE job_id ", $ids)
    };
}

/// One retention batch of expired keys, picked like [`claim_sql`]'s; the key of an unresolved
/// job stays whatever its age (a keyed retry must find the job its first request left unresolved).
macro_rules! purge_keys_sql {
    ($lock:literal) => {
        concat!(
            "WITH old AS MATERIALIZED (
                 SELECT k.key FROM idempotency_keys k
                 WHERE k.created_at < $1
                   AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = k.job_id AND j.resolve_at IS NOT NULL)
                 ORDER BY k.created_at LIMIT $2",
            $lock,
            ")
             DELETE FROM idempotency_keys
             WHERE key IN (SELECT key FROM old) AND created_at < $1
               AND NOT EXISTS (SELECT 1 FROM jobs j
                               WHERE j.id = idempotency_keys.job_id AND j.resolve_at IS NOT NULL)"
        )
    };
}

pub(super) use {
    cancel_sql, claim_sql, confirm_sql, finished_statuses, job_columns,
    purge_artifacts_of_jobs_sql, purge_inputs_of_jobs_sql, purge_jobs_sql, purge_keys_of_jobs_sql,
    purge_keys_sql, purge_steps_of_jobs_sql, unconfirm_sql,
};
