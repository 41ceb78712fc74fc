//! Long jobs whose worker died: a long kind's worker acknowledges the delivery once the job has
//! started and holds the running attempt by a lease it renews with heartbeats. [`run_reaper`]
//! finds the leases that lapsed and starts those jobs again as their next attempt (the
//! reconciler publishes them), or ends them dead on their last attempt. A dead worker's long job
//! therefore starts again within its lease plus [`REAP_EVERY`].

use std::time::Duration;

use time::OffsetDateTime;

use crate::state::AppState;

/// How often the reaper looks for lapsed leases.
pub const REAP_EVERY: Duration = Duration::from_secs(1);

/// Most lapsed leases one pass acts on (more are taken on the next pass, at once).
const REAP_BATCH: u32 = 100;

/// Acts on lapsed leases for as long as the API runs. Several replicas may run it: each job is
/// started again by one of them (a compare-and-set on the lapsed attempt).
pub async fn run_reaper(state: AppState) {
    let mut wait = REAP_EVERY;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.stopping.cancelled() => return,
        }
        wait = REAP_EVERY;
        let reaped = match state
            .store
            .reap_lapsed(OffsetDateTime::now_utc(), REAP_BATCH)
            .await
        {
            Ok(reaped) => reaped,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for lapsed leases; trying again");
                continue;
            }
        };
        if reaped.len() >= REAP_BATCH as usize {
            wait = Duration::ZERO;
        }
        let mut restarted = false;
        for lapsed in &reaped {
            tracing::warn!(job_id = %lapsed.id, attempt = lapsed.attempt, worker = ?lapsed.worker, restarted = lapsed.restarted, "{}", lapsed.reason());
            state.metrics.lease_lapsed(lapsed.restarted);
            restarted |= lapsed.restarted;
        }
        if restarted {
            state.reconcile_soon.notify_one();
        }
    }
}
