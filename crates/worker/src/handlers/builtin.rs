//! The built-in kinds: `noop` and `sleep` (with its failure switches), both on the queue
//! `default`.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use offload_shared::kinds::{JobKind, KindSpec};

use super::{JobContext, JobError};

/// Longest sleep a `sleep` job may ask for.
pub const MAX_SLEEP_MS: u64 = 3_600_000;

/// Payload of the `sleep` kind: the stand-in for slow work, with switches that make it fail so
/// the retry and dead-letter machinery can be watched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepPayload {
    /// Milliseconds to sleep.
    #[serde(default)]
    #[schemars(range(max = 3_600_000))]
    pub ms: u64,
    /// Fail (retryably) the first this-many attempts, then succeed.
    #[serde(default)]
    pub fail_attempts: u32,
    /// `"permanent"`: fail at once, never retried; `"retryable"`: fail every attempt.
    #[serde(default)]
    pub fail: Option<FailMode>,
    /// Panic inside the handler.
    #[serde(default)]
    pub panic: bool,
}

/// How a `sleep` job is told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// A permanent error: dead-lettered without retries.
    Permanent,
    /// A retryable error on every attempt, until attempts run out.
    Retryable,
}

/// The name `noop`.
pub fn noop_kind() -> JobKind {
    JobKind::parse("noop").unwrap_or_else(|_| unreachable!("a valid name"))
}

/// The name `sleep`.
pub fn sleep_kind() -> JobKind {
    JobKind::parse("sleep").unwrap_or_else(|_| unreachable!("a valid name"))
}

/// The specs of the built-in kinds.
pub fn specs() -> Vec<KindSpec> {
    let sleep = KindSpec {
        payload_schema: serde_json::to_value(schemars::schema_for!(SleepPayload))
            .unwrap_or(Value::Bool(true)),
        ..KindSpec::new(sleep_kind())
    };
    vec![KindSpec::new(noop_kind()), sleep]
}

/// Returns its payload as its result.
pub async fn noop(_ctx: JobContext, payload: Value) -> Result<Value, JobError> {
    Ok(payload)
}

/// Sleeps `ms` milliseconds, then fails if its switches say so: `fail_attempts: K` fails the
/// first K attempts (retryable), `fail: "permanent"` fails for good, `panic: true` panics.
pub async fn sleep(ctx: JobContext, payload: Value) -> Result<Value, JobError> {
    let p = SleepPayload::deserialize(&payload)
        .map_err(|e| JobError::Permanent(format!("invalid payload for kind sleep: {e}")))?;
    if p.ms > MAX_SLEEP_MS {
        return Err(JobError::Permanent(format!(
            "ms is {}, at most {MAX_SLEEP_MS} is allowed",
            p.ms
        )));
    }
    tokio::time::sleep(Duration::from_millis(p.ms)).await;
    if p.panic {
        panic!("sleep job {} was asked to panic", ctx.id);
    }
    match p.fail {
        Some(FailMode::Permanent) => {
            return Err(JobError::Permanent("asked to fail permanently".to_owned()));
        }
        Some(FailMode::Retryable) => {
            return Err(JobError::Retryable(
                "asked to fail on every attempt".to_owned(),
            ));
        }
        None => {}
    }
    if ctx.attempt <= p.fail_attempts {
        return Err(JobError::Retryable(format!(
            "asked to fail its first {} attempts; this was attempt {}",
            p.fail_attempts, ctx.attempt
        )));
    }
    Ok(json!({ "slept_ms": p.ms }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use offload_shared::JobId;

    fn ctx(attempt: u32) -> JobContext {
        JobContext {
            id: JobId::new(),
            attempt,
            max_attempts: 5,
            worker: "t".into(),
        }
    }

    #[tokio::test]
    async fn noop_echoes_and_sleep_checks_its_payload() {
        assert_eq!(noop(ctx(1), json!({"a": 1})).await, Ok(json!({"a": 1})));
        assert_eq!(
            sleep(ctx(1), json!({"ms": 1})).await,
            Ok(json!({"slept_ms": 1}))
        );
        assert!(matches!(
            sleep(ctx(1), json!({"ms": "x"})).await,
            Err(JobError::Permanent(_))
        ));
    }

    #[test]
    fn the_sleep_schema_refuses_what_its_handler_refuses() {
        let sleep = specs().pop().expect("sleep");
        let schema = sleep.compile().expect("valid schema");
        for good in [json!({"ms": 5}), json!({"fail": "permanent"}), json!({})] {
            assert!(schema.check(&good).is_ok(), "{good}");
        }
        for bad in [
            json!({"fail": "sometimes"}),
            json!({"fail_attempts": -1}),
            json!({"ms": "5"}),
            json!({"ms": -1}),
            json!({"ms": 5, "extra": 1}),
            json!({"ms": MAX_SLEEP_MS + 1}),
            json!([1]),
        ] {
            assert!(schema.check(&bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn failure_switches_fail_as_asked() {
        let twice = json!({"fail_attempts": 2});
        assert!(matches!(
            sleep(ctx(1), twice.clone()).await,
            Err(JobError::Retryable(_))
        ));
        assert!(matches!(
            sleep(ctx(2), twice.clone()).await,
            Err(JobError::Retryable(_))
        ));
        assert!(sleep(ctx(3), twice).await.is_ok());
        assert!(matches!(
            sleep(ctx(1), json!({"fail": "permanent"})).await,
            Err(JobError::Permanent(_))
        ));
    }
}
