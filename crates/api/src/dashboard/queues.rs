//! `/ui/queues`: every work queue with its depth and state; an admin pauses and resumes
//! consuming it (workers stop taking its jobs and finish the running ones) and purges it (its
//! queued jobs cancelled, after a confirmation that counts them).
//!
//! A pause is kept in the store (every API replica sees it, and it outlives restarts) and sent
//! to every worker in the API's control repeat every second ([`cancel::repeat`]), at once on a
//! change; a worker that connects waits (up to 2.5 s) for that message before it consumes.

use askama::Template;
use axum::{
    Extension,
    body::{Body, to_bytes},
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use time::OffsetDateTime;

use offload_shared::JobStatus;

use super::{Chrome, PageError, back_to, overview::queue_rows, render, shown_time};
use crate::{
    auth::Caller, error::ApiError, routes::cancel, state::AppState, store::dashboard::JobQuery,
};

/// A queue's row.
pub struct QueueView {
    pub name: String,
    pub kinds: String,
    pub ready: String,
    pub unacked: String,
    pub consumers: String,
    pub paused: bool,
    pub state: String,
}

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    chrome: Chrome,
    queues: Vec<QueueView>,
    admin: bool,
}

#[derive(Template)]
#[template(path = "purge.html")]
struct PurgePage {
    chrome: Chrome,
    queue: String,
    kinds: String,
    count: u64,
    limit: u32,
}

/// The queue's kinds, or 404 for a queue no known kind uses.
fn kinds_of(state: &AppState, queue: &str) -> Result<Vec<String>, ApiError> {
    let kinds: Vec<String> = state
        .kinds
        .all()
        .iter()
        .filter(|k| k.spec.queue.as_str() == queue)
        .map(|k| k.spec.name.to_string())
        .collect();
    if kinds.is_empty() {
        return Err(ApiError::NotFound(format!(
            "queue {:?} (no known kind uses it)",
            queue.chars().take(60).collect::<String>()
        )));
    }
    Ok(kinds)
}

/// `GET /ui/queues`.
pub async fn page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, PageError> {
    let paused = state
        .store
        .paused_queues()
        .await
        .map_err(|e| PageError(e.into(), Some(caller.clone())))?;
    let mut rows = queue_rows(&state);
    // A pause of a queue no known kind uses any more, so it can be resumed.
    for (name, _, _) in &paused {
        if !rows.iter().any(|q| q.name == *name) {
            rows.push(super::overview::QueueRow {
                name: name.clone(),
                kinds: "(no known kind)".to_owned(),
                ready: "–".to_owned(),
                unacked: "–".to_owned(),
                consumers: "–".to_owned(),
            });
        }
    }
    let queues = rows
        .into_iter()
        .map(|q| {
            let pause = paused.iter().find(|(name, _, _)| *name == q.name);
            QueueView {
                paused: pause.is_some(),
                state: pause.map_or_else(
                    || "consuming".to_owned(),
                    |(_, by, at)| format!("paused by {by} at {}", shown_time(Some(*at))),
                ),
                name: q.name,
                kinds: q.kinds,
                ready: q.ready,
                unacked: q.unacked,
                consumers: q.consumers,
            }
        })
        .collect();
    Ok(render(&QueuesPage {
        chrome: Chrome::new(Some(&caller), "/ui/queues")
            .flash(super::admin::done_of(query.as_deref())),
        queues,
        admin: caller.is_admin(),
    }))
}

/// `POST /ui/queues/{queue}/{pause|resume}`.
pub async fn pause_or_resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((queue, action)): Path<(String, String)>,
    body: Body,
) -> Response {
    let result = async {
        super::checked_form(&caller, body).await?;
        let pause = match action.as_str() {
            "pause" => true,
            "resume" => false,
            other => {
                return Err(ApiError::NotFound(format!(
                    "/ui/queues/{queue}/{}",
                    other.chars().take(40).collect::<String>()
                )));
            }
        };
        // A queue no kind uses any more may still be resumed.
        if pause {
            kinds_of(&state, &queue)?;
        }
        let changed = state
            .store
            .set_queue_paused(&queue, pause, &caller.name, OffsetDateTime::now_utc())
            .await?;
        // Told at once; else the repeater tells them within a second.
        if let Err(e) = cancel::repeat(&state, &[]).await {
            tracing::warn!(error = %e, %queue, "could not tell the workers of a queue's pause yet");
        }
        tracing::info!(%queue, pause, by = %caller.name, changed, "queue pause changed");
        Ok(match (pause, changed) {
            (true, true) => {
                format!("queue {queue} paused: its workers take no new job; running ones finish")
            }
            (true, false) => format!("queue {queue} was paused already"),
            (false, true) => format!("queue {queue} resumed"),
            (false, false) => format!("queue {queue} was not paused"),
        })
    }
    .await;
    match result {
        Ok(flash) => back_to("/ui/queues", flash),
        Err(e) => PageError(e, Some(caller)).into_response(),
    }
}

/// The queued jobs of `kinds`.
fn queued_of(kinds: Vec<String>) -> JobQuery {
    JobQuery {
        status: Some(JobStatus::Queued),
        kinds: Some(kinds),
        ..JobQuery::default()
    }
}

/// `GET /ui/queues/{queue}/purge`: how many queued jobs a purge cancels, and its form.
pub async fn confirm_purge(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
) -> Result<Response, PageError> {
    let fail = |e: ApiError| PageError(e, Some(caller.clone()));
    let kinds = kinds_of(&state, &queue).map_err(fail)?;
    let count = state
        .store
        .count_jobs(&queued_of(kinds.clone()))
        .await
        .map_err(|e| fail(super::store_error(e)))?;
    Ok(render(&PurgePage {
        chrome: Chrome::new(Some(&caller), "/ui/queues"),
        kinds: kinds.join(", "),
        queue,
        count,
        limit: cancel::MAX_BULK_CANCEL,
    }))
}

/// `POST /ui/queues/{queue}/purge`: cancels the queue's queued jobs, as `POST /jobs/cancel`
/// with `{"queue": …, "status": "queued"}` does.
pub async fn purge(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    body: Body,
) -> Response {
    let result = async {
        super::checked_form(&caller, body).await?;
        kinds_of(&state, &queue)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let request = serde_json::json!({"queue": queue, "status": "queued"});
        let body = Body::from(serde_json::to_vec(&request).unwrap_or_default());
        let answer = cancel::cancel_jobs(
            State(state.clone()),
            Extension(caller.clone()),
            headers,
            body,
        )
        .await?;
        let bytes = to_bytes(answer.into_body(), 16 * 1024 * 1024)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let done: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let n = done["cancelled"].as_u64().unwrap_or(0);
        let more = if done["more"].as_bool() == Some(true) {
            "; more remain: purge again"
        } else {
            ""
        };
        Ok(format!("purged {queue}: cancelled {n} queued jobs{more}"))
    }
    .await;
    match result {
        Ok(flash) => back_to("/ui/queues", flash),
        Err(e) => PageError(e, Some(caller)).into_response(),
    }
}
