//! Concurrency limits in the store: a job of a `concurrency_key`, or of a kind with
//! `max_running`, is inserted `held` (status `scheduled`, no `resolve_at`). The dispatcher
//! ([`crate::limits`]) releases held jobs, oldest first, while their key and their kind are
//! below their limits, counting the released jobs that have not finished; a released job is
//! then due at once and the reconciler publishes it. One pass is one transaction under a lock
//! (PostgreSQL: an advisory lock; SQLite has one writer), so two API replicas never release past
//! a limit between them.

use std::collections::HashMap;

use time::OffsetDateTime;

use offload_shared::JobId;

use super::{
    StoreError,
    dialect::{Dialect, Stmt},
    ops::Db,
};

/// The oldest held jobs: `$1` how many.
const HELD: &str = "SELECT id, kind, concurrency_key, concurrency_limit FROM jobs
     WHERE gate = 'held' AND status = 'scheduled'
       AND status NOT IN ('succeeded', 'failed', 'dead', 'cancelled')
     ORDER BY id LIMIT $1";

/// Released jobs that have not finished, by key (the predicate of the partial index).
const ACTIVE_BY_KEY: &str = "SELECT concurrency_key, COUNT(*) AS n FROM jobs
     WHERE gate = 'released' AND concurrency_key IS NOT NULL
       AND status NOT IN ('succeeded', 'failed', 'dead', 'cancelled')
     GROUP BY concurrency_key";

/// Released jobs that have not finished, by kind.
const ACTIVE_BY_KIND: &str = "SELECT kind, COUNT(*) AS n FROM jobs
     WHERE gate IS NOT NULL AND gate = 'released'
       AND status NOT IN ('succeeded', 'failed', 'dead', 'cancelled')
     GROUP BY kind";

/// Releases held job `$1`: due at `$2`.
const RELEASE: &str = "UPDATE jobs SET gate = 'released', resolve_at = $2
     WHERE id = $1 AND gate = 'held' AND status = 'scheduled'";

/// Most held jobs one pass looks at.
pub const HELD_BATCH: u32 = 5000;

impl<D: Dialect> Db<D> {
    /// Releases the held jobs that fit under their key's limit and their kind's (`kinds`:
    /// `max_running` by kind), oldest first; their ids, and whether jobs are still held.
    pub(super) async fn release_held(
        &self,
        kinds: &HashMap<String, u32>,
        now: OffsetDateTime,
    ) -> Result<(Vec<JobId>, bool), StoreError> {
        let mut tx = self.pool().begin().await?;
        D::fetch_all(&mut tx, Stmt::new(D::GATE_LOCK)).await?;
        let held = D::fetch_all(&mut tx, Stmt::new(HELD).int(i64::from(HELD_BATCH))).await?;
        if held.is_empty() {
            return Ok((Vec::new(), false));
        }
        let count = |rows: Vec<D::Row>, col: &str| -> Result<HashMap<String, i64>, StoreError> {
            rows.iter()
                .map(|row| {
                    Ok((
                        D::get_text(row, col)?.unwrap_or_default(),
                        D::get_int(row, "n")?.unwrap_or(0),
                    ))
                })
                .collect()
        };
        let mut by_key = count(
            D::fetch_all(&mut tx, Stmt::new(ACTIVE_BY_KEY)).await?,
            "concurrency_key",
        )?;
        let mut by_kind = count(
            D::fetch_all(&mut tx, Stmt::new(ACTIVE_BY_KIND)).await?,
            "kind",
        )?;
        let mut released = Vec::new();
        let mut still_held = false;
        for row in &held {
            let id = D::get_id(row, "id")?;
            let kind = D::get_text(row, "kind")?.unwrap_or_default();
            let key = D::get_text(row, "concurrency_key")?;
            let key_limit = D::get_int(row, "concurrency_limit")?.unwrap_or(1);
            let key_free = key
                .as_ref()
                .is_none_or(|k| by_key.get(k).copied().unwrap_or(0) < key_limit);
            let kind_free = kinds
                .get(&kind)
                .is_none_or(|max| by_kind.get(&kind).copied().unwrap_or(0) < i64::from(*max));
            if !(key_free && kind_free) {
                still_held = true;
                continue;
            }
            if D::execute(&mut tx, Stmt::new(RELEASE).id(id).time(now)).await? > 0 {
                released.push(id);
                if let Some(k) = key {
                    *by_key.entry(k).or_default() += 1;
                }
                *by_kind.entry(kind).or_default() += 1;
            }
        }
        tx.commit().await?;
        Ok((released, still_held || held.len() == HELD_BATCH as usize))
    }
}
