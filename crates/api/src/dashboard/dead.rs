//! `/ui/dead`: the dead letters, grouped by reason (the first characters of their error), and
//! actions on every dead job a filter matches (kind, reason, search): redrive (each runs again
//! as its next attempt, as `POST /jobs/{id}/retry` does) or delete. Each action first shows how
//! many jobs it will touch and asks for a confirmation; it then does at most [`MAX_BULK`] at a
//! time and says how many it did.

use askama::Template;
use axum::{
    Extension,
    body::Body,
    extract::{Path, RawQuery, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{
    Chrome, PageError, back_to, check_csrf,
    jobs::{JobRow, checked_search, read_form},
    render, shown_time,
};
use crate::{
    auth::Caller,
    error::ApiError,
    routes::jobs as api,
    state::AppState,
    store::dashboard::{JobQuery, REASON_CHARS},
};

/// Jobs one confirmed action redrives or deletes at most.
pub const MAX_BULK: u32 = 1000;

/// Reason groups shown.
const GROUPS: u32 = 100;

/// A dead-letter filter, as typed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadFilter {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub done: String,
    /// The confirmation's count (only on the action).
    #[serde(default)]
    pub expected: Option<u64>,
    /// The anti-forgery token (only on the action).
    #[serde(default)]
    pub csrf: Option<String>,
}

impl DeadFilter {
    async fn query(&self, state: &AppState, caller: &Caller) -> Result<JobQuery, ApiError> {
        let search = checked_search(state, &self.q).await?;
        let kind = self.kind.trim();
        Ok(JobQuery {
            kinds: (!kind.is_empty()).then(|| vec![kind.to_owned()]),
            reason: reason_of(&self.reason),
            search,
            owner: caller.visible_owner().map(str::to_owned),
            ..JobQuery::default()
        })
    }

    /// What the filter matches, in words.
    fn described(&self) -> String {
        let mut parts = Vec::new();
        if !self.kind.trim().is_empty() {
            parts.push(format!("of kind {}", self.kind.trim()));
        }
        if !self.reason.is_empty() {
            parts.push(format!("whose reason is “{}”", self.reason));
        }
        if !self.q.trim().is_empty() {
            parts.push(format!("matching “{}”", self.q.trim()));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" {}", parts.join(", "))
        }
    }
}

/// What the group of dead jobs without an error is called in links and forms.
pub const NO_REASON: &str = "(none)";

/// The reason filter of a form's or link's `reason`: none when empty; [`NO_REASON`] for the
/// jobs without an error. A form sends line breaks as CRLF: the stored text has LF.
pub fn reason_of(raw: &str) -> Option<String> {
    match raw {
        "" => None,
        NO_REASON => Some(String::new()),
        text => Some(
            text.replace("\r\n", "\n")
                .chars()
                .take(REASON_CHARS as usize)
                .collect(),
        ),
    }
}

/// A reason group's row.
pub struct GroupRow {
    pub reason: String,
    pub count: u64,
    pub kinds: String,
    pub latest: String,
}

#[derive(Template)]
#[template(path = "dead.html")]
struct DeadPage {
    chrome: Chrome,
    f: DeadFilter,
    groups: Vec<GroupRow>,
    kinds: Vec<String>,
    matching: u64,
    jobs: Vec<JobRow>,
    admin: bool,
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    f: DeadFilter,
    title: &'static str,
    verb: &'static str,
    described: String,
    count: u64,
    limit: u64,
    action: &'static str,
    danger: bool,
}

fn parse(query: Option<&str>) -> Result<DeadFilter, ApiError> {
    serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::Invalid(format!("query: {e}")))
}

/// `GET /ui/dead`.
pub async fn page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let fail = |e: ApiError| PageError(e, Some(caller.clone()));
    let f = parse(query.as_deref()).map_err(fail)?;
    let q = f.query(&state, &caller).await.map_err(fail)?;
    let groups = state
        .store
        .dead_groups(caller.visible_owner(), GROUPS)
        .await
        .map_err(|e| fail(super::store_error(e)))?;
    let matching = state
        .store
        .count_dead(&q)
        .await
        .map_err(|e| fail(super::store_error(e)))?;
    let filtered = !(f.kind.is_empty() && f.reason.is_empty() && f.q.is_empty());
    let jobs = if filtered {
        let dead = q.dead();
        state
            .store
            .find_jobs(&dead, None, 20)
            .await
            .map_err(|e| fail(super::store_error(e)))?
    } else {
        Vec::new()
    };
    let mut kinds: Vec<String> = state
        .kinds
        .all()
        .iter()
        .map(|k| k.spec.name.to_string())
        .collect();
    kinds.sort();
    Ok(render(&DeadPage {
        chrome: Chrome::new(Some(&caller), "/ui/dead").flash(Some(f.done.clone())),
        groups: groups
            .into_iter()
            .map(|g| GroupRow {
                reason: if g.reason.is_empty() {
                    NO_REASON.to_owned()
                } else {
                    g.reason
                },
                count: g.count,
                kinds: g.kinds.replace(',', ", "),
                latest: shown_time(g.latest),
            })
            .collect(),
        kinds,
        matching,
        jobs: jobs.iter().map(JobRow::of).collect(),
        admin: caller.is_admin(),
        f,
    }))
}

