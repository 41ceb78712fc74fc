//! The broker topology both binaries declare at start. Declaring is idempotent while the
//! arguments match; a mismatch closes the channel with `406 PRECONDITION_FAILED`, which
//! [`declare`] turns into a [`TopologyError::Mismatch`] that names the queue, the argument and
//! the fix.
//!
//! ```text
//! exchange <p>.jobs (direct) --"job"--> queue <p>.jobs --dead-letter--> exchange <p>.dead (fanout) --> queue <p>.dead
//! default exchange --"<p>.events"--> queue <p>.events   (lifecycle events, consumed by the API)
//! default exchange --"<p>.events.parked"--> queue <p>.events.parked   (events that did not parse, with the reason)
//! default exchange --"<p>.retry.<ms>ms"--> queue <p>.retry.<ms>ms --TTL, dead-letter--> exchange <p>.jobs
//! ```

use std::fmt;

use lapin::{
    Channel, Connection, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use crate::{
    broker::BrokerError,
    retry::RetryPolicy,
    settings::{QueueType, Settings},
};

/// Routing key of job messages on the jobs exchange.
pub const JOB_ROUTING_KEY: &str = "job";

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
    /// Exchange jobs are published to.
    pub jobs_exchange: String,
    /// The work queue workers consume.
    pub jobs_queue: String,
    /// Exchange dead jobs are sent to.
    pub dead_exchange: String,
    /// Where dead jobs rest, with their reason, for an operator to inspect or redrive.
    pub dead_queue: String,
    /// Lifecycle events from workers to the API.
    pub events_queue: String,
    /// Event messages (or single events of a batch) the API could not read, kept with the
    /// reason in the `x-offload-reason` header for an operator.
    pub parked_events_queue: String,
    /// Delay queues for retries, `(delay in ms, queue name)`, shortest first.
    pub retry_queues: Vec<(u64, String)>,
}

impl Names {
    /// The names under `prefix`, with one delay queue per delay of `retry`.
    pub fn new(prefix: &QueuePrefix, retry: &RetryPolicy) -> Self {
        Names {
            retry_queues: retry
                .tiers()
                .into_iter()
                .map(|ms| (ms, format!("{prefix}.retry.{ms}ms")))
                .collect(),
            jobs_exchange: format!("{prefix}.jobs"),
            jobs_queue: format!("{prefix}.jobs"),
            dead_exchange: format!("{prefix}.dead"),
            dead_queue: format!("{prefix}.dead"),
            events_queue: format!("{prefix}.events"),
            parked_events_queue: format!("{prefix}.events.parked"),
        }
    }

    /// The names these settings use.
    pub fn for_settings(settings: &Settings) -> Self {
        Names::new(&settings.queue_prefix, &settings.retry_policy())
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
            self.dead_queue.as_str(),
            self.events_queue.as_str(),
            self.parked_events_queue.as_str(),
        ];
        all.extend(self.retry_queues.iter().map(|(_, q)| q.as_str()));
        all
    }

    /// Every exchange, for tests and clean-up.
    pub fn exchanges(&self) -> [&str; 2] {
        [&self.jobs_exchange, &self.dead_exchange]
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

/// Arguments of the work queue. Settings that operators change later belong in policies; these
/// are the ones a queue must be created with.
pub fn jobs_queue_arguments(settings: &Settings, names: &Names) -> FieldTable {
    let mut args = FieldTable::default();
    // The queue type cannot change after creation; quorum is replicated and fsyncs before confirming.
    put_str(&mut args, "x-queue-type", settings.queue_type.as_str());
    // Rejected and over-limit messages go to the dead-letter exchange: nothing is dropped silently.
    put_str(&mut args, "x-dead-letter-exchange", &names.dead_exchange);
    if settings.queue_type == QueueType::Quorum {
        // A job that keeps killing its worker is dead-lettered after this many deliveries
        // instead of looping forever (set explicitly: RabbitMQ 4 defaults to 20, 3.10 to none).
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(settings.delivery_limit).unwrap_or(i32::MAX)),
        );
        // Dead-lettering itself is confirmed by the target queue, so a dead job is never lost
        // on its way to the dead-letter queue.
        put_str(&mut args, "x-dead-letter-strategy", "at-least-once");
        // Required by at-least-once dead-lettering: a full queue refuses publishes (the API
        // answers 503) rather than dropping its oldest jobs.
        put_str(&mut args, "x-overflow", "reject-publish");
    }
    args
}

