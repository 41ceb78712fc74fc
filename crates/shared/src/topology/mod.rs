//! The broker topology both binaries declare at start. Declaring is idempotent while the
//! arguments match; a mismatch closes the channel with `406 PRECONDITION_FAILED`, which
//! [`declare`] turns into a [`TopologyError::Mismatch`] that names the queue, the argument and
//! the fix.
//!
//! ```text
//! exchange <p>.jobs (direct) --"<kind>"--> the work queue of the kind's queue name:
//!     default: queue <p>.jobs      other: queue <p>.jobs.<queue>
//!     (and "job" --> <p>.jobs: messages routed before kinds had queues)
//!   --"<kind>:high"--> the work queue's high lane <work queue>:high   (see crate::priority)
//! every work queue and lane --dead-letter--> exchange <p>.dead (fanout) --> queue <p>.dead
//! exchange <p>.delay (headers, offload-delay="<ms>") --> queue <p>.delay.<ms>ms
//!     --TTL, dead-letter with the message's own routing key (its kind)--> exchange <p>.jobs
//! default exchange --"<p>.events"--> queue <p>.events   (lifecycle events, consumed by the API)
//! default exchange --"<p>.events.parked"--> queue <p>.events.parked   (events that did not parse, with the reason)
//! default exchange --"<p>.artifacts"--> queue <p>.artifacts   (artifact bytes of successes, consumed by the API)
//! default exchange --"<p>.workers"--> queue <p>.workers   (worker announcements and heartbeats, consumed by the API)
//! exchange <p>.control (fanout) --> queue <p>.control.<worker>.<random> per worker   (cancels, from the API;
//!     exclusive: declared by each worker for its connection)
//! ```
//!
//! The common part is declared by [`declare`]; a work queue by [`declare_work_queues`] (the
//! worker, for the queues it consumes; the API, for the queues of the kinds it records), and a
//! kind's binding by [`bind_kind`] (the API alone, once it has recorded the kind, so one kind is
//! never bound to two queues).
//!
//! # Layout
//! - this module: the names ([`QueuePrefix`], [`Names`]) and [`TopologyError`].
//! - `arguments`: the arguments each queue is declared with, each with why.
//! - `declare`: declaring the topology, work queues and kinds' bindings, and turning a
//!   `PRECONDITION_FAILED` into an error that names the fix.

mod arguments;
mod declare;

use std::fmt;

use crate::{
    broker::BrokerError, kinds::QueueName, priority::Priority, retry::RetryPolicy,
    settings::Settings,
};

pub use arguments::{
    MAX_LENGTH_ARGUMENT, OVERFLOW_ARGUMENT, jobs_queue_arguments, plain_queue_arguments,
    retry_queue_arguments, workers_queue_arguments,
};
pub use declare::{
    bind_kind, declare, declare_work_queues, inequivalent_argument, length_policy_command,
    unbind_kind,
};

/// Routing key every job was published with before kinds were routed to queues of their own,
/// still bound to the default work queue so such messages (and retries waiting in the old
/// `<p>.retry.<ms>ms` queues) arrive. Not a usable kind name.
pub const LEGACY_ROUTING_KEY: &str = "job";

/// Header of a retry on the delay exchange: which delay queue holds it (`"<ms>"`). Not `x-`
/// prefixed, because a headers exchange ignores such binding arguments.
pub const DELAY_HEADER: &str = "offload-delay";

/// A validated prefix for exchange and queue names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePrefix(String);

