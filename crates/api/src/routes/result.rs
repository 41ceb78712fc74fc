//! `GET /jobs/{id}/result`: a finished job's result. A job with artifacts serves one of them
//! (the first, or `?name=`) as a download; one without serves its JSON result. Artifacts are
//! whatever a handler made, so they are served as untrusted content: `nosniff`, a sandboxing
//! Content-Security-Policy (a `text/html` artifact runs no script on this origin), and a
//! Content-Disposition that only shows images and PDFs inline.

use axum::{
    Extension, Json,
    body::Body,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use offload_shared::JobStatus;

use crate::{
    auth::Caller,
    error::{ApiError, Problem},
    routes::jobs::find_owned,
    state::AppState,
    store::{ArtifactLink, percent_encode},
};

/// The query of `GET /jobs/{id}/result`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResultQuery {
    /// Which artifact (by name; default: the first the job lists).
    name: Option<String>,
}

/// An artifact never changes once stored (a name's bytes are fixed by their hash).
const CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

/// `GET /jobs/{id}/result?name=`: the finished job's artifact, or its JSON result.
#[utoipa::path(get, path = "/jobs/{id}/result", tag = "jobs",
    params(("id" = String, Path, description = "The job's id (a UUID v7)"), ResultQuery),
    responses(
        (status = 200, description = "The artifact's bytes with its own Content-Type (and \
            Content-Disposition, ETag, nosniff, a sandboxing CSP), or, for a job without \
            artifacts, its JSON result", content_type = "application/octet-stream"),
        (status = 304, description = "If-None-Match matched the artifact's ETag"),
        (status = 404, description = "No such job, or no artifact of that name", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has not succeeded (still running, failed or dead)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The artifact is listed but not stored yet (Retry-After), or the store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_result(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q: ResultQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::Invalid(format!("query: {e}")))?;
    // Another key's job is as unknown as a missing one: 404, not 403.
    let job = find_owned(&state, &raw, caller.visible_owner()).await?;
    match job.status {
        JobStatus::Succeeded => {}
        JobStatus::Failed | JobStatus::Dead => {
            return Err(ApiError::Conflict(format!(
                "job {} is {} and has no result: {}",
                job.id,
                job.status,
                job.error.as_deref().unwrap_or("no reason recorded")
            )));
        }
        status => {
            return Err(ApiError::Conflict(format!(
                "job {} is {status}; its result is there once it has succeeded",
                job.id
            )));
        }
    }
    let chosen = match &q.name {
        Some(name) => job.artifacts.iter().find(|a| &a.name == name),
        None => job.artifacts.first(),
    };
    let Some(link) = chosen else {
        if let Some(name) = q.name {
            return Err(ApiError::NoArtifact(format!(
                "job {} has no artifact named {name:?}",
                job.id
            )));
        }
        return Ok(Json(job.result).into_response());
    };
    let etag = format!("\"{}\"", link.sha256);
    if if_none_match(&headers, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        artifact_headers(response.headers_mut(), link, &etag);
        return Ok(response);
    }
    let Some(stored) = state.store.artifact(job.id, &link.name).await? else {
        return Err(ApiError::ArtifactNotStored(format!(
            "artifact {:?} of job {} is on its way to the store; retry in a second",
            link.name, job.id
        )));
    };
    let length = stored.data.len();
    let mut response = Response::new(Body::from(stored.data));
    let headers = response.headers_mut();
    artifact_headers(headers, link, &etag);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(response)
}

/// True if `If-None-Match` names `etag` (or is `*`).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// Every header an artifact's download (or its 304) carries.
fn artifact_headers(headers: &mut HeaderMap, link: &ArtifactLink, etag: &str) {
    let content_type = HeaderValue::from_str(&link.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Ok(value) = HeaderValue::from_str(&content_disposition(&link.name, &link.content_type)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // A unique origin with no script, forms or plugins: content of any type is inert here.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
}

/// `inline` for what a browser shows without running anything (raster images, PDF),
/// `attachment` for the rest (SVG too: it is a document that can carry script); with the
/// name as an ASCII `filename` (anything else replaced by `_`) and as RFC 6266's UTF-8
/// `filename*`.
pub fn content_disposition(name: &str, content_type: &str) -> String {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let inline = (essence.starts_with("image/") && essence != "image/svg+xml")
        || essence == "application/pdf";
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%' | ';' | '/') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}; filename=\"{ascii}\"; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        percent_encode(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_show_only_inert_types_inline_and_sanitize_the_name() {
        let cases = [
            (
                "thumb.png",
                "image/png",
                "inline; filename=\"thumb.png\"; filename*=UTF-8''thumb.png",
            ),
            (
                "doc.pdf",
                "Application/PDF",
                "inline; filename=\"doc.pdf\"; filename*=UTF-8''doc.pdf",
            ),
            (
                "x.svg",
                "image/svg+xml",
                "attachment; filename=\"x.svg\"; filename*=UTF-8''x.svg",
            ),
            (
                "page.html",
                "text/html; charset=utf-8",
                "attachment; filename=\"page.html\"; filename*=UTF-8''page.html",
            ),
            (
                "résumé \"v2\";.txt",
                "text/plain",
                "attachment; filename=\"r_sum_ _v2__.txt\"; \
                 filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22%3B.txt",
            ),
            (
                "a\r\nSet-Cookie: x",
                "text/plain",
                "attachment; filename=\"a__Set-Cookie: x\"; \
                 filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x",
            ),
        ];
        for (name, content_type, expected) in cases {
            let value = content_disposition(name, content_type);
            assert_eq!(value, expected, "{name:?} as {content_type}");
            assert!(
                HeaderValue::from_str(&value).is_ok(),
                "{value:?} is a valid header value"
            );
        }
    }

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_star() {
        let etag = "\"abc\"";
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::IF_NONE_MATCH,
                HeaderValue::from_str(v).expect("value"),
            );
            if_none_match(&h, etag)
        };
        assert!(with("\"abc\""));
        assert!(with("\"x\", W/\"abc\""));
        assert!(with("*"));
        assert!(!with("\"abd\""));
        assert!(!if_none_match(&HeaderMap::new(), etag));
    }
}
