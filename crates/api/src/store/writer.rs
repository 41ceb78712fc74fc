//! The single writer: drains whatever writes are waiting (about [`MAX_BATCH`]) and applies them in
//! one transaction, then answers the requests and acknowledges the events it applied. Under load
//! many inserts and events share one commit; when idle a write commits at once.
//!
//! A failure never stalls requests behind events: when a batch fails, its requests are applied
//! again at once without the events (one by one if the database refused a statement), and its
//! event messages are held, unacknowledged, and retried with back-off while later batches go
//! on. A request whose caller stopped waiting leaves nothing behind: it is skipped if the caller
//! is already gone, and undone if the caller left while it was being committed.

use std::{future::Future, ops::Range, sync::Arc, time::Duration};

use futures_util::{FutureExt, future::BoxFuture};
use lapin::Acker;
use time::OffsetDateTime;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use offload_shared::{
    JobId,
    broker::{self, BrokerError, Settle},
};

use super::{IdempotencyKey, JobRecord, Store, StoreError, Write, Written};

/// Longest a request waits for its write to commit; past it the request fails (503) and the
/// write, if it commits later, is undone.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Writes applied in one transaction: the writer stops taking more once it holds this many (one
/// event message may hold several hundred).
pub const MAX_BATCH: usize = 1024;

/// First wait before a failed event message is applied again; doubled per failure.
const EVENT_RETRY_BASE: Duration = Duration::from_millis(100);
/// Longest wait between two tries of a failed event message.
const EVENT_RETRY_CAP: Duration = Duration::from_secs(5);

/// What the request's caller gets back.
type Reply = Result<Vec<Written>, StoreError>;

/// What the writer applies batches to: the [`Store`]; in tests, a store that can be held.
pub(crate) trait Apply: Send + Sync + 'static {
    /// Applies `writes` in one transaction; one result per write.
    fn apply<'a>(
        &'a self,
        writes: &'a [Write],
    ) -> impl Future<Output = Result<Vec<Written>, StoreError>> + Send + 'a;
}

impl Apply for Store {
    fn apply<'a>(
        &'a self,
        writes: &'a [Write],
    ) -> impl Future<Output = Result<Vec<Written>, StoreError>> + Send + 'a {
        Store::apply(self, writes)
    }
}

/// Acknowledges one event message once its events are committed: the broker's acker, or in
/// tests a probe that records it.
pub(crate) trait EventAck: Send + Sync + 'static {
    /// Acknowledges the message, with `multiple` every earlier one on its channel too.
    fn ack(&self, multiple: bool, deadline: Duration) -> BoxFuture<'_, Result<(), BrokerError>>;
}

impl EventAck for Acker {
    fn ack(&self, multiple: bool, deadline: Duration) -> BoxFuture<'_, Result<(), BrokerError>> {
        broker::settle(self, Settle::Ack, multiple, deadline).boxed()
    }
}

enum Op {
    /// Writes a request waits for, committed together.
    Request(Vec<Write>, oneshot::Sender<Reply>),
    /// A message's lifecycle events (none, if it was unreadable), acknowledged once applied.
    Delivery(Vec<Write>, Box<dyn EventAck>),
}

/// Handle to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Op>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Op")
    }
}

impl StoreWriter {
    /// Starts the writer task. It runs until every handle is dropped, then finishes its last
    /// batch. `deadline` bounds each acknowledgement of applied events.
    pub fn spawn(store: Store, deadline: Duration) -> (Self, tokio::task::JoinHandle<()>) {
        Self::spawn_on(store, deadline)
    }

    pub(crate) fn spawn_on(
        store: impl Apply,
        deadline: Duration,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let task = tokio::spawn(run(store, rx, deadline));
        (StoreWriter { tx }, task)
    }

    /// Records a newly accepted job, claiming `key` for it; returns once committed.
    pub async fn insert(
        &self,
        job: JobRecord,
        payload: serde_json::Value,
        key: Option<IdempotencyKey>,
        resolve_at: Option<OffsetDateTime>,
    ) -> Result<Written, StoreError> {
        self.request(Write::Insert {
            job,
            payload,
            key,
            resolve_at,
            inputs: Vec::new(),
        })
        .await
    }

