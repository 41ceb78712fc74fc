//! `/ui/jobs`: every job, filtered by status, kind, queue, worker and submission time, and
//! searched inside payloads, results and errors (text on SQLite and PostgreSQL; a JSON path,
//! starting with `$`, on PostgreSQL). Pages are keyset pages on the time-ordered id, so the
//! thousandth page costs what the first does. Also a job's page and its buttons.

use std::time::Instant;

use askama::Template;
use axum::{
    Extension,
    body::Body,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use time::{
    OffsetDateTime, PrimitiveDateTime, format_description::well_known::Rfc3339,
    macros::format_description,
};

use offload_shared::{JobId, JobStatus, settings::Scope};

use super::{Chrome, PageError, audit::Outcome, render, shown_ms, shown_time};
use crate::{
    auth::Caller,
    error::ApiError,
    routes::{cancel, jobs as api},
    state::AppState,
    store::{
        JobRecord, JobSummary,
        dashboard::{JobQuery, JobStep, Search},
    },
};

/// Jobs per page.
pub const PAGE: u32 = 50;

/// Longest search.
pub const MAX_SEARCH: usize = 500;

/// The query of `/ui/jobs`, as typed (an empty field is no filter).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub worker: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub cursor: String,
    #[serde(default)]
    pub done: String,
}

/// A `datetime-local` value (`2026-12-07T06:30`, seconds optional), read as UTC, or RFC 3339.
pub fn parse_time(raw: &str, field: &str) -> Result<Option<OffsetDateTime>, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(Some(t));
    }
    let minutes = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    PrimitiveDateTime::parse(raw, &minutes)
        .or_else(|_| PrimitiveDateTime::parse(raw, &seconds))
        .map(|t| Some(t.assume_utc()))
        .map_err(|_| {
            ApiError::Invalid(format!(
                "{field} is {:?}: give a date and time like 2026-12-07T06:30 (UTC)",
                raw.chars().take(40).collect::<String>()
            ))
        })
}

/// The search typed into the box: a JSON path when it starts with `$`, else text.
pub fn parse_search(raw: &str) -> Result<Option<Search>, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.chars().count() > MAX_SEARCH {
        return Err(ApiError::Invalid(format!(
            "the search is longer than {MAX_SEARCH} characters"
        )));
    }
    Ok(Some(if raw.starts_with('$') {
        Search::JsonPath(raw.to_owned())
    } else {
        Search::Text(raw.to_owned())
    }))
}

/// The search typed into the box, checked by the store (a JSON path must parse, and needs
/// PostgreSQL).
pub async fn checked_search(state: &AppState, raw: &str) -> Result<Option<Search>, ApiError> {
    let search = parse_search(raw)?;
    if let Some(search) = &search
        && let Err(why) = state.store.check_search(search).await?
    {
        return Err(ApiError::Invalid(why));
    }
    Ok(search)
}

impl Filters {
    /// Reads a query string; an unknown or repeated parameter is a 422.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::Invalid(format!("query: {e}")))
    }

    /// The store's query for these filters, as `caller` may see.
    pub async fn query(&self, state: &AppState, caller: &Caller) -> Result<JobQuery, ApiError> {
        let status = match self.status.trim() {
            "" => None,
            s => Some(
                s.parse::<JobStatus>()
                    .map_err(|e| ApiError::Invalid(e.to_string()))?,
            ),
        };
        let kind = self.kind.trim();
        let queue = self.queue.trim();
        let kinds = match (kind.is_empty(), queue.is_empty()) {
            (true, true) => None,
            (false, true) => Some(vec![kind.to_owned()]),
            (kind_empty, false) => {
                let of_queue: Vec<String> = state
                    .kinds
                    .all()
                    .iter()
                    .filter(|k| k.spec.queue.as_str() == queue)
                    .map(|k| k.spec.name.to_string())
                    .filter(|k| kind_empty || k == kind)
                    .collect();
                Some(of_queue)
            }
        };
        let search = checked_search(state, &self.q).await?;
        let from = parse_time(&self.from, "from")?;
        let to = parse_time(&self.to, "until")?;
        Ok(JobQuery {
            status,
            kinds,
            worker: Some(self.worker.trim().to_owned()).filter(|w| !w.is_empty()),
            from,
            to,
            reason: None,
            search,
            owner: caller.visible_owner().map(str::to_owned),
        })
    }

    /// The same filters as a query string, with `cursor`.
    fn with_cursor(&self, cursor: &str) -> String {
        let pairs = [
            ("status", &self.status),
            ("kind", &self.kind),
            ("queue", &self.queue),
            ("worker", &self.worker),
            ("from", &self.from),
            ("to", &self.to),
            ("q", &self.q),
        ];
        let mut out = form_urlencoded(
            pairs
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (*k, v.as_str())),
        );
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str("cursor=");
        out.push_str(cursor);
        out
    }
}

