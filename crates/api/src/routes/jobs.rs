//! `POST /jobs`, `POST /jobs/batch`, `GET /jobs`, `GET /jobs/{id}` and `POST /jobs/{id}/retry`.

use axum::{
    Extension, Json,
    body::{Body, to_bytes},
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use offload_shared::{
    JobEnvelope, JobId, JobKind, JobStatus, broker::BrokerError, envelope::WIRE_VERSION,
};

use crate::{
    accept::{Fate, OnRefused, Outgoing, Record, Settling, publish_and_settle, publish_one},
    auth::{Caller, rate::Quota},
    error::{ApiError, PartialBatch, Problem, rate_limit_headers},
    routes::prefers_html,
    state::AppState,
    store::{JobFilter, JobRecord, JobSummary, StoredFile, Write, Written},
    submit::{BatchRequest, BodyFormat, JsonRequest, NewJob, idempotency_key, json_error},
};

/// Most jobs one `GET /jobs` page returns.
pub const MAX_PAGE: u32 = 1000;
/// Jobs per page when the request names no limit.
pub const DEFAULT_PAGE: u32 = 50;

/// `POST /jobs`: checks the job, records it, publishes it and answers once the broker confirmed.
/// With an `Idempotency-Key` a repeat of the same request returns the first job (200) and
/// enqueues nothing; the same key with another request is a 422.
#[utoipa::path(post, path = "/jobs", tag = "jobs",
    request_body(content(
        (JsonRequest = "application/json"),
        (JsonRequest = "application/x-www-form-urlencoded"),
        (JsonRequest = "multipart/form-data")),
        description = "The job. From an HTML form, `payload` is JSON text and `payload.<key>` \
            fields set top-level keys of it; a multipart form's file parts are the job's input files."),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Makes the submit safe to repeat: the same key and job return the first job")),
    responses(
        (status = 202, description = "Accepted: the broker confirmed the persistent message; or, for a `run_at`/`delay_s` still to come, recorded `scheduled` (in the store only) to be published at its time", body = JobRecord,
            headers(("Location" = String, description = "/jobs/{id}"))),
        (status = 200, description = "A repeat with the same Idempotency-Key: the first job, nothing enqueued", body = JobRecord),
        (status = 303, description = "A browser (Accept: text/html) is sent to the job's page"),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over OFFLOAD_MAX_BODY_BYTES (`body-too-large`), or a job message (with its input files in base64) over the broker's message size limit (`message-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither JSON nor a form (urlencoded or multipart)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A repeat with the same Idempotency-Key while the first job's confirm is still unknown (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kind or field, invalid payload, payload nested past 64 levels, key reused for another job, more than 16 input files", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the key's rate limit (`rate-limited`): Retry-After, RateLimit-Policy, RateLimit", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Refused (`queue-unavailable`, `queue-blocked`, `queue-full`: the kind's work queue is at 90 % of OFFLOAD_MAX_QUEUE_LENGTH): nothing was enqueued. Or `confirm-unknown` with `job_id`: the broker did not confirm in time, the job may still run and is `pending` until resolved; repeat with the same Idempotency-Key. Retry-After", body = Problem, content_type = "application/problem+json"),
    ))]
#[tracing::instrument(skip_all, fields(job_id))]
pub async fn submit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = BodyFormat::from_content_type(content_type)?;
    let key = idempotency_key(&headers)?;
    // Charged before the body is read: a flood of bad requests is limited too.
    let quota = caller.charge(&state, 1)?;
    let bytes = read_body(&headers, body, &state.settings).await?;
    let parse = || async {
        let max_timeout_s = state.settings.max_job_timeout_s;
        match format {
            BodyFormat::Multipart => {
                NewJob::parse_multipart(
                    content_type.unwrap_or(""),
                    bytes.clone(),
                    &state.kinds,
                    max_timeout_s,
                )
                .await
            }
            _ => NewJob::parse(format, &bytes, &state.kinds, max_timeout_s),
        }
    };
    let new = match parse().await {
        // Another API replica may have recorded the kind since this one loaded its kinds.
        Err(ApiError::UnknownKind(_)) if state.kinds.reload(&state.store).await => parse().await?,
        parsed => parsed?,
    };
    let submitted_at = OffsetDateTime::now_utc();
    let run_at = new.later.map(|later| later.time(submitted_at));
    // Checked before anything is written: while the broker is away or the kind's queue is
    // full, answer 503 at once. A job to run later only needs the store now.
    // A job under a concurrency limit waits in the store too, for a slot.
    let publisher = if JobRecord::waits(run_at, submitted_at) || new.gated {
        None
    } else {
        Some(state.admit([(&new.kind, new.priority)])?)
    };

    let id = JobId::new();
    tracing::Span::current().record("job_id", tracing::field::display(id));
    let record = new
        .record(id, submitted_at, state.settings.job_timeout_s)
        .owned_by(caller.key_id.clone())
        .run_at(run_at, submitted_at);
    let timeout_ms = record.timeout_ms;
    let key = key.map(|k| new.idempotency(caller.scoped_key(k)));
    let fingerprint = key.as_ref().map(|k| k.fingerprint.clone());
    // One copy for the store; the envelope takes the request's.
    let stored_payload = new.payload.clone();
    let envelope = JobEnvelope {
        v: WIRE_VERSION,
        id,
        kind: new.kind.clone(),
        payload: new.payload,
        attempt: 1,
        max_attempts: new.max_attempts,
        timeout_ms,
        submitted_at,
        files: new.files.iter().map(StoredFile::to_envelope).collect(),
    };
    // With its files in base64 a job can outgrow the broker's message limit although its
    // body fit OFFLOAD_MAX_BODY_BYTES: refused before anything is recorded.
    if !envelope.files.is_empty() {
        let size = envelope.to_bytes().len();
        let limit = usize::try_from(state.settings.broker_max_message_bytes).unwrap_or(usize::MAX);
        if size > limit {
            return Err(ApiError::Broker(BrokerError::MessageTooLarge {
                size,
                limit,
            }));
        }
    }
    let record = JobRecord {
        inputs: new.files.iter().map(StoredFile::meta).collect(),
        ..record
    };

    // Recorded (unresolved) before publishing, so the worker's first event always finds its
    // row and a job the broker may hold is never missing from the store. A scheduled job is
    // due at its time: the reconciler publishes it then.
    let resolve_at = match publisher {
        Some(_) => submitted_at + state.settings.resolve_after(),
        None => run_at.unwrap_or(submitted_at),
    };
    let written = state
        .writer
        .write(Write::Insert {
            job: record.clone(),
            payload: stored_payload,
            key,
            resolve_at: record.resolve_at(resolve_at),
            inputs: new.files,
        })
        .await?;
    if let Written::KeyTaken {
        job_id,
        fingerprint: first,
    } = written
    {
        if Some(first) != fingerprint {
            return Err(ApiError::Invalid(format!(
                "this Idempotency-Key was already used for a different request (job {job_id}); \
                 send a new key for a new job"
            )));
        }
        let job = resolved(&state, job_id).await?;
        return Ok(with_quota(
            job_response(&headers, &job, StatusCode::OK),
            &quota,
        ));
    }

    let Some(publisher) = publisher else {
        if new.gated {
            state.gate_changed.notify_one();
            tracing::debug!(kind = %record.kind, "job waits for a concurrency slot");
        } else {
            state.metrics.scheduled(&record.kind);
            state.reconcile_soon.notify_one();
            tracing::debug!(kind = %record.kind, "job scheduled");
        }
        return Ok(with_quota(
            job_response(&headers, &record, StatusCode::ACCEPTED),
            &quota,
        ));
    };
    // A refusal is a 503 with nothing enqueued (the client may retry, with its key); an unknown
    // outcome a 503 naming the job, which stays pending until resolved.
    let how = Settling {
        resolve_at,
        on_refused: OnRefused::Forget,
        record: record_for(fingerprint.is_some()),
    };
    let kind = envelope.kind.clone();
    let job = Outgoing {
        envelope,
        priority: record.priority,
    };
    publish_one(&state, &publisher, &job, request_id(&headers), how).await?;
    tracing::debug!(%kind, "job accepted");
    Ok(with_quota(
        job_response(&headers, &record, StatusCode::ACCEPTED),
        &quota,
    ))
}

