//! Everything the Offload API and worker must agree on, and the one HTTP server both run.
//!
//! # Layout
//! - [`session`]: opening a session: connect, declare, the confirm and plain channels.
//! - `secret_url`: URLs that may hold a password: checks, value-free errors, password files.
//! - [`settings`]: the one typed settings struct: defaults, `OFFLOAD_*` environment, `--flags`, validation.
//! - [`http_server`]: serving a router on hyper with timeouts, size caps, a connection limit, bounded shutdown.
//! - [`healthcheck`]: the `healthcheck` subcommand's probe of the process's own HTTP port.
//! - [`limits`]: bounds on JSON that crosses the wire: nesting depth ([`limits::MAX_JSON_DEPTH`]) and size.
//! - [`kinds`]: kinds as data: names, queue names, [`kinds::KindSpec`] and compiled payload schemas.
//! - [`announce`]: the announcements and heartbeats workers send about themselves and their kinds.
//! - [`build`]: building the workspace's binaries from the tests and the benchmark.
//! - [`envelope`]: the versioned job envelope (wire contract v1) and [`envelope::JobId`].
//! - [`artifacts`]: artifact messages: their headers, [`artifacts::ArtifactMeta`] and name checks.
//! - [`control`]: control messages the API sends every worker (cancels).
//! - [`events`]: lifecycle events workers publish and the API applies, and [`events::JobStatus`].
//! - [`priority`]: job priorities (`normal`, `high`) and the high lane beside every work queue.
//! - [`retry`]: exponential back-off with jitter, carried out by TTL'd delay queues.
//! - [`topology`]: exchanges, queues and their arguments, declared idempotently by both binaries.
//! - [`frames`]: the frame and message size limits every publish is checked against first.
//! - [`broker`]: connecting and confirmed publishing, each with a deadline.
//! - [`telemetry`]: tracing set-up (JSON in containers, readable in a terminal).
//! - [`shutdown`]: the cancellation token that SIGTERM / Ctrl-C trigger.

pub mod announce;
pub mod artifacts;
pub mod broker;
pub mod build;
pub mod control;
pub mod envelope;
pub mod events;
pub mod frames;
pub mod healthcheck;
pub mod http_server;
pub mod kinds;
pub mod limits;
pub mod priority;
pub mod retry;
mod secret_url;
pub mod session;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod topology;

pub use envelope::{JobEnvelope, JobId};
pub use events::{JobEvent, JobStatus};
pub use kinds::JobKind;
pub use priority::Priority;
pub use settings::{QueueType, Settings};
