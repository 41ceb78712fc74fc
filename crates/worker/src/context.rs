//! What a running job knows about itself: [`JobContext`], with its deadline and its cancellation.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use offload_shared::{JobId, JobKind, events::Progress};

use crate::{Artifact, InputFile};

/// What a handler knows about the job it runs.
///
/// Its [`cancellation`](JobContext::cancellation) fires when the worker begins its shutdown
/// grace period, or when the attempt's time limit is reached (the handler is then stopped). A
/// handler that gives up on a shutdown cancellation by returning an error has its job returned
/// to the queue without spending an attempt.
///
/// ```
/// use std::time::Duration;
/// use offload_worker::{JobContext, JobError};
///
/// async fn copy_chunks(ctx: &JobContext, chunks: u32) -> Result<u32, JobError> {
///     for done in 0..chunks {
///         if ctx.is_cancelled() {
///             // Stop between chunks; the job runs again from the queue (and must be idempotent).
///             return Err(JobError::retryable(format!("stopped after {done} chunks")));
///         }
///         tokio::time::sleep(Duration::from_millis(1)).await;
///     }
///     Ok(chunks)
/// }
///
/// # tokio_test_block_on(async {
/// let ctx = JobContext::standalone("copy", Duration::from_secs(5));
/// assert_eq!(copy_chunks(&ctx, 3).await, Ok(3));
/// ctx.cancellation.cancel();
/// assert!(copy_chunks(&ctx, 3).await.is_err());
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JobContext {
    /// The job's id: handlers must be idempotent per id, since delivery is at-least-once.
    pub id: JobId,
    /// The job's kind.
    pub kind: JobKind,
    /// 1 for the first run.
    pub attempt: u32,
    /// Runs allowed in all.
    pub max_attempts: u32,
    /// The worker running it.
    pub worker: Arc<str>,
    /// When this attempt's time limit ends: past it the handler is stopped and the attempt
    /// counts as failed (retryable).
    pub deadline: Instant,
    /// Fired when the worker shuts down (the grace period begins) or the deadline passes, and
    /// in any case once the attempt is over, so work the handler spawned with a clone stops too.
    pub cancellation: CancellationToken,
    /// Files uploaded with the job, by form field.
    inputs: Arc<BTreeMap<String, InputFile>>,
    /// Files the handler attached to its result, in order.
    artifacts: Arc<Mutex<Vec<Artifact>>>,
    /// The earliest a retry of this attempt may run, as the handler asked.
    retry_hint: Arc<Mutex<Option<Duration>>>,
    /// The latest progress the handler reported; the worker publishes it, at most once per
    /// `OFFLOAD_PROGRESS_INTERVAL_MS`.
    progress: Arc<tokio::sync::watch::Sender<Option<Progress>>>,
}

impl JobContext {
    /// A context for running a handler outside a worker, e.g. in a unit test: a fresh id,
    /// attempt 1 of 1, the worker name `standalone`, and a deadline `limit` from now.
    ///
    /// # Panics
    /// If `kind` is not a valid kind name.
    ///
    /// ```
    /// let ctx = offload_worker::JobContext::standalone("resize", std::time::Duration::from_secs(1));
    /// assert_eq!(ctx.attempt, 1);
    /// assert!(!ctx.is_cancelled());
    /// ```
    pub fn standalone(kind: &str, limit: Duration) -> Self {
        let kind = JobKind::parse(kind).expect("JobContext::standalone needs a valid kind name");
        JobContext {
            id: JobId::new(),
            kind,
            attempt: 1,
            max_attempts: 1,
            worker: "standalone".into(),
            deadline: Instant::now() + limit,
            cancellation: CancellationToken::new(),
            inputs: Arc::default(),
            artifacts: Arc::default(),
            retry_hint: Arc::default(),
            progress: Arc::new(tokio::sync::watch::Sender::new(None)),
        }
    }

    /// The context of a job the worker received: `inputs` are the files uploaded with it.
    pub(crate) fn received(
        id: JobId,
        kind: JobKind,
        (attempt, max_attempts): (u32, u32),
        worker: Arc<str>,
        deadline: Instant,
        cancellation: CancellationToken,
        inputs: Vec<InputFile>,
    ) -> Self {
        JobContext {
            id,
            kind,
            attempt,
            max_attempts,
            worker,
            deadline,
            cancellation,
            inputs: Arc::new(inputs.into_iter().map(|f| (f.field.clone(), f)).collect()),
            artifacts: Arc::default(),
            retry_hint: Arc::default(),
            progress: Arc::new(tokio::sync::watch::Sender::new(None)),
        }
    }

    /// Follows the progress the handler reports (the worker's side of [`Self::progress`]).
    pub(crate) fn progress_reports(&self) -> tokio::sync::watch::Receiver<Option<Progress>> {
        self.progress.subscribe()
    }

