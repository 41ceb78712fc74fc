//! The second half of accepting a job: publishing jobs that are recorded as `pending`, then
//! settling each row by what the broker said. Confirmed: the job becomes `queued`. Refused for
//! sure (nacked, returned, never sent): the caller's [`OnRefused`] says what to write. Unknown
//! (no confirm in time, or the channel was lost after sending): the row stays `pending`, a late
//! confirm is still awaited in the background, and the reconciler ([`run_reconciler`])
//! republishes what no confirm and no event has settled by its `resolve_at`.

use std::time::Instant;

use futures_util::future::join_all;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use offload_shared::{
    JobEnvelope, JobId,
    broker::{BrokerError, Confirm, LateConfirm},
    envelope::WIRE_VERSION,
};

use crate::{error::ApiError, publisher::JobPublisher, state::AppState, store::Write};

/// What became of one job's publish by the time the request answers.
#[derive(Debug)]
pub enum Fate {
    /// The broker stored it; its row is `queued`.
    Accepted,
    /// The broker did not take it; its row was settled as [`OnRefused`] says.
    Refused(BrokerError),
    /// Not known yet; its row stays `pending` until resolved.
    Unknown(BrokerError),
}

/// What to write for a job the broker refused for sure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefused {
    /// A new job: delete its row and free its key; the client was told nothing was enqueued.
    Forget,
    /// A redrive of a dead job: it stays dead, with the reason.
    MarkDead,
    /// Leave the row `pending` for the next resolution (the reconciler's own republish).
    Keep,
}

/// Publishes `envelopes` (whose rows are `pending`) and settles every row the broker answered
/// for; returns one [`Fate`] per envelope, in order. `resolve_at` bounds the background wait
/// for late confirms, so that it ends before the reconciler takes the row.
pub async fn publish_and_settle(
    state: &AppState,
    publisher: &JobPublisher,
    envelopes: &[JobEnvelope],
    request_id: Option<&str>,
    resolve_at: OffsetDateTime,
    on_refused: OnRefused,
) -> Vec<Fate> {
    let started = Instant::now();
    let outcomes = join_all(envelopes.iter().map(|e| publisher.publish(e, request_id))).await;
    let elapsed = started.elapsed();
    let mut confirmed = Vec::new();
    let mut writes = Vec::new();
    let mut fates = Vec::with_capacity(envelopes.len());
    for (envelope, outcome) in envelopes.iter().zip(outcomes) {
        match outcome {
            Confirm::Acked => {
                state.metrics.accepted(envelope.kind, elapsed);
                confirmed.push(envelope.id);
                fates.push(Fate::Accepted);
            }
            Confirm::Refused(e) => {
                writes.extend(refused_write(envelope, &e, on_refused));
                fates.push(Fate::Refused(e));
            }
            Confirm::Unknown { why, late } => {
                state.metrics.publish_unknown();
                tracing::warn!(job_id = %envelope.id, error = %why, "publish not confirmed in time; the job stays pending until resolved");
                if let Some(late) = late {
                    tokio::spawn(await_late_confirm(
                        state.clone(),
                        envelope.clone(),
                        late,
                        resolve_at,
                        on_refused,
                    ));
                }
                fates.push(Fate::Unknown(why));
            }
        }
    }
    if !confirmed.is_empty() {
        writes.push(Write::Confirmed(confirmed));
    }
    settle(state, writes).await;
    fates
}

/// [`publish_and_settle`] for one job, as the request's answer: `Ok` once the broker stored it,
/// a 503 saying nothing was enqueued when it refused, a 503 naming the job when it is unknown.
pub async fn publish_one(
    state: &AppState,
    publisher: &JobPublisher,
    envelope: &JobEnvelope,
    request_id: Option<&str>,
    resolve_at: OffsetDateTime,
    on_refused: OnRefused,
) -> Result<(), ApiError> {
    let fates = publish_and_settle(
        state,
        publisher,
        std::slice::from_ref(envelope),
        request_id,
        resolve_at,
        on_refused,
    )
    .await;
    match fates.into_iter().next() {
        Some(Fate::Accepted) => Ok(()),
        Some(Fate::Refused(e)) => Err(e.into()),
        Some(Fate::Unknown(e)) => Err(ApiError::Unknown(envelope.id, e)),
        None => Err(BrokerError::NotConnected.into()),
    }
}

