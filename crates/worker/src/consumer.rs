//! One delivery, start to finish: parse, report `running` (in the background), run the handler under its time
//! limit, send a success's artifacts (each confirmed, checked against `OFFLOAD_MAX_ARTIFACT_BYTES`
//! first), report the outcome (confirmed), and only then acknowledge on the delivery's own
//! channel. Failures become a scheduled retry or a dead letter with the reason. A job whose kind
//! has no handler here (another version of the worker runs it) goes back through the shortest
//! delay queue without spending an attempt, and so does one whose handler gave up because the
//! worker is shutting down. Nothing here panics, and a panicking handler is only a failed attempt.
//!
//! A long kind's job ([`crate::Job::long`]) is acknowledged earlier, once its `running` event
//! (with a lease) is confirmed, so the broker's consumer timeout never applies to it; from then
//! on its worker holds it by heartbeats that renew the lease, and stops its handler if it cannot
//! renew the lease in time (the API then starts the job again).

use std::{
    collections::HashSet,
    ops::Deref,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lapin::{message::Delivery, types::AMQPValue};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use sha2::{Digest, Sha256};

use offload_shared::{
    JobEnvelope, JobEvent, JobId, JobKind, JobStatus, Priority,
    artifacts::{self, ArtifactMeta},
    broker::{self, BrokerError, REQUEST_ID_HEADER, Settle},
    envelope::FileError,
    limits::{MAX_JSON_DEPTH, json_depth, json_len},
    retry::RetryPolicy,
};

use crate::{
    Artifact, InputFile, JobContext, JobError,
    cancels::Cancels,
    consumers::Hold,
    handlers::{Handler, Registry},
    metrics::WorkerMetrics,
    reporter::Reporter,
};

/// What every delivery needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct JobRunner {
    /// Handlers by kind.
    pub registry: Arc<Registry>,
    /// Publishes events, retries and dead letters.
    pub reporter: Reporter,
    /// Back-off between attempts.
    pub retry: RetryPolicy,
    /// Counts jobs in flight and how they were settled.
    pub metrics: Arc<WorkerMetrics>,
    /// Quorum queues: the broker's delivery limit. A delivery at the limit is dead-lettered here,
    /// with a reason, instead of being run once more.
    pub delivery_limit: Option<u32>,
    /// `OFFLOAD_MAX_RESULT_BYTES`: a larger result is not sent; the job ends dead instead.
    pub max_result_bytes: usize,
    /// `OFFLOAD_MAX_ARTIFACT_BYTES`: artifacts adding up to more are not sent; the job ends
    /// dead instead.
    pub max_artifact_bytes: usize,
    /// Fired when the shutdown grace period begins: every running job's context is cancelled.
    pub shutdown: CancellationToken,
    /// Kinds without a handler already warned about: one warning per kind, not per message.
    pub unknown_kinds: Arc<Mutex<HashSet<JobKind>>>,
    /// The cancels heard from the API, and the running jobs they stop.
    pub cancels: Arc<Cancels>,
    /// `OFFLOAD_CANCEL_GRACE_MS`: how long a cancelled job's handler has to stop.
    pub cancel_grace: Duration,
    /// `OFFLOAD_PROGRESS_INTERVAL_MS`: least time between two progress reports of a job.
    pub progress_interval: Duration,
    /// `OFFLOAD_LEASE_S`: how long a long job's lease lasts; renewed every third of it.
    pub lease: Duration,
    /// Where a long job asks the session to keep its slot before acknowledging its delivery.
    pub holds: tokio::sync::mpsc::UnboundedSender<Hold>,
}

/// A delivery being settled, and whether it is acknowledged already (a long job's is, once its
/// start is confirmed): it must not be settled twice, and can no longer go back to its queue.
pub(crate) struct Taken<'a> {
    delivery: &'a Delivery,
    acked: AtomicBool,
}

impl<'a> Taken<'a> {
    fn new(delivery: &'a Delivery) -> Self {
        Taken {
            delivery,
            acked: AtomicBool::new(false),
        }
    }

    fn is_acked(&self) -> bool {
        self.acked.load(Ordering::Relaxed)
    }
}

impl Deref for Taken<'_> {
    type Target = Delivery;

    fn deref(&self) -> &Delivery {
        self.delivery
    }
}

/// A long job's hold on its running attempt: renewed in the background until dropped.
struct Lease {
    _renewing: AbortOnDrop<()>,
    /// Set when a renewal could not be confirmed in time: the handler was stopped.
    lost: Arc<AtomicBool>,
}

impl Lease {
    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }
}

/// Renews a long job's lease every third of `lease` with a confirmed heartbeat. When the lease
/// would lapse before the next try could renew it, sets `lost` and fires `stop` (the handler
/// stops: the API is about to start the job again).
async fn renew(
    reporter: Reporter,
    (id, attempt): (JobId, u32),
    lease: Duration,
    stop: CancellationToken,
    lost: Arc<AtomicBool>,
) {
    let every = lease / 3;
    let lease_ms = millis(lease);
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let beat = JobEvent::heartbeat(id, attempt, reporter.worker(), lease_ms);
        match tokio::time::timeout(every, reporter.event(beat)).await {
            Ok(Ok(())) => renewed = Instant::now(),
            Ok(Err(e)) => tracing::warn!(job_id = %id, error = %e, "heartbeat not confirmed"),
            Err(_) => tracing::warn!(job_id = %id, "heartbeat not confirmed in {every:?}"),
        }
        if renewed.elapsed() + every >= lease {
            tracing::warn!(job_id = %id, "the lease could not be renewed in time: stopping the job's handler");
            lost.store(true, Ordering::Relaxed);
            stop.cancel();
            return;
        }
    }
}

/// `d` in whole milliseconds.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where a running job's progress reports go: published through `reporter`, at most one per
/// `interval`, the latest kept.
#[derive(Clone)]
pub(crate) struct ProgressReports {
    /// Publishes them.
    pub reporter: Reporter,
    /// Least time between two.
    pub interval: Duration,
}