impl QueuePrefix {
    /// Accepts 1–100 characters of `A-Z a-z 0-9 . _ -`, so every derived name stays a valid,
    /// readable AMQP short string.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if raw.is_empty() || raw.len() > 100 || !raw.chars().all(ok_char) {
            return Err(format!(
                "{raw:?} is not a usable queue prefix: use 1 to 100 characters of A-Z a-z 0-9 . _ -"
            ));
        }
        Ok(QueuePrefix(raw.to_owned()))
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueuePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Names of every exchange and queue, derived from the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Exchange jobs are published to, with their kind as the routing key.
    pub jobs_exchange: String,
    /// The work queue of the queue `default` (other queues: [`Names::work_queue`]).
    pub jobs_queue: String,
    /// The high lane of the queue `default` (other queues: [`Names::lanes`]).
    pub jobs_high_lane: String,
    /// Exchange retries are published to, routed to a delay queue by [`DELAY_HEADER`].
    pub delay_exchange: String,
    /// Worker announcements and heartbeats, consumed by the API.
    pub workers_queue: String,
    /// Exchange the API broadcasts control messages (cancels) to; every worker binds a queue of
    /// its own ([`Names::control_queue`]).
    pub control_exchange: String,
    /// Exchange dead jobs are sent to.
    pub dead_exchange: String,
    /// Where dead jobs rest, with their reason, for an operator to inspect or redrive.
    pub dead_queue: String,
    /// Lifecycle events from workers to the API.
    pub events_queue: String,
    /// Event messages (or single events of a batch) the API could not read, kept with the
    /// reason in the `x-offload-reason` header for an operator.
    pub parked_events_queue: String,
    /// Artifacts (files returned beside results), one a message, from workers to the API.
    pub artifacts_queue: String,
    /// Delay queues for retries, `(delay in ms, queue name)`, shortest first.
    pub retry_queues: Vec<(u64, String)>,
    prefix: String,
}

impl Names {
    /// The names under `prefix`, with one delay queue per delay of `retry`.
    pub fn new(prefix: &QueuePrefix, retry: &RetryPolicy) -> Self {
        Names {
            retry_queues: retry
                .tiers()
                .into_iter()
                .map(|ms| (ms, format!("{prefix}.delay.{ms}ms")))
                .collect(),
            jobs_exchange: format!("{prefix}.jobs"),
            jobs_queue: format!("{prefix}.jobs"),
            jobs_high_lane: Priority::High.lane(&format!("{prefix}.jobs")),
            delay_exchange: format!("{prefix}.delay"),
            workers_queue: format!("{prefix}.workers"),
            control_exchange: format!("{prefix}.control"),
            prefix: prefix.to_string(),
            dead_exchange: format!("{prefix}.dead"),
            dead_queue: format!("{prefix}.dead"),
            events_queue: format!("{prefix}.events"),
            parked_events_queue: format!("{prefix}.events.parked"),
            artifacts_queue: format!("{prefix}.artifacts"),
        }
    }

    /// The names these settings use.
    pub fn for_settings(settings: &Settings) -> Self {
        Names::new(&settings.queue_prefix, &settings.retry_policy())
    }

    /// The work queue of `queue`: `<p>.jobs` for `default` (the name it had before kinds had
    /// queues), `<p>.jobs.<queue>` for any other.
    pub fn work_queue(&self, queue: &QueueName) -> String {
        if queue.is_default() {
            self.jobs_queue.clone()
        } else {
            format!("{}.jobs.{queue}", self.prefix)
        }
    }

    /// The work queue of `queue` and its high lane, normal first.
    pub fn lanes(&self, queue: &QueueName) -> [String; 2] {
        let work_queue = self.work_queue(queue);
        Priority::ALL.map(|p| p.lane(&work_queue))
    }

