//! Outbound HTTP under a policy, for kinds that call out (`http.request`) or fetch their input
//! from a URL: [`Outbound`] sends only to destinations its [`AllowList`] allows.
//!
//! The host is resolved once, **every** resolved address is checked (private, loopback,
//! link-local, unique-local, CGNAT, unspecified, multicast and their IPv4-mapped forms need an
//! IP or CIDR entry covering them), and the connection goes to one of exactly those checked
//! addresses, so a DNS answer that changes between check and connect (rebinding) cannot reach
//! anything else. Redirects are **not followed**: a 3xx is returned as it is. Only `http` and
//! `https` URLs, without userinfo. One connection per request (no pool), HTTP/1.1.

mod allow;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri, body::Incoming, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub use allow::{AllowList, special_range};

use crate::{JobContext, JobError};

/// Longest URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 8192;

/// The longest `Retry-After` honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// Sends HTTP requests to the destinations an allow-list allows (see the module docs).
///
/// ```
/// use offload_worker::handlers::outbound::Outbound;
/// let outbound = Outbound::from_setting("OFFLOAD_FETCH_ALLOW", "images.example.com").unwrap();
/// assert_eq!(outbound.setting(), "OFFLOAD_FETCH_ALLOW");
/// ```
#[derive(Debug)]
pub struct Outbound {
    setting: &'static str,
    allow: AllowList,
    /// Built on the first https request: loading the system roots costs a few milliseconds.
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

/// One request for [`Outbound::send`].
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// The method.
    pub method: Method,
    /// An absolute `http` or `https` URL.
    pub url: String,
    /// Headers to send (`Host` is set from the URL).
    pub headers: HeaderMap,
    /// The body (empty for none).
    pub body: Bytes,
    /// Limit for connecting, sending and receiving the whole response.
    pub timeout: Duration,
}

/// A response whose head has arrived; its body is read with [`OutboundResponse::body`].
#[derive(Debug)]
pub struct OutboundResponse {
    /// The status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The address the request went to.
    pub remote: SocketAddr,
    body: Incoming,
    deadline: Instant,
    timeout_ms: u128,
    url: String,
}

/// Why an outbound request did not get a response (or an acceptable one).
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The destination is not allowed; the message names the setting that would allow it.
    #[error("{url} is refused: {reason}; allow it in {setting}")]
    NotAllowed {
        /// The allow-list's setting.
        setting: &'static str,
        /// The URL, without its query.
        url: String,
        /// Why.
        reason: String,
    },
    /// The URL cannot be used.
    #[error("the URL is not valid: {0}")]
    InvalidUrl(String),
    /// The host name does not resolve (may be transient).
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// No connection, or it broke (transient).
    #[error("{url}: {reason}")]
    Connect {
        /// The URL, without its query.
        url: String,
        /// Why.
        reason: String,
    },
    /// No complete answer in time (transient).
    #[error("{url}: no complete answer within {ms} ms")]
    Timeout {
        /// The URL, without its query.
        url: String,
        /// The limit.
        ms: u128,
    },
    /// A fetch answered with a status other than 2xx.
    #[error("{url} answered {status}")]
    Status {
        /// The URL, without its query.
        url: String,
        /// The status.
        status: StatusCode,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// A fetched body is larger than allowed.
    #[error("{url}: the body is larger than {max} bytes")]
    TooLarge {
        /// The URL, without its query.
        url: String,
        /// The limit.
        max: usize,
    },
    /// TLS cannot be set up on this machine.
    #[error("TLS cannot be set up: {0}")]
    Tls(String),
}

impl OutboundError {
    /// True when no retry can help: a refused destination, a bad URL, a 4xx other than 408 and
    /// 429, a body too large.
    pub fn is_permanent(&self) -> bool {
        match self {
            OutboundError::NotAllowed { .. }
            | OutboundError::InvalidUrl(_)
            | OutboundError::TooLarge { .. }
            | OutboundError::Tls(_) => true,
            OutboundError::Status { status, .. } => !status_is_retryable(*status),
            OutboundError::Resolve { .. }
            | OutboundError::Connect { .. }
            | OutboundError::Timeout { .. } => false,
        }
    }

    /// The server's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OutboundError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// This error as a job's failure: permanent or retryable as [`is_permanent`](Self::is_permanent)
    /// says, with the server's `Retry-After` given to `ctx` as the retry's earliest time.
    pub fn into_job_error(self, ctx: &JobContext) -> JobError {
        if let Some(wait) = self.retry_after() {
            ctx.retry_not_before(wait);
        }
        if self.is_permanent() {
            JobError::permanent(self)
        } else {
            JobError::retryable(self)
        }
    }
}