/// `response` with the caller's rate-limit state.
fn with_quota(mut response: Response, quota: &Quota) -> Response {
    rate_limit_headers(response.headers_mut(), quota);
    response
}

/// When to record a new job's confirm. A keyed job's before the `202`, so a repeat that follows
/// the `202` always finds the job resolved (`200`, never `409`); a keyless job's in the
/// background, so the answer does not wait for a second store write.
fn record_for(keyed: bool) -> Record {
    if keyed { Record::Now } else { Record::Later }
}

/// The job a repeated `Idempotency-Key` names, once its publish is resolved (or it is
/// scheduled: recorded, and published at its time); while it is unresolved the repeat is a 409
/// with `Retry-After`, never an id that might not run.
async fn resolved(state: &AppState, job_id: JobId) -> Result<JobRecord, ApiError> {
    match state.store.get(job_id).await? {
        Some(job)
            if job.status == JobStatus::Scheduled
                || (job.status != JobStatus::Pending
                    && !state.store.unresolved(job_id).await?) =>
        {
            Ok(job)
        }
        _ => Err(ApiError::Unresolved(format!(
            "the first request with this Idempotency-Key (job {job_id}) is not resolved yet: the \
             broker has not confirmed it; repeat the request later to get the job"
        ))),
    }
}

