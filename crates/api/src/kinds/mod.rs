//! The kinds the API accepts, each with its compiled payload schema: the kinds recorded in the
//! store (the built-in kinds of the stock worker, and every kind workers announced since), or,
//! when a kinds file pins them, exactly the file's kinds. `POST /jobs` looks its kind up here;
//! an unknown kind is a 422 that lists the known ones.
//!
//! - [`decide`]: what an announced spec does to the recorded one.
//! - [`pinned`]: the operator's kinds file.

pub mod decide;
pub mod pinned;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use time::OffsetDateTime;

use offload_shared::kinds::{JobKind, KindSchema, KindSpec, SpecError};

use crate::store::{
    Store, StoreError,
    registry::{KindRecord, KindSource},
};

/// The shortest time between two reloads from the store on an unknown kind: a client sending
/// unknown kinds costs at most one read a second.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// How often the kinds are read again from the store in the background.
const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// A kind the API accepts.
#[derive(Debug, Clone)]
pub struct KnownKind {
    /// What it is.
    pub spec: KindSpec,
    /// Its compiled payload schema.
    pub schema: KindSchema,
}

/// A kind name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}unknown job kind {given:?}; known kinds: {known}",
    in_batch.map(|i| format!("jobs[{i}]: ")).unwrap_or_default()
)]
pub struct UnknownKind {
    /// What the client sent, cut to 64 characters.
    pub given: String,
    /// The known kinds, comma separated.
    pub known: String,
    /// The job's position in a batch, for `POST /jobs/batch`.
    pub in_batch: Option<usize>,
}

/// The kinds the API accepts; cheap to clone, shared by every handler.
#[derive(Debug, Clone, Default)]
pub struct Kinds {
    known: Arc<RwLock<BTreeMap<JobKind, Arc<KnownKind>>>>,
    /// True when a kinds file pins the kinds: announcements add none.
    locked: bool,
    last_reload: Arc<Mutex<Option<Instant>>>,
}

impl Kinds {
    /// The kinds to accept at start. With `pinned` (the kinds file's specs), exactly those,
    /// recorded in the store as pinned. Without, every kind the store recorded, and the
    /// built-in kinds not recorded yet, which are recorded now.
    pub async fn load(store: &Store, pinned: Option<Vec<KindSpec>>) -> Result<Self, StoreError> {
        let now = OffsetDateTime::now_utc();
        let stored = store.kinds().await?;
        let recorded = |name: &JobKind| stored.iter().find(|r| &r.spec.name == name);
        let kinds = Kinds {
            locked: pinned.is_some(),
            ..Kinds::default()
        };
        let (wanted, source) = match pinned {
            Some(specs) => (specs, KindSource::Pinned),
            None => {
                for record in &stored {
                    if record.source == KindSource::Pinned {
                        // The kinds file is gone: its kinds stay, as ordinary recorded kinds
                        // that a worker's newer spec may replace.
                        store
                            .put_kind(&KindRecord {
                                source: KindSource::Announced,
                                ..record.clone()
                            })
                            .await?;
                    }
                    kinds.insert_logged(record.spec.clone());
                }
                let missing = offload_worker::handlers::builtin::specs()
                    .into_iter()
                    .filter(|s| recorded(&s.name).is_none())
                    .collect();
                (missing, KindSource::Builtin)
            }
        };
        for spec in wanted {
            let before = recorded(&spec.name);
            if before.is_none_or(|r| r.spec != spec || r.source != source || r.conflict.is_some()) {
                store
                    .put_kind(&KindRecord {
                        source,
                        announced_by: None,
                        first_seen_at: before.map_or(now, |r| r.first_seen_at),
                        updated_at: now,
                        conflict: None,
                        spec: spec.clone(),
                    })
                    .await?;
            }
            kinds.insert_logged(spec);
        }
        Ok(kinds)
    }

