//! The jobs a worker runs, by kind: each typed [`Job`] behind a JSON-in, JSON-out handler, with
//! the [`KindSpec`] it announces. The built-in kinds live in [`builtin`]: `pdf.render` in
//! [`pdf`] (feature `documents`), `image.thumbnail` in [`thumbnail`] (feature `thumbnails`),
//! `http.request` in [`http_request`], sending through [`outbound`] (feature `webhooks`).

pub mod builtin;
#[cfg(feature = "webhooks")]
pub mod http_request;
#[cfg(feature = "webhooks")]
pub mod outbound;
#[cfg(feature = "documents")]
pub mod pdf;
#[cfg(feature = "webhooks")]
pub mod signing;
#[cfg(feature = "thumbnails")]
pub mod thumbnail;

use std::{collections::BTreeMap, sync::Arc};

use futures_util::future::BoxFuture;
use serde_json::Value;

use offload_shared::kinds::{JobKind, KindSpec, QueueName};

use crate::{Job, JobContext, JobError, WorkerError};

/// A job behind JSON: what the consumer runs, knowing nothing of the job's types.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Runs one attempt on a JSON payload.
    fn run(&self, ctx: JobContext, payload: Value) -> BoxFuture<'static, Result<Value, JobError>>;
}

/// A typed job as a [`Handler`]: the payload is deserialized (a failure is permanent, naming
/// serde's message) and the output serialized.
struct Typed<J>(Arc<J>);

impl<J: Job> Handler for Typed<J> {
    fn run(&self, ctx: JobContext, payload: Value) -> BoxFuture<'static, Result<Value, JobError>> {
        let job = self.0.clone();
        Box::pin(async move {
            let payload: J::Payload = serde_json::from_value(payload).map_err(|e| {
                JobError::Permanent(format!("invalid payload for kind {}: {e}", J::KIND))
            })?;
            let output = job.run(ctx, payload).await?;
            serde_json::to_value(output).map_err(|e| {
                JobError::Permanent(format!("the result of kind {} is not JSON: {e}", J::KIND))
            })
        })
    }
}

/// One registered kind.
#[derive(Clone)]
struct Entry {
    spec: KindSpec,
    handler: Arc<dyn Handler>,
}

/// Handlers by kind, with their specs; built by the worker builder, checked before connecting.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    entries: BTreeMap<JobKind, Entry>,
}

/// `J`'s spec: its names checked, its payload schema generated, its defaults; compiled.
pub(crate) fn spec_of<J: Job>(job: &J) -> Result<KindSpec, WorkerError> {
    let invalid = |reason: String| WorkerError::InvalidJob {
        kind: J::KIND.to_owned(),
        reason,
    };
    let name = JobKind::parse(J::KIND).map_err(|e| invalid(e.to_string()))?;
    let queue = QueueName::parse(job.queue()).map_err(|e| invalid(e.to_string()))?;
    let payload_schema = serde_json::to_value(schemars::schema_for!(J::Payload))
        .map_err(|e| invalid(format!("its payload schema is not JSON: {e}")))?;
    let spec = KindSpec {
        name,
        queue,
        payload_schema,
        max_attempts: job.max_attempts(),
        timeout_s: job.timeout_s(),
        priority: job.priority(),
        max_running: job.max_running(),
        long: job.long(),
    };
    spec.compile().map_err(|e| invalid(e.reason))?;
    Ok(spec)
}

impl Registry {
    /// Registers `job`, refusing an invalid spec or a kind registered before.
    pub(crate) fn register<J: Job>(&mut self, job: J) -> Result<(), WorkerError> {
        let spec = spec_of(&job)?;
        if self.entries.contains_key(&spec.name) {
            return Err(WorkerError::InvalidJob {
                kind: J::KIND.to_owned(),
                reason: "registered twice; register each kind once".to_owned(),
            });
        }
        let handler: Arc<dyn Handler> = Arc::new(Typed(Arc::new(job)));
        self.entries
            .insert(spec.name.clone(), Entry { spec, handler });
        Ok(())
    }

    /// The handler of `kind`, if registered.
    pub(crate) fn get(&self, kind: &JobKind) -> Option<Arc<dyn Handler>> {
        self.entries.get(kind).map(|e| e.handler.clone())
    }

