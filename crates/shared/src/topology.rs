//! The broker topology both binaries declare at start. Declaring is idempotent while the
//! arguments match; a mismatch closes the channel with `406 PRECONDITION_FAILED`, which
//! [`declare`] turns into a [`TopologyError::Mismatch`] that names the queue, the argument and
//! the fix.
//!
//! ```text
//! exchange <p>.jobs (direct) --"<kind>"--> the work queue of the kind's queue name:
//!     default: queue <p>.jobs      other: queue <p>.jobs.<queue>
//!     (and "job" --> <p>.jobs: messages routed before kinds had queues)
//! every work queue --dead-letter--> exchange <p>.dead (fanout) --> queue <p>.dead
//! exchange <p>.delay (headers, offload-delay="<ms>") --> queue <p>.delay.<ms>ms
//!     --TTL, dead-letter with the message's own routing key (its kind)--> exchange <p>.jobs
//! default exchange --"<p>.events"--> queue <p>.events   (lifecycle events, consumed by the API)
//! default exchange --"<p>.events.parked"--> queue <p>.events.parked   (events that did not parse, with the reason)
//! default exchange --"<p>.workers"--> queue <p>.workers   (worker announcements and heartbeats, consumed by the API)
//! ```
//!
//! The common part is declared by [`declare`]; a work queue by [`declare_work_queues`] (the
//! worker, for the queues it consumes; the API, for the queues of the kinds it records), and a
//! kind's binding by [`bind_kind`] (the API alone, once it has recorded the kind, so one kind is
//! never bound to two queues).

use std::fmt;

use lapin::{
    Channel, Connection, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use crate::{
    broker::BrokerError,
    kinds::{JobKind, QueueName},
    retry::RetryPolicy,
    settings::{QueueType, Settings},
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
    /// Exchange retries are published to, routed to a delay queue by [`DELAY_HEADER`].
    pub delay_exchange: String,
    /// Worker announcements and heartbeats, consumed by the API.
    pub workers_queue: String,
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
            delay_exchange: format!("{prefix}.delay"),
            workers_queue: format!("{prefix}.workers"),
            prefix: prefix.to_string(),
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

    /// The work queue of `queue`: `<p>.jobs` for `default` (the name it had before kinds had
    /// queues), `<p>.jobs.<queue>` for any other.
    pub fn work_queue(&self, queue: &QueueName) -> String {
        if queue.is_default() {
            self.jobs_queue.clone()
        } else {
            format!("{}.jobs.{queue}", self.prefix)
        }
    }

    /// True if `name` is one of this prefix's work queues.
    pub fn is_work_queue(&self, name: &str) -> bool {
        name == self.jobs_queue
            || name
                .strip_prefix(&self.jobs_queue)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|queue| QueueName::parse(queue).is_ok())
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
            self.workers_queue.as_str(),
        ];
        all.extend(self.retry_queues.iter().map(|(_, q)| q.as_str()));
        all
    }

    /// Every exchange, for tests and clean-up.
    pub fn exchanges(&self) -> [&str; 3] {
        [
            &self.jobs_exchange,
            &self.dead_exchange,
            &self.delay_exchange,
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

/// Arguments of a delay queue: its TTL is the delay, and expired messages go back to work,
/// routed by the routing key they were published with: their kind.
pub fn retry_queue_arguments(settings: &Settings, names: &Names, delay_ms: u64) -> FieldTable {
    let mut args = FieldTable::default();
    // Same durability and replication as the work queue: a waiting retry is still an accepted job.
    put_str(&mut args, "x-queue-type", settings.queue_type.as_str());
    // The delay itself. One TTL per queue, so messages expire in queue order.
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(i64::try_from(delay_ms).unwrap_or(i64::MAX)),
    );
    // Expired messages are dead-lettered back to the jobs exchange; with no
    // x-dead-letter-routing-key they keep their own routing key, the kind, so each returns to
    // its kind's work queue.
    put_str(&mut args, "x-dead-letter-exchange", &names.jobs_exchange);
    if settings.queue_type == QueueType::Quorum {
        // The hop back to the work queue is confirmed, so a retry is never lost in transit.
        put_str(&mut args, "x-dead-letter-strategy", "at-least-once");
        // Required by at-least-once dead-lettering.
        put_str(&mut args, "x-overflow", "reject-publish");
    }
    args
}

/// Arguments of the workers queue: announcements are only worth their freshness.
pub fn workers_queue_arguments(settings: &Settings) -> FieldTable {
    let mut args = plain_queue_arguments(settings);
    // A heartbeat nobody read within a minute is stale (the next one says more), so an API
    // that is down does not come back to a backlog of them.
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(60_000));
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
    let args = if names.is_work_queue(name) {
        jobs_queue_arguments(settings, &names)
    } else if name == names.workers_queue {
        workers_queue_arguments(settings)
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
        (&names.delay_exchange, ExchangeKind::Headers),
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
        (&names.workers_queue, workers_queue_arguments(settings)),
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

    bind(
        channel,
        &names.jobs_queue,
        &names.jobs_exchange,
        LEGACY_ROUTING_KEY,
        FieldTable::default(),
    )
    .await?;
    bind(
        channel,
        &names.dead_queue,
        &names.dead_exchange,
        "",
        FieldTable::default(),
    )
    .await?;
    for (ms, queue) in &names.retry_queues {
        let mut args = FieldTable::default();
        // Every header listed must match: the delay of this queue.
        put_str(&mut args, "x-match", "all");
        put_str(&mut args, DELAY_HEADER, &ms.to_string());
        bind(channel, queue, &names.delay_exchange, "", args).await?;
    }
    Ok(names)
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    args: FieldTable,
) -> Result<(), TopologyError> {
    channel
        .queue_bind(
            ShortString::from(queue),
            ShortString::from(exchange),
            ShortString::from(key),
            QueueBindOptions::default(),
            args,
        )
        .await
        .map_err(|e| TopologyError::Broker {
            object: "binding",
            name: format!("{queue} <- {exchange} ({key})"),
            source: Box::new(BrokerError::Amqp(e, "bind")),
        })
}

/// Runs `step` on a channel of its own under the broker deadline, then closes the channel.
async fn on_own_channel<'a, T, F>(
    connection: &'a Connection,
    settings: &'a Settings,
    what: &'static str,
    step: impl FnOnce(Channel) -> F,
) -> Result<T, TopologyError>
where
    F: Future<Output = Result<T, TopologyError>> + 'a,
{
    let deadline = settings.broker_timeout();
    let channel = open(connection, deadline).await?;
    let outcome = tokio::time::timeout(deadline, step(channel.clone()))
        .await
        .unwrap_or_else(|_| {
            Err(TopologyError::Broker {
                object: "topology",
                name: settings.queue_prefix.to_string(),
                source: Box::new(BrokerError::Timeout(deadline, what)),
            })
        });
    if channel.status().connected() {
        let _ = tokio::time::timeout(deadline, channel.close(200, "declared".into())).await;
    }
    outcome
}

