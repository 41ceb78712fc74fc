//! The writer against a real SQLite store: a failed event batch neither fails nor stalls the
//! requests beside it, one bad message is isolated from the rest, and writes whose callers
//! stopped waiting leave nothing behind. Failures are real ones: a trigger makes SQLite refuse
//! the statements of one job.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;
use sqlx::SqlitePool;
use tokio::sync::{Semaphore, mpsc as tmpsc};

use offload_shared::{JobEvent, JobKind, JobStatus};

use super::*;
use crate::store::{Backend, tests::sqlite_store};

/// Records the acknowledgements of event messages: (message number, multiple).
#[derive(Clone, Default)]
struct Acks(Arc<Mutex<Vec<(usize, bool)>>>);

struct Probe {
    n: usize,
    acks: Acks,
}

impl EventAck for Probe {
    fn ack(&self, multiple: bool, _deadline: Duration) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.acks.0.lock().expect("acks").push((self.n, multiple));
        async { Ok(()) }.boxed()
    }
}

impl Acks {
    fn probe(&self, n: usize) -> Box<dyn EventAck> {
        Box::new(Probe {
            n,
            acks: self.clone(),
        })
    }

    fn acked(&self, n: usize) -> bool {
        self.0.lock().expect("acks").iter().any(|(m, _)| *m == n)
    }

    fn all(&self) -> Vec<(usize, bool)> {
        self.0.lock().expect("acks").clone()
    }
}

fn pool(store: &Store) -> &SqlitePool {
    match &store.0 {
        Backend::Sqlite(db) => db.pool(),
        Backend::Postgres(_) => unreachable!("these tests run on SQLite"),
    }
}

/// From now on SQLite refuses every change of job `id`, as a database can refuse a statement.
async fn refuse_updates_of(store: &Store, id: JobId) {
    let sql = format!(
        "CREATE TRIGGER refuse_{name} BEFORE UPDATE ON jobs WHEN OLD.id = '{id}'
         BEGIN SELECT RAISE(ABORT, 'refused for the test'); END",
        name = id.as_uuid().simple()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool(store))
        .await
        .expect("trigger");
}

async fn accept_updates_of(store: &Store, id: JobId) {
    let sql = format!("DROP TRIGGER refuse_{}", id.as_uuid().simple());
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool(store))
        .await
        .expect("drop trigger");
}

fn insert(id: JobId) -> Write {
    keyed(id, None)
}

fn keyed(id: JobId, key: Option<IdempotencyKey>) -> Write {
    Write::Insert {
        job: JobRecord::queued(
            id,
            JobKind::parse("noop").expect("valid"),
            3,
            1000,
            OffsetDateTime::now_utc(),
        ),
        payload: json!({}),
        key,
        resolve_at: None,
        inputs: Vec::new(),
    }
}

fn running(id: JobId) -> Write {
    Write::Event(JobEvent::now(id, 1, JobStatus::Running, "w"))
}

async fn status(store: &Store, id: JobId) -> Option<JobStatus> {
    store.get(id).await.expect("get").map(|j| j.status)
}

