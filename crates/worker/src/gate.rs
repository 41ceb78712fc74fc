//! Which delivery starts next. A worker consumes both lanes of every queue it serves (the work
//! queue and its high lane, each with the prefetch), but runs at most `prefetch` jobs of one
//! queue at once: a delivery that arrives while its queue's slots are taken waits here,
//! unacknowledged, and when a job of that queue ends the oldest waiting high job starts before
//! any normal one.
//!
//! A delivery never waits longer than [`MAX_WAIT`]: one that has waited that long starts even
//! though the slots are taken (the queue then runs one more job than its prefetch until one
//! ends). So a steady stream of high jobs cannot starve a normal one a worker holds, and a
//! waiting delivery stays unacknowledged for at most `MAX_WAIT` plus its own run: within the
//! broker's consumer timeout, as the job's own run is (`OFFLOAD_MAX_JOB_TIMEOUT_S` leaves the
//! margin).

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

use offload_shared::Priority;

/// Longest a delivery waits for a slot before it starts anyway.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(30);

/// Jobs waiting for a slot, per queue and lane. Generic over the delivery so it is tested alone.
#[derive(Debug)]
pub(crate) struct Gate<T> {
    limit: usize,
    max_wait: Duration,
    queues: Vec<Lanes<T>>,
}

#[derive(Debug)]
struct Lanes<T> {
    running: usize,
    /// Waiting deliveries with when they arrived, `[normal, high]`, oldest first.
    waiting: [VecDeque<(Instant, T)>; 2],
}

fn lane(priority: Priority) -> usize {
    match priority {
        Priority::Normal => 0,
        Priority::High => 1,
    }
}

impl<T> Gate<T> {
    /// A gate for `queues` queues, each running at most `limit` jobs at once (at least one),
    /// none waiting longer than `max_wait`.
    pub(crate) fn new(queues: usize, limit: usize, max_wait: Duration) -> Self {
        Gate {
            limit: limit.max(1),
            max_wait,
            queues: (0..queues)
                .map(|_| Lanes {
                    running: 0,
                    waiting: [VecDeque::new(), VecDeque::new()],
                })
                .collect(),
        }
    }

    /// A delivery of `queue`'s lane `priority` arrived at `now`: returned if it may start now
    /// (it then holds a slot), kept to wait otherwise. One of a queue the gate does not know
    /// starts.
    pub(crate) fn arrived(
        &mut self,
        queue: usize,
        priority: Priority,
        delivery: T,
        now: Instant,
    ) -> Option<T> {
        let limit = self.limit;
        let Some(lanes) = self.queues.get_mut(queue) else {
            return Some(delivery);
        };
        if lanes.running < limit {
            lanes.running += 1;
            Some(delivery)
        } else {
            lanes.waiting[lane(priority)].push_back((now, delivery));
            None
        }
    }

    /// A job of `queue` ended: the delivery that takes its slot, a high one first, if one waits
    /// and the queue is below its limit.
    pub(crate) fn ended(&mut self, queue: usize) -> Option<T> {
        let limit = self.limit;
        let lanes = self.queues.get_mut(queue)?;
        lanes.running = lanes.running.saturating_sub(1);
        if lanes.running >= limit {
            return None;
        }
        let [normal, high] = &mut lanes.waiting;
        let (_, next) = high.pop_front().or_else(|| normal.pop_front())?;
        lanes.running += 1;
        Some(next)
    }

    /// The deliveries that have waited [`Gate::new`]'s `max_wait` by `now`, with their queue:
    /// they start now, over the limit.
    pub(crate) fn overdue(&mut self, now: Instant) -> Vec<(usize, T)> {
        let mut out = Vec::new();
        for (index, lanes) in self.queues.iter_mut().enumerate() {
            for waiting in &mut lanes.waiting {
                while waiting
                    .front()
                    .is_some_and(|(since, _)| now.duration_since(*since) >= self.max_wait)
                {
                    if let Some((_, delivery)) = waiting.pop_front() {
                        lanes.running += 1;
                        out.push((index, delivery));
                    }
                }
            }
        }
        out
    }

    /// When the longest-waiting delivery becomes overdue, if any waits.
    pub(crate) fn next_overdue(&self) -> Option<Instant> {
        self.queues
            .iter()
            .flat_map(|lanes| lanes.waiting.iter())
            .filter_map(|waiting| waiting.front().map(|(since, _)| *since + self.max_wait))
            .min()
    }

    /// Every delivery of `queue` still waiting (to hand back to the broker when the worker stops
    /// consuming the queue), high ones first.
    pub(crate) fn take_waiting_of(&mut self, queue: usize) -> Vec<T> {
        let Some(lanes) = self.queues.get_mut(queue) else {
            return Vec::new();
        };
        let [normal, high] = &mut lanes.waiting;
        high.drain(..)
            .chain(normal.drain(..))
            .map(|(_, d)| d)
            .collect()
    }