/// `GET /ui/dead/confirm?action=redrive|delete&…`: how many jobs the action would touch, and
/// the form that does it.
pub async fn confirm(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let fail = |e: ApiError| PageError(e, Some(caller.clone()));
    let f = parse(query.as_deref()).map_err(fail)?;
    let (title, verb, action, danger) = match f.action.as_str() {
        "redrive" => ("Redrive dead jobs", "redrive", "/ui/dead/redrive", false),
        "delete" => ("Delete dead jobs", "delete", "/ui/dead/delete", true),
        other => {
            return Err(fail(ApiError::Invalid(format!(
                "action is {:?}: redrive or delete",
                other.chars().take(40).collect::<String>()
            ))));
        }
    };
    let q = f.query(&state, &caller).await.map_err(fail)?;
    let count = state
        .store
        .count_dead(&q)
        .await
        .map_err(|e| fail(super::store_error(e)))?;
    Ok(render(&ConfirmPage {
        chrome: Chrome::new(Some(&caller), "/ui/dead"),
        described: f.described(),
        title,
        verb,
        count,
        limit: u64::from(MAX_BULK),
        action,
        danger,
        f,
    }))
}

/// Reads and checks a confirmed action's form: its filter's query and its ids.
async fn confirmed(
    state: &AppState,
    caller: &Caller,
    body: Body,
) -> Result<(DeadFilter, Vec<offload_shared::JobId>), ApiError> {
    let f: DeadFilter = read_form(body).await?;
    check_csrf(caller, f.csrf.as_deref())?;
    let q = f.query(state, caller).await?;
    // No more than the confirmation counted (jobs that died since are not in it).
    let limit = f.expected.map_or(MAX_BULK, |n| {
        u32::try_from(n).unwrap_or(MAX_BULK).min(MAX_BULK)
    });
    let ids = state
        .store
        .dead_ids(&q, limit)
        .await
        .map_err(super::store_error)?;
    Ok((f, ids))
}

/// The answer to a bulk action that did `done` of its jobs; `full` when it took as many as one
/// action may (so more may match).
fn bulk_done(
    f: &DeadFilter,
    verb: &str,
    done: usize,
    failed: usize,
    first_error: Option<String>,
    full: bool,
) -> Response {
    let mut flash = format!("{verb} {done} dead jobs{}", f.described());
    if failed > 0 {
        flash.push_str(&format!(
            "; {failed} could not be: {}",
            first_error.unwrap_or_default()
        ));
    }
    if full && f.expected.is_some_and(|e| e > u64::from(MAX_BULK)) {
        flash.push_str(&format!(
            "; at most {MAX_BULK} at once: confirm again for the rest"
        ));
    }
    back_to("/ui/dead", flash)
}

/// `POST /ui/dead/redrive`: each dead job the filter matches runs again as its next attempt.
pub async fn redrive(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Response {
    let (f, ids) = match confirmed(&state, &caller, body).await {
        Ok(found) => found,
        Err(e) => return PageError(e, Some(caller)).into_response(),
    };
    let full = ids.len() == MAX_BULK as usize;
    let (mut done, mut failed, mut first_error) = (0, 0, None);
    for (i, id) in ids.iter().enumerate() {
        match api::retry_job(State(state.clone()), Path(id.to_string()), HeaderMap::new()).await {
            Ok(_) => done += 1,
            // Redriven by someone else meanwhile: no longer dead, nothing to do.
            Err(ApiError::Conflict(_) | ApiError::NotFound(_)) => {}
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
                // The broker or the store is away: the rest would fail the same way, and
                // are not tried (counted as not done).
                if matches!(e, ApiError::Broker(_) | ApiError::Store(_)) {
                    failed += ids.len() - i - 1;
                    break;
                }
            }
        }
    }
    bulk_done(&f, "redrove", done, failed, first_error, full)
}

/// `POST /ui/dead/delete`: deletes every dead job the filter matches, with its files.
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Response {
    let (f, ids) = match confirmed(&state, &caller, body).await {
        Ok(found) => found,
        Err(e) => return PageError(e, Some(caller)).into_response(),
    };
    let full = ids.len() == MAX_BULK as usize;
    match state.store.delete_dead(&ids).await {
        Ok(deleted) => bulk_done(&f, "deleted", deleted.len(), 0, None, full),
        Err(e) => PageError(e.into(), Some(caller)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_from_a_form_matches_the_stored_one() {
        assert_eq!(reason_of(""), None, "no reason filter");
        assert_eq!(
            reason_of(NO_REASON),
            Some(String::new()),
            "the jobs without an error"
        );
        assert_eq!(
            reason_of("boom\r\n  at line 2").as_deref(),
            Some("boom\n  at line 2"),
            "a form's CRLF is the stored LF"
        );
        let long = "é".repeat(200);
        assert_eq!(
            reason_of(&long).map(|r| r.chars().count()),
            Some(REASON_CHARS as usize)
        );
    }
}
