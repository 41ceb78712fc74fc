//! The built-in kinds: `noop` and `sleep`.

use std::time::Duration;

use serde_json::{Value, json};

use offload_shared::kinds::SleepPayload;

use super::{JobContext, JobError};

/// Returns its payload as its result.
pub async fn noop(_ctx: JobContext, payload: Value) -> Result<Value, JobError> {
    Ok(payload)
}

/// Sleeps `ms` milliseconds: the stand-in for slow work.
pub async fn sleep(_ctx: JobContext, payload: Value) -> Result<Value, JobError> {
    let SleepPayload { ms } =
        SleepPayload::from_value(&payload).map_err(|e| JobError::Permanent(e.to_string()))?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(json!({ "slept_ms": ms }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use offload_shared::JobId;

    fn ctx() -> JobContext {
        JobContext {
            id: JobId::new(),
            attempt: 1,
            max_attempts: 1,
            worker: "t".into(),
        }
    }

    #[tokio::test]
    async fn noop_echoes_and_sleep_checks_its_payload() {
        assert_eq!(noop(ctx(), json!({"a": 1})).await, Ok(json!({"a": 1})));
        assert_eq!(
            sleep(ctx(), json!({"ms": 1})).await,
            Ok(json!({"slept_ms": 1}))
        );
        assert!(matches!(
            sleep(ctx(), json!({"ms": "x"})).await,
            Err(JobError::Permanent(_))
        ));
    }
}
