//! Building and running the API: connect, declare, open the store, bind, serve, drain.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use offload_shared::{
    Settings,
    broker::{self, BrokerError},
    topology::{self, Names, TopologyError},
};

use crate::{
    events,
    publisher::JobPublisher,
    routes,
    state::AppState,
    store::{SqliteStore, StoreError, writer::StoreWriter},
};

/// Why the API could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// RabbitMQ is not reachable.
    #[error(
        "cannot reach RabbitMQ at {url}: {source}. Start it (e.g. `rabbitmq-server -detached`) or \
         point OFFLOAD_AMQP_URL at it."
    )]
    Broker {
        /// The address, without password.
        url: String,
        /// What failed.
        #[source]
        source: BrokerError,
    },
    /// The queues exist with other arguments.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The job store could not be opened.
    #[error("cannot open the job store {url}: {source}")]
    Store {
        /// `OFFLOAD_DATABASE_URL`.
        url: String,
        /// What failed.
        #[source]
        source: StoreError,
    },
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
    state: AppState,
    names: Names,
    writer_task: JoinHandle<()>,
}

impl Application {
    /// Connects to the broker, declares the topology, opens the store and binds the port.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let deadline = settings.broker_timeout();
        let broker_error = |source| StartError::Broker {
            url: broker::redact(&settings.amqp_url),
            source,
        };
        let connection = broker::connect(&settings.amqp_url, "offload-api", deadline)
            .await
            .map_err(broker_error)?;
        let channel = broker::confirm_channel(&connection, deadline)
            .await
            .map_err(broker_error)?;
        let names = topology::declare(&connection, &settings).await?;
        let publisher = JobPublisher::new(channel, names.jobs_exchange.clone(), deadline);

        let store = SqliteStore::connect(&settings.database_url)
            .await
            .map_err(|source| StartError::Store {
                url: settings.database_url.clone(),
                source,
            })?;
        let (writer, writer_task) = StoreWriter::spawn(store.clone());

        let listener = TcpListener::bind(settings.http_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: settings.http_addr,
                source,
            })?;
        let state = AppState {
            settings: Arc::new(settings),
            publisher,
            store,
            writer,
            broker: Arc::new(connection),
            events_running: Arc::new(AtomicBool::new(false)),
        };
        Ok(Application {
            listener,
            state,
            names,
            writer_task,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.settings.http_addr)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves until `token` is cancelled, then drains: in-flight requests finish, consumed
    /// events are committed and acknowledged, the broker connection is closed.
    pub async fn run_until_stopped(self, token: CancellationToken) -> Result<(), StartError> {
        let Application {
            listener,
            state,
            names,
            writer_task,
        } = self;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, queue = %names.jobs_queue, "listening");
        }

        let events_task = spawn_events(&state, &names, token.child_token()).await;
        let broker_conn = state.broker.clone();
        let grace = state.settings.shutdown_grace();
        let router = routes::router(state);

        let serve =
            axum::serve(listener, router).with_graceful_shutdown(token.clone().cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
        token.cancel();
        // The events task and the router held the last writer handles; once they are gone the
        // writer commits its final batch and stops.
        let drain = async {
            let _ = events_task.await;
            let _ = writer_task.await;
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(?grace, "drain did not finish within the grace period");
        }
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            broker_conn.close(200, "offload-api shutting down".into()),
        )
        .await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn spawn_events(state: &AppState, names: &Names, token: CancellationToken) -> JoinHandle<()> {
    let deadline = state.settings.broker_timeout();
    let channel = broker::with_deadline(
        deadline,
        "open the events channel",
        state.broker.create_channel(),
    )
    .await;
    let writer = state.writer.clone();
    let running = state.events_running.clone();
    let queue = names.events_queue.clone();
    tokio::spawn(async move {
        let channel = match channel {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot consume lifecycle events; job status will not advance");
                return;
            }
        };
        running.store(true, Ordering::Relaxed);
        let outcome = events::consume(channel, &queue, writer, deadline, token).await;
        running.store(false, Ordering::Relaxed);
        if let Err(e) = outcome {
            tracing::error!(error = %e, "lifecycle event consumer stopped; job status will not advance");
        }
    })
}