/// Arguments of a delay queue: its TTL is the delay, and expired messages go back to work.
pub fn retry_queue_arguments(settings: &Settings, names: &Names, delay_ms: u64) -> FieldTable {
    let mut args = FieldTable::default();
    // Same durability and replication as the work queue: a waiting retry is still an accepted job.
    put_str(&mut args, "x-queue-type", settings.queue_type.as_str());
    // The delay itself. One TTL per queue, so messages expire in queue order.
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(i64::try_from(delay_ms).unwrap_or(i64::MAX)),
    );
    // Expired messages are dead-lettered back to the jobs exchange with the job routing key.
    put_str(&mut args, "x-dead-letter-exchange", &names.jobs_exchange);
    put_str(&mut args, "x-dead-letter-routing-key", JOB_ROUTING_KEY);
    if settings.queue_type == QueueType::Quorum {
        // The hop back to the work queue is confirmed, so a retry is never lost in transit.
        put_str(&mut args, "x-dead-letter-strategy", "at-least-once");
        // Required by at-least-once dead-lettering.
        put_str(&mut args, "x-overflow", "reject-publish");
    }
    args
}

/// Arguments of the dead-letter, events and parked-events queues: same type as the work queue, nothing else.
pub fn plain_queue_arguments(settings: &Settings) -> FieldTable {
    let mut args = FieldTable::default();
    // Same durability and replication as the jobs these queues describe.
    put_str(&mut args, "x-queue-type", settings.queue_type.as_str());
    args
}

fn put_str(args: &mut FieldTable, key: &str, value: &str) {
    args.insert(
        key.into(),
        AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
    );
}

/// Declares every exchange, queue and binding on a channel of its own. Idempotent while
/// arguments match.
#[tracing::instrument(skip_all, fields(prefix = %settings.queue_prefix))]
pub async fn declare(connection: &Connection, settings: &Settings) -> Result<Names, TopologyError> {
    let deadline = settings.broker_timeout();
    let channel = open(connection, deadline).await?;
    let outcome = tokio::time::timeout(deadline, declare_on(&channel, settings))
        .await
        .unwrap_or_else(|_| {
            Err(TopologyError::Broker {
                object: "topology",
                name: settings.queue_prefix.to_string(),
                source: Box::new(BrokerError::Timeout(
                    deadline,
                    "declare exchanges and queues",
                )),
            })
        });
    match outcome {
        Err(TopologyError::Mismatch {
            object: "queue",
            name,
            argument,
            broker,
            fix,
        }) if argument != "x-queue-type" => {
            // The broker names the first argument that differs, which for a queue of the other
            // type is rarely `x-queue-type` itself. Declaring the queue as the other type tells.
            let other = other_type_settings(settings);
            if probe_queue(connection, &name, &other, deadline).await {
                let argument = "x-queue-type".to_owned();
                let broker = format!(
                    "the queue is a {} queue; this process asks for {} ({broker})",
                    other.queue_type.as_str(),
                    settings.queue_type.as_str()
                );
                let fix = mismatch_fix("queue", &name, &argument, settings);
                Err(TopologyError::Mismatch {
                    object: "queue",
                    name,
                    argument,
                    broker,
                    fix,
                })
            } else {
                Err(TopologyError::Mismatch {
                    object: "queue",
                    name,
                    argument,
                    broker,
                    fix,
                })
            }
        }
        other => {
            if channel.status().connected() {
                let _ = tokio::time::timeout(deadline, channel.close(200, "declared".into())).await;
            }
            other
        }
    }
}

async fn open(
    connection: &Connection,
    deadline: std::time::Duration,
) -> Result<Channel, TopologyError> {
    crate::broker::with_deadline(deadline, "open a channel", connection.create_channel())
        .await
        .map_err(|source| TopologyError::Broker {
            object: "channel",
            name: "topology".into(),
            source: Box::new(source),
        })
}

fn other_type_settings(settings: &Settings) -> Settings {
    let mut other = settings.clone();
    other.queue_type = match settings.queue_type {
        QueueType::Quorum => QueueType::Classic,
        QueueType::Classic => QueueType::Quorum,
    };
    other
}

/// True if `name` accepts a declare with `settings`' arguments (it is that kind of queue).
async fn probe_queue(
    connection: &Connection,
    name: &str,
    settings: &Settings,
    deadline: std::time::Duration,
) -> bool {
    let Ok(channel) = open(connection, deadline).await else {
        return false;
    };
    let names = Names::for_settings(settings);
    let args = if name == names.jobs_queue {
        jobs_queue_arguments(settings, &names)
    } else if let Some((ms, _)) = names.retry_queues.iter().find(|(_, q)| q == name) {
        retry_queue_arguments(settings, &names, *ms)
    } else {
        plain_queue_arguments(settings)
    };
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let declared =
        tokio::time::timeout(deadline, channel.queue_declare(name.into(), options, args)).await;
    let matched = matches!(declared, Ok(Ok(_)));
    if matched {
        let _ = tokio::time::timeout(deadline, channel.close(200, "probed".into())).await;
    }
    matched
}

