//! A session's consumers: both lanes of every queue the worker serves, merged into one stream of
//! deliveries. A long job is acknowledged once it has started (its lease holds it from then on),
//! which frees its place under the consumer's prefetch although the job still fills a slot; so
//! while long jobs fill every slot of a queue, that queue's consumers are cancelled and the
//! broker hands its jobs to other workers. They consume again when one of those jobs ends.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures_util::{
    StreamExt,
    stream::{self, BoxStream, SelectAll},
};
use lapin::{Channel, message::Delivery, options::BasicCancelOptions, types::ShortString};
use tokio::sync::oneshot;

use offload_shared::{Priority, Settings, broker};

/// A running long job's request to keep its slot once its delivery is acknowledged; answered
/// once no consumer can hand this worker a job for that slot.
#[derive(Debug)]
pub(crate) struct Hold {
    /// The job's task, which the session knows the queue of.
    pub task: tokio::task::Id,
    /// Answered when the delivery may be acknowledged.
    pub ready: oneshot::Sender<()>,
}

/// What the merged stream yields.
// Almost every item is a delivery: boxing it would allocate once more per job to save space in
// the rare end.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Item {
    /// A delivery (or the consumer's error) of queue `index`'s lane `priority`.
    Delivery {
        /// The queue's index in the session's queues.
        index: usize,
        /// Its lane.
        priority: Priority,
        /// The delivery.
        delivery: lapin::Result<Delivery>,
    },
    /// The consumer `tag` ended (the broker cancelled it, or this worker did).
    Ended(ShortString),
}

/// The consumers of one session.
pub(crate) struct Consumers<'a> {
    channel: &'a Channel,
    settings: &'a Settings,
    worker: Arc<str>,
    /// The work queues, by index.
    lanes: Vec<String>,
    stream: SelectAll<BoxStream<'static, Item>>,
    /// The live consumers' tags, with their queue.
    tags: Vec<(usize, ShortString)>,
    /// Tags this worker cancelled: their streams' end is expected.
    cancelled: HashSet<ShortString>,
    /// Makes each resumed consumer's tag new.
    generation: u64,
}

impl<'a> Consumers<'a> {
    /// Consumes both lanes of every queue of `queues` on `channel` (the high lane first: a high
    /// job waiting when the worker starts is delivered before the normal ones).
    pub(crate) async fn start(
        channel: &'a Channel,
        settings: &'a Settings,
        worker: Arc<str>,
        queues: &[String],
    ) -> Result<Self, String> {
        let mut consumers = Consumers {
            channel,
            settings,
            worker,
            lanes: queues.to_vec(),
            stream: SelectAll::new(),
            tags: Vec::with_capacity(2 * queues.len()),
            cancelled: HashSet::new(),
            generation: 0,
        };
        for index in 0..queues.len() {
            consumers.consume(index).await?;
        }
        Ok(consumers)
    }

    /// Starts consuming both lanes of queue `index`.
    async fn consume(&mut self, index: usize) -> Result<(), String> {
        let Some(queue) = self.lanes.get(index).cloned() else {
            return Ok(());
        };
        for priority in [Priority::High, Priority::Normal] {
            let lane = priority.lane(&queue);
            let tag = if self.generation == 0 {
                ShortString::from(format!("{}.{lane}", self.worker))
            } else {
                ShortString::from(format!("{}.{lane}.{}", self.worker, self.generation))
            };
            // Fair dispatch: the broker sends this consumer at most `prefetch` unacknowledged
            // jobs, so a busy worker is skipped and its jobs go to idle ones; per consumer, so
            // per lane (the gate then runs at most `prefetch` of a queue's two lanes at once).
            let consumer = broker::consume(
                self.channel,
                &lane,
                tag.clone(),
                self.settings.prefetch,
                self.settings.broker_timeout(),
            )
            .await
            .map_err(|e| e.to_string())?;
            let end = tag.clone();
            self.stream.push(
                consumer
                    .map(move |delivery| Item::Delivery {
                        index,
                        priority,
                        delivery,
                    })
                    .chain(stream::once(async move { Item::Ended(end) }))
                    .boxed(),
            );
            self.tags.push((index, tag));
        }
        Ok(())
    }

    /// The next delivery, or a consumer's end. Waits while no consumer runs (every queue
    /// paused): each end is reported as [`Item::Ended`], so the merged stream running dry says
    /// nothing more.
    pub(crate) async fn next(&mut self) -> Item {
        match self.stream.next().await {
            Some(item) => item,
            None => std::future::pending().await,
        }
    }

    /// True if this worker cancelled `tag` (so its end is no loss), once.
    pub(crate) fn expected_end(&mut self, tag: &ShortString) -> bool {
        self.cancelled.remove(tag)
    }

    /// True while queue `index` is not consumed (an operator paused it, or long jobs fill its
    /// slots): none of its consumers is live.
    pub(crate) fn is_paused(&self, index: usize) -> bool {
        !self.tags.iter().any(|(i, _)| *i == index)
    }

    /// Stops consuming queue `index` until [`Consumers::resume`]. A cancel that fails (the
    /// channel is in trouble) is the session's end.
    pub(crate) async fn pause(&mut self, index: usize, deadline: Duration) -> Result<(), String> {
        if self.is_paused(index) {
            return Ok(());
        }
        let (theirs, rest): (Vec<_>, Vec<_>) = self.tags.drain(..).partition(|(i, _)| *i == index);
        self.tags = rest;
        for (_, tag) in theirs {
            self.cancelled.insert(tag.clone());
            cancel(self.channel, tag, deadline).await.map_err(|e| {
                format!("could not cancel a consumer to stop consuming its queue: {e}")
            })?;
        }
        tracing::debug!(queue = %self.lanes[index], "not consuming the queue (paused by an operator, or long jobs fill its slots)");
        Ok(())
    }

    /// Consumes queue `index` again after [`Consumers::pause`].
    pub(crate) async fn resume(&mut self, index: usize) -> Result<(), String> {
        if !self.is_paused(index) {
            return Ok(());
        }
        self.generation += 1;
        self.consume(index).await?;
        tracing::debug!(queue = %self.lanes[index], "consuming the queue again");
        Ok(())
    }

    /// Cancels every consumer (at shutdown): no new job arrives.
    pub(crate) async fn cancel_all(&mut self, deadline: Duration) {
        for (_, tag) in std::mem::take(&mut self.tags) {
            self.cancelled.insert(tag.clone());
            let _ = cancel(self.channel, tag, deadline).await;
        }
    }
}

async fn cancel(
    channel: &Channel,
    tag: ShortString,
    deadline: Duration,
) -> Result<(), broker::BrokerError> {
    broker::with_deadline(
        deadline,
        "cancel a consumer",
        channel.basic_cancel(tag, BasicCancelOptions::default()),
    )
    .await
}
