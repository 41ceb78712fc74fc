//! Consumes worker announcements from `<prefix>.workers` and applies them: each worker's latest
//! announcement is recorded, and each kind it announces is recorded, bound and accepted, left
//! alone, or reported as a conflict (see [`crate::kinds::decide`]). What cannot be read is
//! logged, counted and acknowledged: an announcement is repeated every heartbeat, so nothing is
//! lost by dropping one, and one bad worker never stops the others'.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{
    Channel, Connection,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::{FieldTable, ShortString},
};
use serde_json::Value;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use offload_shared::{
    Settings,
    announce::Announcement,
    broker::{self, Settle},
    kinds::KindSpec,
    topology,
};

use crate::{
    kinds::{
        Kinds,
        decide::{Decision, decide},
    },
    metrics::ApiMetrics,
    store::{
        Store, StoreError,
        registry::{KindRecord, KindSource, WorkerRecord},
    },
};

/// Announcements the broker may send ahead: they are small and applied one by one.
const PREFETCH: u16 = 16;

/// A worker not heard from for this long is forgotten (its row deleted).
const FORGET_AFTER: time::Duration = time::Duration::days(1);

/// How often workers past [`FORGET_AFTER`] are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Longest worker name taken: it is stored and shown.
const MAX_WORKER_NAME: usize = 128;

/// An announcement as read: the announcement (its `kinds` empty), the specs that are valid,
/// and the ones that are not, as `(name as given, reason)`.
#[derive(Debug)]
pub struct Parsed {
    /// The announcement without its kinds.
    pub announcement: Announcement,
    /// The kind specs that parse and compile.
    pub specs: Vec<KindSpec>,
    /// The kind specs refused, with why.
    pub refused: Vec<(String, String)>,
}

/// Reads an announcement. Each kind spec is read on its own, so one invalid spec does not take
/// the worker's other kinds with it; a body that is not an announcement at all, or of another
/// wire version, is an error saying why.
pub fn parse(body: &[u8]) -> Result<Parsed, String> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| format!("not an announcement: {e}"))?;
    let kinds = match value.get_mut("kinds").map(Value::take) {
        Some(Value::Array(kinds)) => kinds,
        Some(_) => return Err("not an announcement: kinds is not a list".to_owned()),
        None => return Err("not an announcement: missing field `kinds`".to_owned()),
    };
    if let Some(object) = value.as_object_mut() {
        object.insert("kinds".to_owned(), Value::Array(Vec::new()));
    }
    let announcement = Announcement::from_bytes(value.to_string().as_bytes())?;
    if announcement.worker.is_empty() || announcement.worker.chars().count() > MAX_WORKER_NAME {
        return Err(format!(
            "the worker name must be 1 to {MAX_WORKER_NAME} characters"
        ));
    }
    let mut specs = Vec::new();
    let mut refused = Vec::new();
    for item in kinds {
        let given: String = item
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .chars()
            .take(64)
            .collect();
        let spec = serde_json::from_value::<KindSpec>(item)
            .map_err(|e| e.to_string())
            .and_then(|spec| spec.compile().map(|_| spec).map_err(|e| e.reason));
        match spec {
            Ok(spec) => specs.push(spec),
            Err(reason) => refused.push((given, reason)),
        }
    }
    Ok(Parsed {
        announcement,
        specs,
        refused,
    })
}

/// Applies announcements to the store and the accepted kinds; lives across reconnections so
/// that each conflict is logged once.
#[derive(Clone)]
pub struct Registry {
    store: Store,
    kinds: Kinds,
    settings: Arc<Settings>,
    metrics: Arc<ApiMetrics>,
    /// `(worker, kind)` conflicts and `kind`s not pinned already logged.
    logged: Arc<Mutex<HashSet<(String, String)>>>,
    /// When old workers were last forgotten.
    pruned: Arc<Mutex<Option<Instant>>>,
}

impl Registry {
    /// A registry writing to `store` and `kinds`.
    pub fn new(
        store: Store,
        kinds: Kinds,
        settings: Arc<Settings>,
        metrics: Arc<ApiMetrics>,
    ) -> Self {
        Registry {
            store,
            kinds,
            settings,
            metrics,
            logged: Arc::default(),
            pruned: Arc::default(),
        }
    }

    /// True the first time `(who, kind)` is passed.
    fn first_time(&self, who: &str, kind: &str) -> bool {
        self.logged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((who.to_owned(), kind.to_owned()))
    }

