//! The state every handler shares.

use std::sync::{Arc, atomic::Ordering};

use tokio_util::sync::CancellationToken;

use offload_shared::{JobKind, Priority, Settings, broker::BrokerError};

use crate::{
    accept::Confirmer,
    auth::rate::RateLimiter,
    broker_link::LinkState,
    depth::QueueStats,
    kinds::Kinds,
    metrics::ApiMetrics,
    publisher::JobPublisher,
    store::{Store, writer::StoreWriter},
};

/// Shared by all handlers through `with_state`.
#[derive(Clone)]
pub struct AppState {
    /// The validated settings.
    pub settings: Arc<Settings>,
    /// The broker link the supervisor keeps up.
    pub link: LinkState,
    /// Reads jobs.
    pub store: Store,
    /// Writes jobs.
    pub writer: StoreWriter,
    /// What `GET /metrics` reports.
    pub metrics: Arc<ApiMetrics>,
    /// The kinds jobs may have, with their payload schemas.
    pub kinds: Kinds,
    /// The queues' latest depth.
    pub queue_stats: QueueStats,
    /// Records publisher confirms in the background.
    pub confirmer: Confirmer,
    /// Cancelled when the server begins to stop: open event streams end, so they do not hold
    /// the HTTP drain.
    pub shutdown: CancellationToken,
    /// Cancelled when the server has stopped: background waits end, so the drain is not held.
    pub stopping: CancellationToken,
    /// Every API key's submit rate limit (in this process).
    pub limiter: Arc<RateLimiter>,
    /// The API keys looked up in the last second.
    pub key_cache: Arc<crate::auth::cache::KeyCache>,
    /// Wakes the reconciler ([`crate::accept::run_reconciler`]) early: a job was scheduled that
    /// may be due before its next look.
    pub reconcile_soon: Arc<tokio::sync::Notify>,
    /// Wakes the schedule ticker ([`crate::schedules::run_ticker`]) early: a schedule was
    /// created or resumed.
    pub schedules_changed: Arc<tokio::sync::Notify>,
    /// Wakes the concurrency dispatcher ([`crate::limits::run_dispatcher`]): a limited job was
    /// submitted, or a job finished.
    pub gate_changed: Arc<tokio::sync::Notify>,
}

impl AppState {
    /// The current publisher; `NotConnected` while the link is down, `Blocked` while the broker
    /// blocks publishes (a request would only wait out its deadline).
    pub fn publisher(&self) -> Result<JobPublisher, BrokerError> {
        let publisher = self
            .link
            .publisher
            .borrow()
            .clone()
            .filter(JobPublisher::is_connected)
            .ok_or(BrokerError::NotConnected)?;
        if publisher.is_blocked() {
            return Err(BrokerError::Blocked);
        }
        Ok(publisher)
    }

    /// The publisher for new jobs of `kinds` (one entry per job), if each kind's work queue has
    /// room: a queue whose last-read ready count plus the jobs admitted since would pass
    /// [`Settings::queue_full_at`] refuses with `QueueFull` (the 503 `queue-full`), before
    /// anything is written. Past that (several API replicas, jobs of other producers) the
    /// broker's own `x-max-length` refuses with a `reject-publish` nack: the same answer.
    pub fn admit<'a>(
        &self,
        kinds: impl IntoIterator<Item = (&'a JobKind, Priority)>,
    ) -> Result<JobPublisher, BrokerError> {
        let publisher = self.publisher()?;
        let full_at = self.settings.queue_full_at();
        let mut per_queue = std::collections::BTreeMap::<String, u32>::new();
        for (kind, priority) in kinds {
            // A kind unknown here was refused by the parse before; nothing to count.
            let Ok(known) = self.kinds.get(kind.as_str()) else {
                continue;
            };
            // Each lane is counted on its own: a normal backlog does not refuse high jobs.
            let work_queue = publisher.names().work_queue(&known.spec.queue);
            *per_queue.entry(priority.lane(&work_queue)).or_default() += 1;
        }
        for (queue, jobs) in per_queue {
            if !self.queue_stats.admit(&queue, jobs, full_at) {
                return Err(BrokerError::QueueFull(queue));
            }
        }
        Ok(publisher)
    }

    /// What keeps the API from serving jobs, if anything.
    pub fn broker_problem(&self) -> Option<&'static str> {
        if let Err(e) = self.publisher() {
            Some(match e {
                BrokerError::Blocked => {
                    "the broker is blocking publishers (a memory or disk alarm): jobs cannot be accepted until it clears"
                }
                _ => "not connected to the broker",
            })
        } else if !self.link.events_running.load(Ordering::Relaxed) {
            Some("lifecycle events are not being consumed")
        } else {
            None
        }
    }
}
