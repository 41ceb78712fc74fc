//! Talking to RabbitMQ with a deadline on every wait: connecting, opening channels, publishing
//! and waiting for the publisher confirm. A request or a worker never hangs on the broker.

use std::time::{Duration, Instant};

use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    PublisherConfirm,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, ConfirmSelectOptions,
    },
    types::{FieldTable, ShortString},
};

/// AMQP header carrying the HTTP request id of the request that submitted a job, so one id
/// follows the job from the API's logs into the worker's.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// AMQP header carrying why a message was dead-lettered or parked.
pub const REASON_HEADER: &str = "x-offload-reason";

/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker did not answer within the deadline.
    #[error("the broker did not answer within {0:?} while trying to {1}")]
    Timeout(Duration, &'static str),
    /// The connection or channel failed.
    #[error("broker error while trying to {1}: {0}")]
    Amqp(#[source] lapin::Error, &'static str),
    /// The broker refused the message (`basic.nack`), e.g. a full queue with `reject-publish`.
    #[error("the broker refused the message (nack)")]
    Nacked,
    /// A work queue is at its length limit (`x-max-length` with `reject-publish`, or the API's
    /// own threshold below it): nothing was enqueued; workers are draining it.
    #[error("the job queue {0} is full")]
    QueueFull(String),
    /// The message body is larger than the broker's message size limit: not sent.
    #[error(
        "the message is {size} bytes, over the broker's message size limit of {limit} bytes (OFFLOAD_BROKER_MAX_MESSAGE_BYTES)"
    )]
    MessageTooLarge {
        /// The body's bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The message's properties and headers do not fit one frame of the connection: not sent.
    #[error(
        "the message's properties and headers take {size} bytes, over the connection's frame size of {frame_max} bytes"
    )]
    HeadersTooLarge {
        /// The content header frame's bytes.
        size: usize,
        /// The negotiated `frame_max`.
        frame_max: usize,
    },
    /// No connection to the broker right now (it is being re-established).
    #[error("not connected to the broker (reconnecting)")]
    NotConnected,
    /// The broker has blocked this connection's publishes (`connection.blocked`): it is short of
    /// memory or disk (an alarm) and stores nothing until the alarm clears.
    #[error("the broker is blocking publishers (a memory or disk alarm)")]
    Blocked,
    /// The broker URL does not parse.
    #[error("the broker URL does not parse: {0}")]
    BadUrl(String),
    /// A mandatory message no queue took (`basic.return`): the topology is missing.
    #[error("the broker returned the message as unroutable: {0}")]
    Returned(String),
    /// A message shared by several senders failed; the text is the failure.
    #[error("{0}")]
    Batch(String),
}

/// Runs `fut` with a deadline, mapping both failure kinds to [`BrokerError`].
pub async fn with_deadline<T>(
    deadline: Duration,
    what: &'static str,
    fut: impl Future<Output = lapin::Result<T>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BrokerError::Amqp(e, what)),
        Err(_) => Err(BrokerError::Timeout(deadline, what)),
    }
}

