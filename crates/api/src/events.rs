//! Consumes lifecycle event messages (one event, or a worker's batch) from the events queue and
//! hands them to the store writer, which acknowledges them once they are committed. Each event
//! is read on its own: one that does not parse is parked (in `<prefix>.events.parked`, with the
//! reason) and counted, and the others of its message are applied as usual.

use futures_util::StreamExt;
use lapin::{Channel, options::BasicCancelOptions, types::ShortString};
use tokio_util::sync::CancellationToken;

use offload_shared::{JobEvent, broker};

use crate::{
    metrics::ApiMetrics,
    publisher::JobPublisher,
    store::{Write, writer::StoreWriter},
};

/// Unacknowledged event messages the broker may send ahead: enough for full write batches,
/// and, with a worker's batch of at most 256 events a message, a bound on the events held here.
const EVENT_PREFETCH: u16 = 512;

/// Why event consumption stopped.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Setting up or reading the consumer failed.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The delivery stream failed.
    #[error("event consumer failed: {0}")]
    Stream(#[from] lapin::Error),
    /// An unreadable event could not be parked.
    #[error("could not park an unreadable lifecycle event: {0}")]
    Park(#[source] broker::BrokerError),
    /// The store writer stopped.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Consumes `queue` on `channel` until `token` is cancelled or the consumer fails; parks what
/// does not parse with `parker`.
pub async fn consume(
    channel: Channel,
    queue: &str,
    parker: &JobPublisher,
    writer: StoreWriter,
    metrics: &ApiMetrics,
    deadline: std::time::Duration,
    token: CancellationToken,
) -> Result<(), EventsError> {
    let tag = ShortString::from(format!("offload-api-{}", std::process::id()));
    let mut consumer =
        broker::consume(&channel, queue, tag.clone(), EVENT_PREFETCH, deadline).await?;
    loop {
        let delivery = tokio::select! {
            () = token.cancelled() => break,
            next = consumer.next() => match next {
                Some(delivery) => delivery?,
                None => break,
            },
        };
        let mut writes = Vec::new();
        for parsed in JobEvent::parse_message(&delivery.data) {
            match parsed {
                Ok(event) => {
                    metrics.event(&event);
                    writes.push(Write::Event(event));
                }
                Err(unreadable) => {
                    tracing::warn!(reason = %unreadable.reason, bytes = unreadable.body.len(), "parking an unreadable lifecycle event");
                    // Confirmed before the message is acknowledged: what cannot be read is kept,
                    // not dropped. If it cannot be parked the link is reset and the message
                    // comes back.
                    parker
                        .park(&unreadable.body, &unreadable.reason)
                        .await
                        .map_err(EventsError::Park)?;
                    metrics.event_parked();
                }
            }
        }
        writer.events(writes, delivery.acker).await?;
    }
    let _ = broker::with_deadline(
        deadline,
        "cancel the events consumer",
        channel.basic_cancel(tag, BasicCancelOptions::default()),
    )
    .await;
    Ok(())
}
