//! What this worker has heard of cancelled jobs (control messages from the API), and the jobs
//! it is running, so a cancel reaches the one running and a later delivery is acked unrun.
//!
//! Shared by every session of the worker: what was heard before a reconnection still counts.
//! Bounded: at most [`MAX_HEARD`] ids, each kept [`KEEP_HEARD`]; the API repeats the cancels no
//! worker has settled, so a forgotten one is heard again while it matters.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use offload_shared::JobId;

/// Most cancelled ids remembered; past it the oldest are forgotten first.
pub const MAX_HEARD: usize = 200_000;

/// How long a cancelled id is remembered.
pub const KEEP_HEARD: Duration = Duration::from_secs(24 * 3600);

/// Cancelled ids heard, and the running jobs' cancel tokens.
#[derive(Debug, Default)]
pub struct Cancels(Mutex<Inner>);

#[derive(Debug, Default)]
struct Inner {
    heard: HashMap<JobId, Instant>,
    order: VecDeque<(Instant, JobId)>,
    /// Each registration's number and token (a job may be delivered twice to one worker).
    running: HashMap<JobId, Vec<(u64, CancellationToken)>>,
    next: u64,
}

impl Cancels {
    /// Records that `ids` are cancelled and fires the token of each one running here; how many
    /// of them were running.
    pub fn heard(&self, ids: &[JobId]) -> usize {
        self.heard_at(ids, Instant::now())
    }

    fn heard_at(&self, ids: &[JobId], now: Instant) -> usize {
        let Ok(mut inner) = self.0.lock() else {
            return 0;
        };
        let mut stopped = 0;
        for id in ids {
            if inner.heard.insert(*id, now).is_none() {
                inner.order.push_back((now, *id));
            }
            if let Some(tokens) = inner.running.get(id) {
                stopped += 1;
                for (_, token) in tokens {
                    token.cancel();
                }
            }
        }
        inner.forget_old(now);
        stopped
    }

    /// True if job `id` was cancelled.
    pub fn is_cancelled(&self, id: JobId) -> bool {
        self.0
            .lock()
            .map(|inner| inner.heard.contains_key(&id))
            .unwrap_or(false)
    }

    /// Registers job `id` as running here: the returned token fires when it is cancelled (at
    /// once if it already was). The registration ends when the guard is dropped.
    pub fn running(&self, id: JobId) -> Running<'_> {
        let token = CancellationToken::new();
        let mut number = 0;
        if let Ok(mut inner) = self.0.lock() {
            if inner.heard.contains_key(&id) {
                token.cancel();
            }
            inner.next += 1;
            number = inner.next;
            inner
                .running
                .entry(id)
                .or_default()
                .push((number, token.clone()));
        }
        Running {
            cancels: self,
            id,
            number,
            token,
        }
    }
}

impl Inner {
    fn forget_old(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.order.front() {
            let expired = now.saturating_duration_since(at) > KEEP_HEARD;
            if !expired && self.order.len() <= MAX_HEARD {
                break;
            }
            self.order.pop_front();
            // A later hearing of the same id keeps it (its entry is newer).
            if self.heard.get(&id) == Some(&at) {
                self.heard.remove(&id);
            }
        }
    }
}

/// A job registered as running; see [`Cancels::running`].
pub struct Running<'a> {
    cancels: &'a Cancels,
    id: JobId,
    number: u64,
    /// Fires when the job is cancelled.
    pub token: CancellationToken,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.cancels.0.lock()
            && let Some(tokens) = inner.running.get_mut(&self.id)
        {
            tokens.retain(|(n, _)| *n != self.number);
            if tokens.is_empty() {
                inner.running.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_fires_the_running_job_and_is_remembered_for_later_deliveries() {
        let cancels = Cancels::default();
        let (a, b) = (JobId::new(), JobId::new());
        let running = cancels.running(a);
        assert!(!running.token.is_cancelled());
        assert_eq!(cancels.heard(&[a]), 1);
        assert!(running.token.is_cancelled());
        assert!(cancels.is_cancelled(a) && !cancels.is_cancelled(b));
        drop(running);
        // Delivered again later: cancelled from the start.
        assert!(cancels.running(a).token.is_cancelled());
        assert!(!cancels.running(b).token.is_cancelled());
        assert_eq!(
            cancels.heard(&[b]),
            0,
            "b's registration ended with its guard"
        );
    }

    #[test]
    fn two_deliveries_of_one_job_are_registered_apart() {
        let cancels = Cancels::default();
        let id = JobId::new();
        let first = cancels.running(id);
        let second = cancels.running(id);
        drop(first);
        assert_eq!(cancels.heard(&[id]), 1);
        assert!(second.token.is_cancelled());
    }

    #[test]
    fn old_and_surplus_ids_are_forgotten() {
        let cancels = Cancels::default();
        let start = Instant::now();
        let old = JobId::new();
        cancels.heard_at(&[old], start);
        let later = start + KEEP_HEARD + Duration::from_secs(1);
        let new = JobId::new();
        cancels.heard_at(&[new], later);
        assert!(!cancels.is_cancelled(old) && cancels.is_cancelled(new));
        let many: Vec<JobId> = (0..MAX_HEARD + 10).map(|_| JobId::new()).collect();
        cancels.heard_at(&many, later);
        assert!(!cancels.is_cancelled(many[0]) && cancels.is_cancelled(many[MAX_HEARD + 9]));
        let inner = cancels.0.lock().expect("lock");
        assert!(inner.heard.len() <= MAX_HEARD && inner.order.len() <= MAX_HEARD);
    }
}