/// The addresses of `OFFLOAD_AMQP_URL`: one URL, or several separated by commas (the nodes of
/// one cluster).
pub fn addresses(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

/// Connects with a deadline to the first address of `url` (a comma-separated list: a cluster's
/// nodes) that answers, trying each in turn from a random start, so the connections of many
/// processes spread over the nodes (a process id would not: in a container it is 1); the last
/// failure if none does. `name` shows in the broker's connection list. Unless the URL sets one, the heartbeat
/// is `heartbeat_s`, so a silent broker is noticed within about two of them.
///
/// lapin's own auto-recovery stays off: after a loss the caller builds a new connection and
/// new channels, so a delivery can never be acknowledged on a channel it did not come from.
pub async fn connect(
    url: &str,
    name: &str,
    deadline: Duration,
    heartbeat_s: u16,
) -> Result<Connection, BrokerError> {
    let list = addresses(url);
    // Checked before any is tried: a typo in the third address is not found at a failover.
    for address in &list {
        address
            .parse::<lapin::uri::AMQPUri>()
            .map_err(BrokerError::BadUrl)?;
    }
    let mut last = BrokerError::BadUrl("no address".to_owned());
    // Of a list, one try each: a node cut off from the network answers nothing until the
    // deadline, and the next node may well answer at once.
    let attempts = if list.len() == 1 { CONNECT_ATTEMPTS } else { 1 };
    let start = fastrand::usize(..list.len().max(1));
    for i in 0..list.len() {
        let address = list[(start + i) % list.len()];
        match connect_one(address, name, deadline, heartbeat_s, attempts).await {
            Ok(connection) => return Ok(connection),
            Err(e) if list.len() > 1 => {
                tracing::warn!(address = %redact(address), error = %e, "this broker address does not answer; trying the next");
                last = e;
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The first address of `url` (all of it if it lists none): where a tool that needs one
/// connection, or the vhost, looks.
pub fn first_address(url: &str) -> &str {
    addresses(url).first().copied().unwrap_or(url)
}

/// Connects to one address; a connection that times out is tried again, up to `attempts` in all.
async fn connect_one(
    url: &str,
    name: &str,
    deadline: Duration,
    heartbeat_s: u16,
    attempts: u32,
) -> Result<Connection, BrokerError> {
    let mut uri = url
        .parse::<lapin::uri::AMQPUri>()
        .map_err(BrokerError::BadUrl)?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(heartbeat_s);
    }
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let mut attempt = 1;
    loop {
        let connect = Connection::connect_uri(uri.clone(), props.clone());
        match with_deadline(deadline, "connect", connect).await {
            // Seen in CI: a connection the broker never took up while it answered others (its
            // acceptor busy creating queues, or the first packet lost). A new socket is tried
            // before giving up; a refused connection still fails at once.
            Err(BrokerError::Timeout(..)) if attempt < attempts => {
                tracing::warn!(
                    attempt,
                    ?deadline,
                    "the broker did not answer a new connection in time; trying another"
                );
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Tries of a connection that times out before [`connect`] gives up.
const CONNECT_ATTEMPTS: u32 = 3;

/// Resolves when `connection` is no longer usable (closed by the broker, a dead socket, missed
/// heartbeats), or when `channel` is closed.
pub async fn lost(connection: &Connection, channels: &[&Channel]) {
    loop {
        let alive =
            connection.status().connected() && channels.iter().all(|c| c.status().connected());
        if !alive {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Closes a connection that is given up on, waiting at most a second for the broker to say it
/// closed (the close is sent at once, and a broker that does not answer is lost anyway): a
/// session that failed while it was being set up, or whose consumer or channel failed, before
/// a new one is opened.
/// Dropping it is not enough: a consumer the broker registered after the wait for it timed out
/// keeps its channel, and with it the connection, open and heartbeating, holding up to its
/// prefetch of unacknowledged deliveries that nothing reads and the broker never redelivers.
/// A connection that is already closed or dead is left as it is.
pub async fn abandon(connection: &Connection) {
    if !connection.status().connected() {
        return;
    }
    let closed = with_deadline(
        Duration::from_secs(1),
        "close a connection given up on",
        connection.close(200, ShortString::from("given up on; reconnecting")),
    )
    .await;
    // A broker busy electing leaders may not answer in time; the close was sent all the same.
    if let Err(e) = closed
        && connection.status().connected()
    {
        tracing::debug!(error = %e, "no answer yet to the close of a connection given up on");
    }
}

/// Awaits `set_up`, a session's set-up on `connection` after it connected; if that fails, the
/// connection is given up on ([`abandon`]) before the error is returned.
pub async fn abandon_on_error<T, E>(
    connection: &Connection,
    set_up: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let outcome = set_up.await;
    if outcome.is_err() {
        abandon(connection).await;
    }
    outcome
}

/// Calls `open` with back-off until it succeeds (`Ok(Some)`), `token` is cancelled (`Ok(None)`),
/// or it fails in a way `is_fatal` says no retry can fix (`Err`). `open` gets settings whose
/// broker deadline is cut to at most 2 s: a broker that is starting may accept connections
/// before it answers them, and the next attempt should come soon.
pub async fn reconnect<T, E, F, Fut>(
    settings: &crate::Settings,
    token: &tokio_util::sync::CancellationToken,
    mut open: F,
    is_fatal: impl Fn(&E) -> bool,
) -> Result<Option<T>, E>
where
    F: FnMut(crate::Settings) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut backoff = Backoff::default();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = token.cancelled() => return Ok(None),
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
        match open(for_reconnecting(settings)).await {
            Ok(session) => {
                tracing::info!(after_failures = failures, "reconnected to the broker");
                return Ok(Some(session));
            }
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(error = %e, failures, "reconnecting to the broker failed; retrying");
                }
            }
        }
    }
}

/// `settings` with the broker deadline cut to at most 2 s, for reconnection attempts.
pub fn for_reconnecting(settings: &crate::Settings) -> crate::Settings {
    let mut quick = settings.clone();
    quick.broker_timeout_ms = quick.broker_timeout_ms.min(2000);
    quick
}

/// Delays between reconnection attempts: doubling from 100 ms to at most 2 s, so a broker that
/// comes back is found again within about 2 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(2));
        delay
    }
}

/// Opens a channel in publisher-confirm mode.
pub async fn confirm_channel(
    conn: &Connection,
    deadline: Duration,
) -> Result<Channel, BrokerError> {
    let channel = with_deadline(deadline, "open a channel", conn.create_channel()).await?;
    with_deadline(
        deadline,
        "enable publisher confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    Ok(channel)
}

/// Starts a consumer of `queue` tagged `tag` with manual acks, at most `prefetch` unacknowledged
/// deliveries for it (`basic.qos` with `global = false` applies to the consumer started next, so
/// several consumers on one channel each get their own), each step under `deadline`.
pub async fn consume(
    channel: &Channel,
    queue: &str,
    tag: ShortString,
    prefetch: u16,
    deadline: Duration,
) -> Result<lapin::Consumer, BrokerError> {
    with_deadline(
        deadline,
        "set the prefetch",
        channel.basic_qos(prefetch, BasicQosOptions { global: false }),
    )
    .await?;
    with_deadline(
        deadline,
        "start consuming",
        channel.basic_consume(
            ShortString::from(queue),
            tag,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

/// How to settle a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done with it: the broker forgets it.
    Ack,
    /// Not done: the broker delivers it again.
    Requeue,
}

/// Acks or requeues a delivery (with `multiple`, every earlier one on its channel too), with a
/// deadline: on a connection that died the acker may never answer.
pub async fn settle(
    acker: &Acker,
    how: Settle,
    multiple: bool,
    deadline: Duration,
) -> Result<(), BrokerError> {
    // A delivery of a channel that has closed cannot be settled any more (the broker has
    // already requeued it); don't wait on it.
    if acker.poisoned() {
        return Err(BrokerError::NotConnected);
    }
    let rpc = async {
        match how {
            Settle::Ack => acker.ack(BasicAckOptions { multiple }).await,
            Settle::Requeue => {
                acker
                    .nack(BasicNackOptions {
                        multiple,
                        requeue: true,
                    })
                    .await
            }
        }
    };
    with_deadline(deadline, "settle a delivery", rpc)
        .await
        .map(|_| ())
}

/// Properties of a persistent JSON message.
pub fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// Publishes a mandatory message and waits for the broker's confirm. `Ok` means the broker
/// took responsibility: acked and routed to a queue. A confirm that did not arrive in time is an
/// error here; [`publish_tracked`] tells it apart.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    deadline: Duration,
) -> Result<(), BrokerError> {
    publish_tracked(channel, exchange, routing_key, body, properties, deadline)
        .await
        .into_result()
}

/// How a confirmed publish ended.
#[derive(Debug)]
pub enum Confirm {
    /// The broker stored the message in a queue.
    Acked,
    /// The broker did not take it, for sure: nacked, returned as unroutable, or never sent.
    Refused(BrokerError),
    /// It may or may not be stored: the confirm did not come within the deadline (`late` keeps
    /// waiting for it), or the connection was lost after the message was sent (`late` is None).
    Unknown {
        /// What happened.
        why: BrokerError,
        /// The confirm still to come, if it can.
        late: Option<LateConfirm>,
    },
}

/// A publisher confirm that did not arrive within the request's deadline and may still come:
/// a broker under a memory alarm stores the message (and confirms it) once the alarm clears.
pub struct LateConfirm(PublisherConfirm);

impl std::fmt::Debug for LateConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LateConfirm")
    }
}

impl LateConfirm {
    /// Waits up to `deadline` more for the confirm.
    pub async fn wait(mut self, deadline: Duration) -> Confirm {
        match tokio::time::timeout(deadline, &mut self.0).await {
            Ok(result) => confirmed(result),
            Err(_) => Confirm::Unknown {
                why: BrokerError::Timeout(deadline, "wait for a late publisher confirm"),
                late: Some(self),
            },
        }
    }
}

/// Publishes a mandatory message and waits up to `deadline` for the broker's confirm, telling a
/// refusal (the message is not stored) from an unknown outcome (it may be).
pub async fn publish_tracked(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    deadline: Duration,
) -> Confirm {
    publish_with(
        channel,
        exchange,
        routing_key,
        body,
        properties,
        deadline,
        true,
    )
    .await
}

/// [`publish_tracked`], `mandatory` or not.
async fn publish_with(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    deadline: Duration,
    mandatory: bool,
) -> Confirm {
    let started = Instant::now();
    let publish = channel.basic_publish(
        ShortString::from(exchange),
        ShortString::from(routing_key),
        BasicPublishOptions {
            mandatory,
            ..Default::default()
        },
        body,
        properties,
    );
    let confirm = match tokio::time::timeout(deadline, publish).await {
        Ok(Ok(confirm)) => confirm,
        // lapin refuses at once on a channel that is not open: nothing was sent.
        Ok(Err(e)) => return Confirm::Refused(BrokerError::Amqp(e, "publish")),
        Err(_) => {
            return Confirm::Unknown {
                why: BrokerError::Timeout(deadline, "publish"),
                late: None,
            };
        }
    };
    let late = LateConfirm(confirm);
    late.wait(deadline.saturating_sub(started.elapsed()))
        .await
        .with_why(BrokerError::Timeout(
            deadline,
            "publish and wait for the confirm",
        ))
}

/// Publishes a message that may reach no queue (`mandatory` off: a broadcast to a fanout
/// exchange nobody is bound to is not an error, and is not returned) and waits for the
/// broker's confirm, under `deadline`.
pub async fn publish_broadcast(
    channel: &Channel,
    exchange: &str,
    body: &[u8],
    properties: BasicProperties,
    deadline: Duration,
) -> Result<(), BrokerError> {
    publish_with(channel, exchange, "", body, properties, deadline, false)
        .await
        .into_result()
}

impl Confirm {
    /// `Ok` once acked; a refusal or an unknown outcome is the error it carries.
    pub fn into_result(self) -> Result<(), BrokerError> {
        match self {
            Confirm::Acked => Ok(()),
            Confirm::Refused(e) | Confirm::Unknown { why: e, .. } => Err(e),
        }
    }

    /// An unknown outcome's reason replaced by `why` (a timeout stated for the whole publish).
    fn with_why(self, why: BrokerError) -> Self {
        match self {
            Confirm::Unknown {
                why: BrokerError::Timeout(..),
                late,
            } => Confirm::Unknown { why, late },
            other => other,
        }
    }
}

fn confirmed(result: lapin::Result<Confirmation>) -> Confirm {
    match result {
        // lapin reports a returned mandatory message as an ack carrying the message: it was
        // NOT stored anywhere, so it must not count as accepted.
        Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
            Confirm::Refused(BrokerError::Returned(
                returned.reply_text.as_str().to_owned(),
            ))
        }
        Ok(Confirmation::Ack(None)) => Confirm::Acked,
        Ok(Confirmation::Nack(None)) => Confirm::Refused(BrokerError::Nacked),
        Ok(Confirmation::NotRequested) => Confirm::Refused(BrokerError::Amqp(
            lapin::Error::from(lapin::ErrorKind::FutureCompleted),
            "publish on a channel without confirms",
        )),
        // The message was sent; the channel closed before the broker said whether it stored it.
        Err(e) => Confirm::Unknown {
            why: BrokerError::Amqp(e, "wait for the publisher confirm"),
            late: None,
        },
    }
}

/// The broker address without its password, for logs and error messages.
pub fn redact(url: &str) -> String {
    let list = addresses(url);
    if list.len() > 1 {
        return list.iter().map(|a| redact(a)).collect::<Vec<_>>().join(",");
    }
    match url.trim().parse::<lapin::uri::AMQPUri>() {
        Ok(uri) => format!(
            "{}://{}@{}:{}/{}",
            if matches!(uri.scheme, lapin::uri::AMQPScheme::AMQPS) {
                "amqps"
            } else {
                "amqp"
            },
            uri.authority.userinfo.username,
            uri.authority.host,
            uri.authority.port,
            uri.vhost,
        ),
        Err(_) => "(unparseable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        let shown = redact("amqp://user:secret@example:5672/%2f");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("user@example:5672"), "{shown}");
        let shown = redact("amqp://u:secret@rabbit1:5672/%2f, amqp://u:secret@rabbit2:5672/%2f");
        assert_eq!(shown, "amqp://u@rabbit1:5672//,amqp://u@rabbit2:5672//");
    }

    #[test]
    fn a_url_may_list_several_addresses() {
        assert_eq!(
            addresses(" amqp://a/%2f ,amqp://b/%2f,, "),
            ["amqp://a/%2f", "amqp://b/%2f"]
        );
        assert_eq!(addresses("amqp://a/%2f"), ["amqp://a/%2f"]);
        assert!(addresses(" , ").is_empty());
    }

    #[tokio::test]
    async fn a_bad_address_anywhere_in_the_list_is_refused_before_any_is_tried() {
        let err = connect(
            "amqp://127.0.0.1:1/%2f,ftp://nowhere",
            "test",
            Duration::from_secs(1),
            10,
        )
        .await
        .expect_err("refused");
        assert!(matches!(err, BrokerError::BadUrl(_)), "{err}");
    }
}
