//! Liveness and readiness probes.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::state::AppState;

/// `GET /health/live`: the process serves HTTP.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process serves HTTP")))]
pub async fn live() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `GET /health/ready`: 200 only while jobs can be accepted and tracked.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Connected to the broker, consuming events, store usable"),
        (status = 503, description = "Not ready; the body says what is missing"),
    ))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let store = match state.store.ping().await {
        Ok(()) if state.writer.is_running() => None,
        Ok(()) => Some("the job store writer has stopped".to_owned()),
        Err(e) => Some(e.to_string()),
    };
    let broker = state.broker_problem();
    let status = if store.is_none() && broker.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "not ready" },
        "broker": broker.unwrap_or("ok"),
        "store": store.as_deref().unwrap_or("ok"),
    });
    (status, Json(body))
}
