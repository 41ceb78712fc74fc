//! Publishing jobs: persistent, mandatory, confirmed, with a deadline.

use std::time::Duration;

use lapin::{
    Channel,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use offload_shared::{
    JobEnvelope,
    broker::{self, BrokerError, REQUEST_ID_HEADER},
    topology::JOB_ROUTING_KEY,
};

/// Publishes job envelopes on one channel in confirm mode, shared by all requests.
#[derive(Debug, Clone)]
pub struct JobPublisher {
    channel: Channel,
    exchange: String,
    deadline: Duration,
}

impl JobPublisher {
    /// A publisher sending to `exchange` on `channel` (already in confirm mode).
    pub fn new(channel: Channel, exchange: String, deadline: Duration) -> Self {
        JobPublisher {
            channel,
            exchange,
            deadline,
        }
    }

    /// Publishes `job` and returns once the broker has confirmed it is stored in a queue.
    /// `request_id` travels in the message headers to the worker's logs.
    // Debug: a batch publishes a thousand jobs, and a span each costs real CPU.
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = %job.id))]
    pub async fn publish(
        &self,
        job: &JobEnvelope,
        request_id: Option<&str>,
    ) -> Result<(), BrokerError> {
        let timestamp = u64::try_from(job.submitted_at.unix_timestamp()).unwrap_or(0);
        let mut properties = broker::persistent_json()
            .with_message_id(ShortString::from(job.id.to_string()))
            .with_type(ShortString::from(job.kind.as_str()))
            .with_timestamp(timestamp);
        if let Some(id) = request_id {
            let mut headers = FieldTable::default();
            headers.insert(
                ShortString::from(REQUEST_ID_HEADER),
                AMQPValue::LongString(LongString::from(id.as_bytes().to_vec())),
            );
            properties = properties.with_headers(headers);
        }
        broker::publish_confirmed(
            &self.channel,
            &self.exchange,
            JOB_ROUTING_KEY,
            &job.to_bytes(),
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
}
