//! Applying an announcement: the worker's row, then each kind it announces is recorded, bound
//! and accepted, left alone, or reported as a conflict (see [`crate::kinds::decide`]).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lapin::Connection;
use time::OffsetDateTime;

use offload_shared::{Settings, kinds::KindSpec, topology};

use super::Parsed;
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

/// A worker not heard from for this long is forgotten (its row deleted).
const FORGET_AFTER: time::Duration = time::Duration::days(1);

/// How often workers past [`FORGET_AFTER`] are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Applies announcements to the store and the accepted kinds; lives across reconnections so
/// that each conflict is logged once.
#[derive(Clone)]
pub struct Registry {
    store: Store,
    kinds: Kinds,
    settings: Arc<Settings>,
    pub(super) metrics: Arc<ApiMetrics>,
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
                // Recorded first: of two API replicas recording the kind at once, only the one
                // that recorded it binds it, so it is never routed to two queues. The other
                // decides again with the worker's next heartbeat.
                if !self.store.record_kind(&replace(now)).await? {
                    return Ok(());
                }
                // Bound before it is accepted: an accepted job always has a queue to go to.
                self.bind(connection, spec).await;
                self.accept(spec);
                tracing::info!(worker, kind, queue = %spec.queue, "recorded a new kind");
            }
            Decision::Replace { unbind } => {
                let Some(record) = record else {
                    return Ok(());
                };
                if !self
                    .store
                    .replace_kind(&replace(record.first_seen_at), record.updated_at)
                    .await?
                {
                    return Ok(());
                }
                self.bind(connection, spec).await;
                if let Some(old) = unbind {
                    let unbound =
                        topology::unbind_kind(connection, &self.settings, &spec.name, &old).await;
                    if let Err(e) = unbound {
                        tracing::warn!(kind, queue = %old, error = %e, "cannot unbind a kind from its old queue");
                    }
                }
                self.accept(spec);
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
    pub(super) async fn prune(&self) {
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

    /// Routes the kind to its queue; logs if the broker refused (the kind is bound again with
    /// every reconnection, which a lost link brings about).
    async fn bind(&self, connection: &Connection, spec: &KindSpec) {
        if let Err(e) =
            topology::bind_kind(connection, &self.settings, &spec.name, &spec.queue).await
        {
            tracing::warn!(kind = %spec.name, queue = %spec.queue, error = %e, "cannot bind an announced kind; it is bound again when the broker link is reopened");
        }
    }

    fn accept(&self, spec: &KindSpec) {
        // The spec compiled when it was parsed.
        if let Err(e) = self.kinds.insert(spec.clone()) {
            tracing::warn!(error = %e, "an announced kind does not compile");
        }
    }
}
