//! Building and running a worker: connect, declare, consume with `basic.qos(prefetch)`, run up
//! to `prefetch` jobs at once. When the broker connection is lost the worker abandons the jobs
//! of that connection (the broker redelivers them), reconnects with back-off, redeclares and
//! consumes again. On shutdown it stops taking jobs and drains within the grace period.

use std::{
    net::SocketAddr,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use futures_util::StreamExt;
use lapin::{
    Channel, Connection,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::{FieldTable, ShortString},
};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use offload_shared::{
    QueueType, Settings, broker,
    session::{self, OpenError, Opened},
    settings::DEFAULT_METRICS_ADDR,
    topology::Names,
};

use crate::{
    consumer::JobRunner,
    handlers::Registry,
    http::{self, Probe},
    metrics::WorkerMetrics,
    reporter::Reporter,
};

/// Why the worker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The broker is unreachable, or its queues exist with other arguments.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The metrics address could not be bound.
    #[error(
        "cannot listen on {addr} (OFFLOAD_METRICS_ADDR): {source}. Free the port, or set \
         OFFLOAD_METRICS_ADDR to another address (port 0 picks a free one), or leave it unset \
         to use 0.0.0.0:9090 or else a free port."
    )]
    Bind {
        /// The address asked for (`OFFLOAD_METRICS_ADDR`, or the default).
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// One connection's worth of broker state. Dropped as a whole when the connection is lost:
/// nothing of it (channels, delivery tags) is reused on the next connection.
struct Session {
    connection: Connection,
    jobs: Channel,
    reporter: Reporter,
    names: Names,
}

/// How a session ended.
enum SessionEnd {
    /// Shutdown was asked for and the drain is done.
    Stopped,
    /// The connection or a channel was lost.
    Lost(String),
}

/// A built worker, connected and ready to consume.
pub struct Application {
    settings: Settings,
    worker: Arc<str>,
    registry: Arc<Registry>,
    session: Session,
    listener: TcpListener,
    probe: Probe,
}

impl Application {
    /// Connects, declares the topology and sets the prefetch, with the built-in handlers.
    pub async fn build(settings: Settings) -> Result<Self, WorkerError> {
        Self::build_with(settings, Registry::builtin()).await
    }

    /// Like [`Application::build`], with the given handlers.
    pub async fn build_with(settings: Settings, registry: Registry) -> Result<Self, WorkerError> {
        let worker: Arc<str> = settings.worker_name().into();
        let session = open_session(&settings, &worker, settings.broker_timeout()).await?;
        let listener = bind_metrics(settings.metrics_addr, DEFAULT_METRICS_ADDR).await?;
        let probe = Probe {
            metrics: Arc::new(WorkerMetrics::default()),
            consuming: Arc::new(AtomicBool::new(false)),
        };
        Ok(Application {
            settings,
            worker,
            registry: Arc::new(registry),
            session,
            listener,
            probe,
        })
    }

    /// The bound metrics address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.settings.metrics_addr_or_default())
    }

    /// The bound metrics port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The worker's name in job status.
    pub fn name(&self) -> &str {
        &self.worker
    }

    /// Consumes until `token` is cancelled, reconnecting whenever the broker is lost. A
    /// topology mismatch found on reconnection is an error.
    pub async fn run_until_stopped(self, token: CancellationToken) -> Result<(), WorkerError> {
        let Application {
            settings,
            worker,
            registry,
            session,
            listener,
            probe,
        } = self;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "metrics listening");
        }
        let server_token = CancellationToken::new();
        let server = tokio::spawn(
            axum::serve(listener, http::router(probe.clone()))
                .with_graceful_shutdown(server_token.clone().cancelled_owned())
                .into_future(),
        );
        let mut session = Some(session);
        loop {
            let current = match session.take() {
                Some(s) => s,
                None => match reconnect(&settings, &worker, &token).await? {
                    Some(s) => s,
                    None => break,
                },
            };
            match consume(current, &settings, &registry, &probe, &token).await {
                SessionEnd::Stopped => break,
                SessionEnd::Lost(why) => {
                    tracing::warn!(reason = %why, "lost the broker; abandoned this connection's jobs to redelivery, reconnecting");
                }
            }
        }
        server_token.cancel();
        let _ = server.await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Binds the metrics endpoint. An address the operator set (`requested`) is bound as it is, and
/// failing is a start-up error. Unset, `default` is tried first and, when its port is taken
/// (another worker on this machine has it), a free port on the same interface: any number of
/// workers start on one machine with no setting, and the address each one got is logged.
async fn bind_metrics(
    requested: Option<SocketAddr>,
    default: SocketAddr,
) -> Result<TcpListener, WorkerError> {
    let addr = requested.unwrap_or(default);
    let error = match TcpListener::bind(addr).await {
        Ok(listener) => return Ok(listener),
        Err(source) => source,
    };
    if requested.is_some() || error.kind() != std::io::ErrorKind::AddrInUse {
        return Err(WorkerError::Bind {
            addr,
            source: error,
        });
    }
    let free = SocketAddr::new(default.ip(), 0);
    let listener = TcpListener::bind(free)
        .await
        .map_err(|source| WorkerError::Bind { addr: free, source })?;
    let bound = listener.local_addr().unwrap_or(free);
    tracing::warn!(
        addr = %bound,
        "metrics and health endpoint on {bound}: OFFLOAD_METRICS_ADDR is not set and {default} is \
         in use (another worker on this machine?); set OFFLOAD_METRICS_ADDR to pin the address"
    );
    Ok(listener)
}

