//! The second half of accepting a job: publishing jobs whose rows are recorded *unresolved*
//! (with a `resolve_at`), then settling each row by what the broker said. Confirmed: the row is
//! resolved (by the [`Confirmer`], in the background, for a new job; before the answer for a
//! redrive). Refused for sure (nacked, returned, never sent): the caller's [`OnRefused`] says
//! what to write. Unknown (no confirm in time, or the channel was lost after sending): the row
//! shows `pending`, a late confirm is still awaited in the background, and the reconciler
//! ([`run_reconciler`]) republishes what no confirm and no event has resolved by `resolve_at`.

use std::time::Instant;

use futures_util::future::join_all;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use offload_shared::{
    JobEnvelope, JobId, Priority,
    broker::{BrokerError, Confirm, LateConfirm},
    envelope::WIRE_VERSION,
};

use crate::{
    error::ApiError,
    publisher::JobPublisher,
    state::AppState,
    store::{StoredFile, Write, writer::StoreWriter},
};

/// Most confirms one background write resolves.
const CONFIRM_BATCH: usize = 4096;

/// How long the background writer gathers confirms before it writes them.
const CONFIRM_GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// Resolves the rows of confirmed jobs in the background, many per write, so a request answers
/// as soon as the broker confirmed (its row already shows `queued`). A job whose resolution is
/// lost (the API stopped first) is republished at its `resolve_at`; delivery is at-least-once.
#[derive(Debug, Clone)]
pub struct Confirmer {
    tx: mpsc::UnboundedSender<JobId>,
}

impl Confirmer {
    /// Starts the task; it stops once every handle is dropped and the last write is done.
    pub fn spawn(writer: StoreWriter) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut ids = Vec::new();
            while let Some(first) = rx.recv().await {
                ids.push(first);
                // Nobody waits for these writes: gathering a little first saves a store commit
                // per job when requests come one at a time.
                tokio::time::sleep(CONFIRM_GATHER).await;
                while ids.len() < CONFIRM_BATCH {
                    match rx.try_recv() {
                        Ok(id) => ids.push(id),
                        Err(_) => break,
                    }
                }
                let batch = std::mem::take(&mut ids);
                if let Err(e) = writer.write(Write::Confirmed(batch)).await {
                    tracing::warn!(error = %e, "could not record publisher confirms; the jobs will be republished at their resolve time");
                }
            }
        });
        (Confirmer { tx }, task)
    }

    /// Records, soon, that the broker confirmed `id`.
    pub fn confirmed(&self, id: JobId) {
        let _ = self.tx.send(id);
    }
}

/// When a confirm is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// In the background ([`Confirmer`]): the row already shows `queued`.
    Later,
    /// Before the answer: the row shows `pending` (a redrive) and the answer shows the job.
    Now,
}

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

/// How to publish jobs and settle their rows.
#[derive(Debug, Clone, Copy)]
pub struct Settling {
    /// When their rows are due to be republished: bounds the background wait for late
    /// confirms, so that it ends before the reconciler takes the rows.
    pub resolve_at: OffsetDateTime,
    /// What a sure refusal writes.
    pub on_refused: OnRefused,
    /// When a confirm is recorded.
    pub record: Record,
}

/// A job to publish: its envelope, and its priority (which picks the lane).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message body.
    pub envelope: JobEnvelope,
    /// The lane it goes to.
    pub priority: Priority,
}