/// Polls `check` every 10 ms for at most 5 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_failed_event_batch_neither_fails_nor_stalls_the_requests_beside_it() {
    let store = sqlite_store().await;
    let (writer, _task) = StoreWriter::spawn_on(store.clone(), Duration::from_secs(1));
    let (poisoned, fresh, other) = (JobId::new(), JobId::new(), JobId::new());
    writer
        .write_all(vec![insert(poisoned), insert(other)])
        .await
        .expect("setup");
    refuse_updates_of(&store, poisoned).await;
    let acks = Acks::default();

    // Message 1 (its event fails the batch) and a request share one batch: the writer takes
    // both before it runs, as this single-threaded runtime runs it only when we wait.
    writer
        .delivery(vec![running(poisoned)], acks.probe(1))
        .await
        .expect("queued");
    let started = Instant::now();
    let written = writer
        .write_all(vec![insert(fresh)])
        .await
        .expect("the request succeeds although its batch failed");
    assert_eq!(written, vec![Written::Done]);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "no stall: {:?}",
        started.elapsed()
    );
    assert_eq!(status(&store, fresh).await, Some(JobStatus::Queued));
    assert!(
        !acks.acked(1),
        "the failed message is held, not acknowledged"
    );

    // Later messages go on while message 1 is held, acknowledged one by one (a `multiple`
    // ack would cover message 1 too).
    writer
        .delivery(vec![running(other)], acks.probe(2))
        .await
        .expect("queued");
    eventually("message 2 applied", || async { acks.acked(2) }).await;
    assert_eq!(status(&store, other).await, Some(JobStatus::Running));
    assert_eq!(acks.all(), vec![(2, false)]);

    // Once the database takes it, the held message is applied and acknowledged.
    accept_updates_of(&store, poisoned).await;
    eventually("message 1 applied after back-off", || async {
        acks.acked(1)
    })
    .await;
    assert_eq!(status(&store, poisoned).await, Some(JobStatus::Running));
    assert_eq!(acks.all(), vec![(2, false), (1, false)]);

    // Nothing held any more: a batch is acknowledged with one `multiple` ack again.
    writer
        .delivery(vec![running(fresh)], acks.probe(3))
        .await
        .expect("queued");
    eventually("message 3 applied", || async { acks.acked(3) }).await;
    assert_eq!(acks.all().last(), Some(&(3, true)));
}

#[tokio::test]
async fn one_message_the_database_refuses_holds_back_no_other() {
    let store = sqlite_store().await;
    let (writer, _task) = StoreWriter::spawn_on(store.clone(), Duration::from_secs(1));
    let ids: Vec<JobId> = (0..5).map(|_| JobId::new()).collect();
    writer
        .write_all(ids.iter().map(|id| insert(*id)).collect())
        .await
        .expect("setup");
    refuse_updates_of(&store, ids[2]).await;
    let acks = Acks::default();
    for (n, id) in ids.iter().enumerate() {
        writer
            .delivery(vec![running(*id)], acks.probe(n))
            .await
            .expect("queued");
    }
    // All five fail together; split in halves, the four good ones get through.
    eventually("the four good messages applied", || async {
        [0, 1, 3, 4].iter().all(|n| acks.acked(*n))
    })
    .await;
    for n in [0, 1, 3, 4] {
        assert_eq!(
            status(&store, ids[n]).await,
            Some(JobStatus::Running),
            "job {n}"
        );
    }
    assert!(!acks.acked(2), "the refused one stays unacknowledged");
    assert_eq!(status(&store, ids[2]).await, Some(JobStatus::Queued));
}

#[tokio::test]
async fn in_a_failed_batch_only_the_bad_request_fails() {
    let store = sqlite_store().await;
    let (writer, _task) = StoreWriter::spawn_on(store.clone(), Duration::from_secs(1));
    let (bad, good) = (JobId::new(), JobId::new());
    writer.write_all(vec![insert(bad)]).await.expect("setup");
    refuse_updates_of(&store, bad).await;
    let (a, b) = tokio::join!(
        writer.write_all(vec![Write::MarkDead {
            id: bad,
            attempt: 1,
            error: "x".into()
        }]),
        writer.write_all(vec![insert(good)]),
    );
    assert!(
        matches!(&a, Err(StoreError::WriteFailed(cause)) if cause.to_string().contains("refused for the test")),
        "{a:?}"
    );
    assert_eq!(b.expect("the good request"), vec![Written::Done]);
    assert_eq!(status(&store, good).await, Some(JobStatus::Queued));
}

/// The store, recording the jobs every batch inserts.
struct Recording {
    store: Store,
    inserted: Arc<Mutex<Vec<JobId>>>,
}

