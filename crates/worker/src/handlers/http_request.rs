//! The built-in kind `http.request` (queue `webhooks`): one HTTP request to an allowed
//! destination, optionally signed the Standard Webhooks way, retried on 429, 5xx, timeouts and
//! connection errors (after the server's `Retry-After`, if it sent one).

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use bytes::Bytes;
use hyper::{
    HeaderMap, Method,
    header::{self, HeaderName, HeaderValue},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use offload_shared::Settings;

use super::{
    outbound::{Outbound, OutboundError, OutboundRequest, retry_after_of, status_is_retryable},
    signing::{SigningKeys, signature},
};
use crate::{Job, JobContext, JobError};

/// Longest `timeout_ms` a request may ask for.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// `timeout_ms` when the payload names none.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Most of a response body kept in the result, in bytes.
pub const MAX_RESPONSE_BODY_BYTES: usize = 64 * 1024;

/// Headers a payload may not set: hop-by-hop ones, and those the request's framing owns.
const REFUSED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// The headers of a signature, refused in a payload that is signed.
const SIGNATURE_HEADERS: &[&str] = &["webhook-id", "webhook-timestamp", "webhook-signature"];

/// The method of an `http.request` job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST (the default).
    #[default]
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// HEAD.
    Head,
}

impl From<HttpMethod> for Method {
    fn from(m: HttpMethod) -> Self {
        match m {
            HttpMethod::Get => Method::GET,
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Patch => Method::PATCH,
            HttpMethod::Delete => Method::DELETE,
            HttpMethod::Head => Method::HEAD,
        }
    }
}

/// Payload of `http.request`: one HTTP request (a webhook delivery).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestPayload {
    /// The method: GET, POST, PUT, PATCH, DELETE or HEAD (default POST).
    #[serde(default)]
    pub method: HttpMethod,
    /// An absolute http or https URL whose destination the worker's OFFLOAD_WEBHOOK_ALLOW allows.
    #[schemars(length(min = 1, max = 8192))]
    pub url: String,
    /// Request headers by name; hop-by-hop headers, Host and Content-Length are refused.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// The body: a string is sent as it is; any other JSON value is sent as JSON, with
    /// Content-Type application/json unless the headers name one.
    #[serde(default)]
    pub body: Option<Value>,
    /// Time limit for the whole exchange in milliseconds (default 10000, at most 60000).
    #[serde(default)]
    #[schemars(range(min = 1, max = 60_000))]
    pub timeout_ms: Option<u64>,
    /// Name of the signing key (from OFFLOAD_WEBHOOK_SECRETS_FILE) to sign the request with,
    /// the Standard Webhooks way: webhook-id (the job id), webhook-timestamp, webhook-signature.
    #[serde(default)]
    pub sign_with: Option<String>,
}

/// The result of a delivery the destination accepted (2xx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpResponseOutput {
    /// The status code.
    pub status: u16,
    /// The response headers (repeated ones joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// The body as text (UTF-8, invalid bytes replaced), at most 64 KiB.
    pub body: String,
    /// True when the body was longer and cut.
    pub body_truncated: bool,
    /// Milliseconds from sending to the end of the body.
    pub elapsed_ms: u64,
}

/// The stock kind `http.request`: sends one request where OFFLOAD_WEBHOOK_ALLOW allows,
/// signed with a key of OFFLOAD_WEBHOOK_SECRETS_FILE if asked.
///
/// ```
/// let settings = offload_worker::Settings::from_env().unwrap();
/// let kind = offload_worker::handlers::http_request::HttpRequest::from_settings(&settings).unwrap();
/// let worker = offload_worker::Worker::builder(settings).job(kind);
/// ```
#[derive(Debug, Clone)]
pub struct HttpRequest {
    outbound: Arc<Outbound>,
    keys: Arc<SigningKeys>,
}

impl Default for HttpRequest {
    /// Refuses every destination and has no keys: what the kind's spec is made from.
    fn default() -> Self {
        HttpRequest::new(
            Outbound::new("OFFLOAD_WEBHOOK_ALLOW", Default::default()),
            SigningKeys::default(),
        )
    }
}