    /// Forgets a job; returns once committed.
    pub async fn delete(&self, id: JobId) -> Result<(), StoreError> {
        self.request(Write::Delete(id)).await.map(|_| ())
    }

    /// Any other write; returns once committed.
    pub async fn write(&self, write: Write) -> Result<Written, StoreError> {
        self.request(write).await
    }

    /// Several writes, committed in one transaction; one result per write. Past
    /// [`REQUEST_DEADLINE`] the caller gets [`StoreError::WriteTimedOut`], and whatever the
    /// writes create is removed again if they commit later.
    pub async fn write_all(&self, writes: Vec<Write>) -> Result<Vec<Written>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Op::Request(writes, done))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        match tokio::time::timeout(REQUEST_DEADLINE, wait).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(StoreError::WriterGone),
            Err(_) => Err(StoreError::WriteTimedOut(REQUEST_DEADLINE)),
        }
    }

    /// Queues one message's events; `acker` is acknowledged after they are committed.
    pub async fn events(&self, writes: Vec<Write>, acker: Acker) -> Result<(), StoreError> {
        self.delivery(writes, Box::new(acker)).await
    }

    pub(crate) async fn delivery(
        &self,
        writes: Vec<Write>,
        ack: Box<dyn EventAck>,
    ) -> Result<(), StoreError> {
        self.tx
            .send(Op::Delivery(writes, ack))
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// True while the writer task runs.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    async fn request(&self, write: Write) -> Result<Written, StoreError> {
        let mut written = self.write_all(vec![write]).await?;
        Ok(written.pop().unwrap_or(Written::Done))
    }
}

/// A request in a batch: its writes are `range` of the batch.
struct Waiter {
    range: Range<usize>,
    done: oneshot::Sender<Reply>,
}

/// Event messages that failed to apply, waiting to be tried again.
struct Held {
    deliveries: Vec<(Vec<Write>, Box<dyn EventAck>)>,
    failures: u32,
    retry_at: Instant,
}

impl Held {
    fn new(deliveries: Vec<(Vec<Write>, Box<dyn EventAck>)>, failures: u32) -> Self {
        let exp = failures.saturating_sub(1).min(16);
        let wait = (EVENT_RETRY_BASE * 2u32.pow(exp)).min(EVENT_RETRY_CAP);
        Held {
            deliveries,
            failures,
            retry_at: Instant::now() + wait,
        }
    }
}

struct Writer<S> {
    store: S,
    deadline: Duration,
    /// Failed event messages, unacknowledged. While any is held, later messages are
    /// acknowledged one by one: a `multiple` ack would cover the held ones too.
    held: Vec<Held>,
}

async fn run(store: impl Apply, mut rx: mpsc::Receiver<Op>, deadline: Duration) {
    let mut writer = Writer {
        store,
        deadline,
        held: Vec::new(),
    };
    loop {
        let next_retry = writer.held.iter().map(|h| h.retry_at).min();
        let first = tokio::select! {
            op = rx.recv() => match op {
                Some(op) => Some(op),
                None => break,
            },
            () = sleep_until(next_retry), if next_retry.is_some() => None,
        };
        if let Some(first) = first {
            let mut ops = vec![first];
            let mut count = ops_len(&ops[0]);
            while count < MAX_BATCH {
                let Ok(op) = rx.try_recv() else { break };
                count += ops_len(&op);
                ops.push(op);
            }
            writer.batch(ops).await;
        }
        writer.retry_due(false).await;
    }
    // Last chance for held events; whatever still fails stays unacknowledged, and the broker
    // hands it to the next consumer.
    writer.retry_due(true).await;
    tracing::debug!("job store writer stopped");
}

