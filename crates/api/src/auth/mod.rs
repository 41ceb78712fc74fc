//! Who is calling, and what they may do: API keys (`Authorization: Bearer ofl_…`) or a browser
//! session cookie, scopes per route, the same-origin rule for state-changing requests, and
//! per-key rate limits.
//!
//! - [`token`]: making and hashing tokens and session ids.
//! - [`rate`]: the per-key token buckets.
//! - [`session`]: signing in and out of the browser pages.
//! - [`cache`]: the keys looked up in the last second.
//! - [`cli`]: `offload-api keys create | list | revoke`.

pub mod cache;
pub mod cli;
pub mod rate;
pub mod session;
pub mod token;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use time::OffsetDateTime;

use offload_shared::settings::{AuthMode, Scope};

use crate::{error::ApiError, state::AppState, store::keys::KeyRecord};

/// The cookie of a browser session.
pub const SESSION_COOKIE: &str = "offload_session";

/// The caller of a request, as the [`authenticate`] middleware found it; handlers read it with
/// `Extension<Caller>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id (the `owner` of the jobs it submits); `None` when authentication is off.
    pub key_id: Option<String>,
    /// The key's name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Its own rate limit (per second, burst), if it has one.
    pub rate: Option<(u32, u32)>,
    /// For a browser session: the token its dashboard forms carry and its actions must send
    /// back ([`session::csrf_token`]). `None` for a bearer token or without authentication.
    pub csrf: Option<String>,
}

impl Caller {
    /// The caller when `OFFLOAD_AUTH=off`: anyone, with every right.
    pub fn anonymous() -> Self {
        Caller {
            key_id: None,
            name: "anonymous".to_owned(),
            scopes: vec![Scope::Admin],
            rate: None,
            csrf: None,
        }
    }

    /// The caller a key makes.
    pub fn of_key(key: KeyRecord) -> Self {
        Caller {
            key_id: Some(key.id),
            name: key.name,
            scopes: key.scopes,
            rate: key.rate,
            csrf: None,
        }
    }

    /// True for an admin: every route, every key's jobs.
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// True if it may use a route that needs `scope` (an admin may use any).
    pub fn allows(&self, scope: Scope) -> bool {
        self.is_admin() || self.scopes.contains(&scope)
    }

    /// The owner whose jobs it may see: `None` (all) for an admin, else its own key id.
    pub fn visible_owner(&self) -> Option<&str> {
        if self.is_admin() {
            None
        } else {
            // A non-admin caller always has a key id; an empty one would match no job.
            Some(self.key_id.as_deref().unwrap_or(""))
        }
    }

    /// An `Idempotency-Key` as stored: prefixed with this caller's key id (a UUID of fixed
    /// length, then `/`), so the same key sent with two API keys is two jobs.
    pub fn scoped_key(&self, key: String) -> String {
        match &self.key_id {
            Some(id) => format!("{id}/{key}"),
            None => key,
        }
    }

    /// Takes `cost` submits from this caller's rate limit.
    pub fn charge(&self, state: &AppState, cost: u32) -> Result<rate::Quota, ApiError> {
        // With OFFLOAD_AUTH=off there are no keys to hold quotas: every client would share one
        // bucket, so a single busy client would throttle all. The anonymous caller is limited
        // only by the queue-depth back-pressure.
        let (per_s, burst) = if self.key_id.is_none() {
            (ANONYMOUS_RATE, ANONYMOUS_RATE)
        } else {
            self.rate.unwrap_or((
                state.settings.rate_limit_per_s,
                state.settings.rate_limit_burst,
            ))
        };
        if cost > burst {
            return Err(ApiError::Invalid(format!(
                "this request holds {cost} jobs, more than this key may submit at once ({burst}); \
                 send smaller batches"
            )));
        }
        let bucket = self.key_id.as_deref().unwrap_or("");
        state
            .limiter
            .take(bucket, per_s, burst, cost)
            .map_err(ApiError::RateLimited)
    }
}

/// The rate and burst of the anonymous caller (`OFFLOAD_AUTH=off`): the settings' largest.
const ANONYMOUS_RATE: u32 = 1_000_000;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: probes, the API document, the sign-in page. A caller is still looked up, for
    /// the pages that show more to a signed-in browser.
    Open,
    /// A caller with this scope (or admin).
    Needs(Scope),
}

