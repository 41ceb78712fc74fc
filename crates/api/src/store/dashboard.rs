//! What the dashboard reads and does beyond the API's own routes: the jobs page's filters and
//! search (keyset pages on the time-ordered id), dead letters grouped by reason and deleted in
//! bulk, and the audit list of actions.
//!
//! The filtered listings are put together from constant SQL fragments, one per filter that is
//! set, so each filter can use its index; whatever a client sent is a bound parameter.

use std::borrow::Cow;

use time::OffsetDateTime;

use offload_shared::{JobId, JobStatus};

use super::{
    JobSummary, StoreError,
    decode::{count, summary},
    dialect::{Dialect, Stmt},
    ops::{Db, delete_what_jobs_leave},
    sql,
};

/// How a search string is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search {
    /// Text anywhere in the payload, the result or the error (case-insensitive).
    Text(String),
    /// A SQL/JSON path (`$.user ? (@ == "ada")`) that must find something in the payload or the
    /// result; PostgreSQL only.
    JsonPath(String),
}

/// The jobs page's filter; every field set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobQuery {
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs of these kinds (a kind filter is one; a queue filter is its kinds). `Some`
    /// of an empty list matches nothing.
    pub kinds: Option<Vec<String>>,
    /// Only jobs a worker of this name reported on.
    pub worker: Option<String>,
    /// Only jobs submitted at or after this.
    pub from: Option<OffsetDateTime>,
    /// Only jobs submitted before this.
    pub to: Option<OffsetDateTime>,
    /// Only dead jobs whose reason starts with this ([`REASON_CHARS`] characters of the error,
    /// as the dead-letter groups show it).
    pub reason: Option<String>,
    /// Only jobs the search finds.
    pub search: Option<Search>,
    /// Only jobs this key submitted (`None`: every job, for an admin).
    pub owner: Option<String>,
}

impl JobQuery {
    /// The same query, of dead jobs only.
    pub fn dead(&self) -> JobQuery {
        JobQuery {
            status: Some(JobStatus::Dead),
            ..self.clone()
        }
    }
}

/// Characters of a dead job's error its dead-letter group is named by.
pub const REASON_CHARS: i64 = 160;

/// One group of dead jobs: the same reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadGroup {
    /// The first [`REASON_CHARS`] characters of their error (empty: none).
    pub reason: String,
    /// How many.
    pub count: u64,
    /// Their kinds, comma-separated, sorted.
    pub kinds: String,
    /// When the latest of them died.
    pub latest: Option<OffsetDateTime>,
}

/// Most steps of one job's history the store keeps (and a page shows).
pub const MAX_STEPS: u32 = 500;

/// One step of a job's history: an attempt started or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStep {
    /// When the worker (or the API) saw it.
    pub at: OffsetDateTime,
    /// Which attempt.
    pub attempt: u32,
    /// What it reached.
    pub status: JobStatus,
    /// The worker; `None` where the API decided it (a lapsed lease, a redrive).
    pub worker: Option<String>,
    /// When the attempt started, on an end whose start was reported with it.
    pub started_at: Option<OffsetDateTime>,
    /// How long the handler ran, on an end.
    pub run_ms: Option<u64>,
    /// What went wrong.
    pub error: Option<String>,
}

/// One entry of the audit list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its place in the list (newest highest).
    pub seq: i64,
    /// When.
    pub at: OffsetDateTime,
    /// The key's name (`anonymous` without authentication).
    pub key_name: String,
    /// What was done: `job.cancel`, `dead.redrive`, `schedule.pause`, …
    pub action: String,
    /// To what: a job id, a schedule's name, a filter.
    pub target: String,
    /// What came of it.
    pub detail: Option<String>,
}

/// An action to add to the audit list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit<'a> {
    /// The key's id, if it has one.
    pub key_id: Option<&'a str>,
    /// The key's name.
    pub key_name: &'a str,
    /// What was done.
    pub action: &'a str,
    /// To what.
    pub target: &'a str,
    /// What came of it.
    pub detail: Option<&'a str>,
}

