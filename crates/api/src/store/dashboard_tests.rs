//! The dashboard's reads and bulk writes, run on both backends by `tests.rs`: each filter, the
//! text search (and the JSON path on PostgreSQL), keyset pages, dead letters grouped and deleted
//! in bulk, the hour's figures and the audit list.

use serde_json::json;
use time::OffsetDateTime;

use offload_shared::{JobEvent, JobId, JobKind, JobStatus};

use super::{
    JobRecord, Store, Write,
    dashboard::{JobQuery, NewAudit, Search},
};

fn insert(id: JobId, kind: &str, payload: serde_json::Value, owner: Option<&str>) -> Write {
    Write::Insert {
        job: JobRecord::queued(
            id,
            JobKind::parse(kind).expect("valid"),
            1,
            1000,
            OffsetDateTime::now_utc(),
        )
        .owned_by(owner.map(str::to_owned)),
        payload,
        key: None,
        resolve_at: None,
        inputs: Vec::new(),
    }
}

fn event(id: JobId, status: JobStatus, worker: &str, error: Option<&str>) -> Write {
    let mut ev = JobEvent::now(id, 1, status, worker);
    ev.error = error.map(str::to_owned);
    Write::Event(ev)
}

async fn ids(store: &Store, q: &JobQuery) -> Vec<JobId> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = store.find_jobs(q, before, 2).await.expect("a page");
        all.extend(page.iter().map(|j| j.id));
        if page.len() < 2 {
            return all;
        }
        before = page.last().map(|j| j.id);
    }
}