/// `k=v&…`, percent-encoded.
pub fn form_urlencoded<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .map(|(k, v)| format!("{k}={}", crate::store::percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A job's row.
pub struct JobRow {
    pub id: String,
    pub short_id: String,
    pub kind: String,
    pub status: String,
    pub attempt: String,
    pub worker: String,
    pub submitted_at: String,
    pub error: String,
}

impl JobRow {
    pub fn of(j: &JobSummary) -> Self {
        let id = j.id.to_string();
        JobRow {
            short_id: format!("…{}", &id[id.len().saturating_sub(12)..]),
            id,
            kind: j.kind.to_string(),
            status: j.status.to_string(),
            attempt: format!("{} of {}", j.attempt, j.max_attempts),
            worker: j.worker.clone().unwrap_or_else(|| "–".to_owned()),
            submitted_at: shown_time(Some(j.submitted_at)),
            error: j.error.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    chrome: Chrome,
    f: Filters,
    statuses: Vec<&'static str>,
    kinds: Vec<String>,
    queues: Vec<String>,
    search_hint: &'static str,
    jobs: Vec<JobRow>,
    next: Option<String>,
    took_ms: String,
}

/// Every status, for the filter.
pub const STATUSES: [&str; 9] = [
    "scheduled",
    "pending",
    "queued",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "dead",
    "cancelled",
];

/// `GET /ui/jobs`.
pub async fn list_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let fail = |e: ApiError| PageError(e, Some(caller.clone()));
    let f = Filters::parse(query.as_deref()).map_err(fail)?;
    let q = f.query(&state, &caller).await.map_err(fail)?;
    let before = match f.cursor.trim() {
        "" => None,
        c => Some(c.parse::<JobId>().map_err(|_| {
            fail(ApiError::Invalid(
                "cursor is not a job id: follow the page's own link".into(),
            ))
        })?),
    };
    let started = Instant::now();
    let found = state
        .store
        .find_jobs(&q, before, PAGE)
        .await
        .map_err(|e| fail(super::store_error(e)))?;
    let took_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0);
    let next = (found.len() == PAGE as usize)
        .then(|| {
            found
                .last()
                .map(|j| format!("/ui/jobs?{}", f.with_cursor(&j.id.to_string())))
        })
        .flatten();
    let mut kinds: Vec<String> = state
        .kinds
        .all()
        .iter()
        .map(|k| k.spec.name.to_string())
        .collect();
    kinds.sort();
    let mut queues: Vec<String> = state
        .kinds
        .all()
        .iter()
        .map(|k| k.spec.queue.to_string())
        .collect();
    queues.sort();
    queues.dedup();
    let page = JobsPage {
        chrome: Chrome::new(Some(&caller), "/ui/jobs").flash(Some(f.done.clone())),
        statuses: STATUSES.to_vec(),
        kinds,
        queues,
        search_hint: if state.settings.database_url.starts_with("postgres") {
            "text, or a JSON path such as $.width ? (@ > 100)"
        } else {
            "text in a payload, a result or an error"
        },
        jobs: found.iter().map(JobRow::of).collect(),
        next,
        took_ms,
        f,
    };
    Ok(render(&page))
}

/// One step of a job's timeline.
pub struct Step {
    pub at: String,
    pub what: String,
    /// What went wrong, in full.
    pub error: Option<String>,
    sort: Option<OffsetDateTime>,
}

/// An artifact as the page lists it.
pub struct ArtifactView {
    pub url: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub image: bool,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    chrome: Chrome,
    job: JobRecord,
    terminal: bool,
    worker: String,
    progress: String,
    heartbeat: Option<String>,
    error: String,
    can_cancel: bool,
    can_retry: bool,
    can_duplicate: bool,
    timeline: Vec<Step>,
    artifacts: Vec<ArtifactView>,
    payload: Option<String>,
    json: String,
}

/// What the job went through: submitted, asked to run at, each start and end of each of its
/// attempts (its history: worker, run time, error), the running attempt's progress and latest
/// heartbeat, in time order. A job whose history is empty (recorded before the store kept
/// histories) shows its latest attempt from its record.
pub fn timeline(job: &JobRecord, history: &[JobStep]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut push = |t: Option<OffsetDateTime>, what: String, error: Option<&str>| {
        if let Some(t) = t {
            steps.push(Step {
                at: shown_time(Some(t)),
                what,
                error: error.map(str::to_owned),
                sort: Some(t),
            });
        }
    };
    push(
        Some(job.submitted_at),
        format!(
            "submitted ({}, {} attempts allowed)",
            job.kind, job.max_attempts
        ),
        None,
    );
    push(job.run_at, "asked to run at this time".to_owned(), None);
    // The latest attempt's start from the record, where the history lacks it: a job from before
    // histories were kept, or one that started before an upgrade and ended after it.
    let start_in_history = history.iter().any(|s| {
        s.attempt == job.attempt && (s.status == JobStatus::Running || s.started_at.is_some())
    });
    let start_is_latest = history
        .iter()
        .filter(|s| s.attempt < job.attempt)
        .all(|s| job.started_at.is_some_and(|t| t > s.at));
    if !start_in_history && start_is_latest {
        let worker = job.worker.as_deref().unwrap_or("a worker");
        let runs = if job.runs > job.attempt {
            format!(" (started {} times: the broker redelivered it)", job.runs)
        } else {
            String::new()
        };
        push(
            job.started_at,
            format!("attempt {} started on {worker}{runs}", job.attempt),
            None,
        );
    }
    let mut started = std::collections::HashSet::new();
    let mut start = |attempt: u32, on: &str| {
        if started.insert(attempt) {
            format!("attempt {attempt} started{on}")
        } else {
            format!("attempt {attempt} started again{on} (the broker redelivered it)")
        }
    };
    for step in history {
        let on = step
            .worker
            .as_deref()
            .map(|w| format!(" on {w}"))
            .unwrap_or_default();
        if let Some(t) = step.started_at {
            push(Some(t), start(step.attempt, &on), None);
        }
        let what = match step.status {
            JobStatus::Running => start(step.attempt, &on),
            JobStatus::Pending | JobStatus::Queued => {
                format!("attempt {} queued to run again", step.attempt)
            }
            JobStatus::Retrying => {
                format!("attempt {} failed{on}; it will be retried", step.attempt)
            }
            JobStatus::Dead => format!("attempt {} ended dead-lettered{on}", step.attempt),
            status => format!("attempt {} {status}{on}", step.attempt),
        };
        let ran = step
            .run_ms
            .map(|ms| format!(" after {}", shown_ms(i64::try_from(ms).unwrap_or(i64::MAX))))
            .unwrap_or_default();
        push(Some(step.at), format!("{what}{ran}"), step.error.as_deref());
    }
    if let Some(p) = &job.progress {
        push(
            Some(p.at),
            format!(
                "progress {:.0} %{}",
                p.fraction * 100.0,
                p.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            None,
        );
    }
    push(job.heartbeat_at, "latest heartbeat".to_owned(), None);
    // An end the history does not hold: the job's from before histories were kept, or one the
    // API made without a step (a cancel).
    let ended_in_history = history
        .iter()
        .any(|s| s.attempt == job.attempt && s.status == job.status);
    if job.status.is_terminal() && !ended_in_history {
        push(
            job.finished_at,
            format!("{} on attempt {}", job.status, job.attempt),
            job.error.as_deref(),
        );
    }
    steps.sort_by_key(|s| s.sort);
    steps
}

/// A job's page, for `GET /jobs/{id}` from a browser.
pub async fn job_page(state: &AppState, caller: &Caller, job: JobRecord) -> Response {
    let read = async {
        let input = state.store.input(job.id).await?;
        let history = state.store.job_steps(job.id).await?;
        Ok::<_, crate::store::StoreError>((input, history))
    };
    let (payload, history) = match read.await {
        Ok((input, history)) => (
            input.map(|i| serde_json::to_string_pretty(&i.payload).unwrap_or_default()),
            history,
        ),
        Err(e) => return PageError(e.into(), Some(caller.clone())).into_response(),
    };
    let terminal = job.status.is_terminal();
    let dash = |v: Option<String>| v.unwrap_or_else(|| "–".to_owned());
    let artifacts = if job.status == JobStatus::Succeeded {
        job.artifacts
            .iter()
            .map(|a| ArtifactView {
                url: a.url.clone(),
                name: a.name.clone(),
                content_type: a.content_type.clone(),
                size: a.size,
                image: a.content_type.to_ascii_lowercase().starts_with("image/"),
            })
            .collect()
    } else {
        Vec::new()
    };
    let chrome = Chrome::new(Some(caller), "");
    let page = JobPage {
        chrome: if terminal { chrome } else { chrome.live("job") },
        terminal,
        worker: dash(job.worker.clone()),
        progress: dash(job.progress.as_ref().map(|p| {
            let percent = (p.fraction * 100.0).round();
            match &p.message {
                Some(m) => format!("{percent} % – {m}"),
                None => format!("{percent} %"),
            }
        })),
        heartbeat: job
            .heartbeat_at
            .map(|t| t.format(&Rfc3339).unwrap_or_default()),
        error: dash(job.error.clone()),
        can_cancel: !terminal && caller.allows(Scope::Submit),
        can_retry: job.status == JobStatus::Dead && caller.is_admin(),
        can_duplicate: caller.allows(Scope::Submit) && job.inputs.is_empty(),
        timeline: timeline(&job, &history),
        artifacts,
        payload,
        json: serde_json::to_string_pretty(&job).unwrap_or_default(),
        job,
    };
    render(&page)
}

/// The `csrf` field of a posted form.
#[derive(Debug, Default, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: Option<String>,
}

/// Reads a small urlencoded form (an action's: its token and filters).
pub async fn read_form<T: serde::de::DeserializeOwned + Default>(
    body: Body,
) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|e| ApiError::Malformed(format!("the form: {e}")))?;
    serde_urlencoded::from_bytes(&bytes).map_err(|e| ApiError::Invalid(format!("the form: {e}")))
}

