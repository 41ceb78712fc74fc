//! Building and running a worker: connect, declare, consume with `basic.qos(prefetch)`, run up
//! to `prefetch` jobs at once, and on shutdown stop taking jobs and drain within the grace period.

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::{
    Channel, Connection,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::{FieldTable, ShortString},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use offload_shared::{
    Settings,
    broker::{self, BrokerError},
    topology::{self, Names, TopologyError},
};

use crate::{consumer, handlers::Registry, reporter::Reporter};

/// Why the worker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
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
    /// The broker connection failed while consuming.
    #[error("lost the broker while consuming: {0}")]
    Consume(#[source] lapin::Error),
    /// The broker ended the consumer (queue deleted, or the connection closed).
    #[error("the broker ended the job consumer (queue deleted or connection closed)")]
    ConsumerEnded,
}

/// A built worker, connected and ready to consume.
pub struct Application {
    settings: Settings,
    connection: Connection,
    jobs: Channel,
    reporter: Reporter,
    registry: Arc<Registry>,
    names: Names,
}

impl Application {
    /// Connects, declares the topology and sets the prefetch, with the built-in handlers.
    pub async fn build(settings: Settings) -> Result<Self, WorkerError> {
        Self::build_with(settings, Registry::builtin()).await
    }

    /// Like [`Application::build`], with the given handlers.
    pub async fn build_with(settings: Settings, registry: Registry) -> Result<Self, WorkerError> {
        let deadline = settings.broker_timeout();
        let worker: Arc<str> = settings.worker_name().into();
        let broker_error = |source| WorkerError::Broker {
            url: broker::redact(&settings.amqp_url),
            source,
        };
        let connection = broker::connect(
            &settings.amqp_url,
            &format!("offload-worker {worker}"),
            deadline,
        )
        .await
        .map_err(broker_error)?;
        let reports = broker::confirm_channel(&connection, deadline)
            .await
            .map_err(broker_error)?;
        let names = topology::declare(&connection, &settings).await?;
        let jobs = broker::with_deadline(
            deadline,
            "open the jobs channel",
            connection.create_channel(),
        )
        .await
        .map_err(broker_error)?;
        // Fair dispatch: the broker sends this worker at most `prefetch` unacknowledged jobs, so
        // a busy worker is skipped and its jobs go to idle ones.
        broker::with_deadline(
            deadline,
            "set the prefetch",
            jobs.basic_qos(settings.prefetch, BasicQosOptions::default()),
        )
        .await
        .map_err(broker_error)?;
        let reporter = Reporter::new(reports, &names, worker, deadline);
        Ok(Application {
            settings,
            connection,
            jobs,
            reporter,
            registry: Arc::new(registry),
            names,
        })
    }

    /// The worker's name in job status.
    pub fn name(&self) -> &str {
        self.reporter.worker()
    }

    /// Consumes until `token` is cancelled or the broker goes away. On cancel: stops taking jobs,
    /// lets running jobs finish within the grace period, then closes; whatever did not finish is
    /// unacknowledged and the broker redelivers it.
    pub async fn run_until_stopped(self, token: CancellationToken) -> Result<(), WorkerError> {
        let Application {
            settings,
            connection,
            jobs,
            reporter,
            registry,
            names,
        } = self;
        let deadline = settings.broker_timeout();
        let tag = ShortString::from(format!("{}", reporter.worker()));
        let mut consumer = broker::with_deadline(
            deadline,
            "start consuming",
            jobs.basic_consume(
                ShortString::from(names.jobs_queue.as_str()),
                tag.clone(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|source| WorkerError::Broker {
            url: broker::redact(&settings.amqp_url),
            source,
        })?;
        tracing::info!(
            worker = %reporter.worker(),
            queue = %names.jobs_queue,
            prefetch = settings.prefetch,
            "consuming"
        );

        let tracker = TaskTracker::new();
        let outcome = loop {
            let next = tokio::select! {
                biased;
                () = token.cancelled() => break Ok(()),
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    tracker.spawn(consumer::process(
                        delivery,
                        registry.clone(),
                        reporter.clone(),
                    ));
                }
                Some(Err(e)) => break Err(WorkerError::Consume(e)),
                None => break Err(WorkerError::ConsumerEnded),
            }
        };

        // Stop taking jobs; the ones already running keep their channel until they finish.
        let _ = broker::with_deadline(
            deadline,
            "cancel the consumer",
            jobs.basic_cancel(tag, BasicCancelOptions::default()),
        )
        .await;
        tracker.close();
        let grace = settings.shutdown_grace();
        tracing::info!(running = tracker.len(), ?grace, "draining");
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                unfinished = tracker.len(),
                "grace period over; unfinished jobs go back to the queue"
            );
        }
        let _ = tokio::time::timeout(
            deadline,
            connection.close(200, "offload-worker shutting down".into()),
        )
        .await;
        tracing::info!("stopped");
        outcome
    }
}