    /// True if `kind` is registered as long ([`Job::long`]): its jobs run under a lease.
    pub(crate) fn is_long(&self, kind: &JobKind) -> bool {
        self.entries.get(kind).is_some_and(|e| e.spec.long)
    }

    /// The specs of every kind, by name.
    pub(crate) fn specs(&self) -> Vec<KindSpec> {
        self.entries.values().map(|e| e.spec.clone()).collect()
    }

    /// The queues of the kinds, each once, `default` first.
    pub(crate) fn queues(&self) -> Vec<QueueName> {
        let mut queues: Vec<QueueName> = self
            .entries
            .values()
            .map(|e| e.spec.queue.clone())
            .collect();
        queues.sort_by_key(|q| (!q.is_default(), q.clone()));
        queues.dedup();
        queues
    }

    /// True when nothing is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde_json::json;
    use std::time::Duration;

    #[derive(Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Width {
        width: u32,
    }

    struct Named<const BAD: u8>;

    macro_rules! job {
        ($ty:ty, $kind:literal, $queue:literal, $attempts:expr) => {
            impl Job for $ty {
                const KIND: &'static str = $kind;
                type Payload = Width;
                type Output = u32;
                fn queue(&self) -> &str {
                    $queue
                }
                fn max_attempts(&self) -> Option<u32> {
                    $attempts
                }
                async fn run(&self, _ctx: JobContext, p: Width) -> Result<u32, JobError> {
                    Ok(p.width * 2)
                }
            }
        };
    }
    job!(Named<0>, "resize", "images", None);
    job!(Named<1>, "Resize", "images", None);
    job!(Named<2>, "crop", "Images!", None);
    job!(Named<3>, "job", "default", None);
    job!(Named<4>, "thumb", "default", Some(0));

    #[test]
    fn every_builtin_kind_is_registered_with_its_spec() {
        let registry = builtin::registry();
        for spec in builtin::specs() {
            assert!(registry.get(&spec.name).is_some(), "{}", spec.name);
        }
        assert_eq!(registry.specs(), builtin::specs());
        // The same queues (the registry lists `default` first, then by name).
        let mut queues: Vec<String> = registry.queues().iter().map(|q| q.to_string()).collect();
        let mut builtin_queues = builtin::queues();
        queues.sort();
        builtin_queues.sort_unstable();
        assert_eq!(queues, builtin_queues);
    }

    #[test]
    fn invalid_jobs_are_refused_naming_the_kind_and_why() {
        let cases: Vec<(Result<(), WorkerError>, &str, &str)> = vec![
            (
                Registry::default().register(Named::<1>),
                "\"Resize\"",
                "kind name",
            ),
            (
                Registry::default().register(Named::<2>),
                "\"crop\"",
                "queue name",
            ),
            (
                Registry::default().register(Named::<3>),
                "\"job\"",
                "reserved",
            ),
            (
                Registry::default().register(Named::<4>),
                "\"thumb\"",
                "max_attempts",
            ),
            (
                {
                    let mut twice = Registry::default();
                    twice.register(Named::<0>).expect("first");
                    twice.register(Named::<0>)
                },
                "\"resize\"",
                "registered twice",
            ),
        ];
        for (outcome, kind, why) in cases {
            let text = outcome.expect_err(why).to_string();
            assert!(text.contains(kind) && text.contains(why), "{why}: {text}");
        }
    }

    #[tokio::test]
    async fn typed_payloads_are_checked_and_a_mismatch_is_permanent() {
        let mut registry = Registry::default();
        registry.register(Named::<0>).expect("valid");
        let kind = JobKind::parse("resize").expect("valid");
        let handler = registry.get(&kind).expect("registered");
        let ctx = || JobContext::standalone("resize", Duration::from_secs(1));
        assert_eq!(handler.run(ctx(), json!({"width": 4})).await, Ok(json!(8)));
        let Err(JobError::Permanent(message)) = handler.run(ctx(), json!({"width": "x"})).await
        else {
            panic!("a payload that does not deserialize fails permanently");
        };
        assert!(
            message.starts_with("invalid payload for kind resize: invalid type"),
            "{message}"
        );
        let spec = &registry.specs()[0];
        assert_eq!(spec.queue.as_str(), "images");
        assert_eq!(
            spec.payload_schema["properties"]["width"]["type"],
            "integer"
        );
    }
}
