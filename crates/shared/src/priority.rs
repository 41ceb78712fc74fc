//! Job priorities, `normal` and `high`, carried out by lanes: every work queue `<q>` has a high
//! lane `<q>:high` beside it, declared with the same arguments. A high job is published with the
//! routing key `<kind>:high` (bound to the lane) and the AMQP `priority` property
//! [`Priority::HIGH_AMQP`]; a worker consumes both lanes of each queue it serves and, when a
//! slot frees, starts a waiting high job before a waiting normal one.
//!
//! Lanes rather than the broker's own priorities: a quorum queue has none on RabbitMQ 3.x (4.0
//! added two levels), and a classic queue's `x-max-priority` cannot be added to a queue that
//! exists. Lanes behave the same on every broker and queue type. `:` is never part of a kind or
//! queue name, so no lane or routing key collides with a real one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::kinds::JobKind;

/// How soon a job should start, relative to the others waiting on its queue.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// First come, first served (the default).
    #[default]
    Normal,
    /// Starts before every waiting `normal` job of its queue.
    High,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 2] = [Priority::Normal, Priority::High];

    /// The AMQP `priority` property of a high job. RabbitMQ 4's quorum queues treat a priority
    /// above 4 as high too; a normal job carries none (0).
    pub const HIGH_AMQP: u8 = 9;

    /// What the suffix of a lane and a routing key is (`:high`); none for `normal`.
    const HIGH_SUFFIX: &str = ":high";

    /// The priority's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// Reads a name; the error names both choices.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "normal" => Ok(Priority::Normal),
            "high" => Ok(Priority::High),
            other => Err(format!(
                "priority {:?} is not one of: normal, high",
                other.chars().take(40).collect::<String>()
            )),
        }
    }

    /// The priority of a message, by its AMQP `priority` property: high above 4, as RabbitMQ 4
    /// reads it.
    pub fn of_message(amqp: Option<u8>) -> Self {
        match amqp {
            Some(p) if p > 4 => Priority::High,
            _ => Priority::Normal,
        }
    }

    /// The AMQP `priority` property a job of this priority is published with.
    pub fn amqp(self) -> Option<u8> {
        match self {
            Priority::Normal => None,
            Priority::High => Some(Self::HIGH_AMQP),
        }
    }

    /// The routing key of a `kind` job of this priority: the kind, or `<kind>:high`.
    pub fn routing_key(self, kind: &JobKind) -> String {
        self.suffixed(kind.as_str())
    }

    /// The lane of `work_queue` that holds jobs of this priority: the queue itself, or
    /// `<work_queue>:high`.
    pub fn lane(self, work_queue: &str) -> String {
        self.suffixed(work_queue)
    }

    /// `name` without its high-lane suffix, and the priority the suffix says.
    pub fn split_lane(name: &str) -> (&str, Priority) {
        match name.strip_suffix(Self::HIGH_SUFFIX) {
            Some(base) => (base, Priority::High),
            None => (name, Priority::Normal),
        }
    }

    fn suffixed(self, name: &str) -> String {
        match self {
            Priority::Normal => name.to_owned(),
            Priority::High => format!("{name}{}", Self::HIGH_SUFFIX),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_name_the_choices() {
        for p in Priority::ALL {
            assert_eq!(Priority::parse(p.as_str()), Ok(p));
            assert_eq!(serde_json::to_value(p).expect("json"), p.as_str());
        }
        let err = Priority::parse("urgent").expect_err("not a priority");
        assert!(err.contains("normal, high"), "{err}");
        assert!(Priority::parse("High").is_err());
    }

    #[test]
    fn lanes_and_routing_keys_carry_the_suffix_only_when_high() {
        let kind = JobKind::parse("resize").expect("valid");
        assert_eq!(Priority::Normal.routing_key(&kind), "resize");
        assert_eq!(Priority::High.routing_key(&kind), "resize:high");
        assert_eq!(Priority::High.lane("p.jobs.images"), "p.jobs.images:high");
        assert_eq!(
            Priority::split_lane("p.jobs:high"),
            ("p.jobs", Priority::High)
        );
        assert_eq!(Priority::split_lane("p.jobs"), ("p.jobs", Priority::Normal));
        // A kind or queue name cannot end in the suffix, so no lane is mistaken for a queue.
        assert!(JobKind::parse("resize:high").is_err());
    }

    #[test]
    fn the_amqp_property_reads_as_rabbitmq_4_does() {
        assert_eq!(Priority::of_message(None), Priority::Normal);
        assert_eq!(Priority::of_message(Some(4)), Priority::Normal);
        assert_eq!(Priority::of_message(Some(5)), Priority::High);
        assert_eq!(Priority::of_message(Priority::High.amqp()), Priority::High);
        assert_eq!(Priority::Normal.amqp(), None);
    }
}
