//! Cancelling jobs: `POST /jobs/{id}/cancel` and the bulk `POST /jobs/cancel`.
//!
//! The store decides: a cancel is recorded there first (the job becomes `cancelled`, its
//! `error` says by whom, and it is never published again), then told to every worker through
//! the control exchange. A worker running the job fires its cancellation token and stops it
//! after `OFFLOAD_CANCEL_GRACE_MS`; a worker that receives it later acks it without running it.
//! Broadcasts are transient, so [`run_repeater`] repeats the cancels no worker has settled yet:
//! a worker that was away hears them within [`REPEAT_EVERY`]. A cancel never fails because the
//! broker is away: it is recorded, and repeated once the broker is back.

use std::time::Duration;

use axum::{
    Extension, Json,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use offload_shared::{
    JobId, JobKind, JobStatus, broker::BrokerError, control::ControlMessage, kinds::QueueName,
};

use crate::{
    auth::Caller,
    error::{ApiError, Problem},
    routes::jobs::{find_owned, job_response, read_json},
    state::AppState,
    store::{CancelFilter, JobRecord},
};

/// Most jobs one bulk cancel cancels; `more` in its answer says to send it again.
pub const MAX_BULK_CANCEL: u32 = 10_000;

/// How often the cancels no worker has settled are repeated to the workers (an empty message
/// when there are none: a worker that has just connected waits for the first one before it
/// takes jobs, so it knows every cancel still unsettled before its first delivery).
pub const REPEAT_EVERY: Duration = Duration::from_secs(1);

/// How long an unsettled cancel is repeated: a job still in a queue after this (its message
/// lost, or a queue nobody consumes) is no longer announced; a worker meeting it then runs it.
pub const REPEAT_FOR: Duration = Duration::from_secs(24 * 3600);

/// `POST /jobs/{id}/cancel`: the job becomes `cancelled` at once and never runs (or stops).
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Cancelled: the job shows `cancelled`, its `error` says by whom; a running one is stopped", body = JobRecord),
        (status = 303, description = "A browser (Accept: text/html) is sent to the job's page"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has finished (succeeded, failed, dead or cancelled)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
#[tracing::instrument(skip_all, fields(job_id = %raw))]
pub async fn cancel_job(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let owner = caller.visible_owner();
    // A string that is not a UUID names no job: 404, like any unknown id.
    let id: JobId = raw.parse().map_err(|_| ApiError::NotFound(raw.clone()))?;
    let filter = CancelFilter {
        id: Some(id),
        owner: owner.map(str::to_owned),
        limit: 1,
        ..CancelFilter::default()
    };
    let cancelled = state
        .store
        .cancel(&filter, &caller.name, OffsetDateTime::now_utc())
        .await?;
    // Read once, after: unknown (404), finished (409), or the cancelled job.
    let job = find_owned(&state, &raw, owner).await?;
    if cancelled.is_empty() {
        return Err(ApiError::Conflict(format!(
            "job {} is {}; only a job that has not finished can be cancelled",
            job.id, job.status
        )));
    }
    tracing::info!(by = %caller.name, "job cancelled");
    tell_workers(&state, &cancelled, &caller.name).await;
    Ok(job_response(&headers, &job, StatusCode::OK))
}

/// The body of `POST /jobs/cancel`: which jobs to cancel (every field given must match; at
/// least one is needed).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Only jobs of this kind.
    #[schema(example = "sleep")]
    kind: Option<String>,
    /// Only jobs with this status: scheduled, pending, queued, running or retrying.
    #[schema(example = "queued")]
    status: Option<String>,
    /// Only jobs of the kinds of this queue.
    #[schema(example = "default")]
    queue: Option<String>,
}

/// What `POST /jobs/cancel` did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Cancelled {
    /// How many jobs it cancelled.
    cancelled: usize,
    /// Their ids.
    #[schema(value_type = Vec<String>)]
    job_ids: Vec<JobId>,
    /// True if more jobs matched than one request cancels (10,000): send it again.
    more: bool,
}

/// `POST /jobs/cancel`: cancels every unfinished job matching the filter (up to 10,000 a call).
#[utoipa::path(post, path = "/jobs/cancel", tag = "jobs",
    request_body(content = CancelRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The jobs cancelled (maybe none)", body = Cancelled),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within OFFLOAD_HTTP_BODY_TIMEOUT_MS", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over OFFLOAD_MAX_BODY_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No filter, an unknown field, kind, queue or status, or a finished status", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel_jobs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: CancelRequest = read_json(&headers, body, &state.settings).await?;
    let (kinds, status) = filter_of(&state, request)?;
    let owner = caller.visible_owner().map(str::to_owned);
    let now = OffsetDateTime::now_utc();
    let mut cancelled = Vec::new();
    let mut more = false;
    for kind in kinds {
        let limit = MAX_BULK_CANCEL - u32::try_from(cancelled.len()).unwrap_or(MAX_BULK_CANCEL);
        if limit == 0 {
            more = true;
            break;
        }
        let filter = CancelFilter {
            id: None,
            status,
            kind,
            owner: owner.clone(),
            limit,
        };
        let ids = state.store.cancel(&filter, &caller.name, now).await?;
        more |= ids.len() == limit as usize;
        cancelled.extend(ids);
    }
    tracing::info!(by = %caller.name, jobs = cancelled.len(), "jobs cancelled");
    tell_workers(&state, &cancelled, &caller.name).await;
    Ok(Json(Cancelled {
        cancelled: cancelled.len(),
        job_ids: cancelled,
        more,
    })
    .into_response())
}

