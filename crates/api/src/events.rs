//! Consumes lifecycle event messages (one event, or a worker's batch) from the events queue and
//! hands them to the store writer, which acknowledges them once they are committed.

use futures_util::StreamExt;
use lapin::{
    Channel,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::{FieldTable, ShortString},
};
use tokio_util::sync::CancellationToken;

use offload_shared::{JobEvent, broker};

use crate::{
    metrics::ApiMetrics,
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
    /// The store writer stopped.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Consumes `queue` on `channel` until `token` is cancelled or the consumer fails.
pub async fn consume(
    channel: Channel,
    queue: &str,
    writer: StoreWriter,
    metrics: &ApiMetrics,
    deadline: std::time::Duration,
    token: CancellationToken,
) -> Result<(), EventsError> {
    broker::with_deadline(
        deadline,
        "set the events prefetch",
        channel.basic_qos(EVENT_PREFETCH, BasicQosOptions::default()),
    )
    .await?;
    let tag = ShortString::from(format!("offload-api-{}", std::process::id()));
    let mut consumer = broker::with_deadline(
        deadline,
        "consume the events queue",
        channel.basic_consume(
            ShortString::from(queue),
            tag.clone(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    loop {
        let delivery = tokio::select! {
            () = token.cancelled() => break,
            next = consumer.next() => match next {
                Some(delivery) => delivery?,
                None => break,
            },
        };
        let writes = match JobEvent::parse_message(&delivery.data) {
            Ok(events) => events
                .into_iter()
                .map(|event| {
                    metrics.event(&event);
                    Write::Event(event)
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable lifecycle event message");
                Vec::new()
            }
        };
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