impl HttpRequest {
    /// The kind with this outbound policy and these signing keys.
    pub fn new(outbound: Outbound, keys: SigningKeys) -> Self {
        HttpRequest {
            outbound: Arc::new(outbound),
            keys: Arc::new(keys),
        }
    }

    /// The kind as `settings` configure it (OFFLOAD_WEBHOOK_ALLOW, OFFLOAD_WEBHOOK_SECRETS_FILE);
    /// the error says which setting is wrong and where.
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        let outbound = Outbound::from_setting("OFFLOAD_WEBHOOK_ALLOW", &settings.webhook_allow)?;
        let keys = match &settings.webhook_secrets_file {
            Some(path) => SigningKeys::read(path)?,
            None => SigningKeys::default(),
        };
        Ok(HttpRequest::new(outbound, keys))
    }
}

impl Job for HttpRequest {
    const KIND: &'static str = "http.request";
    type Payload = HttpRequestPayload;
    type Output = HttpResponseOutput;

    fn queue(&self) -> &str {
        "webhooks"
    }

    async fn run(
        &self,
        ctx: JobContext,
        p: HttpRequestPayload,
    ) -> Result<HttpResponseOutput, JobError> {
        deliver(self, &ctx, p).await
    }
}

/// The request `p` describes, checked; signed if asked.
fn build(
    kind: &HttpRequest,
    ctx: &JobContext,
    p: HttpRequestPayload,
) -> Result<OutboundRequest, JobError> {
    let timeout_ms = p.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(JobError::permanent(format!(
            "timeout_ms is {timeout_ms}; it must be 1 to {MAX_TIMEOUT_MS}"
        )));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in p.headers.unwrap_or_default() {
        let lower = name.to_ascii_lowercase();
        if REFUSED_HEADERS.contains(&lower.as_str()) {
            return Err(JobError::permanent(format!(
                "header {name} may not be set: the request's connection and framing are the worker's"
            )));
        }
        if p.sign_with.is_some() && SIGNATURE_HEADERS.contains(&lower.as_str()) {
            return Err(JobError::permanent(format!(
                "header {name} may not be set on a signed request: the signature sets it"
            )));
        }
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| JobError::permanent(format!("{name:?} is not a header name")))?;
        let header_value = HeaderValue::from_str(&value)
            .map_err(|_| JobError::permanent(format!("the value of header {name} is not valid")))?;
        headers.append(header_name, header_value);
    }
    let body = match p.body {
        None => Bytes::new(),
        Some(Value::String(text)) => Bytes::from(text),
        Some(json) => {
            if !headers.contains_key(header::CONTENT_TYPE) {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            Bytes::from(serde_json::to_vec(&json).map_err(JobError::permanent)?)
        }
    };
    if let Some(name) = &p.sign_with {
        let Some(secret) = kind.keys.get(name) else {
            return Err(JobError::permanent(format!(
                "sign_with names the signing key {name:?}, which this worker does not have \
                 (OFFLOAD_WEBHOOK_SECRETS_FILE)"
            )));
        };
        let id = ctx.id.to_string();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signed = signature(secret, &id, timestamp, &body);
        for (header, value) in [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signed),
        ] {
            let value = HeaderValue::from_str(&value).map_err(JobError::permanent)?;
            headers.insert(HeaderName::from_static(header), value);
        }
    }
    // The job's own time limit bounds the request too.
    let timeout = std::time::Duration::from_millis(timeout_ms).min(ctx.remaining());
    Ok(OutboundRequest {
        method: p.method.into(),
        url: p.url,
        headers,
        body,
        timeout,
    })
}

