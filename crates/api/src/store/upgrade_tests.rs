//! Upgrades: databases made by earlier builds (no migrations table; tables created with
//! `CREATE TABLE IF NOT EXISTS`) open with today's store, keep every job and take new work, on
//! both backends; an up-to-date database reopens unchanged; replicas migrate one schema at once.

use std::{path::PathBuf, time::Duration};

use serde_json::{Value, json};
use sqlx::{PgPool, SqlitePool, postgres::PgPoolOptions};
use time::{OffsetDateTime, macros::datetime};

use offload_shared::{JobEvent, JobId, JobKind, JobStatus};

use super::{
    tests::{PgSchema, on_postgres},
    *,
};

// ---- the schemas earlier builds created, literally ----------------------------------------

/// SQLite, as first shipped (e5270e4).
const SQLITE_FIRST: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    progress     INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    worker       TEXT,
    submitted_at INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    payload      TEXT NOT NULL,
    result       TEXT,
    error        TEXT
)";

/// SQLite from 1b40f27 until versioned migrations: every start ran these three.
const SQLITE_LAST_UNVERSIONED: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS jobs (
        id           TEXT PRIMARY KEY,
        kind         TEXT NOT NULL,
        status       TEXT NOT NULL,
        progress     INTEGER NOT NULL,
        attempt      INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        timeout_ms   INTEGER NOT NULL,
        budget       INTEGER NOT NULL,
        runs         INTEGER NOT NULL DEFAULT 0,
        worker       TEXT,
        submitted_at INTEGER NOT NULL,
        started_at   INTEGER,
        finished_at  INTEGER,
        payload      TEXT NOT NULL,
        result       TEXT,
        error        TEXT
    )",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, id)",
    "CREATE TABLE IF NOT EXISTS idempotency_keys (
        key         TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        job_id      TEXT NOT NULL
    )",
];

/// PostgreSQL, as first (and until versioned migrations, only) shipped (6cbcead).
const POSTGRES_FIRST: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS jobs (
        id           UUID PRIMARY KEY,
        kind         TEXT NOT NULL,
        status       TEXT NOT NULL,
        progress     BIGINT NOT NULL,
        attempt      BIGINT NOT NULL,
        max_attempts BIGINT NOT NULL,
        timeout_ms   BIGINT NOT NULL,
        budget       BIGINT NOT NULL,
        runs         BIGINT NOT NULL DEFAULT 0,
        worker       TEXT,
        submitted_at TIMESTAMPTZ NOT NULL,
        started_at   TIMESTAMPTZ,
        finished_at  TIMESTAMPTZ,
        payload      TEXT NOT NULL,
        result       TEXT,
        error        TEXT
    )",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, id)",
    "CREATE TABLE IF NOT EXISTS idempotency_keys (
        key         TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        job_id      UUID NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS idempotency_keys_by_job ON idempotency_keys (job_id)",
];

// ---- jobs as earlier builds left them ------------------------------------------------------

const T0: OffsetDateTime = datetime!(2026-11-25 10:00:00.123456 UTC);

fn at(s: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(s)
}

/// A row an earlier build wrote, and what today's store must read back.
struct OldJob {
    job: JobRecord,
    payload: Value,
    key: Option<&'static str>,
}