/// Publishes the progress the handler reports through `progress`, at most once per
/// `reports.interval`; ends when the handler's context is dropped.
async fn forward_progress(
    mut progress: tokio::sync::watch::Receiver<Option<offload_shared::events::Progress>>,
    reports: ProgressReports,
    id: JobId,
    attempt: u32,
) {
    while progress.changed().await.is_ok() {
        let Some(latest) = progress.borrow_and_update().clone() else {
            continue;
        };
        let reporter = &reports.reporter;
        reporter.running(JobEvent::progress_report(
            id,
            attempt,
            reporter.worker(),
            latest,
        ));
        tokio::time::sleep(reports.interval).await;
    }
}

/// How long a redelivered job waits before it starts: a job redelivered because its worker
/// died while it was being cancelled is often redelivered before the cancel reaches this worker;
/// the wait lets the cancel arrive first, so the job is not started a second time.
pub const REDELIVERY_HOLD: Duration = Duration::from_millis(500);

/// Longest error text a handler's failure carries on, in bytes: the reason travels in an AMQP
/// header of the dead letter (a header must fit in one frame, 128 KiB by default) and in an event,
/// so a handler that fails with a huge message cannot break either.
pub const MAX_ERROR_BYTES: usize = 4096;

/// What a job's handler came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It returned a result.
    Succeeded(Value),
    /// It failed, overran its time limit, or panicked.
    Failed(JobError),
    /// Its job was cancelled while it ran: it stopped, or was dropped after the grace period.
    Cancelled,
}

/// How a delivery was settled, for the worker's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Acked after its success was reported.
    Succeeded,
    /// Acked after its next attempt was stored in a delay queue.
    Retried,
    /// Acked after it was dead-lettered.
    Dead,
    /// Returned to the queue because its outcome could not be reported, or its handler gave up
    /// on a shutdown.
    Requeued,
    /// Sent back through the shortest delay queue because this worker has no handler for its
    /// kind, without spending an attempt.
    Returned,
    /// Acked without running (or after stopping it) because its job was cancelled.
    Cancelled,
    /// A long job whose lease could not be renewed: its handler was stopped and nothing was
    /// reported; the API starts the job again once the lease lapses.
    LeaseLost,
}

impl Settled {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Settled::Succeeded => "succeeded",
            Settled::Retried => "retried",
            Settled::Dead => "dead",
            Settled::Requeued => "requeued",
            Settled::Returned => "returned",
            Settled::Cancelled => "cancelled",
            Settled::LeaseLost => "lease_lost",
        }
    }
}

impl JobRunner {
    /// Processes one delivery. Acks once the outcome is confirmed; nacks for redelivery when it
    /// could not be.
    #[tracing::instrument(skip_all, fields(job_id, request_id))]
    pub async fn process(self, delivery: Delivery) {
        if let Some(request_id) = header_text(&delivery, REQUEST_ID_HEADER) {
            tracing::Span::current().record("request_id", request_id);
        }
        let _in_flight = self.metrics.in_flight();
        let started = Instant::now();
        let (kind, settled) = self.settle(&delivery).await;
        self.metrics.settled(kind.as_ref(), settled);
        // Debug, not info: at thousands of jobs a second a line per job costs real CPU.
        tracing::debug!(
            kind = kind.as_ref().map_or("unknown", JobKind::as_str),
            outcome = settled.as_str(),
            ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "job done"
        );
    }

    async fn settle(&self, delivery: &Delivery) -> (Option<JobKind>, Settled) {
        let delivery = &Taken::new(delivery);
        let id_hint = delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|m| m.as_str().parse::<JobId>().ok());
        let envelope = match JobEnvelope::from_bytes(&delivery.data) {
            Ok(envelope) => envelope,
            Err(e) => {
                let reason = format!("unreadable message: {e}");
                tracing::warn!(job_id = ?id_hint, %reason, "dead-lettering a message that does not parse");
                let event = id_hint.map(|id| self.dead_event(id, 1, None, &reason));
                return (None, self.finish_dead(delivery, &reason, event).await);
            }
        };
        tracing::Span::current().record("job_id", tracing::field::display(envelope.id));
        let kind = Some(envelope.kind.clone());
        if delivery.redelivered && !self.cancels.is_cancelled(envelope.id) {
            tokio::time::sleep(REDELIVERY_HOLD).await;
        }
        if self.cancels.is_cancelled(envelope.id) {
            tracing::info!("the job was cancelled; acknowledging it without running it");
            return (kind, self.finish_cancelled(delivery, &envelope, None).await);
        }

        if let (Some(limit), Some(count)) = (self.delivery_limit, delivery_count(delivery))
            && count >= u64::from(limit)
        {
            let reason = format!(
                "delivered {} times without finishing: every worker that took it stopped before \
                 acknowledging it (the job may be crashing its worker)",
                count + 1
            );
            let event = self.dead_event(envelope.id, envelope.attempt, kind.clone(), &reason);
            return (kind, self.finish_dead(delivery, &reason, Some(event)).await);
        }

