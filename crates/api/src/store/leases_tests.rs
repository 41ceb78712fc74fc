//! Long jobs' leases in the store, run on both backends by `tests.rs`: a long start and its
//! heartbeats hold the lease, a lapsed one starts the job again once (or ends it dead on its
//! last attempt), and the old attempt's late events change nothing.

use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use offload_shared::{JobEvent, JobId, JobKind, JobStatus};

use super::{JobRecord, Store, Write};

fn job(id: JobId, max_attempts: u32) -> Write {
    Write::Insert {
        job: JobRecord::queued(
            id,
            JobKind::parse("report.build").expect("valid"),
            max_attempts,
            3_600_000,
            OffsetDateTime::now_utc(),
        ),
        payload: json!({"seconds": 3600}),
        key: None,
        resolve_at: None,
        inputs: Vec::new(),
    }
}

fn at(id: JobId, attempt: u32, status: JobStatus, when: OffsetDateTime) -> JobEvent {
    let mut ev = JobEvent::now(id, attempt, status, "w1");
    ev.at = when;
    ev
}

fn long_start(id: JobId, when: OffsetDateTime, lease_ms: u64) -> Write {
    let mut ev = at(id, 1, JobStatus::Running, when);
    ev.lease_ms = Some(lease_ms);
    Write::Event(ev)
}

fn heartbeat(id: JobId, when: OffsetDateTime, lease_ms: u64) -> Write {
    let mut ev = JobEvent::heartbeat(id, 1, "w1", lease_ms);
    ev.at = when;
    Write::Event(ev)
}

pub(super) async fn a_lapsed_lease_starts_the_job_again_once_and_fences_its_old_attempt(
    store: Store,
) {
    // Stored to the microsecond.
    let now = OffsetDateTime::now_utc();
    let t0 = now
        .replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .expect("in range");
    let s = |n: i64| t0 + time::Duration::seconds(n);
    let (restarts, dies, plain) = (JobId::new(), JobId::new(), JobId::new());
    store
        .apply(&[
            job(restarts, 3),
            job(dies, 1),
            job(plain, 3),
            long_start(restarts, s(0), 60_000),
            long_start(dies, s(0), 60_000),
            Write::Event(at(plain, 1, JobStatus::Running, s(0))),
        ])
        .await
        .expect("starts");
    let got = store.get(restarts).await.expect("get").expect("stored");
    let lease = got.lease_until.expect("a long start holds a lease");
    assert!(
        lease > t0 + time::Duration::seconds(55),
        "{lease} ~ now + 60 s"
    );
    assert_eq!(
        got.heartbeat_at,
        Some(s(0)),
        "the start is the first heartbeat"
    );
    let plain_job = store.get(plain).await.expect("get").expect("stored");
    assert_eq!(
        (plain_job.lease_until, plain_job.heartbeat_at),
        (None, None),
        "a job that is not long holds no lease"
    );
    // A heartbeat of an attempt whose start set no lease (it was redelivered to a worker that
    // knows the kind is long) sets it, so a worker dying then is noticed too.
    store
        .apply(&[heartbeat(plain, s(1), 60_000)])
        .await
        .expect("heartbeat");
    let plain_job = store.get(plain).await.expect("get").expect("stored");
    assert!(plain_job.lease_until.is_some() && plain_job.heartbeat_at == Some(s(1)));
    assert!(
        store
            .reap_lapsed(OffsetDateTime::now_utc(), 10)
            .await
            .expect("reap")
            .is_empty(),
        "no lease has lapsed"
    );

    // Heartbeats renew: a later one sets the lease (here: to lapse at once), an earlier one
    // arriving late changes nothing.
    store
        .apply(&[
            heartbeat(restarts, s(2), 0),
            heartbeat(dies, s(2), 0),
            heartbeat(restarts, s(1), 60_000),
        ])
        .await
        .expect("heartbeats");
    let got = store.get(restarts).await.expect("get").expect("stored");
    assert_eq!(got.heartbeat_at, Some(s(2)), "the latest heartbeat shows");
    assert!(
        got.lease_until.expect("leased") < t0 + time::Duration::seconds(30),
        "the stale heartbeat did not renew the lease"
    );

    // At the reaper's start (or its broker back) every running lease gets time to catch up.
    let catch_up = OffsetDateTime::now_utc() + time::Duration::seconds(30);
    assert_eq!(store.extend_leases(catch_up).await.expect("extend"), 2);
    assert!(
        store
            .reap_lapsed(OffsetDateTime::now_utc() + time::Duration::seconds(1), 10)
            .await
            .expect("reap")
            .is_empty(),
        "extended leases are not lapsed"
    );
    store
        .apply(&[
            heartbeat(restarts, s(2) + time::Duration::milliseconds(1), 0),
            heartbeat(dies, s(2) + time::Duration::milliseconds(1), 0),
        ])
        .await
        .expect("heartbeats caught up");

    let later = OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let mut reaped = store.reap_lapsed(later, 10).await.expect("reap");
    reaped.sort_by_key(|l| l.restarted);
    assert_eq!(reaped.len(), 2, "{reaped:?}");
    assert!(!reaped[0].restarted && reaped[0].id == dies, "{reaped:?}");
    assert!(
        reaped[1].restarted && reaped[1].id == restarts,
        "{reaped:?}"
    );
    assert!(
        store.reap_lapsed(later, 10).await.expect("reap").is_empty(),
        "each lapsed lease is acted on once"
    );

    let again = store.get(restarts).await.expect("get").expect("stored");
    assert_eq!((again.status, again.attempt), (JobStatus::Pending, 2));
    assert_eq!(again.lease_until, None);
    let why = again.error.expect("the reason");
    assert!(
        why.contains("attempt 1: worker w1 stopped renewing its lease")
            && why.contains("started again as attempt 2"),
        "{why}"
    );
    let dead = store.get(dies).await.expect("get").expect("stored");
    assert_eq!((dead.status, dead.attempt), (JobStatus::Dead, 1));
    let why = dead.error.expect("the reason");
    assert!(
        why.contains("last attempt") && why.contains("/retry"),
        "{why}"
    );

    // The reconciler publishes the restarted job as attempt 2.
    let claimed = store
        .claim_unresolved(later, Duration::from_secs(30), 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!((claimed[0].job.id, claimed[0].job.attempt), (restarts, 2));
    assert_eq!(claimed[0].payload, json!({"seconds": 3600}));

    // The old attempt's worker was only cut off: what it reports now is fenced off.
    store
        .apply(&[
            Write::Event(at(restarts, 1, JobStatus::Succeeded, s(3))),
            heartbeat(restarts, s(3), 60_000),
        ])
        .await
        .expect("late events");
    let fenced = store.get(restarts).await.expect("get").expect("stored");
    assert_eq!((fenced.status, fenced.attempt), (JobStatus::Pending, 2));
    assert_eq!(fenced.lease_until, None);

    // Attempt 2 runs under its own lease and ends it.
    let mut start = at(restarts, 2, JobStatus::Running, s(4));
    start.lease_ms = Some(60_000);
    store
        .apply(&[
            Write::Event(start),
            Write::Event(at(restarts, 2, JobStatus::Succeeded, s(5))),
        ])
        .await
        .expect("attempt 2");
    let done = store.get(restarts).await.expect("get").expect("stored");
    assert_eq!(
        (done.status, done.attempt, done.runs),
        (JobStatus::Succeeded, 2, 2)
    );
    assert_eq!(done.lease_until, None, "an end releases the lease");
    assert_eq!(done.heartbeat_at, Some(s(4)));
}
