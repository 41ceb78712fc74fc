//! `GET /jobs/{id}/events`: a job's state as Server-Sent Events, until it ends. The subscriber
//! first gets the job as it is now, then the job again each time it changes, read from the
//! store (which every API replica shares, so any replica can serve any job's stream), and a
//! last `end` event once it has finished.

use std::{convert::Infallible, time::Duration};

use axum::{
    Extension,
    extract::{Path, State},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream::{self, Stream};

use crate::{
    auth::Caller, error::ApiError, routes::jobs::find_owned, state::AppState, store::JobRecord,
};

/// How often a stream reads its job from the store.
pub const POLL: Duration = Duration::from_millis(250);

/// How often an idle stream sends a comment, so proxies keep the connection open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /jobs/{id}/events`: `event: job` with the job's JSON (as `GET /jobs/{id}`) now and at
/// every change, then `event: end` once it has finished (or `event: gone` if it was deleted);
/// comments every 15 s keep an idle stream alive. The stream also ends when the API stops: a
/// client reconnects (EventSource does by itself) and first gets the job as it is then.
#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path, description = "The job's id (a UUID v7)")),
    responses(
        (status = 200, description = "A `text/event-stream`: `event: job` (data: the job, as `GET /jobs/{id}` answers) now and at each change, then `event: end` (data: `{\"status\": ...}`) once the job has finished, or `event: gone` if it was deleted meanwhile", content_type = "text/event-stream"),
        (status = 404, description = "No such job", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unavailable", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn job_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    // Another key's job is as unknown as a missing one: 404, not 403.
    let job = find_owned(&state, &raw, caller.visible_owner()).await?;
    let owner = caller.visible_owner().map(str::to_owned);
    let stream = watch(state, job, owner);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Where a stream is.
enum Step {
    /// The job as read when the request came: sent first.
    First(Box<JobRecord>),
    /// Sent `last`; reading the job until it changes.
    Watching { last: Box<JobRecord>, seq: u64 },
    /// The job finished (or is gone): this event, then nothing.
    Last(Event),
    /// Nothing more.
    Done,
}

/// The events of one job's stream.
fn watch(
    state: AppState,
    job: JobRecord,
    owner: Option<String>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(
        (Step::First(Box::new(job)), state, owner),
        |(step, state, owner)| async move {
            match step {
                Step::First(job) => {
                    let (event, next) = sent(*job, 0);
                    Some((Ok(event), (next, state, owner)))
                }
                Step::Watching { last, seq } => loop {
                    tokio::select! {
                        () = state.shutdown.cancelled() => return None,
                        () = tokio::time::sleep(POLL) => {}
                    }
                    let id = last.id;
                    match state.store.get_owned(id, owner.as_deref()).await {
                        Ok(Some(job)) => {
                            if job != *last {
                                let (event, next) = sent(job, seq + 1);
                                return Some((Ok(event), (next, state, owner)));
                            }
                        }
                        Ok(None) => {
                            let gone = Event::default()
                                .event("gone")
                                .data(format!("{{\"id\":\"{id}\"}}"));
                            return Some((Ok(gone), (Step::Done, state, owner)));
                        }
                        // The next read may work; the client keeps what it has meanwhile.
                        Err(e) => {
                            tracing::debug!(error = %e, job_id = %id, "could not read a watched job")
                        }
                    }
                },
                Step::Last(event) => Some((Ok(event), (Step::Done, state, owner))),
                Step::Done => None,
            }
        },
    )
}

/// The `job` event for `job`, numbered `seq`, and what follows it: `end` once it has finished.
fn sent(job: JobRecord, seq: u64) -> (Event, Step) {
    let event = Event::default()
        .event("job")
        .id(seq.to_string())
        .data(serde_json::to_string(&job).unwrap_or_default());
    let next = if job.status.is_terminal() {
        Step::Last(
            Event::default()
                .event("end")
                .data(format!("{{\"status\":\"{}\"}}", job.status)),
        )
    } else {
        Step::Watching {
            last: Box::new(job),
            seq,
        }
    };
    (event, next)
}
