//! The single writer: drains whatever writes are waiting (about [`MAX_BATCH`]) and applies them in
//! one transaction, then answers the requests and acknowledges the events it applied. Under load
//! many inserts and events share one commit; when idle a write commits at once.

use std::{sync::Arc, time::Duration};

use lapin::Acker;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use offload_shared::{
    JobId,
    broker::{self, Settle},
};

use super::{IdempotencyKey, JobRecord, Store, StoreError, Write, Written};

/// Longest a request waits for its write to commit; past it the request fails (503).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Writes applied in one transaction: the writer stops taking more once it holds this many (one
/// event message may hold several hundred).
pub const MAX_BATCH: usize = 1024;

/// What the request's caller gets back.
type Reply = Result<Vec<Written>, StoreError>;

enum Op {
    /// Writes a request waits for, committed together.
    Request(Vec<Write>, oneshot::Sender<Reply>),
    /// A message's lifecycle events (none, if it was unreadable), acknowledged once applied.
    Delivery(Vec<Write>, Acker),
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

    /// Several writes, committed in one transaction; one result per write.
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
        self.tx
            .send(Op::Delivery(writes, acker))
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

async fn run(store: Store, mut rx: mpsc::Receiver<Op>, deadline: Duration) {
    // What waits for the batch: a request (its result is the next one) or a delivery (its
    // events' results are skipped; the last delivery's acker settles them all).
    enum Waiter {
        Request(usize, oneshot::Sender<Reply>),
        Delivery(usize, Acker),
    }
    let mut waiters = Vec::with_capacity(MAX_BATCH);
    let mut writes = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        writes.clear();
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Request(w, done) => {
                    waiters.push(Waiter::Request(w.len(), done));
                    writes.extend(w);
                }
                Op::Delivery(w, acker) => {
                    waiters.push(Waiter::Delivery(w.len(), acker));
                    writes.extend(w);
                }
            }
            if writes.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let outcome = store.apply(&writes).await.map_err(Arc::new);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, batch = writes.len(), "job store write failed");
        }
        let mut results = match &outcome {
            Ok(results) => results.clone().into_iter(),
            Err(_) => Vec::new().into_iter(),
        };
        let mut last_delivery = None;
        for waiter in waiters.drain(..) {
            match waiter {
                Waiter::Request(count, done) => {
                    let result = match &outcome {
                        Ok(_) => Ok(results.by_ref().take(count).collect()),
                        Err(e) => Err(StoreError::WriteFailed(e.clone())),
                    };
                    let _ = done.send(result);
                }
                Waiter::Delivery(events, acker) => {
                    results.by_ref().take(events).for_each(drop);
                    last_delivery = Some(acker);
                }
            }
        }
        // Event messages arrive in delivery-tag order on one channel, so one `multiple` ack (or
        // nack) on the last delivery covers the whole batch.
        if let Some(acker) = last_delivery {
            let how = if outcome.is_ok() {
                Settle::Ack
            } else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Settle::Requeue
            };
            if let Err(e) = broker::settle(&acker, how, true, deadline).await {
                // The events stay unacked and the broker redelivers them; applying twice is harmless.
                tracing::warn!(error = %e, "could not acknowledge applied events");
            }
        }
    }
    tracing::debug!("job store writer stopped");
}