    /// Every delivery still waiting (to hand back to the broker at shutdown), high ones first.
    pub(crate) fn take_waiting(&mut self) -> Vec<T> {
        (0..self.queues.len())
            .flat_map(|queue| self.take_waiting_of(queue))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(30);

    #[test]
    fn one_queues_waiting_deliveries_are_taken_high_first_and_the_others_stay() {
        let now = Instant::now();
        let mut gate = Gate::new(2, 1, WAIT);
        for (queue, priority, id) in [
            (0, Priority::Normal, "a0"),
            (0, Priority::Normal, "a1"),
            (0, Priority::High, "a2"),
            (1, Priority::Normal, "b0"),
            (1, Priority::Normal, "b1"),
        ] {
            let _ = gate.arrived(queue, priority, id, now);
        }
        assert_eq!(gate.take_waiting_of(0), ["a2", "a1"]);
        assert!(gate.take_waiting_of(0).is_empty());
        assert!(
            gate.take_waiting_of(7).is_empty(),
            "an unknown queue has none"
        );
        assert_eq!(gate.take_waiting(), ["b1"]);
    }

    #[test]
    fn a_waiting_high_job_takes_the_next_slot_before_older_normal_ones() {
        let now = Instant::now();
        let mut gate = Gate::new(1, 1, WAIT);
        assert_eq!(gate.arrived(0, Priority::Normal, "n1", now), Some("n1"));
        assert_eq!(gate.arrived(0, Priority::Normal, "n2", now), None);
        assert_eq!(gate.arrived(0, Priority::Normal, "n3", now), None);
        assert_eq!(gate.arrived(0, Priority::High, "h1", now), None);
        assert_eq!(gate.ended(0), Some("h1"));
        assert_eq!(gate.ended(0), Some("n2"));
        assert_eq!(gate.ended(0), Some("n3"));
        assert_eq!(gate.ended(0), None);
        // The slot is free again.
        assert_eq!(gate.arrived(0, Priority::Normal, "n4", now), Some("n4"));
    }

    #[test]
    fn queues_have_slots_of_their_own() {
        let now = Instant::now();
        let mut gate = Gate::new(2, 2, WAIT);
        assert!(gate.arrived(0, Priority::Normal, 1, now).is_some());
        assert!(gate.arrived(0, Priority::High, 2, now).is_some());
        assert!(gate.arrived(0, Priority::Normal, 3, now).is_none());
        // Queue 1 is not held up by queue 0.
        assert!(gate.arrived(1, Priority::Normal, 4, now).is_some());
        assert_eq!(gate.ended(1), None);
        assert_eq!(gate.ended(0), Some(3));
        assert_eq!(gate.take_waiting(), Vec::<i32>::new());
    }

    #[test]
    fn no_delivery_waits_longer_than_the_bound_and_the_queue_then_catches_up() {
        let t0 = Instant::now();
        let mut gate = Gate::new(1, 1, WAIT);
        assert_eq!(gate.arrived(0, Priority::Normal, "n1", t0), Some("n1"));
        assert_eq!(gate.arrived(0, Priority::Normal, "n2", t0), None);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(gate.arrived(0, Priority::High, "h1", later), None);
        assert_eq!(gate.next_overdue(), Some(t0 + WAIT));
        assert!(
            gate.overdue(t0 + WAIT - Duration::from_millis(1))
                .is_empty()
        );
        // n2 has waited 30 s: it starts beside n1 (two running over a limit of one).
        assert_eq!(gate.overdue(t0 + WAIT), vec![(0, "n2")]);
        assert_eq!(gate.next_overdue(), Some(later + WAIT));
        // n1 ends: still one running, the limit; h1 keeps waiting.
        assert_eq!(gate.ended(0), None);
        // n2 ends: h1 takes the slot.
        assert_eq!(gate.ended(0), Some("h1"));
        assert_eq!(gate.next_overdue(), None);
    }

    #[test]
    fn waiting_deliveries_are_handed_back_and_unknown_queues_start() {
        let now = Instant::now();
        let mut gate = Gate::new(1, 0, WAIT);
        assert_eq!(gate.arrived(0, Priority::Normal, 1, now), Some(1));
        assert_eq!(gate.arrived(0, Priority::Normal, 2, now), None);
        assert_eq!(gate.arrived(0, Priority::High, 3, now), None);
        assert_eq!(gate.take_waiting(), vec![3, 2]);
        assert_eq!(gate.arrived(5, Priority::Normal, 9, now), Some(9));
        assert_eq!(gate.ended(5), None);
    }
}
