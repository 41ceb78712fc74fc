//! Versioned schema migrations: one set per database (`crates/api/migrations/{sqlite,postgres}`),
//! embedded in the binary and run by sqlx's migrator at start-up under its lock (PostgreSQL:
//! an advisory lock, so API replicas starting together migrate one after the other and the
//! others find the work done).
//!
//! Migration 1 of each set is the first schema this project shipped for that database. Builds
//! before versioned migrations created their tables with `CREATE TABLE IF NOT EXISTS` and kept
//! no migrations table; such a database is *baselined*: the migrations whose columns it already
//! has are recorded as applied without running, and the rest run as usual.

use std::borrow::Cow;

use sqlx::{
    SqlSafeStr,
    migrate::{Migrate, MigrateError, Migration, MigrationType, Migrator},
};

use super::{StoreError, dialect::Dialect};

/// sqlx's table of applied migrations.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// One migration and the columns it adds, by which an unversioned database shows that it
/// already has it.
#[derive(Debug)]
pub(crate) struct Step {
    /// Its version, 1, 2, …
    pub version: i64,
    /// What it does (the file name's tail).
    pub description: &'static str,
    /// Its SQL (several statements).
    pub sql: &'static str,
    /// `(table, column)` pairs it creates.
    pub adds: &'static [(&'static str, &'static str)],
}

