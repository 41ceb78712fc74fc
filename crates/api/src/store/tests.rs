//! Store tests, run against both backends: every behaviour test runs once on a fresh SQLite file
//! and once on a fresh PostgreSQL schema; the PostgreSQL-only tests cover what several API
//! replicas sharing one database need.

use std::{future::Future, time::Duration};

use serde_json::{Value, json};
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
    held_jobs_are_released_under_their_key_and_kind_limits_oldest_first,
    progress_shows_while_its_attempt_runs_and_the_next_start_clears_it,
    a_scheduled_job_waits_for_its_time_then_is_claimed_once_and_confirmed_queued,
    events_only_move_jobs_forward_and_count_runs,
    unknown_ids_and_deleted_jobs_are_absent,
    an_idempotency_key_belongs_to_its_first_job_until_that_job_is_deleted,
    listing_filters_and_pages_newest_first,
    only_dead_jobs_are_redriven,
    a_failed_redrive_publish_marks_the_job_dead,
    an_end_with_its_start_folded_in_counts_the_run_and_its_start,
    a_large_batch_of_inserts_with_a_keyed_one_inside_stores_every_job,
    a_pending_insert_is_claimed_once_due_and_again_after_its_lease,
    a_confirm_queues_only_jobs_still_pending,
    events_settle_pending_jobs,
    a_keyed_pending_job_keeps_its_key,
    retention_deletes_old_finished_jobs_and_old_keys_only,
    listings_are_summaries_without_results,
    a_queued_job_is_unresolved_until_confirmed_and_pending_once_its_confirm_is_overdue,
    kinds_and_workers_are_recorded_and_replaced,
    a_job_another_producer_published_is_recorded_from_its_events,
    keys_are_found_by_hash_revoked_by_name_and_end_their_sessions,
    a_job_is_seen_and_listed_only_by_its_owner_unless_unfiltered,
    a_jobs_input_files_are_kept_for_its_republish_and_deleted_with_it,
    artifacts_are_stored_replaced_listed_and_purged_with_their_job,
    a_cancel_takes_unfinished_jobs_once_and_nothing_revives_them,
    a_lapsed_lease_starts_the_job_again_once_and_fences_its_old_attempt,
    the_dashboards_filters_search_pages_and_bulk_actions,
    a_jobs_history_keeps_every_step_once_and_goes_with_the_job,
);

use super::dashboard_tests::{
    a_jobs_history_keeps_every_step_once_and_goes_with_the_job,
    the_dashboards_filters_search_pages_and_bulk_actions,
};

use super::leases_tests::a_lapsed_lease_starts_the_job_again_once_and_fences_its_old_attempt;

use super::inputs_tests::a_jobs_input_files_are_kept_for_its_republish_and_deleted_with_it;

use super::keys_tests::{
    a_job_is_seen_and_listed_only_by_its_owner_unless_unfiltered,
    keys_are_found_by_hash_revoked_by_name_and_end_their_sessions,
};
use super::registry_tests::{
    a_job_another_producer_published_is_recorded_from_its_events,
    kinds_and_workers_are_recorded_and_replaced,
};

// ---- harness -------------------------------------------------------------------------------

pub(super) async fn sqlite_store() -> Store {
    let path = std::env::temp_dir().join(format!("offload-unit-{}.db", JobId::new()));
    Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("sqlite store")
}