        let Some(handler) = self.registry.get(&envelope.kind) else {
            return (kind, self.return_unknown(delivery, &envelope).await);
        };
        // A damaged file would be as damaged on every attempt: dead-lettered at once.
        let inputs = match input_files(&envelope) {
            Ok(inputs) => inputs,
            Err(e) => {
                let reason = format!("unreadable message: {e}");
                tracing::warn!(%reason, "dead-lettering a job whose input file is damaged");
                let event = self.dead_event(envelope.id, envelope.attempt, kind.clone(), &reason);
                return (kind, self.finish_dead(delivery, &reason, Some(event)).await);
            }
        };
        let registration = self.cancels.running(envelope.id);
        // Fired by a cancel, or by a long job's lost lease.
        let stop = registration.token.child_token();
        let lease = if self.registry.is_long(&envelope.kind) {
            match self.take_lease(delivery, &envelope, &stop).await {
                Ok(lease) => Some(lease),
                Err(settled) => return (kind, settled),
            }
        } else {
            self.reporter
                .running(self.event(&envelope, JobStatus::Running, None));
            None
        };
        let started = Instant::now();
        let (outcome, retry_hint, attached) = run_attempt(
            &envelope,
            inputs,
            handler,
            self.reporter.worker().clone(),
            &self.shutdown,
            (&stop, self.cancel_grace),
            Some(ProgressReports {
                reporter: self.reporter.clone(),
                interval: self.progress_interval,
            }),
        )
        .await;
        drop(registration);
        if self.cancels.is_cancelled(envelope.id) {
            // Whatever the handler came to: the job is cancelled, so nothing of it is kept
            // and no retry is scheduled.
            let run_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            tracing::info!(
                run_ms,
                stopped = outcome == Outcome::Cancelled,
                "the job was cancelled while running"
            );
            return (
                kind,
                self.finish_cancelled(delivery, &envelope, Some(run_ms))
                    .await,
            );
        }
        if lease.as_ref().is_some_and(Lease::is_lost) {
            return (kind, Settled::LeaseLost);
        }
        let outcome = match outcome {
            Outcome::Failed(_) if self.shutdown.is_cancelled() => {
                // The handler gave up because the worker is stopping: not the job's fault, so
                // the attempt is not spent; another worker (or this one, restarted) runs it
                // again. A long job's delivery is acknowledged already: it is retried instead.
                let why = "the handler stopped because the worker is shutting down";
                if !delivery.is_acked() {
                    return (kind, self.requeue(delivery, Some(envelope.id), why).await);
                }
                Outcome::Failed(JobError::Retryable(why.to_owned()))
            }
            outcome => outcome,
        };
        let outcome = bound(outcome, self.max_result_bytes);
        // Artifacts that cannot be kept fail the attempt for good, before anything is sent.
        let (outcome, artifacts) = match outcome {
            Outcome::Succeeded(result) => match check_artifacts(&attached, self.max_artifact_bytes)
            {
                Ok(metas) => (Outcome::Succeeded(result), metas),
                Err(why) => (Outcome::Failed(JobError::Permanent(why)), Vec::new()),
            },
            failed => (failed, Vec::new()),
        };
        let run_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        let settled = match outcome {
            Outcome::Succeeded(result) => {
                // Every artifact confirmed before the success event: the API never lists one
                // the broker does not hold. One not confirmed returns the job to the queue, as
                // an event not confirmed does; one the broker would refuse ends it dead.
                for (meta, artifact) in artifacts.iter().zip(&attached) {
                    match self
                        .reporter
                        .artifact(envelope.id, envelope.attempt, meta, &artifact.bytes)
                        .await
                    {
                        Ok(()) => {}
                        Err(
                            e @ (BrokerError::MessageTooLarge { .. }
                            | BrokerError::HeadersTooLarge { .. }),
                        ) => {
                            let reason = format!(
                                "permanent error: artifact {:?} cannot be sent: {e}",
                                meta.name
                            );
                            let mut event = self.dead_event(
                                envelope.id,
                                envelope.attempt,
                                kind.clone(),
                                &reason,
                            );
                            event.run_ms = run_ms;
                            return (kind, self.finish_dead(delivery, &reason, Some(event)).await);
                        }
                        Err(e) => {
                            let why = format!("artifact {:?} not confirmed: {e}", meta.name);
                            return (kind, self.requeue(delivery, Some(envelope.id), &why).await);
                        }
                    }
                }
                let mut event = self.event(&envelope, JobStatus::Succeeded, run_ms);
                event.result = Some(result);
                event.artifacts = artifacts;
                match self.report(delivery, event).await {
                    Ok(()) => {
                        self.ack(delivery, Some(envelope.id), Settled::Succeeded)
                            .await
                    }
                    Err(e @ BrokerError::MessageTooLarge { .. }) => {
                        let reason = format!("permanent error: the result cannot be sent: {e}");
                        let mut event =
                            self.dead_event(envelope.id, envelope.attempt, kind.clone(), &reason);
                        event.run_ms = run_ms;
                        self.finish_dead(delivery, &reason, Some(event)).await
                    }
                    Err(e) => {
                        self.requeue(delivery, Some(envelope.id), &e.to_string())
                            .await
                    }
                }
            }
            Outcome::Failed(JobError::Retryable(message))
                if envelope.attempt < envelope.max_attempts =>
            {
                self.retry_later(delivery, envelope, message, run_ms, retry_hint)
                    .await
            }
            // Only with the job cancelled, which is settled above.
            Outcome::Cancelled => self.finish_cancelled(delivery, &envelope, run_ms).await,
            Outcome::Failed(error) => {
                let reason = match &error {
                    JobError::Permanent(m) => format!("permanent error: {m}"),
                    JobError::Retryable(m) => format!(
                        "failed all {} attempts; last error: {m}",
                        envelope.max_attempts
                    ),
                };
                tracing::info!(job_id = %envelope.id, %reason, "dead-lettering the job");
                let mut event =
                    self.dead_event(envelope.id, envelope.attempt, kind.clone(), &reason);
                event.run_ms = run_ms;
                self.finish_dead(delivery, &reason, Some(event)).await
            }
        };
        (kind, settled)
    }

    /// Publishes `event` and waits for its confirm. For a delivery acknowledged already (a long
    /// job's), an event not confirmed is sent again, every second for up to a lease, while the
    /// lease is still renewed: if it stayed unconfirmed the lease would lapse and the API would
    /// start the job again although its outcome (a retry, a dead letter) is already stored.
    async fn report(&self, delivery: &Taken<'_>, event: JobEvent) -> Result<(), BrokerError> {
        if !delivery.is_acked() {
            return self.reporter.event(event).await;
        }
        let until = Instant::now() + self.lease;
        loop {
            match self.reporter.event(event.clone()).await {
                Ok(()) => return Ok(()),
                Err(e @ BrokerError::MessageTooLarge { .. }) => return Err(e),
                Err(e) if Instant::now() >= until => return Err(e),
                Err(e) => {
                    tracing::warn!(job_id = %event.job_id, error = %e, "event not confirmed; sending it again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Starts a long job's lease: reports its start with the lease (confirmed), keeps its slot
    /// in the session, then acknowledges its delivery. The lease is renewed until the returned
    /// [`Lease`] is dropped; if it cannot be, `stop` fires.
    async fn take_lease(
        &self,
        delivery: &Taken<'_>,
        envelope: &JobEnvelope,
        stop: &CancellationToken,
    ) -> Result<Lease, Settled> {
        let mut start = self.event(envelope, JobStatus::Running, None);
        start.lease_ms = Some(millis(self.lease));
        if let Err(e) = self.reporter.event(start).await {
            let why = format!("the long job's start was not confirmed: {e}");
            return Err(self.requeue(delivery, Some(envelope.id), &why).await);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewing = AbortOnDrop(tokio::spawn(renew(
            self.reporter.clone(),
            (envelope.id, envelope.attempt),
            self.lease,
            stop.clone(),
            lost.clone(),
        )));
        let deadline = self.reporter.deadline();
        if let Some(task) = tokio::task::try_id() {
            let (ready, answered) = tokio::sync::oneshot::channel();
            if self.holds.send(Hold { task, ready }).is_ok() {
                let _ = tokio::time::timeout(deadline, answered).await;
            }
        }
        if let Err(e) = broker::settle(&delivery.acker, Settle::Ack, false, deadline).await {
            // The broker redelivers it: that run renews this attempt's lease.
            tracing::warn!(job_id = %envelope.id, error = %e, "the long job's ack failed; the broker will redeliver it");
            return Err(Settled::Requeued);
        }
        delivery.acked.store(true, Ordering::Relaxed);
        tracing::info!(job_id = %envelope.id, lease_ms = millis(self.lease), "long job started under a lease; its delivery is acknowledged");
        Ok(Lease {
            _renewing: renewing,
            lost,
        })
    }

    /// A job of a kind this worker cannot run (a mixed-version rollout): republished unchanged
    /// (same attempt) through the shortest delay queue, back to its kind's queue for a worker
    /// that can run it; acked once the broker confirmed it. No event: nothing happened to it.
    async fn return_unknown(&self, delivery: &Taken<'_>, envelope: &JobEnvelope) -> Settled {
        let first = self
            .unknown_kinds
            .lock()
            .map(|mut seen| seen.insert(envelope.kind.clone()))
            .unwrap_or(false);
        if first {
            tracing::warn!(
                kind = %envelope.kind,
                "this worker has no handler for kind {}; returning its jobs to the queue for a \
                 worker that has one (warned once per kind)",
                envelope.kind
            );
        }
        self.send_back(delivery, envelope).await
    }

    /// A delivery this worker will not start now (long jobs fill its queue's slots): sent back
    /// for another worker as in [`JobRunner::return_unknown`], unchanged and without spending an
    /// attempt. Not requeued: a quorum queue would count that as a delivery that failed, and
    /// dead-letter a job handed back often enough.
    pub async fn hand_back(self, delivery: Delivery) {
        let delivery = &Taken::new(&delivery);
        let (kind, settled) = match JobEnvelope::from_bytes(&delivery.data) {
            Ok(envelope) => (
                Some(envelope.kind.clone()),
                self.send_back(delivery, &envelope).await,
            ),
            // Whoever takes it next dead-letters it with the reason.
            Err(_) => (
                None,
                self.requeue(delivery, None, "handed back unread").await,
            ),
        };
        self.metrics.settled(kind.as_ref(), settled);
    }

    /// Republishes the delivery unchanged (same attempt and lane) through the shortest delay
    /// queue back to its kind's queue, then acks it; requeues it if that is not confirmed.
    async fn send_back(&self, delivery: &Taken<'_>, envelope: &JobEnvelope) -> Settled {
        let tier_ms = self.retry.delay(1, 0.0).tier_ms;
        if let Err(e) = self
            .reporter
            .return_to_queue(
                &envelope.kind,
                &delivery.data,
                &delivery.properties,
                lane_of(delivery),
                tier_ms,
            )
            .await
        {
            return self
                .requeue(delivery, Some(envelope.id), &e.to_string())
                .await;
        }
        self.ack(delivery, Some(envelope.id), Settled::Returned)
            .await
    }

    /// Schedules the next attempt in a delay queue (no sooner than the handler's hint, up to
    /// the cap), reports `retrying`, then acks this one.
    async fn retry_later(
        &self,
        delivery: &Taken<'_>,
        envelope: JobEnvelope,
        message: String,
        run_ms: Option<u64>,
        hint: Option<Duration>,
    ) -> Settled {
        let hint_ms = hint.map(|h| u64::try_from(h.as_millis()).unwrap_or(u64::MAX));
        let delay = match hint_ms {
            Some(ms) => self.retry.delay_not_before(ms, fastrand::f64()),
            None => self.retry.delay(envelope.attempt, fastrand::f64()),
        };
        let capped = match hint_ms {
            Some(ms) if ms > delay.jittered_ms => format!(
                " (the handler asked for at least {ms} ms; cut to the retry cap, OFFLOAD_RETRY_CAP_MS)"
            ),
            _ => String::new(),
        };
        let next = JobEnvelope {
            attempt: envelope.attempt + 1,
            ..envelope.clone()
        };
        tracing::info!(job_id = %envelope.id, attempt = envelope.attempt, delay_ms = delay.jittered_ms, error = %message, "attempt failed; retrying later");
        match self
            .reporter
            .schedule_retry(&next, &delivery.properties, lane_of(delivery), delay)
            .await
        {
            Ok(()) => {}
            // Sent again it would be refused again: the job ends dead with the reason.
            Err(
                e @ (BrokerError::MessageTooLarge { .. } | BrokerError::HeadersTooLarge { .. }),
            ) => {
                let reason = format!("the retry cannot be sent: {e}; last error: {message}");
                let mut event = self.dead_event(
                    envelope.id,
                    envelope.attempt,
                    Some(envelope.kind.clone()),
                    &reason,
                );
                event.run_ms = run_ms;
                return self.finish_dead(delivery, &reason, Some(event)).await;
            }
            Err(e) => {
                return self
                    .requeue(delivery, Some(envelope.id), &e.to_string())
                    .await;
            }
        }
        let mut event = self.event(&envelope, JobStatus::Retrying, run_ms);
        event.error = Some(format!(
            "attempt {} failed: {message}; attempt {} in about {} ms{capped}",
            envelope.attempt, next.attempt, delay.jittered_ms
        ));
        if let Err(e) = self.report(delivery, event).await {
            // The retry is stored; only the status is late. Acking avoids a second retry.
            tracing::warn!(job_id = %envelope.id, error = %e, "retrying event not confirmed");
        }
        self.ack(delivery, Some(envelope.id), Settled::Retried)
            .await
    }

    /// An event about `envelope`, stamped now, carrying its kind.
    fn event(&self, envelope: &JobEnvelope, status: JobStatus, run_ms: Option<u64>) -> JobEvent {
        let mut event = JobEvent::now(
            envelope.id,
            envelope.attempt,
            status,
            self.reporter.worker(),
        );
        event.kind = Some(envelope.kind.clone());
        if status == JobStatus::Running {
            event.max_attempts = Some(envelope.max_attempts);
            event.submitted_at = Some(envelope.submitted_at);
        }
        event.run_ms = run_ms;
        event
    }

    fn dead_event(&self, id: JobId, attempt: u32, kind: Option<JobKind>, reason: &str) -> JobEvent {
        let mut event = JobEvent::now(id, attempt, JobStatus::Dead, self.reporter.worker());
        event.kind = kind;
        event.error = Some(reason.to_owned());
        event
    }

    /// Dead-letters the message with `reason`, reports `event`, then acks; if the dead letter is
    /// not confirmed the delivery is requeued so nothing is lost.
    async fn finish_dead(
        &self,
        delivery: &Taken<'_>,
        reason: &str,
        event: Option<JobEvent>,
    ) -> Settled {
        let id = event.as_ref().map(|e| e.job_id);
        if let Err(e) = self
            .reporter
            .dead_letter(&delivery.data, &delivery.properties, reason)
            .await
        {
            return self.requeue(delivery, id, &e.to_string()).await;
        }
        if let Some(event) = event
            && let Err(e) = self.report(delivery, event).await
        {
            // The dead letter is stored; the status is only late. Ack anyway rather than
            // dead-letter the job twice.
            tracing::warn!(job_id = ?id, error = %e, "dead event not confirmed");
        }
        self.ack(delivery, id, Settled::Dead).await
    }

    /// Reports the cancelled job `cancelled` (after `run_ms` of running, if it ran) and acks
    /// it. The API recorded the cancel before it was sent, so the event only tells it that a
    /// worker settled it; an event not confirmed is logged, and the job acked all the same.
    async fn finish_cancelled(
        &self,
        delivery: &Taken<'_>,
        envelope: &JobEnvelope,
        run_ms: Option<u64>,
    ) -> Settled {
        let event = self.event(envelope, JobStatus::Cancelled, run_ms);
        if let Err(e) = self.report(delivery, event).await {
            tracing::warn!(job_id = %envelope.id, error = %e, "cancelled event not confirmed");
        }
        self.ack(delivery, Some(envelope.id), Settled::Cancelled)
            .await
    }

    async fn ack(&self, delivery: &Taken<'_>, id: Option<JobId>, settled: Settled) -> Settled {
        if delivery.is_acked() {
            return settled;
        }
        let deadline = self.reporter.deadline();
        if let Err(e) = broker::settle(&delivery.acker, Settle::Ack, false, deadline).await {
            tracing::warn!(job_id = ?id, error = %e, "ack failed; the broker will redeliver the job");
        }
        settled
    }

    async fn requeue(&self, delivery: &Taken<'_>, id: Option<JobId>, why: &str) -> Settled {
        if delivery.is_acked() {
            // A long job: its lease lapses and the API starts it again.
            tracing::warn!(job_id = ?id, error = %why, "outcome not confirmed; the job's lease lapses and the API starts it again");
            return Settled::Requeued;
        }
        tracing::warn!(job_id = ?id, error = %why, "outcome not confirmed; returning the job to the queue");
        let deadline = self.reporter.deadline();
        if let Err(e) = broker::settle(&delivery.acker, Settle::Requeue, false, deadline).await {
            tracing::warn!(job_id = ?id, error = %e, "nack failed; the broker will redeliver the job");
        }
        Settled::Requeued
    }
}

/// Why `result` cannot be sent, if it cannot: it nests deeper than [`MAX_JSON_DEPTH`] (the event
/// path could not parse it) or its JSON is longer than `max_bytes` (`OFFLOAD_MAX_RESULT_BYTES`).
pub fn check_result(result: &Value, max_bytes: usize) -> Result<(), String> {
    let depth = json_depth(result);
    if depth > MAX_JSON_DEPTH {
        return Err(format!(
            "result nests {depth} levels deep, above the limit of {MAX_JSON_DEPTH} levels"
        ));
    }
    let len = json_len(result);
    if len > max_bytes {
        return Err(format!(
            "result is {len} bytes, above OFFLOAD_MAX_RESULT_BYTES ({max_bytes})"
        ));
    }
    Ok(())
}

/// What the success event lists of `attached` (name, media type, size, SHA-256), or why they
/// cannot be kept: a name or media type that is not usable, or more than `max_bytes`
/// (`OFFLOAD_MAX_ARTIFACT_BYTES`) in all.
pub fn check_artifacts(
    attached: &[Artifact],
    max_bytes: usize,
) -> Result<Vec<ArtifactMeta>, String> {
    let total: usize = attached.iter().map(|a| a.bytes.len()).sum();
    if total > max_bytes {
        return Err(format!(
            "the job's {} artifacts are {total} bytes in all, above OFFLOAD_MAX_ARTIFACT_BYTES ({max_bytes})",
            attached.len()
        ));
    }
    attached
        .iter()
        .map(|a| {
            artifacts::check_name(&a.name)?;
            artifacts::check_content_type(&a.content_type)?;
            Ok(ArtifactMeta {
                name: a.name.clone(),
                content_type: a.content_type.clone(),
                size: a.bytes.len() as u64,
                sha256: artifacts::hex(&Sha256::digest(&a.bytes)),
            })
        })
        .collect()
}

/// The outcome as it may be reported: a result over the limits becomes a permanent failure that
/// says why, and a failure's message is cut to [`MAX_ERROR_BYTES`].
fn bound(outcome: Outcome, max_result_bytes: usize) -> Outcome {
    match outcome {
        Outcome::Succeeded(result) => match check_result(&result, max_result_bytes) {
            Ok(()) => Outcome::Succeeded(result),
            Err(why) => Outcome::Failed(JobError::Permanent(why)),
        },
        Outcome::Failed(JobError::Permanent(m)) => {
            Outcome::Failed(JobError::Permanent(truncate(m, MAX_ERROR_BYTES)))
        }
        Outcome::Failed(JobError::Retryable(m)) => {
            Outcome::Failed(JobError::Retryable(truncate(m, MAX_ERROR_BYTES)))
        }
        Outcome::Cancelled => Outcome::Cancelled,
    }
}

/// `text` cut to at most `max` bytes on a character boundary, saying it was cut.
fn truncate(mut text: String, max: usize) -> String {
    const MARK: &str = " … (truncated)";
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
    text
}

/// A text header of the delivery.
fn header_text(delivery: &Delivery, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The quorum queue's count of earlier deliveries of this message (absent on classic queues).
fn delivery_count(delivery: &Delivery) -> Option<u64> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("x-delivery-count")? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        _ => None,
    }
}

/// Aborts the handler's task when the job is abandoned (its connection was lost, or the
/// shutdown grace period ran out), so no orphaned handler keeps running.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The envelope's files as the handler sees them, each checked against its size and SHA-256.
pub(crate) fn input_files(envelope: &JobEnvelope) -> Result<Vec<InputFile>, FileError> {
    envelope
        .files
        .iter()
        .map(|f| {
            Ok(InputFile {
                field: f.field.clone(),
                filename: f.filename.clone(),
                content_type: f.content_type.clone(),
                data: f.decode()?.into(),
            })
        })
        .collect()
}

/// Runs the handler in its own task (a panic stays there) under the job's time limit. Its
/// context's cancellation is a child of `shutdown`, and is fired too when the limit is reached.
/// Returns the outcome and what the handler attached to its context.
#[cfg(test)]
pub(crate) async fn run(
    envelope: &JobEnvelope,
    inputs: Vec<InputFile>,
    handler: Arc<dyn Handler>,
    worker: Arc<str>,
    shutdown: &CancellationToken,
) -> (Outcome, Vec<Artifact>) {
    let never = CancellationToken::new();
    let (outcome, _, attached) = run_attempt(
        envelope,
        inputs,
        handler,
        worker,
        shutdown,
        (&never, Duration::ZERO),
        None,
    )
    .await;
    (outcome, attached)
}

/// [`run`], with the earliest retry the handler asked for ([`JobContext::retry_not_before`])
/// and what it attached to its context (nothing, if the attempt failed). When `cancel.0` fires
/// (the job was cancelled) the handler's context is cancelled too, and the handler gets
/// `cancel.1` to stop before it is dropped: the outcome is then [`Outcome::Cancelled`].
pub(crate) async fn run_attempt(
    envelope: &JobEnvelope,
    inputs: Vec<InputFile>,
    handler: Arc<dyn Handler>,
    worker: Arc<str>,
    shutdown: &CancellationToken,
    cancel: (&CancellationToken, Duration),
    reports: Option<ProgressReports>,
) -> (Outcome, Option<Duration>, Vec<Artifact>) {
    let limit = Duration::from_millis(envelope.timeout_ms);
    let cancellation = shutdown.child_token();
    let ctx = JobContext::received(
        envelope.id,
        envelope.kind.clone(),
        (envelope.attempt, envelope.max_attempts),
        worker,
        Instant::now() + limit,
        cancellation.clone(),
        inputs,
    );
    // Fired when the job ends however it ends, so work the handler spawned with the token stops.
    let _cancel_on_end = cancellation.clone().drop_guard();
    // A clone shares the handler's hint slot and attachments: read once the handler is done.
    let kept = ctx.clone();
    // Stops with the attempt: a report after its end would say nothing true.
    let _progress = reports.map(|reports| {
        AbortOnDrop(tokio::spawn(forward_progress(
            ctx.progress_reports(),
            reports,
            envelope.id,
            envelope.attempt,
        )))
    });
    let mut task = AbortOnDrop(tokio::spawn(handler.run(ctx, envelope.payload.clone())));
    let (job_cancelled, grace) = cancel;
    let ran = tokio::select! {
        ran = tokio::time::timeout(limit, &mut task.0) => Some(ran),
        () = job_cancelled.cancelled() => None,
    };
    let Some(ran) = ran else {
        // Cancelled: the handler sees its context fire and has the grace period to stop; then
        // it is dropped (aborted with its task).
        cancellation.cancel();
        let _ = tokio::time::timeout(grace, &mut task.0).await;
        return (Outcome::Cancelled, None, Vec::new());
    };
    let outcome = match ran {
        Ok(Ok(Ok(result))) => Outcome::Succeeded(result),
        Ok(Ok(Err(error))) => Outcome::Failed(error),
        Ok(Err(join)) => Outcome::Failed(JobError::Retryable(if join.is_panic() {
            "the handler panicked".to_owned()
        } else {
            "the handler was cancelled".to_owned()
        })),
        Err(_) => Outcome::Failed(JobError::Retryable(format!(
            "timed out after {} ms",
            envelope.timeout_ms
        ))),
    };
    // A failed attempt drops what it attached.
    let attached = match outcome {
        Outcome::Succeeded(_) => kept.attached(),
        Outcome::Failed(_) | Outcome::Cancelled => Vec::new(),
    };
    (outcome, kept.retry_hint(), attached)
}

/// The lane a delivery came from: its routing key's `:high` suffix, or a high AMQP priority.
/// A republished job goes back to it.
fn lane_of(delivery: &Delivery) -> Priority {
    let (_, by_key) = Priority::split_lane(delivery.routing_key.as_str());
    by_key.max(Priority::of_message(*delivery.properties.priority()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use offload_shared::{JobKind, envelope::WIRE_VERSION};
    use serde_json::json;
    use time::OffsetDateTime;

    fn envelope(kind: JobKind, payload: Value, timeout_ms: u64) -> JobEnvelope {
        JobEnvelope {
            v: WIRE_VERSION,
            id: JobId::new(),
            kind,
            payload,
            attempt: 1,
            max_attempts: 1,
            timeout_ms,
            submitted_at: OffsetDateTime::now_utc(),
            files: Vec::new(),
        }
    }

    #[test]
    fn input_files_arrive_checked_or_not_at_all() {
        use offload_shared::envelope::EnvelopeFile;
        let mut env = envelope(JobKind::parse("noop").expect("valid"), json!({}), 1000);
        env.files.push(EnvelopeFile::new(
            "doc".into(),
            Some("a.txt".into()),
            "text/plain".into(),
            b"hello",
        ));
        let inputs = input_files(&env).expect("intact");
        assert_eq!(inputs.len(), 1);
        assert_eq!(inputs[0].field, "doc");
        assert_eq!(inputs[0].filename.as_deref(), Some("a.txt"));
        assert_eq!(&inputs[0].data[..], b"hello");
        for (damage, why) in [
            (
                (|f: &mut EnvelopeFile| f.data = "%%%".into()) as fn(&mut EnvelopeFile),
                "base64",
            ),
            (|f: &mut EnvelopeFile| f.size += 1, "size"),
            (|f: &mut EnvelopeFile| f.sha256 = "00".repeat(32), "sha256"),
        ] {
            let mut bad = env.clone();
            damage(&mut bad.files[0]);
            assert!(input_files(&bad).is_err(), "{why}");
        }
    }

    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!("leaf"), |v, _| Value::Array(vec![v]))
    }

    #[test]
    fn results_over_the_limits_become_permanent_failures_naming_the_limit() {
        let max = 1024;
        let cases = [
            (json!({"ok": true}), None, "a small result passes"),
            (
                nested(MAX_JSON_DEPTH),
                None,
                "exactly the depth limit passes",
            ),
            (
                json!("x".repeat(max - 2)),
                None,
                "exactly the size limit passes (two quotes)",
            ),
            (
                json!("x".repeat(max - 1)),
                Some("result is 1025 bytes, above OFFLOAD_MAX_RESULT_BYTES (1024)"),
                "one byte over",
            ),
            (
                nested(MAX_JSON_DEPTH + 1),
                Some("result nests 65 levels deep, above the limit of 64 levels"),
                "one level too deep",
            ),
        ];
        for (result, refused, why) in cases {
            let outcome = bound(Outcome::Succeeded(result.clone()), max);
            match refused {
                None => assert_eq!(outcome, Outcome::Succeeded(result), "{why}"),
                Some(reason) => assert_eq!(
                    outcome,
                    Outcome::Failed(JobError::Permanent(reason.to_owned())),
                    "{why}"
                ),
            }
        }
    }

    #[test]
    fn artifacts_are_listed_with_their_hash_or_refused_naming_why() {
        let ok = [
            Artifact::new("a.txt", "text/plain", "abc"),
            Artifact::new("b.bin", "application/octet-stream", vec![0u8; 5]),
        ];
        let metas = check_artifacts(&ok, 8).expect("8 bytes in all fit");
        assert_eq!(metas.len(), 2);
        assert_eq!(
            metas[0].sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "SHA-256 of abc"
        );
        assert_eq!(
            (metas[1].size, metas[1].content_type.as_str()),
            (5, "application/octet-stream")
        );

        let over = check_artifacts(&ok, 7).expect_err("one byte over");
        assert!(
            over.contains("8 bytes") && over.contains("OFFLOAD_MAX_ARTIFACT_BYTES (7)"),
            "{over}"
        );
        let bad_name = check_artifacts(&[Artifact::new("../etc/passwd", "text/plain", "x")], 8)
            .expect_err("a path");
        assert!(bad_name.contains("../etc/passwd"), "{bad_name}");
        let bad_type = check_artifacts(&[Artifact::new("a", "text/plain\r\nX: 1", "x")], 8);
        assert!(bad_type.is_err(), "a header injection");
        assert_eq!(check_artifacts(&[], 0), Ok(Vec::new()));
    }

    #[tokio::test]
    async fn a_successful_run_returns_what_the_handler_attached_and_a_failed_one_drops_it() {
        struct Attaching;
        impl crate::Job for Attaching {
            const KIND: &'static str = "attaching";
            type Payload = bool;
            type Output = Value;
            async fn run(&self, ctx: JobContext, fail: bool) -> Result<Value, JobError> {
                ctx.attach(Artifact::new("out.txt", "text/plain", "hi"));
                if fail {
                    return Err(JobError::permanent("no"));
                }
                Ok(json!(null))
            }
        }
        let mut registry = Registry::default();
        registry.register(Attaching).expect("valid");
        let kind = JobKind::parse("attaching").expect("valid");
        for (fail, expected) in [(false, 1), (true, 0)] {
            let handler = registry.get(&kind).expect("registered");
            let (_, attached) = run(
                &envelope(kind.clone(), json!(fail), 5_000),
                Vec::new(),
                handler,
                "t".into(),
                &CancellationToken::new(),
            )
            .await;
            assert_eq!(attached.len(), expected, "fail = {fail}");
        }
    }

    #[test]
    fn long_failure_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let Outcome::Failed(JobError::Retryable(cut)) =
            bound(Outcome::Failed(JobError::Retryable(long)), 1024)
        else {
            panic!("stays a retryable failure");
        };
        assert!(cut.len() <= MAX_ERROR_BYTES, "{}", cut.len());
        assert!(cut.ends_with("(truncated)"), "{cut}");
        let short = Outcome::Failed(JobError::Permanent("bad input".to_owned()));
        assert_eq!(bound(short.clone(), 1024), short);
    }

    fn sleep_handler() -> Arc<dyn Handler> {
        crate::handlers::builtin::registry()
            .get(&JobKind::parse("sleep").expect("valid"))
            .expect("registered")
    }

    /// Waits for its context's cancellation, then reports how long it had left.
    struct Patient;

    impl crate::Job for Patient {
        const KIND: &'static str = "patient";
        type Payload = Value;
        type Output = Value;

        async fn run(&self, ctx: JobContext, _p: Value) -> Result<Value, JobError> {
            ctx.cancelled().await;
            Err(JobError::retryable(format!(
                "cancelled with {} ms left",
                ctx.remaining().as_millis()
            )))
        }
    }

    fn patient() -> Arc<dyn Handler> {
        let mut registry = Registry::default();
        registry.register(Patient).expect("valid");
        registry
            .get(&JobKind::parse("patient").expect("valid"))
            .expect("registered")
    }

    /// Fails retryably, asking for its retry no sooner than 1.5 s (twice: the longer counts).
    struct Busy;

    impl crate::Job for Busy {
        const KIND: &'static str = "busy";
        type Payload = Value;
        type Output = Value;

        async fn run(&self, ctx: JobContext, _p: Value) -> Result<Value, JobError> {
            ctx.retry_not_before(Duration::from_millis(1500));
            ctx.retry_not_before(Duration::from_millis(10));
            Err(JobError::retryable("busy"))
        }
    }

    #[tokio::test]
    async fn the_retry_hint_a_handler_gives_reaches_the_consumer() {
        let mut registry = Registry::default();
        registry.register(Busy).expect("valid");
        let kind = JobKind::parse("busy").expect("valid");
        let handler = registry.get(&kind).expect("registered");
        let job = envelope(kind, json!(null), 5_000);
        let (outcome, hint, _) = run_attempt(
            &job,
            Vec::new(),
            handler,
            "t".into(),
            &CancellationToken::new(),
            (&CancellationToken::new(), Duration::ZERO),
            None,
        )
        .await;
        assert_eq!(outcome, Outcome::Failed(JobError::retryable("busy")));
        assert_eq!(hint, Some(Duration::from_millis(1500)));
        let (_, none, _) = run_attempt(
            &envelope(JobKind::parse("sleep").expect("valid"), json!({}), 5_000),
            Vec::new(),
            sleep_handler(),
            "t".into(),
            &CancellationToken::new(),
            (&CancellationToken::new(), Duration::ZERO),
            None,
        )
        .await;
        assert_eq!(none, None, "no hint unless asked");
    }

    #[tokio::test]
    async fn a_shutdown_cancels_the_context_of_a_running_job() {
        let shutdown = CancellationToken::new();
        let job = envelope(
            JobKind::parse("patient").expect("valid"),
            json!(null),
            60_000,
        );
        let running = run(&job, Vec::new(), patient(), "t".into(), &shutdown);
        let stop = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            shutdown.cancel();
        };
        let ((outcome, _), ()) = tokio::join!(running, stop);
        let Outcome::Failed(JobError::Retryable(message)) = outcome else {
            panic!("the handler gave up: {outcome:?}");
        };
        assert!(message.starts_with("cancelled with 59"), "{message}");
    }

    #[tokio::test]
    async fn a_cancel_fires_the_context_and_a_handler_that_ignores_it_is_dropped_after_the_grace() {
        // One that watches its context stops at once.
        let cancel = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let job = envelope(
            JobKind::parse("patient").expect("valid"),
            json!(null),
            60_000,
        );
        let started = Instant::now();
        let running = run_attempt(
            &job,
            Vec::new(),
            patient(),
            "t".into(),
            &shutdown,
            (&cancel, Duration::from_secs(30)),
            None,
        );
        let stop = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cancel.cancel();
        };
        let ((outcome, _, _), ()) = tokio::join!(running, stop);
        assert_eq!(outcome, Outcome::Cancelled);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );

        // `sleep` ignores it: dropped once the grace period is over, long before its 60 s.
        let cancel = CancellationToken::new();
        cancel.cancel();
        let job = envelope(
            JobKind::parse("sleep").expect("valid"),
            json!({"ms": 60_000}),
            120_000,
        );
        let started = Instant::now();
        let (outcome, _, attached) = run_attempt(
            &job,
            Vec::new(),
            sleep_handler(),
            "t".into(),
            &CancellationToken::new(),
            (&cancel, Duration::from_millis(200)),
            None,
        )
        .await;
        assert_eq!(outcome, Outcome::Cancelled);
        assert!(attached.is_empty());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn the_context_carries_the_deadline_of_the_time_limit() {
        struct Deadline;
        impl crate::Job for Deadline {
            const KIND: &'static str = "deadline";
            type Payload = Value;
            type Output = u128;
            async fn run(&self, ctx: JobContext, _p: Value) -> Result<u128, JobError> {
                Ok(ctx.remaining().as_millis())
            }
        }
        let mut registry = Registry::default();
        registry.register(Deadline).expect("valid");
        let kind = JobKind::parse("deadline").expect("valid");
        let handler = registry.get(&kind).expect("registered");
        let (outcome, _) = run(
            &envelope(kind, json!(null), 5_000),
            Vec::new(),
            handler,
            "t".into(),
            &CancellationToken::new(),
        )
        .await;
        let Outcome::Succeeded(left) = outcome else {
            panic!("{outcome:?}");
        };
        let left = left.as_u64().expect("a number");
        assert!((4_000..=5_000).contains(&left), "{left} ms left of 5000");
    }

    #[tokio::test]
    async fn overrunning_and_panicking_handlers_become_retryable_failures() {
        let worker: Arc<str> = "t".into();
        let shutdown = CancellationToken::new();
        let (slow, _) = run(
            &envelope(
                JobKind::parse("sleep").expect("valid"),
                json!({"ms": 5000}),
                20,
            ),
            Vec::new(),
            sleep_handler(),
            worker.clone(),
            &shutdown,
        )
        .await;
        assert!(
            matches!(slow, Outcome::Failed(JobError::Retryable(ref m)) if m.contains("timed out")),
            "{slow:?}"
        );
        let (panicked, _) = run(
            &envelope(
                JobKind::parse("sleep").expect("valid"),
                json!({"panic": true}),
                1000,
            ),
            Vec::new(),
            sleep_handler(),
            worker,
            &shutdown,
        )
        .await;
        assert!(
            matches!(panicked, Outcome::Failed(JobError::Retryable(ref m)) if m.contains("panicked")),
            "{panicked:?}"
        );
    }
}
