//! The HTTP routes and the middleware around them.

pub mod cancel;
pub mod health;
pub mod jobs;
pub mod live;
pub mod pages;
pub mod registry;
pub mod result;
pub mod schedules;

use axum::{
    Router,
    extract::Request,
    http::HeaderMap,
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{auth, error::FailureCause, metrics, openapi, state::AppState};

/// Every route of the API, as the OpenAPI document must list them.
pub const ROUTES: [&str; 23] = [
    "/",
    "/session",
    "/session/logout",
    "/kinds",
    "/workers",
    "/jobs",
    "/jobs/batch",
    "/jobs/cancel",
    "/jobs/{id}",
    "/jobs/{id}/cancel",
    "/jobs/{id}/events",
    "/jobs/{id}/retry",
    "/jobs/{id}/result",
    "/schedules",
    "/schedules/{name}",
    "/schedules/{name}/pause",
    "/schedules/{name}/resume",
    "/schedules/{name}/run",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
];

/// Every route of the API.
pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/", get(pages::index))
        .route("/openapi.json", get(openapi::spec))
        .route("/docs", get(openapi::docs))
        .route("/jobs", post(jobs::submit).get(jobs::list_jobs))
        .route("/jobs/batch", post(jobs::submit_batch))
        .route("/jobs/{id}", get(jobs::get_job))
        .route("/jobs/cancel", post(cancel::cancel_jobs))
        .route("/jobs/{id}/cancel", post(cancel::cancel_job))
        .route("/jobs/{id}/events", get(live::job_events))
        .route("/jobs/{id}/retry", post(jobs::retry_job))
        .route("/jobs/{id}/result", get(result::get_result))
        .route(
            "/schedules",
            post(schedules::create_schedule).get(schedules::list_schedules),
        )
        .route(
            "/schedules/{name}",
            get(schedules::get_schedule).delete(schedules::delete_schedule),
        )
        .route("/schedules/{name}/pause", post(schedules::pause_schedule))
        .route("/schedules/{name}/resume", post(schedules::resume_schedule))
        .route("/schedules/{name}/run", post(schedules::run_schedule))
        .route("/kinds", get(registry::list_kinds))
        .route("/workers", get(registry::list_workers))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics::serve))
        .route("/session", post(auth::session::sign_in))
        .route("/session/logout", post(auth::session::sign_out));
    crate::dashboard::routes(router)
        // Inside authentication: every action that succeeded, with the caller's key.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::dashboard::audit::record,
        ))
        // Inside the request counting, so refusals are counted too.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track_requests,
        ))
        .layer(middleware::from_fn(log_failures))
        // Every request gets an `x-request-id` (the client's, or a new UUID): it is in the
        // request's log span, in the response, and in the AMQP headers of the job it submits.
        .layer(PropagateRequestIdLayer::x_request_id())
        // `on_failure(())`: 5xx are logged once, with their cause, by `log_failures`.
        .layer(TraceLayer::new_for_http().on_failure(()).make_span_with(|request: &Request| {
            let id = request
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Outermost: a client's id the layer above would keep must be short and plain, since it
        // travels in the job's AMQP headers (a 150 KB one once closed the broker connection).
        .layer(middleware::from_fn(plain_request_id))
        .with_state(state)
}

/// Longest client `x-request-id` kept; a longer or less plain one is replaced by a new UUID.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// True for an id of 1 to [`MAX_REQUEST_ID_LEN`] characters of `[A-Za-z0-9._-]`.
pub fn is_plain_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Drops a client's `x-request-id` that is not plain (or comes more than once), so the
/// request-id layer gives the request a new UUID instead.
async fn plain_request_id(mut request: Request, next: Next) -> Response {
    let ids = request.headers().get_all("x-request-id");
    let mut values = ids.iter();
    let keep = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(id), None) => is_plain_request_id(id.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        let len: usize = request
            .headers()
            .get_all("x-request-id")
            .iter()
            .map(|v| v.len())
            .sum();
        tracing::debug!(
            len,
            "client x-request-id is not 1-{MAX_REQUEST_ID_LEN} characters of [A-Za-z0-9._-]; replaced by a new one"
        );
        request.headers_mut().remove("x-request-id");
    }
    next.run(request).await
}

/// Logs the cause chain of every server-side failure once, here, instead of at each `?`.
async fn log_failures(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if let Some(FailureCause(cause)) = response.extensions().get::<FailureCause>() {
        tracing::error!(%method, %path, status = response.status().as_u16(), error = %cause, "request failed");
    }
    response
}

/// True when the client (a browser) prefers HTML over JSON.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let position = |needle: &str| accept.find(needle);
    match (position("text/html"), position("application/json")) {
        (Some(html), Some(json)) => html < json,
        (Some(_), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_request_ids_are_kept() {
        let long = "a".repeat(MAX_REQUEST_ID_LEN);
        let too_long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        let cases: [(&str, bool, &str); 7] = [
            ("0191-abc_DEF.9", true, "plain"),
            (long.as_str(), true, "at the limit"),
            (too_long.as_str(), false, "one over the limit"),
            ("", false, "empty"),
            ("a b", false, "a space"),
            ("a/b", false, "a slash"),
            ("é", false, "not ASCII"),
        ];
        for (id, kept, why) in cases {
            assert_eq!(is_plain_request_id(id.as_bytes()), kept, "{why}");
        }
    }

    #[test]
    fn browsers_prefer_html_and_clients_do_not() {
        let with = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(axum::http::header::ACCEPT, accept.parse().expect("header"));
            prefers_html(&h)
        };
        assert!(with(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(!with("*/*"));
        assert!(!with("application/json"));
        assert!(!with("application/json, text/html"));
        assert!(!prefers_html(&HeaderMap::new()));
    }
}