/// Jobs in every state an earlier build recorded. `keys`: whether the schema had keys yet;
/// `unversioned_columns`: whether it had `timeout_ms`, `budget` and `runs` (else the upgrade
/// fills them in: 300 s, `max_attempts`, and `attempt` for a started job).
fn old_jobs(keys: bool, unversioned_columns: bool) -> Vec<OldJob> {
    let base = |kind, status, attempt, max_attempts| JobRecord {
        id: JobId::new(),
        kind,
        status,
        attempt,
        max_attempts,
        timeout_ms: if unversioned_columns { 60_000 } else { 300_000 },
        worker: None,
        submitted_at: at(0),
        started_at: None,
        finished_at: None,
        result: None,
        error: None,
        runs: 0,
        artifacts: Vec::new(),
        owner: None,
        run_at: None,
        // A job from before priorities reads as normal.
        priority: offload_shared::Priority::Normal,
        concurrency_key: None,
        concurrency_limit: None,
        gate: None,
        progress: None,
        heartbeat_at: None,
        lease_until: None,
        inputs: Vec::new(),
    };
    let started = |mut job: JobRecord, runs: u32| {
        job.worker = Some("w1".into());
        job.started_at = Some(at(1));
        job.runs = if unversioned_columns {
            runs
        } else {
            job.attempt
        };
        job
    };
    let mut jobs = vec![
        OldJob {
            job: base(
                JobKind::parse("noop").expect("valid"),
                JobStatus::Queued,
                1,
                5,
            ),
            payload: json!({"n": 1}),
            key: None,
        },
        OldJob {
            job: started(
                base(
                    JobKind::parse("sleep").expect("valid"),
                    JobStatus::Running,
                    2,
                    5,
                ),
                3,
            ),
            payload: json!({"ms": 5}),
            key: None,
        },
        OldJob {
            job: JobRecord {
                finished_at: Some(at(2)),
                result: Some(json!({"ok": [1, "two", null], "nested": {"a": 2.5}})),
                ..started(
                    base(
                        JobKind::parse("noop").expect("valid"),
                        JobStatus::Succeeded,
                        1,
                        3,
                    ),
                    1,
                )
            },
            payload: json!({"hello": "world"}),
            key: None,
        },
        OldJob {
            job: JobRecord {
                finished_at: Some(at(3)),
                error: Some("boom: handler gave up".into()),
                ..started(
                    base(
                        JobKind::parse("noop").expect("valid"),
                        JobStatus::Dead,
                        3,
                        3,
                    ),
                    4,
                )
            },
            payload: json!([]),
            key: None,
        },
        OldJob {
            job: JobRecord {
                error: Some("flaky".into()),
                ..started(
                    base(
                        JobKind::parse("noop").expect("valid"),
                        JobStatus::Retrying,
                        1,
                        4,
                    ),
                    1,
                )
            },
            payload: json!(null),
            key: None,
        },
    ];
    if keys {
        jobs.push(OldJob {
            job: base(
                JobKind::parse("noop").expect("valid"),
                JobStatus::Queued,
                1,
                2,
            ),
            payload: json!({"order": 7}),
            key: Some("order-7"),
        });
    }
    jobs
}

fn micros(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(|t| i64::try_from(t.unix_timestamp_nanos() / 1000).expect("fits"))
}

/// Writes `jobs` into a SQLite database of an earlier schema, the way that build did.
async fn fill_sqlite(pool: &SqlitePool, jobs: &[OldJob], unversioned_columns: bool) {
    for OldJob { job, payload, key } in jobs {
        let sql = if unversioned_columns {
            "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, worker, submitted_at,
                               started_at, finished_at, payload, result, error, timeout_ms, budget, runs)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $6, $15)"
        } else {
            "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, worker, submitted_at,
                               started_at, finished_at, payload, result, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        };
        let mut q = sqlx::query(sql)
            .bind(job.id.to_string())
            .bind(job.kind.as_str())
            .bind(job.status.as_str())
            .bind(job.status.progress(job.attempt))
            .bind(i64::from(job.attempt))
            .bind(i64::from(job.max_attempts))
            .bind(job.worker.clone())
            .bind(micros(Some(job.submitted_at)))
            .bind(micros(job.started_at))
            .bind(micros(job.finished_at))
            .bind(payload.to_string())
            .bind(job.result.as_ref().map(Value::to_string))
            .bind(job.error.clone());
        if unversioned_columns {
            q = q
                .bind(i64::try_from(job.timeout_ms).expect("fits"))
                .bind(i64::from(job.runs));
        }
        q.execute(pool).await.expect("old insert");
        if let Some(key) = key {
            sqlx::query(
                "INSERT INTO idempotency_keys (key, fingerprint, job_id) VALUES ($1, 'fp', $2)",
            )
            .bind(key)
            .bind(job.id.to_string())
            .execute(pool)
            .await
            .expect("old key");
        }
    }
}

