//! Watching the queues' depth for `/metrics` and `GET /kinds`: ready messages and consumers by
//! passive declare over AMQP, and unacked messages from the RabbitMQ management API when one is
//! configured. Every queue of the topology is watched, and every known kind's work queue.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, RwLock},
    time::Duration,
};

use lapin::{Channel, Connection, options::QueueDeclareOptions, types::FieldTable};
use serde::Deserialize;

use offload_shared::{Settings, broker, topology::Names};

use crate::{kinds::Kinds, metrics::ApiMetrics};

/// The latest depth read of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct QueueDepth {
    /// Messages waiting.
    pub ready: u32,
    /// Messages delivered and not acknowledged yet; `null` without `OFFLOAD_MANAGEMENT_URL`.
    pub unacked: Option<u64>,
    /// Consumers (workers) of the queue.
    pub consumers: u32,
}

/// The latest depth of every watched queue, by queue name; shared with the handlers.
#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    depths: Arc<RwLock<HashMap<String, QueueDepth>>>,
    /// Jobs admitted to each queue since its depth was last read: the depth is read every
    /// [`INTERVAL`], and a flood fills a queue much faster.
    admitted: Arc<RwLock<HashMap<String, u32>>>,
}

impl QueueStats {
    /// The latest depth of `queue`, if it was read.
    pub fn get(&self, queue: &str) -> Option<QueueDepth> {
        self.depths
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(queue)
            .copied()
    }

    /// Admits `jobs` more jobs to `queue` if its last-read ready count plus the jobs admitted
    /// since stays below `full_at`; false (nothing counted) if not.
    pub fn admit(&self, queue: &str, jobs: u32, full_at: u32) -> bool {
        let ready = self.get(queue).map_or(0, |d| d.ready);
        let mut admitted = self.admitted.write().unwrap_or_else(|e| e.into_inner());
        let since = admitted.entry(queue.to_owned()).or_default();
        if ready.saturating_add(*since).saturating_add(jobs) > full_at {
            return false;
        }
        *since = since.saturating_add(jobs);
        true
    }

    fn update(&self, queue: &str, change: impl FnOnce(&mut QueueDepth)) {
        let mut all = self.depths.write().unwrap_or_else(|e| e.into_inner());
        change(all.entry(queue.to_owned()).or_default());
    }

    /// A fresh ready count of `queue`: what was admitted before it is in it now.
    fn read(&self, queue: &str, ready: u32, consumers: u32) {
        // Reset first: a job admitted between the two steps is counted twice (refusing a little
        // early), never missed.
        self.admitted
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(queue);
        self.update(queue, |d| {
            d.ready = ready;
            d.consumers = consumers;
        });
    }
}

/// What [`watch`] reads and where it writes.
pub struct Watched<'a> {
    /// The topology's queues.
    pub names: &'a Names,
    /// The known kinds, whose work queues are watched too.
    pub kinds: &'a Kinds,
    /// The metrics it sets.
    pub metrics: &'a ApiMetrics,
    /// The latest values, for `GET /kinds`.
    pub stats: &'a QueueStats,
}

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
        let vhost = offload_shared::broker::first_address(&settings.amqp_url)
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
    watched: Watched<'_>,
    management: Option<&Management>,
    deadline: Duration,
) {
    let Watched {
        names,
        kinds,
        metrics,
        stats,
    } = watched;
    let mut channel: Option<Channel> = None;
    loop {
        let queues: BTreeSet<String> = names
            .queues()
            .into_iter()
            .map(str::to_owned)
            .chain(kinds.all().iter().flat_map(|k| names.lanes(&k.spec.queue)))
            .collect();
        for queue in &queues {
            if channel.as_ref().is_none_or(|c| !c.status().connected()) {
                channel = broker::with_deadline(
                    deadline,
                    "open the inspection channel",
                    connection.create_channel(),
                )
                .await
                .ok();
            }
            let Some(ch) = &channel else { break };
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let declared = broker::with_deadline(
                deadline,
                "inspect a queue",
                ch.queue_declare(queue.as_str().into(), passive, FieldTable::default()),
            )
            .await;
            match declared {
                Ok(q) => {
                    metrics.queue(queue, q.message_count(), q.consumer_count());
                    stats.read(queue, q.message_count(), q.consumer_count());
                }
                Err(e) => {
                    // A missing queue closes the channel: the next queue gets a new one, so
                    // one deleted queue does not hide the others.
                    tracing::debug!(queue, error = %e, "cannot read the queue's depth");
                    channel = None;
                }
            }
        }
        if let Some(m) = management {
            for queue in &queues {
                if let Some(n) = m.unacked(queue).await {
                    metrics.unacked(queue, n);
                    stats.update(queue, |d| d.unacked = Some(n));
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
    fn admitted_jobs_count_until_the_next_read() {
        let stats = QueueStats::default();
        assert!(stats.admit("q", 200, 270), "an unread queue is empty");
        assert!(stats.admit("q", 70, 270), "up to the threshold");
        assert!(!stats.admit("q", 1, 270), "one past it");
        stats.read("q", 100, 1);
        assert!(stats.admit("q", 170, 270));
        assert!(!stats.admit("q", 1, 270));
        stats.read("q", 270, 1);
        assert!(!stats.admit("q", 1, 270), "full by the broker's count");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("offload.jobs"), "offload.jobs");
    }
}
