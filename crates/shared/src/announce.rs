//! Worker announcements (wire contract v1): a worker says who it is and which kinds it runs when
//! it starts, again every heartbeat, and once more when it leaves. The API records them: a kind
//! is accepted as soon as a worker for it has announced itself once, and a worker is alive while
//! its heartbeats arrive.
//!
//! Published transient (a lost heartbeat is replaced by the next one) to the queue
//! `<prefix>.workers` through the default exchange, as JSON with AMQP `type` =
//! [`ANNOUNCEMENT_TYPE`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    envelope::WIRE_VERSION,
    kinds::{KindSpec, QueueName},
};

/// AMQP `type` of an announcement message.
pub const ANNOUNCEMENT_TYPE: &str = "offload.announcement";

/// Whether the worker is running or leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Running and taking jobs; repeated every heartbeat.
    Alive,
    /// Shutting down: it takes no more jobs, so it no longer counts as a worker of its kinds.
    Leaving,
}

/// One announcement or heartbeat of one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    /// Wire version; see [`WIRE_VERSION`].
    pub v: u32,
    /// The worker's name, unique among live workers (the name in job status).
    pub worker: String,
    /// Running or leaving.
    pub state: WorkerState,
    /// The kinds it runs, each with its queue and payload schema.
    pub kinds: Vec<KindSpec>,
    /// The queues it consumes.
    pub queues: Vec<QueueName>,
    /// Jobs it is running now.
    #[serde(default)]
    pub in_flight: u32,
    /// Its prefetch (per queue).
    #[serde(default)]
    pub prefetch: u16,
    /// Seconds between its heartbeats: the API counts it gone after three missed ones.
    pub heartbeat_s: u64,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When this announcement was sent.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What it runs: e.g. `offload-worker 0.1.0`, `python-pika`.
    #[serde(default)]
    pub software: String,
}

impl Announcement {
    /// Serialises the announcement for publishing.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain fields and `Value`s: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses an announcement; a version this build does not read is an error.
    pub fn from_bytes(body: &[u8]) -> Result<Self, String> {
        let parsed: Announcement =
            serde_json::from_slice(body).map_err(|e| format!("not an announcement: {e}"))?;
        if parsed.v != WIRE_VERSION {
            return Err(format!(
                "announcement version {} is not supported (this build reads version {WIRE_VERSION})",
                parsed.v
            ));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::JobKind;
    use serde_json::json;

    #[test]
    fn announcements_round_trip_and_old_versions_are_refused() {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("valid");
        let sent = Announcement {
            v: WIRE_VERSION,
            worker: "w1".into(),
            state: WorkerState::Alive,
            kinds: vec![KindSpec::new(JobKind::parse("resize").expect("valid"))],
            queues: vec![QueueName::default_queue()],
            in_flight: 0,
            prefetch: 1,
            heartbeat_s: 10,
            started_at: now,
            at: now,
            software: "test".into(),
        };
        assert_eq!(Announcement::from_bytes(&sent.to_bytes()), Ok(sent.clone()));
        let mut newer = serde_json::to_value(&sent).expect("json");
        newer["v"] = json!(2);
        let err = Announcement::from_bytes(newer.to_string().as_bytes()).expect_err("v2");
        assert!(err.contains("version 2"), "{err}");
        assert!(Announcement::from_bytes(b"{}").is_err());
    }
}