/// Writes `jobs` into a PostgreSQL schema of the first shipped schema.
async fn fill_postgres(pool: &PgPool, jobs: &[OldJob]) {
    for OldJob { job, payload, key } in jobs {
        sqlx::query(
            "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, worker, submitted_at,
                               started_at, finished_at, payload, result, error, timeout_ms, budget, runs)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $6, $15)",
        )
        .bind(job.id.as_uuid())
        .bind(job.kind.as_str())
        .bind(job.status.as_str())
        .bind(job.status.progress(job.attempt))
        .bind(i64::from(job.attempt))
        .bind(i64::from(job.max_attempts))
        .bind(job.worker.clone())
        .bind(job.submitted_at)
        .bind(job.started_at)
        .bind(job.finished_at)
        .bind(payload.to_string())
        .bind(job.result.as_ref().map(Value::to_string))
        .bind(job.error.clone())
        .bind(i64::try_from(job.timeout_ms).expect("fits"))
        .bind(i64::from(job.runs))
        .execute(pool)
        .await
        .expect("old insert");
        if let Some(key) = key {
            sqlx::query(
                "INSERT INTO idempotency_keys (key, fingerprint, job_id) VALUES ($1, 'fp', $2)",
            )
            .bind(key)
            .bind(job.id.as_uuid())
            .execute(pool)
            .await
            .expect("old key");
        }
    }
}

// ---- what today's store must do with them ---------------------------------------------------

/// Reads every old job back, then takes new writes of every kind on and beside them.
async fn upgraded_store_keeps_old_jobs_and_takes_new_work(store: &Store, jobs: &[OldJob]) {
    for old in jobs {
        let got = store.get(old.job.id).await.expect("get").expect("kept");
        assert_eq!(got, old.job, "job {:?} read back", old.job.status);
        let input = store.input(old.job.id).await.expect("input").expect("kept");
        assert_eq!(
            (input.payload, input.budget),
            (old.payload.clone(), old.job.max_attempts)
        );
    }
    let listed = store
        .list(&JobFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), jobs.len(), "every old job is listed");

    let of = |status: JobStatus| {
        jobs.iter()
            .find(|j| j.job.status == status)
            .map(|j| j.job.id)
            .expect("an old job in this state")
    };
    let (queued, running, dead) = (
        of(JobStatus::Queued),
        of(JobStatus::Running),
        of(JobStatus::Dead),
    );
    // Events on old jobs; a redrive of the old dead one; new jobs, keyed and pending.
    let mut done = JobEvent::now(running, 2, JobStatus::Succeeded, "w2");
    done.result = Some(json!("late but fine"));
    let fresh = JobId::new();
    let pending_new = JobId::new();
    let now = OffsetDateTime::now_utc();
    let key = |name: &str| IdempotencyKey {
        key: name.into(),
        fingerprint: "fp".into(),
    };
    let written = store
        .apply(&[
            Write::Event(JobEvent::now(queued, 1, JobStatus::Running, "w2")),
            Write::Event(done),
            Write::Redrive {
                id: dead,
                attempt: 4,
                max_attempts: 6,
                resolve_at: now,
            },
            Write::Insert {
                job: JobRecord::queued(fresh, JobKind::parse("noop").expect("valid"), 2, 1000, now),
                payload: json!({"new": true}),
                key: Some(key("fresh-key")),
                resolve_at: None,
                inputs: Vec::new(),
            },
            Write::Insert {
                job: JobRecord {
                    status: JobStatus::Pending,
                    ..JobRecord::queued(
                        pending_new,
                        JobKind::parse("noop").expect("valid"),
                        2,
                        1000,
                        now,
                    )
                },
                payload: json!({}),
                key: None,
                resolve_at: Some(now),
                inputs: Vec::new(),
            },
        ])
        .await
        .expect("new writes");
    assert!(written.iter().all(|w| *w == Written::Done), "{written:?}");
    let status = |id| async move { store.get(id).await.expect("get").expect("kept") };
    assert_eq!(status(queued).await.status, JobStatus::Running);
    let running = status(running).await;
    assert_eq!(
        (running.status, running.result),
        (JobStatus::Succeeded, Some(json!("late but fine")))
    );
    assert_eq!(status(dead).await.status, JobStatus::Pending);
    let mut due: Vec<JobId> = store
        .claim_unresolved(now, Duration::from_secs(30), 10)
        .await
        .expect("claim")
        .iter()
        .map(|u| u.job.id)
        .collect();
    due.sort();
    let mut want = vec![dead, pending_new];
    want.sort();
    assert_eq!(due, want);
    // An old key still names its job.
    if let Some(old) = jobs.iter().find(|j| j.key.is_some()) {
        let again = store
            .apply(&[Write::Insert {
                job: JobRecord::queued(
                    JobId::new(),
                    JobKind::parse("noop").expect("valid"),
                    2,
                    1000,
                    now,
                ),
                payload: json!({}),
                key: Some(key(old.key.expect("key"))),
                resolve_at: None,
                inputs: Vec::new(),
            }])
            .await
            .expect("repeat");
        assert_eq!(
            again,
            vec![Written::KeyTaken {
                job_id: old.job.id,
                fingerprint: "fp".into()
            }]
        );
    }
    // Retention works on old rows: everything finished before now goes.
    let purged = store.purge(now, now, 500).await.expect("purge");
    assert!(purged.jobs >= 1, "{purged:?}");
    assert!(store.get(running.id).await.expect("get").is_none());
}

