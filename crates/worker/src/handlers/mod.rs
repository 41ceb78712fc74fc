//! Job handlers: plain async functions of a context and a payload, registered by kind. They
//! know nothing of RabbitMQ; the consumer maps their outcome to ack, retry or dead-letter.

pub mod builtin;

use std::{collections::HashMap, sync::Arc};

use futures_util::future::BoxFuture;
use serde_json::Value;

use offload_shared::{JobId, JobKind};

/// What a handler knows about the job it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's id: handlers must be idempotent per id, since delivery is at-least-once.
    pub id: JobId,
    /// 1 for the first run.
    pub attempt: u32,
    /// Runs allowed in all.
    pub max_attempts: u32,
    /// The worker running it.
    pub worker: Arc<str>,
}

/// How a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Might succeed if tried again (a timeout, a busy dependency).
    #[error("{0}")]
    Retryable(String),
    /// Will never succeed (bad input, a missing resource): dead-letter at once.
    #[error("{0}")]
    Permanent(String),
}

/// A job handler.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt of a job.
    fn run(&self, ctx: JobContext, payload: Value) -> BoxFuture<'static, Result<Value, JobError>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(JobContext, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, JobError>> + Send + 'static,
{
    fn run(&self, ctx: JobContext, payload: Value) -> BoxFuture<'static, Result<Value, JobError>> {
        Box::pin(self(ctx, payload))
    }
}

/// Handlers by kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<JobKind, Arc<dyn Handler>>,
}

impl Registry {
    /// The built-in handlers: one per kind in the shared registry.
    pub fn builtin() -> Self {
        Registry::default()
            .with(builtin::noop_kind(), builtin::noop)
            .with(builtin::sleep_kind(), builtin::sleep)
    }

    /// Registers (or replaces) the handler of `kind`.
    pub fn with(mut self, kind: JobKind, handler: impl Handler) -> Self {
        self.handlers.insert(kind, Arc::new(handler));
        self
    }

    /// The handler of `kind`, if registered.
    pub fn get(&self, kind: &JobKind) -> Option<Arc<dyn Handler>> {
        self.handlers.get(kind).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shared_kind_has_a_builtin_handler() {
        let registry = Registry::builtin();
        for spec in builtin::specs() {
            assert!(registry.get(&spec.name).is_some(), "{}", spec.name);
        }
    }
}
