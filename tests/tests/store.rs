//! The job store through the front door, on SQLite and PostgreSQL: today's API started on a
//! database of the first schema this project shipped keeps and serves its jobs and runs new
//! ones; retention deletes finished jobs (their ids answer 404) and frees their keys; job
//! listings carry no results.

use std::time::Duration;

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll, postgres::PgSchema, timestamp};
use serde_json::{Value, json};
use sqlx::{PgPool, SqlitePool};
use time::{OffsetDateTime, macros::datetime};

const DONE_WITHIN: Duration = Duration::from_secs(20);

/// SQLite's first schema (e5270e4): migration 1 is that schema, statement for statement (the
/// store's upgrade tests build it from a copy of their own, and check that a database upgraded
/// from it ends like a fresh one).
const SQLITE_FIRST: &str = include_str!("../../crates/api/migrations/sqlite/0001_jobs.sql");

/// PostgreSQL's first schema (6cbcead), likewise.
const POSTGRES_FIRST: &str = include_str!("../../crates/api/migrations/postgres/0001_jobs.sql");

const T0: OffsetDateTime = datetime!(2026-11-25 10:00:00.250 UTC);

/// A job an early build recorded: (id, status, attempt, started, result, error). Progress is
/// `attempt * 4 + rank` as it has always been.
struct Old {
    id: uuid::Uuid,
    status: &'static str,
    rank: i64,
    attempt: i64,
    result: Option<Value>,
    error: Option<&'static str>,
}

fn old_jobs() -> [Old; 3] {
    [
        Old {
            id: uuid::Uuid::now_v7(),
            status: "queued",
            rank: 0,
            attempt: 1,
            result: None,
            error: None,
        },
        Old {
            id: uuid::Uuid::now_v7(),
            status: "succeeded",
            rank: 3,
            attempt: 1,
            result: Some(json!({"kept": ["since", 2026]})),
            error: None,
        },
        Old {
            id: uuid::Uuid::now_v7(),
            status: "dead",
            rank: 3,
            attempt: 2,
            result: None,
            error: Some("boom"),
        },
    ]
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).expect("fits")
}

async fn first_sqlite_database(env: &TestEnv, jobs: &[Old]) {
    let pool = SqlitePool::connect(&format!("sqlite://{}?mode=rwc", env.database.display()))
        .await
        .expect("sqlite");
    sqlx::raw_sql(SQLITE_FIRST)
        .execute(&pool)
        .await
        .expect("first schema");
    for job in jobs {
        let started = (job.status != "queued").then(|| micros(T0 + time::Duration::seconds(1)));
        let finished = (job.rank == 3).then(|| micros(T0 + time::Duration::seconds(2)));
        sqlx::query(
            "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, worker, submitted_at,
                               started_at, finished_at, payload, result, error)
             VALUES ($1, 'noop', $2, $3, $4, 2, $5, $6, $7, $8, '{\"old\":true}', $9, $10)",
        )
        .bind(job.id.to_string())
        .bind(job.status)
        .bind(job.attempt * 4 + job.rank)
        .bind(job.attempt)
        .bind(started.map(|_| "w-old"))
        .bind(micros(T0))
        .bind(started)
        .bind(finished)
        .bind(job.result.as_ref().map(Value::to_string))
        .bind(job.error)
        .execute(&pool)
        .await
        .expect("old job");
    }
    pool.close().await;
}

async fn first_postgres_schema(schema: &PgSchema, jobs: &[Old], key: &str) {
    let pool = PgPool::connect(&schema.url).await.expect("postgres");
    sqlx::raw_sql(POSTGRES_FIRST)
        .execute(&pool)
        .await
        .expect("first schema");
    for job in jobs {
        let started = (job.status != "queued").then(|| T0 + time::Duration::seconds(1));
        let finished = (job.rank == 3).then(|| T0 + time::Duration::seconds(2));
        sqlx::query(
            "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, timeout_ms, budget,
                               runs, worker, submitted_at, started_at, finished_at, payload, result, error)
             VALUES ($1, 'noop', $2, $3, $4, 2, 300000, 2, $4, $5, $6, $7, $8, '{\"old\":true}', $9, $10)",
        )
        .bind(job.id)
        .bind(job.status)
        .bind(job.attempt * 4 + job.rank)
        .bind(job.attempt)
        .bind(started.map(|_| "w-old"))
        .bind(T0)
        .bind(started)
        .bind(finished)
        .bind(job.result.as_ref().map(Value::to_string))
        .bind(job.error)
        .execute(&pool)
        .await
        .expect("old job");
    }
    sqlx::query("INSERT INTO idempotency_keys (key, fingerprint, job_id) VALUES ($1, 'fp', $2)")
        .bind(key)
        .bind(jobs[0].id)
        .execute(&pool)
        .await
        .expect("old key");
    pool.close().await;
}