/// The kinds (one `None`: any kind) and status a bulk cancel matches.
fn filter_of(
    state: &AppState,
    request: CancelRequest,
) -> Result<(Vec<Option<JobKind>>, Option<JobStatus>), ApiError> {
    if request.kind.is_none() && request.status.is_none() && request.queue.is_none() {
        return Err(ApiError::Invalid(
            "name at least one of kind, status and queue: a bulk cancel of every job is refused"
                .into(),
        ));
    }
    let status = request
        .status
        .map(|s| s.parse::<JobStatus>())
        .transpose()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    if let Some(s) = status
        && !s.is_cancellable()
    {
        return Err(ApiError::Invalid(format!(
            "status {s} is final: only scheduled, pending, queued, running and retrying jobs can be cancelled"
        )));
    }
    let kind = request
        .kind
        .map(|k| k.parse::<JobKind>())
        .transpose()
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let Some(queue) = request.queue else {
        return Ok((vec![kind], status));
    };
    let queue = QueueName::parse(&queue).map_err(|e| ApiError::Invalid(e.to_string()))?;
    let of_queue: Vec<Option<JobKind>> = state
        .kinds
        .all()
        .into_iter()
        .filter(|k| k.spec.queue == queue)
        .map(|k| k.spec.name.clone())
        .filter(|name| kind.as_ref().is_none_or(|wanted| wanted == name))
        .map(Some)
        .collect();
    // No known kind runs there: no job matches (the answer says none was cancelled).
    Ok((of_queue, status))
}

/// Tells every worker that `ids` are cancelled. A failure is only logged: the cancels are
/// recorded, and [`run_repeater`] repeats them.
async fn tell_workers(state: &AppState, ids: &[JobId], by: &str) {
    if ids.is_empty() {
        return;
    }
    if let Err(e) = broadcast(state, ids, by).await {
        tracing::warn!(error = %e, jobs = ids.len(), "could not tell the workers of a cancel yet; it is repeated every {} s", REPEAT_EVERY.as_secs().max(1));
    }
}

async fn broadcast(state: &AppState, ids: &[JobId], by: &str) -> Result<(), BrokerError> {
    let publisher = state.publisher()?;
    for message in ControlMessage::cancels(ids, by) {
        publisher.broadcast(&message).await?;
    }
    Ok(())
}

/// Sends the workers `ids` (maybe none) as cancelled, with the paused work queues: what the
/// repeater sends every second, and the dashboard at once when a queue is paused or resumed.
pub async fn repeat(state: &AppState, ids: &[JobId]) -> Result<(), ApiError> {
    let names = offload_shared::topology::Names::for_settings(&state.settings);
    let paused = state
        .store
        .paused_queues()
        .await?
        .into_iter()
        .filter_map(|(queue, _, _)| queue.parse().ok().map(|q| names.work_queue(&q)))
        .collect();
    let publisher = state.publisher()?;
    let messages = ControlMessage::cancels(ids, "offload-api (repeated)");
    for message in ControlMessage::with_paused(messages, paused) {
        publisher.broadcast(&message).await?;
    }
    Ok(())
}

/// Repeats to the workers, every [`REPEAT_EVERY`], the cancels of the last [`REPEAT_FOR`] that
/// no worker has reported settled (acked without running, or stopped): a worker that was not
/// connected when a cancel was first sent (restarted, reconnecting) learns of it before long.
/// Runs until the server stops.
pub async fn run_repeater(state: AppState) {
    loop {
        tokio::select! {
            () = state.stopping.cancelled() => return,
            () = tokio::time::sleep(REPEAT_EVERY) => {}
        }
        if state.publisher().is_err() {
            continue;
        }
        let since = OffsetDateTime::now_utc() - REPEAT_FOR;
        match state.store.unsettled_cancels(since, MAX_BULK_CANCEL).await {
            // With none unsettled, one message of no ids: a worker that has just connected
            // waits for it.
            Ok(ids) => {
                if let Err(e) = repeat(&state, &ids).await {
                    tracing::debug!(error = %e, "could not repeat cancels");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not look for unsettled cancels"),
        }
    }
}
