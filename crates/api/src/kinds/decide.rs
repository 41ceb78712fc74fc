//! What an announced kind spec does to the recorded one: a pure decision, so every case is a
//! unit test. A kind is never routed to two queues: a differing spec replaces the recorded one
//! only once no live worker still runs the recorded one (and never a pinned one).

use offload_shared::{
    Priority,
    kinds::{KindSpec, QueueName},
};

use crate::store::registry::{KindRecord, KindSource};

/// What to do with one kind spec of an announcement.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A kind not recorded before: record it, bind it, accept its jobs.
    Record,
    /// The recorded spec, again: nothing to do.
    Unchanged,
    /// A different spec while the recorded one is still in use (or pinned): keep the recorded
    /// one and report the conflict.
    Conflict {
        /// What differs and who holds the recorded spec, in words.
        text: String,
    },
    /// A different spec, and nobody runs the recorded one any more: the new spec replaces it.
    Replace {
        /// The queue to unbind the kind from, when the queue changed.
        unbind: Option<QueueName>,
    },
    /// The deployment is locked to its kinds file and this kind is not in it: not accepted.
    NotPinned,
}

/// Decides what `offered`, announced by `worker`, does. `recorded` is the kind as recorded, if
/// it is; `holders` are the live workers other than `worker` whose latest announcement has the
/// recorded spec; `locked` is true when a kinds file pins the deployment's kinds.
pub fn decide(
    recorded: Option<&KindRecord>,
    offered: &KindSpec,
    worker: &str,
    holders: &[&str],
    locked: bool,
) -> Decision {
    let Some(recorded) = recorded else {
        return if locked {
            Decision::NotPinned
        } else {
            Decision::Record
        };
    };
    if locked && recorded.source != KindSource::Pinned {
        return Decision::NotPinned;
    }
    let differs = differences(&recorded.spec, offered);
    if differs.is_empty() {
        return Decision::Unchanged;
    }
    let kept = if recorded.source == KindSource::Pinned {
        Some("the pinned spec (OFFLOAD_KINDS_FILE)".to_owned())
    } else if !holders.is_empty() {
        Some(format!(
            "the recorded spec, still run by live worker{} {}",
            if holders.len() == 1 { "" } else { "s" },
            holders.join(", ")
        ))
    } else {
        None
    };
    match kept {
        Some(kept) => Decision::Conflict {
            text: format!(
                "worker {worker} announces kind {} with a different {}; kept {kept}",
                offered.name,
                differs.join(", ")
            ),
        },
        None => Decision::Replace {
            unbind: (recorded.spec.queue != offered.queue).then(|| recorded.spec.queue.clone()),
        },
    }
}

/// What differs between two specs of one kind, in words: `queue "b" (recorded "a")`, ….
pub fn differences(recorded: &KindSpec, offered: &KindSpec) -> Vec<String> {
    let mut out = Vec::new();
    if recorded.queue != offered.queue {
        out.push(format!(
            "queue {:?} (recorded {:?})",
            offered.queue.as_str(),
            recorded.queue.as_str()
        ));
    }
    if recorded.payload_schema != offered.payload_schema {
        out.push("payload_schema".to_owned());
    }
    if recorded.max_attempts != offered.max_attempts {
        out.push(format!(
            "max_attempts {:?} (recorded {:?})",
            offered.max_attempts, recorded.max_attempts
        ));
    }
    if recorded.timeout_s != offered.timeout_s {
        out.push(format!(
            "timeout_s {:?} (recorded {:?})",
            offered.timeout_s, recorded.timeout_s
        ));
    }
    if recorded.max_running != offered.max_running {
        out.push(format!(
            "max_running {:?} (recorded {:?})",
            offered.max_running, recorded.max_running
        ));
    }
    if recorded.long != offered.long {
        out.push(format!(
            "long {} (recorded {})",
            offered.long, recorded.long
        ));
    }
    if recorded.priority != offered.priority {
        out.push(format!(
            "priority {:?} (recorded {:?})",
            offered.priority.map(Priority::as_str),
            recorded.priority.map(Priority::as_str)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::OffsetDateTime;

    use offload_shared::kinds::JobKind;

    use super::*;

    fn spec(queue: &str) -> KindSpec {
        KindSpec {
            name: JobKind::parse("resize").expect("valid"),
            queue: QueueName::parse(queue).expect("valid"),
            payload_schema: json!({"type": "object"}),
            max_attempts: None,
            timeout_s: None,
            priority: None,
            max_running: None,
            long: false,
        }
    }

    fn record(spec: KindSpec, source: KindSource) -> KindRecord {
        KindRecord {
            spec,
            source,
            announced_by: Some("w1".into()),
            first_seen_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            conflict: None,
        }
    }

    #[test]
    fn each_case_decides_as_the_contract_says() {
        let images = spec("images");
        let other = spec("other");
        let stricter = KindSpec {
            payload_schema: json!({"type": "object", "required": ["width"]}),
            max_attempts: Some(2),
            ..images.clone()
        };
        let announced = record(images.clone(), KindSource::Announced);
        let pinned = record(images.clone(), KindSource::Pinned);
        let conflict = |d: Decision| match d {
            Decision::Conflict { text } => text,
            other => panic!("not a conflict: {other:?}"),
        };

        let cases: Vec<(&str, Decision, Decision)> = vec![
            (
                "a new kind is recorded",
                decide(None, &images, "w2", &[], false),
                Decision::Record,
            ),
            (
                "a new kind is refused when locked",
                decide(None, &images, "w2", &[], true),
                Decision::NotPinned,
            ),
            (
                "the same spec changes nothing",
                decide(Some(&announced), &images, "w2", &["w1"], false),
                Decision::Unchanged,
            ),
            (
                "the same pinned spec changes nothing when locked",
                decide(Some(&pinned), &images, "w2", &[], true),
                Decision::Unchanged,
            ),
            (
                "an announced kind is not accepted when locked",
                decide(Some(&announced), &images, "w2", &[], true),
                Decision::NotPinned,
            ),
            (
                "a new queue replaces an abandoned spec and unbinds the old queue",
                decide(Some(&announced), &other, "w2", &[], false),
                Decision::Replace {
                    unbind: Some(QueueName::parse("images").expect("valid")),
                },
            ),
            (
                "a new schema on the same queue replaces an abandoned spec, nothing to unbind",
                decide(Some(&announced), &stricter, "w2", &[], false),
                Decision::Replace { unbind: None },
            ),
        ];
        for (case, got, want) in cases {
            assert_eq!(got, want, "{case}");
        }

        let text = conflict(decide(Some(&announced), &other, "w2", &["w1"], false));
        assert_eq!(
            text,
            "worker w2 announces kind resize with a different queue \"other\" (recorded \"images\"); \
             kept the recorded spec, still run by live worker w1"
        );
        let text = conflict(decide(
            Some(&announced),
            &stricter,
            "w3",
            &["w1", "w2"],
            false,
        ));
        assert!(
            text.contains("payload_schema, max_attempts Some(2) (recorded None)"),
            "{text}"
        );
        assert!(text.contains("live workers w1, w2"), "{text}");
        let text = conflict(decide(Some(&pinned), &other, "w2", &[], false));
        assert!(
            text.ends_with("kept the pinned spec (OFFLOAD_KINDS_FILE)"),
            "{text}"
        );
        let text = conflict(decide(Some(&pinned), &other, "w2", &[], true));
        assert!(text.contains("worker w2"), "{text}");
    }
}
