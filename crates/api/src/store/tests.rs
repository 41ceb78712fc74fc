//! Store tests, run against both backends: every behaviour test runs once on a fresh SQLite file
//! and once on a fresh PostgreSQL schema; the PostgreSQL-only tests cover what several API
//! replicas sharing one database need.

use std::future::Future;

use serde_json::json;
use sqlx::{PgPool, postgres::PgPoolOptions};
use time::{OffsetDateTime, macros::datetime};

use offload_shared::{JobEvent, JobId, JobKind, JobStatus};

use super::*;

/// Generates `sqlite::<test>` and `postgres::<test>` for each shared test `async fn(Store)`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::sqlite_store().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::on_postgres(|schema| async move {
                        super::$test(schema.store().await).await;
                    })
                    .await;
                }
            )*
        }
    };
}

on_both_backends!(
    events_only_move_jobs_forward_and_count_runs,
    unknown_ids_and_deleted_jobs_are_absent,
    an_idempotency_key_belongs_to_its_first_job_until_that_job_is_deleted,
    listing_filters_and_pages_newest_first,
    only_dead_jobs_are_redriven,
    a_failed_redrive_publish_marks_the_job_dead,
    an_end_with_its_start_folded_in_counts_the_run_and_its_start,
    a_large_batch_of_inserts_with_a_keyed_one_inside_stores_every_job,
);

// ---- harness -------------------------------------------------------------------------------

async fn sqlite_store() -> Store {
    let path = std::env::temp_dir().join(format!("offload-unit-{}.db", JobId::new()));
    Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("sqlite store")
}

