//! `offload-worker`: consumes jobs with fair dispatch, runs their handlers, reports lifecycle
//! events and acknowledges each job only once it has finished and its outcome is confirmed.
//!
//! # Layout
//! - [`app`]: `Application::build` / `run_until_stopped`: connect, declare, consume, drain.
//! - [`consumer`]: one delivery start to finish, and the ack / requeue / dead-letter decision.
//! - [`handlers`]: the `Handler` trait, the registry by kind and the built-in kinds.
//! - [`reporter`]: confirmed publishing of lifecycle events, retries and dead letters.
//! - [`metrics`]: jobs in flight and how deliveries were settled.
//! - [`http`]: the `/metrics` and health endpoint.

pub mod app;
pub mod consumer;
pub mod handlers;
pub mod http;
pub mod metrics;
pub mod reporter;

pub use app::Application;