fn ops_len(op: &Op) -> usize {
    match op {
        Op::Request(w, _) | Op::Delivery(w, _) => w.len(),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<S: Apply> Writer<S> {
    /// Applies one batch of requests and event messages.
    async fn batch(&mut self, ops: Vec<Op>) {
        let mut writes = Vec::with_capacity(ops.iter().map(ops_len).sum());
        let mut waiters = Vec::new();
        let mut deliveries = Vec::new();
        let mut skipped = 0;
        for op in ops {
            match op {
                // Its caller gave up before the write began: nothing to write, nothing to undo.
                Op::Request(_, done) if done.is_closed() => skipped += 1,
                Op::Request(w, done) => {
                    let start = writes.len();
                    writes.extend(w);
                    waiters.push(Waiter {
                        range: start..writes.len(),
                        done,
                    });
                }
                Op::Delivery(w, ack) => {
                    let start = writes.len();
                    writes.extend(w);
                    deliveries.push((start..writes.len(), ack));
                }
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "skipped store writes whose requests had stopped waiting"
            );
        }
        if writes.is_empty() && deliveries.is_empty() {
            return;
        }
        match self.store.apply(&writes).await {
            Ok(results) => {
                self.answer(&writes, &results, waiters).await;
                let acks: Vec<_> = deliveries.into_iter().map(|(_, ack)| ack).collect();
                self.ack(&acks).await;
            }
            Err(e) => {
                tracing::error!(error = %e, batch = writes.len(), "job store write failed");
                if !deliveries.is_empty() {
                    tracing::warn!(
                        messages = deliveries.len(),
                        "holding the batch's event messages to retry them apart"
                    );
                    let held = deliveries
                        .into_iter()
                        .map(|(range, ack)| (writes[range].to_vec(), ack))
                        .collect();
                    self.held.push(Held::new(held, 1));
                    if unreachable(&e) {
                        // Trying again now would wait as long once more.
                        self.requests(writes, waiters, Some(e)).await;
                    } else {
                        // The requests did not fail because of these events, perhaps: try
                        // them again at once, alone.
                        self.requests(writes, waiters, None).await;
                    }
                } else {
                    self.requests(writes, waiters, Some(e)).await;
                }
            }
        }
    }

    /// Applies the requests of a failed batch without its events (`failed` is the error if
    /// they were alone already): together first, then, if the database refused a statement,
    /// each on its own, so one bad request fails only itself.
    async fn requests(
        &mut self,
        batch: Vec<Write>,
        waiters: Vec<Waiter>,
        failed: Option<StoreError>,
    ) {
        if waiters.is_empty() {
            return;
        }
        let mut writes = Vec::new();
        let mut own = Vec::with_capacity(waiters.len());
        for w in waiters {
            let start = writes.len();
            writes.extend_from_slice(&batch[w.range.clone()]);
            own.push(Waiter {
                range: start..writes.len(),
                done: w.done,
            });
        }
        let error = match failed {
            Some(e) => e,
            None => match self.store.apply(&writes).await {
                Ok(results) => return self.answer(&writes, &results, own).await,
                Err(e) => {
                    tracing::error!(error = %e, batch = writes.len(), "job store write failed again without events");
                    e
                }
            },
        };
        if own.len() == 1 || !refused_a_statement(&error) {
            let shared = Arc::new(error);
            for w in own {
                let _ = w.done.send(Err(StoreError::WriteFailed(shared.clone())));
            }
            return;
        }
        for w in own {
            let alone = &writes[w.range.clone()];
            match self.store.apply(alone).await {
                Ok(results) => {
                    let w = Waiter {
                        range: 0..alone.len(),
                        done: w.done,
                    };
                    self.answer(alone, &results, vec![w]).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, writes = alone.len(), "a request's store write failed");
                    let _ = w.done.send(Err(StoreError::WriteFailed(Arc::new(e))));
                }
            }
        }
    }

    /// Hands each request its results; undoes what a request committed if its caller is gone.
    async fn answer(&mut self, writes: &[Write], results: &[Written], waiters: Vec<Waiter>) {
        let mut undo = Vec::new();
        for w in waiters {
            let mine = results.get(w.range.clone()).unwrap_or_default().to_vec();
            if w.done.send(Ok(mine)).is_err() {
                undo.extend(undo_writes(
                    &writes[w.range.clone()],
                    results.get(w.range).unwrap_or_default(),
                ));
            }
        }
        if undo.is_empty() {
            return;
        }
        let ids: Vec<JobId> = undo.iter().filter_map(write_id).collect();
        match self.store.apply(&undo).await {
            Ok(_) => tracing::warn!(
                ?ids,
                "undid store writes whose requests stopped waiting before they committed"
            ),
            Err(e) => tracing::error!(
                error = %e,
                ?ids,
                "could not undo store writes whose requests stopped waiting; these jobs may show without having been published"
            ),
        }
    }

    /// Acknowledges applied event messages.
    async fn ack(&self, acks: &[Box<dyn EventAck>]) {
        if self.held.is_empty() {
            // Event messages arrive in delivery-tag order on one channel, so one `multiple`
            // ack on the last one covers the batch.
            if let Some(ack) = acks.last() {
                self.ack_one(ack.as_ref(), true).await;
            }
        } else {
            for ack in acks {
                self.ack_one(ack.as_ref(), false).await;
            }
        }
    }

    async fn ack_one(&self, ack: &dyn EventAck, multiple: bool) {
        if let Err(e) = ack.ack(multiple, self.deadline).await {
            // The events stay unacked and the broker redelivers them; applying twice is harmless.
            tracing::warn!(error = %e, "could not acknowledge applied events");
        }
    }

    /// Tries again the held event messages that are due (all of them if `all`). A group that
    /// the database refused is split in halves, tried at once, so one bad message is found
    /// in a few steps and holds back no other.
    async fn retry_due(&mut self, all: bool) {
        let now = Instant::now();
        if !self.held.iter().any(|h| all || h.retry_at <= now) {
            return;
        }
        let (due, waiting): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| all || h.retry_at <= now);
        self.held = waiting;
        let mut queue = due;
        while let Some(group) = queue.pop() {
            let writes: Vec<Write> = group
                .deliveries
                .iter()
                .flat_map(|(w, _)| w.iter().cloned())
                .collect();
            match self.store.apply(&writes).await {
                Ok(_) => {
                    tracing::info!(
                        messages = group.deliveries.len(),
                        failures = group.failures,
                        "applied held event messages"
                    );
                    // Earlier held messages may remain: one by one.
                    for (_, ack) in &group.deliveries {
                        self.ack_one(ack.as_ref(), false).await;
                    }
                }
                Err(e) => {
                    let failures = group.failures + 1;
                    tracing::warn!(error = %e, messages = group.deliveries.len(), failures, "held event messages failed again");
                    let mut deliveries = group.deliveries;
                    if deliveries.len() > 1 && refused_a_statement(&e) && !all {
                        let half = deliveries.split_off(deliveries.len() / 2);
                        for part in [deliveries, half] {
                            queue.push(Held {
                                deliveries: part,
                                failures,
                                retry_at: now,
                            });
                        }
                    } else {
                        self.held.push(Held::new(deliveries, failures));
                    }
                }
            }
        }
    }
}

