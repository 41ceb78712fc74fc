//! The worker's small HTTP endpoint: `/metrics` for Prometheus and the health probes an
//! orchestrator (or `offload-worker healthcheck`) asks.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::metrics::WorkerMetrics;

/// What the endpoint reads.
#[derive(Clone)]
pub struct Probe {
    /// The worker's metrics.
    pub metrics: Arc<WorkerMetrics>,
    /// True while the worker is consuming.
    pub consuming: Arc<AtomicBool>,
}

/// The endpoint's routes.
pub fn router(probe: Probe) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .with_state(probe)
}

async fn metrics(State(probe): State<Probe>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        probe.metrics.encode(),
    )
}

async fn ready(State(probe): State<Probe>) -> impl IntoResponse {
    if probe.consuming.load(Ordering::Relaxed) {
        (StatusCode::OK, "consuming")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not consuming (connecting to the broker)",
        )
    }
}
