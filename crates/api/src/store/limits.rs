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

/// The oldest held jobs whose time has come (`$2` now; a job of a limited kind may also have a
/// `run_at`): at most `$3` of each key and kind, so a key with a backlog cannot hide the others'
/// jobs behind its own, and at most `$1` in all.
const HELD: &str = "SELECT id, kind, concurrency_key, concurrency_limit FROM (
         SELECT id, kind, concurrency_key, concurrency_limit,
                ROW_NUMBER() OVER (PARTITION BY concurrency_key, kind ORDER BY id) AS nth
         FROM jobs
         WHERE gate = 'held' AND status = 'scheduled'
           AND status NOT IN ('succeeded', 'failed', 'dead', 'cancelled')
           AND (run_at IS NULL OR run_at <= $2)
     ) AS held
     WHERE nth <= $3
     ORDER BY id LIMIT $1";

/// Released jobs that have not finished, by key (the predicate of the partial index).
const ACTIVE_BY_KEY: &str = "SELECT concurrency_key, COUNT(*) AS n FROM jobs
     WHERE gate = 'released' AND concurrency_key IS NOT NULL
       AND status NOT IN ('succeeded', 'failed', 'dead', 'cancelled')
     GROUP BY concurrency_key";

/// Released jobs that have not finished, by kind.
const ACTIVE_BY_KIND: &str = "SELECT kind, COUNT(*) AS n FROM jobs
     WHERE gate = 'released'
       AND status NOT IN ('succeeded', 'failed', 'dead', 'cancelled')
     GROUP BY kind";

/// Releases held job `$1`: due at `$2`.
const RELEASE: &str = "UPDATE jobs SET gate = 'released', resolve_at = $2
     WHERE id = $1 AND gate = 'held' AND status = 'scheduled'";

/// Most held jobs one pass looks at.
pub const HELD_BATCH: u32 = 5000;

/// Most held jobs of one key and kind one pass looks at (a pass every 100 ms while jobs wait).
pub const HELD_PER_KEY: u32 = 100;

impl<D: Dialect> Db<D> {
    /// Releases the held jobs that fit under their key's limit and their kind's (`kinds`:
    /// `max_running` by kind), oldest first; their ids, and whether any held job was due.
    pub(super) async fn release_held(
        &self,
        kinds: &HashMap<String, u32>,
        now: OffsetDateTime,
    ) -> Result<(Vec<JobId>, bool), StoreError> {
        // SQLite: a write transaction from the start, so it never fails to upgrade its read
        // lock when the writer commits in between.
        let mut tx = self.pool().begin_with(D::GATE_BEGIN).await?;
        D::fetch_all(&mut tx, Stmt::new(D::GATE_LOCK)).await?;
        let stmt = Stmt::new(HELD)
            .int(i64::from(HELD_BATCH))
            .time(now)
            .int(i64::from(HELD_PER_KEY));
        let held = D::fetch_all(&mut tx, stmt).await?;
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
        // Jobs were due: the next pass comes soon, as the running ones finish.
        Ok((released, true))
    }
}
