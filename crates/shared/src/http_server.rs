//! Serving an axum router on hyper with every limit a slow or idle client could otherwise get
//! around: header-read timeout (which also bounds the idle wait between keep-alive requests),
//! header-size cap (431), connection limit, and a shutdown that ends within the grace period
//! whatever the clients do. Used by the API and by the worker's metrics endpoint.
//!
//! axum's own `serve` runs hyper without a timer, so its header-read timeout is off, and waits
//! for every connection after the shutdown signal without a deadline.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::Semaphore,
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::Settings;

/// File descriptors kept free for everything that is not an HTTP connection (store pool, broker
/// connection, log files, the listener itself) when the connection limit is fitted under the
/// process's file-descriptor limit.
pub const RESERVED_FDS: u64 = 256;

/// Listen backlog of [`bind`]: connections the kernel completes before the server accepts them.
/// The kernel caps it at `net.core.somaxconn`. With the usual 128, a burst of connections
/// overflows the queue, and a client that then sends nothing is never seen (with SYN cookies
/// it counts itself connected), so no timeout can close it.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Shortest time between two "connection limit reached" warnings.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The limits one listener enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a client has to send a request head; also the longest idle wait for the next request
    /// on a kept-alive connection (hyper starts the same timer whenever it waits for a head).
    pub header_timeout: Duration,
    /// Largest request line plus headers, in bytes; a larger one is answered 431.
    pub max_header_bytes: usize,
    /// Connections served at once; a connection past it is closed at once.
    pub max_connections: usize,
    /// Time open connections get to finish after the shutdown signal; then they are cut.
    pub grace: Duration,
}

impl HttpLimits {
    /// The limits `settings` describe, with the connection limit lowered (and a warning logged)
    /// when the process's file-descriptor limit cannot hold it.
    pub fn from_settings(settings: &Settings) -> Self {
        let configured = settings.http_max_connections;
        let max_connections = match nofile_limit() {
            Some(fds) if fds.saturating_sub(RESERVED_FDS) < configured => {
                let fitted = fds.saturating_sub(RESERVED_FDS).max(1);
                tracing::warn!(
                    configured,
                    fitted,
                    nofile = fds,
                    "OFFLOAD_HTTP_MAX_CONNECTIONS is above what the file-descriptor limit \
                     (RLIMIT_NOFILE) allows; serving at most {fitted} connections. Raise the \
                     limit (ulimit -n, compose `ulimits: nofile`) to serve more"
                );
                fitted
            }
            _ => configured,
        };
        HttpLimits {
            header_timeout: Duration::from_millis(settings.http_header_timeout_ms),
            max_header_bytes: usize::try_from(settings.http_max_header_bytes).unwrap_or(usize::MAX),
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            grace: settings.shutdown_grace(),
        }
    }
}

/// Binds `addr` for [`serve`] with a [`LISTEN_BACKLOG`] deep accept queue (and `SO_REUSEADDR`,
/// as `std` sets it, so a restarted process rebinds at once).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns the resulting soft
/// limit (None where the platform has none or it cannot be read). Called once at start by each
/// binary, which logs the result.
pub fn raise_nofile_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the file-descriptor limit (RLIMIT_NOFILE)");
            nofile_limit()
        }
    }
}

/// The current soft `RLIMIT_NOFILE`.
fn nofile_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

/// Connection metrics of one listener, registered in the process's registry.
#[derive(Debug, Clone, Default)]
pub struct ConnMetrics {
    open: Gauge,
    refused: Counter,
}

impl ConnMetrics {
    /// Registers `http_connections_open` and `http_connections_refused_total` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_connections_open",
            "HTTP connections open now",
            self.open.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once because OFFLOAD_HTTP_MAX_CONNECTIONS were open",
            self.refused.clone(),
        );
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }
}

/// How the server stopped.
#[derive(Debug, Clone, Copy)]
pub struct Stopped {
    /// When the shutdown signal was seen (the grace period of the whole process counts from here).
    pub since: Instant,
    /// Connections still open at the end of the grace period, closed without an answer.
    pub cut: usize,
}

/// Serves `router` on `listener` until `token` is cancelled; then stops accepting, lets open
/// connections finish their request (idle ones are closed at once) and cuts whatever is left
/// when `limits.grace` has passed. Returns at most `limits.grace` after the signal.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    metrics: ConnMetrics,
    token: CancellationToken,
) -> Stopped {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let draining = CancellationToken::new();
    let mut connections = JoinSet::new();
    let mut last_warning: Option<Instant> = None;
    let mut refused_since_warning = 0u64;
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(e) => {
                        // Out of file descriptors, or the peer gave up before accept: a pause
                        // lets connections close instead of spinning on the error.
                        tracing::warn!(error = %e, "cannot accept an HTTP connection");
                        tokio::select! {
                            () = token.cancelled() => break,
                            () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        }
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    drop(stream);
                    metrics.refused.inc();
                    refused_since_warning += 1;
                    if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                        tracing::warn!(
                            limit = limits.max_connections,
                            refused = refused_since_warning,
                            "HTTP connection limit reached (OFFLOAD_HTTP_MAX_CONNECTIONS); \
                             closing new connections"
                        );
                        last_warning = Some(Instant::now());
                        refused_since_warning = 0;
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let builder = builder.clone();
                let service = TowerToHyperService::new(router.clone());
                let draining = draining.clone();
                let open = metrics.open.clone();
                connections.spawn(async move {
                    open.inc();
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let mut connection = std::pin::pin!(connection);
                    let outcome = tokio::select! {
                        outcome = connection.as_mut() => outcome,
                        () = draining.cancelled() => {
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    };
                    if let Err(e) = outcome {
                        // Timeouts, resets and malformed heads: the client's doing, not ours.
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                    open.dec();
                    drop(permit);
                });
            }
        }
    }
    let since = Instant::now();
    drop(listener);
    draining.cancel();
    let open = connections.len();
    if open > 0 {
        tracing::info!(open, grace = ?limits.grace, "waiting for open HTTP connections");
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    let cut = match tokio::time::timeout_at((since + limits.grace).into(), drain).await {
        Ok(()) => 0,
        Err(_) => {
            let cut = connections.len();
            connections.shutdown().await;
            tracing::warn!(
                cut,
                grace = ?limits.grace,
                "HTTP connections still open at the end of the grace period were closed"
            );
            cut
        }
    };
    Stopped { since, cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_bound_every_slow_client() {
        let settings = Settings::from_env().expect("defaults");
        assert_eq!(settings.http_header_timeout_ms, 10_000);
        assert_eq!(settings.http_body_timeout_ms, 30_000);
        assert_eq!(settings.http_max_connections, 4096);
        assert_eq!(settings.http_max_header_bytes, 16_384);
        let limits = HttpLimits::from_settings(&settings);
        assert_eq!(limits.header_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_header_bytes, 16_384);
        assert_eq!(limits.grace, Duration::from_secs(30));
        assert!(limits.max_connections >= 1 && limits.max_connections <= 4096);
    }

    #[test]
    fn the_connection_limit_fits_under_the_file_descriptor_limit() {
        let mut settings = Settings::from_env().expect("defaults");
        settings.http_max_connections = 1_000_000;
        let limits = HttpLimits::from_settings(&settings);
        let fds = nofile_limit().expect("linux has RLIMIT_NOFILE");
        assert!(
            u64::try_from(limits.max_connections).expect("fits")
                <= fds.saturating_sub(RESERVED_FDS).max(1),
            "{limits:?} with nofile {fds}"
        );
    }
}
