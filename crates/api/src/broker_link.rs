//! The API's link to RabbitMQ, kept up by a supervisor task: it watches the connection and its
//! channels, and when they are lost it withdraws the publisher (requests get a fast 503),
//! reconnects with back-off, redeclares the topology, resumes consuming events, artifacts and
//! worker announcements, and publishes the new publisher to the handlers.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use lapin::{Channel, Connection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use offload_shared::{
    Settings,
    broker::{self, BrokerError},
    frames::MessageLimits,
    session::{self, OpenError},
    topology::{self, Names},
};

use crate::{
    announcements::{self, Registry},
    artifacts,
    depth::{self, Management, QueueStats, Watched},
    events,
    kinds::Kinds,
    metrics::ApiMetrics,
    publisher::JobPublisher,
    store::{Store, writer::StoreWriter},
};

/// One connection's worth of broker state, given up on as a whole when the connection is lost
/// (closed with [`broker::abandon`] if it is still open).
pub struct Session {
    connection: Connection,
    publisher: JobPublisher,
    events: Channel,
    announcements: Channel,
    /// Artifact messages, consumed apart so large ones never hold up events.
    artifacts: Channel,
}

/// Connects, declares the topology, routes every known kind to its queue, and opens the
/// publishing, event and announcement channels.
pub async fn open(settings: &Settings, kinds: &Kinds) -> Result<(Session, Names), OpenError> {
    let opened = session::open(settings, "offload-api").await?;
    let (announcements, artifacts) =
        broker::abandon_on_error(&opened.connection, channels(&opened, settings, kinds)).await?;
    let publisher = JobPublisher::new(
        opened.confirms,
        opened.connection.status().clone(),
        &opened.names,
        settings.publish_timeout(),
        MessageLimits::of(&opened.connection, settings),
    );
    Ok((
        Session {
            connection: opened.connection,
            publisher,
            events: opened.plain,
            announcements,
            artifacts,
        },
        opened.names,
    ))
}

/// Routes every known kind to its queue and opens the announcements and artifacts channels.
async fn channels(
    opened: &session::Opened,
    settings: &Settings,
    kinds: &Kinds,
) -> Result<(Channel, Channel), OpenError> {
    for known in kinds.all() {
        topology::bind_kind(
            &opened.connection,
            settings,
            &known.spec.name,
            &known.spec.queue,
        )
        .await?;
    }
    let announcements = broker::with_deadline(
        settings.broker_timeout(),
        "open the announcements channel",
        opened.connection.create_channel(),
    )
    .await
    .map_err(|e: BrokerError| OpenError::unreachable(settings, e))?;
    let artifacts = broker::with_deadline(
        settings.broker_timeout(),
        "open the artifacts channel",
        opened.connection.create_channel(),
    )
    .await
    .map_err(|e: BrokerError| OpenError::unreachable(settings, e))?;
    Ok((announcements, artifacts))
}

/// What the supervisor shares with the request handlers.
#[derive(Clone)]
pub struct LinkState {
    /// The current publisher; `None` while disconnected.
    pub publisher: watch::Receiver<Option<JobPublisher>>,
    /// True while lifecycle events are being consumed into the store.
    pub events_running: Arc<AtomicBool>,
}

/// What the supervisor keeps up to date, and what it feeds.
pub struct Supervised {
    /// The validated settings.
    pub settings: Arc<Settings>,
    /// Queue names.
    pub names: Names,
    /// Where consumed events go.
    pub writer: StoreWriter,
    /// Where the current publisher is published to the handlers.
    pub publisher: watch::Sender<Option<JobPublisher>>,
    /// Set while events are being consumed.
    pub events_running: Arc<AtomicBool>,
    /// Event and queue-depth metrics.
    pub metrics: Arc<ApiMetrics>,
    /// The known kinds, bound again on every reconnection.
    pub kinds: Kinds,
    /// Where worker announcements are applied.
    pub registry: Registry,
    /// Where the queues' latest depth is kept.
    pub queue_stats: QueueStats,
    /// Where consumed artifacts are stored.
    pub store: Store,
}

/// Keeps the link up until `token` is cancelled. Returns an error only for what reconnecting
/// cannot fix (the queues were redeclared with other arguments).
pub async fn supervise(
    first: Session,
    link: Supervised,
    token: CancellationToken,
) -> Result<(), OpenError> {
    let Supervised {
        settings,
        names,
        writer,
        publisher,
        events_running,
        metrics,
        kinds,
        registry,
        queue_stats,
        store,
    } = link;
    let deadline = settings.broker_timeout();
    let management = Management::from_settings(&settings);
    let mut session = Some(first);
    loop {
        let current = match session.take() {
            Some(s) => s,
            None => match reconnect(&settings, &kinds, &token).await? {
                Some(s) => s,
                None => return Ok(()),
            },
        };
        publisher.send_replace(Some(current.publisher.clone()));
        events_running.store(true, Ordering::Relaxed);
        let watched = [
            current.publisher.channel(),
            &current.events,
            &current.announcements,
            &current.artifacts,
        ];
        let lost_because = tokio::select! {
            () = depth::watch(&current.connection, Watched { names: &names, kinds: &kinds, metrics: &metrics, stats: &queue_stats }, management.as_ref(), deadline) => None,
            outcome = events::consume(current.events.clone(), &names.events_queue, &current.publisher, writer.clone(), &metrics, deadline, token.clone()) => match outcome {
                Ok(()) if token.is_cancelled() => None,
                Ok(()) => Some("the broker ended the events consumer".to_owned()),
                Err(e) => Some(e.to_string()),
            },
            outcome = announcements::consume(current.announcements.clone(), &current.connection, &names.workers_queue, &registry, deadline, token.clone()) => match outcome {
                Ok(()) if token.is_cancelled() => None,
                Ok(()) => Some("the broker ended the announcements consumer".to_owned()),
                Err(e) => Some(e.to_string()),
            },
            outcome = artifacts::consume(current.artifacts.clone(), &names.artifacts_queue, &store, deadline, token.clone()) => match outcome {
                Ok(()) if token.is_cancelled() => None,
                Ok(()) => Some("the broker ended the artifacts consumer".to_owned()),
                Err(e) => Some(e.to_string()),
            },
            () = broker::lost(&current.connection, &watched) => Some("the connection or a channel closed".to_owned()),
        };
        publisher.send_replace(None);
        events_running.store(false, Ordering::Relaxed);
        match lost_because {
            None => {
                let _ = tokio::time::timeout(
                    deadline,
                    current
                        .connection
                        .close(200, "offload-api shutting down".into()),
                )
                .await;
                return Ok(());
            }
            Some(why) => {
                tracing::warn!(reason = %why, "lost the broker; answering 503 until reconnected");
                // Its consumers' unacknowledged events, artifacts and announcements go back to
                // their queues now, not when the process exits.
                broker::abandon(&current.connection).await;
            }
        }
    }
}

async fn reconnect(
    settings: &Settings,
    kinds: &Kinds,
    token: &CancellationToken,
) -> Result<Option<Session>, OpenError> {
    let opened = broker::reconnect(
        settings,
        token,
        |quick| async move { open(&quick, kinds).await.map(|(session, _)| session) },
        OpenError::is_fatal,
    );
    opened.await
}
