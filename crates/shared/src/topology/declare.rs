//! Declaring: the common topology ([`declare`]), work queues ([`declare_work_queues`]) and kinds'
//! bindings ([`bind_kind`], [`unbind_kind`]), each on a channel of its own under the broker
//! deadline. A `406 PRECONDITION_FAILED` becomes a [`TopologyError::Mismatch`] naming the fix.

use lapin::{
    Channel, Connection, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
};

use crate::{
    broker::BrokerError,
    kinds::{JobKind, QueueName},
    priority::Priority,
    settings::{QueueType, Settings},
};

use super::{
    DELAY_HEADER, LEGACY_ROUTING_KEY, Names, TopologyError,
    arguments::{
        MAX_LENGTH_ARGUMENT, OVERFLOW_ARGUMENT, jobs_queue_arguments, plain_queue_arguments,
        put_str, retry_queue_arguments, workers_queue_arguments,
    },
};

/// Declares every exchange, queue and binding on a channel of its own. Idempotent while
/// arguments match.
#[tracing::instrument(skip_all, fields(prefix = %settings.queue_prefix))]
pub async fn declare(connection: &Connection, settings: &Settings) -> Result<Names, TopologyError> {
    let outcome = on_own_channel(
        connection,
        settings,
        "declare exchanges and queues",
        |channel| async move { declare_on(connection, &channel, settings).await },
    )
    .await;
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
            let deadline = settings.broker_timeout();
            let (argument, broker, fix) = if probe_queue(connection, &name, &other, deadline).await
            {
                let argument = "x-queue-type".to_owned();
                let broker = format!(
                    "the queue is a {} queue; this process asks for {} ({broker})",
                    other.queue_type.as_str(),
                    settings.queue_type.as_str()
                );
                let fix = mismatch_fix("queue", &name, &argument, settings);
                (argument, broker, fix)
            } else {
                (argument, broker, fix)
            };
            Err(TopologyError::Mismatch {
                object: "queue",
                name,
                argument,
                broker,
                fix,
            })
        }
        other => other,
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
    let names = Names::for_settings(settings);
    let variants = if names.is_work_queue(name) {
        // A work queue declared before the length limit has neither or only one of its
        // arguments: each variant is tried.
        let all = jobs_queue_arguments(settings, &names);
        let no_length = without(&all, MAX_LENGTH_ARGUMENT);
        let neither = without(&no_length, OVERFLOW_ARGUMENT);
        vec![all, no_length, neither]
    } else if name == names.workers_queue {
        vec![workers_queue_arguments(settings)]
    } else if let Some((ms, _)) = names.retry_queues.iter().find(|(_, q)| q == name) {
        vec![retry_queue_arguments(settings, &names, *ms)]
    } else {
        vec![plain_queue_arguments(settings)]
    };
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for args in variants {
        let Ok(channel) = open(connection, deadline).await else {
            return false;
        };
        let declared =
            tokio::time::timeout(deadline, channel.queue_declare(name.into(), options, args)).await;
        if matches!(declared, Ok(Ok(_))) {
            let _ = tokio::time::timeout(deadline, channel.close(200, "probed".into())).await;
            return true;
        }
    }
    false
}