/// The answer to `POST /jobs/batch`: every job of the batch, in the order sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchAccepted {
    /// The jobs, in the order of the request's `jobs`.
    jobs: Vec<JobRecord>,
}

/// `POST /jobs/batch`: up to 1,000 jobs in one request. Every job is checked first (one bad job
/// refuses the batch, naming its position); then all are recorded in one store write, published
/// together, and the answer comes once the broker confirmed every one of them. With an
/// `Idempotency-Key` a repeat of the batch returns its jobs and enqueues only those that were not
/// accepted the first time.
#[utoipa::path(post, path = "/jobs/batch", tag = "jobs",
    request_body(content(
        (BatchRequest = "application/json")),
        description = "`{\"jobs\": [...]}`: 1 to 1,000 jobs, each as the body of `POST /jobs`."),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Makes the batch safe to repeat: jobs already accepted under this key are returned, not enqueued again")),
    responses(
        (status = 202, description = "Accepted: the broker confirmed every job's persistent message (jobs to run later are recorded `scheduled` and published at their time)", body = BatchAccepted),
        (status = 200, description = "A repeat with the same Idempotency-Key: the first jobs, nothing enqueued", body = BatchAccepted),
        (status = 400, description = "Malformed JSON or Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over OFFLOAD_MAX_BODY_BYTES (`body-too-large`), or a job message over the broker's message size limit (`message-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No jobs, over 1,000, or a bad job (`jobs[i]: ...`); nothing enqueued", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A repeat with the same Idempotency-Key while some of the first request's jobs are unresolved (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the key's rate limit (a batch of N costs N): Retry-After, RateLimit-Policy, RateLimit", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker took none (nothing enqueued; `queue-full` when a work queue is full) or only some of the jobs (`accepted`, `not_accepted`, `unresolved`: not confirmed in time, may still run); Retry-After", body = Problem, content_type = "application/problem+json"),
    ))]
