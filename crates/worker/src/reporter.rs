//! Reporting outcomes to the broker: lifecycle events to the events queue and dead jobs, with
//! their reason, to the dead-letter exchange. Every publish is confirmed before the job's
//! delivery is acknowledged.
//!
//! Events go out in batches: one task takes every event waiting (up to [`MAX_EVENTS`]), folds a
//! job's `running` into its end when both wait together, publishes them as one message and
//! answers each waiting job once the broker confirmed it. An idle worker's event goes out at
//! once, alone; under load, the events that pile up while one batch is being confirmed share the
//! next, so the broker stores one message for many jobs. A message also stops taking events at
//! about [`MAX_BATCH_BYTES`], far below the broker's message size limit, so a few large results
//! split the batch instead of making one message the broker refuses; an event larger than that
//! goes alone.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};

use lapin::{
    BasicProperties, Channel,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use offload_shared::{
    JobEnvelope, JobEvent, JobKind, Priority,
    announce::{ANNOUNCEMENT_TYPE, Announcement},
    artifacts::{self, ArtifactMeta},
    broker::{self, BrokerError},
    frames::MessageLimits,
    retry::RetryDelay,
    topology::{DELAY_HEADER, Names},
};

pub use offload_shared::broker::REASON_HEADER;
/// Header carrying which worker dead-lettered it.
pub const WORKER_HEADER: &str = "x-offload-worker";

/// Most events in one message.
pub const MAX_EVENTS: usize = 256;

/// A message takes no further event once it holds this many bytes: a quarter of RabbitMQ 4.x's
/// default `max_message_size` (16 MiB). An event that is larger alone (a result of up to
/// `OFFLOAD_MAX_RESULT_BYTES`, at most 8 MiB) is sent in a message of its own.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Longest `x-offload-reason` header a dead letter gets, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

/// Who waits for an event's confirm.
type Waiter = oneshot::Sender<Result<(), String>>;

/// An event for the batcher, and who waits for its confirm (nobody, for `running`).
type Pending = (JobEvent, Option<Waiter>);

/// One message's worth of events: the body (a JSON array) and who waits for its confirm.
struct Batch {
    body: Vec<u8>,
    events: usize,
    waiters: Vec<Waiter>,
}

/// Publishes events and dead letters on one confirm-mode channel.
#[derive(Debug, Clone)]
pub struct Reporter {
    channel: Channel,
    events: mpsc::UnboundedSender<Pending>,
    dead_exchange: Arc<str>,
    names: Arc<Names>,
    worker: Arc<str>,
    deadline: Duration,
    limits: MessageLimits,
}

impl Reporter {
    /// A reporter for `worker` publishing on `channel` (already in confirm mode); every
    /// message is checked against `limits` before it is sent, so one that would make the broker
    /// close the connection fails alone. Starts the event batcher, which stops when the last
    /// clone of the reporter is dropped.
    pub fn new(
        channel: Channel,
        names: &Names,
        worker: Arc<str>,
        deadline: Duration,
        limits: MessageLimits,
    ) -> Self {
        let (events, waiting) = mpsc::unbounded_channel();
        tokio::spawn(batch_events(
            channel.clone(),
            names.events_queue.as_str().into(),
            deadline,
            limits,
            waiting,
        ));
        Reporter {
            channel,
            events,
            dead_exchange: names.dead_exchange.as_str().into(),
            names: Arc::new(names.clone()),
            worker,
            deadline,
            limits,
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
        // Only a result can make an event large; one the broker would refuse is refused here,
        // for sure, so the job can end with the reason instead of being requeued forever.
        if event.result.is_some() {
            let size = serde_json::to_vec(&event).map_or(0, |b| b.len()) + 2;
            if size > self.limits.max_message_bytes {
                return Err(BrokerError::MessageTooLarge {
                    size,
                    limit: self.limits.max_message_bytes,
                });
            }
        }
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

    /// Publishes one artifact of a successful attempt to the artifacts queue (its bytes as the
    /// body, its media type as the content type, who it belongs to in the headers) and waits for
    /// the broker's confirm. The job's success event goes out only after every artifact of it
    /// was confirmed, so the API never lists an artifact the broker does not hold.
    #[tracing::instrument(skip_all, fields(job_id = %job_id, attempt, name = %meta.name))]
    pub async fn artifact(
        &self,
        job_id: offload_shared::JobId,
        attempt: u32,
        meta: &ArtifactMeta,
        bytes: &[u8],
    ) -> Result<(), BrokerError> {
        let mut headers = FieldTable::default();
        put(&mut headers, artifacts::JOB_ID_HEADER, &job_id.to_string());
        put(
            &mut headers,
            artifacts::ATTEMPT_HEADER,
            &attempt.to_string(),
        );
        put(&mut headers, artifacts::NAME_HEADER, &meta.name);
        put(&mut headers, artifacts::SHA256_HEADER, &meta.sha256);
        put(&mut headers, artifacts::SIZE_HEADER, &meta.size.to_string());
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from(meta.content_type.as_str()))
            .with_headers(headers);
        self.limits.check(&properties, bytes.len())?;
        broker::publish_confirmed(
            &self.channel,
            "",
            &self.names.artifacts_queue,
            bytes,
            properties,
            self.deadline,
        )
        .await
    }

    /// Publishes a `running` event (a start, or a progress report) without holding up the job;
    /// if the job ends before the batch goes out, a start is folded into the end's event. A
    /// failure is only logged, since a later event of the same job supersedes it.
    pub fn running(&self, running: JobEvent) {
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
        // Bounded: a header travels in one frame, and a reason may quote a handler's error.
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        put(&mut headers, REASON_HEADER, &reason);
        put(&mut headers, WORKER_HEADER, &self.worker);
        let properties = original.clone().with_headers(headers).with_delivery_mode(2);
        self.limits.check(&properties, body.len())?;
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
        priority: Priority,
        delay: RetryDelay,
    ) -> Result<(), BrokerError> {
        if self.names.retry_queue(delay.tier_ms).is_none() {
            return Err(BrokerError::Returned(format!(
                "no delay queue for {} ms",
                delay.tier_ms
            )));
        }
        // The delay exchange picks the delay queue by this header; the routing key (the kind,
        // with its priority's suffix) takes the job back to its lane when it expires.
        let mut headers = republished_headers(original);
        put(&mut headers, DELAY_HEADER, &delay.tier_ms.to_string());
        let properties = with_priority(original, priority)
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_expiration(ShortString::from(delay.jittered_ms.to_string()));
        let body = next.to_bytes();
        self.limits.check(&properties, body.len())?;
        broker::publish_confirmed(
            &self.channel,
            &self.names.delay_exchange,
            &priority.routing_key(&next.kind),
            &body,
            properties,
            self.deadline,
        )
        .await
    }

    /// Sends a delivery of a kind this worker cannot run back to its kind's queue unchanged
    /// (same body, same attempt) through the delay queue of `tier_ms`, the shortest: it waits
    /// there, then the routing key (the kind, with its priority's suffix) takes it to the lane
    /// the kind is bound to.
    /// Waits for the broker's confirm.
    #[tracing::instrument(skip_all, fields(%kind))]
    pub async fn return_to_queue(
        &self,
        kind: &JobKind,
        body: &[u8],
        original: &BasicProperties,
        priority: Priority,
        tier_ms: u64,
    ) -> Result<(), BrokerError> {
        let mut headers = republished_headers(original);
        put(&mut headers, DELAY_HEADER, &tier_ms.to_string());
        let properties = with_priority(original, priority)
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_expiration(ShortString::from(tier_ms.to_string()));
        self.limits.check(&properties, body.len())?;
        broker::publish_confirmed(
            &self.channel,
            &self.names.delay_exchange,
            &priority.routing_key(kind),
            body,
            properties,
            self.deadline,
        )
        .await
    }

    /// Publishes an announcement (or heartbeat) to the workers queue through the default
    /// exchange, transient (the next heartbeat replaces a lost one), and waits for the confirm.
    #[tracing::instrument(skip_all, fields(state = ?announcement.state))]
    pub async fn announce(&self, announcement: &Announcement) -> Result<(), BrokerError> {
        let properties = BasicProperties::default()
            .with_delivery_mode(1)
            .with_content_type("application/json".into())
            .with_type(ANNOUNCEMENT_TYPE.into());
        let body = announcement.to_bytes();
        self.limits.check(&properties, body.len())?;
        broker::publish_confirmed(
            &self.channel,
            "",
            &self.names.workers_queue,
            &body,
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

/// The batcher: takes what waits, folds, publishes it in messages of at most about
/// [`MAX_BATCH_BYTES`] each, answers each waiter once its message is confirmed.
async fn batch_events(
    channel: Channel,
    queue: Arc<str>,
    deadline: Duration,
    limits: MessageLimits,
    mut waiting: mpsc::UnboundedReceiver<Pending>,
) {
    let mut taken = Vec::with_capacity(MAX_EVENTS);
    while waiting.recv_many(&mut taken, MAX_EVENTS).await > 0 {
        let folded = fold_starts(std::mem::take(&mut taken));
        for batch in split(folded, MAX_BATCH_BYTES) {
            let properties = broker::persistent_json();
            let outcome = match limits.check(&properties, batch.body.len()) {
                Ok(()) => {
                    broker::publish_confirmed(
                        &channel,
                        "",
                        &queue,
                        &batch.body,
                        properties,
                        deadline,
                    )
                    .await
                }
                Err(e) => Err(e),
            }
            .map_err(|e| e.to_string());
            if let Err(why) = &outcome {
                tracing::warn!(events = batch.events, bytes = batch.body.len(), error = %why, "lifecycle events not confirmed");
            }
            for done in batch.waiters {
                let _ = done.send(outcome.clone());
            }
        }
    }
}

/// The events to publish, each with its waiter, with each `running` dropped whose job's end of
/// the same attempt is in the same batch (that end then carries the start).
fn fold_starts(taken: Vec<Pending>) -> Vec<Pending> {
    let mut events: Vec<Pending> = Vec::with_capacity(taken.len());
    // Where each job's `running` sits in `events`, to fold it when its end arrives.
    let mut starts: std::collections::HashMap<(offload_shared::JobId, u32), usize> =
        std::collections::HashMap::new();
    let mut folded = vec![false; taken.len()];
    for (mut event, done) in taken {
        if event.status == offload_shared::JobStatus::Running && !event.is_report() {
            starts.insert((event.job_id, event.attempt), events.len());
        } else if let Some(at) = starts.remove(&(event.job_id, event.attempt))
            && event.fold_start(&events[at].0)
        {
            folded[at] = true;
        }
        events.push((event, done));
    }
    let mut index = 0;
    events.retain(|_| {
        let keep = !folded[index];
        index += 1;
        keep
    });
    events
}

/// Splits `events`, in order, into messages (JSON arrays, as [`JobEvent::batch_to_bytes`] writes
/// them): a message takes the next event only while it stays within `max_bytes`; an event larger
/// than that on its own gets a message alone. Each event is serialised once.
fn split(events: Vec<Pending>, max_bytes: usize) -> Vec<Batch> {
    let mut batches = Vec::new();
    let mut current: Option<Batch> = None;
    for (event, done) in events {
        let bytes = event.to_bytes();
        let mut batch = match current.take() {
            // The body ends with `]`: it becomes `,`, then the event and `]` follow, so the
            // body grows by the event's length plus one.
            Some(mut batch) if batch.body.len() + bytes.len() < max_bytes => {
                batch.body.pop();
                batch.body.push(b',');
                batch
            }
            full => {
                batches.extend(full);
                Batch {
                    body: vec![b'['],
                    events: 0,
                    waiters: Vec::new(),
                }
            }
        };
        batch.body.extend_from_slice(&bytes);
        batch.body.push(b']');
        batch.events += 1;
        batch.waiters.extend(done);
        current = Some(batch);
    }
    batches.extend(current);
    batches
}

/// `original` with the AMQP priority of `priority` (a high job keeps it when it is republished,
/// even if it reached its lane without one).
fn with_priority(original: &BasicProperties, priority: Priority) -> BasicProperties {
    match priority.amqp() {
        Some(amqp) => original.clone().with_priority(amqp),
        None => original.clone(),
    }
}

/// The headers a delivery's message keeps when it is published again as a new message: all but
/// the quorum queue's `x-delivery-count`, which counts deliveries of the old message and would
/// make the new one look redelivered (and near the delivery limit) on its first delivery.
fn republished_headers(original: &BasicProperties) -> FieldTable {
    let headers = original.headers().clone().unwrap_or_default();
    FieldTable::from(
        headers
            .inner()
            .iter()
            .filter(|(k, _)| k.as_str() != "x-delivery-count")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
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

    #[test]
    fn a_republished_message_does_not_carry_the_old_delivery_count() {
        let mut headers = FieldTable::default();
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
        put(&mut headers, "x-request-id", "r1");
        let kept = republished_headers(&BasicProperties::default().with_headers(headers));
        assert!(!kept.contains_key("x-delivery-count"));
        assert!(kept.contains_key("x-request-id"));
    }
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
        let folded = fold_starts(taken);
        let seen: Vec<(JobId, u32, JobStatus)> = folded
            .iter()
            .map(|(e, _)| (e.job_id, e.attempt, e.status))
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
        assert_eq!(folded[2].0.started_at, Some(running_a_at));
        assert_eq!(folded[3].0.started_at, None);
        let waiting = folded.iter().filter(|(_, done)| done.is_some()).count();
        assert_eq!(waiting, 2, "every waiting job is answered");
    }

    fn with_result(bytes: usize) -> JobEvent {
        let mut event = ev(JobId::new(), 1, JobStatus::Succeeded);
        event.result = Some(serde_json::Value::String("x".repeat(bytes)));
        event
    }

    #[test]
    fn a_batch_stops_taking_events_at_its_byte_limit_and_a_large_event_goes_alone() {
        let max = 10_000;
        let sizes = [100, 100, 4_000, 4_000, 3_000, 20_000, 100, 100];
        let mut events = Vec::new();
        let mut _confirms = Vec::new();
        for size in sizes {
            let (done, confirmed) = oneshot::channel();
            events.push((with_result(size), Some(done)));
            _confirms.push(confirmed);
        }
        let expected =
            JobEvent::batch_to_bytes(&events.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>());
        let batches = split(events, max);

        let counts: Vec<usize> = batches.iter().map(|b| b.events).collect();
        assert_eq!(
            counts,
            vec![4, 1, 1, 2],
            "in order, split where the next would not fit"
        );
        for batch in &batches {
            assert_eq!(
                batch.waiters.len(),
                batch.events,
                "each event's waiter rides with it"
            );
            let parsed: Vec<JobEvent> = JobEvent::parse_message(&batch.body)
                .into_iter()
                .collect::<Result<_, _>>()
                .expect("each body parses");
            assert_eq!(parsed.len(), batch.events);
            if batch.events > 1 {
                assert!(batch.body.len() <= max, "{} bytes", batch.body.len());
            }
        }
        assert!(batches[2].body.len() > max, "the large event alone");
        // Joined back, the messages hold exactly what one array of every event would.
        let mut joined: Vec<JobEvent> = Vec::new();
        for batch in &batches {
            for event in JobEvent::parse_message(&batch.body) {
                joined.push(event.expect("parses"));
            }
        }
        assert_eq!(
            JobEvent::batch_to_bytes(&joined),
            expected,
            "nothing lost, reordered or changed"
        );
    }

    #[test]
    fn small_events_share_one_message_byte_for_byte_as_before() {
        let events: Vec<Pending> = (0..MAX_EVENTS)
            .map(|_| (ev(JobId::new(), 1, JobStatus::Succeeded), None))
            .collect();
        let expected =
            JobEvent::batch_to_bytes(&events.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>());
        let batches = split(events, MAX_BATCH_BYTES);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].body, expected);
        assert!(split(Vec::new(), MAX_BATCH_BYTES).is_empty());
    }
}
