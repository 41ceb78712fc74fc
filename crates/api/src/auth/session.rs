//! Browser sessions: `GET /` without a session shows a sign-in form (paste a token), `POST
//! /session` checks the token and sets the `offload_session` cookie (HttpOnly, SameSite=Strict),
//! `POST /session/logout` ends it. The store keeps the hash of the session id, so every API
//! replica on one PostgreSQL database knows every session.

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use time::OffsetDateTime;

use offload_shared::settings::AuthMode;

use super::{SESSION_COOKIE, token};
use crate::{error::ApiError, routes::pages, state::AppState};

/// The value of the session cookie, if the request has one.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
}

/// True if the request reached the API over HTTPS (directly or through a proxy that says so).
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value of a session (`max_age_s` 0 ends it).
fn set_cookie(value: &str, max_age_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}"
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST /session`: a form with `token`; a known, usable key gets a session cookie and a 303
/// to `/`; anything else the sign-in form again, with a 401.
#[utoipa::path(post, path = "/session", tag = "docs",
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "`token=ofl_...`: an API key's token"),
    responses(
        (status = 303, description = "Signed in: `Set-Cookie: offload_session=...; HttpOnly; SameSite=Strict; Path=/`, then `/`"),
        (status = 400, description = "Not a form with `token`", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not a usable key: the sign-in form again", content_type = "text/html"),
        (status = 403, description = "From another origin", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if state.settings.auth == AuthMode::Off {
        return Ok(Redirect::to("/").into_response());
    }
    let form: SignIn = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::Malformed(format!("the sign-in form: {e}")))?;
    let token = form.token.trim();
    let now = OffsetDateTime::now_utc();
    let key = if token::is_token_shaped(token) {
        state.store.key_by_hash(&token::hash(token)).await?
    } else {
        None
    };
    let Some(key) = key.filter(|k| k.is_usable(now)) else {
        let mut page = pages::sign_in_page(Some(
            "That token is not a valid API key (or it expired or was revoked).",
        ));
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(page);
    };
    let session = token::new_session_id().map_err(|e| ApiError::Internal(e.to_string()))?;
    let ttl = state.settings.session_ttl();
    state
        .store
        .create_session(&token::hash(&session), &key.id, now, now + ttl)
        .await?;
    tracing::info!(key = %key.name, "browser session started");
    let mut response = Redirect::to("/").into_response();
    let cookie = set_cookie(&session, ttl.as_secs(), over_https(&headers));
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `POST /session/logout`: ends the session (if any) and clears the cookie; 303 to `/`.
#[utoipa::path(post, path = "/session/logout", tag = "docs",
    responses(
        (status = 303, description = "Signed out: the cookie is cleared, then `/`"),
        (status = 403, description = "From another origin", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(session) = cookie(&headers).filter(|s| token::is_session_shaped(s)) {
        state.store.delete_session(&token::hash(session)).await?;
    }
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie("", 0, over_https(&headers))) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// The dashboard's anti-forgery token of the session `session`: every form of the dashboard
/// carries it and every action checks it, on top of the same-origin rule and the SameSite
/// cookie. Derived from the session id (a secret the page's script cannot read), so it needs
/// no storage and every API replica computes the same.
pub fn csrf_token(session: &str) -> String {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("offload-csrf\0{session}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_set_strictly() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; offload_session=abc ; b=2".parse().expect("value"),
        );
        assert_eq!(cookie(&h), Some("abc"));
        assert_eq!(cookie(&HeaderMap::new()), None);
        let c = set_cookie("xyz", 60, false);
        assert_eq!(
            c,
            "offload_session=xyz; HttpOnly; SameSite=Strict; Path=/; Max-Age=60"
        );
        assert!(set_cookie("xyz", 60, true).ends_with("; Secure"));
    }
}
