//! The arguments each queue is created with. Settings that operators change later belong in
//! policies; these are fixed when a queue is created, so both binaries must agree on them.

use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::settings::{QueueType, Settings};

use super::Names;

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
    }
    // The back-pressure: a queue holding this many messages refuses publishes (a nack, the
    // API's 503 `queue-full`) before a flood reaches the broker's memory alarm.
    args.insert(
        MAX_LENGTH_ARGUMENT.into(),
        AMQPValue::LongLongInt(i64::from(settings.max_queue_length)),
    );
    // A full queue refuses new messages rather than dropping its oldest jobs (also what
    // quorum's at-least-once dead-lettering requires).
    put_str(&mut args, OVERFLOW_ARGUMENT, "reject-publish");
    args
}

/// The work queue's length limit argument.
pub const MAX_LENGTH_ARGUMENT: &str = "x-max-length";

/// The work queue's overflow behaviour argument.
pub const OVERFLOW_ARGUMENT: &str = "x-overflow";

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

/// Arguments of the dead-letter, events, parked-events and artifacts queues: same type as the work queue, nothing else.
pub fn plain_queue_arguments(settings: &Settings) -> FieldTable {
    let mut args = FieldTable::default();
    // Same durability and replication as the jobs these queues describe.
    put_str(&mut args, "x-queue-type", settings.queue_type.as_str());
    args
}

pub(super) fn put_str(args: &mut FieldTable, key: &str, value: &str) {
    args.insert(
        key.into(),
        AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "x-max-length",
        ] {
            assert!(args.contains_key(key), "{key}");
        }
    }

    #[test]
    fn classic_work_queues_get_the_length_limit_too() {
        let mut settings = Settings::from_env().expect("defaults");
        settings.queue_type = QueueType::Classic;
        settings.max_queue_length = 300;
        let names = Names::for_settings(&settings);
        let args = jobs_queue_arguments(&settings, &names);
        assert_eq!(
            args.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(300))
        );
        assert!(args.contains_key("x-overflow"));
    }
}
