//! Opening a broker session, the same way in both binaries: connect, declare the topology, and
//! open one channel in publisher-confirm mode and one plain channel. Every step has a deadline.

use lapin::{Channel, Connection};

use crate::{
    Settings,
    broker::{self, BrokerError},
    topology::{self, Names, TopologyError},
};

/// A fresh connection with the topology declared and its two channels.
pub struct Opened {
    /// The connection; closed with [`crate::broker::abandon`] when it is given up on.
    pub connection: Connection,
    /// The queue names.
    pub names: Names,
    /// A channel in publisher-confirm mode (the API's jobs, the worker's reports).
    pub confirms: Channel,
    /// A plain channel (the API's events consumer, the worker's jobs consumer).
    pub plain: Channel,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// RabbitMQ is not reachable, or did not answer in time.
    #[error(
        "cannot reach RabbitMQ at {url}: {source}. Start it (e.g. `rabbitmq-server -detached`) or \
         point OFFLOAD_AMQP_URL at it."
    )]
    Unreachable {
        /// The address, without password.
        url: String,
        /// What failed.
        #[source]
        source: BrokerError,
    },
    /// The queues exist with other arguments.
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

impl OpenError {
    /// `source` while talking to the broker `settings` name.
    pub fn unreachable(settings: &Settings, source: BrokerError) -> Self {
        OpenError::Unreachable {
            url: broker::redact(&settings.amqp_url),
            source,
        }
    }

    /// True for what no reconnection can fix: queues declared with other arguments.
    pub fn is_fatal(&self) -> bool {
        matches!(self, OpenError::Topology(TopologyError::Mismatch { .. }))
    }
}

/// Connects as `connection_name`, declares the topology and opens both channels.
pub async fn open(settings: &Settings, connection_name: &str) -> Result<Opened, OpenError> {
    let deadline = settings.broker_timeout();
    let unreachable = |source| OpenError::unreachable(settings, source);
    let connection = broker::connect(
        &settings.amqp_url,
        connection_name,
        deadline,
        settings.heartbeat_s,
    )
    .await
    .map_err(unreachable)?;
    let (names, confirms, plain) = broker::abandon_on_error(&connection, async {
        let names = topology::declare(&connection, settings).await?;
        let confirms = broker::confirm_channel(&connection, deadline)
            .await
            .map_err(unreachable)?;
        let plain = broker::with_deadline(deadline, "open a channel", connection.create_channel())
            .await
            .map_err(unreachable)?;
        Ok::<_, OpenError>((names, confirms, plain))
    })
    .await?;
    Ok(Opened {
        connection,
        names,
        confirms,
        plain,
    })
}
