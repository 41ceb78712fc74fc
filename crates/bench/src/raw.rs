//! The broker's ceiling without Offload: a lapin publisher (persistent, mandatory, confirms,
//! a window of unconfirmed messages) into a durable queue, then a consumer acking each one.

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream::FuturesUnordered};
use lapin::{
    BasicProperties, Confirmation, Connection, ConnectionProperties,
    message::BasicReturnMessage,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};

use crate::{BenchError, QueueType, Result, procs};

/// Body size of a job envelope of a `noop` job, roughly.
const BODY_BYTES: usize = 200;
/// Deadline of each raw phase.
const DEADLINE: Duration = Duration::from_secs(300);

/// Raw publish and consume rates.
#[derive(Debug, Clone)]
pub struct RawResult {
    /// Messages published and consumed.
    pub messages: u64,
    /// Publisher window.
    pub window: usize,
    /// Confirmed messages per second.
    pub publish_per_s: f64,
    /// Acked messages per second.
    pub consume_per_s: f64,
    /// CPU per 1,000 messages published: the broker's and the publisher's.
    pub publish_cpu: crate::procs::CpuShare,
    /// RabbitMQ version (`rabbitmqctl version`).
    pub server_version: String,
}

/// Connects to the first address of `url` (it may list a cluster's nodes).
async fn connect(url: &str) -> Result<Connection> {
    let first = offload_shared::broker::first_address(url);
    tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(first, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| {
        let shown = offload_shared::broker::redact(first);
        BenchError::Timeout(Duration::from_secs(5), format!("RabbitMQ at {shown}"))
    })?
    .map_err(|e| BenchError::Broker(e, "connect (is RabbitMQ running?)"))
}

/// Publishes `messages`, then drains them; deletes the queue.
pub async fn run(
    url: &str,
    queue_type: QueueType,
    messages: u64,
    window: usize,
) -> Result<RawResult> {
    let conn = connect(url).await?;
    let server_version = broker_version();
    let queue = format!("bench-raw-{}", uuid::Uuid::new_v4().simple());
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| BenchError::Broker(e, "open channel"))?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(queue_type.as_str().into()),
    );
    channel
        .queue_declare(
            ShortString::from(queue.as_str()),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .map_err(|e| BenchError::Broker(e, "declare the raw queue"))?;
    let outcome = measure(&conn, &channel, &queue, messages, window).await;
    let _ = channel
        .queue_delete(
            ShortString::from(queue.as_str()),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = conn.close(200, "done".into()).await;
    let (publish_per_s, consume_per_s, publish_cpu) = outcome?;
    Ok(RawResult {
        messages,
        window,
        publish_per_s,
        consume_per_s,
        publish_cpu,
        server_version,
    })
}

async fn measure(
    conn: &Connection,
    channel: &lapin::Channel,
    queue: &str,
    messages: u64,
    window: usize,
) -> Result<(f64, f64, crate::procs::CpuShare)> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| BenchError::Broker(e, "confirm.select"))?;
    let body = vec![b'x'; BODY_BYTES];
    let cpu = crate::procs::CpuMark::now();
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut confirmed = 0u64;
    let mut sent = 0u64;
    while confirmed < messages {
        if start.elapsed() > DEADLINE {
            return Err(BenchError::Timeout(
                DEADLINE,
                "raw publisher confirms".into(),
            ));
        }
        if sent < messages && in_flight.len() < window {
            let confirm = channel
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(queue),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .map_err(|e| BenchError::Broker(e, "raw publish"))?;
            in_flight.push(confirm);
            sent += 1;
            continue;
        }
        match in_flight.next().await {
            Some(Ok(c)) => {
                check_confirmation(c)?;
                confirmed += 1;
            }
            Some(Err(e)) => return Err(BenchError::Broker(e, "raw publisher confirm")),
            None => break,
        }
    }
    let publish_per_s = messages as f64 / start.elapsed().as_secs_f64();
    let publish_cpu = cpu.per_1000(messages);

    let consumer_channel = conn
        .create_channel()
        .await
        .map_err(|e| BenchError::Broker(e, "open consumer channel"))?;
    consumer_channel
        .basic_qos(256, BasicQosOptions::default())
        .await
        .map_err(|e| BenchError::Broker(e, "basic.qos"))?;
    let start = Instant::now();
    let mut consumer = consumer_channel
        .basic_consume(
            ShortString::from(queue),
            ShortString::from("bench-raw"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| BenchError::Broker(e, "basic.consume"))?;
    let mut acked = 0u64;
    while acked < messages {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let delivery = match tokio::time::timeout(left, consumer.next()).await {
            Err(_) => {
                return Err(BenchError::Timeout(
                    DEADLINE,
                    format!("raw consumer ({acked}/{messages} acked)"),
                ));
            }
            Ok(None) => return Err(BenchError::Setup("the raw consumer stream ended".into())),
            Ok(Some(d)) => d.map_err(|e| BenchError::Broker(e, "raw delivery"))?,
        };
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| BenchError::Broker(e, "raw ack"))?;
        acked += 1;
    }
    let consume_per_s = messages as f64 / start.elapsed().as_secs_f64();
    let _ = consumer_channel.close(200, "done".into()).await;
    Ok((publish_per_s, consume_per_s, publish_cpu))
}

fn check_confirmation(c: Confirmation) -> Result<()> {
    let returned = |r: BasicReturnMessage| {
        BenchError::Incorrect(format!("raw message returned: {}", r.reply_text.as_str()))
    };
    match c {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) => Err(returned(r)),
        Confirmation::Nack(None) => Err(BenchError::Incorrect("raw message nacked".into())),
        Confirmation::NotRequested => Err(BenchError::Setup("confirms not enabled".into())),
    }
}

/// RabbitMQ's version from `rabbitmqctl version` (lapin does not expose the server properties).
fn broker_version() -> String {
    std::process::Command::new("rabbitmqctl")
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown (rabbitmqctl not available)".into())
}

/// Deletes every queue and exchange Offload declares under `prefix` (best effort).
pub async fn delete_topology(url: &str, prefix: &str) {
    let Ok(prefix) = offload_shared::topology::QueuePrefix::parse(prefix) else {
        return;
    };
    let names = offload_shared::topology::Names::new(
        &prefix,
        &offload_shared::retry::RetryPolicy::new(procs::RETRY_BASE_MS, procs::RETRY_CAP_MS),
    );
    let Ok(conn) = connect(url).await else {
        return;
    };
    if let Ok(channel) = conn.create_channel().await {
        for q in names.queues() {
            let _ = channel
                .queue_delete(ShortString::from(q), QueueDeleteOptions::default())
                .await;
        }
        for x in names.exchanges() {
            let _ = channel
                .exchange_delete(ShortString::from(x), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = conn.close(200, "done".into()).await;
}