/// The smallest id of a job submitted at `t`: ids are UUID v7, their first 48 bits the
/// submission time in milliseconds, so a time range is an id range on the primary key.
pub fn first_id_at(t: OffsetDateTime) -> JobId {
    let ms = u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let ms = ms.min((1 << 48) - 1);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    JobId::from_uuid(uuid::Uuid::from_bytes(bytes))
}

/// `LIKE` pattern of `text` anywhere, with `\` escaping its own `%`, `_` and `\`.
pub fn like_anywhere(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The `WHERE` of a [`JobQuery`] and the statement it binds into.
struct Filtered<'a> {
    clauses: Vec<String>,
    stmt: Stmt<'a>,
    next: usize,
}

impl<'a> Filtered<'a> {
    fn new() -> Self {
        Filtered {
            clauses: Vec::new(),
            stmt: Stmt::new(""),
            next: 1,
        }
    }

    /// The next parameter's placeholder.
    fn param(&mut self) -> String {
        let p = format!("${}", self.next);
        self.next += 1;
        p
    }

    fn of<D: Dialect>(q: &'a JobQuery) -> Self {
        let mut f = Filtered::new();
        if let Some(status) = q.status {
            let p = f.param();
            f.clauses.push(format!("status = {p}"));
            f.stmt = f.stmt.str(Some(status.as_str()));
        }
        match q.kinds.as_deref() {
            None => {}
            Some([]) => f.clauses.push("1 = 0".to_owned()),
            Some([one]) => {
                let p = f.param();
                f.clauses.push(format!("kind = {p}"));
                f.stmt = f.stmt.str(Some(one.as_str()));
            }
            Some(many) => {
                let p = f.param();
                f.clauses.push(format!("kind {}", D::in_text_list(&p)));
                let list = serde_json::to_string(many).unwrap_or_else(|_| "[]".to_owned());
                f.stmt = f.stmt.text(Some(Cow::Owned(list)));
            }
        }
        if let Some(worker) = &q.worker {
            let p = f.param();
            f.clauses.push(format!("worker = {p}"));
            f.stmt = f.stmt.str(Some(worker.as_str()));
        }
        if let Some(from) = q.from {
            let p = f.param();
            f.clauses.push(format!("id >= {p}"));
            f.stmt = f.stmt.id(first_id_at(from));
        }
        if let Some(to) = q.to {
            let p = f.param();
            f.clauses.push(format!("id < {p}"));
            f.stmt = f.stmt.id(first_id_at(to));
        }
        if let Some(reason) = &q.reason {
            let p = f.param();
            f.clauses.push(format!(
                "COALESCE(substr(error, 1, {REASON_CHARS}), '') = {p}"
            ));
            f.stmt = f.stmt.str(Some(reason.as_str()));
        }
        match &q.search {
            None => {}
            Some(Search::Text(text)) => {
                let p = f.param();
                let like = D::TEXT_MATCH;
                f.clauses.push(format!(
                    "(payload {like} {p} ESCAPE '\\' OR result {like} {p} ESCAPE '\\' \
                     OR error {like} {p} ESCAPE '\\')"
                ));
                f.stmt = f.stmt.text(Some(Cow::Owned(like_anywhere(text))));
            }
            Some(Search::JsonPath(path)) => {
                let p = f.param();
                f.clauses.push(D::json_path_match(&p));
                f.stmt = f.stmt.str(Some(path.as_str()));
            }
        }
        if let Some(owner) = &q.owner {
            let p = f.param();
            f.clauses.push(format!("owner = {p}"));
            f.stmt = f.stmt.str(Some(owner.as_str()));
        }
        f
    }

    /// Binds `n` as the next parameter; its placeholder.
    fn bind_int(&mut self, n: i64) -> String {
        let p = self.param();
        self.stmt = std::mem::replace(&mut self.stmt, Stmt::new("")).int(n);
        p
    }