pub(super) async fn the_dashboards_filters_search_pages_and_bulk_actions(store: Store) {
    let postgres = store
        .check_search(&Search::JsonPath("$.a".into()))
        .await
        .expect("checked")
        .is_ok();
    let j: Vec<JobId> = (0..6).map(|_| JobId::new()).collect();
    store
        .apply(&[
            insert(j[0], "sleep", json!({"user": "ada", "n": 1}), Some("k1")),
            insert(j[1], "sleep", json!({"user": "bob", "n": 2}), Some("k1")),
            insert(j[2], "noop", json!({"note": "100%_sure"}), Some("k2")),
            insert(j[3], "noop", json!({}), None),
            insert(j[4], "sleep", json!({"n": 5}), None),
            insert(j[5], "sleep", json!({"n": 6}), None),
            event(j[0], JobStatus::Succeeded, "w1", None),
            event(
                j[1],
                JobStatus::Dead,
                "w2",
                Some("permanent error: no such user BOB"),
            ),
            event(
                j[4],
                JobStatus::Dead,
                "w2",
                Some("permanent error: no such user BOB"),
            ),
            event(j[5], JobStatus::Dead, "w1", Some("timed out")),
        ])
        .await
        .expect("applied");
    let newest_first = |mut v: Vec<JobId>| {
        v.sort();
        v.reverse();
        v
    };
    let all = JobQuery::default();
    assert_eq!(
        ids(&store, &all).await,
        newest_first(j.clone()),
        "every job, across pages"
    );
    let q = |f: fn(&mut JobQuery)| {
        let mut q = JobQuery::default();
        f(&mut q);
        q
    };
    let cases: Vec<(JobQuery, Vec<JobId>, &str)> = vec![
        (
            q(|q| q.status = Some(JobStatus::Dead)),
            vec![j[1], j[4], j[5]],
            "status",
        ),
        (
            q(|q| q.kinds = Some(vec!["noop".into()])),
            vec![j[2], j[3]],
            "one kind",
        ),
        (
            q(|q| q.kinds = Some(vec!["noop".into(), "sleep".into()])),
            j.clone(),
            "a queue's kinds",
        ),
        (
            q(|q| q.kinds = Some(Vec::new())),
            vec![],
            "a queue of no kind",
        ),
        (
            q(|q| q.worker = Some("w2".into())),
            vec![j[1], j[4]],
            "worker",
        ),
        (
            q(|q| q.owner = Some("k1".into())),
            vec![j[0], j[1]],
            "owner",
        ),
        (
            q(|q| q.search = Some(Search::Text("ADA".into()))),
            vec![j[0]],
            "text in a payload, any case",
        ),
        (
            q(|q| q.search = Some(Search::Text("user bob".into()))),
            vec![j[1], j[4]],
            "text in an error",
        ),
        (
            q(|q| q.search = Some(Search::Text("0%_".into()))),
            vec![j[2]],
            "wildcards are literal",
        ),
        (
            q(|q| q.search = Some(Search::Text("%".into()))),
            vec![j[2]],
            "a lone % is literal",
        ),
        (
            q(|q| q.reason = Some("permanent error: no such user BOB".into())),
            vec![j[1], j[4]],
            "a dead-letter reason",
        ),
    ];
    for (query, expected, why) in cases {
        assert_eq!(ids(&store, &query).await, newest_first(expected), "{why}");
    }
    let now = OffsetDateTime::now_utc();
    let window = JobQuery {
        from: Some(now - time::Duration::MINUTE),
        to: Some(now + time::Duration::MINUTE),
        ..JobQuery::default()
    };
    assert_eq!(
        ids(&store, &window).await.len(),
        6,
        "a time range around now"
    );
    let past = JobQuery {
        to: Some(now - time::Duration::HOUR),
        ..JobQuery::default()
    };
    assert!(
        ids(&store, &past).await.is_empty(),
        "a time range before them"
    );
    if postgres {
        let path = q(|q| q.search = Some(Search::JsonPath("$.n ? (@ > 4)".into())));
        assert_eq!(
            ids(&store, &path).await,
            newest_first(vec![j[4], j[5]]),
            "a JSON path"
        );
        let bad = store
            .check_search(&Search::JsonPath("$.[[".into()))
            .await
            .expect("checked");
        assert!(bad.is_err(), "a malformed JSON path is named, not run");
    } else {
        let refused = store
            .check_search(&Search::JsonPath("$.n".into()))
            .await
            .expect("checked");
        assert!(
            refused
                .expect_err("SQLite has no JSON path")
                .contains("PostgreSQL")
        );
    }

    // Dead letters: grouped by reason, counted, listed oldest first, deleted in bulk.
    let groups = store.dead_groups(None, 10).await.expect("groups");
    assert_eq!(groups.len(), 2);
    assert_eq!((groups[0].count, groups[0].kinds.as_str()), (2, "sleep"));
    assert_eq!(groups[0].reason, "permanent error: no such user BOB");
    assert!(groups[0].latest.is_some());
    assert_eq!(
        store.dead_groups(Some("k1"), 10).await.expect("own").len(),
        1,
        "an owner's own"
    );
    let by_reason = q(|q| q.reason = Some("permanent error: no such user BOB".into()));
    assert_eq!(store.count_dead(&by_reason).await.expect("count"), 2);
    assert_eq!(
        store.count_dead(&all).await.expect("count"),
        3,
        "status is always dead"
    );
    let dead = store.dead_ids(&by_reason, 1).await.expect("ids");
    assert_eq!(dead, vec![j[1]], "oldest first, at most the limit");
    let deleted = store
        .delete_dead(&[j[1], j[0], j[4]])
        .await
        .expect("deleted");
    assert_eq!(
        newest_first(deleted),
        newest_first(vec![j[1], j[4]]),
        "only dead jobs"
    );
    assert!(store.get(j[1]).await.expect("read").is_none());
    assert!(
        store.get(j[0]).await.expect("read").is_some(),
        "a live job is kept"
    );
    assert_eq!(store.count_dead(&all).await.expect("count"), 1);

    // The hour's figures.
    let stats = store
        .hour_stats(now - time::Duration::HOUR)
        .await
        .expect("stats");
    let total: u64 = stats.by_status.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 4, "{stats:?}");
    assert_eq!(stats.submitted.iter().map(|(_, n)| n).sum::<u64>(), 4);
    assert!(
        stats.submitted.iter().all(|(m, _)| (59..=60).contains(m)),
        "{stats:?}"
    );
    let (finished, bad) = stats
        .finished
        .iter()
        .fold((0, 0), |(n, b), (_, fin, failed)| (n + fin, b + failed));
    assert_eq!((finished, bad), (2, 1), "{stats:?}");
    assert!(stats.oldest_waiting.is_some(), "j[2] and j[3] wait");
    // An end folds in its start: the one success has a run time.
    assert!(
        stats
            .run_ms
            .is_some_and(|(p50, p95)| p50 >= 0 && p95 == p50),
        "{stats:?}"
    );

    // The audit list, newest first, in pages.
    for n in 0..3 {
        let target = format!("/jobs/{n}");
        let entry = NewAudit {
            key_id: Some("k1"),
            key_name: "ops",
            action: "POST /jobs/{id}/cancel",
            target: &target,
            detail: Some("303"),
        };
        store.audit(&entry, now).await.expect("audited");
    }
    let first = store.audit_list(None, 2).await.expect("audit");
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].target, "/jobs/2");
    assert_eq!(first[0].key_name, "ops");
    let rest = store
        .audit_list(Some(first[1].seq), 2)
        .await
        .expect("audit");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].target, "/jobs/0");
}

/// An event of attempt `attempt` seen `ms` milliseconds after `t0`.
fn step_event(
    id: JobId,
    attempt: u32,
    status: JobStatus,
    worker: &str,
    t0: OffsetDateTime,
    ms: i64,
) -> JobEvent {
    let mut ev = JobEvent::now(id, attempt, status, worker);
    ev.at = t0 + time::Duration::milliseconds(ms);
    ev
}

