//! The API's error type and its RFC 9457 `application/problem+json` form.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use offload_shared::{JobId, broker::BrokerError};

use crate::store::StoreError;

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_S: u64 = 1;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not well-formed JSON (or not valid UTF-8 form data).
    #[error("the request body is malformed: {0}")]
    Malformed(String),
    /// The body is larger than `OFFLOAD_MAX_BODY_BYTES`.
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// A content type the route does not take: what was sent, and what to send.
    #[error("unsupported content type {0:?}: send {1}")]
    UnsupportedMediaType(String, &'static str),
    /// Well-formed but not a valid job: unknown kind or field, bad payload.
    #[error("{0}")]
    Invalid(String),
    /// No job with that id.
    #[error("no job with id {0:?}")]
    NotFound(String),
    /// The job is not in a state that allows the request.
    #[error("{0}")]
    Conflict(String),
    /// The broker did not take the job; nothing was enqueued.
    #[error("the job queue is unavailable")]
    Broker(#[from] BrokerError),
    /// The job store failed.
    #[error("the job store is unavailable")]
    Store(#[from] StoreError),
    /// The broker took only part of a batch: the accepted jobs will run, the others were not
    /// enqueued.
    #[error(transparent)]
    PartlyAccepted(Box<PartialBatch>),
}

/// A batch the broker took only part of.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} of {} jobs were accepted (ids in `accepted`); the broker did not take the jobs at the \
     positions in `not_accepted`: resubmit those, or repeat the batch with the same \
     Idempotency-Key",
    accepted.len(),
    accepted.len() + not_accepted.len()
)]
pub struct PartialBatch {
    /// Jobs that are enqueued.
    pub accepted: Vec<JobId>,
    /// Positions in the batch of the jobs that are not.
    pub not_accepted: Vec<usize>,
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
}

/// The cause chain of a server-side failure, logged once by the `log_failures` middleware.
#[derive(Debug, Clone)]
pub struct FailureCause(pub String);

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(..) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Broker(_) | ApiError::Store(_) | ApiError::PartlyAccepted(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed-body",
            ApiError::TooLarge(_) => "body-too-large",
            ApiError::UnsupportedMediaType(..) => "unsupported-media-type",
            ApiError::Invalid(_) => "invalid-job",
            ApiError::NotFound(_) => "job-not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Broker(_) => "queue-unavailable",
            ApiError::Store(_) => "store-unavailable",
            ApiError::PartlyAccepted(_) => "batch-partly-accepted",
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
        let (detail, accepted, not_accepted) = match &self {
            ApiError::PartlyAccepted(partial) => (
                self.to_string(),
                Some(partial.accepted.clone()),
                Some(partial.not_accepted.clone()),
            ),
            _ if server_side => (
                format!("{self}; nothing was enqueued, retry in {RETRY_AFTER_S} s"),
                None,
                None,
            ),
            _ => (self.to_string(), None, None),
        };
        let problem = Problem {
            r#type: format!("/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            accepted,
            not_accepted,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if server_side {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
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
            (
                ApiError::UnsupportedMediaType("text/plain".into(), "application/json"),
                415,
            ),
            (ApiError::Invalid("unknown kind".into()), 422),
            (ApiError::NotFound("x".into()), 404),
            (ApiError::Conflict("x".into()), 409),
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
    fn broker_failures_are_503_with_retry_after_and_a_logged_cause() {
        let err = ApiError::Broker(BrokerError::Nacked);
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let cause = response.extensions().get::<FailureCause>().expect("cause");
        assert!(cause.0.contains("nack"), "{}", cause.0);
    }

    #[tokio::test]
    async fn a_partly_accepted_batch_lists_what_was_and_was_not_enqueued() {
        let id = JobId::new();
        let err = ApiError::PartlyAccepted(Box::new(PartialBatch {
            accepted: vec![id],
            not_accepted: vec![1, 2],
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
