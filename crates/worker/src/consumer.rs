//! One delivery, start to finish: parse, report `running`, run the handler under its time
//! limit, report the outcome (confirmed), and only then acknowledge on the delivery's own
//! channel. A message that does not parse is dead-lettered with the reason; nothing here panics.

use std::{sync::Arc, time::Duration};

use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
};
use serde_json::Value;

use offload_shared::{JobEnvelope, JobEvent, JobId, JobStatus};

use crate::{
    handlers::{JobContext, JobError, Registry},
    reporter::Reporter,
};

/// What a job's handler came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It returned a result.
    Succeeded(Value),
    /// It failed, overran its time limit, or panicked.
    Failed(JobError),
}

/// Processes one delivery. Never panics; acks, or nacks for redelivery when the outcome could
/// not be reported.
#[tracing::instrument(skip_all, fields(job_id))]
pub async fn process(delivery: Delivery, registry: Arc<Registry>, reporter: Reporter) {
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
            let event = id_hint.map(|id| dead_event(id, 1, &reason, &reporter));
            finish_dead(&delivery, &reporter, &reason, event).await;
            return;
        }
    };
    tracing::Span::current().record("job_id", tracing::field::display(envelope.id));

    reporter.event_in_background(JobEvent::now(
        envelope.id,
        envelope.attempt,
        JobStatus::Running,
        reporter.worker(),
    ));
    let outcome = run(&envelope, &registry, reporter.worker().clone()).await;
    match outcome {
        Outcome::Succeeded(result) => {
            let mut event = JobEvent::now(
                envelope.id,
                envelope.attempt,
                JobStatus::Succeeded,
                reporter.worker(),
            );
            event.result = Some(result);
            match reporter.event(&event).await {
                Ok(()) => ack(&delivery, envelope.id).await,
                Err(e) => requeue(&delivery, envelope.id, &e.to_string()).await,
            }
        }
        Outcome::Failed(error) => {
            let reason = match &error {
                JobError::Permanent(m) => format!("permanent error: {m}"),
                JobError::Retryable(m) => format!("attempt {} failed: {m}", envelope.attempt),
            };
            tracing::info!(job_id = %envelope.id, %reason, "job failed; dead-lettering it");
            let event = dead_event(envelope.id, envelope.attempt, &reason, &reporter);
            finish_dead(&delivery, &reporter, &reason, Some(event)).await;
        }
    }
}

/// Runs the handler in its own task (a panic stays there) under the job's time limit.
pub async fn run(envelope: &JobEnvelope, registry: &Registry, worker: Arc<str>) -> Outcome {
    let Some(handler) = registry.get(envelope.kind) else {
        return Outcome::Failed(JobError::Permanent(format!(
            "this worker has no handler for kind {}",
            envelope.kind
        )));
    };
    let ctx = JobContext {
        id: envelope.id,
        attempt: envelope.attempt,
        max_attempts: envelope.max_attempts,
        worker,
    };
    let limit = Duration::from_millis(envelope.timeout_ms);
    let mut task = tokio::spawn(handler.run(ctx, envelope.payload.clone()));
    match tokio::time::timeout(limit, &mut task).await {
        Ok(Ok(Ok(result))) => Outcome::Succeeded(result),
        Ok(Ok(Err(error))) => Outcome::Failed(error),
        Ok(Err(join)) => Outcome::Failed(JobError::Retryable(if join.is_panic() {
            "the handler panicked".to_owned()
        } else {
            "the handler was cancelled".to_owned()
        })),
        Err(_) => {
            task.abort();
            Outcome::Failed(JobError::Retryable(format!(
                "timed out after {} ms",
                envelope.timeout_ms
            )))
        }
    }
}

fn dead_event(id: JobId, attempt: u32, reason: &str, reporter: &Reporter) -> JobEvent {
    let mut event = JobEvent::now(id, attempt, JobStatus::Dead, reporter.worker());
    event.error = Some(reason.to_owned());
    event
}

/// Dead-letters the message with `reason`, reports `event`, then acks; if either publish is not
/// confirmed the delivery is requeued so nothing is lost.
async fn finish_dead(
    delivery: &Delivery,
    reporter: &Reporter,
    reason: &str,
    event: Option<JobEvent>,
) {
    let id = event.as_ref().map(|e| e.job_id);
    if let Err(e) = reporter
        .dead_letter(&delivery.data, &delivery.properties, reason)
        .await
    {
        return requeue_raw(delivery, id, &e.to_string()).await;
    }
    if let Some(event) = event
        && let Err(e) = reporter.event(&event).await
    {
        // The dead letter is stored; the status is only late. Ack anyway rather than
        // dead-letter the job twice.
        tracing::warn!(job_id = %event.job_id, error = %e, "dead event not confirmed");
    }
    match delivery.acker.ack(BasicAckOptions::default()).await {
        Ok(_) => {}
        Err(e) => tracing::warn!(job_id = ?id, error = %e, "ack failed; the broker will redeliver"),
    }
}

async fn ack(delivery: &Delivery, id: JobId) {
    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
        tracing::warn!(job_id = %id, error = %e, "ack failed; the broker will redeliver the job");
    }
}

async fn requeue(delivery: &Delivery, id: JobId, why: &str) {
    requeue_raw(delivery, Some(id), why).await;
}

async fn requeue_raw(delivery: &Delivery, id: Option<JobId>, why: &str) {
    tracing::warn!(job_id = ?id, error = %why, "outcome not confirmed; returning the job to the queue");
    let nack = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    if let Err(e) = delivery.acker.nack(nack).await {
        tracing::warn!(job_id = ?id, error = %e, "nack failed; the broker will redeliver the job");
    }
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
        }
    }

    #[tokio::test]
    async fn overrunning_and_panicking_handlers_become_failures() {
        let registry =
            Registry::builtin().with(JobKind::Noop, |_ctx: JobContext, _p: Value| async move {
                if true {
                    panic!("boom");
                }
                Ok(json!(null))
            });
        let worker: Arc<str> = "t".into();
        let slow = run(
            &envelope(JobKind::Sleep, json!({"ms": 5000}), 20),
            &registry,
            worker.clone(),
        )
        .await;
        assert!(
            matches!(slow, Outcome::Failed(JobError::Retryable(ref m)) if m.contains("timed out")),
            "{slow:?}"
        );
        let panicked = run(&envelope(JobKind::Noop, json!({}), 1000), &registry, worker).await;
        assert!(
            matches!(panicked, Outcome::Failed(JobError::Retryable(ref m)) if m.contains("panicked")),
            "{panicked:?}"
        );
    }
}