// ---- SQLite ---------------------------------------------------------------------------------

fn sqlite_path() -> PathBuf {
    std::env::temp_dir().join(format!("offload-upgrade-{}.db", JobId::new()))
}

async fn raw_sqlite(path: &std::path::Path) -> SqlitePool {
    SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("sqlite")
}

async fn sqlite_versions(pool: &SqlitePool) -> Vec<(i64, bool)> {
    sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .expect("migrations table")
}

#[tokio::test]
async fn sqlite_databases_of_every_unversioned_schema_upgrade_and_keep_their_jobs() {
    // (case, statements the old build ran, whether its jobs had keys and the later columns)
    let first_then_later_build: Vec<&str> = std::iter::once(SQLITE_FIRST)
        .chain(SQLITE_LAST_UNVERSIONED)
        .collect();
    let cases: [(&str, Vec<&str>, bool); 3] = [
        ("the first schema (e5270e4)", vec![SQLITE_FIRST], false),
        (
            "the first schema, then started once by a later build (its CREATE IF NOT EXISTS \
             added the keys table but not the columns)",
            first_then_later_build,
            false,
        ),
        (
            "the last unversioned schema (1b40f27 to d36b587)",
            SQLITE_LAST_UNVERSIONED.to_vec(),
            true,
        ),
    ];
    for (case, schema, later) in cases {
        let path = sqlite_path();
        let pool = raw_sqlite(&path).await;
        for statement in schema {
            sqlx::query(statement).execute(&pool).await.expect(case);
        }
        let jobs = old_jobs(later, later);
        fill_sqlite(&pool, &jobs, later).await;

        let store = Store::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let versions = sqlite_versions(&pool).await;
        let all: Vec<(i64, bool)> = migrate::SQLITE.iter().map(|s| (s.version, true)).collect();
        assert_eq!(versions, all, "{case}: every migration recorded");
        upgraded_store_keeps_old_jobs_and_takes_new_work(&store, &jobs).await;
        pool.close().await;
        let _ = std::fs::remove_file(&path);
    }
}