/// True if the database refused a statement (rather than being unreachable): applying the
/// writes apart can then tell the bad ones from the good ones.
fn refused_a_statement(e: &StoreError) -> bool {
    matches!(e, StoreError::Database(sqlx::Error::Database(_)))
}

/// True if no connection could be had within the pool's timeout: the database is away.
fn unreachable(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
    )
}

/// What removes the effects of `writes` (with their `results`) that nobody will publish: a
/// recorded job (and the key it claimed) is deleted; a redriven job is marked dead again.
fn undo_writes(writes: &[Write], results: &[Written]) -> Vec<Write> {
    writes
        .iter()
        .zip(results)
        .filter(|(_, r)| **r == Written::Done)
        .filter_map(|(w, _)| match w {
            Write::Insert { job, .. } => Some(Write::Delete(job.id)),
            Write::Redrive { id, attempt, .. } => Some(Write::MarkDead {
                id: *id,
                attempt: *attempt,
                error: format!(
                    "the retry request timed out before the job store recorded it (after {REQUEST_DEADLINE:?}); \
                     it was not enqueued and the job is still dead: request the retry again"
                ),
            }),
            _ => None,
        })
        .collect()
}

fn write_id(write: &Write) -> Option<JobId> {
    match write {
        Write::Delete(id) | Write::MarkDead { id, .. } => Some(*id),
        _ => None,
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
