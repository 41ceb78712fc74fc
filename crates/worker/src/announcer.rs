//! What the worker tells the API about itself: an [`Announcement`] of its kinds and queues when
//! it starts consuming (and after every reconnection), a heartbeat every
//! `OFFLOAD_WORKER_HEARTBEAT_S`, and `leaving` when it shuts down. A lost one is only logged.

use std::sync::Arc;

use time::OffsetDateTime;

use offload_shared::{
    announce::{Announcement, WorkerState},
    envelope::WIRE_VERSION,
    kinds::{KindSpec, QueueName},
};

use crate::{metrics::WorkerMetrics, reporter::Reporter};

/// What every announcement of this process says; cheap to clone.
#[derive(Clone)]
pub(crate) struct Announcer {
    /// The worker's name.
    pub worker: Arc<str>,
    /// Its kinds.
    pub kinds: Arc<[KindSpec]>,
    /// The queues it consumes.
    pub queues: Arc<[QueueName]>,
    /// Its prefetch, per queue.
    pub prefetch: u16,
    /// Seconds between heartbeats.
    pub heartbeat_s: u64,
    /// When the process started.
    pub started_at: OffsetDateTime,
    /// Where `in_flight` comes from.
    pub metrics: Arc<WorkerMetrics>,
}

/// What the stock worker and every SDK worker call themselves in announcements.
pub(crate) const SOFTWARE: &str = concat!("offload-worker ", env!("CARGO_PKG_VERSION"));

impl Announcer {
    /// The announcement of `state`, stamped now.
    pub fn announcement(&self, state: WorkerState) -> Announcement {
        Announcement {
            v: WIRE_VERSION,
            worker: self.worker.to_string(),
            state,
            kinds: self.kinds.to_vec(),
            queues: self.queues.to_vec(),
            in_flight: u32::try_from(self.metrics.in_flight_now().max(0)).unwrap_or(u32::MAX),
            prefetch: self.prefetch,
            heartbeat_s: self.heartbeat_s,
            started_at: self.started_at,
            at: OffsetDateTime::now_utc(),
            software: SOFTWARE.to_owned(),
        }
    }

    /// Publishes the announcement of `state` on `reporter`'s channel; a failure is logged, never
    /// fatal (the next heartbeat tries again).
    pub async fn send(&self, reporter: &Reporter, state: WorkerState) {
        match reporter.announce(&self.announcement(state)).await {
            Ok(()) => tracing::debug!(?state, "announced"),
            Err(e) => {
                tracing::warn!(?state, error = %e, "announcement not confirmed; the next heartbeat tries again")
            }
        }
    }
}