/// The PostgreSQL server the tests use: `OFFLOAD_TEST_DATABASE_URL`, else the local default.
fn pg_url() -> String {
    std::env::var("OFFLOAD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema of its own for one test, so tests run in parallel without seeing each other.
#[derive(Clone)]
struct PgSchema {
    admin: PgPool,
    name: String,
    /// The store URL: the test database with this schema as its `search_path`.
    url: String,
}

impl PgSchema {
    /// Creates a fresh schema; fails the test with the fix if PostgreSQL is not answering.
    async fn create() -> Self {
        let base = pg_url();
        let connect = PgPoolOptions::new().max_connections(1).connect(&base);
        let shown = redact_url(&base);
        let fix = "Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                   (or run scripts/test.sh, which starts it), or point OFFLOAD_TEST_DATABASE_URL at a server.";
        let admin = match tokio::time::timeout(std::time::Duration::from_secs(5), connect).await {
            Ok(Ok(pool)) => pool,
            Ok(Err(e)) => panic!("PostgreSQL is not answering at {shown}: {e}. {fix}"),
            Err(_) => panic!("PostgreSQL at {shown} did not answer within 5 s. {fix}"),
        };
        let name = format!("offload_unit_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        PgSchema { admin, name, url }
    }

    /// A store on this schema (each call is a separate pool, like another API replica).
    async fn store(&self) -> Store {
        Store::connect(&self.url).await.expect("postgres store")
    }

    async fn drop_schema(&self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&self.admin)
            .await
        {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
        self.admin.close().await;
    }
}

/// Runs `test` on a fresh schema and drops the schema afterwards, also when the test fails.
async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(PgSchema) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let schema = PgSchema::create().await;
    let outcome = tokio::spawn(test(schema.clone())).await;
    schema.drop_schema().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

fn queued(id: JobId) -> JobRecord {
    JobRecord::queued(id, JobKind::Noop, 5, 1000, OffsetDateTime::now_utc())
}

fn event(id: JobId, attempt: u32, status: JobStatus, at: OffsetDateTime) -> JobEvent {
    let mut ev = JobEvent::now(id, attempt, status, "w1");
    ev.at = at;
    ev
}

// ---- behaviour, on both backends -----------------------------------------------------------

async fn events_only_move_jobs_forward_and_count_runs(store: Store) {
    let id = JobId::new();
    store
        .apply(&[insert(queued(id), json!({}), None)])
        .await
        .expect("insert");

    let running = JobEvent::now(id, 1, JobStatus::Running, "w1");
    let mut done = JobEvent::now(id, 1, JobStatus::Succeeded, "w2");
    done.result = Some(json!({"ok": 1}));
    // Succeeded arrives, then a late and a duplicate `running`: the job stays succeeded.
    store
        .apply(&[Write::Event(done.clone()), Write::Event(running.clone())])
        .await
        .expect("events");
    store
        .apply(&[Write::Event(running), Write::Event(done)])
        .await
        .expect("again");

    let got = store.get(id).await.expect("get").expect("exists");
    assert_eq!(got.status, JobStatus::Succeeded);
    assert_eq!(got.worker.as_deref(), Some("w2"));
    assert_eq!(got.result, Some(json!({"ok": 1})));
    assert_eq!(got.runs, 2);
    assert!(got.started_at.is_some() && got.finished_at.is_some());
}

async fn an_end_with_its_start_folded_in_counts_the_run_and_its_start(store: Store) {
    let id = JobId::new();
    store
        .apply(&[insert(queued(id), json!({}), None)])
        .await
        .expect("insert");
    let t0 = OffsetDateTime::now_utc().replace_nanosecond(0).expect("ns");
    let running = event(id, 1, JobStatus::Running, t0);
    let mut done = event(
        id,
        1,
        JobStatus::Succeeded,
        t0 + time::Duration::milliseconds(40),
    );
    assert!(done.fold_start(&running));
    store
        .apply(&[Write::Event(done)])
        .await
        .expect("folded event");
    let got = store.get(id).await.expect("get").expect("exists");
    assert_eq!(got.status, JobStatus::Succeeded);
    assert_eq!(got.runs, 1, "the folded start is one run");
    assert_eq!(
        got.started_at,
        Some(t0),
        "the start is the folded running's time"
    );
    assert_eq!(got.finished_at, Some(t0 + time::Duration::milliseconds(40)));
}

async fn a_large_batch_of_inserts_with_a_keyed_one_inside_stores_every_job(store: Store) {
    // 300 plain inserts cross every multi-row size; a keyed insert splits them in two runs.
    let ids: Vec<JobId> = (0..301).map(|_| JobId::new()).collect();
    let mut writes: Vec<Write> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut job = queued(*id);
            job.max_attempts = u32::try_from(i % 7 + 1).expect("small");
            insert(job, json!({ "n": i }), None)
        })
        .collect();
    let key = IdempotencyKey {
        key: "k".into(),
        fingerprint: "f".into(),
    };
    if let Write::Insert { key: k, .. } = &mut writes[100] {
        *k = Some(key.clone());
    }
    let written = store.apply(&writes).await.expect("batch");
    assert_eq!(written.len(), 301);
    assert!(written.iter().all(|w| *w == Written::Done), "{written:?}");
    for (i, id) in ids.iter().enumerate() {
        let job = store.get(*id).await.expect("get").expect("stored");
        assert_eq!(job.status, JobStatus::Queued, "job {i}");
        assert_eq!(job.max_attempts, u32::try_from(i % 7 + 1).expect("small"));
        let input = store.input(*id).await.expect("input").expect("stored");
        assert_eq!(input.payload, json!({ "n": i }), "job {i}");
    }
    // The keyed insert claimed its key: a second job with it gets the first one's id back.
    let again = store
        .apply(&[insert(queued(JobId::new()), json!({}), Some(key))])
        .await
        .expect("repeat");
    assert!(
        matches!(&again[0], Written::KeyTaken { job_id, .. } if *job_id == ids[100]),
        "{again:?}"
    );
}

async fn unknown_ids_and_deleted_jobs_are_absent(store: Store) {
    assert!(store.get(JobId::new()).await.expect("get").is_none());
    assert!(store.input(JobId::new()).await.expect("input").is_none());
    let id = JobId::new();
    store
        .apply(&[insert(queued(id), json!({}), None), Write::Delete(id)])
        .await
        .expect("apply");
    assert!(store.get(id).await.expect("get").is_none());
}

async fn an_idempotency_key_belongs_to_its_first_job_until_that_job_is_deleted(store: Store) {
    let key = IdempotencyKey {
        key: "k1".into(),
        fingerprint: "f1".into(),
    };
    let (a, b) = (JobId::new(), JobId::new());
    let results = store
        .apply(&[
            insert(queued(a), json!({}), Some(key.clone())),
            insert(queued(b), json!({}), Some(key.clone())),
        ])
        .await
        .expect("apply");
    assert_eq!(results[0], Written::Done);
    assert_eq!(
        results[1],
        Written::KeyTaken {
            job_id: a,
            fingerprint: "f1".into()
        }
    );
    assert!(
        store.get(b).await.expect("get").is_none(),
        "the second job was not recorded"
    );
    // A failed publish deletes the job and frees its key for the client's retry.
    store.apply(&[Write::Delete(a)]).await.expect("delete");
    let results = store
        .apply(&[insert(queued(b), json!({}), Some(key))])
        .await
        .expect("apply");
    assert_eq!(results[0], Written::Done);
}

async fn listing_filters_and_pages_newest_first(store: Store) {
    let ids: Vec<JobId> = (0..5).map(|_| JobId::new()).collect();
    let inserts: Vec<Write> = ids
        .iter()
        .map(|id| insert(queued(*id), json!({}), None))
        .collect();
    store.apply(&inserts).await.expect("insert");
    let mut dead = JobEvent::now(ids[1], 1, JobStatus::Dead, "w");
    dead.error = Some("boom".into());
    store.apply(&[Write::Event(dead)]).await.expect("dead");

    let page = store
        .list(&JobFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        page.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    let next = store
        .list(&JobFilter {
            limit: 10,
            before: Some(ids[3]),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(next.len(), 3);
    let dead = store
        .list(&JobFilter {
            limit: 10,
            status: Some(JobStatus::Dead),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(dead.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[1]]);
    let sleeps = store
        .list(&JobFilter {
            limit: 10,
            kind: Some(JobKind::Sleep),
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(sleeps.is_empty(), "no job of kind sleep: {sleeps:?}");
}

async fn only_dead_jobs_are_redriven(store: Store) {
    let id = JobId::new();
    store
        .apply(&[insert(queued(id), json!({"a": 1}), None)])
        .await
        .expect("insert");
    let redrive = Write::Redrive {
        id,
        attempt: 2,
        max_attempts: 6,
        resolve_at: OffsetDateTime::now_utc(),
    };
    assert_eq!(
        store
            .apply(std::slice::from_ref(&redrive))
            .await
            .expect("apply"),
        vec![Written::Nothing]
    );
    store
        .apply(&[Write::Event(JobEvent::now(id, 1, JobStatus::Dead, "w"))])
        .await
        .expect("dead");
    assert_eq!(
        store.apply(&[redrive]).await.expect("apply"),
        vec![Written::Done]
    );
    let job = store.get(id).await.expect("get").expect("exists");
    assert_eq!(
        (job.status, job.attempt, job.max_attempts),
        (JobStatus::Pending, 2, 6)
    );
    let input = store.input(id).await.expect("input").expect("exists");
    assert_eq!((input.payload, input.budget), (json!({"a": 1}), 5));
    // A late event of the dead attempt does not undo the redrive.
    store
        .apply(&[Write::Event(JobEvent::now(id, 1, JobStatus::Dead, "w"))])
        .await
        .expect("late");
    assert_eq!(
        store.get(id).await.expect("get").expect("exists").status,
        JobStatus::Pending
    );
}

async fn a_failed_redrive_publish_marks_the_job_dead(store: Store) {
    let id = JobId::new();
    store
        .apply(&[
            insert(queued(id), json!({}), None),
            Write::MarkDead {
                id,
                attempt: 2,
                error: "publish failed".into(),
            },
        ])
        .await
        .expect("apply");
    let job = store.get(id).await.expect("get").expect("exists");
    assert_eq!(
        (job.status, job.attempt, job.error.as_deref()),
        (JobStatus::Dead, 2, Some("publish failed"))
    );
    assert!(job.finished_at.is_some());
    // A late `running` of the attempt it was marked dead at does not bring it back.
    store
        .apply(&[Write::Event(JobEvent::now(id, 2, JobStatus::Running, "w"))])
        .await
        .expect("late");
    assert_eq!(
        store.get(id).await.expect("get").expect("exists").status,
        JobStatus::Dead
    );
}

// ---- the two backends side by side ---------------------------------------------------------

/// One history with every kind of write, timestamps fixed (with nanoseconds, which both stores
/// cut to microseconds), applied batch by batch; returns each batch's results.
async fn history(store: &Store, ids: &[JobId; 5]) -> Vec<Vec<Written>> {
    let [a, b, c, d, e] = *ids;
    let t0 = datetime!(2025-03-04 05:06:07.123456789 UTC);
    let at = |s: i64| t0 + time::Duration::seconds(s);
    let job = |id: JobId, kind: JobKind| JobRecord::queued(id, kind, 3, 30_000, t0);
    let key = IdempotencyKey {
        key: "same-key".into(),
        fingerprint: "fp".into(),
    };
    let mut done = event(a, 1, JobStatus::Succeeded, at(2));
    done.result = Some(json!({"z": [1, 2.5, "x"], "a": {"nested": null}}));
    let mut retrying = event(b, 1, JobStatus::Retrying, at(3));
    retrying.error = Some("flaky".into());
    let mut dead = event(b, 2, JobStatus::Dead, at(5));
    dead.error = Some("boom".into());
    let batches = vec![
        vec![
            insert(job(a, JobKind::Noop), json!({"n": 1}), Some(key.clone())),
            insert(job(b, JobKind::Sleep), json!({"ms": 5}), None),
            insert(job(c, JobKind::Noop), json!([]), None),
            insert(job(d, JobKind::Noop), json!(null), None),
        ],
        vec![
            Write::Event(event(a, 1, JobStatus::Running, at(1))),
            Write::Event(done),
            Write::Event(event(a, 1, JobStatus::Running, at(3))),
            insert(job(e, JobKind::Noop), json!({}), Some(key)),
            Write::Delete(d),
        ],
        vec![
            Write::Event(event(b, 1, JobStatus::Running, at(2))),
            Write::Event(retrying),
            Write::Event(event(b, 2, JobStatus::Running, at(4))),
            Write::Event(dead.clone()),
            Write::Redrive {
                id: b,
                attempt: 3,
                max_attempts: 6,
                resolve_at: OffsetDateTime::now_utc(),
            },
            Write::Event(dead),
            Write::Redrive {
                id: c,
                attempt: 2,
                max_attempts: 6,
                resolve_at: OffsetDateTime::now_utc(),
            },
        ],
    ];
    let mut results = Vec::new();
    for batch in batches {
        results.push(store.apply(&batch).await.expect("apply"));
    }
    results
}

#[tokio::test]
async fn both_backends_answer_the_same_json_for_the_same_writes() {
    on_postgres(|schema| async move {
        let (sqlite, postgres) = (sqlite_store().await, schema.store().await);
        let ids = [(); 5].map(|()| JobId::new());
        assert_eq!(history(&sqlite, &ids).await, history(&postgres, &ids).await);

        for id in ids {
            let (s, p) = (sqlite.get(id).await, postgres.get(id).await);
            let (s, p) = (s.expect("sqlite get"), p.expect("postgres get"));
            assert_eq!(
                serde_json::to_value(&s).expect("json"),
                serde_json::to_value(&p).expect("json"),
                "GET /jobs/{id} differs"
            );
            assert_eq!(
                sqlite.input(id).await.expect("sqlite input"),
                postgres.input(id).await.expect("postgres input"),
            );
        }
        let filters = [
            JobFilter {
                limit: 10,
                ..Default::default()
            },
            JobFilter {
                limit: 1,
                before: Some(ids[2]),
                ..Default::default()
            },
            JobFilter {
                limit: 10,
                status: Some(JobStatus::Queued),
                kind: Some(JobKind::Sleep),
                ..Default::default()
            },
        ];
        for filter in filters {
            let s = sqlite.list(&filter).await.expect("sqlite list");
            let p = postgres.list(&filter).await.expect("postgres list");
            assert_eq!(
                serde_json::to_value(&s).expect("json"),
                serde_json::to_value(&p).expect("json"),
                "list {filter:?} differs"
            );
        }
        let a = sqlite.get(ids[0]).await.expect("get").expect("a exists");
        assert_eq!(a.started_at.map(|t| t.nanosecond()), Some(123_456_000));
    })
    .await;
}

// ---- several replicas on one PostgreSQL ----------------------------------------------------

#[tokio::test]
async fn postgres_replicas_starting_together_all_create_the_schema() {
    on_postgres(|schema| async move {
        let connects = (0..4).map(|_| Store::connect(&schema.url));
        for outcome in futures_util::future::join_all(connects).await {
            outcome.expect("every replica starts");
        }
    })
    .await;
}

#[tokio::test]
async fn postgres_replicas_writing_the_same_jobs_neither_deadlock_nor_lose_updates() {
    on_postgres(|schema| async move {
        let (one, two) = (schema.store().await, schema.store().await);
        let ids: Vec<JobId> = (0..40).map(|_| JobId::new()).collect();
        let inserts: Vec<Write> = ids
            .iter()
            .map(|id| insert(queued(*id), json!({}), None))
            .collect();
        one.apply(&inserts).await.expect("insert");

        // Each replica applies the same jobs' events in opposite orders, round after round:
        // without ordered row locks these batches deadlock.
        const ROUNDS: usize = 15;
        let replica = |store: Store, reversed: bool| {
            let mut order = ids.clone();
            if reversed {
                order.reverse();
            }
            async move {
                for round in 0..ROUNDS {
                    let status = if round + 1 == ROUNDS {
                        JobStatus::Succeeded
                    } else {
                        JobStatus::Running
                    };
                    let batch: Vec<Write> = order
                        .iter()
                        .flat_map(|id| {
                            [
                                Write::Event(JobEvent::now(*id, 1, JobStatus::Running, "w")),
                                Write::Event(JobEvent::now(*id, 1, status, "w")),
                            ]
                        })
                        .collect();
                    store.apply(&batch).await.expect("batch commits");
                }
            }
        };
        tokio::join!(replica(one.clone(), false), replica(two, true));

        for id in ids {
            let job = one.get(id).await.expect("get").expect("exists");
            // Every `running` counted: 2 per batch, 1 in the last round, from both replicas.
            let expected = u32::try_from(2 * (2 * ROUNDS - 1)).expect("small");
            assert_eq!(
                (job.status, job.runs),
                (JobStatus::Succeeded, expected),
                "job {id}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn postgres_an_idempotency_key_raced_by_two_replicas_goes_to_one_job() {
    on_postgres(|schema| async move {
        let (one, two) = (schema.store().await, schema.store().await);
        for n in 0..20 {
            let key = IdempotencyKey {
                key: format!("race-{n}"),
                fingerprint: "fp".into(),
            };
            let (a, b) = (JobId::new(), JobId::new());
            let wa = [insert(queued(a), json!({}), Some(key.clone()))];
            let wb = [insert(queued(b), json!({}), Some(key))];
            let (ra, rb) = tokio::join!(one.apply(&wa), two.apply(&wb));
            let (ra, rb) = (ra.expect("one"), rb.expect("two"));
            let taken = |by: JobId| {
                vec![Written::KeyTaken {
                    job_id: by,
                    fingerprint: "fp".into(),
                }]
            };
            assert!(
                (ra == vec![Written::Done] && rb == taken(a))
                    || (rb == vec![Written::Done] && ra == taken(b)),
                "key race-{n}: {ra:?} / {rb:?}"
            );
            let stored = [one.get(a).await, one.get(b).await].map(|r| r.expect("get").is_some());
            assert_eq!(stored.iter().filter(|s| **s).count(), 1, "one job recorded");
        }
    })
    .await;
}

#[tokio::test]
async fn postgres_a_nul_in_an_error_does_not_fail_the_batch() {
    on_postgres(|schema| async move {
        let store = schema.store().await;
        let id = JobId::new();
        let mut dead = JobEvent::now(id, 1, JobStatus::Dead, "w\0x");
        dead.error = Some("bad\0byte".into());
        store
            .apply(&[
                insert(queued(id), json!({"s": "\u{0}"}), None),
                Write::Event(dead),
            ])
            .await
            .expect("apply");
        let job = store.get(id).await.expect("get").expect("exists");
        assert_eq!(job.error.as_deref(), Some("bad\u{FFFD}byte"));
        let input = store.input(id).await.expect("input").expect("exists");
        assert_eq!(input.payload, json!({"s": "\u{0}"}), "payload round-trips");
    })
    .await;
}

#[tokio::test]
async fn postgres_a_missing_schema_is_named_with_the_fix() {
    let url = format!(
        "{}?options=-c%20search_path%3Doffload_missing_{}",
        pg_url(),
        uuid::Uuid::now_v7().simple()
    );
    // Fail with the start-PostgreSQL hint first if the server is down.
    PgSchema::create().await.drop_schema().await;
    let err = Store::connect(&url).await.expect_err("no schema");
    let text = err.to_string();
    assert!(
        matches!(err, StoreError::NoSchema(_)) && text.contains("CREATE SCHEMA"),
        "{text}"
    );
}

#[tokio::test]
async fn unsupported_urls_are_refused_naming_both_accepted_forms() {
    let err = Store::connect("mysql://app:secret@db/offload")
        .await
        .expect_err("unsupported");
    let text = err.to_string();
    assert!(
        text.contains("sqlite://") && text.contains("postgres://"),
        "{text}"
    );
    assert!(!text.contains("secret"), "the password is hidden: {text}");
}

#[test]
fn passwords_are_redacted_from_database_urls() {
    for (url, shown) in [
        (
            "postgres://app:s3cr%40t@db:5432/offload?sslmode=require",
            "postgres://app:***@db:5432/offload?sslmode=require",
        ),
        ("postgres://app@db/offload", "postgres://app@db/offload"),
        ("sqlite://data/a@b.db", "sqlite://data/a@b.db"),
        ("postgresql://u:p@h/d?x=a@b", "postgresql://u:***@h/d?x=a@b"),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

fn insert(job: JobRecord, payload: serde_json::Value, key: Option<IdempotencyKey>) -> Write {
    Write::Insert {
        job,
        payload,
        key,
        resolve_at: None,
    }
}