    /// The statement: `head`, the `WHERE` of the filters, then `tail`.
    fn into_stmt(self, head: &str, tail: &str) -> Stmt<'a> {
        let filters = if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        };
        Stmt {
            sql: Cow::Owned(format!("{head}{filters}{tail}")),
            ..self.stmt
        }
    }
}

/// What the overview shows of the last hour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HourStats {
    /// Jobs submitted since, by status.
    pub by_status: Vec<(String, u64)>,
    /// Jobs submitted, per minute since (minutes from `since`, 0 to 59).
    pub submitted: Vec<(i64, u64)>,
    /// Jobs finished, per minute since, and how many of them failed or died.
    pub finished: Vec<(i64, u64, u64)>,
    /// When the oldest job still waiting in a queue was submitted.
    pub oldest_waiting: Option<OffsetDateTime>,
    /// Run time of the jobs that succeeded since: median and 95th percentile, in ms.
    pub run_ms: Option<(i64, i64)>,
}

/// A database error of a query with a JSON path search that the path caused (a data
/// exception, an unsupported feature such as a datetime without a time zone, an unknown
/// variable) as [`StoreError::BadSearch`]; any other as it is.
fn search_error(q: &JobQuery, e: sqlx::Error) -> StoreError {
    if matches!(q.search, Some(Search::JsonPath(_)))
        && let sqlx::Error::Database(db) = &e
        && db
            .code()
            .is_some_and(|c| c.starts_with("22") || c == "0A000" || c == "42704")
    {
        return StoreError::BadSearch(db.message().to_owned());
    }
    e.into()
}

/// The columns of a listing row (as `sql::LIST`).
const SUMMARY_COLUMNS: &str = "id, kind, status, attempt, max_attempts, timeout_ms, worker, \
     submitted_at, started_at, finished_at, runs, substr(error, 1, 257) AS error, owner, artifacts, \
     run_at, progress_ppm, progress_message, progress_at, priority, concurrency_key, \
     concurrency_limit, gate, lease_until, heartbeat_at, \
     CAST(NULL AS TEXT) AS result, \
     CAST(CASE WHEN result IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_result";

impl<D: Dialect> Db<D> {
    /// Checks a search before it runs: a JSON path must parse (PostgreSQL), and is refused on
    /// SQLite. `Err` holds the reason, for the client.
    pub(super) async fn check_search(
        &self,
        search: &Search,
    ) -> Result<Result<(), String>, StoreError> {
        let Search::JsonPath(path) = search else {
            return Ok(Ok(()));
        };
        let Some(check) = D::JSON_PATH_CHECK else {
            return Ok(Err(
                "a JSON path search needs the PostgreSQL store; this one is SQLite, which \
                 matches text: leave out the leading `$`"
                    .to_owned(),
            ));
        };
        let mut conn = self.pool().acquire().await?;
        match D::fetch_optional(&mut conn, Stmt::new(check).str(Some(path.as_str()))).await {
            Ok(_) => Ok(Ok(())),
            Err(sqlx::Error::Database(e)) => Ok(Err(format!("not a JSON path: {}", e.message()))),
            Err(e) => Err(e.into()),
        }
    }

    /// A page of jobs matching `q`, newest first, older than `before`.
    pub(super) async fn find_jobs(
        &self,
        q: &JobQuery,
        before: Option<JobId>,
        limit: u32,
    ) -> Result<Vec<JobSummary>, StoreError> {
        let mut f = Filtered::of::<D>(q);
        if let Some(before) = before {
            let p = f.param();
            f.clauses.push(format!("id < {p}"));
            f.stmt = f.stmt.id(before);
        }
        let p = f.bind_int(i64::from(limit));
        let head = format!("SELECT {SUMMARY_COLUMNS} FROM jobs");
        let stmt = f.into_stmt(&head, &format!(" ORDER BY id DESC LIMIT {p}"));
        let mut conn = self.pool().acquire().await?;
        let rows = D::fetch_all(&mut conn, stmt)
            .await
            .map_err(|e| search_error(q, e))?;
        rows.iter().map(summary::<D>).collect()
    }

