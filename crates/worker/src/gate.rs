//! Which delivery starts next. A worker consumes both lanes of every queue it serves (the work
//! queue and its high lane, each with the prefetch), but runs at most `prefetch` jobs of one
//! queue at once: a delivery that arrives while its queue is full waits here, unacknowledged,
//! and when a job of that queue ends the oldest waiting high job starts before any normal one.

use std::collections::VecDeque;

use offload_shared::Priority;

/// Jobs waiting for a slot, per queue and lane. Generic over the delivery so it is tested alone.
#[derive(Debug)]
pub(crate) struct Gate<T> {
    limit: usize,
    queues: Vec<Lanes<T>>,
}

#[derive(Debug)]
struct Lanes<T> {
    running: usize,
    /// Waiting deliveries, `[normal, high]`, oldest first.
    waiting: [VecDeque<T>; 2],
}

fn lane(priority: Priority) -> usize {
    match priority {
        Priority::Normal => 0,
        Priority::High => 1,
    }
}

impl<T> Gate<T> {
    /// A gate for `queues` queues, each running at most `limit` jobs at once (at least one).
    pub(crate) fn new(queues: usize, limit: usize) -> Self {
        Gate {
            limit: limit.max(1),
            queues: (0..queues)
                .map(|_| Lanes {
                    running: 0,
                    waiting: [VecDeque::new(), VecDeque::new()],
                })
                .collect(),
        }
    }

    /// A delivery of `queue`'s lane `priority` arrived: returned if it may start now (it then
    /// holds a slot), kept to wait otherwise. One of a queue the gate does not know starts.
    pub(crate) fn arrived(&mut self, queue: usize, priority: Priority, delivery: T) -> Option<T> {
        let limit = self.limit;
        let Some(lanes) = self.queues.get_mut(queue) else {
            return Some(delivery);
        };
        if lanes.running < limit {
            lanes.running += 1;
            Some(delivery)
        } else {
            lanes.waiting[lane(priority)].push_back(delivery);
            None
        }
    }

    /// A job of `queue` ended: the delivery that takes its slot, a high one first, if any waits.
    pub(crate) fn ended(&mut self, queue: usize) -> Option<T> {
        let lanes = self.queues.get_mut(queue)?;
        let [normal, high] = &mut lanes.waiting;
        match high.pop_front().or_else(|| normal.pop_front()) {
            Some(next) => Some(next),
            None => {
                lanes.running = lanes.running.saturating_sub(1);
                None
            }
        }
    }

    /// Every delivery still waiting (to hand back to the broker at shutdown), high ones first.
    pub(crate) fn take_waiting(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        for lanes in &mut self.queues {
            let [normal, high] = &mut lanes.waiting;
            out.extend(high.drain(..));
            out.extend(normal.drain(..));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_high_job_takes_the_next_slot_before_older_normal_ones() {
        let mut gate = Gate::new(1, 1);
        assert_eq!(gate.arrived(0, Priority::Normal, "n1"), Some("n1"));
        assert_eq!(gate.arrived(0, Priority::Normal, "n2"), None);
        assert_eq!(gate.arrived(0, Priority::Normal, "n3"), None);
        assert_eq!(gate.arrived(0, Priority::High, "h1"), None);
        assert_eq!(gate.ended(0), Some("h1"));
        assert_eq!(gate.ended(0), Some("n2"));
        assert_eq!(gate.ended(0), Some("n3"));
        assert_eq!(gate.ended(0), None);
        // The slot is free again.
        assert_eq!(gate.arrived(0, Priority::Normal, "n4"), Some("n4"));
    }

    #[test]
    fn queues_have_slots_of_their_own() {
        let mut gate = Gate::new(2, 2);
        assert!(gate.arrived(0, Priority::Normal, 1).is_some());
        assert!(gate.arrived(0, Priority::High, 2).is_some());
        assert!(gate.arrived(0, Priority::Normal, 3).is_none());
        // Queue 1 is not held up by queue 0.
        assert!(gate.arrived(1, Priority::Normal, 4).is_some());
        assert_eq!(gate.ended(1), None);
        assert_eq!(gate.ended(0), Some(3));
        assert_eq!(gate.take_waiting(), Vec::<i32>::new());
    }

    #[test]
    fn waiting_deliveries_are_handed_back_and_unknown_queues_ignored() {
        let mut gate = Gate::new(1, 0);
        assert_eq!(gate.arrived(0, Priority::Normal, 1), Some(1));
        assert_eq!(gate.arrived(0, Priority::Normal, 2), None);
        assert_eq!(gate.arrived(0, Priority::High, 3), None);
        assert_eq!(gate.take_waiting(), vec![3, 2]);
        assert_eq!(gate.arrived(5, Priority::Normal, 9), Some(9));
        assert_eq!(gate.ended(5), None);
    }
}