    /// Applies one announcement: the worker's row, then each of its valid kinds.
    #[tracing::instrument(skip_all, fields(worker = %parsed.announcement.worker))]
    pub async fn apply(&self, connection: &Connection, parsed: Parsed) -> Result<(), StoreError> {
        let Parsed {
            announcement,
            specs,
            refused,
        } = parsed;
        let worker = announcement.worker.as_str();
        for (kind, reason) in &refused {
            tracing::warn!(worker, kind, reason, "refused an announced kind spec");
        }
        let now = OffsetDateTime::now_utc();
        // Read before this announcement is recorded: its worker's own earlier spec never
        // holds a kind against it.
        let workers = self.store.workers().await?;
        let recorded = self.store.kinds().await?;
        // Recorded first, so a kind it brings is never listed without it.
        let record = WorkerRecord::from_announcement(&announcement, specs.clone(), now);
        self.store.put_worker(&record).await?;
        for spec in &specs {
            let record = recorded.iter().find(|r| r.spec.name == spec.name);
            let holders: Vec<&str> = record
                .map(|r| {
                    workers
                        .iter()
                        .filter(|w| w.name != worker && w.is_live(now))
                        .filter(|w| w.kinds.contains(&r.spec))
                        .map(|w| w.name.as_str())
                        .collect()
                })
                .unwrap_or_default();
            let decision = decide(record, spec, worker, &holders, self.kinds.is_locked());
            self.act(connection, worker, record, spec, decision, now)
                .await?;
        }
        Ok(())
    }

    async fn act(
        &self,
        connection: &Connection,
        worker: &str,
        record: Option<&KindRecord>,
        spec: &KindSpec,
        decision: Decision,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let kind = spec.name.as_str();
        let replace = |first_seen_at| KindRecord {
            spec: spec.clone(),
            source: KindSource::Announced,
            announced_by: Some(worker.to_owned()),
            first_seen_at,
            updated_at: now,
            conflict: None,
        };
        match decision {
            Decision::Unchanged => {
                if let Some(conflict) = record.and_then(|r| r.conflict.as_deref())
                    && !self.still_conflicts(spec, worker, now).await?
                {
                    self.store.set_kind_conflict(kind, None).await?;
                    tracing::info!(
                        kind,
                        resolved = conflict,
                        "a kind's conflict is over: no live worker announces another spec"
                    );
                }
            }
            Decision::NotPinned => {
                if self.first_time("", kind) {
                    tracing::warn!(
                        worker,
                        kind,
                        "an announced kind is not in OFFLOAD_KINDS_FILE; its jobs are refused"
                    );
                }
            }
            Decision::Conflict { text } => {
                if record.and_then(|r| r.conflict.as_deref()) != Some(text.as_str()) {
                    self.store.set_kind_conflict(kind, Some(&text)).await?;
                }
                if self.first_time(worker, kind) {
                    self.metrics.kind_conflict();
                    tracing::warn!(worker, kind, conflict = %text, "an announced kind spec conflicts with the recorded one");
                }
            }
            Decision::Record => {
                if !self.bind(connection, spec).await {
                    return Ok(());
                }
                self.store.put_kind(&replace(now)).await?;
                self.accept(spec);
                tracing::info!(worker, kind, queue = %spec.queue, "recorded a new kind");
            }
            Decision::Replace { unbind } => {
                if !self.bind(connection, spec).await {
                    return Ok(());
                }
                self.store
                    .put_kind(&replace(record.map_or(now, |r| r.first_seen_at)))
                    .await?;
                self.accept(spec);
                if let Some(old) = unbind {
                    let unbound =
                        topology::unbind_kind(connection, &self.settings, &spec.name, &old).await;
                    if let Err(e) = unbound {
                        tracing::warn!(kind, queue = %old, error = %e, "cannot unbind a kind from its old queue");
                    }
                }
                tracing::info!(worker, kind, queue = %spec.queue, "a kind's new spec replaced the recorded one, which no live worker runs any more");
            }
        }
        Ok(())
    }

    /// True while a live worker other than `worker` announces `spec`'s kind with another spec.
    async fn still_conflicts(
        &self,
        spec: &KindSpec,
        worker: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let workers = self.store.workers().await?;
        Ok(workers
            .iter()
            .filter(|w| w.name != worker && w.is_live(now))
            .flat_map(|w| &w.kinds)
            .any(|k| k.name == spec.name && k != spec))
    }