/// An action's answer: back to `to`, or its failure as a page.
fn acted(result: Result<Response, ApiError>, caller: &Caller, to: &str, flash: &str) -> Response {
    match result {
        Ok(_) => {
            // The job's page shows what happened: its status and error.
            let mut response = Redirect::to(to).into_response();
            response.extensions_mut().insert(Outcome(flash.to_owned()));
            response
        }
        Err(e) => PageError(e, Some(caller.clone())).into_response(),
    }
}

/// `POST /ui/jobs/{id}/cancel`: cancels the job (a `submit` key its own), back to its page.
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    body: Body,
) -> Response {
    let to = format!("/jobs/{raw}");
    let result = async {
        super::checked_form(&caller, body).await?;
        cancel::cancel_job(
            State(state),
            Extension(caller.clone()),
            Path(raw),
            HeaderMap::new(),
        )
        .await
    }
    .await;
    acted(result, &caller, &to, "cancelled")
}

/// `POST /ui/jobs/{id}/retry`: runs a dead job again now, as its next attempt.
pub async fn retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    body: Body,
) -> Response {
    let to = format!("/jobs/{raw}");
    let result = async {
        super::checked_form(&caller, body).await?;
        api::retry_job(State(state), Path(raw), HeaderMap::new()).await
    }
    .await;
    acted(
        result,
        &caller,
        &to,
        "retried: queued again as its next attempt",
    )
}