/// True for the statuses worth retrying: 408, 429 and every 5xx.
pub fn status_is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// A `Retry-After` value (delay seconds or an HTTP-date, RFC 9110 §10.2.3) as a wait from
/// `now`, at most [`MAX_RETRY_AFTER`]; a date in the past is no wait. `None` if unreadable.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use offload_worker::handlers::outbound::parse_retry_after;
/// assert_eq!(parse_retry_after("120", SystemTime::now()), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The `Retry-After` of `headers`, read as [`parse_retry_after`] does.
pub fn retry_after_of(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// A parsed, checked destination.
struct Target {
    https: bool,
    host: String,
    port: u16,
    /// The `Host` header: the authority as written.
    authority: String,
    path_and_query: String,
    /// The URL without its query, for messages.
    shown: String,
}

fn parse_target(url: &str) -> Result<Target, OutboundError> {
    let invalid = |why: &str| OutboundError::InvalidUrl(why.to_owned());
    if url.len() > MAX_URL_BYTES {
        return Err(invalid(&format!("longer than {MAX_URL_BYTES} bytes")));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| OutboundError::InvalidUrl(format!("{e}")))?;
    let https = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("https") => true,
        Some("http") => false,
        Some(other) => return Err(invalid(&format!("scheme {other:?}: only http and https"))),
        None => return Err(invalid("not an absolute http or https URL")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("the URL has no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid(
            "user names and passwords in the URL are not allowed; use headers",
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(invalid("the URL has no host"));
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let path = uri.path();
    let shown = format!(
        "{}://{}{}",
        if https { "https" } else { "http" },
        authority.as_str(),
        if path.is_empty() { "/" } else { path }
    );
    Ok(Target {
        https,
        host,
        port,
        authority: authority.as_str().to_owned(),
        path_and_query,
        shown,
    })
}

impl Outbound {
    /// An outbound policy allowing what `allow` allows; `setting` names it in refusals.
    pub fn new(setting: &'static str, allow: AllowList) -> Self {
        Outbound {
            setting,
            allow,
            tls: OnceLock::new(),
        }
    }

    /// An outbound policy from the raw value of setting `setting`, e.g. `OFFLOAD_FETCH_ALLOW`;
    /// the error names the setting and the bad entry.
    pub fn from_setting(setting: &'static str, raw: &str) -> Result<Self, String> {
        Ok(Self::new(setting, AllowList::parse(setting, raw)?))
    }

    /// The setting that configures this policy.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// The addresses `url` may be connected to: every address it resolves to, each allowed.
    async fn check(
        &self,
        target: &Target,
        deadline: Instant,
    ) -> Result<Vec<SocketAddr>, OutboundError> {
        let refuse = |reason: String| OutboundError::NotAllowed {
            setting: self.setting,
            url: target.shown.clone(),
            reason,
        };
        if self.allow.is_empty() {
            return Err(refuse(format!(
                "{} is empty, so every destination is refused",
                self.setting
            )));
        }
        let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => {
                let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
                let resolved = tokio::time::timeout_at(deadline.into(), lookup)
                    .await
                    .map_err(|_| OutboundError::Resolve {
                        host: target.host.clone(),
                        reason: "no answer in time".to_owned(),
                    })?
                    .map_err(|e| OutboundError::Resolve {
                        host: target.host.clone(),
                        reason: e.to_string(),
                    })?;
                let mut addrs: Vec<SocketAddr> = resolved.collect();
                addrs.dedup();
                addrs
            }
        };
        if addrs.is_empty() {
            return Err(OutboundError::Resolve {
                host: target.host.clone(),
                reason: "no addresses".to_owned(),
            });
        }
        for addr in &addrs {
            if let Some(why) = self.allow.refusal(&target.host, target.port, addr.ip()) {
                return Err(refuse(why));
            }
        }
        Ok(addrs)
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, OutboundError> {
        self.tls
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                let loaded = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(loaded.certs);
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Ok(Arc::new(config))
            })
            .clone()
            .map_err(OutboundError::Tls)
    }

    /// Sends `request` if its destination is allowed, returning the response head (any status,
    /// 3xx included: redirects are not followed).
    pub async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let deadline = Instant::now() + request.timeout;
        let target = parse_target(&request.url)?;
        let timeout = || OutboundError::Timeout {
            url: target.shown.clone(),
            ms: request.timeout.as_millis(),
        };
        let addrs = self.check(&target, deadline).await?;
        let connect = |reason: String| OutboundError::Connect {
            url: target.shown.clone(),
            reason,
        };
        let mut last = String::from("no address");
        let mut stream = None;
        for addr in addrs {
            match tokio::time::timeout_at(deadline.into(), TcpStream::connect(addr)).await {
                Err(_) => return Err(timeout()),
                Ok(Ok(s)) => {
                    stream = Some((s, addr));
                    break;
                }
                Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        let (stream, remote) = stream.ok_or_else(|| connect(last))?;
        let mut head = Request::builder()
            .method(request.method)
            .uri(target.path_and_query.as_str())
            .header(header::HOST, target.authority.as_str())
            .header(
                header::USER_AGENT,
                concat!("offload-worker/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(headers) = head.headers_mut() {
            headers.extend(request.headers);
        }
        let http_request = head
            .body(Full::new(request.body))
            .map_err(|e| OutboundError::InvalidUrl(e.to_string()))?;
        let exchange = async {
            let response = if target.https {
                let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                    .map_err(|e| OutboundError::InvalidUrl(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls()?)
                    .connect(name, stream)
                    .await
                    .map_err(|e| connect(format!("TLS: {e}")))?;
                exchange(TokioIo::new(tls), http_request).await
            } else {
                exchange(TokioIo::new(stream), http_request).await
            };
            response.map_err(|e| connect(describe(&e)))
        };
        let response = tokio::time::timeout_at(deadline.into(), exchange)
            .await
            .map_err(|_| timeout())??;
        let (parts, body) = response.into_parts();
        Ok(OutboundResponse {
            status: parts.status,
            headers: parts.headers,
            remote,
            body,
            deadline,
            timeout_ms: request.timeout.as_millis(),
            url: target.shown,
        })
    }

    /// GETs `url` and returns its body: a status other than 2xx is an
    /// [`OutboundError::Status`], a body above `max_bytes` an [`OutboundError::TooLarge`].
    pub async fn fetch(
        &self,
        url: &str,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Bytes, OutboundError> {
        let response = self
            .send(OutboundRequest {
                method: Method::GET,
                url: url.to_owned(),
                headers: HeaderMap::new(),
                body: Bytes::new(),
                timeout,
            })
            .await?;
        if !response.status.is_success() {
            return Err(OutboundError::Status {
                retry_after: retry_after_of(&response.headers),
                status: response.status,
                url: response.url,
            });
        }
        let url = response.url.clone();
        match response.body(max_bytes).await? {
            (_, true) => Err(OutboundError::TooLarge {
                url,
                max: max_bytes,
            }),
            (bytes, false) => Ok(bytes),
        }
    }
}

/// One HTTP/1.1 exchange on `io`; the connection is driven by a task until the body is read.
async fn exchange<I>(
    io: TokioIo<I>,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        // Ends when the response body is read or dropped; its error shows in the response.
        let _ = connection.await;
    });
    sender.send_request(request).await
}

/// `error` with its causes.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl OutboundResponse {
    /// The body, at most `max_bytes` of it (reading stops there), and whether it was cut;
    /// within the request's time limit.
    pub async fn body(self, max_bytes: usize) -> Result<(Bytes, bool), OutboundError> {
        let url = self.url;
        let mut body = self.body;
        let mut out = BytesMut::new();
        let read = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| OutboundError::Connect {
                    url: url.clone(),
                    reason: describe(&e),
                })?;
                if let Ok(data) = frame.into_data() {
                    let room = max_bytes - out.len();
                    if data.len() > room {
                        out.extend_from_slice(&data[..room]);
                        return Ok(true);
                    }
                    out.extend_from_slice(&data);
                }
            }
            Ok(false)
        };
        let cut = tokio::time::timeout_at(self.deadline.into(), read)
            .await
            .map_err(|_| OutboundError::Timeout {
                url: url.clone(),
                ms: self.timeout_ms,
            })??;
        Ok((out.freeze(), cut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 30 ", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO),
            "a past date is no wait"
        );
        for bad in ["", "-1", "1.5", "soon", "Wed, 21 Oct 2015"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn urls_are_checked_before_anything_is_sent() {
        for (url, why) in [
            ("ftp://example.com/x", "only http and https"),
            ("/relative", "not an absolute"),
            ("http://user:pw@example.com/", "passwords"),
            ("http://user@example.com/", "passwords"),
            ("not a url", "not valid"),
        ] {
            let Err(e) = parse_target(url) else {
                panic!("{url} must be refused");
            };
            assert!(
                e.is_permanent() && e.to_string().contains(why),
                "{url}: {e}"
            );
        }
        let t = parse_target("HTTPS://Hooks.Example.com:8443/a/b?token=secret").expect("valid");
        assert!(t.https);
        assert_eq!((t.host.as_str(), t.port), ("hooks.example.com", 8443));
        assert_eq!(t.path_and_query, "/a/b?token=secret");
        assert!(!t.shown.contains("secret"), "{}", t.shown);
        let v6 = parse_target("http://[::1]/").expect("valid");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 80));
    }

    #[tokio::test]
    async fn refused_destinations_name_the_setting_and_are_permanent() {
        let request = |url: &str| OutboundRequest {
            method: Method::GET,
            url: url.to_owned(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeout: Duration::from_secs(2),
        };
        let empty = Outbound::new("OFFLOAD_WEBHOOK_ALLOW", AllowList::default());
        let e = empty
            .send(request("http://127.0.0.1:9/"))
            .await
            .expect_err("refused");
        assert!(e.is_permanent(), "{e}");
        assert!(
            e.to_string().contains("OFFLOAD_WEBHOOK_ALLOW is empty"),
            "{e}"
        );
        let named = Outbound::from_setting("OFFLOAD_FETCH_ALLOW", "localhost").expect("valid");
        let e = named
            .send(request("http://localhost:9/"))
            .await
            .expect_err("refused");
        assert!(
            e.to_string().contains("loopback") && e.to_string().contains("OFFLOAD_FETCH_ALLOW"),
            "{e}"
        );
        let e = named
            .send(request("http://169.254.169.254/latest/meta-data/"))
            .await
            .expect_err("refused");
        assert!(e.to_string().contains("link-local"), "{e}");
        let e = named
            .send(request("http://[::ffff:127.0.0.1]/"))
            .await
            .expect_err("refused");
        assert!(e.to_string().contains("loopback"), "{e}");
    }

    /// Answers one connection with `response` (raw HTTP/1.1) after reading the request head.
    async fn one_shot(response: Vec<u8>) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.expect("read");
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let _ = socket.write_all(&response).await;
        });
        port
    }

    #[tokio::test]
    async fn a_listed_address_is_reached_and_long_bodies_are_cut_or_refused() {
        let big = vec![b'x'; 100_000];
        let mut response =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", big.len()).into_bytes();
        response.extend_from_slice(&big);
        let outbound = Outbound::from_setting("OFFLOAD_FETCH_ALLOW", "127.0.0.1").expect("valid");
        let port = one_shot(response.clone()).await;
        let answer = outbound
            .send(OutboundRequest {
                method: Method::POST,
                url: format!("http://127.0.0.1:{port}/hook"),
                headers: HeaderMap::new(),
                body: Bytes::from_static(b"{}"),
                timeout: Duration::from_secs(5),
            })
            .await
            .expect("sent");
        assert_eq!(answer.status, StatusCode::OK);
        let (body, cut) = answer.body(65_536).await.expect("body");
        assert_eq!((body.len(), cut), (65_536, true));
        let port = one_shot(response).await;
        let e = outbound
            .fetch(
                &format!("http://127.0.0.1:{port}/img"),
                1000,
                Duration::from_secs(5),
            )
            .await
            .expect_err("too large");
        assert!(
            matches!(e, OutboundError::TooLarge { max: 1000, .. }) && e.is_permanent(),
            "{e}"
        );
        let port =
            one_shot(b"HTTP/1.1 503 Busy\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n".to_vec())
                .await;
        let e = outbound
            .fetch(
                &format!("http://127.0.0.1:{port}/img"),
                1000,
                Duration::from_secs(5),
            )
            .await
            .expect_err("503");
        assert!(!e.is_permanent(), "{e}");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        let ctx = JobContext::standalone("k", Duration::from_secs(1));
        assert!(!e.into_job_error(&ctx).is_permanent());
        assert_eq!(ctx.retry_hint(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn statuses_worth_retrying() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(
                status_is_retryable(StatusCode::from_u16(s).expect("status")),
                "{s}"
            );
        }
        for s in [301, 400, 401, 403, 404, 410, 422] {
            assert!(
                !status_is_retryable(StatusCode::from_u16(s).expect("status")),
                "{s}"
            );
        }
    }
}
