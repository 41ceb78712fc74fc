//! Retention: finished jobs are deleted `OFFLOAD_RETENTION_S` after they finished (their ids
//! then answer 404), idempotency keys `OFFLOAD_IDEMPOTENCY_TTL_S` after their first request
//! (never the key of a job still pending its publish). A deleted job's artifacts go with it, and
//! artifacts of no job (their success event never came) once they are as old as the window. A background task of the API deletes
//! them in batches of [`BATCH`] rows, beside the writer and pausing between batches, so a
//! backlog never holds the database long enough to delay a submit.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use offload_shared::Settings;

use crate::{
    metrics::ApiMetrics,
    store::{Purged, Store},
};

/// Rows one retention statement deletes at most.
pub const BATCH: u32 = 500;

/// Pause between two batches of a pass, so the writer's transactions get the database.
const PAUSE: Duration = Duration::from_millis(20);

/// The retention task's settings and handles.
#[derive(Clone)]
pub struct Retention {
    store: Store,
    metrics: Arc<ApiMetrics>,
    /// How long a finished job is kept.
    jobs_for: Duration,
    /// How long an idempotency key is remembered.
    keys_for: Duration,
    /// Time between two passes.
    every: Duration,
}

impl Retention {
    /// Retention of `store` as `settings` say, counted in `metrics`.
    pub fn new(store: Store, settings: &Settings, metrics: Arc<ApiMetrics>) -> Self {
        Retention {
            store,
            metrics,
            jobs_for: settings.retention(),
            keys_for: settings.idempotency_ttl(),
            every: settings.retention_interval(),
        }
    }

    /// Runs a pass every interval until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) {
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(self.every) => {}
            }
            self.pass(&token).await;
        }
        tracing::debug!("retention stopped");
    }

    /// One pass: batch after batch until nothing more is due, the store fails (the next pass
    /// tries again) or `token` is cancelled. Returns what it deleted.
    pub async fn pass(&self, token: &CancellationToken) -> Purged {
        let mut total = Purged::default();
        loop {
            let now = OffsetDateTime::now_utc();
            let outcome = self
                .store
                .purge(
                    before(now, self.jobs_for),
                    before(now, self.keys_for),
                    BATCH,
                )
                .await;
            let batch = match outcome {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "retention batch failed; the next pass tries again");
                    break;
                }
            };
            self.metrics.retention_deleted(batch.jobs, batch.keys);
            total.jobs += batch.jobs;
            total.keys += batch.keys;
            total.artifacts += batch.artifacts;
            // Keys counts those of the deleted jobs too: at worst one batch more than needed.
            if batch.jobs < u64::from(BATCH) && batch.keys < u64::from(BATCH) {
                break;
            }
            tokio::select! {
                () = token.cancelled() => break,
                () = tokio::time::sleep(PAUSE) => {}
            }
        }
        if total != Purged::default() {
            tracing::info!(
                jobs = total.jobs,
                keys = total.keys,
                artifacts = total.artifacts,
                "retention deleted finished jobs, expired idempotency keys and their artifacts"
            );
        }
        total
    }
}

/// `now - age`, or the earliest representable time if that is before it.
fn before(now: OffsetDateTime, age: Duration) -> OffsetDateTime {
    time::Duration::try_from(age)
        .ok()
        .and_then(|age| now.checked_sub(age))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use offload_shared::{JobEvent, JobId, JobKind, JobStatus};

    use super::*;
    use crate::store::{IdempotencyKey, JobRecord, Write, Written};

    async fn store() -> Store {
        let path = std::env::temp_dir().join(format!("offload-retention-{}.db", JobId::new()));
        Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("store")
    }

    #[tokio::test]
    async fn a_pass_deletes_a_backlog_in_batches_and_counts_it() {
        let store = store().await;
        let long_ago = OffsetDateTime::now_utc() - time::Duration::days(30);
        // 1,201 old finished jobs, each with a key: three batches of jobs, their keys with them.
        let ids: Vec<JobId> = (0..1201).map(|_| JobId::new()).collect();
        let mut writes = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            writes.push(Write::Insert {
                job: JobRecord::queued(
                    *id,
                    JobKind::parse("noop").expect("valid"),
                    1,
                    1000,
                    long_ago,
                ),
                payload: json!({}),
                key: Some(IdempotencyKey {
                    key: format!("k{i}"),
                    fingerprint: "f".into(),
                }),
                resolve_at: None,
                inputs: Vec::new(),
            });
            let mut done = JobEvent::now(*id, 1, JobStatus::Succeeded, "w");
            done.at = long_ago;
            writes.push(Write::Event(done));
        }
        for chunk in writes.chunks(1000) {
            store.apply(chunk).await.expect("history");
        }
        let fresh = JobId::new();
        store
            .apply(&[Write::Insert {
                job: JobRecord::queued(
                    fresh,
                    JobKind::parse("noop").expect("valid"),
                    1,
                    1000,
                    OffsetDateTime::now_utc(),
                ),
                payload: json!({}),
                key: None,
                resolve_at: None,
                inputs: Vec::new(),
            }])
            .await
            .expect("fresh");

        let mut settings = Settings::from_env().expect("settings");
        settings.retention_s = 7 * 24 * 3600;
        let metrics = Arc::new(ApiMetrics::default());
        let retention = Retention::new(store.clone(), &settings, metrics.clone());
        let total = retention.pass(&CancellationToken::new()).await;
        assert_eq!(
            total,
            Purged {
                jobs: 1201,
                keys: 1201,
                artifacts: 0
            }
        );
        let text = metrics.encode();
        assert!(
            text.contains("offload_retention_deleted_jobs_total 1201")
                && text.contains("offload_retention_deleted_keys_total 1201"),
            "{text}"
        );
        assert!(store.get(ids[0]).await.expect("get").is_none());
        assert!(store.get(fresh).await.expect("get").is_some());
        // The keys are free again.
        let again = store
            .apply(&[Write::Insert {
                job: JobRecord::queued(
                    JobId::new(),
                    JobKind::parse("noop").expect("valid"),
                    1,
                    1000,
                    OffsetDateTime::now_utc(),
                ),
                payload: json!({}),
                key: Some(IdempotencyKey {
                    key: "k0".into(),
                    fingerprint: "f".into(),
                }),
                resolve_at: None,
                inputs: Vec::new(),
            }])
            .await
            .expect("reuse");
        assert_eq!(again, vec![Written::Done]);
        // Nothing more is due.
        assert_eq!(
            retention.pass(&CancellationToken::new()).await,
            Purged::default()
        );
    }

    #[test]
    fn an_age_past_the_calendar_counts_from_the_epoch() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            before(now, Duration::from_secs(u64::MAX)),
            OffsetDateTime::UNIX_EPOCH
        );
        assert_eq!(
            before(now, Duration::from_secs(60)),
            now - time::Duration::minutes(1)
        );
    }
}
