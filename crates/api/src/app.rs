//! Building and running the API: connect, declare, open the store, bind, serve, drain.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;

use offload_shared::{
    Settings,
    http_server::{self, HttpLimits},
    session::OpenError,
    settings::AuthMode,
    topology::Names,
};

use crate::{
    broker_link::{self, LinkState, Session, Supervised},
    kinds::Kinds,
    metrics::ApiMetrics,
    retention::Retention,
    routes,
    state::AppState,
    store::{Store, StoreError, redact_url, writer::StoreWriter},
};

/// Why the API could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The broker link failed in a way reconnecting cannot fix.
    #[error(transparent)]
    Link(#[from] OpenError),
    /// The job store could not be opened.
    #[error("cannot open the job store {url}: {source}")]
    Store {
        /// `OFFLOAD_DATABASE_URL`.
        url: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// The kinds file (`OFFLOAD_KINDS_FILE`) cannot be used.
    #[error(transparent)]
    KindsFile(#[from] crate::kinds::pinned::KindsFileError),
    /// `OFFLOAD_AUTH=off` on an address other machines can reach.
    #[error("{0}")]
    Auth(String),
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}. Free the port or set OFFLOAD_HTTP_ADDR.")]
    Bind {
        /// `OFFLOAD_HTTP_ADDR`.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// A built API, bound to its port and ready to serve.
pub struct Application {
    listener: TcpListener,
    settings: Arc<Settings>,
    session: Session,
    names: Names,
    store: Store,
    kinds: Kinds,
}

impl Application {
    /// Connects to the broker, declares the topology, opens the store and binds the port.
    /// Start-up fails (with the fix in the message) if any of them is not possible now.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        settings.check_auth().map_err(StartError::Auth)?;
        if settings.auth == AuthMode::Off {
            tracing::warn!(
                addr = %settings.http_addr,
                "OFFLOAD_AUTH=off: no credentials are checked, anyone who reaches this address is admin"
            );
        }
        let pinned = match settings.kinds_file.as_deref() {
            Some(path) => Some(crate::kinds::pinned::load(path)?),
            None => None,
        };
        let store_failed = |source| StartError::Store {
            url: redact_url(&settings.database_url),
            source,
        };
        let store = Store::connect(&settings.database_url)
            .await
            .map_err(store_failed)?;
        let kinds = Kinds::load(&store, pinned).await.map_err(store_failed)?;
        let (session, names) = broker_link::open(&settings, &kinds).await?;
        let listener =
            http_server::bind(settings.http_addr).map_err(|source| StartError::Bind {
                addr: settings.http_addr,
                source,
            })?;
        Ok(Application {
            listener,
            settings: Arc::new(settings),
            session,
            names,
            store,
            kinds,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.settings.http_addr)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves until `token` is cancelled, then drains: in-flight requests finish (they can still
    /// publish), consumed events are committed and acknowledged, the broker connection closes.
    pub async fn run_until_stopped(self, token: CancellationToken) -> Result<(), StartError> {
        let Application {
            listener,
            settings,
            session,
            names,
            store,
            kinds,
        } = self;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, queue = %names.jobs_queue, "listening");
        }
        let (writer, writer_task) = StoreWriter::spawn(store.clone(), settings.broker_timeout());
        let (publisher_tx, publisher_rx) = watch::channel(None);
        let events_running = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(ApiMetrics::default());
        let queue_stats = crate::depth::QueueStats::default();
        // The broker outlives the HTTP server so that draining requests can still publish.
        let broker_token = CancellationToken::new();
        let link = Supervised {
            settings: settings.clone(),
            names,
            writer: writer.clone(),
            publisher: publisher_tx,
            events_running: events_running.clone(),
            metrics: metrics.clone(),
            kinds: kinds.clone(),
            registry: crate::announcements::Registry::new(
                store.clone(),
                kinds.clone(),
                settings.clone(),
                metrics.clone(),
            ),
            queue_stats: queue_stats.clone(),
            store: store.clone(),
        };
        let supervisor = tokio::spawn(broker_link::supervise(session, link, broker_token.clone()));
        // Beside the writer, in small batches; stops with the server.
        let retention = tokio::spawn(
            Retention::new(store.clone(), &settings, metrics.clone()).run(token.clone()),
        );
        let refresher = tokio::spawn(kinds.clone().refresh(store.clone(), token.clone()));
        let (confirmer, confirmer_task) = crate::accept::Confirmer::spawn(writer.clone());
        let connections = metrics.connections.clone();
        // One grace period for the whole stop: the HTTP connections get it but for a reserve,
        // so a stuck client cannot leave the store writer no time for its final batch.
        let grace = settings.shutdown_grace();
        let state = AppState {
            kinds,
            queue_stats,
            confirmer,
            stopping: broker_token.clone(),
            shutdown: token.clone(),
            settings: settings.clone(),
            link: LinkState {
                publisher: publisher_rx,
                events_running,
            },
            store,
            writer,
            metrics,
            limiter: Arc::default(),
            key_cache: Arc::default(),
            reconcile_soon: Arc::default(),
            schedules_changed: Arc::default(),
            gate_changed: Arc::default(),
        };

        let reconciler = tokio::spawn(crate::accept::run_reconciler(state.clone()));
        let repeater = tokio::spawn(crate::routes::cancel::run_repeater(state.clone()));
        let ticker = tokio::spawn(crate::schedules::run_ticker(state.clone()));
        let dispatcher = tokio::spawn(crate::limits::run_dispatcher(state.clone()));
        let reaper = tokio::spawn(crate::leases::run_reaper(state.clone()));

        // A link failure that reconnecting cannot fix stops the server too.
        let stop = token.clone();
        let supervisor = tokio::spawn(async move {
            let outcome = supervisor.await;
            stop.cancel();
            outcome
        });
        let stopped = http_server::serve(
            listener,
            routes::router(state),
            HttpLimits {
                grace: grace.saturating_sub(drain_reserve(grace)),
                ..HttpLimits::from_settings(&settings)
            },
            connections,
            token.clone(),
        )
        .await;
        broker_token.cancel();
        let remaining = grace.saturating_sub(stopped.since.elapsed());
        let _ = tokio::time::timeout(remaining, reconciler).await;
        let _ = tokio::time::timeout(grace.saturating_sub(stopped.since.elapsed()), repeater).await;
        let _ = tokio::time::timeout(grace.saturating_sub(stopped.since.elapsed()), ticker).await;
        let _ =
            tokio::time::timeout(grace.saturating_sub(stopped.since.elapsed()), dispatcher).await;
        let _ = tokio::time::timeout(grace.saturating_sub(stopped.since.elapsed()), reaper).await;
        let remaining = grace.saturating_sub(stopped.since.elapsed());
        // The supervisor and the router held the last writer handles; once they are gone the
        // writer commits its final batch and stops.
        let drain = async {
            let link = supervisor.await;
            let _ = confirmer_task.await;
            let _ = writer_task.await;
            let _ = retention.await;
            let _ = refresher.await;
            link
        };
        let outcome = match tokio::time::timeout(remaining, drain).await {
            Ok(Ok(Ok(Ok(())))) => Ok(()),
            Ok(Ok(Ok(Err(e)))) => Err(StartError::Link(e)),
            Ok(Ok(Err(join))) | Ok(Err(join)) => {
                tracing::error!(error = %join, "the broker supervisor failed");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(?grace, "drain did not finish within the grace period");
                Ok(())
            }
        };
        tracing::info!("stopped");
        outcome
    }
}

/// The part of the grace period kept for the drain after the HTTP server stopped: a quarter,
/// at most 5 s.
fn drain_reserve(grace: std::time::Duration) -> std::time::Duration {
    (grace / 4).min(std::time::Duration::from_secs(5))
}