/// Today's API on the old database: every old job reads back, listings are summaries, the old
/// dead job can be retried and runs, new jobs run.
async fn serves_the_old_jobs_and_runs_new_ones(
    env: &TestEnv,
    extra: &[(&str, &str)],
    jobs: &[Old],
) {
    let api = ApiProcess::start(env, extra).await;
    let _worker = WorkerProcess::start(env, "w1", 1, &[]).await;
    for old in jobs {
        let job = api.job(&old.id.to_string()).await;
        assert_eq!(job["status"], old.status, "{job}");
        assert_eq!(job["attempt"], old.attempt, "{job}");
        assert_eq!(
            job["result"],
            old.result.clone().unwrap_or(Value::Null),
            "{job}"
        );
        assert_eq!(job["error"], json!(old.error), "{job}");
        assert_eq!(job["timeout_ms"], 300_000, "{job}");
        assert_eq!(timestamp(&job, "submitted_at"), T0, "{job}");
    }
    // A listing: a summary per job, no result.
    let page: Value = api
        .http
        .get(api.url("/jobs?limit=10"))
        .send()
        .await
        .expect("GET /jobs")
        .json()
        .await
        .expect("page");
    let listed = page["jobs"].as_array().expect("jobs");
    assert_eq!(listed.len(), jobs.len(), "{page}");
    let succeeded = listed
        .iter()
        .find(|j| j["status"] == "succeeded")
        .expect("listed");
    assert_eq!(succeeded["has_result"], true, "{succeeded}");
    assert!(
        succeeded.get("result").is_none(),
        "no result in a listing: {succeeded}"
    );

    // The old dead job is retried (attempt 3 of 2 + 2 more) and runs to its end.
    let dead = jobs.iter().find(|j| j.status == "dead").expect("dead").id;
    let retried = api
        .http
        .post(api.url(&format!("/jobs/{dead}/retry")))
        .send()
        .await
        .expect("retry");
    assert_eq!(retried.status(), 202);
    let done = api
        .wait_for_status(&dead.to_string(), "succeeded", DONE_WITHIN)
        .await;
    assert_eq!(
        (&done["attempt"], &done["result"]),
        (&json!(3), &json!({"old": true})),
        "{done}"
    );
    let fresh = api
        .submit(json!({"kind": "noop", "payload": {"new": 1}}))
        .await;
    let id = fresh["id"].as_str().expect("id");
    let done = api.wait_for_status(id, "succeeded", DONE_WITHIN).await;
    assert_eq!(done["result"], json!({"new": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todays_api_on_the_first_sqlite_schema_serves_its_jobs_and_runs_new_ones() {
    let env = TestEnv::new().await;
    let jobs = old_jobs();
    first_sqlite_database(&env, &jobs).await;
    serves_the_old_jobs_and_runs_new_ones(&env, &[], &jobs).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn todays_api_on_the_first_postgres_schema_serves_its_jobs_and_keys_and_runs_new_ones() {
    let env = TestEnv::new().await;
    let schema = PgSchema::create().await;
    let jobs = old_jobs();
    first_postgres_schema(&schema, &jobs, "order-7").await;
    let vars = [("OFFLOAD_DATABASE_URL", schema.url.as_str())];
    serves_the_old_jobs_and_runs_new_ones(&env, &vars, &jobs).await;
    // The old key still belongs to its job (another request with it is refused, naming it).
    // Keys from before API keys have no owner: they are the keys of OFFLOAD_AUTH=off, the way
    // that build ran (under an API key, the same text is that key's own, another job).
    let api = ApiProcess::start(&env, &[vars[0], ("OFFLOAD_AUTH", "off")]).await;
    let reused = api
        .http
        .post(api.url("/jobs"))
        .header("idempotency-key", "order-7")
        .json(&json!({"kind": "noop"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(reused.status(), 422);
    let text = reused.text().await.expect("body");
    assert!(text.contains(&jobs[0].id.to_string()), "{text}");
    schema.remove().await;
    env.cleanup().await;
}

/// A finished job is deleted a second after it finished (its id then answers 404, counted in
/// /metrics), and its idempotency key goes with it.
async fn finished_jobs_go_after_the_retention_period(env: &TestEnv, database: &[(&str, &str)]) {
    let mut vars = vec![
        ("OFFLOAD_RETENTION_S", "1"),
        ("OFFLOAD_RETENTION_INTERVAL_MS", "100"),
    ];
    vars.extend_from_slice(database);
    let api = ApiProcess::start(env, &vars).await;
    let _worker = WorkerProcess::start(env, "w1", 1, &[]).await;
    let post = || {
        api.http
            .post(api.url("/jobs"))
            .header("idempotency-key", "nightly-report")
            .json(&json!({"kind": "noop", "payload": {"n": 1}}))
            .send()
    };
    let first = post().await.expect("POST");
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("job");
    let id = first["id"].as_str().expect("id").to_owned();
    api.wait_for_status(&id, "succeeded", DONE_WITHIN).await;

    poll(
        Duration::from_secs(10),
        "the finished job to be deleted",
        || async {
            let status = api
                .http
                .get(api.url(&format!("/jobs/{id}")))
                .send()
                .await
                .expect("GET")
                .status();
            (status == 404).then_some(())
        },
    )
    .await;
    let metrics = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    let counter = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert!(counter("offload_retention_deleted_jobs_total") >= 1.0);
    assert!(counter("offload_retention_deleted_keys_total") >= 1.0);
    // The key went with its job: the same request is a new job.
    let again = post().await.expect("POST");
    assert_eq!(again.status(), 202, "a new job, not a repeat");
    let again: Value = again.json().await.expect("job");
    assert_ne!(again["id"], first["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_finished_jobs_go_after_the_retention_period() {
    let env = TestEnv::new().await;
    finished_jobs_go_after_the_retention_period(&env, &[]).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_finished_jobs_go_after_the_retention_period() {
    let env = TestEnv::new().await;
    let schema = PgSchema::create().await;
    finished_jobs_go_after_the_retention_period(
        &env,
        &[("OFFLOAD_DATABASE_URL", schema.url.as_str())],
    )
    .await;
    schema.remove().await;
    env.cleanup().await;
}
