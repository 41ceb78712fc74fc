//! The kinds the API accepts, each with its compiled payload schema: the built-in kinds of the
//! stock worker from the start, and every kind recorded since. `POST /jobs` looks its kind up
//! here; an unknown kind is a 422 that lists the known ones.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use offload_shared::kinds::{JobKind, KindSchema, KindSpec, SpecError};

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
#[error("unknown job kind {given:?}; known kinds: {known}")]
pub struct UnknownKind {
    /// What the client sent, cut to 64 characters.
    pub given: String,
    /// The known kinds, comma separated.
    pub known: String,
}

/// The kinds the API accepts; cheap to clone, shared by every handler.
#[derive(Debug, Clone, Default)]
pub struct Kinds {
    known: Arc<RwLock<BTreeMap<JobKind, Arc<KnownKind>>>>,
}

impl Kinds {
    /// The built-in kinds of the stock worker (`noop`, `sleep`), so their jobs are accepted
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
    use super::*;

    #[test]
    fn the_builtin_kinds_are_known_and_unknown_ones_list_them() {
        let kinds = Kinds::builtin();
        assert!(kinds.get("sleep").is_ok());
        assert!(kinds.get("noop").is_ok());
        let err = kinds.get("resize").expect_err("not known");
        assert_eq!(
            err.to_string(),
            "unknown job kind \"resize\"; known kinds: noop, sleep"
        );
        assert!(kinds.get("Not A Name").is_err());
    }
}