/// What the route `path` (as matched, e.g. `/jobs/{id}`) needs for `method`. A route this list
/// does not name needs `admin`, so a new route is never open by mistake.
pub fn access(method: &Method, path: &str) -> Access {
    if let Some(access) = crate::dashboard::access(method.as_str(), path) {
        return access;
    }
    match (method.as_str(), path) {
        (_, "/" | "/session" | "/session/logout")
        | (_, "/health/live" | "/health/ready" | "/openapi.json" | "/docs") => Access::Open,
        // A submit key cancels its own jobs; a bulk cancel (`/jobs/cancel`) needs admin.
        ("POST", "/jobs" | "/jobs/batch" | "/jobs/{id}/cancel") => Access::Needs(Scope::Submit),
        (
            "GET" | "HEAD",
            "/jobs" | "/jobs/{id}" | "/jobs/{id}/result" | "/jobs/{id}/events" | "/kinds"
            | "/workers" | "/schedules" | "/schedules/{name}",
        ) => Access::Needs(Scope::Read),
        ("GET" | "HEAD", "/metrics") => Access::Needs(Scope::Metrics),
        _ => Access::Needs(Scope::Admin),
    }
}

/// True for methods that change something.
fn changes_state(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The same-origin rule: a state-changing request that says where it comes from (`Origin`, or
/// else `Sec-Fetch-Site`) must come from this API's own origin (the request's `Host`). A
/// request with neither (curl, services) is a client's own, not a browser's on behalf of a
/// page, and passes.
pub fn check_origin(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if !changes_state(method) {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // `scheme://host[:port]`; the scheme is not compared (TLS may end at a proxy).
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        if host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Err(ApiError::CrossOrigin(format!(
                "a {method} from origin {:?} to this API ({host:?}) is refused: state-changing \
                 requests from a browser must come from the API's own pages",
                truncate(origin)
            )));
        }
        return Ok(());
    }
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site == Some("cross-site") {
        return Err(ApiError::CrossOrigin(format!(
            "a cross-site {method} (Sec-Fetch-Site: cross-site) is refused: state-changing \
             requests from a browser must come from the API's own pages"
        )));
    }
    Ok(())
}

fn truncate(text: &str) -> &str {
    offload_shared::limits::first_chars(text, 100)
}

/// Why no caller was found.
enum NoCaller {
    /// No credentials at all.
    Missing,
    /// Credentials that are not (or no longer) a usable key.
    Invalid(&'static str),
}

/// The credentials of a request: `Authorization: Bearer`, else the session cookie.
async fn find_caller(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Caller, Result<NoCaller, ApiError>> {
    if state.settings.auth == AuthMode::Off {
        return Ok(Caller::anonymous());
    }
    let now = OffsetDateTime::now_utc();
    let usable = |key: Option<KeyRecord>, what: &'static str| match key {
        Some(key) if key.is_usable(now) => Ok(Caller::of_key(key)),
        Some(_) => Err(Ok(NoCaller::Invalid(
            "the API key has expired or was revoked",
        ))),
        None => Err(Ok(NoCaller::Invalid(what))),
    };
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("");
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
        else {
            return Err(Ok(NoCaller::Invalid(
                "the Authorization header is not `Bearer <token>`",
            )));
        };
        if !token::is_token_shaped(token) {
            return Err(Ok(NoCaller::Invalid(
                "the token is not an Offload API token",
            )));
        }
        let hash = token::hash(token);
        let key = match state.key_cache.get(&hash) {
            Some(key) => Some(key),
            None => {
                let key = state
                    .store
                    .key_by_hash(&hash)
                    .await
                    .map_err(|e| Err(e.into()))?;
                if let Some(key) = &key {
                    state.key_cache.put(hash, key.clone());
                }
                key
            }
        };
        return usable(key, "the token is not a known API key");
    }
    if let Some(session) = session::cookie(headers) {
        if !token::is_session_shaped(session) {
            return Err(Ok(NoCaller::Invalid(
                "the session cookie is not valid; sign in again",
            )));
        }
        let key = state
            .store
            .session_key(&token::hash(session), now)
            .await
            .map_err(|e| Err(e.into()))?;
        return usable(key, "the session has ended; sign in again").map(|caller| Caller {
            csrf: Some(session::csrf_token(session)),
            ..caller
        });
    }
    Err(Ok(NoCaller::Missing))
}

/// The middleware (a `route_layer`, so it sees the matched route): the same-origin rule first,
/// then the caller and the route's scope. Puts the [`Caller`] into the request's extensions.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Err(e) = check_origin(request.method(), request.headers()) {
        return e.into_response();
    }
    let path = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let needs = access(request.method(), &path);
    let found = find_caller(&state, request.headers()).await;
    match (needs, found) {
        (Access::Open, Ok(caller)) => {
            request.extensions_mut().insert(caller);
        }
        (Access::Open, Err(_)) => {}
        (Access::Needs(scope), Ok(caller)) if caller.allows(scope) => {
            request.extensions_mut().insert(caller);
        }
        (Access::Needs(scope), Ok(_)) => return ApiError::InsufficientScope(scope).into_response(),
        (Access::Needs(_), Err(Ok(NoCaller::Missing))) => {
            return ApiError::Unauthenticated(None).into_response();
        }
        (Access::Needs(_), Err(Ok(NoCaller::Invalid(why)))) => {
            return ApiError::Unauthenticated(Some(why)).into_response();
        }
        (Access::Needs(_), Err(Err(e))) => return e.into_response(),
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scopes: &[Scope]) -> Caller {
        Caller {
            key_id: Some("k1".into()),
            name: "k".into(),
            scopes: scopes.to_vec(),
            rate: None,
            csrf: None,
        }
    }

    #[test]
    fn routes_need_their_scope_and_admin_may_do_anything() {
        let cases = [
            (Method::POST, "/jobs", Access::Needs(Scope::Submit)),
            (Method::POST, "/jobs/batch", Access::Needs(Scope::Submit)),
            (
                Method::POST,
                "/jobs/{id}/cancel",
                Access::Needs(Scope::Submit),
            ),
            (Method::POST, "/jobs/cancel", Access::Needs(Scope::Admin)),
            (Method::GET, "/jobs", Access::Needs(Scope::Read)),
            (Method::GET, "/jobs/{id}", Access::Needs(Scope::Read)),
            (Method::GET, "/jobs/{id}/events", Access::Needs(Scope::Read)),
            (Method::GET, "/kinds", Access::Needs(Scope::Read)),
            (Method::GET, "/workers", Access::Needs(Scope::Read)),
            (Method::GET, "/schedules", Access::Needs(Scope::Read)),
            (Method::GET, "/schedules/{name}", Access::Needs(Scope::Read)),
            (Method::POST, "/schedules", Access::Needs(Scope::Admin)),
            (
                Method::DELETE,
                "/schedules/{name}",
                Access::Needs(Scope::Admin),
            ),
            (
                Method::POST,
                "/schedules/{name}/run",
                Access::Needs(Scope::Admin),
            ),
            (
                Method::POST,
                "/jobs/{id}/retry",
                Access::Needs(Scope::Admin),
            ),
            (Method::GET, "/metrics", Access::Needs(Scope::Metrics)),
            (Method::GET, "/something/new", Access::Needs(Scope::Admin)),
            (Method::GET, "/health/live", Access::Open),
            (Method::GET, "/health/ready", Access::Open),
            (Method::GET, "/openapi.json", Access::Open),
            (Method::GET, "/docs", Access::Open),
            (Method::GET, "/", Access::Open),
            (Method::POST, "/session", Access::Open),
        ];
        for (method, path, expected) in cases {
            assert_eq!(access(&method, path), expected, "{method} {path}");
        }
        let admin = key(&[Scope::Admin]);
        let reader = key(&[Scope::Read]);
        let prometheus = key(&[Scope::Metrics]);
        for s in [Scope::Submit, Scope::Read, Scope::Metrics, Scope::Admin] {
            assert!(admin.allows(s), "{s:?}");
        }
        assert!(reader.allows(Scope::Read) && !reader.allows(Scope::Submit));
        assert!(!reader.allows(Scope::Metrics) && !reader.allows(Scope::Admin));
        assert!(prometheus.allows(Scope::Metrics) && !prometheus.allows(Scope::Read));
        assert_eq!(admin.visible_owner(), None);
        assert_eq!(reader.visible_owner(), Some("k1"));
        assert_eq!(Caller::anonymous().visible_owner(), None);
    }

    #[test]
    fn idempotency_keys_are_scoped_to_the_api_key() {
        assert_eq!(key(&[Scope::Submit]).scoped_key("abc".into()), "k1/abc");
        assert_eq!(Caller::anonymous().scoped_key("abc".into()), "abc");
    }

    #[test]
    fn state_changing_requests_from_another_origin_are_refused() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, v.parse().expect("value"));
            }
            h
        };
        let host = ("host", "api.example:8080");
        type Headers<'a> = &'a [(&'static str, &'static str)];
        let cases: &[(Method, Headers<'_>, bool, &str)] = &[
            (Method::POST, &[host], true, "no Origin: curl or a service"),
            (
                Method::POST,
                &[host, ("origin", "http://api.example:8080")],
                true,
                "same origin",
            ),
            (
                Method::POST,
                &[host, ("origin", "http://evil.example")],
                false,
                "other origin",
            ),
            (
                Method::POST,
                &[host, ("origin", "null")],
                false,
                "opaque origin",
            ),
            (
                Method::POST,
                &[host, ("origin", "http://api.example")],
                false,
                "other port",
            ),
            (
                Method::DELETE,
                &[host, ("sec-fetch-site", "cross-site")],
                false,
                "cross-site",
            ),
            (
                Method::POST,
                &[host, ("sec-fetch-site", "same-origin")],
                true,
                "same-origin",
            ),
            (
                Method::GET,
                &[host, ("origin", "http://evil.example")],
                true,
                "a read",
            ),
        ];
        for (method, pairs, allowed, why) in cases {
            let outcome = check_origin(method, &headers(pairs));
            assert_eq!(outcome.is_ok(), *allowed, "{why}");
        }
    }
}