pub(super) async fn a_jobs_history_keeps_every_step_once_and_goes_with_the_job(store: Store) {
    // Whole microseconds, as the stores keep times.
    let now = OffsetDateTime::now_utc();
    let t0 = now
        .replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .expect("in range");
    let [job, dead, done, unknown] = [(); 4].map(|()| JobId::new());
    let start = step_event(job, 1, JobStatus::Running, "w1", t0, 1);
    let mut failed = step_event(job, 1, JobStatus::Retrying, "w1", t0, 2);
    failed.error = Some("boom".into());
    failed.run_ms = Some(1500);
    let mut succeeded = step_event(job, 2, JobStatus::Succeeded, "w2", t0, 4);
    succeeded.started_at = Some(t0 + time::Duration::milliseconds(3));
    succeeded.run_ms = Some(7);
    // A start that arrives after the end: too late to change the job, still a step.
    let late = step_event(job, 2, JobStatus::Running, "w3", t0, 5);
    store
        .apply(&[
            insert(job, "sleep", json!({}), None),
            insert(dead, "sleep", json!({}), None),
            insert(done, "sleep", json!({}), None),
            Write::Event(start.clone()),
            // The same message delivered twice.
            Write::Event(start),
            Write::Event(failed),
            Write::Event(succeeded),
            Write::Event(late),
            Write::Event(step_event(unknown, 1, JobStatus::Succeeded, "w1", t0, 1)),
            Write::Event(step_event(dead, 1, JobStatus::Dead, "w1", t0, 1)),
            Write::Event(step_event(done, 1, JobStatus::Succeeded, "w1", t0, 1)),
        ])
        .await
        .expect("events");
    let steps = store.job_steps(job).await.expect("steps");
    let seen: Vec<_> = steps
        .iter()
        .map(|s| {
            (
                s.attempt,
                s.status,
                s.worker.as_deref(),
                s.started_at,
                s.run_ms,
                s.error.as_deref(),
            )
        })
        .collect();
    let ms = |n| Some(t0 + time::Duration::milliseconds(n));
    assert_eq!(
        seen,
        [
            (1, JobStatus::Running, Some("w1"), None, None, None),
            (
                1,
                JobStatus::Retrying,
                Some("w1"),
                None,
                Some(1500),
                Some("boom")
            ),
            (2, JobStatus::Succeeded, Some("w2"), ms(3), Some(7), None),
            (2, JobStatus::Running, Some("w3"), None, None, None),
        ]
    );
    assert_eq!(steps[0].at, t0 + time::Duration::milliseconds(1));
    let job_record = store.get(job).await.expect("get").expect("kept");
    assert_eq!(
        job_record.status,
        JobStatus::Succeeded,
        "the late start changed nothing"
    );
    assert!(store.job_steps(unknown).await.expect("steps").is_empty());

    // A redrive is a step the API took: the next attempt is queued again, by no worker.
    let redrive = Write::Redrive {
        id: dead,
        attempt: 2,
        max_attempts: 2,
        resolve_at: t0,
    };
    store.apply(&[redrive]).await.expect("redrive");
    let steps = store.job_steps(dead).await.expect("steps");
    let seen: Vec<_> = steps
        .iter()
        .map(|s| (s.attempt, s.status, s.worker.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, JobStatus::Dead, Some("w1")),
            (2, JobStatus::Pending, None)
        ]
    );
    store
        .apply(&[Write::MarkDead {
            id: dead,
            attempt: 2,
            error: "its publish failed".into(),
        }])
        .await
        .expect("dead again");
    let last = store
        .job_steps(dead)
        .await
        .expect("steps")
        .pop()
        .expect("a step");
    assert_eq!(
        (last.attempt, last.status, last.error.as_deref()),
        (2, JobStatus::Dead, Some("its publish failed"))
    );

    // A history is bounded: a job redelivered without end (or events forged for it) keeps at
    // most MAX_STEPS steps, and a step keeps the first 4096 characters of an error.
    let chatty = JobId::new();
    let mut writes = vec![insert(chatty, "sleep", json!({}), None)];
    let limit = i64::from(super::dashboard::MAX_STEPS);
    for ms in 0..limit + 10 {
        writes.push(Write::Event(step_event(
            chatty,
            1,
            JobStatus::Running,
            "w1",
            t0,
            ms,
        )));
    }
    let mut long = step_event(job, 9, JobStatus::Failed, "w1", t0, 9);
    long.error = Some("é".repeat(10_000));
    writes.push(Write::Event(long));
    store.apply(&writes).await.expect("events");
    let steps = store.job_steps(chatty).await.expect("steps");
    assert_eq!(steps.len() as i64, limit);
    let cut = store
        .job_steps(job)
        .await
        .expect("steps")
        .pop()
        .expect("a step");
    assert_eq!(cut.error.expect("an error").chars().count(), 4096);

    // Each way a job goes takes its history: deleted, dead and deleted in bulk, purged.
    store.apply(&[Write::Delete(job)]).await.expect("delete");
    assert_eq!(
        store.delete_dead(&[dead]).await.expect("bulk delete"),
        [dead]
    );
    let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
    store.purge(later, later, 100).await.expect("purge");
    store.apply(&[Write::Delete(chatty)]).await.expect("delete");
    for id in [job, dead, done, chatty] {
        assert!(store.job_steps(id).await.expect("steps").is_empty(), "{id}");
    }
}