#[tracing::instrument(skip_all, fields(jobs))]
pub async fn submit_batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    BodyFormat::json_only(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let key = idempotency_key(&headers)?;
    let bytes = read_body(&headers, body, &state.settings).await?;
    let parse = || NewJob::parse_batch(&bytes, &state.kinds, state.settings.max_job_timeout_s);
    let batch = match parse() {
        // As for one job: another replica may have recorded the kind.
        Err(ApiError::UnknownKind(_)) if state.kinds.reload(&state.store).await => parse()?,
        parsed => parsed?,
    };
    tracing::Span::current().record("jobs", batch.len());
    let quota = caller.charge(&state, u32::try_from(batch.len()).unwrap_or(u32::MAX))?;
    let submitted_at = OffsetDateTime::now_utc();
    let run_at: Vec<Option<OffsetDateTime>> = batch
        .iter()
        .map(|j| j.later.map(|later| later.time(submitted_at)))
        .collect();
    let gated: Vec<bool> = batch.iter().map(|j| j.gated).collect();
    // Waits in the store: for its time, or for a concurrency slot.
    let later = |i: usize| JobRecord::waits(run_at[i], submitted_at) || gated[i];
    // Only the jobs to run now need the broker now.
    let publisher = if (0..batch.len()).all(later) {
        None
    } else {
        Some(
            state.admit(
                batch
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !later(*i))
                    .map(|(_, j)| (&j.kind, j.priority)),
            )?,
        )
    };
    let resolve_at = submitted_at + state.settings.resolve_after();
    let mut records = Vec::with_capacity(batch.len());
    let mut envelopes = Vec::with_capacity(batch.len());
    let mut inserts = Vec::with_capacity(batch.len());
    let mut fingerprints = Vec::with_capacity(batch.len());
    for (i, new) in batch.into_iter().enumerate() {
        let id = JobId::new();
        let record = new
            .record(id, submitted_at, state.settings.job_timeout_s)
            .owned_by(caller.key_id.clone())
            .run_at(run_at[i], submitted_at);
        let timeout_ms = record.timeout_ms;
        // Each job claims its own key: no `POST /jobs` key holds a space, so none collides.
        let key = key
            .as_ref()
            .map(|k| new.idempotency(caller.scoped_key(format!("{k} {i}"))));
        fingerprints.push(key.as_ref().map(|k| k.fingerprint.clone()));
        inserts.push(Write::Insert {
            job: record.clone(),
            payload: new.payload.clone(),
            key,
            // A scheduled job is due at its time; a held one when the dispatcher releases it.
            resolve_at: record.resolve_at(if later(i) {
                run_at[i].unwrap_or(resolve_at)
            } else {
                resolve_at
            }),
            inputs: Vec::new(),
        });
        envelopes.push(Outgoing {
            priority: new.priority,
            envelope: JobEnvelope {
                v: WIRE_VERSION,
                id,
                kind: new.kind,
                payload: new.payload,
                attempt: 1,
                max_attempts: new.max_attempts,
                timeout_ms,
                submitted_at,
                files: Vec::new(),
            },
        });
        records.push(record);
    }

    // Recorded (unresolved) before publishing, in one transaction, so every first event finds
    // its row.
    let written = state.writer.write_all(inserts).await?;
    let mut fresh = Vec::with_capacity(written.len());
    let mut repeats = Vec::new();
    let mut reused = None;
    for (i, w) in written.into_iter().enumerate() {
        match w {
            Written::KeyTaken {
                job_id,
                fingerprint,
            } => {
                if Some(&fingerprint) != fingerprints[i].as_ref() && reused.is_none() {
                    reused = Some((i, job_id));
                }
                repeats.push((i, job_id));
            }
            _ => fresh.push(i),
        }
    }
    if let Some((i, job_id)) = reused {
        forget(&state, fresh.iter().map(|&i| records[i].id).collect()).await;
        return Err(ApiError::Invalid(format!(
            "jobs[{i}]: this Idempotency-Key was already used for a batch with a different job \
             at this position (job {job_id}); send a new key for a new batch"
        )));
    }

    // Scheduled jobs are published by the reconciler at their time.
    let (now, scheduled): (Vec<usize>, Vec<usize>) = fresh.iter().partition(|&&i| !later(i));
    for &i in &scheduled {
        if !gated[i] {
            state.metrics.scheduled(&records[i].kind);
        }
    }
    if scheduled.iter().any(|&i| !gated[i]) {
        state.reconcile_soon.notify_one();
    }
    if scheduled.iter().any(|&i| gated[i]) {
        state.gate_changed.notify_one();
    }
    let to_publish: Vec<Outgoing> = now.iter().map(|&i| envelopes[i].clone()).collect();
    let how = Settling {
        resolve_at,
        on_refused: OnRefused::Forget,
        record: record_for(key.is_some()),
    };
    let fates = match &publisher {
        Some(publisher) if !to_publish.is_empty() => {
            publish_and_settle(&state, publisher, &to_publish, request_id(&headers), how).await
        }
        _ => Vec::new(),
    };
    let mut not_accepted = Vec::new();
    let mut unresolved = Vec::new();
    let mut failure = None;
    for (&i, fate) in now.iter().zip(fates) {
        match fate {
            Fate::Accepted => {}
            Fate::Refused(e) => {
                not_accepted.push(i);
                failure.get_or_insert(e);
            }
            Fate::Unknown(e) => {
                unresolved.push(i);
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(source) = failure {
        if not_accepted.len() == records.len() {
            return Err(source.into());
        }
        let accepted = (0..records.len())
            .filter(|i| !not_accepted.contains(i) && !unresolved.contains(i))
            .map(|i| {
                repeats
                    .iter()
                    .find(|(r, _)| *r == i)
                    .map_or(records[i].id, |(_, id)| *id)
            })
            .collect();
        return Err(ApiError::PartlyAccepted(Box::new(PartialBatch {
            accepted,
            not_accepted,
            unresolved,
            source,
        })));
    }
    for (i, job_id) in &repeats {
        records[*i] = resolved(&state, *job_id).await?;
    }
    tracing::debug!(jobs = records.len(), fresh = fresh.len(), "batch accepted");
    let status = if fresh.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(with_quota(
        (status, Json(BatchAccepted { jobs: records })).into_response(),
        &quota,
    ))
}

/// Forgets jobs that were recorded but will not be published (their keys too).
async fn forget(state: &AppState, ids: Vec<JobId>) {
    if ids.is_empty() {
        return;
    }
    if let Err(e) = state
        .writer
        .write_all(ids.into_iter().map(Write::Delete).collect())
        .await
    {
        tracing::warn!(error = %e, "could not forget jobs that were not published");
    }
}

/// `GET /jobs/{id}`: the job's latest status, as JSON or, for a browser, a page.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id (a UUID v7)")),
    responses(
        (status = 200, description = "The job (an HTML page when the client prefers text/html)", body = JobRecord),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Another key's job is as unknown as a missing one: 404, not 403.
    let job = find_owned(&state, &raw, caller.visible_owner()).await?;
    if prefers_html(&headers) {
        return Ok(crate::dashboard::jobs::job_page(&state, &caller, job).await);
    }
    Ok(Json(job).into_response())
}

/// The query of `GET /jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs with this status: scheduled, pending, queued, running, retrying, succeeded,
    /// failed, dead, cancelled.
    status: Option<String>,
    /// Only jobs of this kind.
    kind: Option<String>,
    /// Jobs per page, 1 to 1000 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One page of `GET /jobs`: a summary per job (no result, no payload), so a page has a
/// bounded size; `GET /jobs/{id}` has the full job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    /// Jobs, newest first.
    jobs: Vec<JobSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// `GET /jobs?status=&kind=&limit=&cursor=`: job summaries newest first (no results: read one
/// with `GET /jobs/{id}`); `next_cursor` fetches the next page.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of job summaries (no result or payload; `has_result` says whether `GET /jobs/{id}` has one)", body = JobPage),
        (status = 422, description = "Unknown status, kind or parameter; bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let q: ListQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::Invalid(format!("query: {e}")))?;
    let status = q
        .status
        .map(|s| s.parse::<JobStatus>())
        .transpose()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let kind = q
        .kind
        .map(|k| k.parse::<JobKind>())
        .transpose()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let before = q
        .cursor
        .map(|c| c.parse::<JobId>())
        .transpose()
        .map_err(|_| {
            ApiError::Invalid(
                "cursor is not a job id; pass next_cursor from the previous page".into(),
            )
        })?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Invalid(format!(
            "limit is {limit}; it must be between 1 and {MAX_PAGE}"
        )));
    }
    let jobs = state
        .store
        .list(&JobFilter {
            status,
            kind,
            before,
            limit,
            owner: caller.visible_owner().map(str::to_owned),
        })
        .await?;
    let next_cursor = (jobs.len() == limit as usize)
        .then(|| jobs.last().map(|j| j.id.to_string()))
        .flatten();
    Ok(Json(JobPage { jobs, next_cursor }).into_response())
}

