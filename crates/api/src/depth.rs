//! Watching the queues' depth for `/metrics`: ready messages and consumers by passive declare
//! over AMQP, and unacked messages from the RabbitMQ management API when one is configured.

use std::time::Duration;

use lapin::{Channel, Connection, options::QueueDeclareOptions, types::FieldTable};
use serde::Deserialize;

use offload_shared::{Settings, broker, topology::Names};

use crate::metrics::ApiMetrics;

/// How often the depth is read.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// The management API's view of one queue (only the fields read here).
#[derive(Debug, Deserialize)]
struct QueueInfo {
    #[serde(default)]
    messages_unacknowledged: u64,
}

/// A client of the RabbitMQ management API.
#[derive(Debug, Clone)]
pub struct Management {
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
    vhost: String,
}

impl Management {
    /// The client `settings` ask for, if any (`OFFLOAD_MANAGEMENT_URL`).
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        let raw = settings.management_url.trim();
        if raw.is_empty() {
            return None;
        }
        let url = reqwest::Url::parse(raw)
            .map_err(|e| tracing::warn!(error = %e, "OFFLOAD_MANAGEMENT_URL does not parse; unacked counts are off"))
            .ok()?;
        let vhost = settings
            .amqp_url
            .parse::<lapin::uri::AMQPUri>()
            .map(|u| u.vhost)
            .unwrap_or_else(|_| "/".to_owned());
        let mut base = url.clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        Some(Management {
            http,
            base: base.as_str().trim_end_matches('/').to_owned(),
            user: url.username().to_owned(),
            password: url.password().unwrap_or("").to_owned(),
            vhost,
        })
    }

    async fn unacked(&self, queue: &str) -> Option<u64> {
        let url = format!(
            "{}/api/queues/{}/{}",
            self.base,
            encode(&self.vhost),
            encode(queue)
        );
        let response = self
            .http
            .get(url)
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .ok()?
            .error_for_status()
            .ok()?;
        response
            .json::<QueueInfo>()
            .await
            .ok()
            .map(|q| q.messages_unacknowledged)
    }
}

/// Percent-encodes a path segment (vhosts and queue names may hold `/` or `%`).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Reads the depth of every queue every [`INTERVAL`], for as long as the connection lasts.
pub async fn watch(
    connection: &Connection,
    names: &Names,
    metrics: &ApiMetrics,
    management: Option<&Management>,
    deadline: Duration,
) {
    let mut channel: Option<Channel> = None;
    loop {
        if channel.as_ref().is_none_or(|c| !c.status().connected()) {
            channel = broker::with_deadline(
                deadline,
                "open the inspection channel",
                connection.create_channel(),
            )
            .await
            .ok();
        }
        if let Some(ch) = &channel {
            for queue in names.queues() {
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                };
                let declared = broker::with_deadline(
                    deadline,
                    "inspect a queue",
                    ch.queue_declare(queue.into(), passive, FieldTable::default()),
                )
                .await;
                match declared {
                    Ok(q) => metrics.queue(queue, q.message_count(), q.consumer_count()),
                    Err(e) => {
                        // A missing queue closes the channel; open another next time.
                        tracing::debug!(queue, error = %e, "cannot read the queue's depth");
                        channel = None;
                        break;
                    }
                }
            }
        }
        if let Some(m) = management {
            for queue in names.queues() {
                if let Some(n) = m.unacked(queue).await {
                    metrics.unacked(queue, n);
                }
            }
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("offload.jobs"), "offload.jobs");
    }
}