async fn declare_on(channel: &Channel, settings: &Settings) -> Result<Names, TopologyError> {
    let names = Names::for_settings(settings);
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };

    for (name, kind) in [
        (&names.jobs_exchange, ExchangeKind::Direct),
        (&names.dead_exchange, ExchangeKind::Fanout),
    ] {
        channel
            .exchange_declare(
                ShortString::from(name.as_str()),
                kind,
                durable_exchange,
                FieldTable::default(),
            )
            .await
            .map_err(|e| classify(e, "exchange", name, settings))?;
    }

    let mut queues = vec![
        (&names.dead_queue, plain_queue_arguments(settings)),
        (&names.events_queue, plain_queue_arguments(settings)),
        (&names.parked_events_queue, plain_queue_arguments(settings)),
        (&names.jobs_queue, jobs_queue_arguments(settings, &names)),
    ];
    for (ms, name) in &names.retry_queues {
        queues.push((name, retry_queue_arguments(settings, &names, *ms)));
    }
    for (name, args) in queues {
        channel
            .queue_declare(ShortString::from(name.as_str()), durable_queue, args)
            .await
            .map_err(|e| classify(e, "queue", name, settings))?;
    }

    for (queue, exchange, key) in [
        (&names.jobs_queue, &names.jobs_exchange, JOB_ROUTING_KEY),
        (&names.dead_queue, &names.dead_exchange, ""),
    ] {
        channel
            .queue_bind(
                ShortString::from(queue.as_str()),
                ShortString::from(exchange.as_str()),
                ShortString::from(key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| TopologyError::Broker {
                object: "binding",
                name: format!("{queue} <- {exchange}"),
                source: Box::new(BrokerError::Amqp(e, "bind")),
            })?;
    }
    Ok(names)
}

fn classify(
    source: lapin::Error,
    object: &'static str,
    name: &str,
    settings: &Settings,
) -> TopologyError {
    let broker_text = match source.kind() {
        lapin::ErrorKind::ProtocolError(e) if e.get_id() == 406 => {
            Some(e.get_message().as_str().to_owned())
        }
        _ => None,
    };
    match broker_text {
        Some(broker) => {
            let argument = inequivalent_argument(&broker)
                .unwrap_or("arguments")
                .to_owned();
            let fix = mismatch_fix(object, name, &argument, settings);
            TopologyError::Mismatch {
                object,
                name: name.to_owned(),
                argument,
                broker,
                fix,
            }
        }
        None => TopologyError::Broker {
            object,
            name: name.to_owned(),
            source: Box::new(BrokerError::Amqp(source, "declare")),
        },
    }
}

/// The argument named in the broker's `inequivalent arg 'x-…' for queue '…'` text.
pub fn inequivalent_argument(broker_text: &str) -> Option<&str> {
    let rest = broker_text.split("inequivalent arg '").nth(1)?;
    rest.split('\'').next()
}

fn mismatch_fix(object: &str, name: &str, argument: &str, settings: &Settings) -> String {
    let setting = match argument {
        "x-queue-type" => format!(
            "set OFFLOAD_QUEUE_TYPE to the type the existing queue has (this process asked for '{}'), or ",
            settings.queue_type.as_str()
        ),
        "x-delivery-limit" => format!(
            "set OFFLOAD_DELIVERY_LIMIT to the existing queue's limit (this process asked for {}), or ",
            settings.delivery_limit
        ),
        _ => String::new(),
    };
    let delete = if object == "queue" {
        format!("rabbitmqctl delete_queue {name}")
    } else {
        format!("rabbitmqadmin delete exchange name={name}")
    };
    format!(
        "{setting}drain and delete the old {object} (`{delete}`) so it is declared afresh, or use \
         another OFFLOAD_QUEUE_PREFIX."
    )
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
        assert_eq!(names.retry_queue(2000), Some("t1.retry.2000ms"));
        assert_eq!(names.queues().len(), 7);
        assert_eq!(names.parked_events_queue, "t1.events.parked");
        assert_eq!(names.dead_queue, "t1.dead");
        assert_eq!(names.events_queue, "t1.events");
    }

    #[test]
    fn the_argument_is_read_from_the_broker_text() {
        let text = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'a.jobs' in \
                    vhost '/': received 'quorum' but current is 'classic'";
        assert_eq!(inequivalent_argument(text), Some("x-queue-type"));
        assert_eq!(inequivalent_argument("something else"), None);
    }

    #[test]
    fn quorum_queues_get_a_delivery_limit_and_safe_dead_lettering() {
        let settings = Settings::from_env().expect("defaults");
        let names = Names::for_settings(&settings);
        let args = jobs_queue_arguments(&settings, &names);
        for key in [
            "x-queue-type",
            "x-dead-letter-exchange",
            "x-delivery-limit",
            "x-dead-letter-strategy",
            "x-overflow",
        ] {
            assert!(args.contains_key(key), "{key}");
        }
    }
}
