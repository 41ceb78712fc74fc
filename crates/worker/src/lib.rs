//! `offload-worker`: the worker SDK. Write a [`Job`] (a kind's name, typed payload and output,
//! and its `run`), add it to a [`Worker::builder`], and the worker consumes its kind's queue
//! with fair dispatch, runs each job under its time limit, retries or dead-letters failures,
//! reports lifecycle events, announces its kinds to the API and acknowledges each job only once
//! it has finished and its outcome is confirmed. The stock `offload-worker` binary is this SDK
//! with the built-in kinds ([`handlers::builtin`]; `image.thumbnail` with the default feature
//! `thumbnails`).
//!
//! ```no_run
//! use offload_worker::{Job, JobContext, JobError, Settings, Worker};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! struct Greet;
//!
//! /// Whom to greet.
//! #[derive(Deserialize, JsonSchema)]
//! struct Name {
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Greeting {
//!     text: String,
//! }
//!
//! impl Job for Greet {
//!     const KIND: &'static str = "greet";
//!     type Payload = Name;
//!     type Output = Greeting;
//!
//!     async fn run(&self, _ctx: JobContext, p: Name) -> Result<Greeting, JobError> {
//!         Ok(Greeting { text: format!("hello, {}", p.name) })
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), offload_worker::WorkerError> {
//!     let settings = Settings::load();
//!     offload_worker::telemetry::init(settings.log_format);
//!     let token = offload_worker::shutdown::on_signal();
//!     Worker::builder(settings).job(Greet).build().await?.run_until_stopped(token).await
//! }
//! ```
//!
//! # One dependency
//! `serde` and `schemars` are re-exported, so a worker's crate can derive with this crate's
//! versions without depending on them itself:
//!
//! ```
//! use offload_worker::{schemars::JsonSchema, serde::Deserialize};
//!
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(crate = "offload_worker::serde", deny_unknown_fields)]
//! #[schemars(crate = "offload_worker::schemars")]
//! struct Resize {
//!     /// Width in pixels.
//!     width: u32,
//! }
//!
//! let schema = offload_worker::schemars::schema_for!(Resize);
//! assert_eq!(schema.as_value()["properties"]["width"]["type"], "integer");
//! ```
//!
//! # Layout
//! - [`job`]: the [`Job`] trait: kind, queue, defaults, payload and output types, `run`.
//! - [`context`]: [`JobContext`]: the job's id, attempt, deadline and cancellation.
//! - [`files`]: [`InputFile`]s uploaded with a job and [`Artifact`]s returned with its result.
//! - [`job_error`]: [`JobError`] (retryable or permanent) and [`ResultExt`] for `?`.
//! - [`error`]: [`WorkerError`], why a worker could not be built or run.
//! - [`app`]: [`Worker::builder`] / [`Worker::run_until_stopped`]: connect, declare, announce,
//!   consume each queue, reconnect, drain.
//! - [`handlers`]: the registered jobs by kind behind JSON, and the built-in kinds
//!   (`handlers::thumbnail`, feature `thumbnails`: `image.thumbnail` and its pipeline).
//! - `consumer`: one delivery start to finish, and the ack / requeue / return / dead-letter decision.
//! - `consumers`: a session's consumers of every lane, paused while long jobs fill a queue.
//! - `gate`: which delivery starts next: at most `prefetch` per queue, high ones first.
//! - `announcer`: the announcements and heartbeats the API learns kinds and workers from.
//! - `reporter`: confirmed publishing of events, retries, returns, announcements, dead letters.
//! - `metrics`: jobs in flight and how deliveries were settled.
//! - `http`: the `/metrics` and health endpoint.

pub mod app;
pub mod context;
pub mod error;
pub mod files;
pub mod handlers;
pub mod job;
pub mod job_error;

mod announcer;
mod cancels;
mod consumer;
mod consumers;
mod gate;
mod http;
mod metrics;
mod reporter;

pub use app::{Worker, WorkerBuilder};
pub use context::JobContext;
pub use error::WorkerError;
pub use files::{Artifact, InputFile};
pub use job::Job;
pub use job_error::{JobError, ResultExt};

/// Settings from defaults, `OFFLOAD_*` variables and flags, the same the stock worker reads.
pub use offload_shared::Settings;
/// The cancellation token SIGTERM and Ctrl-C fire: `shutdown::on_signal()`.
pub use offload_shared::shutdown;
/// Tracing set-up: `telemetry::init(settings.log_format)`.
pub use offload_shared::telemetry;
/// The names a job carries.
pub use offload_shared::{JobId, JobKind, Priority};
/// Re-exported so a worker's crate can derive its payload schemas with this crate's version:
/// `#[derive(offload_worker::schemars::JsonSchema)] #[schemars(crate = "offload_worker::schemars")]`.
pub use schemars;
/// Re-exported for payload and output derives: `#[serde(crate = "offload_worker::serde")]`.
pub use serde;
/// Re-exported: `tokio_util::sync::CancellationToken` is what [`Worker::run_until_stopped`] takes.
pub use tokio_util::sync::CancellationToken;
