//! Consumes artifact messages (one file a message, from `<prefix>.artifacts`) into the store, on
//! a channel and prefetch of its own, so large files never hold up lifecycle events. Each is
//! acknowledged once its row committed; one whose headers are missing or wrong (or whose bytes
//! do not match its hash) is rejected with the reason logged, never stored. An artifact may
//! arrive before its job's success event, or for a job the store does not know: it is stored
//! anyway, and retention removes it if no job claims it.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{
    Channel,
    message::Delivery,
    options::{BasicCancelOptions, BasicRejectOptions},
    types::{AMQPValue, ShortString},
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use offload_shared::{
    JobId,
    artifacts::{self, ATTEMPT_HEADER, JOB_ID_HEADER, NAME_HEADER, SHA256_HEADER, SIZE_HEADER},
    broker::{self, Settle},
};

use crate::store::{NewArtifact, Store};

/// Unacknowledged artifact messages the broker may send ahead: each may be megabytes, so few.
pub const ARTIFACT_PREFETCH: u16 = 4;

/// Pause before a store failure's artifact is tried again (it is requeued meanwhile).
const STORE_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Why artifact consumption stopped.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactsError {
    /// Setting up, reading or settling failed.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The delivery stream failed.
    #[error("artifact consumer failed: {0}")]
    Stream(#[from] lapin::Error),
}

/// An artifact message's headers, checked against its body.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Its job.
    pub job_id: JobId,
    /// The attempt that produced it.
    pub attempt: u32,
    /// Its name.
    pub name: String,
    /// Its media type.
    pub content_type: String,
    /// Lowercase hex SHA-256 of the body.
    pub sha256: String,
}

/// Consumes `queue` on `channel` into `store` until `token` is cancelled or the consumer fails.
pub async fn consume(
    channel: Channel,
    queue: &str,
    store: &Store,
    deadline: Duration,
    token: CancellationToken,
) -> Result<(), ArtifactsError> {
    let tag = ShortString::from(format!("offload-api-artifacts-{}", std::process::id()));
    let mut consumer =
        broker::consume(&channel, queue, tag.clone(), ARTIFACT_PREFETCH, deadline).await?;
    loop {
        let delivery = tokio::select! {
            () = token.cancelled() => break,
            next = consumer.next() => match next {
                Some(delivery) => delivery?,
                None => break,
            },
        };
        store_one(&delivery, store, deadline).await?;
    }
    let _ = broker::with_deadline(
        deadline,
        "cancel the artifacts consumer",
        channel.basic_cancel(tag, BasicCancelOptions::default()),
    )
    .await;
    Ok(())
}

#[tracing::instrument(skip_all, fields(job_id))]
async fn store_one(
    delivery: &Delivery,
    store: &Store,
    deadline: Duration,
) -> Result<(), ArtifactsError> {
    let parsed = match parse(delivery) {
        Ok(parsed) => parsed,
        Err(reason) => {
            tracing::warn!(%reason, bytes = delivery.data.len(), "rejecting an artifact message");
            broker::with_deadline(
                deadline,
                "reject an artifact message",
                delivery.acker.reject(BasicRejectOptions { requeue: false }),
            )
            .await?;
            return Ok(());
        }
    };
    tracing::Span::current().record("job_id", tracing::field::display(parsed.job_id));
    let row = NewArtifact {
        job_id: parsed.job_id,
        name: &parsed.name,
        content_type: &parsed.content_type,
        sha256: &parsed.sha256,
        data: &delivery.data,
        attempt: parsed.attempt,
        stored_at: OffsetDateTime::now_utc(),
    };
    match store.put_artifact(&row).await {
        Ok(()) => broker::settle(&delivery.acker, Settle::Ack, false, deadline).await?,
        Err(e) => {
            tracing::warn!(error = %e, name = %parsed.name, "could not store an artifact; it is delivered again");
            tokio::time::sleep(STORE_RETRY_PAUSE).await;
            broker::settle(&delivery.acker, Settle::Requeue, false, deadline).await?;
        }
    }
    Ok(())
}

/// The delivery's headers, checked: every one present and well formed, the name and media type
/// usable, the size and SHA-256 those of the body.
pub fn parse(delivery: &Delivery) -> Result<Parsed, String> {
    let headers = delivery.properties.headers().as_ref();
    let text = |name: &str| -> Result<String, String> {
        match headers.and_then(|h| h.inner().get(name)) {
            Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec())
                .map_err(|_| format!("header {name} is not UTF-8")),
            Some(AMQPValue::ShortString(s)) => Ok(s.as_str().to_owned()),
            Some(_) => Err(format!("header {name} is not text")),
            None => Err(format!("header {name} is missing")),
        }
    };
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_default();
    check(
        &text(JOB_ID_HEADER)?,
        &text(ATTEMPT_HEADER)?,
        text(NAME_HEADER)?,
        content_type,
        &text(SIZE_HEADER)?,
        text(SHA256_HEADER)?,
        &delivery.data,
    )
}

/// [`parse`] on the header values themselves.
fn check(
    job_id: &str,
    attempt: &str,
    name: String,
    content_type: String,
    size: &str,
    sha256: String,
    body: &[u8],
) -> Result<Parsed, String> {
    let job_id: JobId = job_id
        .parse()
        .map_err(|_| format!("header {JOB_ID_HEADER} {job_id:?} is not a job id"))?;
    let attempt: u32 = attempt
        .parse()
        .map_err(|_| format!("header {ATTEMPT_HEADER} {attempt:?} is not a number"))?;
    artifacts::check_name(&name)?;
    artifacts::check_content_type(&content_type)?;
    if size.parse::<usize>().ok() != Some(body.len()) {
        return Err(format!(
            "header {SIZE_HEADER} {size:?} is not the body's size ({} bytes)",
            body.len()
        ));
    }
    let actual = artifacts::hex(&Sha256::digest(body));
    if sha256 != actual {
        return Err(format!(
            "header {SHA256_HEADER} {sha256:?} is not the body's SHA-256 ({actual})"
        ));
    }
    Ok(Parsed {
        job_id,
        attempt,
        name,
        content_type,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn only_artifacts_whose_headers_match_their_body_are_stored() {
        let id = JobId::new().to_string();
        let ok = check(
            &id,
            "2",
            "a.txt".into(),
            "text/plain".into(),
            "3",
            ABC.into(),
            b"abc",
        )
        .expect("well formed");
        assert_eq!((ok.attempt, ok.name.as_str()), (2, "a.txt"));
        let cases: [(&str, &str, &str, &str, &str, &str, &str); 6] = [
            ("nope", "1", "a", "text/plain", "3", ABC, "job_id"),
            (&id, "x", "a", "text/plain", "3", ABC, "attempt"),
            (&id, "1", "a/b", "text/plain", "3", ABC, "'/'"),
            (&id, "1", "a", "", "3", ABC, "content type"),
            (&id, "1", "a", "text/plain", "4", ABC, "size"),
            (&id, "1", "a", "text/plain", "3", "00", "sha256"),
        ];
        for (job, attempt, name, ct, size, sha, says) in cases {
            let err = check(
                job,
                attempt,
                name.into(),
                ct.into(),
                size,
                sha.into(),
                b"abc",
            )
            .expect_err(says);
            assert!(err.contains(says), "{says}: {err}");
        }
    }
}
