//! The built-in kinds by queue: `noop` and `sleep` (with its failure switches) on `default`,
//! `image.thumbnail` on `thumbnails` (feature `thumbnails`), `pdf.render` on `documents`
//! (feature `documents`), `http.request` on `webhooks` (feature `webhooks`); and the stock
//! worker's choice of them by `OFFLOAD_QUEUES`.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use offload_shared::{Settings, kinds::KindSpec, settings::QueueList};

use super::Registry;
#[cfg(feature = "webhooks")]
use super::http_request::HttpRequest;
#[cfg(feature = "documents")]
use super::pdf::PdfRender;
#[cfg(feature = "thumbnails")]
use super::thumbnail::ImageThumbnail;
use crate::{Job, JobContext, JobError, WorkerBuilder, WorkerError};

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

/// What the built-in kinds are added to: the stock worker's builder, or a bare registry.
pub(crate) trait AddJob: Sized {
    /// `self` with `job`'s kind added.
    fn add<J: Job>(self, job: J) -> Self;
}

impl AddJob for WorkerBuilder {
    fn add<J: Job>(self, job: J) -> Self {
        self.job(job)
    }
}

impl AddJob for Registry {
    fn add<J: Job>(mut self, job: J) -> Self {
        // The built-in specs are the project's own and valid; a test keeps them so.
        let _ = self.register(job);
        self
    }
}

/// A queue's name and the function that adds its built-in kinds, configured by the settings
/// (which may be refused, e.g. an unreadable `OFFLOAD_WEBHOOK_SECRETS_FILE`).
type QueueKinds<B> = (&'static str, fn(B, &Settings) -> Result<B, WorkerError>);

/// The built-in kinds by queue, each queue with the function that adds its kinds: a new
/// built-in kind is one line here.
fn by_queue<B: AddJob>() -> Vec<QueueKinds<B>> {
    vec![
        ("default", |b, _| Ok(b.add(Noop).add(Sleep))),
        #[cfg(feature = "thumbnails")]
        ("thumbnails", |b, s| {
            let kind =
                ImageThumbnail::from_settings(s).map_err(|reason| WorkerError::InvalidJob {
                    kind: ImageThumbnail::KIND.to_owned(),
                    reason,
                })?;
            Ok(b.add(kind))
        }),
        #[cfg(feature = "documents")]
        ("documents", |b, _| Ok(b.add(PdfRender))),
        #[cfg(feature = "webhooks")]
        ("webhooks", |b, s| {
            let kind = HttpRequest::from_settings(s).map_err(|reason| WorkerError::InvalidJob {
                kind: HttpRequest::KIND.to_owned(),
                reason,
            })?;
            Ok(b.add(kind))
        }),
    ]
}

/// The queues of the built-in kinds, in the order the stock worker lists them.
///
/// ```
/// assert_eq!(offload_worker::handlers::builtin::queues()[0], "default");
/// ```
pub fn queues() -> Vec<&'static str> {
    by_queue::<Registry>().into_iter().map(|(q, _)| q).collect()
}

/// `target` with the built-in kinds of `queues` added, or of every queue when `queues` is
/// empty; a listed queue no built-in kind uses is refused, naming the known ones.
fn add_for<B: AddJob>(
    mut target: B,
    queues: &QueueList,
    settings: &Settings,
) -> Result<B, WorkerError> {
    let table = by_queue::<B>();
    let unknown: Vec<&str> = queues
        .0
        .iter()
        .map(|q| q.as_str())
        .filter(|q| !table.iter().any(|(name, _)| name == q))
        .collect();
    if !unknown.is_empty() {
        return Err(WorkerError::UnknownQueues {
            unknown: unknown.join(", "),
            known: queues_text(&table),
        });
    }
    for (queue, add) in table {
        if queues.is_empty() || queues.0.iter().any(|q| q.as_str() == queue) {
            target = add(target, settings)?;
        }
    }
    Ok(target)
}

fn queues_text<B>(table: &[QueueKinds<B>]) -> String {
    table.iter().map(|(q, _)| *q).collect::<Vec<_>>().join(", ")
}

/// The stock worker: `builder` with the built-in kinds of `queues` (`OFFLOAD_QUEUES`; every
/// built-in kind when empty). A listed queue no built-in kind uses is an error naming the
/// built-in queues.
///
/// ```
/// use offload_worker::{Settings, Worker, handlers::builtin};
/// let settings = Settings::from_env().unwrap();
/// let builder = builtin::stock(Worker::builder(settings.clone()), &settings).unwrap();
/// ```
pub fn stock(builder: WorkerBuilder, settings: &Settings) -> Result<WorkerBuilder, WorkerError> {
    add_for(builder, &settings.queues, settings)
}

