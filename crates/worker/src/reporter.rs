//! Reporting outcomes to the broker: lifecycle events to the events queue and dead jobs, with
//! their reason, to the dead-letter exchange. Every publish is confirmed before the job's
//! delivery is acknowledged.

use std::{sync::Arc, time::Duration};

use lapin::{
    BasicProperties, Channel,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use offload_shared::{
    JobEnvelope, JobEvent,
    broker::{self, BrokerError},
    retry::RetryDelay,
    topology::Names,
};

/// Header carrying why a job was dead-lettered.
pub const REASON_HEADER: &str = "x-offload-reason";
/// Header carrying which worker dead-lettered it.
pub const WORKER_HEADER: &str = "x-offload-worker";

/// Publishes events and dead letters on one confirm-mode channel.
#[derive(Debug, Clone)]
pub struct Reporter {
    channel: Channel,
    events_queue: Arc<str>,
    dead_exchange: Arc<str>,
    names: Arc<Names>,
    worker: Arc<str>,
    deadline: Duration,
}

impl Reporter {
    /// A reporter for `worker` publishing on `channel` (already in confirm mode).
    pub fn new(channel: Channel, names: &Names, worker: Arc<str>, deadline: Duration) -> Self {
        Reporter {
            channel,
            events_queue: names.events_queue.as_str().into(),
            dead_exchange: names.dead_exchange.as_str().into(),
            names: Arc::new(names.clone()),
            worker,
            deadline,
        }
    }

    /// Deadline of one broker wait.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The worker's name.
    pub fn worker(&self) -> &Arc<str> {
        &self.worker
    }

    /// Publishes `event` and waits for the broker's confirm.
    #[tracing::instrument(skip_all, fields(job_id = %event.job_id, status = %event.status))]
    pub async fn event(&self, event: &JobEvent) -> Result<(), BrokerError> {
        broker::publish_confirmed(
            &self.channel,
            "",
            &self.events_queue,
            &event.to_bytes(),
            broker::persistent_json(),
            self.deadline,
        )
        .await
    }

    /// Publishes `event` without holding up the job; a failure is only logged, since a later
    /// event of the same job supersedes it.
    pub fn event_in_background(&self, event: JobEvent) {
        let reporter = self.clone();
        tokio::spawn(async move {
            if let Err(e) = reporter.event(&event).await {
                tracing::warn!(job_id = %event.job_id, status = %event.status, error = %e, "lifecycle event not confirmed");
            }
        });
    }

    /// Copies a message to the dead-letter exchange with `reason` and waits for the confirm.
    #[tracing::instrument(skip_all)]
    pub async fn dead_letter(
        &self,
        body: &[u8],
        original: &BasicProperties,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let mut headers = original.headers().clone().unwrap_or_default();
        put(&mut headers, REASON_HEADER, reason);
        put(&mut headers, WORKER_HEADER, &self.worker);
        let properties = original.clone().with_headers(headers).with_delivery_mode(2);
        broker::publish_confirmed(
            &self.channel,
            &self.dead_exchange,
            "",
            body,
            properties,
            self.deadline,
        )
        .await
    }

    /// Puts the next attempt of a job in the delay queue for `delay`; it returns to the work
    /// queue when its expiration passes. Waits for the broker's confirm.
    #[tracing::instrument(skip_all, fields(job_id = %next.id, attempt = next.attempt))]
    pub async fn schedule_retry(
        &self,
        next: &JobEnvelope,
        original: &BasicProperties,
        delay: RetryDelay,
    ) -> Result<(), BrokerError> {
        let queue = self
            .names
            .retry_queue(delay.tier_ms)
            .ok_or(BrokerError::Returned(format!(
                "no delay queue for {} ms",
                delay.tier_ms
            )))?;
        let properties = original
            .clone()
            .with_delivery_mode(2)
            .with_expiration(ShortString::from(delay.jittered_ms.to_string()));
        broker::publish_confirmed(
            &self.channel,
            "",
            queue,
            &next.to_bytes(),
            properties,
            self.deadline,
        )
        .await
    }

    /// The reporting channel, to watch for its loss.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

fn put(headers: &mut FieldTable, key: &str, value: &str) {
    headers.insert(
        ShortString::from(key),
        AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
    );
}