/// `POST /ui/jobs/{id}/duplicate`: submits a new job of the same kind, payload and options;
/// to the new job's page.
pub async fn duplicate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    body: Body,
) -> Response {
    let result = async {
        super::checked_form(&caller, body).await?;
        let job = api::find_owned(&state, &raw, caller.visible_owner()).await?;
        if !job.inputs.is_empty() {
            return Err(ApiError::Invalid(
                "this job came with uploaded files, which are not kept for a copy: submit it \
                 again with its files"
                    .into(),
            ));
        }
        let input = state
            .store
            .input(job.id)
            .await?
            .ok_or_else(|| ApiError::NotFound(raw.clone()))?;
        let mut request = json!({
            "kind": job.kind.as_str(),
            "payload": input.payload,
            "priority": job.priority.to_string(),
            "max_attempts": input.budget,
        });
        if job.timeout_ms % 1000 == 0 {
            request["timeout_s"] = Value::from(job.timeout_ms / 1000);
        }
        if let Some(key) = &job.concurrency_key {
            request["concurrency_key"] = Value::from(key.clone());
            request["concurrency_limit"] = Value::from(job.concurrency_limit.unwrap_or(1));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        let body = Body::from(serde_json::to_vec(&request).unwrap_or_default());
        api::submit(State(state), Extension(caller.clone()), headers, body).await
    }
    .await;
    match result {
        Ok(mut response) => {
            response
                .extensions_mut()
                .insert(Outcome(format!("duplicated {raw}")));
            response
        }
        Err(e) => PageError(e, Some(caller.clone())).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_from_the_form_as_utc() {
        use time::macros::datetime;
        assert_eq!(
            parse_time("2026-12-07T06:30", "from").expect("minutes"),
            Some(datetime!(2026-12-07 06:30 UTC))
        );
        assert_eq!(
            parse_time("2026-12-07T06:30:15", "from").expect("seconds"),
            Some(datetime!(2026-12-07 06:30:15 UTC))
        );
        assert_eq!(
            parse_time("2026-12-07T06:30:00+01:00", "from").expect("rfc3339"),
            Some(datetime!(2026-12-07 05:30 UTC))
        );
        assert_eq!(parse_time(" ", "from").expect("empty"), None);
        assert!(parse_time("yesterday", "from").is_err());
    }

    #[test]
    fn a_search_is_a_json_path_when_it_starts_with_a_dollar() {
        assert_eq!(parse_search("").expect("empty"), None);
        assert_eq!(
            parse_search(" ada ").expect("text"),
            Some(Search::Text("ada".into()))
        );
        assert_eq!(
            parse_search("$.width ? (@ > 1)").expect("path"),
            Some(Search::JsonPath("$.width ? (@ > 1)".into()))
        );
        assert!(parse_search(&"x".repeat(MAX_SEARCH + 1)).is_err());
    }

    #[test]
    fn unknown_filters_are_refused_and_the_next_page_keeps_the_filters() {
        assert!(Filters::parse(Some("colour=red")).is_err());
        let f = Filters::parse(Some("status=dead&q=a%20b&kind=")).expect("parses");
        assert_eq!(f.with_cursor("X"), "status=dead&q=a%20b&cursor=X");
    }

    /// A `sleep` job submitted at `t0`, three attempts allowed.
    fn sleep_job(t0: OffsetDateTime) -> JobRecord {
        let kind = offload_shared::JobKind::parse("sleep").expect("valid");
        JobRecord::queued(JobId::new(), kind, 3, 1000, t0)
    }

    /// Each step of a timeline as the page shows it: its text and its error.
    fn shown(steps: &[Step]) -> Vec<(&str, Option<&str>)> {
        steps
            .iter()
            .map(|s| (s.what.as_str(), s.error.as_deref()))
            .collect()
    }

    #[test]
    fn the_timeline_runs_in_time_order_and_says_why_a_job_ended() {
        let t0 = OffsetDateTime::now_utc();
        let mut job = sleep_job(t0);
        job.status = JobStatus::Dead;
        job.attempt = 3;
        job.runs = 4;
        job.worker = Some("w1".into());
        job.started_at = Some(t0 + time::Duration::seconds(2));
        job.finished_at = Some(t0 + time::Duration::seconds(3));
        job.error = Some("boom".into());
        let steps = timeline(&job, &[]);
        assert_eq!(
            shown(&steps),
            [
                ("submitted (sleep, 3 attempts allowed)", None),
                (
                    "attempt 3 started on w1 (started 4 times: the broker redelivered it)",
                    None
                ),
                ("dead on attempt 3", Some("boom")),
            ]
        );
    }

    #[test]
    fn a_start_the_history_lacks_comes_from_the_record() {
        let t0 = OffsetDateTime::now_utc();
        let mut job = sleep_job(t0);
        // Started before the store kept histories, ended after.
        job.status = JobStatus::Succeeded;
        job.worker = Some("w1".into());
        job.started_at = Some(t0 + time::Duration::seconds(1));
        job.finished_at = Some(t0 + time::Duration::seconds(2));
        let end = JobStep {
            at: t0 + time::Duration::seconds(2),
            attempt: 1,
            status: JobStatus::Succeeded,
            worker: Some("w1".into()),
            started_at: None,
            run_ms: None,
            error: None,
        };
        assert_eq!(
            shown(&timeline(&job, &[end])),
            [
                ("submitted (sleep, 3 attempts allowed)", None),
                ("attempt 1 started on w1", None),
                ("attempt 1 succeeded on w1", None),
            ]
        );
    }

    #[test]
    fn the_timeline_shows_every_attempt_from_the_history() {
        let t0 = OffsetDateTime::now_utc();
        let s = |n: i64| t0 + time::Duration::seconds(n);
        let mut job = sleep_job(t0);
        job.status = JobStatus::Cancelled;
        job.attempt = 3;
        job.finished_at = Some(s(9));
        let step = |at, attempt, status, worker: Option<&str>| JobStep {
            at,
            attempt,
            status,
            worker: worker.map(str::to_owned),
            started_at: None,
            run_ms: None,
            error: None,
        };
        let history = [
            // A start reported on its own, redelivered, then an end with its own start folded in.
            step(s(1), 1, JobStatus::Running, Some("w1")),
            step(s(2), 1, JobStatus::Running, Some("w2")),
            JobStep {
                started_at: Some(s(3)),
                run_ms: Some(1500),
                error: Some("boom\nat line 2".into()),
                ..step(s(4), 1, JobStatus::Retrying, Some("w2"))
            },
            JobStep {
                error: Some("the lease lapsed".into()),
                ..step(s(5), 2, JobStatus::Dead, None)
            },
            step(s(6), 3, JobStatus::Pending, None),
        ];
        let steps = timeline(&job, &history);
        assert_eq!(
            shown(&steps),
            [
                ("submitted (sleep, 3 attempts allowed)", None),
                ("attempt 1 started on w1", None),
                (
                    "attempt 1 started again on w2 (the broker redelivered it)",
                    None
                ),
                (
                    "attempt 1 started again on w2 (the broker redelivered it)",
                    None
                ),
                (
                    "attempt 1 failed on w2; it will be retried after 1.5 s",
                    Some("boom\nat line 2")
                ),
                ("attempt 2 ended dead-lettered", Some("the lease lapsed")),
                ("attempt 3 queued to run again", None),
                // The cancel the API made, from the record.
                ("cancelled on attempt 3", None),
            ]
        );
    }
}