/// Declares the work queues of `queues` (idempotent while arguments match), with the same
/// arguments as the default one. Returns their names, in order.
#[tracing::instrument(skip_all, fields(prefix = %settings.queue_prefix))]
pub async fn declare_work_queues(
    connection: &Connection,
    settings: &Settings,
    queues: &[QueueName],
) -> Result<Vec<String>, TopologyError> {
    let names = Names::for_settings(settings);
    on_own_channel(
        connection,
        settings,
        "declare work queues",
        |channel| async move {
            let durable = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            let mut declared = Vec::with_capacity(queues.len());
            for queue in queues {
                let name = names.work_queue(queue);
                channel
                    .queue_declare(
                        ShortString::from(name.as_str()),
                        durable,
                        jobs_queue_arguments(settings, &names),
                    )
                    .await
                    .map_err(|e| classify(e, "queue", &name, settings))?;
                declared.push(name);
            }
            Ok(declared)
        },
    )
    .await
}

/// Declares `queue`'s work queue and routes `kind`'s jobs to it. Only the API binds, once it has
/// recorded the kind: a kind is never bound to two queues.
#[tracing::instrument(skip_all, fields(prefix = %settings.queue_prefix, %kind, %queue))]
pub async fn bind_kind(
    connection: &Connection,
    settings: &Settings,
    kind: &JobKind,
    queue: &QueueName,
) -> Result<(), TopologyError> {
    let names = Names::for_settings(settings);
    let work_queue = declare_work_queues(connection, settings, std::slice::from_ref(queue))
        .await?
        .remove(0);
    on_own_channel(connection, settings, "bind a kind", |channel| async move {
        bind(
            &channel,
            &work_queue,
            &names.jobs_exchange,
            kind.as_str(),
            FieldTable::default(),
        )
        .await
    })
    .await
}

/// Stops routing `kind`'s jobs to `queue` (when a kind moved to another queue).
#[tracing::instrument(skip_all, fields(prefix = %settings.queue_prefix, %kind, %queue))]
pub async fn unbind_kind(
    connection: &Connection,
    settings: &Settings,
    kind: &JobKind,
    queue: &QueueName,
) -> Result<(), TopologyError> {
    let names = Names::for_settings(settings);
    let work_queue = names.work_queue(queue);
    on_own_channel(
        connection,
        settings,
        "unbind a kind",
        |channel| async move {
            channel
                .queue_unbind(
                    ShortString::from(work_queue.as_str()),
                    ShortString::from(names.jobs_exchange.as_str()),
                    ShortString::from(kind.as_str()),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| TopologyError::Broker {
                    object: "binding",
                    name: format!("{work_queue} <- {} ({kind})", names.jobs_exchange),
                    source: Box::new(BrokerError::Amqp(e, "unbind")),
                })
        },
    )
    .await
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
        assert_eq!(names.retry_queue(2000), Some("t1.delay.2000ms"));
        assert_eq!(names.queues().len(), 8);
        assert_eq!(names.workers_queue, "t1.workers");
        let images = QueueName::parse("images").expect("valid");
        assert_eq!(names.work_queue(&QueueName::default_queue()), "t1.jobs");
        assert_eq!(names.work_queue(&images), "t1.jobs.images");
        assert!(names.is_work_queue("t1.jobs") && names.is_work_queue("t1.jobs.images"));
        assert!(!names.is_work_queue("t1.jobsx") && !names.is_work_queue("t1.events"));
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