    /// This context with `file` uploaded under its field, e.g. for a handler's unit test.
    ///
    /// ```
    /// use offload_worker::{InputFile, JobContext};
    /// let ctx = JobContext::standalone("k", std::time::Duration::from_secs(1)).with_input(InputFile {
    ///     field: "image".into(),
    ///     filename: Some("a.png".into()),
    ///     content_type: "image/png".into(),
    ///     data: vec![1, 2].into(),
    /// });
    /// assert_eq!(ctx.input("image").map(|f| f.data.len()), Some(2));
    /// ```
    #[must_use]
    pub fn with_input(mut self, file: InputFile) -> Self {
        Arc::make_mut(&mut self.inputs).insert(file.field.clone(), file);
        self
    }

    /// The file uploaded with the job under form field `field`, if any.
    pub fn input(&self, field: &str) -> Option<&InputFile> {
        self.inputs.get(field)
    }

    /// The names of the form fields files were uploaded under.
    pub fn input_fields(&self) -> impl Iterator<Item = &str> {
        self.inputs.keys().map(String::as_str)
    }

    /// Attaches `artifact` to this attempt's result: kept by the API if the attempt succeeds
    /// (an attempt that fails drops what it attached). A second artifact of the same name
    /// replaces the first.
    ///
    /// ```
    /// use offload_worker::{Artifact, JobContext};
    /// let ctx = JobContext::standalone("k", std::time::Duration::from_secs(1));
    /// ctx.attach(Artifact::new("out.txt", "text/plain", "hi"));
    /// assert_eq!(ctx.attached()[0].name, "out.txt");
    /// ```
    pub fn attach(&self, artifact: Artifact) {
        let mut artifacts = self
            .artifacts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        artifacts.retain(|a| a.name != artifact.name);
        artifacts.push(artifact);
    }

    /// What was attached so far, in order.
    pub fn attached(&self) -> Vec<Artifact> {
        self.artifacts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Asks that, if this attempt fails retryably, the next attempt run no sooner than `wait`
    /// from now (e.g. a server's `Retry-After`); the longest of several calls counts. The worker
    /// then waits in the shortest retry delay at least `wait` (never jittered below it), but at
    /// most the retry cap (`OFFLOAD_RETRY_CAP_MS`): a longer wait is cut to the cap, and the
    /// job's `retrying` status says so. It has no effect on a success or a permanent failure.
    ///
    /// A hint lives on the context, not in [`JobError`](crate::JobError), so the error's two
    /// variants stay as they are for code that matches on them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use offload_worker::{JobContext, JobError};
    ///
    /// fn busy(ctx: &JobContext) -> JobError {
    ///     ctx.retry_not_before(Duration::from_secs(30));
    ///     JobError::retryable("the service said 503, retry after 30 s")
    /// }
    /// let ctx = JobContext::standalone("k", Duration::from_secs(1));
    /// assert!(!busy(&ctx).is_permanent());
    /// assert_eq!(ctx.retry_hint(), Some(Duration::from_secs(30)));
    /// ```
    pub fn retry_not_before(&self, wait: Duration) {
        let mut hint = self
            .retry_hint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *hint = Some(hint.map_or(wait, |earlier| earlier.max(wait)));
    }

    /// The wait asked with [`retry_not_before`](Self::retry_not_before), if any.
    pub fn retry_hint(&self) -> Option<Duration> {
        *self
            .retry_hint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True once the job was asked to stop.
    ///
    /// ```
    /// let ctx = offload_worker::JobContext::standalone("k", std::time::Duration::from_secs(1));
    /// assert!(!ctx.is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled()
    }

    /// Completes when the job is asked to stop; race it with the work (`tokio::select!`).
    ///
    /// ```
    /// # async fn work() {}
    /// async fn run(ctx: offload_worker::JobContext) -> Result<(), offload_worker::JobError> {
    ///     tokio::select! {
    ///         () = work() => Ok(()),
    ///         () = ctx.cancelled() => Err(offload_worker::JobError::retryable("cancelled")),
    ///     }
    /// }
    /// ```
    pub async fn cancelled(&self) {
        self.cancellation.cancelled().await;
    }

    /// Reports how far the job has got: `fraction` from 0 to 1 (clamped) and a few words (at
    /// most 200 characters kept). It shows on the job (`progress`) and in its event stream.
    /// Cheap to call often: the worker publishes the latest report at most once per
    /// `OFFLOAD_PROGRESS_INTERVAL_MS` (1 s by default), merging the ones in between.
    ///
    /// ```
    /// let ctx = offload_worker::JobContext::standalone("k", std::time::Duration::from_secs(1));
    /// for page in 1..=10 {
    ///     ctx.progress(f64::from(page) / 10.0, format!("page {page} of 10"));
    /// }
    /// assert_eq!(ctx.last_progress().map(|p| p.fraction), Some(1.0));
    /// ```
    pub fn progress(&self, fraction: f64, message: impl AsRef<str>) {
        self.progress
            .send_replace(Some(Progress::new(fraction, message.as_ref())));
    }

    /// The latest progress reported with [`progress`](Self::progress), if any.
    pub fn last_progress(&self) -> Option<Progress> {
        self.progress.borrow().clone()
    }

    /// Time left before the deadline (zero once it passed).
    ///
    /// ```
    /// use std::time::Duration;
    /// let ctx = offload_worker::JobContext::standalone("k", Duration::from_secs(60));
    /// assert!(ctx.remaining() <= Duration::from_secs(60));
    /// ```
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}