/// sqlx's migrator for `steps`, without its own locking: [`run`] holds the lock around the
/// baseline too.
fn migrator(steps: &[Step]) -> Migrator {
    let migrations = steps
        .iter()
        .map(|s| {
            Migration::new(
                s.version,
                Cow::Borrowed(s.description),
                MigrationType::Simple,
                s.sql.into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.set_locking(false);
    migrator
}

/// Brings the schema on `conn` up to date, under the migrator's lock.
pub(crate) async fn run<D: Dialect>(conn: &mut D::Connection) -> Result<(), StoreError> {
    conn.lock().await?;
    let outcome = run_locked::<D>(conn).await;
    // A failed unlock is released with the connection, which the caller closes.
    let unlocked = conn.unlock().await;
    outcome?;
    unlocked?;
    Ok(())
}

async fn run_locked<D: Dialect>(conn: &mut D::Connection) -> Result<(), StoreError> {
    let steps = D::MIGRATIONS;
    let migrator = migrator(steps);
    let known = steps.last().map_or(0, |s| s.version);
    let versioned = D::has_table(conn, MIGRATIONS_TABLE).await?;
    let before = if versioned {
        applied(conn).await?
    } else if D::has_table(conn, "jobs").await? {
        let baseline = baseline::<D>(conn, steps).await?;
        tracing::info!(
            database = D::NAME,
            baseline,
            "the job store predates versioned migrations; recording the migrations its columns already have as applied"
        );
        migrator.run_direct(Some(baseline), conn, true).await?;
        baseline
    } else {
        0
    };
    match migrator.run_direct(None, conn, false).await {
        Err(MigrateError::VersionMissing(applied)) => {
            return Err(StoreError::SchemaTooNew { applied, known });
        }
        outcome => outcome?,
    }
    let after = applied(conn).await?;
    if after != before {
        tracing::info!(
            database = D::NAME,
            from = before,
            to = after,
            "job store schema migrated"
        );
    }
    Ok(())
}

/// The newest applied migration.
async fn applied<C: Migrate>(conn: &mut C) -> Result<i64, MigrateError> {
    let applied = conn.list_applied_migrations(MIGRATIONS_TABLE).await?;
    Ok(applied.iter().map(|m| m.version).max().unwrap_or(0))
}

/// The last migration an unversioned database already reflects: every migration up to it has
/// all of its columns, none after it has any. Anything else is not a schema this project
/// shipped (a migration half there, or a later one without an earlier one).
async fn baseline<D: Dialect>(conn: &mut D::Connection, steps: &[Step]) -> Result<i64, StoreError> {
    let mut columns = Vec::new();
    for table in ["jobs", "idempotency_keys"] {
        for column in D::columns(conn, table).await? {
            columns.push((table, column));
        }
    }
    let has = |(table, column): &(&str, &str)| {
        columns
            .iter()
            .any(|(t, c)| t == table && c.eq_ignore_ascii_case(column))
    };
    let mut baseline = 0;
    for step in steps {
        let present = step.adds.iter().filter(|a| has(a)).count();
        let missing = || {
            step.adds
                .iter()
                .filter(|a| !has(a))
                .map(|(t, c)| format!("{t}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match (present, baseline + 1 == step.version) {
            (0, _) => {}
            (n, true) if n == step.adds.len() => baseline = step.version,
            (_, true) => {
                return Err(StoreError::UnrecognisedSchema(format!(
                    "migration {} ({}) is partly there: {} missing",
                    step.version,
                    step.description,
                    missing()
                )));
            }
            (_, false) => {
                return Err(StoreError::UnrecognisedSchema(format!(
                    "it has columns of migration {} ({}) without those of migration {}",
                    step.version,
                    step.description,
                    baseline + 1
                )));
            }
        }
    }
    Ok(baseline)
}

/// The SQLite migrations.
pub(crate) const SQLITE: &[Step] = &[
    Step {
        version: 1,
        description: "jobs",
        sql: include_str!("../../migrations/sqlite/0001_jobs.sql"),
        adds: &[("jobs", "id")],
    },
    Step {
        version: 2,
        description: "timeouts budgets runs keys",
        sql: include_str!("../../migrations/sqlite/0002_timeouts_budgets_runs_keys.sql"),
        adds: &[("jobs", "timeout_ms"), ("jobs", "budget"), ("jobs", "runs")],
    },
    Step {
        version: 3,
        description: "pending jobs",
        sql: include_str!("../../migrations/sqlite/0003_pending_jobs.sql"),
        adds: &[("jobs", "resolve_at")],
    },
    Step {
        version: 4,
        description: "retention",
        sql: include_str!("../../migrations/sqlite/0004_retention.sql"),
        adds: &[("idempotency_keys", "created_at")],
    },
    Step {
        version: 5,
        description: "kinds workers",
        sql: include_str!("../../migrations/sqlite/0005_kinds_workers.sql"),
        adds: &[("kinds", "name"), ("workers", "name")],
    },
    Step {
        version: 6,
        description: "keys sessions owners",
        sql: include_str!("../../migrations/sqlite/0006_keys_sessions_owners.sql"),
        adds: &[("jobs", "owner")],
    },
    Step {
        version: 7,
        description: "artifacts",
        sql: include_str!("../../migrations/sqlite/0007_artifacts.sql"),
        adds: &[("jobs", "artifacts")],
    },
    Step {
        version: 8,
        description: "job inputs",
        sql: include_str!("../../migrations/sqlite/0008_job_inputs.sql"),
        adds: &[("job_inputs", "job_id")],
    },
    Step {
        version: 9,
        description: "cancel",
        sql: include_str!("../../migrations/sqlite/0009_cancel.sql"),
        adds: &[("jobs", "cancel_settled_at")],
    },
    Step {
        version: 10,
        description: "run at",
        sql: include_str!("../../migrations/sqlite/0010_run_at.sql"),
        adds: &[("jobs", "run_at")],
    },
    Step {
        version: 11,
        description: "progress",
        sql: include_str!("../../migrations/sqlite/0011_progress.sql"),
        adds: &[("jobs", "progress_ppm")],
    },
    Step {
        version: 12,
        description: "priority",
        sql: include_str!("../../migrations/sqlite/0012_priority.sql"),
        adds: &[("jobs", "priority"), ("kinds", "priority")],
    },
    Step {
        version: 13,
        description: "schedules",
        sql: include_str!("../../migrations/sqlite/0013_schedules.sql"),
        adds: &[("schedules", "name")],
    },
    Step {
        version: 14,
        description: "concurrency",
        sql: include_str!("../../migrations/sqlite/0014_concurrency.sql"),
        adds: &[("jobs", "concurrency_key"), ("kinds", "max_running")],
    },
    Step {
        version: 15,
        description: "leases",
        sql: include_str!("../../migrations/sqlite/0015_leases.sql"),
        adds: &[("jobs", "lease_until"), ("kinds", "long")],
    },
    Step {
        version: 16,
        description: "dashboard",
        sql: include_str!("../../migrations/sqlite/0016_dashboard.sql"),
        adds: &[("audit", "seq")],
    },
    Step {
        version: 17,
        description: "job steps",
        sql: include_str!("../../migrations/sqlite/0017_job_steps.sql"),
        adds: &[("job_steps", "job_id")],
    },
];

/// The PostgreSQL migrations.
pub(crate) const POSTGRES: &[Step] = &[
    Step {
        version: 1,
        description: "jobs",
        sql: include_str!("../../migrations/postgres/0001_jobs.sql"),
        adds: &[("jobs", "id")],
    },
    Step {
        version: 2,
        description: "pending jobs",
        sql: include_str!("../../migrations/postgres/0002_pending_jobs.sql"),
        adds: &[("jobs", "resolve_at")],
    },
    Step {
        version: 3,
        description: "retention",
        sql: include_str!("../../migrations/postgres/0003_retention.sql"),
        adds: &[("idempotency_keys", "created_at")],
    },
    Step {
        version: 4,
        description: "kinds workers",
        sql: include_str!("../../migrations/postgres/0004_kinds_workers.sql"),
        adds: &[("kinds", "name"), ("workers", "name")],
    },
    Step {
        version: 5,
        description: "keys sessions owners",
        sql: include_str!("../../migrations/postgres/0005_keys_sessions_owners.sql"),
        adds: &[("jobs", "owner")],
    },
    Step {
        version: 6,
        description: "artifacts",
        sql: include_str!("../../migrations/postgres/0006_artifacts.sql"),
        adds: &[("jobs", "artifacts")],
    },
    Step {
        version: 7,
        description: "job inputs",
        sql: include_str!("../../migrations/postgres/0007_job_inputs.sql"),
        adds: &[("job_inputs", "job_id")],
    },
    Step {
        version: 8,
        description: "cancel",
        sql: include_str!("../../migrations/postgres/0008_cancel.sql"),
        adds: &[("jobs", "cancel_settled_at")],
    },
    Step {
        version: 9,
        description: "run at",
        sql: include_str!("../../migrations/postgres/0009_run_at.sql"),
        adds: &[("jobs", "run_at")],
    },
    Step {
        version: 10,
        description: "progress",
        sql: include_str!("../../migrations/postgres/0010_progress.sql"),
        adds: &[("jobs", "progress_ppm")],
    },
    Step {
        version: 11,
        description: "priority",
        sql: include_str!("../../migrations/postgres/0011_priority.sql"),
        adds: &[("jobs", "priority"), ("kinds", "priority")],
    },
    Step {
        version: 12,
        description: "schedules",
        sql: include_str!("../../migrations/postgres/0012_schedules.sql"),
        adds: &[("schedules", "name")],
    },
    Step {
        version: 13,
        description: "concurrency",
        sql: include_str!("../../migrations/postgres/0013_concurrency.sql"),
        adds: &[("jobs", "concurrency_key"), ("kinds", "max_running")],
    },
    Step {
        version: 14,
        description: "leases",
        sql: include_str!("../../migrations/postgres/0014_leases.sql"),
        adds: &[("jobs", "lease_until"), ("kinds", "long")],
    },
    Step {
        version: 15,
        description: "dashboard",
        sql: include_str!("../../migrations/postgres/0015_dashboard.sql"),
        adds: &[("audit", "seq")],
    },
    Step {
        version: 16,
        description: "job steps",
        sql: include_str!("../../migrations/postgres/0016_job_steps.sql"),
        adds: &[("job_steps", "job_id")],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_and_every_step_names_its_columns() {
        for steps in [SQLITE, POSTGRES] {
            for (i, step) in steps.iter().enumerate() {
                assert_eq!(step.version, i as i64 + 1, "{step:?}");
                assert!(!step.adds.is_empty(), "{step:?}");
            }
        }
    }
}