/// `args` without `key`.
fn without(args: &FieldTable, key: &str) -> FieldTable {
    let mut out = FieldTable::default();
    for (k, v) in args.inner() {
        if k.as_str() != key {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

async fn declare_on(
    connection: &Connection,
    channel: &Channel,
    settings: &Settings,
) -> Result<Names, TopologyError> {
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
        (&names.control_exchange, ExchangeKind::Fanout),
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
        (&names.artifacts_queue, plain_queue_arguments(settings)),
        (&names.workers_queue, workers_queue_arguments(settings)),
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
    declare_work_queue(connection, settings, &names, &names.jobs_queue).await?;

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

/// Declares the work queue `name` and its high lane, with the same arguments.
async fn declare_work_queue(
    connection: &Connection,
    settings: &Settings,
    names: &Names,
    name: &str,
) -> Result<(), TopologyError> {
    for priority in Priority::ALL {
        declare_one_work_queue(connection, settings, names, &priority.lane(name)).await?;
    }
    Ok(())
}

/// Declares the work queue (or lane) `name` (on channels of its own: a mismatch closes its
/// channel).
/// A queue that exists with another length limit, or none (declared before the limit was
/// added), is kept with what it has, once every other argument (type, delivery limit,
/// dead-lettering) is checked by declaring it with the queue's own length arguments: the
/// broker's limit then comes from a policy, and the API's ready-count check still refuses
/// submits before the queue grows past the setting.
async fn declare_one_work_queue(
    connection: &Connection,
    settings: &Settings,
    names: &Names,
    name: &str,
) -> Result<(), TopologyError> {
    let deadline = settings.broker_timeout();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut args = jobs_queue_arguments(settings, names);
    let mut kept: Vec<(String, String)> = Vec::new();
    loop {
        let channel = open(connection, deadline).await?;
        let declared = channel
            .queue_declare(ShortString::from(name), durable, args.clone())
            .await
            .map_err(|e| classify(e, "queue", name, settings));
        if channel.status().connected() {
            let _ = tokio::time::timeout(deadline, channel.close(200, "declared".into())).await;
        }
        match declared {
            Ok(_) => break,
            Err(TopologyError::Mismatch {
                argument, broker, ..
            }) if (argument == MAX_LENGTH_ARGUMENT || argument == OVERFLOW_ARGUMENT)
                && !kept.iter().any(|(a, _)| *a == argument) =>
            {
                args = with_current(&args, &argument, &broker);
                kept.push((argument, broker));
            }
            Err(e) => return Err(e),
        }
    }
    if !kept.is_empty() {
        tracing::warn!(
            queue = name,
            broker = ?kept,
            "the work queue exists without x-max-length={} and x-overflow=reject-publish \
             (declared before the limit, or with another OFFLOAD_MAX_QUEUE_LENGTH); it is kept \
             as it is, and the API still refuses submits at {} ready jobs. To have the broker \
             enforce the limit too, apply a policy: {}",
            settings.max_queue_length,
            settings.queue_full_at(),
            length_policy_command(name, settings.max_queue_length),
        );
    }
    Ok(())
}

/// `args` with `argument` set to the value the broker's mismatch text says the queue has
/// (`... but current is '100000'`), or left out when it has none.
fn with_current(args: &FieldTable, argument: &str, broker_text: &str) -> FieldTable {
    let current = broker_text
        .split("current is ")
        .nth(1)
        .map(|v| v.trim().trim_matches('\'').to_owned());
    let mut out = without(args, argument);
    match (argument, current) {
        (MAX_LENGTH_ARGUMENT, Some(v)) => {
            if let Ok(n) = v.parse::<i64>() {
                out.insert(argument.into(), lapin::types::AMQPValue::LongLongInt(n));
            }
        }
        (OVERFLOW_ARGUMENT, Some(v)) if !v.is_empty() && v != "none" => {
            put_str(&mut out, argument, &v);
        }
        _ => {}
    }
    out
}

/// The `rabbitmqctl` command that applies the length limit to an existing work queue.
pub fn length_policy_command(queue: &str, max_length: u32) -> String {
    let pattern = queue.replace('.', "\\.");
    format!(
        "rabbitmqctl set_policy --apply-to queues {queue}-max-length '^{pattern}$' \
         '{{\"max-length\":{max_length},\"overflow\":\"reject-publish\"}}'"
    )
}

/// Declares `queue`'s work queue, with the same arguments as the default one; returns its name.
async fn declare_work_queue_on(
    connection: &Connection,
    settings: &Settings,
    names: &Names,
    queue: &QueueName,
) -> Result<String, TopologyError> {
    let name = names.work_queue(queue);
    declare_work_queue(connection, settings, names, &name).await?;
    Ok(name)
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
        |_channel| async move {
            let mut declared = Vec::with_capacity(queues.len());
            for queue in queues {
                declared.push(declare_work_queue_on(connection, settings, &names, queue).await?);
            }
            Ok(declared)
        },
    )
    .await
}

/// Declares `queue`'s work queue and its high lane and routes `kind`'s jobs to them (`<kind>`
/// and `<kind>:high`), on one channel. Only the API binds, once it has recorded the kind: a
/// kind is never bound to two queues.
#[tracing::instrument(skip_all, fields(prefix = %settings.queue_prefix, %kind, %queue))]
pub async fn bind_kind(
    connection: &Connection,
    settings: &Settings,
    kind: &JobKind,
    queue: &QueueName,
) -> Result<(), TopologyError> {
    let names = Names::for_settings(settings);
    on_own_channel(connection, settings, "bind a kind", |channel| async move {
        let work_queue = declare_work_queue_on(connection, settings, &names, queue).await?;
        for priority in Priority::ALL {
            bind(
                &channel,
                &priority.lane(&work_queue),
                &names.jobs_exchange,
                &priority.routing_key(kind),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    })
    .await
}

/// Stops routing `kind`'s jobs to `queue` and its high lane (when a kind moved to another queue).
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
            for priority in Priority::ALL {
                let (lane, key) = (priority.lane(&work_queue), priority.routing_key(kind));
                channel
                    .queue_unbind(
                        ShortString::from(lane.as_str()),
                        ShortString::from(names.jobs_exchange.as_str()),
                        ShortString::from(key.as_str()),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| TopologyError::Broker {
                        object: "binding",
                        name: format!("{lane} <- {} ({key})", names.jobs_exchange),
                        source: Box::new(BrokerError::Amqp(e, "unbind")),
                    })?;
            }
            Ok(())
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
    fn the_argument_is_read_from_the_broker_text() {
        let text = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'a.jobs' in \
                    vhost '/': received 'quorum' but current is 'classic'";
        assert_eq!(inequivalent_argument(text), Some("x-queue-type"));
        assert_eq!(inequivalent_argument("something else"), None);
    }

    #[test]
    fn a_legacy_queue_is_redeclared_with_its_own_length_arguments() {
        let settings = Settings::from_env().expect("defaults");
        let names = Names::for_settings(&settings);
        let args = jobs_queue_arguments(&settings, &names);
        let none = with_current(
            &args,
            "x-max-length",
            "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'a.jobs' in vhost \
             '/': received '100000' but current is 'none'",
        );
        assert!(!none.contains_key("x-max-length"));
        assert!(
            none.contains_key("x-queue-type"),
            "the other arguments are still checked"
        );
        let other = with_current(
            &args,
            "x-max-length",
            "inequivalent arg 'x-max-length' for queue 'a.jobs' in vhost '/': received '100000' \
             but current is '300'",
        );
        assert_eq!(
            other.inner().get("x-max-length"),
            Some(&lapin::types::AMQPValue::LongLongInt(300))
        );
    }

    #[test]
    fn the_policy_command_names_the_queue_and_the_limit() {
        let command = length_policy_command("offload.jobs", 300);
        assert!(command.contains("'^offload\\.jobs$'"), "{command}");
        assert!(command.contains(r#""max-length":300"#), "{command}");
        assert!(
            command.contains(r#""overflow":"reject-publish""#),
            "{command}"
        );
    }
}