fn refused_write(
    envelope: &JobEnvelope,
    why: &BrokerError,
    on_refused: OnRefused,
) -> Option<Write> {
    match on_refused {
        OnRefused::Forget => Some(Write::Delete(envelope.id)),
        OnRefused::MarkDead => Some(Write::MarkDead {
            id: envelope.id,
            attempt: envelope.attempt,
            error: format!(
                "a retry was requested but not enqueued ({why}); it is still dead, request the retry again"
            ),
        }),
        OnRefused::Keep => None,
    }
}

async fn settle(state: &AppState, writes: Vec<Write>) {
    if writes.is_empty() {
        return;
    }
    if let Err(e) = state.writer.write_all(writes).await {
        // The rows stay pending; the reconciler resolves them (a republish under the same id,
        // which a job already in the queue survives: delivery is at-least-once).
        tracing::warn!(error = %e, "could not record what the broker said about published jobs");
    }
}

/// Keeps waiting for a confirm that missed the request's deadline, until shortly before the
/// reconciler may take the row.
async fn await_late_confirm(
    state: AppState,
    envelope: JobEnvelope,
    late: LateConfirm,
    resolve_at: OffsetDateTime,
    on_refused: OnRefused,
) {
    let left = resolve_at - OffsetDateTime::now_utc() - state.settings.publish_timeout();
    let wait = std::time::Duration::try_from(left).unwrap_or_default();
    match late.wait(wait).await {
        Confirm::Acked => {
            tracing::info!(job_id = %envelope.id, "late publisher confirm: the job is queued");
            state.metrics.accepted(envelope.kind, wait);
            settle(&state, vec![Write::Confirmed(vec![envelope.id])]).await;
        }
        Confirm::Refused(e) => {
            tracing::info!(job_id = %envelope.id, error = %e, "the broker refused the job after all");
            settle(
                &state,
                refused_write(&envelope, &e, on_refused)
                    .into_iter()
                    .collect(),
            )
            .await;
        }
        Confirm::Unknown { why, .. } => {
            tracing::warn!(job_id = %envelope.id, error = %why, "no confirm came; the reconciler will republish the job");
        }
    }
}

/// Most pending jobs one reconciler pass republishes.
const RECONCILE_BATCH: u32 = 100;

/// Republishes, under their own ids, the pending jobs that nothing resolved by their
/// `resolve_at` (no confirm came, no event arrived, or the API that recorded them died before
/// publishing). Each pass claims its rows for one more resolve period, so replicas sharing a
/// store never republish the same row at once. Runs until `token` is cancelled.
pub async fn run_reconciler(state: AppState, token: CancellationToken) {
    let every = std::time::Duration::from_secs(1);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        // While the broker is away or blocking, a republish would only time out again.
        let Ok(publisher) = state.publisher() else {
            continue;
        };
        let now = OffsetDateTime::now_utc();
        let lease = state.settings.resolve_after();
        let claimed = match state
            .store
            .claim_unresolved(now, lease, RECONCILE_BATCH)
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for unresolved jobs");
                continue;
            }
        };
        if claimed.is_empty() {
            continue;
        }
        let envelopes: Vec<JobEnvelope> = claimed
            .into_iter()
            .map(|u| JobEnvelope {
                v: WIRE_VERSION,
                id: u.job.id,
                kind: u.job.kind,
                payload: u.payload,
                attempt: u.job.attempt,
                max_attempts: u.job.max_attempts,
                timeout_ms: u.job.timeout_ms,
                submitted_at: u.job.submitted_at,
            })
            .collect();
        let ids: Vec<JobId> = envelopes.iter().map(|e| e.id).collect();
        tracing::info!(
            jobs = ids.len(),
            "republishing jobs whose first publish was never confirmed"
        );
        for _ in &ids {
            state.metrics.republished();
        }
        publish_and_settle(
            &state,
            &publisher,
            &envelopes,
            None,
            now + lease,
            OnRefused::Keep,
        )
        .await;
    }
}