/// Tables, columns (name, type, not null, key) and indexes, whatever order they were made in.
async fn sqlite_shape(pool: &SqlitePool) -> Vec<String> {
    let mut shape: Vec<String> = sqlx::query_scalar(
        "SELECT m.name || '.' || c.name || ' ' || c.type || ' ' || c.\"notnull\" || ' ' || c.pk
         FROM sqlite_master m JOIN pragma_table_info(m.name) c
         WHERE m.type = 'table' AND m.name NOT LIKE '_sqlx%'",
    )
    .fetch_all(pool)
    .await
    .expect("columns");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT 'index ' || name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .expect("indexes");
    shape.extend(indexes);
    shape.sort();
    shape
}

#[tokio::test]
async fn an_upgraded_sqlite_database_has_the_shape_of_a_fresh_one() {
    let (fresh, old) = (sqlite_path(), sqlite_path());
    Store::connect(&format!("sqlite://{}", fresh.display()))
        .await
        .expect("fresh");
    let pool = raw_sqlite(&old).await;
    for statement in SQLITE_LAST_UNVERSIONED {
        sqlx::query(statement).execute(&pool).await.expect("old");
    }
    Store::connect(&format!("sqlite://{}", old.display()))
        .await
        .expect("upgraded");
    let fresh_pool = raw_sqlite(&fresh).await;
    assert_eq!(sqlite_shape(&pool).await, sqlite_shape(&fresh_pool).await);
    for p in [fresh, old] {
        let _ = std::fs::remove_file(p);
    }
}

#[tokio::test]
async fn an_up_to_date_sqlite_database_reopens_unchanged() {
    let path = sqlite_path();
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url).await.expect("fresh");
    let id = JobId::new();
    store
        .apply(&[Write::Insert {
            job: JobRecord::queued(
                id,
                JobKind::parse("noop").expect("valid"),
                1,
                1000,
                OffsetDateTime::now_utc(),
            ),
            payload: json!({"keep": 1}),
            key: None,
            resolve_at: None,
            inputs: Vec::new(),
        }])
        .await
        .expect("insert");
    let pool = raw_sqlite(&path).await;
    let snapshot = |pool: SqlitePool| async move {
        let migrations: Vec<(i64, Vec<u8>, String, bool)> = sqlx::query_as(
            "SELECT version, checksum, CAST(installed_on AS TEXT), success
             FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(&pool)
        .await
        .expect("migrations");
        let schema: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT name, sql FROM sqlite_master ORDER BY name")
                .fetch_all(&pool)
                .await
                .expect("schema");
        (migrations, schema)
    };
    let before = snapshot(pool.clone()).await;
    let reopened = Store::connect(&url).await.expect("reopen");
    assert_eq!(snapshot(pool.clone()).await, before, "nothing changed");
    let job = reopened.get(id).await.expect("get").expect("kept");
    assert_eq!(job.status, JobStatus::Queued);
    pool.close().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_sqlite_schema_that_offload_never_shipped_is_refused_naming_what_is_missing() {
    let path = sqlite_path();
    let pool = raw_sqlite(&path).await;
    sqlx::query(SQLITE_FIRST)
        .execute(&pool)
        .await
        .expect("first");
    sqlx::query("ALTER TABLE jobs ADD COLUMN timeout_ms INTEGER NOT NULL DEFAULT 1")
        .execute(&pool)
        .await
        .expect("half of migration 2");
    let err = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect_err("half a migration");
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::UnrecognisedSchema(_))
            && text.contains("jobs.budget")
            && text.contains("jobs.runs"),
        "{text}"
    );
    pool.close().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_build_is_refused_with_the_way_out() {
    let path = sqlite_path();
    let url = format!("sqlite://{}", path.display());
    Store::connect(&url).await.expect("fresh");
    let pool = raw_sqlite(&path).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99, 'from the future', TRUE, x'00', 0)",
    )
    .execute(&pool)
    .await
    .expect("a newer migration");
    let err = Store::connect(&url).await.expect_err("newer");
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::SchemaTooNew { applied: 99, .. }) && text.contains("backup"),
        "{text}"
    );
    pool.close().await;
    let _ = std::fs::remove_file(&path);
}

// ---- PostgreSQL -----------------------------------------------------------------------------