    /// True if `name` is one of this prefix's work queues or their high lanes.
    pub fn is_work_queue(&self, name: &str) -> bool {
        let (name, _) = Priority::split_lane(name);
        name == self.jobs_queue
            || name
                .strip_prefix(&self.jobs_queue)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|queue| QueueName::parse(queue).is_ok())
    }

    /// The control queue of one connection of worker `worker`: `<p>.control.<worker>.<tag>`,
    /// where `tag` tells two workers of one name apart and the name keeps only its first 64
    /// characters of `A-Z a-z 0-9 . _ -` (a queue name is at most 255 bytes). Under the prefix,
    /// so the least-privilege users of `docs/operations.md` may declare it.
    pub fn control_queue(&self, worker: &str, tag: &str) -> String {
        let worker: String = worker
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            .take(64)
            .collect();
        format!("{}.{worker}.{tag}", self.control_exchange)
    }

    /// The delay queue holding retries that wait `tier_ms`.
    pub fn retry_queue(&self, tier_ms: u64) -> Option<&str> {
        self.retry_queues
            .iter()
            .find(|(ms, _)| *ms == tier_ms)
            .map(|(_, name)| name.as_str())
    }

    /// Every queue, for tests and clean-up.
    pub fn queues(&self) -> Vec<&str> {
        let mut all = vec![
            self.jobs_queue.as_str(),
            self.jobs_high_lane.as_str(),
            self.dead_queue.as_str(),
            self.events_queue.as_str(),
            self.parked_events_queue.as_str(),
            self.artifacts_queue.as_str(),
            self.workers_queue.as_str(),
        ];
        all.extend(self.retry_queues.iter().map(|(_, q)| q.as_str()));
        all
    }

    /// Every exchange, for tests and clean-up.
    pub fn exchanges(&self) -> [&str; 4] {
        [
            &self.jobs_exchange,
            &self.dead_exchange,
            &self.delay_exchange,
            &self.control_exchange,
        ]
    }
}

/// Why the topology could not be declared.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// An existing queue or exchange was declared with other arguments.
    #[error(
        "{object} '{name}' already exists on the broker with a different '{argument}' than this \
         process declares (broker said: {broker}). Fix: {fix}"
    )]
    Mismatch {
        /// "queue" or "exchange".
        object: &'static str,
        /// Its name.
        name: String,
        /// The argument that differs.
        argument: String,
        /// The broker's own words.
        broker: String,
        /// What the operator can do.
        fix: String,
    },
    /// Any other broker error while declaring.
    #[error("declaring {object} '{name}' failed: {source}")]
    Broker {
        /// "queue", "exchange" or "binding".
        object: &'static str,
        /// Its name.
        name: String,
        /// The broker or connection error.
        #[source]
        source: Box<BrokerError>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert!(QueuePrefix::parse("offload").is_ok());
        assert!(QueuePrefix::parse("test-1.a_b").is_ok());
        for bad in ["", "has space", "ünï", &"x".repeat(101)] {
            assert!(QueuePrefix::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_carry_the_prefix() {
        let policy = RetryPolicy::new(1000, 4000);
        let names = Names::new(&QueuePrefix::parse("t1").expect("valid"), &policy);
        assert_eq!(names.jobs_queue, "t1.jobs");
        assert_eq!(names.retry_queue(2000), Some("t1.delay.2000ms"));
        assert_eq!(names.queues().len(), 10);
        assert_eq!(names.artifacts_queue, "t1.artifacts");
        assert!(!names.is_work_queue("t1.artifacts"));
        assert_eq!(names.workers_queue, "t1.workers");
        let images = QueueName::parse("images").expect("valid");
        assert_eq!(names.work_queue(&QueueName::default_queue()), "t1.jobs");
        assert_eq!(names.work_queue(&images), "t1.jobs.images");
        assert!(names.is_work_queue("t1.jobs") && names.is_work_queue("t1.jobs.images"));
        assert!(!names.is_work_queue("t1.jobsx") && !names.is_work_queue("t1.events"));
        assert_eq!(
            names.lanes(&images),
            ["t1.jobs.images", "t1.jobs.images:high"]
        );
        assert_eq!(names.jobs_high_lane, "t1.jobs:high");
        assert!(names.is_work_queue("t1.jobs:high") && names.is_work_queue("t1.jobs.images:high"));
        assert!(!names.is_work_queue("t1.events:high"));
        assert_eq!(names.parked_events_queue, "t1.events.parked");
        assert_eq!(names.dead_queue, "t1.dead");
        assert_eq!(names.events_queue, "t1.events");
    }
}