    /// True when a kinds file pins the kinds.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Reads the kinds the store recorded again (another API replica may have recorded some),
    /// at most once per [`RELOAD_EVERY`]; true if it read them. A locked set never changes.
    pub async fn reload(&self, store: &Store) -> bool {
        if self.locked {
            return false;
        }
        {
            let mut last = self.last_reload.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < RELOAD_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match store.kinds().await {
            Ok(records) => {
                for record in records {
                    let known = self.read().get(&record.spec.name).map(|k| k.spec.clone());
                    if known.as_ref() != Some(&record.spec) {
                        self.insert_logged(record.spec);
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the kinds from the store");
                false
            }
        }
    }

    /// Reloads the kinds every [`REFRESH_EVERY`] until `token` is cancelled: a spec another
    /// API replica replaced (after its workers were gone) reaches this one too.
    pub async fn refresh(self, store: Store, token: tokio_util::sync::CancellationToken) {
        if self.locked {
            return;
        }
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(REFRESH_EVERY) => {}
            }
            self.reload(&store).await;
        }
    }

    /// Inserts `spec`, or logs why its schema does not compile (a row written by another build).
    fn insert_logged(&self, spec: KindSpec) {
        if let Err(e) = self.insert(spec) {
            tracing::warn!(error = %e, "a recorded kind's spec is not valid; its jobs are refused");
        }
    }

    /// The built-in kinds of the stock worker (`noop`, `sleep`, `http.request`), so their jobs are accepted
    /// (and wait in their queue) before any worker has started.
    pub fn builtin() -> Self {
        let kinds = Kinds::default();
        for spec in offload_worker::handlers::builtin::specs() {
            // The built-in specs are the project's own and compile; a test keeps them so.
            let _ = kinds.insert(spec);
        }
        kinds
    }

    /// Records `spec` (replacing an earlier spec of the same kind), once its schema compiles.
    pub fn insert(&self, spec: KindSpec) -> Result<Arc<KnownKind>, SpecError> {
        let schema = spec.compile()?;
        let known = Arc::new(KnownKind { spec, schema });
        self.write().insert(known.spec.name.clone(), known.clone());
        Ok(known)
    }

    /// The kind named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<KnownKind>, UnknownKind> {
        let known = self.read();
        JobKind::parse(name)
            .ok()
            .and_then(|kind| known.get(&kind).cloned())
            .ok_or_else(|| UnknownKind {
                given: name.chars().take(64).collect(),
                known: known
                    .keys()
                    .map(JobKind::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                in_batch: None,
            })
    }

    /// Every known kind, by name.
    pub fn all(&self) -> Vec<Arc<KnownKind>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<JobKind, Arc<KnownKind>>> {
        // A panic while holding the lock leaves the map as it was: each write is one insert.
        self.known.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<JobKind, Arc<KnownKind>>> {
        self.known.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    async fn store() -> Store {
        let path =
            std::env::temp_dir().join(format!("offload-kinds-{}.db", offload_shared::JobId::new()));
        Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("store")
    }

    fn spec(name: &str, queue: &str) -> KindSpec {
        serde_json::from_value(json!({"name": name, "queue": queue})).expect("spec")
    }

    fn record(spec: KindSpec) -> KindRecord {
        let now = OffsetDateTime::now_utc();
        KindRecord {
            spec,
            source: KindSource::Announced,
            announced_by: Some("w1".into()),
            first_seen_at: now,
            updated_at: now,
            conflict: None,
        }
    }

    fn sources(records: &[KindRecord]) -> Vec<(String, KindSource)> {
        records
            .iter()
            .map(|r| (r.spec.name.to_string(), r.source))
            .collect()
    }

    #[tokio::test]
    async fn kinds_load_from_the_store_and_a_kinds_file_pins_them() {
        let store = store().await;
        // A fresh store: the built-in kinds are recorded and accepted.
        let kinds = Kinds::load(&store, None).await.expect("load");
        assert!(kinds.get("sleep").is_ok() && kinds.get("noop").is_ok());
        let builtin = |name: &str| (name.to_owned(), KindSource::Builtin);
        assert_eq!(
            sources(&store.kinds().await.expect("kinds")),
            [
                builtin("http.request"),
                builtin("image.thumbnail"),
                builtin("noop"),
                builtin("pdf.render"),
                builtin("sleep")
            ]
        );

        // A recorded kind survives a restart.
        store
            .put_kind(&record(spec("resize", "images")))
            .await
            .expect("put");
        let kinds = Kinds::load(&store, None).await.expect("reload");
        assert_eq!(
            kinds.get("resize").expect("resize").spec.queue.as_str(),
            "images"
        );

        // Pinned: exactly the file's kinds, recorded as pinned; announcements add none.
        let pinned = Kinds::load(&store, Some(vec![spec("resize", "thumbs")]))
            .await
            .expect("pinned");
        assert!(pinned.is_locked());
        assert_eq!(
            pinned.get("resize").expect("resize").spec.queue.as_str(),
            "thumbs"
        );
        assert!(pinned.get("sleep").is_err(), "not in the file");
        store
            .put_kind(&record(spec("other", "default")))
            .await
            .expect("put");
        assert!(!pinned.reload(&store).await);
        assert!(pinned.get("other").is_err());

        // The file removed: its kinds stay, no longer pinned.
        let kinds = Kinds::load(&store, None).await.expect("unpinned");
        let all = store.kinds().await.expect("kinds");
        let resize = all
            .iter()
            .find(|r| r.spec.name.as_str() == "resize")
            .expect("resize");
        assert_eq!(
            (resize.source, resize.spec.queue.as_str()),
            (KindSource::Announced, "thumbs")
        );
        assert!(kinds.get("other").is_ok() && kinds.get("sleep").is_ok());
    }

    #[tokio::test]
    async fn an_unknown_kind_reloads_the_store_at_most_once_a_second() {
        let store = store().await;
        let kinds = Kinds::load(&store, None).await.expect("load");
        // Another replica records a kind.
        store
            .put_kind(&record(spec("resize", "images")))
            .await
            .expect("put");
        assert!(kinds.get("resize").is_err());
        assert!(kinds.reload(&store).await);
        assert!(kinds.get("resize").is_ok());
        store
            .put_kind(&record(spec("crop", "images")))
            .await
            .expect("put");
        assert!(!kinds.reload(&store).await, "within a second of the last");
        assert!(kinds.get("crop").is_err());
    }

    #[test]
    fn the_builtin_kinds_are_known_and_unknown_ones_list_them() {
        let kinds = Kinds::builtin();
        assert!(kinds.get("sleep").is_ok());
        assert!(kinds.get("noop").is_ok());
        let err = kinds.get("resize").expect_err("not known");
        assert_eq!(
            err.to_string(),
            "unknown job kind \"resize\"; known kinds: http.request, image.thumbnail, noop, pdf.render, sleep"
        );
        assert!(kinds.get("Not A Name").is_err());
    }
}
