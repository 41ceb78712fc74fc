//! The dashboard: server-rendered pages (askama templates in `crates/api/templates`, one
//! stylesheet and one small script in `crates/api/assets`, all served by the API itself) for
//! operators and users with a browser.
//!
//! - [`overview`]: `/`, queues and the last hour, live over Server-Sent Events.
//! - [`jobs`]: `/ui/jobs` (filters, search, keyset pages), a job's page and its buttons.
//! - [`dead`]: `/ui/dead`, dead letters by reason, bulk redrive and delete after a confirmation.
//! - [`queues`]: `/ui/queues`, pause, resume and purge a work queue.
//! - [`admin`]: workers, schedules, the audit list, the submit forms made from kinds' schemas.
//! - [`audit`]: the middleware that records every action with the key's name.
//! - [`assets`]: `/assets/…`, named by their content's hash and cached for a year.
//!
//! Reading needs a `read` key (a non-admin sees only its own jobs), actions `admin` (cancelling
//! and duplicating one's own job, `submit`). Signed in through the front door's sessions; every
//! form carries the session's anti-forgery token ([`crate::auth::session::csrf_token`]).

pub mod admin;
pub mod assets;
pub mod audit;
pub mod dead;
pub mod jobs;
pub mod overview;
pub mod queues;

use askama::Template;
use axum::{
    Router,
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use time::{OffsetDateTime, format_description::BorrowedFormatItem, macros::format_description};

use offload_shared::settings::Scope;

use crate::{auth::Caller, error::ApiError, state::AppState};

/// The dashboard's routes, added to the API's router (inside its authentication).
pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/ui/live", get(overview::live))
        .route("/ui/submit", get(admin::submit_page))
        .route("/ui/jobs", get(jobs::list_page))
        .route("/ui/jobs/{id}/cancel", post(jobs::cancel))
        .route("/ui/jobs/{id}/retry", post(jobs::retry))
        .route("/ui/jobs/{id}/duplicate", post(jobs::duplicate))
        .route("/ui/dead", get(dead::page))
        .route("/ui/dead/confirm", get(dead::confirm))
        .route("/ui/dead/redrive", post(dead::redrive))
        .route("/ui/dead/delete", post(dead::delete))
        .route("/ui/queues", get(queues::page))
        .route(
            "/ui/queues/{queue}/purge",
            get(queues::confirm_purge).post(queues::purge),
        )
        .route("/ui/queues/{queue}/{action}", post(queues::pause_or_resume))
        .route("/ui/workers", get(admin::workers_page))
        .route("/ui/schedules", get(admin::schedules_page))
        .route(
            "/ui/schedules/{name}/{action}",
            post(admin::schedule_action),
        )
        .route("/ui/audit", get(admin::audit_page))
        .route("/assets/{file}", get(assets::serve))
}

/// What a dashboard route needs, for [`crate::auth::access`]; `None` for a path that is not
/// the dashboard's.
pub fn access(method: &str, path: &str) -> Option<crate::auth::Access> {
    use crate::auth::Access::{Needs, Open};
    Some(match (method, path) {
        ("GET" | "HEAD", "/assets/{file}") => Open,
        ("GET" | "HEAD", "/ui/submit") => Needs(Scope::Submit),
        (
            "GET" | "HEAD",
            "/ui/live" | "/ui/jobs" | "/ui/dead" | "/ui/queues" | "/ui/workers" | "/ui/schedules",
        ) => Needs(Scope::Read),
        ("POST", "/ui/jobs/{id}/cancel" | "/ui/jobs/{id}/duplicate") => Needs(Scope::Submit),
        (_, p) if p.starts_with("/ui/") => Needs(Scope::Admin),
        _ => return None,
    })
}

/// A link of the main navigation.
pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// What every page's frame shows: the navigation, who is signed in, the anti-forgery token.
pub struct Chrome {
    pub nav: Vec<NavItem>,
    /// The key's name, when signed in with a key.
    pub who: Option<String>,
    /// `admin`, `read`, …
    pub role: &'static str,
    /// The token the page's forms carry (empty without a session).
    pub csrf: String,
    /// The stylesheet's and the script's addresses.
    pub css: &'static str,
    pub js: &'static str,
    /// Which live updates the page's script starts (`overview`, `job`, or empty).
    pub live: &'static str,
    /// A message about the action just taken.
    pub flash: Option<String>,
}

impl Chrome {
    /// The frame of the page at `here` for `caller` (`None`: not signed in).
    pub fn new(caller: Option<&Caller>, here: &str) -> Self {
        let mut nav = Vec::new();
        if let Some(caller) = caller {
            let links: [(&str, &str, Option<Scope>); 8] = [
                ("/", "Overview", Some(Scope::Read)),
                ("/ui/jobs", "Jobs", Some(Scope::Read)),
                ("/ui/dead", "Dead letters", Some(Scope::Read)),
                ("/ui/queues", "Queues", Some(Scope::Read)),
                ("/ui/workers", "Workers", Some(Scope::Read)),
                ("/ui/schedules", "Schedules", Some(Scope::Read)),
                ("/ui/submit", "Submit", Some(Scope::Submit)),
                ("/ui/audit", "Audit", Some(Scope::Admin)),
            ];
            for (href, label, scope) in links {
                if scope.is_none_or(|s| caller.allows(s)) {
                    nav.push(NavItem {
                        href,
                        label,
                        current: href == here,
                    });
                }
            }
        }
        Chrome {
            nav,
            who: caller
                .filter(|c| c.key_id.is_some())
                .map(|c| c.name.clone()),
            role: caller.map_or("", role),
            csrf: caller.and_then(|c| c.csrf.clone()).unwrap_or_default(),
            css: assets::css_path(),
            js: assets::js_path(),
            live: "",
            flash: None,
        }
    }

