//! `offload-api`: the HTTP front door. It accepts jobs, publishes them to RabbitMQ with
//! publisher confirms, and keeps each job's status from the workers' lifecycle events.
//!
//! # Layout
//! - [`app`]: `Application::build` / `run_until_stopped`: connect, declare, serve, drain.
//! - [`auth`]: API keys, scopes, browser sessions, the same-origin rule, per-key rate limits,
//!   and the `keys` command.
//! - [`routes`]: the router; [`routes::jobs`] submit and status, [`routes::registry`] kinds and
//!   workers, [`routes::result`] results and artifacts, [`routes::health`] probes,
//!   [`routes::pages`] the browser pages.
//! - [`kinds`]: the kinds the API accepts and their compiled payload schemas.
//! - [`submit`]: parsing a `POST /jobs` body (JSON or form) into a checked `NewJob`.
//! - [`broker_link`]: the supervised broker connection: reconnects, redeclares, resumes.
//! - [`depth`]: reading the queues' depth for the metrics.
//! - [`publisher`]: confirmed, persistent, mandatory publishing of job envelopes.
//! - [`accept`]: settling each published job by the broker's answer; the reconciler.
//! - [`events`]: consuming lifecycle events into the store.
//! - [`artifacts`]: consuming artifact messages (files beside results) into the store.
//! - [`announcements`]: consuming worker announcements: workers and their kinds.
//! - [`openapi`]: the OpenAPI document generated from the handlers, and its docs page.
//! - [`metrics`]: the Prometheus metrics and the request-counting middleware.
//! - [`store`]: the job store (SQLite or PostgreSQL, versioned migrations) and its batching
//!   writer.
//! - [`leases`]: long jobs whose worker stopped renewing its lease, started again.
//! - [`limits`]: concurrency limits: the dispatcher that releases held jobs as slots free.
//! - [`schedules`]: cron schedules: their timing, and the ticker that makes each tick's job once.
//! - [`retention`]: the background task deleting finished jobs and expired idempotency keys.
//! - [`state`]: the shared `AppState`.
//! - [`error`]: `ApiError` and its problem+json responses.

pub mod accept;
pub mod announcements;
pub mod app;
pub mod artifacts;
pub mod auth;
pub mod broker_link;
pub mod dashboard;
pub mod depth;
pub mod error;
pub mod events;
pub mod kinds;
pub mod leases;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod publisher;
pub mod retention;
pub mod routes;
pub mod schedules;
pub mod state;
pub mod store;
pub mod submit;

pub use app::Application;
