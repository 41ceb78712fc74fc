//! The audit list: every state-changing request that succeeded, other than submitting jobs and
//! signing in or out, is recorded with the name of the key that made it: the dashboard's
//! actions and the API's own (cancel, retry, schedules, bulk cancel). A handler may add what
//! came of it ([`Outcome`]).

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};
use time::OffsetDateTime;

use crate::{auth::Caller, state::AppState, store::dashboard::NewAudit};

/// What an action came to, for its audit entry: put into the response's extensions.
#[derive(Debug, Clone)]
pub struct Outcome(pub String);

/// True for a request the audit list records.
fn audited(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        && !matches!(
            path,
            "/jobs" | "/jobs/batch" | "/session" | "/session/logout"
        )
}

/// The middleware (a `route_layer` inside authentication, so it sees the caller).
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = request.method().clone();
    let Some(matched) = matched.filter(|p| audited(&method, p)) else {
        return next.run(request).await;
    };
    let target = request.uri().path().to_owned();
    let caller = request.extensions().get::<Caller>().cloned();
    let response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        return response;
    }
    let Some(caller) = caller else {
        return response;
    };
    let outcome = response
        .extensions()
        .get::<Outcome>()
        .map_or_else(|| status.as_u16().to_string(), |o| o.0.clone());
    let action = format!("{method} {matched}");
    let entry = NewAudit {
        key_id: caller.key_id.as_deref(),
        key_name: &caller.name,
        action: &action,
        target: &target,
        detail: Some(&outcome),
    };
    if let Err(e) = state.store.audit(&entry, OffsetDateTime::now_utc()).await {
        // The action happened: its answer stands; the missing entry is logged.
        tracing::error!(key = %caller.name, %action, %target, error = %e, "audit entry not stored");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_audited_and_reads_submits_and_sign_ins_are_not() {
        assert!(audited(&Method::POST, "/jobs/{id}/cancel"));
        assert!(audited(&Method::POST, "/ui/dead/redrive"));
        assert!(audited(&Method::DELETE, "/schedules/{name}"));
        assert!(!audited(&Method::GET, "/ui/jobs"));
        assert!(!audited(&Method::POST, "/jobs"));
        assert!(!audited(&Method::POST, "/jobs/batch"));
        assert!(!audited(&Method::POST, "/session"));
    }
}
