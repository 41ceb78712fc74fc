//! Registry tests (kinds and workers) and jobs the store first hears of through their events,
//! run on both backends by `tests.rs`.

use serde_json::json;
use time::{Duration, OffsetDateTime};

use offload_shared::{
    announce::WorkerState,
    kinds::{JobKind, KindSpec, QueueName},
};

use super::{
    Store,
    registry::{KindRecord, KindSource, WorkerRecord},
};

fn now() -> OffsetDateTime {
    // Stored to the microsecond.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
        .expect("valid")
}

fn resize(queue: &str) -> KindSpec {
    KindSpec {
        name: JobKind::parse("resize").expect("valid"),
        queue: QueueName::parse(queue).expect("valid"),
        payload_schema: json!({"type": "object", "properties": {"width": {"type": "integer"}}}),
        max_attempts: Some(3),
        timeout_s: None,
        priority: Some(offload_shared::Priority::High),
        max_running: Some(4),
        long: true,
    }
}

pub(super) async fn kinds_and_workers_are_recorded_and_replaced(store: Store) {
    assert!(store.kinds().await.expect("kinds").is_empty());
    let first = now() - Duration::seconds(60);
    let mut kind = KindRecord {
        spec: resize("images"),
        source: KindSource::Announced,
        announced_by: Some("w1".into()),
        first_seen_at: first,
        updated_at: first,
        conflict: None,
    };
    store.put_kind(&kind).await.expect("put");
    assert_eq!(store.kinds().await.expect("kinds"), vec![kind.clone()]);

    // A newer spec replaces the old one; when it was first seen stays.
    let later = now();
    let replaced = KindRecord {
        spec: resize("thumbs"),
        announced_by: Some("w2".into()),
        first_seen_at: later,
        updated_at: later,
        ..kind.clone()
    };
    store.put_kind(&replaced).await.expect("replace");
    kind = KindRecord {
        first_seen_at: first,
        ..replaced
    };
    assert_eq!(store.kinds().await.expect("kinds"), vec![kind.clone()]);
    store
        .set_kind_conflict("resize", Some("w3 differs"))
        .await
        .expect("conflict");
    assert_eq!(
        store.kinds().await.expect("kinds")[0].conflict.as_deref(),
        Some("w3 differs")
    );

    // Conditional writes, as two API replicas deciding at once need them.
    let other = KindRecord {
        spec: resize("other"),
        updated_at: now(),
        ..kind.clone()
    };
    assert!(
        !store.record_kind(&other).await.expect("record"),
        "already recorded"
    );
    let stale = kind.updated_at - Duration::seconds(1);
    assert!(!store.replace_kind(&other, stale).await.expect("stale"));
    assert!(
        store
            .replace_kind(&other, kind.updated_at)
            .await
            .expect("replace")
    );
    let got = store.kinds().await.expect("kinds").remove(0);
    assert_eq!(
        (got.spec.queue.as_str(), got.first_seen_at),
        ("other", first)
    );
    assert!(
        !store
            .replace_kind(&other, kind.updated_at)
            .await
            .expect("again"),
        "changed since"
    );
    let mut fresh = other.clone();
    fresh.spec.name = JobKind::parse("crop").expect("valid");
    assert!(store.record_kind(&fresh).await.expect("new name"));

    let worker = WorkerRecord {
        name: "w1".into(),
        state: WorkerState::Alive,
        kinds: vec![resize("images")],
        queues: vec![QueueName::parse("images").expect("valid")],
        in_flight: 2,
        prefetch: 4,
        heartbeat_s: 5,
        started_at: first,
        last_seen_at: later,
        software: "test 1".into(),
    };
    store.put_worker(&worker).await.expect("worker");
    let leaving = WorkerRecord {
        state: WorkerState::Leaving,
        in_flight: 0,
        ..worker.clone()
    };
    store.put_worker(&leaving).await.expect("again");
    assert_eq!(store.workers().await.expect("workers"), vec![leaving]);
    assert!(worker.is_live(later + Duration::seconds(15)));
    assert!(!worker.is_live(later + Duration::seconds(16)));
    assert_eq!(
        store
            .forget_workers(later + Duration::seconds(1))
            .await
            .expect("forget"),
        1
    );
    assert!(store.workers().await.expect("workers").is_empty());
}

pub(super) async fn a_job_another_producer_published_is_recorded_from_its_events(store: Store) {
    use offload_shared::{JobEvent, JobId, JobStatus};
    use serde_json::Value;

    use super::Write;

    let submitted = now() - Duration::seconds(5);
    let id = JobId::new();
    // An event that does not say what the job is records nothing.
    let bare = JobEvent::now(id, 1, JobStatus::Running, "w1");
    store
        .apply(&[Write::Event(bare.clone())])
        .await
        .expect("bare");
    assert_eq!(store.get(id).await.expect("get"), None);

    let running = JobEvent {
        kind: Some(JobKind::parse("noop").expect("valid")),
        max_attempts: Some(3),
        submitted_at: Some(submitted),
        ..bare
    };
    let mut done = JobEvent::now(id, 1, JobStatus::Succeeded, "w1");
    done.result = Some(json!({"ok": true}));
    // Both in one batch, the start repeated: one row, one run.
    store
        .apply(&[
            Write::Event(running.clone()),
            Write::Event(running),
            Write::Event(done),
        ])
        .await
        .expect("events");
    let got = store.get(id).await.expect("get").expect("recorded");
    assert_eq!(got.kind.as_str(), "noop");
    assert_eq!(got.status, JobStatus::Succeeded);
    assert_eq!(got.max_attempts, 3);
    assert_eq!(got.submitted_at, submitted);
    assert_eq!(got.timeout_ms, 0);
    assert_eq!(got.result, Some(json!({"ok": true})));
    assert_eq!(got.runs, 2, "each start counts, a duplicate's too");
    assert!(got.started_at.is_some() && got.finished_at.is_some());
    let input = store.input(id).await.expect("input").expect("row");
    assert_eq!(input.payload, Value::Null);
    assert_eq!(input.budget, 3);
}