    /// The same, with a message about the action just taken.
    pub fn flash(mut self, flash: Option<String>) -> Self {
        self.flash = flash.filter(|f| !f.is_empty());
        self
    }

    /// The same, following `live` updates.
    pub fn live(mut self, live: &'static str) -> Self {
        self.live = live;
        self
    }
}

/// What the caller may do, in a word.
fn role(caller: &Caller) -> &'static str {
    if caller.is_admin() {
        "admin"
    } else if caller.allows(Scope::Submit) {
        "submit"
    } else {
        "read-only"
    }
}

/// A template rendered as an HTML response.
pub fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => ApiError::Internal(format!("a page did not render: {e}")).into_response(),
    }
}

/// A dashboard page's failure, as a page (not problem+json): a person reads it.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    title: String,
    detail: String,
}

/// An [`ApiError`] shown as an HTML page with its status.
pub struct PageError(pub ApiError, pub Option<Caller>);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e, None)
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> Self {
        PageError(store_error(e), None)
    }
}

/// A store error as the client should see it: a search the store could not run is the
/// client's (422), anything else the store's (503).
pub fn store_error(e: crate::store::StoreError) -> ApiError {
    match e {
        crate::store::StoreError::BadSearch(why) => {
            ApiError::Invalid(format!("the JSON path cannot be run: {why}"))
        }
        other => other.into(),
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let PageError(error, caller) = self;
        let detail = error.to_string();
        // A 5xx keeps the API's answer (its detail stays in the log, with its cause).
        let api = error.into_response();
        let status = api.status();
        if status.is_server_error() {
            return api;
        }
        let page = ErrorPage {
            chrome: Chrome::new(caller.as_ref(), ""),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            detail,
        };
        let mut response = render(&page);
        *response.status_mut() = status;
        response
    }
}

/// Checks the anti-forgery token of a form posted in a browser session; a request without a
/// session (a bearer token) has none to check.
pub fn check_csrf(caller: &Caller, sent: Option<&str>) -> Result<(), ApiError> {
    match &caller.csrf {
        None => Ok(()),
        Some(expected) if sent == Some(expected.as_str()) => Ok(()),
        Some(_) => Err(ApiError::CrossOrigin(
            "the form's anti-forgery token is missing or stale: reload the page and try again"
                .to_owned(),
        )),
    }
}

/// A 303 back to `to` with a message for the page, which is also the action's outcome in the
/// audit list.
pub fn back_to(to: &str, flash: String) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    let location = format!("{to}{sep}done={}", crate::store::percent_encode(&flash));
    let mut response = (StatusCode::SEE_OTHER, Redirect::to(&location)).into_response();
    response.extensions_mut().insert(audit::Outcome(flash));
    response
}

/// Reads an action's form (its anti-forgery token only) and checks the token.
pub async fn checked_form(caller: &Caller, body: axum::body::Body) -> Result<(), ApiError> {
    let form: jobs::CsrfOnly = jobs::read_form(body).await?;
    check_csrf(caller, form.csrf.as_deref())
}

/// `2026-12-07 06:01:02`, in UTC.
const SHOWN: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// A time as the pages show it (UTC), or `–`.
pub fn shown_time(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.to_offset(time::UtcOffset::UTC).format(SHOWN).ok())
        .unwrap_or_else(|| "–".to_owned())
}

/// A duration in ms as the pages show it.
pub fn shown_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{:.1} min", ms as f64 / 60_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboards_routes_need_their_scopes() {
        use crate::auth::Access::{Needs, Open};
        let cases = [
            ("GET", "/assets/{file}", Some(Open)),
            ("GET", "/ui/jobs", Some(Needs(Scope::Read))),
            ("GET", "/ui/dead", Some(Needs(Scope::Read))),
            ("GET", "/ui/dead/confirm", Some(Needs(Scope::Admin))),
            ("POST", "/ui/dead/redrive", Some(Needs(Scope::Admin))),
            ("POST", "/ui/dead/delete", Some(Needs(Scope::Admin))),
            ("POST", "/ui/jobs/{id}/cancel", Some(Needs(Scope::Submit))),
            ("POST", "/ui/jobs/{id}/retry", Some(Needs(Scope::Admin))),
            (
                "POST",
                "/ui/schedules/{name}/{action}",
                Some(Needs(Scope::Admin)),
            ),
            ("GET", "/ui/audit", Some(Needs(Scope::Admin))),
            ("GET", "/ui/queues", Some(Needs(Scope::Read))),
            (
                "POST",
                "/ui/queues/{queue}/{action}",
                Some(Needs(Scope::Admin)),
            ),
            ("GET", "/ui/queues/{queue}/purge", Some(Needs(Scope::Admin))),
            ("GET", "/ui/submit", Some(Needs(Scope::Submit))),
            ("GET", "/jobs", None),
        ];
        for (method, path, expected) in cases {
            assert_eq!(access(method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn times_and_durations_read_plainly() {
        use time::macros::datetime;
        assert_eq!(
            shown_time(Some(datetime!(2026-12-07 06:01:02.5 +01:00))),
            "2026-12-07 05:01:02"
        );
        assert_eq!(shown_time(None), "–");
        assert_eq!(shown_ms(250), "250 ms");
        assert_eq!(shown_ms(2500), "2.5 s");
        assert_eq!(shown_ms(90_000), "1.5 min");
    }
}
