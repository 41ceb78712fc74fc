//! `POST /jobs` and `GET /jobs/{id}`.

use axum::{
    Json,
    body::{Body, to_bytes},
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use time::OffsetDateTime;

use offload_shared::{JobEnvelope, JobId, envelope::WIRE_VERSION, settings::MAX_JOB_TIMEOUT_S};

use crate::{
    error::ApiError,
    routes::{pages, prefers_html},
    state::AppState,
    store::JobRecord,
    submit::{BodyFormat, NewJob},
};

/// `POST /jobs`: checks the job, records it, publishes it and answers once the broker confirmed.
#[tracing::instrument(skip_all, fields(job_id))]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let format = BodyFormat::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let bytes = read_body(&headers, body, state.settings.max_body_bytes).await?;
    let new = NewJob::parse(format, &bytes, MAX_JOB_TIMEOUT_S)?;

    let id = JobId::new();
    tracing::Span::current().record("job_id", tracing::field::display(id));
    let submitted_at = OffsetDateTime::now_utc();
    let envelope = JobEnvelope {
        v: WIRE_VERSION,
        id,
        kind: new.kind,
        payload: new.payload,
        attempt: 1,
        max_attempts: new.max_attempts,
        timeout_ms: new.timeout_s.unwrap_or(state.settings.job_timeout_s) * 1000,
        submitted_at,
    };
    let record = JobRecord::queued(id, new.kind, new.max_attempts, submitted_at);

    // Recorded before publishing, so the worker's first event always finds its row.
    state
        .writer
        .insert(record.clone(), envelope.payload.clone())
        .await?;
    if let Err(e) = state.publisher.publish(&envelope).await {
        if let Err(cleanup) = state.writer.delete(id).await {
            tracing::warn!(error = %cleanup, "could not forget a job the broker did not take");
        }
        return Err(e.into());
    }
    tracing::debug!(kind = %new.kind, "job accepted");

    let location = format!("/jobs/{id}");
    if prefers_html(&headers) {
        return Ok(Redirect::to(&location).into_response());
    }
    let mut response = (StatusCode::ACCEPTED, Json(record)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /jobs/{id}`: the job's latest status, as JSON or, for a browser, a page.
pub async fn get_job(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A string that is not a UUID names no job: 404, like any unknown id.
    let id: JobId = raw.parse().map_err(|_| ApiError::NotFound(raw.clone()))?;
    let job = state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(raw))?;
    if prefers_html(&headers) {
        return Ok(pages::job_page(&job).into_response());
    }
    Ok(Json(job).into_response())
}

/// Reads the body up to `limit` bytes; a larger one is a 413 without reading the rest.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<axum::body::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
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
