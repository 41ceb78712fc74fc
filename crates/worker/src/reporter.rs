//! Reporting outcomes to the broker: lifecycle events to the events queue and dead jobs, with
//! their reason, to the dead-letter exchange. Every publish is confirmed before the job's
//! delivery is acknowledged.
//!
//! Events go out in batches: one task takes every event waiting (up to [`MAX_EVENTS`]), folds a
//! job's `running` into its end when both wait together, publishes them as one message and
//! answers each waiting job once the broker confirmed it. An idle worker's event goes out at
//! once, alone; under load, the events that pile up while one batch is being confirmed share the
//! next, so the broker stores one message for many jobs.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};

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

/// Most events in one message.
pub const MAX_EVENTS: usize = 256;

/// An event for the batcher, and who waits for its confirm (nobody, for `running`).
type Pending = (JobEvent, Option<oneshot::Sender<Result<(), String>>>);

/// Publishes events and dead letters on one confirm-mode channel.
#[derive(Debug, Clone)]
pub struct Reporter {
    channel: Channel,
    events: mpsc::UnboundedSender<Pending>,
    dead_exchange: Arc<str>,
    names: Arc<Names>,
    worker: Arc<str>,
    deadline: Duration,
}

impl Reporter {
    /// A reporter for `worker` publishing on `channel` (already in confirm mode). Starts the
    /// event batcher, which stops when the last clone of the reporter is dropped.
    pub fn new(channel: Channel, names: &Names, worker: Arc<str>, deadline: Duration) -> Self {
        let (events, waiting) = mpsc::unbounded_channel();
        tokio::spawn(batch_events(
            channel.clone(),
            names.events_queue.as_str().into(),
            deadline,
            waiting,
        ));
        Reporter {
            channel,
            events,
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

    /// Publishes `event` (in the next batch) and waits for the broker's confirm.
    pub async fn event(&self, event: JobEvent) -> Result<(), BrokerError> {
        let (done, confirmed) = oneshot::channel();
        self.events
            .send((event, Some(done)))
            .map_err(|_| BrokerError::NotConnected)?;
        match confirmed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(BrokerError::Batch(why)),
            Err(_) => Err(BrokerError::NotConnected),
        }
    }

    /// Publishes `running` without holding up the job; if the job ends before the batch goes
    /// out, the start is folded into the end's event. A failure is only logged, since a later
    /// event of the same job supersedes it.
    pub fn started(&self, running: JobEvent) {
        let _ = self.events.send((running, None));
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

/// The batcher: takes what waits, folds, publishes one message, answers the waiters.
async fn batch_events(
    channel: Channel,
    queue: Arc<str>,
    deadline: Duration,
    mut waiting: mpsc::UnboundedReceiver<Pending>,
) {
    let mut taken = Vec::with_capacity(MAX_EVENTS);
    while waiting.recv_many(&mut taken, MAX_EVENTS).await > 0 {
        let (events, waiters) = fold_starts(std::mem::take(&mut taken));
        let outcome = broker::publish_confirmed(
            &channel,
            "",
            &queue,
            &JobEvent::batch_to_bytes(&events),
            broker::persistent_json(),
            deadline,
        )
        .await
        .map_err(|e| e.to_string());
        if let Err(why) = &outcome {
            tracing::warn!(events = events.len(), error = %why, "lifecycle events not confirmed");
        }
        for done in waiters {
            let _ = done.send(outcome.clone());
        }
    }
}

/// The events to publish, with each `running` dropped whose job's end of the same attempt is
/// in the same batch (that end then carries the start), and the confirms to send.
fn fold_starts(taken: Vec<Pending>) -> (Vec<JobEvent>, Vec<oneshot::Sender<Result<(), String>>>) {
    let mut events: Vec<JobEvent> = Vec::with_capacity(taken.len());
    let mut waiters = Vec::with_capacity(taken.len());
    // Where each job's `running` sits in `events`, to fold it when its end arrives.
    let mut starts: std::collections::HashMap<(offload_shared::JobId, u32), usize> =
        std::collections::HashMap::new();
    let mut folded = vec![false; taken.len()];
    for (mut event, done) in taken {
        if event.status == offload_shared::JobStatus::Running {
            starts.insert((event.job_id, event.attempt), events.len());
        } else if let Some(at) = starts.remove(&(event.job_id, event.attempt))
            && event.fold_start(&events[at])
        {
            folded[at] = true;
        }
        events.push(event);
        waiters.extend(done);
    }
    let mut index = 0;
    events.retain(|_| {
        let keep = !folded[index];
        index += 1;
        keep
    });
    (events, waiters)
}

fn put(headers: &mut FieldTable, key: &str, value: &str) {
    headers.insert(
        ShortString::from(key),
        AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use offload_shared::{JobId, JobStatus};

    fn ev(id: JobId, attempt: u32, status: JobStatus) -> JobEvent {
        JobEvent::now(id, attempt, status, "w1")
    }

    #[test]
    fn a_start_is_folded_only_into_the_end_of_its_own_attempt_in_the_same_batch() {
        let (a, b, c) = (JobId::new(), JobId::new(), JobId::new());
        let (done, _confirmed) = oneshot::channel();
        let (retried, _confirmed2) = oneshot::channel();
        let taken: Vec<Pending> = vec![
            (ev(a, 1, JobStatus::Running), None),
            (ev(b, 1, JobStatus::Running), None),
            (ev(c, 1, JobStatus::Running), None),
            (ev(a, 1, JobStatus::Succeeded), Some(done)),
            // Another attempt's end does not take attempt 1's start.
            (ev(c, 2, JobStatus::Retrying), Some(retried)),
        ];
        let running_a_at = taken[0].0.at;
        let (events, waiters) = fold_starts(taken);
        let seen: Vec<(JobId, u32, JobStatus)> = events
            .iter()
            .map(|e| (e.job_id, e.attempt, e.status))
            .collect();
        assert_eq!(
            seen,
            vec![
                (b, 1, JobStatus::Running),
                (c, 1, JobStatus::Running),
                (a, 1, JobStatus::Succeeded),
                (c, 2, JobStatus::Retrying),
            ]
        );
        assert_eq!(events[2].started_at, Some(running_a_at));
        assert_eq!(events[3].started_at, None);
        assert_eq!(waiters.len(), 2, "every waiting job is answered");
    }
}