    /// Forgets workers not heard from for [`FORGET_AFTER`], at most once per [`PRUNE_EVERY`].
    async fn prune(&self) {
        {
            let mut last = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self
            .store
            .forget_workers(OffsetDateTime::now_utc() - FORGET_AFTER)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(workers = n, "forgot workers not heard from for a day"),
            Err(e) => tracing::warn!(error = %e, "cannot forget old workers"),
        }
    }

    /// Routes the kind to its queue; false (logged) if the broker refused: the next heartbeat
    /// tries again.
    async fn bind(&self, connection: &Connection, spec: &KindSpec) -> bool {
        match topology::bind_kind(connection, &self.settings, &spec.name, &spec.queue).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(kind = %spec.name, queue = %spec.queue, error = %e, "cannot bind an announced kind; retrying with its next heartbeat");
                false
            }
        }
    }

    fn accept(&self, spec: &KindSpec) {
        // The spec compiled when it was parsed.
        if let Err(e) = self.kinds.insert(spec.clone()) {
            tracing::warn!(error = %e, "an announced kind does not compile");
        }
    }
}

/// Why announcement consumption stopped.
#[derive(Debug, thiserror::Error)]
pub enum AnnouncementsError {
    /// Setting up or settling on the channel failed.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The delivery stream failed.
    #[error("announcement consumer failed: {0}")]
    Stream(#[from] lapin::Error),
}

/// Consumes `queue` on `channel` until `token` is cancelled or the consumer fails.
pub async fn consume(
    channel: Channel,
    connection: &Connection,
    queue: &str,
    registry: &Registry,
    deadline: Duration,
    token: CancellationToken,
) -> Result<(), AnnouncementsError> {
    broker::with_deadline(
        deadline,
        "set the announcements prefetch",
        channel.basic_qos(PREFETCH, BasicQosOptions::default()),
    )
    .await?;
    let tag = ShortString::from(format!("offload-api-announcements-{}", std::process::id()));
    let mut consumer = broker::with_deadline(
        deadline,
        "consume the workers queue",
        channel.basic_consume(
            ShortString::from(queue),
            tag.clone(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    loop {
        let delivery = tokio::select! {
            () = token.cancelled() => break,
            next = consumer.next() => match next {
                Some(delivery) => delivery?,
                None => break,
            },
        };
        match parse(&delivery.data) {
            Ok(parsed) => {
                if let Err(e) = registry.apply(connection, parsed).await {
                    // Applied again with the worker's next heartbeat.
                    tracing::warn!(error = %e, "cannot record a worker announcement");
                }
                registry.prune().await;
            }
            Err(reason) => {
                registry.metrics.announcement_refused();
                tracing::warn!(
                    reason,
                    bytes = delivery.data.len(),
                    "refused a worker announcement"
                );
            }
        }
        broker::settle(&delivery.acker, Settle::Ack, false, deadline).await?;
    }
    let _ = broker::with_deadline(
        deadline,
        "cancel the announcements consumer",
        channel.basic_cancel(tag, BasicCancelOptions::default()),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(kinds: Value) -> Vec<u8> {
        json!({
            "v": 1, "worker": "w1", "state": "alive", "kinds": kinds, "queues": ["images"],
            "heartbeat_s": 5, "started_at": "2026-01-01T00:00:00Z", "at": "2026-01-01T00:00:05Z",
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn invalid_specs_are_refused_one_by_one_and_the_rest_is_read() {
        let parsed = parse(&body(json!([
            {"name": "resize", "queue": "images", "payload_schema": {"type": "object"}},
            {"name": "Bad Name"},
            {"name": "broken", "payload_schema": {"type": 12}},
        ])))
        .expect("parses");
        assert_eq!(parsed.announcement.worker, "w1");
        assert_eq!(parsed.specs.len(), 1);
        assert_eq!(parsed.specs[0].name.as_str(), "resize");
        let names: Vec<&str> = parsed.refused.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Bad Name", "broken"]);
    }

    #[test]
    fn what_is_not_an_announcement_is_refused_with_why() {
        let mut other_version: Value = serde_json::from_slice(&body(json!([]))).expect("json");
        other_version["v"] = json!(2);
        let other_version = other_version.to_string();
        let cases: [(&[u8], &str); 4] = [
            (b"not json", "not an announcement"),
            (br#"{"v":1}"#, "missing field `kinds`"),
            (br#"{"v":1,"kinds":{}}"#, "kinds is not a list"),
            (other_version.as_bytes(), "version 2"),
        ];
        for (body, want) in cases {
            let err = parse(body).expect_err(want);
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}