/// `POST /jobs/{id}/retry`: re-enqueues a dead job under the same id, as its next attempt, with
/// as many attempts again as it was submitted with.
#[utoipa::path(post, path = "/jobs/{id}/retry", tag = "jobs",
    params(("id" = String, Path, description = "The dead job's id")),
    responses(
        (status = 202, description = "Re-enqueued: the job is queued again as its next attempt", body = JobRecord),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is not dead", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker did not take it, the job stays dead; or (`confirm-unknown`) it did not confirm in time and the job is `pending` until resolved (Retry-After)", body = Problem, content_type = "application/problem+json"),
    ))]
#[tracing::instrument(skip_all, fields(job_id = %raw))]
pub async fn retry_job(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = find(&state, &raw).await?;
    if job.status != JobStatus::Dead {
        return Err(ApiError::Conflict(format!(
            "job {} is {}; only dead jobs can be retried",
            job.id, job.status
        )));
    }
    let publisher = state.admit([(&job.kind, job.priority)])?;
    let input = state
        .store
        .input(job.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(raw.clone()))?;
    let attempt = job.attempt + 1;
    let max_attempts = job.attempt + input.budget;
    let resolve_at = OffsetDateTime::now_utc() + state.settings.resolve_after();
    let redrive = Write::Redrive {
        id: job.id,
        attempt,
        max_attempts,
        resolve_at,
    };
    if state.writer.write(redrive).await? == Written::Nothing {
        return Err(ApiError::Conflict(format!(
            "job {} changed while being retried; it is no longer dead",
            job.id
        )));
    }
    let redriven = Outgoing {
        priority: job.priority,
        envelope: JobEnvelope {
            v: WIRE_VERSION,
            id: job.id,
            kind: job.kind,
            payload: input.payload,
            attempt,
            max_attempts,
            timeout_ms: job.timeout_ms,
            submitted_at: job.submitted_at,
            files: input.files.iter().map(StoredFile::to_envelope).collect(),
        },
    };
    // The answer shows the job queued again, so its confirm is recorded first.
    let how = Settling {
        resolve_at,
        on_refused: OnRefused::MarkDead,
        record: Record::Now,
    };
    publish_one(&state, &publisher, &redriven, request_id(&headers), how).await?;
    let job = find(&state, &raw).await?;
    Ok(job_response(&headers, &job, StatusCode::ACCEPTED))
}

