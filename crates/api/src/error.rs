//! The API's error type and its RFC 9457 `application/problem+json` form.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use offload_shared::{JobId, broker::BrokerError};

use offload_shared::settings::Scope;

use crate::{auth::rate::OverLimit, store::StoreError};

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_S: u64 = 1;

/// The `WWW-Authenticate` challenge of a request without credentials.
pub const REALM: &str = "Bearer realm=\"offload\"";

/// Adds the `RateLimit-Policy` and `RateLimit` headers of `quota`.
pub fn rate_limit_headers(headers: &mut axum::http::HeaderMap, quota: &crate::auth::rate::Quota) {
    for (name, value) in [
        ("ratelimit-policy", quota.policy_header()),
        ("ratelimit", quota.header()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// Seconds a client should wait after a 503 `queue-full`: the API reads queue depth every 2 s.
pub const QUEUE_FULL_RETRY_AFTER_S: u64 = 2;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not well-formed JSON (or not valid UTF-8 form data).
    #[error("the request body is malformed: {0}")]
    Malformed(String),
    /// The body is larger than `OFFLOAD_MAX_BODY_BYTES`.
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// The client did not send the whole body within `OFFLOAD_HTTP_BODY_TIMEOUT_MS`.
    #[error("the request body did not arrive within {0} ms (OFFLOAD_HTTP_BODY_TIMEOUT_MS)")]
    BodyTimeout(u64),
    /// A content type the route does not take: what was sent, and what to send.
    #[error("unsupported content type {0:?}: send {1}")]
    UnsupportedMediaType(String, &'static str),
    /// Well-formed but not a valid job: unknown kind or field, bad payload.
    #[error("{0}")]
    Invalid(String),
    /// A kind the API does not know (a 422 like [`ApiError::Invalid`]; the handler may first
    /// reload the kinds another replica recorded).
    #[error(transparent)]
    UnknownKind(#[from] crate::kinds::UnknownKind),
    /// No job with that id.
    #[error("no job with id {0:?}")]
    NotFound(String),
    /// The job is not in a state that allows the request.
    #[error("{0}")]
    Conflict(String),
    /// The first request with this `Idempotency-Key` is still unresolved (its publish was not
    /// confirmed yet): the client repeats later and learns the job's fate.
    #[error("{0}")]
    Unresolved(String),
    /// The broker did not take the job; nothing was enqueued.
    #[error("the job queue is unavailable")]
    Broker(#[from] BrokerError),
    /// The broker did not confirm the job in time: it may still be stored and run. The API keeps
    /// its row and resolves it.
    #[error(
        "the job queue did not confirm job {0} in time; it may still be accepted: follow \
         /jobs/{0}, or repeat the request with the same Idempotency-Key, which returns this job \
         once its fate is known"
    )]
    Unknown(JobId, #[source] BrokerError),
    /// The job store failed.
    #[error("the job store is unavailable")]
    Store(#[from] StoreError),
    /// The broker took only part of a batch: the accepted jobs will run, the others were not
    /// enqueued.
    #[error(transparent)]
    PartlyAccepted(Box<PartialBatch>),
    /// No credentials (`None`), or credentials that are not a usable key (why).
    #[error("{}", match .0 {
        None => "this route needs an API key: send `Authorization: Bearer <token>` (create one with `offload-api keys create`), or sign in at /",
        Some(why) => why,
    })]
    Unauthenticated(Option<&'static str>),
    /// A usable key without the scope the route needs.
    #[error("this API key lacks the `{}` scope this route needs", .0.as_str())]
    InsufficientScope(Scope),
    /// A state-changing request from another origin (a page on another site).
    #[error("{0}")]
    CrossOrigin(String),
    /// Over the key's rate limit.
    #[error(
        "this API key is over its rate limit ({} submits at once, refilled in {} s); this request \
         needed {} and may be sent again in {} s",
        .0.quota.burst, .0.quota.window_s, .0.cost, .0.retry_after_s
    )]
    RateLimited(OverLimit),
    /// Something on the server side that is neither the broker nor the store.
    #[error("{0}")]
    Internal(String),
    /// The job has no artifact of the name asked for.
    #[error("{0}")]
    NoArtifact(String),
    /// No schedule of that name.
    #[error("no schedule named {0:?}")]
    NoSchedule(String),
    /// The job lists the artifact but its bytes have not been stored yet (they are on their way
    /// through the broker): try again shortly.
    #[error("{0}")]
    ArtifactNotStored(String),
}

/// A batch the broker took only part of.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} of {} jobs were accepted (ids in `accepted`); the broker did not take the jobs at the \
     positions in `not_accepted`{}: resubmit those, or repeat the batch with the same \
     Idempotency-Key",
    accepted.len(),
    accepted.len() + not_accepted.len() + unresolved.len(),
    if unresolved.is_empty() { "" } else { " and has not confirmed those in `unresolved` yet (they may still run)" }
)]
pub struct PartialBatch {
    /// Jobs that are enqueued.
    pub accepted: Vec<JobId>,
    /// Positions in the batch of the jobs that are not.
    pub not_accepted: Vec<usize>,
    /// Positions in the batch of the jobs whose confirm did not come in time: they may still
    /// run, and a repeat with the same key returns them once resolved.
    pub unresolved: Vec<usize>,
    /// Why the broker did not take them.
    #[source]
    pub source: BrokerError,
}