async fn raw_postgres(schema: &PgSchema) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(&schema.url)
        .await
        .expect("postgres")
}

async fn first_postgres_schema(schema: &PgSchema, jobs: &[OldJob]) -> PgPool {
    let pool = raw_postgres(schema).await;
    for statement in POSTGRES_FIRST {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect("first schema");
    }
    fill_postgres(&pool, jobs).await;
    pool
}

async fn postgres_versions(pool: &PgPool) -> Vec<(i64, bool)> {
    sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .expect("migrations table")
}

#[tokio::test]
async fn a_postgres_database_of_the_first_schema_upgrades_and_keeps_its_jobs() {
    on_postgres(|schema| async move {
        let jobs = old_jobs(true, true);
        let pool = first_postgres_schema(&schema, &jobs).await;
        let store = schema.store().await;
        let all: Vec<(i64, bool)> = migrate::POSTGRES
            .iter()
            .map(|s| (s.version, true))
            .collect();
        assert_eq!(postgres_versions(&pool).await, all);
        upgraded_store_keeps_old_jobs_and_takes_new_work(&store, &jobs).await;
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn postgres_replicas_starting_together_on_an_unversioned_database_baseline_it_once() {
    on_postgres(|schema| async move {
        let jobs = old_jobs(true, true);
        let pool = first_postgres_schema(&schema, &jobs).await;
        let connects = (0..6).map(|_| Store::connect(&schema.url));
        let stores: Vec<Store> = futures_util::future::join_all(connects)
            .await
            .into_iter()
            .map(|s| s.expect("every replica starts"))
            .collect();
        let all: Vec<(i64, bool)> = migrate::POSTGRES
            .iter()
            .map(|s| (s.version, true))
            .collect();
        assert_eq!(postgres_versions(&pool).await, all, "each migration once");
        for old in &jobs {
            let got = stores[5].get(old.job.id).await.expect("get").expect("kept");
            assert_eq!(got, old.job);
        }
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn postgres_replicas_starting_together_on_a_fresh_schema_migrate_it_once() {
    on_postgres(|schema| async move {
        let connects = (0..8).map(|_| Store::connect(&schema.url));
        for outcome in futures_util::future::join_all(connects).await {
            outcome.expect("every replica starts");
        }
        let pool = raw_postgres(&schema).await;
        let all: Vec<(i64, bool)> = migrate::POSTGRES
            .iter()
            .map(|s| (s.version, true))
            .collect();
        assert_eq!(postgres_versions(&pool).await, all);
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn an_up_to_date_postgres_database_reopens_unchanged() {
    on_postgres(|schema| async move {
        let store = schema.store().await;
        let id = JobId::new();
        store
            .apply(&[Write::Insert {
                job: JobRecord::queued(id, JobKind::parse("noop").expect("valid"), 1, 1000, OffsetDateTime::now_utc()),
                payload: json!({"keep": 1}),
                key: None,
                resolve_at: None,
                inputs: Vec::new(),
            }])
            .await
            .expect("insert");
        let pool = raw_postgres(&schema).await;
        let snapshot = |pool: PgPool| async move {
            let migrations: Vec<(i64, Vec<u8>, OffsetDateTime, bool)> = sqlx::query_as(
                "SELECT version, checksum, installed_on, success FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&pool)
            .await
            .expect("migrations");
            let columns: Vec<String> = sqlx::query_scalar(
                "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
                 FROM information_schema.columns WHERE table_schema = current_schema()
                 ORDER BY table_name, column_name",
            )
            .fetch_all(&pool)
            .await
            .expect("columns");
            let indexes: Vec<String> = sqlx::query_scalar(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname",
            )
            .fetch_all(&pool)
            .await
            .expect("indexes");
            (migrations, columns, indexes)
        };
        let before = snapshot(pool.clone()).await;
        let reopened = schema.store().await;
        assert_eq!(snapshot(pool.clone()).await, before, "nothing changed");
        assert!(reopened.get(id).await.expect("get").is_some());
        pool.close().await;
    })
    .await;
}
