//! The built-in kinds: `noop` and `sleep` (with its failure switches), both on the queue
//! `default`; with the `webhooks` feature also `http.request` on the queue `webhooks`
//! ([`super::http_request`]).

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use offload_shared::kinds::KindSpec;

use super::Registry;
use crate::{Job, JobContext, JobError};

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

/// The stock kind `noop`: returns its payload (any JSON) as its result.
///
/// ```
/// let worker = offload_worker::Worker::builder(offload_worker::Settings::from_env().unwrap())
///     .job(offload_worker::handlers::builtin::Noop);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

impl Job for Noop {
    const KIND: &'static str = "noop";
    type Payload = Value;
    type Output = Value;

    async fn run(&self, _ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        Ok(payload)
    }
}

/// The stock kind `sleep`: sleeps `ms` milliseconds, then fails if its switches say so:
/// `fail_attempts: K` fails the first K attempts (retryable), `fail: "permanent"` fails for
/// good, `panic: true` panics. It does not stop early on shutdown: a draining worker finishes it.
///
/// ```
/// let worker = offload_worker::Worker::builder(offload_worker::Settings::from_env().unwrap())
///     .job(offload_worker::handlers::builtin::Sleep);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Sleep;

impl Job for Sleep {
    const KIND: &'static str = "sleep";
    type Payload = SleepPayload;
    type Output = Value;

    async fn run(&self, ctx: JobContext, p: SleepPayload) -> Result<Value, JobError> {
        sleep(ctx, p).await
    }
}

/// The specs of the built-in kinds (what the stock worker announces), by name.
pub fn specs() -> Vec<KindSpec> {
    registry().specs()
}

/// The built-in kinds, registered (`http.request` unconfigured: it refuses every destination;
/// the stock worker registers it from its settings instead).
pub(crate) fn registry() -> Registry {
    let mut registry = Registry::default();
    // The built-in specs are the project's own and valid; a test keeps them so.
    let _ = registry.register(Noop);
    let _ = registry.register(Sleep);
    #[cfg(feature = "webhooks")]
    let _ = registry.register(super::http_request::HttpRequest::default());
    registry
}

async fn sleep(ctx: JobContext, p: SleepPayload) -> Result<Value, JobError> {
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
    use crate::handlers::Handler;
    use offload_shared::kinds::JobKind;

    fn ctx(attempt: u32) -> JobContext {
        let mut ctx = JobContext::standalone("sleep", Duration::from_secs(5));
        ctx.attempt = attempt;
        ctx.max_attempts = 5;
        ctx
    }

    async fn run(kind: &str, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let handler = registry()
            .get(&JobKind::parse(kind).expect("valid"))
            .expect("registered");
        Handler::run(handler.as_ref(), ctx, payload).await
    }

    #[tokio::test]
    async fn noop_echoes_and_sleep_checks_its_payload() {
        assert_eq!(
            run("noop", ctx(1), json!({"a": 1})).await,
            Ok(json!({"a": 1}))
        );
        assert_eq!(
            run("sleep", ctx(1), json!({"ms": 1})).await,
            Ok(json!({"slept_ms": 1}))
        );
        assert!(matches!(
            run("sleep", ctx(1), json!({"ms": "x"})).await,
            Err(JobError::Permanent(_))
        ));
    }

    #[test]
    fn noop_and_sleep_register_on_the_default_queue() {
        let default: Vec<String> = specs()
            .iter()
            .filter(|s| s.queue.is_default())
            .map(|s| s.name.to_string())
            .collect();
        assert_eq!(default, ["noop", "sleep"]);
    }

    fn spec(name: &str) -> KindSpec {
        specs()
            .into_iter()
            .find(|s| s.name.as_str() == name)
            .expect("a built-in kind")
    }

    #[test]
    fn the_sleep_schema_refuses_what_its_handler_refuses() {
        let sleep = spec("sleep");
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
            run("sleep", ctx(1), twice.clone()).await,
            Err(JobError::Retryable(_))
        ));
        assert!(matches!(
            run("sleep", ctx(2), twice.clone()).await,
            Err(JobError::Retryable(_))
        ));
        assert!(run("sleep", ctx(3), twice).await.is_ok());
        assert!(matches!(
            run("sleep", ctx(1), json!({"fail": "permanent"})).await,
            Err(JobError::Permanent(_))
        ));
    }
}
