//! Publishing jobs: persistent, mandatory, confirmed, with a deadline; and parking lifecycle
//! events that do not parse.

use std::{sync::Arc, time::Duration};

use lapin::{
    Channel, ConnectionStatus,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use offload_shared::{
    JobEnvelope, Priority,
    broker::{self, BrokerError, Confirm, REASON_HEADER, REQUEST_ID_HEADER},
    control::{CONTROL_TYPE, ControlMessage},
    frames::MessageLimits,
    topology::Names,
};

/// Publishes job envelopes on one channel in confirm mode, shared by all requests.
#[derive(Debug, Clone)]
pub struct JobPublisher {
    channel: Channel,
    connection: ConnectionStatus,
    exchange: String,
    parked_queue: String,
    deadline: Duration,
    limits: MessageLimits,
    names: Arc<Names>,
}

impl JobPublisher {
    /// A publisher sending to the jobs exchange of `names` on `channel` (already in confirm
    /// mode) of the connection whose status is `connection`; unreadable events go to the parked
    /// queue. Every message is checked against `limits` before it is sent.
    pub fn new(
        channel: Channel,
        connection: ConnectionStatus,
        names: &Names,
        deadline: Duration,
        limits: MessageLimits,
    ) -> Self {
        JobPublisher {
            channel,
            connection,
            exchange: names.jobs_exchange.clone(),
            parked_queue: names.parked_events_queue.clone(),
            deadline,
            limits,
            names: Arc::new(names.clone()),
        }
    }

    /// The topology's names (a kind's work queue is `names().work_queue(..)`).
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Publishes `job` to the lane of `priority` (routing key `<kind>` or `<kind>:high`, with
    /// the AMQP priority a high job carries) and waits up to the publish deadline for the
    /// broker's confirm. `request_id` travels in the message headers to the worker's logs.
    // Debug: a batch publishes a thousand jobs, and a span each costs real CPU.
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = %job.id))]
    pub async fn publish(
        &self,
        job: &JobEnvelope,
        priority: Priority,
        request_id: Option<&str>,
    ) -> Confirm {
        let timestamp = u64::try_from(job.submitted_at.unix_timestamp()).unwrap_or(0);
        let mut properties = broker::persistent_json()
            .with_message_id(ShortString::from(job.id.to_string()))
            .with_type(ShortString::from(job.kind.as_str()))
            .with_timestamp(timestamp);
        if let Some(amqp) = priority.amqp() {
            properties = properties.with_priority(amqp);
        }
        if let Some(id) = request_id {
            let mut headers = FieldTable::default();
            headers.insert(
                ShortString::from(REQUEST_ID_HEADER),
                AMQPValue::LongString(LongString::from(id.as_bytes().to_vec())),
            );
            properties = properties.with_headers(headers);
        }
        let body = job.to_bytes();
        // Refused here, for sure, rather than sent and answered by the broker closing the
        // connection every request shares.
        if let Err(e) = self.limits.check(&properties, body.len()) {
            return Confirm::Refused(e);
        }
        broker::publish_tracked(
            &self.channel,
            &self.exchange,
            &priority.routing_key(&job.kind),
            &body,
            properties,
            self.deadline,
        )
        .await
    }

    /// Stores an event (or event message) that does not parse in the parked-events queue, with
    /// the reason in its `x-offload-reason` header; returns once the broker confirmed it.
    pub async fn park(&self, body: &[u8], reason: &str) -> Result<(), BrokerError> {
        let mut headers = FieldTable::default();
        // Bounded: a header travels in one frame, and a reason quotes what did not parse.
        let reason: String = reason.chars().take(1000).collect();
        headers.insert(
            ShortString::from(REASON_HEADER),
            AMQPValue::LongString(LongString::from(reason.into_bytes())),
        );
        let properties = broker::persistent_json().with_headers(headers);
        self.limits.check(&properties, body.len())?;
        broker::publish_confirmed(
            &self.channel,
            "",
            &self.parked_queue,
            body,
            properties,
            self.deadline,
        )
        .await
    }

    /// Sends `message` to every worker (the control exchange); returns once the broker
    /// confirmed it. Transient: a worker not connected now hears a cancel when it is repeated.
    pub async fn broadcast(&self, message: &ControlMessage) -> Result<(), BrokerError> {
        let properties = lapin::BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_type(ShortString::from(CONTROL_TYPE));
        let body = message.to_bytes();
        self.limits.check(&properties, body.len())?;
        broker::publish_broadcast(
            &self.channel,
            &self.names.control_exchange,
            &body,
            properties,
            self.deadline,
        )
        .await
    }

    /// The publishing channel, to watch for its loss.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// True while the publishing channel is open.
    pub fn is_connected(&self) -> bool {
        self.channel.status().connected()
    }

    /// True while the broker blocks this connection's publishes (a memory or disk alarm).
    pub fn is_blocked(&self) -> bool {
        self.connection.blocked()
    }
}