/// Connects and declares with `settings`' deadlines; the session's reports get `report_deadline`.
async fn open_session(
    settings: &Settings,
    worker: &Arc<str>,
    report_deadline: std::time::Duration,
) -> Result<Session, WorkerError> {
    let Opened {
        connection,
        names,
        confirms: reports,
        plain: jobs,
    } = session::open(settings, &format!("offload-worker {worker}")).await?;
    // Fair dispatch: the broker sends this worker at most `prefetch` unacknowledged jobs, so a
    // busy worker is skipped and its jobs go to idle ones.
    broker::with_deadline(
        settings.broker_timeout(),
        "set the prefetch",
        jobs.basic_qos(settings.prefetch, BasicQosOptions::default()),
    )
    .await
    .map_err(|source| OpenError::unreachable(settings, source))?;
    let reporter = Reporter::new(reports, &names, worker.clone(), report_deadline);
    Ok(Session {
        connection,
        jobs,
        reporter,
        names,
    })
}

/// Reconnects with back-off until it works, `token` is cancelled (`None`), or the topology no
/// longer matches (an error an operator must fix).
async fn reconnect(
    settings: &Settings,
    worker: &Arc<str>,
    token: &CancellationToken,
) -> Result<Option<Session>, WorkerError> {
    // The session's reports keep the full deadline; only connecting and declaring are cut.
    let report_deadline = settings.broker_timeout();
    let opened = broker::reconnect(
        settings,
        token,
        |quick| async move { open_session(&quick, worker, report_deadline).await },
        |e: &WorkerError| matches!(e, WorkerError::Open(open) if open.is_fatal()),
    );
    opened.await
}

/// Runs one session until shutdown or loss of the connection.
async fn consume(
    session: Session,
    settings: &Settings,
    registry: &Arc<Registry>,
    probe: &Probe,
    token: &CancellationToken,
) -> SessionEnd {
    let Session {
        connection,
        jobs,
        reporter,
        names,
    } = session;
    let deadline = settings.broker_timeout();
    let tag = ShortString::from(reporter.worker().to_string());
    let consumer = broker::with_deadline(
        deadline,
        "start consuming",
        jobs.basic_consume(
            ShortString::from(names.jobs_queue.as_str()),
            tag.clone(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    let mut consumer = match consumer {
        Ok(c) => c,
        Err(e) => return SessionEnd::Lost(e.to_string()),
    };
    tracing::info!(
        worker = %reporter.worker(),
        queue = %names.jobs_queue,
        prefetch = settings.prefetch,
        "consuming"
    );
    let runner = JobRunner {
        registry: registry.clone(),
        reporter: reporter.clone(),
        retry: settings.retry_policy(),
        metrics: probe.metrics.clone(),
        delivery_limit: (settings.queue_type == QueueType::Quorum)
            .then_some(settings.delivery_limit),
        max_result_bytes: settings.max_result_bytes(),
    };

    // Jobs of this session only: dropping the set aborts them, and their deliveries (whose
    // tags belong to this connection) are redelivered by the broker.
    let mut running = JoinSet::new();
    let watched = [&jobs, reporter.channel()];
    let mut lost = pin!(broker::lost(&connection, &watched));
    probe.consuming.store(true, Ordering::Relaxed);
    let end = loop {
        tokio::select! {
            biased;
            () = token.cancelled() => break None,
            () = &mut lost => break Some("the connection or a channel closed".to_owned()),
            Some(_) = running.join_next(), if !running.is_empty() => {}
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    running.spawn(runner.clone().process(delivery));
                }
                Some(Err(e)) => break Some(e.to_string()),
                None => break Some("the broker ended the consumer".to_owned()),
            },
        }
    };
    probe.consuming.store(false, Ordering::Relaxed);
    if let Some(why) = end {
        return SessionEnd::Lost(why);
    }

    // Shutdown: stop taking jobs; the ones running keep their channel until they finish.
    let _ = broker::with_deadline(
        deadline,
        "cancel the consumer",
        jobs.basic_cancel(tag, BasicCancelOptions::default()),
    )
    .await;
    let grace = settings.shutdown_grace();
    tracing::info!(running = running.len(), ?grace, "draining");
    let drain = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!(
            unfinished = running.len(),
            "grace period over; unfinished jobs go back to the queue"
        );
        running.abort_all();
    }
    let _ = tokio::time::timeout(
        deadline,
        connection.close(200, "offload-worker shutting down".into()),
    )
    .await;
    SessionEnd::Stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address of this host whose port is held for as long as the listener lives.
    async fn taken() -> (TcpListener, SocketAddr) {
        let holder = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = holder.local_addr().expect("addr");
        (holder, addr)
    }

    #[tokio::test]
    async fn an_unset_address_uses_the_default_port_when_it_is_free() {
        let (holder, default) = taken().await;
        drop(holder);
        let listener = bind_metrics(None, default).await.expect("binds");
        assert_eq!(listener.local_addr().expect("addr"), default);
    }

    #[tokio::test]
    async fn an_unset_address_falls_back_to_a_free_port_when_the_default_is_taken() {
        let (_holder, default) = taken().await;
        let listener = bind_metrics(None, default).await.expect("falls back");
        let bound = listener.local_addr().expect("addr");
        assert_eq!(bound.ip(), default.ip(), "same interface");
        assert_ne!(bound.port(), default.port());
        assert_ne!(bound.port(), 0);
    }

    #[tokio::test]
    async fn a_set_address_that_is_taken_is_a_start_up_error_naming_the_setting() {
        let (_holder, addr) = taken().await;
        let other_default = SocketAddr::from(([127, 0, 0, 1], 0));
        let error = bind_metrics(Some(addr), other_default)
            .await
            .expect_err("no fallback for a set address");
        let text = error.to_string();
        assert!(
            matches!(error, WorkerError::Bind { addr: a, .. } if a == addr),
            "{text}"
        );
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("OFFLOAD_METRICS_ADDR"), "{text}");
    }
}