/// The request's id, set by the request-id layer.
fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok())
}

async fn find(state: &AppState, raw: &str) -> Result<JobRecord, ApiError> {
    find_owned(state, raw, None).await
}

/// The job `raw` names if `owner` submitted it (`None`: anyone did).
pub(crate) async fn find_owned(
    state: &AppState,
    raw: &str,
    owner: Option<&str>,
) -> Result<JobRecord, ApiError> {
    // A string that is not a UUID names no job: 404, like any unknown id.
    let id: JobId = raw
        .parse()
        .map_err(|_| ApiError::NotFound(raw.to_owned()))?;
    state
        .store
        .get_owned(id, owner)
        .await?
        .ok_or_else(|| ApiError::NotFound(raw.to_owned()))
}

/// The job with `Location`, or a 303 to its page for a browser.
pub(crate) fn job_response(headers: &HeaderMap, job: &JobRecord, status: StatusCode) -> Response {
    let location = format!("/jobs/{}", job.id);
    if prefers_html(headers) {
        return Redirect::to(&location).into_response();
    }
    let mut response = (status, Json(job)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Reads the body up to `limit` bytes; a larger one is a 413 without reading the rest.
/// A declared body up to this many times `OFFLOAD_MAX_BODY_BYTES` is read before its 413.
const DRAIN_FACTOR: u64 = 4;

/// Reads a JSON-only route's body as `T`: 415 unless it is JSON, then as [`read_body`], then 400
/// for malformed JSON and 422 for JSON of the wrong shape.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    settings: &offload_shared::Settings,
) -> Result<T, ApiError> {
    BodyFormat::json_only(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let bytes = read_body(headers, body, settings).await?;
    serde_json::from_slice(&bytes).map_err(json_error)
}

/// Reads the body within `OFFLOAD_MAX_BODY_BYTES` and `OFFLOAD_HTTP_BODY_TIMEOUT_MS`: a client
/// that trickles its body gets 408 instead of holding the request (and its connection) open.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    settings: &offload_shared::Settings,
) -> Result<axum::body::Bytes, ApiError> {
    let deadline = std::time::Duration::from_millis(settings.http_body_timeout_ms);
    tokio::time::timeout(
        deadline,
        read_body_within(headers, body, settings.max_body_bytes),
    )
    .await
    .map_err(|_| ApiError::BodyTimeout(settings.http_body_timeout_ms))?
}

async fn read_body_within(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<axum::body::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > limit
    {
        // A client still sending its body when the 413 is written and the connection closed
        // gets a broken pipe instead of the answer; so a body up to a few times the limit is read
        // (and dropped) first. A larger one is answered at once.
        if len <= limit.saturating_mul(DRAIN_FACTOR) {
            let _ = to_bytes(body, usize::try_from(len).unwrap_or(usize::MAX)).await;
        }
        return Err(ApiError::TooLarge(limit));
    }
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    to_bytes(body, cap).await.map_err(|e| {
        let over_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over_limit {
            ApiError::TooLarge(limit)
        } else {
            ApiError::Malformed(format!("the body could not be read: {e}"))
        }
    })
}
