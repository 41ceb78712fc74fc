//! What a running job knows about itself: [`JobContext`], with its deadline and its cancellation.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use offload_shared::{JobId, JobKind};

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
        }
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