/// The PostgreSQL server the tests use: `OFFLOAD_TEST_DATABASE_URL`, else the local default.
pub(super) fn pg_url() -> String {
    std::env::var("OFFLOAD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema of its own for one test, so tests run in parallel without seeing each other.
#[derive(Clone)]
pub(super) struct PgSchema {
    pub(super) admin: PgPool,
    pub(super) name: String,
    /// The store URL: the test database with this schema as its `search_path`.
    pub(super) url: String,
}

impl PgSchema {
    /// Creates a fresh schema; fails the test with the fix if PostgreSQL is not answering.
    pub(super) async fn create() -> Self {
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
    pub(super) async fn store(&self) -> Store {
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
pub(super) async fn on_postgres<F, Fut>(test: F)
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
    JobRecord::queued(
        id,
        JobKind::parse("noop").expect("valid"),
        5,
        1000,
        OffsetDateTime::now_utc(),
    )
}

/// A job recorded before its publish, as the submit path writes it when it cannot wait.
fn pending(id: JobId) -> JobRecord {
    JobRecord {
        status: JobStatus::Pending,
        ..queued(id)
    }
}

/// An insert of a job that is not pending.
fn insert(job: JobRecord, payload: Value, key: Option<IdempotencyKey>) -> Write {
    Write::Insert {
        job,
        payload,
        key,
        resolve_at: None,
        inputs: Vec::new(),
    }
}

fn event(id: JobId, attempt: u32, status: JobStatus, at: OffsetDateTime) -> JobEvent {
    let mut ev = JobEvent::now(id, attempt, status, "w1");
    ev.at = at;
    ev
}

// ---- behaviour, on both backends -----------------------------------------------------------

async fn a_cancel_takes_unfinished_jobs_once_and_nothing_revives_them(store: Store) {
    let t0 = datetime!(2031-05-06 07:08:09 UTC);
    let (queued_id, running_id, done_id, pending_id) =
        (JobId::new(), JobId::new(), JobId::new(), JobId::new());
    store
        .apply(&[
            insert(queued(queued_id), json!({}), None),
            insert(queued(running_id), json!({}), None),
            insert(queued(done_id), json!({}), None),
            insert_pending(pending_id, t0, json!({})),
            Write::Event(event(running_id, 1, JobStatus::Running, t0)),
            Write::Event(event(done_id, 1, JobStatus::Succeeded, t0)),
        ])
        .await
        .expect("insert");
    let one = |id| CancelFilter {
        id: Some(id),
        limit: 1,
        ..CancelFilter::default()
    };
    assert_eq!(
        store
            .cancel(&one(done_id), "ops", t0)
            .await
            .expect("cancel"),
        Vec::<JobId>::new(),
        "a finished job stays as it is"
    );
    for id in [queued_id, running_id, pending_id] {
        assert_eq!(
            store.cancel(&one(id), "ops", t0).await.expect("cancel"),
            [id]
        );
        let job = store.get(id).await.expect("get").expect("stored");
        assert_eq!(job.status, JobStatus::Cancelled);
        assert_eq!(job.error.as_deref(), Some("cancelled by ops"));
        assert_eq!(job.finished_at, Some(t0));
    }
    assert!(
        store
            .cancel(&one(queued_id), "ops", t0)
            .await
            .expect("again")
            .is_empty()
    );
    // An unpublished job cancelled is never claimed for a republish.
    let later = t0 + time::Duration::hours(1);
    assert!(
        store
            .claim_unresolved(later, Duration::from_secs(30), 10)
            .await
            .expect("claim")
            .is_empty()
    );
    // Late events of any attempt change nothing but the count of starts.
    let t1 = t0 + time::Duration::seconds(5);
    store
        .apply(&[
            Write::Event(event(running_id, 1, JobStatus::Succeeded, t1)),
            Write::Event(event(queued_id, 3, JobStatus::Running, t1)),
            Write::MarkDead {
                id: queued_id,
                attempt: 2,
                error: "x".into(),
            },
        ])
        .await
        .expect("late events");
    for id in [queued_id, running_id] {
        let job = store.get(id).await.expect("get").expect("stored");
        assert_eq!(job.status, JobStatus::Cancelled, "{job:?}");
        assert!(job.result.is_none());
    }
    // Unsettled until a worker reports the cancel.
    let mut unsettled = store.unsettled_cancels(t0, 100).await.expect("unsettled");
    unsettled.sort_unstable();
    let mut expected = vec![queued_id, running_id, pending_id];
    expected.sort_unstable();
    assert_eq!(unsettled, expected);
    assert!(
        store
            .unsettled_cancels(t1, 100)
            .await
            .expect("since")
            .is_empty()
    );
    store
        .apply(&[Write::Event(event(queued_id, 1, JobStatus::Cancelled, t1))])
        .await
        .expect("settled");
    assert!(
        !store
            .unsettled_cancels(t0, 100)
            .await
            .expect("unsettled")
            .contains(&queued_id)
    );
    // By kind and status: the filter matches only what it names.
    let (a, b) = (JobId::new(), JobId::new());
    store
        .apply(&[
            insert(queued(a), json!({}), None),
            insert(queued(b), json!({}), None),
            Write::Event(event(b, 1, JobStatus::Running, t0)),
        ])
        .await
        .expect("insert");
    let by_status = CancelFilter {
        status: Some(JobStatus::Queued),
        kind: Some(JobKind::parse("noop").expect("valid")),
        limit: 100,
        ..CancelFilter::default()
    };
    assert_eq!(
        store.cancel(&by_status, "ops", t0).await.expect("bulk"),
        [a]
    );
    assert_eq!(
        store.get(b).await.expect("get").expect("b").status,
        JobStatus::Running
    );
}

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
            kind: Some(JobKind::parse("sleep").expect("valid")),
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
    let resolve_at = datetime!(2030-01-02 03:04:05.678901 UTC);
    let redrive = Write::Redrive {
        id,
        attempt: 2,
        max_attempts: 6,
        resolve_at,
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
    // Pending its publish, due to be resolved at `resolve_at`.
    let job = store.get(id).await.expect("get").expect("exists");
    assert_eq!(
        (job.status, job.attempt, job.max_attempts),
        (JobStatus::Pending, 2, 6)
    );
    assert!(job.finished_at.is_none() && job.error.is_none());
    let due = store
        .claim_unresolved(resolve_at, Duration::from_secs(1), 10)
        .await
        .expect("claim");
    assert_eq!(due.iter().map(|u| u.job.id).collect::<Vec<_>>(), vec![id]);
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
    // Its publish is confirmed: queued as attempt 2.
    store
        .apply(&[Write::Confirmed(vec![id])])
        .await
        .expect("confirm");
    let job = store.get(id).await.expect("get").expect("exists");
    assert_eq!((job.status, job.attempt), (JobStatus::Queued, 2));
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

/// A pending insert due at `resolve_at`.
fn insert_pending(id: JobId, resolve_at: OffsetDateTime, payload: Value) -> Write {
    Write::Insert {
        job: pending(id),
        payload,
        key: None,
        resolve_at: Some(resolve_at),
        inputs: Vec::new(),
    }
}

async fn a_scheduled_job_waits_for_its_time_then_is_claimed_once_and_confirmed_queued(
    store: Store,
) {
    let t0 = datetime!(2031-05-06 07:08:09.5 UTC);
    let run_at = t0 + time::Duration::seconds(30);
    let (id, other) = (JobId::new(), JobId::new());
    let scheduled = |id| Write::Insert {
        job: JobRecord {
            submitted_at: t0,
            ..queued(id)
        }
        .run_at(Some(run_at), t0),
        payload: json!({"n": 1}),
        key: None,
        resolve_at: Some(run_at),
        inputs: Vec::new(),
    };
    store
        .apply(&[scheduled(id), scheduled(other)])
        .await
        .expect("insert");
    let job = store.get(id).await.expect("get").expect("stored");
    assert_eq!(job.status, JobStatus::Scheduled);
    assert_eq!(job.run_at, Some(run_at));
    let listed = store
        .list(&JobFilter {
            status: Some(JobStatus::Scheduled),
            kind: None,
            before: None,
            limit: 10,
            owner: None,
        })
        .await
        .expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|j| j.run_at == Some(run_at)));
    assert_eq!(store.next_resolve_at().await.expect("next"), Some(run_at));
    let lease = Duration::from_secs(10);
    let early = run_at - time::Duration::milliseconds(1);
    assert!(
        store
            .claim_unresolved(early, lease, 10)
            .await
            .expect("claim")
            .is_empty(),
        "not before its time"
    );
    let claimed = store
        .claim_unresolved(run_at, lease, 10)
        .await
        .expect("claim");
    assert_eq!(ids_of(&claimed).len(), 2);
    assert_eq!(claimed[0].payload, json!({"n": 1}));
    assert!(
        store
            .claim_unresolved(run_at, lease, 10)
            .await
            .expect("claim")
            .is_empty(),
        "a claimed job is not claimed again within its lease"
    );
    // Its publish confirmed, it is queued like any job; an early event settles the other.
    store
        .apply(&[
            Write::Confirmed(vec![id]),
            Write::Event(event(other, 1, JobStatus::Running, run_at)),
            Write::Confirmed(vec![other]),
        ])
        .await
        .expect("confirm");
    let job = store.get(id).await.expect("get").expect("stored");
    assert_eq!(job.status, JobStatus::Queued);
    assert!(!store.unresolved(id).await.expect("unresolved"));
    assert_eq!(
        store.get(other).await.expect("get").expect("stored").status,
        JobStatus::Running
    );
    // A late queued-level event changes nothing; running moves it on as for any job.
    store
        .apply(&[Write::Event(event(id, 1, JobStatus::Running, run_at))])
        .await
        .expect("event");
    let job = store.get(id).await.expect("get").expect("stored");
    assert_eq!((job.status, job.runs), (JobStatus::Running, 1));
    assert_eq!(store.next_resolve_at().await.expect("next"), None);
}

async fn progress_shows_while_its_attempt_runs_and_the_next_start_clears_it(store: Store) {
    use offload_shared::events::Progress;
    let t0 = datetime!(2031-05-06 07:08:09 UTC);
    let at = |s: i64| t0 + time::Duration::seconds(s);
    let id = JobId::new();
    let report = |attempt, fraction, s| {
        let mut ev =
            JobEvent::progress_report(id, attempt, "w1", Progress::new(fraction, "working"));
        ev.at = at(s);
        Write::Event(ev)
    };
    store
        .apply(&[
            insert(queued(id), json!({}), None),
            // Before the start: nothing to show it on.
            report(1, 0.1, 1),
            Write::Event(event(id, 1, JobStatus::Running, at(2))),
            report(1, 0.5, 4),
            // An older report arriving late, one of another attempt, and one out of bounds.
            report(1, 0.2, 3),
            report(2, 0.9, 5),
        ])
        .await
        .expect("apply");
    let job = store.get(id).await.expect("get").expect("stored");
    assert_eq!(job.runs, 1, "a report is not a start");
    let progress = job.progress.expect("progress");
    assert_eq!((progress.fraction, progress.at), (0.5, at(4)));
    assert_eq!(progress.message.as_deref(), Some("working"));
    store.apply(&[report(1, 7.0, 6)]).await.expect("apply");
    let job = store.get(id).await.expect("get").expect("stored");
    assert_eq!(job.progress.map(|p| p.fraction), Some(1.0));
    // The attempt fails; the next one's start clears what the first reported.
    store
        .apply(&[
            Write::Event(event(id, 1, JobStatus::Retrying, at(7))),
            report(1, 0.3, 8),
            Write::Event(event(id, 2, JobStatus::Running, at(9))),
        ])
        .await
        .expect("apply");
    let job = store.get(id).await.expect("get").expect("stored");
    assert_eq!((job.status, job.attempt), (JobStatus::Running, 2));
    assert_eq!(job.progress, None);
}

fn ids_of(claimed: &[Unresolved]) -> Vec<JobId> {
    claimed.iter().map(|u| u.job.id).collect()
}

async fn a_pending_insert_is_claimed_once_due_and_again_after_its_lease(store: Store) {
    let t0 = datetime!(2031-05-06 07:08:09.123456 UTC);
    let s = |n: i64| t0 + time::Duration::seconds(n);
    let ids: Vec<JobId> = (0..4).map(|_| JobId::new()).collect();
    // Due at t0+2, t0+1, t0+3 and t0+10; one queued job that is never claimed.
    store
        .apply(&[
            insert_pending(ids[0], s(2), json!({"n": 0})),
            insert_pending(ids[1], s(1), json!({"n": 1})),
            insert_pending(ids[2], s(3), json!({"n": 2})),
            insert_pending(ids[3], s(10), json!({"n": 3})),
            insert(queued(JobId::new()), json!({}), None),
        ])
        .await
        .expect("insert");
    let job = store.get(ids[0]).await.expect("get").expect("stored");
    assert_eq!(job.status, JobStatus::Pending);

    assert!(
        store
            .claim_unresolved(s(0), Duration::from_secs(30), 10)
            .await
            .expect("claim")
            .is_empty(),
        "nothing is due yet"
    );
    // At t0+3 three are due; the limit takes the two due first (t0+1, t0+2).
    let lease = Duration::from_secs(30);
    let first = store.claim_unresolved(s(3), lease, 2).await.expect("claim");
    let mut want = vec![ids[0], ids[1]];
    want.sort();
    assert_eq!(ids_of(&first), want);
    let by_id = |id: JobId| first.iter().find(|u| u.job.id == id).expect("claimed");
    assert_eq!(by_id(ids[1]).payload, json!({"n": 1}));
    assert_eq!(by_id(ids[1]).job.status, JobStatus::Pending);
    // A second pass at the same moment gets only the one left; the claimed ones are leased.
    let second = store
        .claim_unresolved(s(3), lease, 10)
        .await
        .expect("claim");
    assert_eq!(ids_of(&second), vec![ids[2]]);
    assert!(
        store
            .claim_unresolved(s(9), lease, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    // Once the leases run out (t0+33), all four are due again.
    let again = store
        .claim_unresolved(s(33), lease, 10)
        .await
        .expect("claim");
    let mut all = ids.clone();
    all.sort();
    assert_eq!(ids_of(&again), all);
}

async fn a_confirm_queues_only_jobs_still_pending(store: Store) {
    let t0 = OffsetDateTime::now_utc();
    let [a, b, c] = [(); 3].map(|()| JobId::new());
    store
        .apply(&[
            insert_pending(a, t0, json!({})),
            insert_pending(b, t0, json!({})),
            insert(queued(c), json!({}), None),
        ])
        .await
        .expect("insert");
    // b's worker reported before its confirm arrived.
    store
        .apply(&[Write::Event(JobEvent::now(b, 1, JobStatus::Running, "w"))])
        .await
        .expect("event");
    let written = store
        .apply(&[
            Write::Confirmed(vec![a, b, c, JobId::new()]),
            Write::Confirmed(vec![a]),
            Write::Confirmed(Vec::new()),
        ])
        .await
        .expect("confirm");
    assert_eq!(
        written,
        vec![Written::Done, Written::Nothing, Written::Nothing]
    );
    let status = |id| {
        let store = store.clone();
        async move { store.get(id).await.expect("get").expect("stored") }
    };
    let (a, b, c) = (status(a).await, status(b).await, status(c).await);
    assert_eq!((a.status, a.attempt), (JobStatus::Queued, 1));
    assert_eq!(
        (b.status, b.worker.as_deref()),
        (JobStatus::Running, Some("w"))
    );
    assert_eq!(c.status, JobStatus::Queued);
    // Confirmed jobs are no longer due.
    let later = t0 + time::Duration::hours(1);
    assert!(
        store
            .claim_unresolved(later, Duration::from_secs(1), 10)
            .await
            .expect("claim")
            .is_empty()
    );
    // A confirmed job's events apply as before.
    store
        .apply(&[Write::Event(JobEvent::now(
            a.id,
            1,
            JobStatus::Succeeded,
            "w",
        ))])
        .await
        .expect("event");
    assert_eq!(status(a.id).await.status, JobStatus::Succeeded);
}

async fn a_queued_job_is_unresolved_until_confirmed_and_pending_once_its_confirm_is_overdue(
    store: Store,
) {
    let t0 = OffsetDateTime::now_utc();
    let [a, b, c] = [(); 3].map(|()| JobId::new());
    let unresolved = |id| Write::Insert {
        job: queued(id),
        payload: json!({"n": 1}),
        key: Some(IdempotencyKey {
            key: format!("k-{id}"),
            fingerprint: "f".into(),
        }),
        resolve_at: Some(t0),
        inputs: Vec::new(),
    };
    store
        .apply(&[unresolved(a), unresolved(b), unresolved(c)])
        .await
        .expect("insert");
    for id in [a, b, c] {
        assert!(store.unresolved(id).await.expect("query"), "{id}");
        assert_eq!(
            store.get(id).await.expect("get").expect("stored").status,
            JobStatus::Queued
        );
    }
    // a is confirmed; b's confirm is overdue; c's API died before it knew (nothing written).
    let written = store
        .apply(&[
            Write::Confirmed(vec![a]),
            Write::Unconfirmed(vec![b]),
            Write::Unconfirmed(vec![a]),
        ])
        .await
        .expect("settle");
    assert_eq!(
        written,
        vec![Written::Done, Written::Done, Written::Nothing],
        "a resolved job is not made pending"
    );
    let get = |id| {
        let store = store.clone();
        async move { store.get(id).await.expect("get").expect("stored") }
    };
    assert_eq!(get(a).await.status, JobStatus::Queued);
    assert!(!store.unresolved(a).await.expect("query"));
    assert_eq!(get(b).await.status, JobStatus::Pending);
    assert!(store.unresolved(b).await.expect("query"));
    // The reconciler takes b and c, never a; their keys outlive any key TTL while unresolved.
    let later = t0 + time::Duration::seconds(1);
    let mut claimed = ids_of(
        &store
            .claim_unresolved(later, Duration::from_secs(60), 10)
            .await
            .expect("claim"),
    );
    claimed.sort_unstable();
    let mut want = vec![b, c];
    want.sort_unstable();
    assert_eq!(claimed, want);
    let purged = store
        .purge(later, later + time::Duration::days(2), 100)
        .await
        .expect("purge");
    assert_eq!(purged.keys, 1, "only the resolved job's key expires");
    // A republished job's confirm resolves it whatever it showed.
    store
        .apply(&[Write::Confirmed(vec![b, c])])
        .await
        .expect("confirm");
    for id in [b, c] {
        assert_eq!(get(id).await.status, JobStatus::Queued);
        assert!(!store.unresolved(id).await.expect("query"));
    }
    assert_eq!(get(b).await.attempt, 1);
    // Its events apply as for any job: the progress went back to queued's.
    store
        .apply(&[Write::Event(JobEvent::now(b, 1, JobStatus::Running, "w"))])
        .await
        .expect("event");
    assert_eq!(get(b).await.status, JobStatus::Running);
}

async fn events_settle_pending_jobs(store: Store) {
    let t0 = OffsetDateTime::now_utc();
    let [a, b] = [(); 2].map(|()| JobId::new());
    store
        .apply(&[
            insert_pending(a, t0, json!({})),
            insert_pending(b, t0, json!({})),
        ])
        .await
        .expect("insert");
    // Its confirm never came, but the job ran: its own events settle it.
    let mut done = JobEvent::now(a, 1, JobStatus::Succeeded, "w");
    done.result = Some(json!(42));
    store
        .apply(&[
            Write::Event(JobEvent::now(a, 1, JobStatus::Running, "w")),
            Write::Event(done),
        ])
        .await
        .expect("events");
    let job = store.get(a).await.expect("get").expect("stored");
    assert_eq!(
        (job.status, job.result, job.runs),
        (JobStatus::Succeeded, Some(json!(42)), 1)
    );
    // Only b is still unresolved.
    let due = store
        .claim_unresolved(t0, Duration::from_secs(1), 10)
        .await
        .expect("claim");
    assert_eq!(ids_of(&due), vec![b]);
}

async fn a_keyed_pending_job_keeps_its_key(store: Store) {
    let t0 = OffsetDateTime::now_utc();
    let key = IdempotencyKey {
        key: "pending-key".into(),
        fingerprint: "fp".into(),
    };
    let (a, b) = (JobId::new(), JobId::new());
    let keyed = |id| Write::Insert {
        job: pending(id),
        payload: json!({}),
        key: Some(key.clone()),
        resolve_at: Some(t0),
        inputs: Vec::new(),
    };
    assert_eq!(
        store.apply(&[keyed(a)]).await.expect("first"),
        vec![Written::Done]
    );
    // A repeat while the first is unresolved finds the first job.
    assert_eq!(
        store.apply(&[keyed(b)]).await.expect("repeat"),
        vec![Written::KeyTaken {
            job_id: a,
            fingerprint: "fp".into()
        }]
    );
    // Retention with every key expired leaves a pending job's key alone.
    let future = t0 + time::Duration::days(30);
    store.purge(future, future, 500).await.expect("purge");
    assert_eq!(
        store.apply(&[keyed(b)]).await.expect("repeat"),
        vec![Written::KeyTaken {
            job_id: a,
            fingerprint: "fp".into()
        }]
    );
    assert!(store.get(a).await.expect("get").is_some());
}

async fn retention_deletes_old_finished_jobs_and_old_keys_only(store: Store) {
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("ns");
    let ago = |days: i64| now - time::Duration::days(days);
    let key = |name: &str| {
        Some(IdempotencyKey {
            key: name.into(),
            fingerprint: "fp".into(),
        })
    };
    let submitted = |id: JobId, days: i64| JobRecord {
        submitted_at: ago(days),
        ..queued(id)
    };
    let ended = |id: JobId, status: JobStatus, days: i64| {
        let mut ev = event(id, 1, status, ago(days));
        ev.error = (status != JobStatus::Succeeded).then(|| "boom".into());
        Write::Event(ev)
    };
    // Old finished jobs (succeeded with its key, failed, dead), a fresh finished one, an old
    // job still running and one still queued; an old key of a queued job and a fresh key.
    let ids: Vec<JobId> = (0..8).map(|_| JobId::new()).collect();
    let [
        old_done,
        old_failed,
        old_dead,
        fresh_done,
        old_running,
        old_queued,
        old_key_job,
        fresh_key_job,
    ] = ids[..]
    else {
        unreachable!()
    };
    let mut writes = vec![
        insert(submitted(old_done, 10), json!({}), key("k-done")),
        insert(submitted(old_failed, 10), json!({}), None),
        insert(submitted(old_dead, 10), json!({}), None),
        insert(submitted(fresh_done, 10), json!({}), key("k-fresh-done")),
        insert(submitted(old_running, 10), json!({}), None),
        insert(submitted(old_queued, 10), json!({}), None),
        insert(submitted(old_key_job, 2), json!({}), key("k-old")),
        insert(submitted(fresh_key_job, 0), json!({}), key("k-fresh")),
    ];
    writes.extend([
        ended(old_done, JobStatus::Succeeded, 8),
        ended(old_failed, JobStatus::Failed, 8),
        ended(old_dead, JobStatus::Dead, 8),
        ended(fresh_done, JobStatus::Succeeded, 1),
        Write::Event(event(old_running, 1, JobStatus::Running, ago(9))),
    ]);
    store.apply(&writes).await.expect("history");

    // Jobs kept 7 days after they finish, keys 1 day after they were made; batches of 2.
    let (jobs_before, keys_before) = (ago(7), ago(1));
    let mut total = Purged::default();
    loop {
        let batch = store
            .purge(jobs_before, keys_before, 2)
            .await
            .expect("purge");
        assert!(batch.jobs <= 2, "{batch:?}");
        total.jobs += batch.jobs;
        total.keys += batch.keys;
        if batch == Purged::default() {
            break;
        }
    }
    // Three jobs; keys: k-done (its job's), k-fresh-done (1 day < its age 10 days), k-old.
    assert_eq!(
        total,
        Purged {
            jobs: 3,
            keys: 3,
            artifacts: 0
        }
    );
    for (id, kept) in [
        (old_done, false),
        (old_failed, false),
        (old_dead, false),
        (fresh_done, true),
        (old_running, true),
        (old_queued, true),
        (old_key_job, true),
        (fresh_key_job, true),
    ] {
        assert_eq!(
            store.get(id).await.expect("get").is_some(),
            kept,
            "job {id} kept: {kept}"
        );
    }
    // Deleted keys are free again; the fresh one still names its job.
    let reuse = |name: &str| insert(queued(JobId::new()), json!({}), key(name));
    let written = store
        .apply(&[reuse("k-done"), reuse("k-old"), reuse("k-fresh")])
        .await
        .expect("reuse");
    assert_eq!(written[..2], [Written::Done, Written::Done]);
    assert!(
        matches!(&written[2], Written::KeyTaken { job_id, .. } if *job_id == fresh_key_job),
        "{written:?}"
    );
}

async fn artifacts_are_stored_replaced_listed_and_purged_with_their_job(store: Store) {
    use offload_shared::artifacts::ArtifactMeta;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("ns");
    let (job, orphan, fresh_orphan) = (JobId::new(), JobId::new(), JobId::new());
    let put = |id: JobId, name: &'static str, data: &'static [u8], at: OffsetDateTime| {
        let store = store.clone();
        async move {
            store
                .put_artifact(&NewArtifact {
                    job_id: id,
                    name,
                    content_type: "image/png",
                    sha256: "ab",
                    data,
                    attempt: 1,
                    stored_at: at,
                })
                .await
                .expect("put");
        }
    };
    let old = now - time::Duration::days(8);
    // Before its job is known, and again (a redelivery, another attempt): the last one stays.
    put(job, "a.png", b"first", old).await;
    put(job, "a.png", b"\0\xffbytes", old).await;
    put(orphan, "o.png", b"o", old).await;
    put(fresh_orphan, "o.png", b"o", now).await;
    let got = store
        .artifact(job, "a.png")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(got.data, b"\0\xffbytes", "binary bytes survive, replaced");
    assert_eq!(store.artifact(job, "b.png").await.expect("get"), None);

    let mut done = JobEvent::now(job, 1, JobStatus::Succeeded, "w");
    done.at = old;
    done.artifacts = vec![ArtifactMeta {
        name: "a b.png".into(),
        content_type: "image/png".into(),
        size: 7,
        sha256: "ab".into(),
    }];
    store
        .apply(&[insert(queued(job), json!({}), None), Write::Event(done)])
        .await
        .expect("apply");
    let record = store.get(job).await.expect("get").expect("job");
    assert_eq!(record.artifacts.len(), 1);
    assert_eq!(
        record.artifacts[0].url,
        format!("/jobs/{job}/result?name=a%20b.png")
    );
    let listed = store
        .list(&JobFilter {
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(listed[0].artifacts, record.artifacts, "listings carry them");

    let purged = store
        .purge(
            now - time::Duration::days(7),
            now - time::Duration::days(1),
            10,
        )
        .await
        .expect("purge");
    assert_eq!(
        (purged.jobs, purged.artifacts),
        (1, 2),
        "the job's, and the old orphan"
    );
    assert_eq!(store.artifact(job, "a.png").await.expect("get"), None);
    assert_eq!(store.artifact(orphan, "o.png").await.expect("get"), None);
    assert!(
        store
            .artifact(fresh_orphan, "o.png")
            .await
            .expect("get")
            .is_some(),
        "a young orphan may still be claimed by its event"
    );
}

async fn listings_are_summaries_without_results(store: Store) {
    let (a, b) = (JobId::new(), JobId::new());
    let long = "é".repeat(SUMMARY_ERROR_CHARS + 40);
    let mut done = JobEvent::now(a, 1, JobStatus::Succeeded, "w");
    done.result = Some(json!({"big": "x".repeat(10_000)}));
    let mut dead = JobEvent::now(b, 1, JobStatus::Dead, "w");
    dead.error = Some(long.clone());
    store
        .apply(&[
            insert(queued(a), json!({"in": 1}), None),
            insert(queued(b), json!({}), None),
            Write::Event(done),
            Write::Event(dead),
        ])
        .await
        .expect("apply");
    let page = store
        .list(&JobFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    let text = serde_json::to_string(&page).expect("json");
    assert!(
        text.len() < 2_000,
        "a summary page is small: {} bytes",
        text.len()
    );
    assert!(
        !text.contains("xxxx") && !text.contains("\"result\""),
        "{text}"
    );
    let (sa, sb) = (&page[1], &page[0]);
    assert_eq!(
        (sa.id, sa.has_result, sa.status),
        (a, true, JobStatus::Succeeded)
    );
    assert_eq!((sb.id, sb.has_result), (b, false));
    let cut = sb.error.as_deref().expect("error");
    assert_eq!(cut.chars().count(), SUMMARY_ERROR_CHARS);
    assert!(cut.ends_with('…') && long.starts_with(cut.trim_end_matches('…')));
    // The job itself keeps everything.
    let full = store.get(b).await.expect("get").expect("stored");
    assert_eq!(full.error.as_deref(), Some(long.as_str()));
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
            insert(
                job(a, JobKind::parse("noop").expect("valid")),
                json!({"n": 1}),
                Some(key.clone()),
            ),
            insert(
                job(b, JobKind::parse("sleep").expect("valid")),
                json!({"ms": 5}),
                None,
            ),
            insert(
                job(c, JobKind::parse("noop").expect("valid")),
                json!([]),
                None,
            ),
            insert(
                job(d, JobKind::parse("noop").expect("valid")),
                json!(null),
                None,
            ),
        ],
        vec![
            Write::Event(event(a, 1, JobStatus::Running, at(1))),
            Write::Event(done),
            Write::Event(event(a, 1, JobStatus::Running, at(3))),
            insert(
                job(e, JobKind::parse("noop").expect("valid")),
                json!({}),
                Some(key),
            ),
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
                resolve_at: at(6),
            },
            Write::Event(dead),
            Write::Redrive {
                id: c,
                attempt: 2,
                max_attempts: 6,
                resolve_at: at(6),
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
                kind: Some(JobKind::parse("sleep").expect("valid")),
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
async fn postgres_replicas_claiming_together_never_take_the_same_job() {
    on_postgres(|schema| async move {
        let (one, two) = (schema.store().await, schema.store().await);
        let t0 = OffsetDateTime::now_utc();
        let ids: Vec<JobId> = (0..300).map(|_| JobId::new()).collect();
        let inserts: Vec<Write> = ids
            .iter()
            .map(|id| insert_pending(*id, t0, json!({})))
            .collect();
        one.apply(&inserts).await.expect("insert");
        // Each replica claims 7 at a time, as fast as it can, until nothing is due.
        let replica = |store: Store| async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_unresolved(t0, Duration::from_secs(60), 7)
                    .await
                    .expect("claim");
                assert!(batch.len() <= 7, "{} over the limit", batch.len());
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(ids_of(&batch));
            }
        };
        let (a, b) = tokio::join!(replica(one), replica(two));
        assert!(!a.is_empty() && !b.is_empty(), "both replicas took some");
        let mut all: Vec<JobId> = a.iter().chain(&b).copied().collect();
        all.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(all, want, "every job claimed exactly once");
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

async fn held_jobs_are_released_under_their_key_and_kind_limits_oldest_first(store: Store) {
    let t0 = datetime!(2031-05-06 07:08:09 UTC);
    let kind_limits: std::collections::HashMap<String, u32> =
        [("limited".to_owned(), 1)].into_iter().collect();
    let held = |key: Option<&str>, limit: Option<u32>, kind: &str| {
        let job = JobRecord {
            kind: JobKind::parse(kind).expect("valid"),
            submitted_at: t0,
            ..queued(JobId::new())
        }
        .gated(key.map(str::to_owned), limit, true);
        let id = job.id;
        (
            id,
            Write::Insert {
                resolve_at: job.resolve_at(t0),
                job,
                payload: json!({}),
                key: None,
                inputs: Vec::new(),
            },
        )
    };
    // Tenant a: limit 2, three jobs; tenant b: limit 1, two jobs; kind `limited`: one at a time.
    let jobs = [
        held(Some("a"), Some(2), "noop"),
        held(Some("a"), Some(2), "noop"),
        held(Some("a"), Some(2), "noop"),
        held(Some("b"), None, "noop"),
        held(Some("b"), None, "noop"),
        held(None, None, "limited"),
        held(None, None, "limited"),
    ];
    let ids: Vec<JobId> = jobs.iter().map(|(id, _)| *id).collect();
    let writes: Vec<Write> = jobs.into_iter().map(|(_, w)| w).collect();
    store.apply(&writes).await.expect("insert");
    let first = store.get(ids[0]).await.expect("get").expect("stored");
    assert_eq!(first.status, JobStatus::Scheduled);
    assert_eq!(first.run_at, None, "held: no time, a slot");
    assert_eq!(
        store.next_resolve_at().await.expect("next"),
        None,
        "nothing due"
    );

    let (released, still_held) = store.release_held(&kind_limits, t0).await.expect("release");
    assert_eq!(released, vec![ids[0], ids[1], ids[3], ids[5]]);
    assert!(still_held);
    // Released jobs are due at once; a second pass releases nothing while they are active.
    assert_eq!(store.next_resolve_at().await.expect("next"), Some(t0));
    let (again, _) = store.release_held(&kind_limits, t0).await.expect("release");
    assert!(again.is_empty(), "{again:?}");
    // One of tenant a's finishes, and the limited kind's: their next ones are released.
    let done = t0 + time::Duration::seconds(1);
    store
        .apply(&[
            Write::Event(event(ids[0], 1, JobStatus::Succeeded, done)),
            Write::Event(event(ids[5], 1, JobStatus::Dead, done)),
        ])
        .await
        .expect("finish");
    let (next, still_held) = store
        .release_held(&kind_limits, done)
        .await
        .expect("release");
    assert_eq!(next, vec![ids[2], ids[6]]);
    assert!(still_held, "tenant b's second job still waits");
    // A cancelled held job is never released.
    store
        .cancel(
            &CancelFilter {
                id: Some(ids[4]),
                limit: 1,
                ..CancelFilter::default()
            },
            "test",
            done,
        )
        .await
        .expect("cancel");
    store
        .apply(&[Write::Event(event(ids[3], 1, JobStatus::Succeeded, done))])
        .await
        .expect("finish");
    let (last, still_held) = store
        .release_held(&kind_limits, done)
        .await
        .expect("release");
    assert!(last.is_empty() && !still_held, "{last:?}");
    // A job of a limited kind to run later waits for its time as well as for a slot.
    let later = done + time::Duration::seconds(10);
    let job = JobRecord {
        kind: JobKind::parse("limited").expect("valid"),
        submitted_at: done,
        ..queued(JobId::new())
    }
    .run_at(Some(later), done)
    .gated(None, None, true);
    let id = job.id;
    store
        .apply(&[Write::Insert {
            resolve_at: job.resolve_at(later),
            job,
            payload: json!({}),
            key: None,
            inputs: Vec::new(),
        }])
        .await
        .expect("insert");
    store
        .apply(&[Write::Event(event(ids[6], 1, JobStatus::Succeeded, done))])
        .await
        .expect("finish");
    let (early, _) = store
        .release_held(&kind_limits, done)
        .await
        .expect("release");
    assert!(early.is_empty(), "not before its time: {early:?}");
    let (due, _) = store
        .release_held(&kind_limits, later)
        .await
        .expect("release");
    assert_eq!(due, vec![id]);
}
