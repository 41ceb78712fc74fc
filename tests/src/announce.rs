//! Worker announcements published by a test itself, straight to `<prefix>.workers`, as a
//! worker would: no worker binary needed to make the API learn a kind.

use lapin::{BasicProperties, options::BasicPublishOptions, types::ShortString};
use serde_json::{Value, json};

use crate::TestEnv;

/// An announcement (wire v1) of `worker` in `state` (`alive` or `leaving`) running `kinds`
/// (kind specs as JSON) on `queues`, with a 60 s heartbeat.
pub fn announcement(worker: &str, state: &str, kinds: Value, queues: &[&str]) -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    json!({
        "v": 1, "worker": worker, "state": state, "kinds": kinds, "queues": queues,
        "in_flight": 0, "prefetch": 1, "heartbeat_s": 60, "started_at": now, "at": now,
        "software": "kinds-test",
    })
    .to_string()
    .into_bytes()
}

impl TestEnv {
    /// Publishes `body` to the workers queue (transient, AMQP type `offload.announcement`) and
    /// waits for the broker's confirm.
    pub async fn announce(&self, body: &[u8]) {
        let channel = self.broker.create_channel().await.expect("channel");
        channel
            .confirm_select(Default::default())
            .await
            .expect("confirms");
        channel
            .basic_publish(
                ShortString::from(""),
                ShortString::from(self.names.workers_queue.as_str()),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_type("offload.announcement".into()),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        let _ = channel.close(200, "done".into()).await;
    }
}