async fn deliver(
    kind: &HttpRequest,
    ctx: &JobContext,
    p: HttpRequestPayload,
) -> Result<HttpResponseOutput, JobError> {
    let request = build(kind, ctx, p)?;
    let url = request.url.clone();
    let started = Instant::now();
    let response = kind
        .outbound
        .send(request)
        .await
        .map_err(|e| e.into_job_error(ctx))?;
    let status = response.status;
    if !status.is_success() {
        let error = OutboundError::Status {
            retry_after: retry_after_of(&response.headers),
            status,
            url: shown(&url),
        };
        return Err(if status.is_redirection() {
            JobError::permanent(format!("{error} (redirects are not followed)"))
        } else if status_is_retryable(status) {
            error.into_job_error(ctx)
        } else {
            JobError::permanent(error)
        });
    }
    let headers = flatten(&response.headers);
    let (body, body_truncated) = response
        .body(MAX_RESPONSE_BODY_BYTES)
        .await
        .map_err(|e| e.into_job_error(ctx))?;
    Ok(HttpResponseOutput {
        status: status.as_u16(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        body_truncated,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// `url` without its query, for messages.
fn shown(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_owned()
}

/// Headers as one text value per name.
fn flatten(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::outbound::AllowList;
    use serde_json::json;
    use std::time::Duration;

    fn kind(keys: &str) -> HttpRequest {
        HttpRequest::new(
            Outbound::new(
                "OFFLOAD_WEBHOOK_ALLOW",
                AllowList::parse("x", "127.0.0.1").expect("valid"),
            ),
            SigningKeys::parse(keys).expect("valid"),
        )
    }

    fn payload(v: Value) -> HttpRequestPayload {
        serde_json::from_value(v).expect("a payload")
    }

    fn ctx() -> JobContext {
        JobContext::standalone("http.request", Duration::from_secs(30))
    }

    #[test]
    fn bad_headers_and_unknown_keys_are_permanent_and_say_why() {
        let k = kind("");
        for (p, why) in [
            (
                json!({"url": "http://127.0.0.1/", "headers": {"Connection": "close"}}),
                "header Connection may not be set",
            ),
            (
                json!({"url": "http://127.0.0.1/", "headers": {"Host": "evil"}}),
                "header Host",
            ),
            (
                json!({"url": "http://127.0.0.1/", "headers": {"Transfer-Encoding": "chunked"}}),
                "Transfer-Encoding",
            ),
            (
                json!({"url": "http://127.0.0.1/", "headers": {"bad name": "x"}}),
                "not a header name",
            ),
            (
                json!({"url": "http://127.0.0.1/", "headers": {"x": "a\nb"}}),
                "not valid",
            ),
            (
                json!({"url": "http://127.0.0.1/", "timeout_ms": 60001}),
                "timeout_ms is 60001",
            ),
            (
                json!({"url": "http://127.0.0.1/", "sign_with": "nope"}),
                "signing key \"nope\"",
            ),
            (
                json!({"url": "http://127.0.0.1/", "sign_with": "a", "headers": {"Webhook-Id": "x"}}),
                "signed request",
            ),
        ] {
            let e = build(&k, &ctx(), payload(p.clone())).expect_err(why);
            assert!(e.is_permanent() && e.message().contains(why), "{p}: {e}");
        }
    }

    #[test]
    fn a_signed_json_body_carries_the_three_headers() {
        let k = kind("a=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let c = ctx();
        let r = build(
            &k,
            &c,
            payload(json!({"url": "http://127.0.0.1/", "body": {"n": 1}, "sign_with": "a"})),
        )
        .expect("valid");
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.body, Bytes::from_static(br#"{"n":1}"#));
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers["webhook-id"], c.id.to_string().as_str());
        let ts: i64 = r.headers["webhook-timestamp"]
            .to_str()
            .expect("text")
            .parse()
            .expect("a number");
        let secret = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .expect("b64");
        assert_eq!(
            r.headers["webhook-signature"].to_str().expect("text"),
            signature(&secret, &c.id.to_string(), ts, &r.body)
        );
        let text = build(
            &k,
            &c,
            payload(json!({"url": "http://127.0.0.1/", "method": "PUT", "body": "plain"})),
        )
        .expect("valid");
        assert_eq!(
            (text.method, text.body),
            (Method::PUT, Bytes::from_static(b"plain"))
        );
        assert!(!text.headers.contains_key(header::CONTENT_TYPE));
        assert!(!text.headers.contains_key("webhook-signature"));
    }
}
