//! The built-in kinds: `noop` and `sleep` (with its failure switches).

use std::time::Duration;

use serde_json::{Value, json};

use offload_shared::kinds::{FailMode, SleepPayload};

use super::{JobContext, JobError};

/// Returns its payload as its result.
pub async fn noop(_ctx: JobContext, payload: Value) -> Result<Value, JobError> {
    Ok(payload)
}

/// Sleeps `ms` milliseconds, then fails if its switches say so: `fail_attempts: K` fails the
/// first K attempts (retryable), `fail: "permanent"` fails for good, `panic: true` panics.
pub async fn sleep(ctx: JobContext, payload: Value) -> Result<Value, JobError> {
    let p = SleepPayload::from_value(&payload).map_err(|e| JobError::Permanent(e.to_string()))?;
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