/// An RFC 9457 problem document, the body of every error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the kind of problem, e.g. `/problems/invalid-job`.
    r#type: String,
    /// The HTTP status text.
    title: &'static str,
    /// The HTTP status code.
    status: u16,
    /// What went wrong, for a person.
    detail: String,
    /// A batch the broker took only part of: the ids of the accepted jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    accepted: Option<Vec<JobId>>,
    /// A batch the broker took only part of: the positions of the jobs not enqueued.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_accepted: Option<Vec<usize>>,
    /// A batch: the positions of the jobs whose fate is not known yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    unresolved: Option<Vec<usize>>,
    /// A job whose confirm did not arrive in time: its id, to follow at `/jobs/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    job_id: Option<JobId>,
}

/// Why a request was refused with nothing enqueued, for `offload_jobs_refused_total{reason}`;
/// set on the response by [`ApiError`], counted by the metrics middleware.
#[derive(Debug, Clone, Copy)]
pub struct Refusal(pub &'static str);

/// The cause chain of a server-side failure, logged once by the `log_failures` middleware.
#[derive(Debug, Clone)]
pub struct FailureCause(pub String);

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(..) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) | ApiError::UnknownKind(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) | ApiError::NoArtifact(_) | ApiError::NoSchedule(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::ArtifactNotStored(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Conflict(_) | ApiError::Unresolved(_) => StatusCode::CONFLICT,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::InsufficientScope(_) | ApiError::CrossOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Broker(BrokerError::MessageTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Broker(BrokerError::HeadersTooLarge { .. }) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Broker(_)
            | ApiError::Unknown(..)
            | ApiError::Store(_)
            | ApiError::PartlyAccepted(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed-body",
            ApiError::TooLarge(_) => "body-too-large",
            ApiError::BodyTimeout(_) => "body-timeout",
            ApiError::UnsupportedMediaType(..) => "unsupported-media-type",
            ApiError::Invalid(_) | ApiError::UnknownKind(_) => "invalid-job",
            ApiError::NotFound(_) => "job-not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unresolved(_) => "unresolved",
            ApiError::Broker(BrokerError::Blocked) => "queue-blocked",
            ApiError::Broker(BrokerError::QueueFull(_) | BrokerError::Nacked) => "queue-full",
            ApiError::Broker(BrokerError::MessageTooLarge { .. }) => "message-too-large",
            ApiError::Broker(BrokerError::HeadersTooLarge { .. }) => "headers-too-large",
            ApiError::Broker(_) => "queue-unavailable",
            ApiError::Unknown(..) => "confirm-unknown",
            ApiError::Store(_) => "store-unavailable",
            ApiError::PartlyAccepted(_) => "batch-partly-accepted",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::InsufficientScope(_) => "insufficient-scope",
            ApiError::CrossOrigin(_) => "cross-origin",
            ApiError::RateLimited(_) => "rate-limited",
            ApiError::Internal(_) => "internal",
            ApiError::NoArtifact(_) => "artifact-not-found",
            ApiError::NoSchedule(_) => "schedule-not-found",
            ApiError::ArtifactNotStored(_) => "artifact-not-stored-yet",
        }
    }

    /// The refusal reason this error counts as, if it refused a job with nothing enqueued.
    fn refusal(&self) -> Option<&'static str> {
        match self {
            ApiError::TooLarge(_) => Some("body_too_large"),
            ApiError::Broker(BrokerError::QueueFull(_) | BrokerError::Nacked) => Some("queue_full"),
            ApiError::Broker(BrokerError::Blocked) => Some("broker_blocked"),
            ApiError::Broker(BrokerError::MessageTooLarge { .. }) => Some("message_too_large"),
            ApiError::Broker(BrokerError::HeadersTooLarge { .. }) => Some("headers_too_large"),
            ApiError::Broker(_) => Some("broker_unavailable"),
            _ => None,
        }
    }

    fn cause_chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        text
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let server_side = status.is_server_error();
        // 5xx details stay in the log; the client learns only what it can act on.
        let mut problem = Problem {
            r#type: format!("/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
            accepted: None,
            not_accepted: None,
            unresolved: None,
            job_id: None,
        };
        match &self {
            ApiError::PartlyAccepted(partial) => {
                problem.accepted = Some(partial.accepted.clone());
                problem.not_accepted = Some(partial.not_accepted.clone());
                problem.unresolved =
                    (!partial.unresolved.is_empty()).then(|| partial.unresolved.clone());
            }
            ApiError::Unknown(id, _) => problem.job_id = Some(*id),
            ApiError::Broker(
                e @ (BrokerError::MessageTooLarge { .. } | BrokerError::HeadersTooLarge { .. }),
            ) => {
                problem.detail = format!("{e}; nothing was enqueued");
            }
            ApiError::Broker(e @ (BrokerError::QueueFull(_) | BrokerError::Nacked)) => {
                problem.detail = format!(
                    "{e}: the workers are behind and draining it; nothing was enqueued, retry \
                     in {QUEUE_FULL_RETRY_AFTER_S} s"
                );
            }
            ApiError::Broker(_) | ApiError::Store(_) => {
                problem.detail =
                    format!("{self}; nothing was enqueued, retry in {RETRY_AFTER_S} s");
            }
            _ => {}
        }
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(
            self,
            ApiError::Broker(BrokerError::QueueFull(_) | BrokerError::Nacked)
        ) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(QUEUE_FULL_RETRY_AFTER_S),
            );
        } else if server_side || matches!(self, ApiError::Unresolved(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthenticated(None) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
            }
            ApiError::Unauthenticated(Some(_)) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"offload\", error=\"invalid_token\""),
                );
            }
            ApiError::InsufficientScope(scope) => {
                let value = format!(
                    "Bearer realm=\"offload\", error=\"insufficient_scope\", scope=\"{}\"",
                    scope.as_str()
                );
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::RateLimited(over) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(over.retry_after_s));
                rate_limit_headers(headers, &over.quota);
            }
            _ => {}
        }
        if let Some(reason) = self.refusal() {
            response.extensions_mut().insert(Refusal(reason));
        }
        // A full queue is the back-pressure working, not a failure: counted, not logged (a
        // flood would log every refused request).
        // An artifact on its way is not a failure either: the client is told to come back.
        let queue_full = matches!(
            self,
            ApiError::Broker(BrokerError::QueueFull(_) | BrokerError::Nacked)
                | ApiError::ArtifactNotStored(_)
        );
        if server_side && !queue_full {
            response
                .extensions_mut()
                .insert(FailureCause(self.cause_chain()));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_problems_with_their_status() {
        let cases = [
            (ApiError::Malformed("x".into()), 400),
            (ApiError::TooLarge(10), 413),
            (ApiError::BodyTimeout(10), 408),
            (
                ApiError::UnsupportedMediaType("text/plain".into(), "application/json"),
                415,
            ),
            (ApiError::Invalid("unknown kind".into()), 422),
            (ApiError::NotFound("x".into()), 404),
            (ApiError::Conflict("x".into()), 409),
            (ApiError::Unresolved("x".into()), 409),
            (ApiError::Unauthenticated(None), 401),
            (ApiError::Unauthenticated(Some("revoked")), 401),
            (ApiError::InsufficientScope(Scope::Submit), 403),
            (ApiError::CrossOrigin("x".into()), 403),
        ];
        for (err, status) in cases {
            let response = err.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/problem+json"
            );
            assert!(response.extensions().get::<FailureCause>().is_none());
        }
    }

    #[test]
    fn auth_failures_carry_their_challenge() {
        let r = ApiError::Unauthenticated(None).into_response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"offload\""
        );
        let r = ApiError::InsufficientScope(Scope::Admin).into_response();
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"offload\", error=\"insufficient_scope\", scope=\"admin\""
        );
        let quota = crate::auth::rate::Quota {
            burst: 10,
            window_s: 5,
            remaining: 0,
            reset_s: 5,
        };
        let r = ApiError::RateLimited(OverLimit {
            quota,
            retry_after_s: 1,
            cost: 1,
        })
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(r.headers()["ratelimit"], "\"default\";r=0;t=5");
        assert_eq!(r.headers()["ratelimit-policy"], "\"default\";q=10;w=5");
    }

    #[test]
    fn an_unresolved_repeat_says_when_to_come_back() {
        let response = ApiError::Unresolved("x".into()).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[tokio::test]
    async fn an_unknown_outcome_names_the_job_and_does_not_say_nothing_was_enqueued() {
        let id = JobId::new();
        let err = ApiError::Unknown(
            id,
            BrokerError::Timeout(std::time::Duration::from_secs(1), "publish"),
        );
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(problem["job_id"], serde_json::json!(id.to_string()));
        let detail = problem["detail"].as_str().expect("detail");
        assert!(!detail.contains("nothing was enqueued"), "{detail}");
        assert!(detail.contains("Idempotency-Key"), "{detail}");
    }

    #[test]
    fn broker_failures_are_503_with_retry_after_and_a_logged_cause() {
        let err = ApiError::Broker(BrokerError::NotConnected);
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let cause = response.extensions().get::<FailureCause>().expect("cause");
        assert!(cause.0.contains("not connected"), "{}", cause.0);
        // A full queue is refused without an error log: a flood would log every request.
        let full = ApiError::Broker(BrokerError::Nacked).into_response();
        assert!(full.extensions().get::<FailureCause>().is_none());
    }

    #[tokio::test]
    async fn limits_refusals_have_their_status_type_and_retry_after() {
        let cases = [
            (
                BrokerError::QueueFull("p.jobs".into()),
                503,
                "queue-full",
                Some("2"),
            ),
            (BrokerError::Nacked, 503, "queue-full", Some("2")),
            (BrokerError::Blocked, 503, "queue-blocked", Some("1")),
            (
                BrokerError::MessageTooLarge {
                    size: 20,
                    limit: 10,
                },
                413,
                "message-too-large",
                None,
            ),
            (
                BrokerError::HeadersTooLarge {
                    size: 200_000,
                    frame_max: 131_072,
                },
                422,
                "headers-too-large",
                None,
            ),
        ];
        for (err, status, slug, retry_after) in cases {
            let response = ApiError::Broker(err).into_response();
            assert_eq!(response.status().as_u16(), status, "{slug}");
            assert!(response.extensions().get::<Refusal>().is_some(), "{slug}");
            assert_eq!(
                response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
                retry_after,
                "{slug}"
            );
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("body");
            let problem: serde_json::Value = serde_json::from_slice(&body).expect("json");
            assert_eq!(problem["type"], format!("/problems/{slug}"));
            assert!(
                problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("nothing was enqueued")),
                "{problem}"
            );
        }
    }

    #[tokio::test]
    async fn a_partly_accepted_batch_lists_what_was_and_was_not_enqueued() {
        let id = JobId::new();
        let err = ApiError::PartlyAccepted(Box::new(PartialBatch {
            accepted: vec![id],
            not_accepted: vec![1, 2],
            unresolved: Vec::new(),
            source: BrokerError::Nacked,
        }));
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let problem: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(problem["accepted"], serde_json::json!([id.to_string()]));
        assert_eq!(problem["not_accepted"], serde_json::json!([1, 2]));
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.starts_with("1 of 3 jobs were accepted"), "{detail}");
    }
}
