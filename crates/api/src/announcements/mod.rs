//! Consumes worker announcements from `<prefix>.workers` and applies them: each worker's latest
//! announcement is recorded, and each kind it announces is recorded, bound and accepted, left
//! alone, or reported as a conflict. What cannot be read is logged, counted and acknowledged:
//! an announcement is repeated every heartbeat, so nothing is lost by dropping one, and one bad
//! worker never stops the others'.
//!
//! - [`parse`]: reading one announcement.
//! - [`registry`]: applying it to the store and the accepted kinds.

pub mod parse;
pub mod registry;

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{Channel, Connection, options::BasicCancelOptions, types::ShortString};
use tokio_util::sync::CancellationToken;

use offload_shared::broker::{self, Settle};

pub use parse::{Parsed, parse};
pub use registry::Registry;

/// Announcements the broker may send ahead: they are small and applied one by one.
const PREFETCH: u16 = 16;

/// Why announcement consumption stopped.
#[derive(Debug, thiserror::Error)]
pub enum AnnouncementsError {
    /// Setting up or settling on the channel failed.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The delivery stream failed.
    #[error("announcement consumer failed: {0}")]
    Stream(#[from] lapin::Error),
}

/// Consumes `queue` on `channel` until `token` is cancelled or the consumer fails.
pub async fn consume(
    channel: Channel,
    connection: &Connection,
    queue: &str,
    registry: &Registry,
    deadline: Duration,
    token: CancellationToken,
) -> Result<(), AnnouncementsError> {
    let tag = ShortString::from(format!("offload-api-announcements-{}", std::process::id()));
    let mut consumer = broker::consume(&channel, queue, tag.clone(), PREFETCH, deadline).await?;
    loop {
        let delivery = tokio::select! {
            () = token.cancelled() => break,
            next = consumer.next() => match next {
                Some(delivery) => delivery?,
                None => break,
            },
        };
        match parse(&delivery.data) {
            Ok(parsed) => {
                if let Err(e) = registry.apply(connection, parsed).await {
                    // Applied again with the worker's next heartbeat.
                    tracing::warn!(error = %e, "cannot record a worker announcement");
                }
                registry.prune().await;
            }
            Err(reason) => {
                registry.metrics.announcement_refused();
                tracing::warn!(
                    reason,
                    bytes = delivery.data.len(),
                    "refused a worker announcement"
                );
            }
        }
        broker::settle(&delivery.acker, Settle::Ack, false, deadline).await?;
    }
    let _ = broker::with_deadline(
        deadline,
        "cancel the announcements consumer",
        channel.basic_cancel(tag, BasicCancelOptions::default()),
    )
    .await;
    Ok(())
}