impl Apply for Recording {
    fn apply<'a>(
        &'a self,
        writes: &'a [Write],
    ) -> impl Future<Output = Result<Vec<Written>, StoreError>> + Send + 'a {
        self.inserted
            .lock()
            .expect("inserted")
            .extend(writes.iter().filter_map(|w| match w {
                Write::Insert { job, .. } => Some(job.id),
                _ => None,
            }));
        self.store.apply(writes)
    }
}

#[tokio::test]
async fn a_request_whose_caller_already_gave_up_is_not_written() {
    let store = sqlite_store().await;
    let inserted = Arc::new(Mutex::new(Vec::new()));
    let recording = Recording {
        store: store.clone(),
        inserted: inserted.clone(),
    };
    let (writer, _task) = StoreWriter::spawn_on(recording, Duration::from_secs(1));
    let (gave_up, waited) = (JobId::new(), JobId::new());
    let (done, wait) = oneshot::channel();
    drop(wait);
    writer
        .tx
        .send(Op::Request(vec![insert(gave_up)], done))
        .await
        .expect("queued");
    writer.write_all(vec![insert(waited)]).await.expect("next");
    assert_eq!(status(&store, waited).await, Some(JobStatus::Queued));
    assert_eq!(status(&store, gave_up).await, None);
    assert_eq!(
        *inserted.lock().expect("inserted"),
        vec![waited],
        "the abandoned insert never reached the database"
    );
}

/// The store, with each batch held at a gate until the test lets it through.
struct Gated {
    store: Store,
    entered: tmpsc::UnboundedSender<()>,
    gate: Arc<Semaphore>,
}

impl Apply for Gated {
    async fn apply<'a>(&'a self, writes: &'a [Write]) -> Result<Vec<Written>, StoreError> {
        let _ = self.entered.send(());
        self.gate.acquire().await.expect("gate").forget();
        self.store.apply(writes).await
    }
}

#[tokio::test]
async fn writes_that_commit_after_their_caller_gave_up_are_undone() {
    let store = sqlite_store().await;
    // A dead job to redrive, and a key the insert claims.
    let dead = JobId::new();
    store
        .apply(&[
            insert(dead),
            Write::Event(JobEvent::now(dead, 1, JobStatus::Dead, "w")),
        ])
        .await
        .expect("setup");
    let (entered_tx, mut entered) = tmpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let gated = Gated {
        store: store.clone(),
        entered: entered_tx,
        gate: gate.clone(),
    };
    let (writer, _task) = StoreWriter::spawn_on(gated, Duration::from_secs(1));
    let key = IdempotencyKey {
        key: "k".into(),
        fingerprint: "f".into(),
    };
    let inserted = JobId::new();
    let writes = vec![
        keyed(inserted, Some(key.clone())),
        Write::Redrive {
            id: dead,
            attempt: 2,
            max_attempts: 4,
            resolve_at: OffsetDateTime::now_utc(),
        },
    ];
    let (done, wait) = oneshot::channel();
    writer
        .tx
        .send(Op::Request(writes, done))
        .await
        .expect("queued");
    // The batch is being applied when the caller stops waiting (as at REQUEST_DEADLINE).
    entered.recv().await.expect("applying");
    drop(wait);
    gate.add_permits(100);

    // The writer undoes before it takes the next request: once this one is answered, the
    // undo has run.
    writer
        .write_all(vec![insert(JobId::new())])
        .await
        .expect("next");
    assert_eq!(status(&store, inserted).await, None, "the insert is undone");
    assert_eq!(
        status(&store, dead).await,
        Some(JobStatus::Dead),
        "the redrive is undone"
    );
    let job = store.get(dead).await.expect("get").expect("kept");
    assert_eq!(job.attempt, 2);
    assert!(
        job.error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{job:?}"
    );
    // The key is free for the client's retry.
    let again = writer
        .write_all(vec![keyed(JobId::new(), Some(key))])
        .await
        .expect("retry");
    assert_eq!(again, vec![Written::Done]);
}