    /// How many jobs match `q`.
    pub(super) async fn count_jobs(&self, q: &JobQuery) -> Result<u64, StoreError> {
        let stmt = Filtered::of::<D>(q).into_stmt("SELECT COUNT(*) AS n FROM jobs", "");
        let mut conn = self.pool().acquire().await?;
        let row = D::fetch_optional(&mut conn, stmt)
            .await
            .map_err(|e| search_error(q, e))?;
        let n = match row {
            Some(row) => D::get_int(&row, "n")?.unwrap_or(0),
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The ids of up to `limit` dead jobs matching `q`, oldest first.
    pub(super) async fn dead_ids(
        &self,
        q: &JobQuery,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError> {
        let dead = q.dead();
        let mut f = Filtered::of::<D>(&dead);
        let p = f.bind_int(i64::from(limit));
        let stmt = f.into_stmt("SELECT id FROM jobs", &format!(" ORDER BY id LIMIT {p}"));
        let mut conn = self.pool().acquire().await?;
        let rows = D::fetch_all(&mut conn, stmt)
            .await
            .map_err(|e| search_error(q, e))?;
        rows.iter().map(|r| D::get_id(r, "id")).collect()
    }

    /// The dead jobs `owner` may see, grouped by reason, largest group first.
    pub(super) async fn dead_groups(
        &self,
        owner: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadGroup>, StoreError> {
        let q = JobQuery {
            status: Some(JobStatus::Dead),
            owner: owner.map(str::to_owned),
            ..JobQuery::default()
        };
        let mut f = Filtered::of::<D>(&q);
        let p = f.bind_int(i64::from(limit));
        let head = format!(
            "SELECT COALESCE(substr(error, 1, {REASON_CHARS}), '') AS reason, COUNT(*) AS n, \
             {} AS kinds, MAX(finished_at) AS latest FROM jobs",
            D::DISTINCT_KINDS
        );
        let tail = format!(
            " GROUP BY COALESCE(substr(error, 1, {REASON_CHARS}), '') ORDER BY n DESC, reason LIMIT {p}"
        );
        let stmt = f.into_stmt(&head, &tail);
        let mut conn = self.pool().acquire().await?;
        let rows = D::fetch_all(&mut conn, stmt).await?;
        rows.iter()
            .map(|row| {
                Ok(DeadGroup {
                    reason: D::get_text(row, "reason")?.unwrap_or_default(),
                    count: u64::try_from(D::get_int(row, "n")?.unwrap_or(0)).unwrap_or(0),
                    kinds: D::get_text(row, "kinds")?.unwrap_or_default(),
                    latest: D::get_time(row, "latest")?,
                })
            })
            .collect()
    }

    /// Deletes the jobs of `ids` that are still dead, with their keys, input files, artifacts
    /// and history; their ids.
    pub(super) async fn delete_dead(&self, ids: &[JobId]) -> Result<Vec<JobId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool().begin().await?;
        let sql = format!(
            "DELETE FROM jobs WHERE status = 'dead' AND id {} RETURNING id",
            D::in_ids("$1")
        );
        let stmt = Stmt::built(Cow::Owned(sql)).ids(ids);
        let deleted = D::fetch_all(&mut tx, stmt)
            .await?
            .iter()
            .map(|row| D::get_id(row, "id"))
            .collect::<Result<Vec<_>, _>>()?;
        delete_what_jobs_leave::<D>(&mut tx, &deleted).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// The overview's figures for the hour since `since`.
    pub(super) async fn hour_stats(&self, since: OffsetDateTime) -> Result<HourStats, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let first = first_id_at(since);
        let mut stats = HourStats::default();
        let rows = D::fetch_all(
            &mut conn,
            Stmt::new(
                "SELECT status, COUNT(*) AS n FROM jobs WHERE id >= $1 GROUP BY status ORDER BY status",
            )
            .id(first),
        )
        .await?;
        for row in &rows {
            let n = D::get_int(row, "n")?.unwrap_or(0);
            stats.by_status.push((
                D::get_text(row, "status")?.unwrap_or_default(),
                u64::try_from(n).unwrap_or(0),
            ));
        }
        let minute = |col: &str| D::minutes_since(col, "$2");
        let sql = format!(
            "SELECT {m} AS m, COUNT(*) AS n FROM jobs WHERE id >= $1 GROUP BY {m}",
            m = minute("submitted_at")
        );
        let stmt = Stmt::built(Cow::Owned(sql)).id(first).time(since);
        for row in &D::fetch_all(&mut conn, stmt).await? {
            let n = D::get_int(row, "n")?.unwrap_or(0);
            stats.submitted.push((
                D::get_int(row, "m")?.unwrap_or(0),
                u64::try_from(n).unwrap_or(0),
            ));
        }
        let sql = format!(
            "SELECT {m} AS m, COUNT(*) AS n, \
             SUM(CASE WHEN status IN ('failed', 'dead') THEN 1 ELSE 0 END) AS bad \
             FROM jobs WHERE finished_at >= $1 GROUP BY {m}",
            m = D::minutes_since("finished_at", "$1")
        );
        let stmt = Stmt::built(Cow::Owned(sql)).time(since);
        for row in &D::fetch_all(&mut conn, stmt).await? {
            let n = D::get_int(row, "n")?.unwrap_or(0);
            let bad = D::get_int(row, "bad")?.unwrap_or(0);
            stats.finished.push((
                D::get_int(row, "m")?.unwrap_or(0),
                u64::try_from(n).unwrap_or(0),
                u64::try_from(bad).unwrap_or(0),
            ));
        }
        let row = D::fetch_optional(
            &mut conn,
            Stmt::new("SELECT submitted_at FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1"),
        )
        .await?;
        stats.oldest_waiting = match row {
            Some(row) => D::get_time(&row, "submitted_at")?,
            None => None,
        };
        let run = D::RUN_MS;
        let stmt = Stmt::new(
            "SELECT COUNT(*) AS n FROM jobs WHERE finished_at >= $1 AND status = 'succeeded' \
             AND started_at IS NOT NULL",
        )
        .time(since);
        let n = match D::fetch_optional(&mut conn, stmt).await? {
            Some(row) => D::get_int(&row, "n")?.unwrap_or(0),
            None => 0,
        };
        if n > 0 {
            let mut at = Vec::with_capacity(2);
            for q in [50, 95] {
                let offset = ((n - 1) * q) / 100;
                let sql = format!(
                    "SELECT {run} AS ms FROM jobs WHERE finished_at >= $1 AND status = 'succeeded' \
                     AND started_at IS NOT NULL ORDER BY {run} LIMIT 1 OFFSET $2"
                );
                let stmt = Stmt::built(Cow::Owned(sql)).time(since).int(offset);
                let ms = match D::fetch_optional(&mut conn, stmt).await? {
                    Some(row) => D::get_int(&row, "ms")?.unwrap_or(0),
                    None => 0,
                };
                at.push(ms);
            }
            stats.run_ms = Some((at[0], at[1]));
        }
        Ok(stats)
    }

    /// The paused work queues (their short names), with who paused them and when.
    pub(super) async fn paused_queues(
        &self,
    ) -> Result<Vec<(String, String, OffsetDateTime)>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let rows = D::fetch_all(
            &mut conn,
            Stmt::new("SELECT queue, paused_by, paused_at FROM queue_pauses ORDER BY queue"),
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    D::get_text(row, "queue")?.unwrap_or_default(),
                    D::get_text(row, "paused_by")?.unwrap_or_default(),
                    D::get_time(row, "paused_at")?.unwrap_or(OffsetDateTime::UNIX_EPOCH),
                ))
            })
            .collect()
    }

    /// Pauses (or resumes) the work queue `queue`; false if it already was.
    pub(super) async fn set_queue_paused(
        &self,
        queue: &str,
        paused: bool,
        by: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let stmt = if paused {
            Stmt::new(
                "INSERT INTO queue_pauses (queue, paused_at, paused_by) VALUES ($1, $2, $3) \
                 ON CONFLICT (queue) DO NOTHING",
            )
            .str(Some(queue))
            .time(at)
            .str(Some(by))
        } else {
            Stmt::new("DELETE FROM queue_pauses WHERE queue = $1").str(Some(queue))
        };
        Ok(D::execute(&mut conn, stmt).await? > 0)
    }

    /// Adds `entry` to the audit list, at `at`.
    pub(super) async fn audit(
        &self,
        entry: &NewAudit<'_>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        let stmt = Stmt::new(
            "INSERT INTO audit (at, key_id, key_name, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .time(at)
        .str(entry.key_id)
        .str(Some(entry.key_name))
        .str(Some(entry.action))
        .str(Some(entry.target))
        .str(entry.detail);
        D::execute(&mut conn, stmt).await?;
        Ok(())
    }

    /// The history of job `id`, oldest first: its latest [`MAX_STEPS`] steps.
    pub(super) async fn job_steps(&self, id: JobId) -> Result<Vec<JobStep>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let stmt = Stmt::new(sql::JOB_STEPS).id(id).int(i64::from(MAX_STEPS));
        let rows = D::fetch_all(&mut conn, stmt).await?;
        rows.iter()
            .map(|row| {
                let corrupt = |reason: String| StoreError::Corrupt {
                    id: id.to_string(),
                    reason,
                };
                let status = D::get_text(row, "status")?.unwrap_or_default();
                Ok(JobStep {
                    at: D::get_time(row, "at")?.unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    attempt: count::<D>(row, "attempt").map_err(corrupt)?,
                    status: status
                        .parse()
                        .map_err(|e| corrupt(format!("step status {status}: {e}")))?,
                    worker: D::get_text(row, "worker")?,
                    started_at: D::get_time(row, "started_at")?,
                    run_ms: D::get_int(row, "run_ms")?.and_then(|ms| u64::try_from(ms).ok()),
                    error: D::get_text(row, "error")?,
                })
            })
            .rev()
            .collect()
    }

    /// Up to `limit` entries of the audit list, newest first, before `before` (a `seq`).
    pub(super) async fn audit_list(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let stmt = Stmt::new(
            "SELECT seq, at, key_name, action, target, detail FROM audit \
             WHERE ($1 IS NULL OR seq < $1) ORDER BY seq DESC LIMIT $2",
        )
        .int(before)
        .int(i64::from(limit));
        let rows = D::fetch_all(&mut conn, stmt).await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    seq: D::get_int(row, "seq")?.unwrap_or(0),
                    at: D::get_time(row, "at")?.unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    key_name: D::get_text(row, "key_name")?.unwrap_or_default(),
                    action: D::get_text(row, "action")?.unwrap_or_default(),
                    target: D::get_text(row, "target")?.unwrap_or_default(),
                    detail: D::get_text(row, "detail")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_times_first_id_sorts_between_the_ids_of_jobs_around_it() {
        let t = datetime!(2025-06-01 06:00:00.123 UTC);
        let first = first_id_at(t);
        assert_eq!(first.as_uuid().get_version_num(), 7);
        let (secs, nanos) = first
            .as_uuid()
            .get_timestamp()
            .expect("v7 has a time")
            .to_unix();
        assert_eq!((secs, nanos), (t.unix_timestamp() as u64, 123_000_000));
        let earlier = first_id_at(t - time::Duration::milliseconds(1));
        assert!(earlier < first);
        let now = JobId::new();
        assert!(first < now, "an id made now is after a time in the past");
        assert!(first.to_string() < now.to_string(), "as text too (SQLite)");
        assert_eq!(
            first_id_at(OffsetDateTime::UNIX_EPOCH - time::Duration::DAY).to_string()[..8],
            *"00000000"
        );
    }

    #[test]
    fn like_patterns_escape_their_wildcards() {
        assert_eq!(like_anywhere("50%_a\\b"), "%50\\%\\_a\\\\b%");
        assert_eq!(like_anywhere(""), "%%");
    }
}
