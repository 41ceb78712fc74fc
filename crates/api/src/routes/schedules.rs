//! `/schedules`: create, list, read, pause, resume, delete and run now (see
//! [`crate::schedules`]). Reading needs `read`; everything else `admin`.

use axum::{
    Extension, Json,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use time::OffsetDateTime;

use crate::{
    auth::Caller,
    error::{ApiError, Problem},
    routes::jobs::{job_response, read_json},
    schedules::{MAX_SCHEDULES, ScheduleRequest, ScheduleView, Timing, tick_job},
    state::AppState,
    store::{JobRecord, schedules::ScheduleRecord},
};

/// `GET /schedules`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleList {
    /// Every schedule, by name.
    pub schedules: Vec<ScheduleView>,
}

/// `POST /schedules`: a new schedule; its first tick is the first match after now.
#[utoipa::path(post, path = "/schedules", tag = "schedules",
    request_body(content = ScheduleRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = ScheduleView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within OFFLOAD_HTTP_BODY_TIMEOUT_MS", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A schedule of that name exists, or 1,000 schedules exist", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over OFFLOAD_MAX_BODY_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad name, cron expression, time zone or job (its kind, payload or options)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_schedule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let request: ScheduleRequest = read_json(&headers, body, &state.settings).await?;
    let now = OffsetDateTime::now_utc();
    let record = request.check(&state, caller.key_id.clone(), now).await?;
    if state.store.schedules().await?.len() >= MAX_SCHEDULES {
        return Err(ApiError::Conflict(format!(
            "{MAX_SCHEDULES} schedules exist, the most one deployment keeps; delete one first"
        )));
    }
    if !state.store.create_schedule(&record).await? {
        return Err(ApiError::Conflict(format!(
            "a schedule named {:?} exists; delete it first, or choose another name",
            record.name
        )));
    }
    tracing::info!(schedule = %record.name, cron = %record.cron, timezone = %record.timezone, by = %caller.name, "schedule created");
    state.schedules_changed.notify_one();
    Ok((StatusCode::CREATED, Json(ScheduleView::from(record))).into_response())
}

/// `GET /schedules`: every schedule.
#[utoipa::path(get, path = "/schedules", tag = "schedules",
    responses(
        (status = 200, description = "Every schedule, by name", body = ScheduleList),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_schedules(State(state): State<AppState>) -> Result<Json<ScheduleList>, ApiError> {
    let schedules = state.store.schedules().await?;
    Ok(Json(ScheduleList {
        schedules: schedules.into_iter().map(ScheduleView::from).collect(),
    }))
}

/// `GET /schedules/{name}`.
#[utoipa::path(get, path = "/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(find(&state, &name).await?.into()))
}

/// `DELETE /schedules/{name}`: no more ticks; the jobs it made stay.
#[utoipa::path(delete, path = "/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_schedule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.store.delete_schedule(&name).await? {
        return Err(ApiError::NoSchedule(name));
    }
    tracing::info!(schedule = %name, by = %caller.name, "schedule deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /schedules/{name}/pause`: no job until resumed (idempotent).
#[utoipa::path(post, path = "/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Paused", body = ScheduleView),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn pause_schedule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let now = OffsetDateTime::now_utc();
    if !state
        .store
        .set_schedule_paused(&name, true, None, now)
        .await?
    {
        return Err(ApiError::NoSchedule(name));
    }
    tracing::info!(schedule = %name, by = %caller.name, "schedule paused");
    Ok(Json(find(&state, &name).await?.into()))
}

/// `POST /schedules/{name}/resume`: ticks again from the next match after now (ticks missed
/// while paused are not made up; idempotent).
#[utoipa::path(post, path = "/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Resumed", body = ScheduleView),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn resume_schedule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    let schedule = find(&state, &name).await?;
    let now = OffsetDateTime::now_utc();
    // Used only if the schedule is paused when the update runs.
    let next = Timing::parse(&schedule.cron, &schedule.timezone)
        .ok()
        .and_then(|t| t.next_after(now));
    if !state
        .store
        .set_schedule_paused(&name, false, next, now)
        .await?
    {
        return Err(ApiError::NoSchedule(name));
    }
    tracing::info!(schedule = %name, by = %caller.name, "schedule resumed");
    state.schedules_changed.notify_one();
    Ok(Json(find(&state, &name).await?.into()))
}

/// `POST /schedules/{name}/run`: makes the schedule's job now, outside its ticks (paused or
/// not; its next tick stays).
#[utoipa::path(post, path = "/schedules/{name}/run", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 202, description = "The job made: `scheduled` for now, published within milliseconds", body = JobRecord),
        (status = 404, description = "No such schedule", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The schedule's job can no longer be made (its kind is gone, or its payload no longer fits the kind's schema)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn run_schedule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let schedule = find(&state, &name).await?;
    let now = OffsetDateTime::now_utc();
    let job = tick_job(&state, &schedule, now, now).await?;
    if !state.store.run_schedule_now(&name, &job, now).await? {
        return Err(ApiError::NoSchedule(name));
    }
    state.reconcile_soon.notify_one();
    state.gate_changed.notify_one();
    tracing::info!(schedule = %name, job_id = %job.job.id, by = %caller.name, "schedule run now");
    Ok(job_response(&headers, &job.job, StatusCode::ACCEPTED))
}

async fn find(state: &AppState, name: &str) -> Result<ScheduleRecord, ApiError> {
    state
        .store
        .schedule(name)
        .await?
        .ok_or_else(|| ApiError::NoSchedule(name.to_owned()))
}
