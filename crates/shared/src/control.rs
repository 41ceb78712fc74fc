//! Control messages (wire contract v1): what the API tells every worker at once: which jobs are
//! cancelled and, in the API's repeats, which work queues an operator paused.
//!
//! The API publishes them to the fanout exchange `<prefix>.control`; each worker binds a queue
//! of its own (exclusive, deleted with its connection, `<prefix>.control.<worker>.<random>`)
//! before it consumes jobs, so a cancel reaches every worker alive, whichever API replica took
//! the request. A worker that was not connected when a cancel was sent hears it again: the API
//! repeats the cancels no worker has settled yet (see `docs/protocol.md`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::envelope::{JobId, WIRE_VERSION};

/// AMQP `type` of a control message.
pub const CONTROL_TYPE: &str = "offload.control";

/// Most job ids one control message carries: a bulk cancel is sent as several messages, each
/// well inside one frame (36 bytes an id).
pub const MAX_IDS_PER_MESSAGE: usize = 1000;

/// What a control message asks of the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlType {
    /// The jobs `job_ids` are cancelled: a worker running one fires its cancellation token and
    /// stops it after the grace period; a worker that receives one later acks it without
    /// running it.
    Cancel,
}

/// One control message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlMessage {
    /// Wire version; see [`WIRE_VERSION`].
    pub v: u32,
    /// What it asks.
    #[serde(rename = "type")]
    pub kind: ControlType,
    /// The jobs it is about.
    pub job_ids: Vec<JobId>,
    /// Who asked (an API key's name, or `anonymous`).
    pub by: String,
    /// When it was sent.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Every work queue (its full name, e.g. `offload.default`) an operator paused: a worker
    /// stops consuming each (its running jobs finish) and consumes again once one is no longer
    /// listed. Sent in the API's repeat every second; absent from other messages (which say
    /// nothing of pauses) and from APIs that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_queues: Option<Vec<String>>,
}

impl ControlMessage {
    /// Cancel messages for `ids`, [`MAX_IDS_PER_MESSAGE`] ids each, stamped now; one message
    /// of no ids when `ids` is empty (the API's repeat with nothing unsettled, which tells a
    /// worker that has just connected that it has heard every cancel).
    pub fn cancels(ids: &[JobId], by: &str) -> Vec<ControlMessage> {
        let at = OffsetDateTime::now_utc();
        let message = |chunk: &[JobId]| ControlMessage {
            v: WIRE_VERSION,
            kind: ControlType::Cancel,
            job_ids: chunk.to_vec(),
            by: by.to_owned(),
            at,
            paused_queues: None,
        };
        if ids.is_empty() {
            return vec![message(&[])];
        }
        ids.chunks(MAX_IDS_PER_MESSAGE).map(message).collect()
    }

    /// The same messages, the first stating the paused work queues.
    pub fn with_paused(
        mut messages: Vec<ControlMessage>,
        paused: Vec<String>,
    ) -> Vec<ControlMessage> {
        if let Some(first) = messages.first_mut() {
            first.paused_queues = Some(paused);
        }
        messages
    }

    /// Serialises the message for publishing.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain fields: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a control message; a version this build does not read is an error.
    pub fn from_bytes(body: &[u8]) -> Result<Self, String> {
        let parsed: ControlMessage =
            serde_json::from_slice(body).map_err(|e| format!("not a control message: {e}"))?;
        if parsed.v != WIRE_VERSION {
            return Err(format!(
                "control message version {} is not supported (this build reads version {WIRE_VERSION})",
                parsed.v
            ));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancels_round_trip_in_bounded_messages() {
        let ids: Vec<JobId> = (0..2500).map(|_| JobId::new()).collect();
        let messages = ControlMessage::cancels(&ids, "ops");
        assert_eq!(
            messages.iter().map(|m| m.job_ids.len()).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        let back = ControlMessage::from_bytes(&messages[2].to_bytes()).expect("parses");
        assert_eq!(back, messages[2]);
        assert!(
            messages[0].to_bytes().len() < 64 * 1024,
            "well inside a frame"
        );
        let text = String::from_utf8(messages[2].to_bytes()).expect("utf-8");
        assert!(text.contains(r#""type":"cancel""#), "{text}");
        let none = ControlMessage::cancels(&[], "ops");
        assert_eq!(none.len(), 1);
        assert!(none[0].job_ids.is_empty());
        assert!(
            !text.contains("paused_queues"),
            "a cancel says nothing of pauses"
        );
        let repeat = ControlMessage::with_paused(none, vec!["offload.default".into()]);
        let back = ControlMessage::from_bytes(&repeat[0].to_bytes()).expect("parses");
        assert_eq!(
            back.paused_queues.as_deref(),
            Some(&["offload.default".to_owned()][..])
        );
        let old = br#"{"v":1,"type":"cancel","job_ids":[],"by":"x","at":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(
            ControlMessage::from_bytes(old)
                .expect("an older API's")
                .paused_queues,
            None
        );
    }

    #[test]
    fn other_versions_and_nonsense_are_refused_with_a_reason() {
        let mut m = ControlMessage::cancels(&[JobId::new()], "ops").remove(0);
        m.v = 2;
        let why = ControlMessage::from_bytes(&m.to_bytes()).expect_err("v2");
        assert!(why.contains("version 2"), "{why}");
        for bad in [
            &b""[..],
            b"{}",
            b"[1]",
            br#"{"v":1,"type":"explode","job_ids":[],"by":"x","at":"2026-01-01T00:00:00Z"}"#,
        ] {
            assert!(ControlMessage::from_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