/// Publishes `jobs` (whose rows are unresolved) and settles every row the broker answered for;
/// returns one [`Fate`] per job, in order.
pub async fn publish_and_settle(
    state: &AppState,
    publisher: &JobPublisher,
    jobs: &[Outgoing],
    request_id: Option<&str>,
    how: Settling,
) -> Vec<Fate> {
    let Settling {
        resolve_at,
        on_refused,
        record,
    } = how;
    let started = Instant::now();
    let outcomes = join_all(
        jobs.iter()
            .map(|j| publisher.publish(&j.envelope, j.priority, request_id)),
    )
    .await;
    let elapsed = started.elapsed();
    let mut confirmed = Vec::new();
    let mut overdue = Vec::new();
    let mut writes = Vec::new();
    let mut fates = Vec::with_capacity(jobs.len());
    for (Outgoing { envelope, .. }, outcome) in jobs.iter().zip(outcomes) {
        match outcome {
            Confirm::Acked => {
                state.metrics.accepted(&envelope.kind, elapsed);
                match record {
                    Record::Later => state.confirmer.confirmed(envelope.id),
                    Record::Now => confirmed.push(envelope.id),
                }
                fates.push(Fate::Accepted);
            }
            Confirm::Refused(e) => {
                writes.extend(refused_write(envelope, &e, on_refused));
                fates.push(Fate::Refused(e));
            }
            Confirm::Unknown { why, late } => {
                state.metrics.publish_unknown();
                tracing::warn!(job_id = %envelope.id, error = %why, "publish not confirmed in time; the job is pending until resolved");
                overdue.push(envelope.id);
                if let Some(late) = late {
                    tokio::spawn(await_late_confirm(
                        state.clone(),
                        envelope.clone(),
                        late,
                        started,
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
    if !overdue.is_empty() {
        writes.push(Write::Unconfirmed(overdue));
    }
    settle(state, writes).await;
    fates
}

/// [`publish_and_settle`] for one job, as the request's answer: `Ok` once the broker stored it,
/// a 503 saying nothing was enqueued when it refused, a 503 naming the job when it is unknown.
pub async fn publish_one(
    state: &AppState,
    publisher: &JobPublisher,
    job: &Outgoing,
    request_id: Option<&str>,
    how: Settling,
) -> Result<(), ApiError> {
    let fates =
        publish_and_settle(state, publisher, std::slice::from_ref(job), request_id, how).await;
    match fates.into_iter().next() {
        Some(Fate::Accepted) => Ok(()),
        Some(Fate::Refused(e)) => Err(e.into()),
        Some(Fate::Unknown(e)) => Err(ApiError::Unknown(job.envelope.id, e)),
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
/// reconciler may take the row. `published` is when the publish began.
async fn await_late_confirm(
    state: AppState,
    envelope: JobEnvelope,
    late: LateConfirm,
    published: Instant,
    resolve_at: OffsetDateTime,
    on_refused: OnRefused,
) {
    let left = resolve_at - OffsetDateTime::now_utc() - state.settings.publish_timeout();
    let wait = std::time::Duration::try_from(left).unwrap_or_default();
    let outcome = tokio::select! {
        outcome = late.wait(wait) => outcome,
        // The row stays unresolved; the reconciler (of this store's next API) takes it.
        () = state.stopping.cancelled() => return,
    };
    match outcome {
        Confirm::Acked => {
            tracing::info!(job_id = %envelope.id, "late publisher confirm: the job is queued");
            state.metrics.accepted(&envelope.kind, published.elapsed());
            state.confirmer.confirmed(envelope.id);
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

/// Longest the reconciler sleeps between looks (an unconfirmed publish's deadline, or a job
/// another replica scheduled, is found within it).
const RECONCILE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Publishes the jobs whose `resolve_at` has come: scheduled jobs at their time, and, under
/// their own ids, the unresolved jobs that nothing resolved by their deadline (no confirm came,
/// no event arrived, or the API that recorded them died before publishing). Each pass claims
/// its rows for one more resolve period, so replicas sharing a store never publish the same
/// row at once. Sleeps until the earliest `resolve_at` (at most [`RECONCILE_EVERY`]), or until
/// a submit schedules a job ([`AppState::reconcile_soon`]). Runs until the server has stopped.
pub async fn run_reconciler(state: AppState) {
    let mut wait = RECONCILE_EVERY;
    loop {
        tokio::select! {
            () = state.stopping.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = state.reconcile_soon.notified() => {}
        }
        wait = RECONCILE_EVERY;
        // While the broker is away or blocking, a publish would only time out again.
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
        let full = claimed.len() >= RECONCILE_BATCH as usize;
        if !claimed.is_empty() {
            publish_due(&state, &publisher, claimed, now + lease).await;
        }
        wait = if full {
            std::time::Duration::ZERO
        } else {
            until_next(&state).await
        };
    }
}

/// Least wait between two passes that found work due: rows another replica holds locked (or
/// just claimed) are due but not claimable, and must not make this one spin.
const RECONCILE_AGAIN: std::time::Duration = std::time::Duration::from_millis(20);

/// How long until the earliest `resolve_at`, from [`RECONCILE_AGAIN`] to [`RECONCILE_EVERY`].
async fn until_next(state: &AppState) -> std::time::Duration {
    match state.store.next_resolve_at().await {
        Ok(Some(next)) => std::time::Duration::try_from(next - OffsetDateTime::now_utc())
            .unwrap_or_default()
            .clamp(RECONCILE_AGAIN, RECONCILE_EVERY),
        Ok(None) | Err(_) => RECONCILE_EVERY,
    }
}

/// Publishes claimed rows: scheduled jobs whose time came, and unresolved ones again.
async fn publish_due(
    state: &AppState,
    publisher: &JobPublisher,
    claimed: Vec<crate::store::Unresolved>,
    resolve_at: OffsetDateTime,
) {
    let scheduled = claimed
        .iter()
        .filter(|u| u.job.status == offload_shared::JobStatus::Scheduled)
        .count();
    let envelopes: Vec<Outgoing> = claimed
        .into_iter()
        .map(|u| Outgoing {
            priority: u.job.priority,
            envelope: JobEnvelope {
                v: WIRE_VERSION,
                id: u.job.id,
                kind: u.job.kind,
                payload: u.payload,
                attempt: u.job.attempt,
                max_attempts: u.job.max_attempts,
                timeout_ms: u.job.timeout_ms,
                submitted_at: u.job.submitted_at,
                files: u.files.iter().map(StoredFile::to_envelope).collect(),
            },
        })
        .collect();
    let again = envelopes.len() - scheduled;
    if scheduled > 0 {
        tracing::debug!(
            jobs = scheduled,
            "publishing scheduled jobs whose time came"
        );
        state.metrics.released(scheduled);
    }
    if again > 0 {
        tracing::info!(
            jobs = again,
            "republishing jobs whose first publish was never confirmed"
        );
        state.metrics.republished(again);
    }
    let how = Settling {
        resolve_at,
        on_refused: OnRefused::Keep,
        record: Record::Later,
    };
    publish_and_settle(state, publisher, &envelopes, None, how).await;
}
