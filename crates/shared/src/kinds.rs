//! The registry of job kinds. The API accepts only these kinds and checks each payload here, so
//! a job a worker cannot run is refused at the door with a 422 instead of dying in a queue.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest sleep a `sleep` job may ask for.
pub const MAX_SLEEP_MS: u64 = 3_600_000;

/// A kind of job some worker has a handler for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Returns its payload as its result.
    Noop,
    /// Sleeps `ms` milliseconds: the stand-in for slow work.
    Sleep,
}

impl JobKind {
    /// Every kind, in the order they are listed to users.
    pub const ALL: [JobKind; 2] = [JobKind::Noop, JobKind::Sleep];

    /// The kind's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Noop => "noop",
            JobKind::Sleep => "sleep",
        }
    }

    /// Checks that `payload` is one this kind's handler accepts.
    pub fn validate_payload(self, payload: &Value) -> Result<(), PayloadError> {
        match self {
            JobKind::Noop => Ok(()),
            JobKind::Sleep => SleepPayload::from_value(payload).map(|_| ()),
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that is not in the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job kind {given:?}; known kinds: {known}")]
pub struct UnknownKind {
    /// What the client sent.
    pub given: String,
    /// The registry, comma separated.
    pub known: String,
}

impl FromStr for JobKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind {
                given: s.chars().take(64).collect(),
                known: JobKind::ALL.map(JobKind::as_str).join(", "),
            })
    }
}

/// A payload its kind does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid payload for kind {kind}: {reason}")]
pub struct PayloadError {
    /// The kind whose rules were broken.
    pub kind: JobKind,
    /// What is wrong, in words.
    pub reason: String,
}

/// Payload of the `sleep` kind: the stand-in for slow work, with switches that make it fail so
/// the retry and dead-letter machinery can be watched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepPayload {
    /// Milliseconds to sleep.
    #[serde(default)]
    pub ms: u64,
    /// Fail (retryably) the first this-many attempts, then succeed.
    #[serde(default)]
    pub fail_attempts: u32,
    /// `"permanent"`: fail at once, never retried.
    #[serde(default)]
    pub fail: Option<FailMode>,
    /// Panic inside the handler.
    #[serde(default)]
    pub panic: bool,
}

/// How a `sleep` job is told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// A permanent error: dead-lettered without retries.
    Permanent,
    /// A retryable error on every attempt, until attempts run out.
    Retryable,
}

impl SleepPayload {
    /// Parses and range-checks a `sleep` payload.
    pub fn from_value(payload: &Value) -> Result<Self, PayloadError> {
        let invalid = |reason: String| PayloadError {
            kind: JobKind::Sleep,
            reason,
        };
        if !payload.is_object() {
            return Err(invalid("expected an object like {\"ms\": 500}".to_owned()));
        }
        let parsed = SleepPayload::deserialize(payload).map_err(|e| invalid(e.to_string()))?;
        if parsed.ms > MAX_SLEEP_MS {
            return Err(invalid(format!(
                "ms is {}, at most {MAX_SLEEP_MS} is allowed",
                parsed.ms
            )));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_parse_and_unknown_lists_the_registry() {
        assert_eq!("sleep".parse::<JobKind>(), Ok(JobKind::Sleep));
        let err = "resize".parse::<JobKind>().expect_err("not registered");
        assert_eq!(
            err.to_string(),
            "unknown job kind \"resize\"; known kinds: noop, sleep"
        );
    }

    #[test]
    fn sleep_payloads_are_checked() {
        assert!(JobKind::Sleep.validate_payload(&json!({"ms": 5})).is_ok());
        assert!(
            JobKind::Sleep
                .validate_payload(&json!({"fail": "permanent"}))
                .is_ok()
        );
        assert!(
            JobKind::Sleep
                .validate_payload(&json!({"ms": 1, "fail_attempts": 2, "panic": false}))
                .is_ok()
        );
        for bad in [
            json!({"fail": "sometimes"}),
            json!({"fail_attempts": -1}),
            json!({"ms": "5"}),
            json!({"ms": -1}),
            json!({"ms": 5, "extra": 1}),
            json!({"ms": MAX_SLEEP_MS + 1}),
            json!([1]),
        ] {
            assert!(JobKind::Sleep.validate_payload(&bad).is_err(), "{bad}");
        }
        assert!(JobKind::Noop.validate_payload(&json!([1, 2])).is_ok());
    }
}