/// The built-in kinds of `queues` (all of them when empty), registered.
#[cfg(all(test, feature = "documents", feature = "thumbnails"))]
pub(crate) fn registry_for(queues: &QueueList) -> Result<Registry, WorkerError> {
    add_for(Registry::default(), queues, &test_settings())
}

/// Settings from defaults and the environment, for the registries of unit tests.
#[cfg(all(test, feature = "documents", feature = "thumbnails"))]
fn test_settings() -> Settings {
    Settings::from_env().unwrap_or_else(|e| panic!("settings from the environment: {e}"))
}

/// Every built-in kind, registered.
pub(crate) fn registry() -> Registry {
    Settings::from_env()
        .ok()
        .and_then(|settings| add_for(Registry::default(), &QueueList::default(), &settings).ok())
        .unwrap_or_default()
}

async fn sleep(ctx: JobContext, p: SleepPayload) -> Result<Value, JobError> {
    if p.ms > MAX_SLEEP_MS {
        return Err(JobError::Permanent(format!(
            "ms is {}, at most {MAX_SLEEP_MS} is allowed",
            p.ms
        )));
    }
    // Reports how much of the sleep is done every 100 ms (the worker publishes the latest at
    // most once per OFFLOAD_PROGRESS_INTERVAL_MS). Its context's cancellation is not watched.
    let total = Duration::from_millis(p.ms);
    let started = tokio::time::Instant::now();
    loop {
        let elapsed = started.elapsed();
        if elapsed >= total {
            break;
        }
        ctx.progress(
            elapsed.as_secs_f64() / total.as_secs_f64(),
            format!("slept {} of {} ms", elapsed.as_millis(), p.ms),
        );
        tokio::time::sleep((total - elapsed).min(Duration::from_millis(100))).await;
    }
    ctx.progress(1.0, format!("slept {} ms", p.ms));
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

    #[cfg(all(feature = "documents", feature = "thumbnails"))]
    fn names(registry: &Registry) -> Vec<(String, String)> {
        registry
            .specs()
            .iter()
            .map(|s| (s.name.to_string(), s.queue.to_string()))
            .collect()
    }

    #[cfg(all(feature = "documents", feature = "thumbnails"))]
    fn list(raw: &[&str]) -> QueueList {
        QueueList(
            raw.iter()
                .map(|q| offload_shared::kinds::QueueName::parse(q).expect("valid"))
                .collect(),
        )
    }

    #[cfg(all(feature = "documents", feature = "thumbnails"))]
    #[test]
    fn every_builtin_kind_is_on_its_queue() {
        let pair = |k: &str, q: &str| (k.to_owned(), q.to_owned());
        assert_eq!(
            names(&registry()),
            [
                pair("http.request", "webhooks"),
                pair("image.thumbnail", "thumbnails"),
                pair("noop", "default"),
                pair("pdf.render", "documents"),
                pair("sleep", "default"),
            ]
        );
        assert_eq!(queues(), ["default", "thumbnails", "documents", "webhooks"]);
    }

    #[cfg(all(feature = "documents", feature = "thumbnails"))]
    #[test]
    fn the_listed_queues_select_their_kinds_and_an_unknown_one_is_refused() {
        let pair = |k: &str, q: &str| (k.to_owned(), q.to_owned());
        assert_eq!(
            names(&registry_for(&list(&["documents"])).expect("known")),
            [pair("pdf.render", "documents")]
        );
        assert_eq!(
            names(&registry_for(&list(&["default"])).expect("known")),
            [pair("noop", "default"), pair("sleep", "default")]
        );
        assert_eq!(
            names(
                &registry_for(&list(&["documents", "default", "thumbnails", "webhooks"]))
                    .expect("known")
            ),
            names(&registry())
        );
        assert_eq!(
            names(&registry_for(&QueueList::default()).expect("all")),
            names(&registry())
        );
        let refused = registry_for(&list(&["default", "videos", "audio"]))
            .err()
            .expect("videos is no built-in queue")
            .to_string();
        assert!(
            refused.contains("lists videos, audio,")
                && refused.contains("queues are default, thumbnails, documents, webhooks"),
            "{refused}"
        );
    }

    #[test]
    fn the_sleep_schema_refuses_what_its_handler_refuses() {
        let sleep = specs()
            .into_iter()
            .find(|s| s.name.as_str() == "sleep")
            .expect("sleep");
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
