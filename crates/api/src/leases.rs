//! Long jobs whose worker died: a long kind's worker acknowledges the delivery once the job has
//! started and holds the running attempt by a lease it renews with heartbeats. [`run_reaper`]
//! finds the leases that lapsed and starts those jobs again as their next attempt (the
//! reconciler publishes them), or ends them dead on their last attempt. A dead worker's long job
//! therefore starts again within its lease plus [`REAP_EVERY`] (plus [`CATCH_UP`] right after
//! an API starts or gets its broker back).

use std::time::Duration;

use time::OffsetDateTime;

use crate::state::AppState;

/// How often the reaper looks for lapsed leases.
pub const REAP_EVERY: Duration = Duration::from_secs(1);

/// Time given to every running lease when the reaper starts, and again when the API has its
/// broker back: heartbeats sent while this API was down or cut off wait in the events queue, and
/// must be applied before any lease is taken for lapsed.
pub const CATCH_UP: Duration = Duration::from_secs(60);

/// Most lapsed leases one pass acts on (more are taken on the next pass, at once).
const REAP_BATCH: u32 = 100;

/// Acts on lapsed leases for as long as the API runs. Several replicas may run it: each job is
/// started again by one of them (a compare-and-set on the lapsed attempt). Does nothing while
/// the broker is away (this API hears no heartbeats then); when it is back, and at start, every
/// running lease is first extended by [`CATCH_UP`].
pub async fn run_reaper(state: AppState) {
    let mut wait = REAP_EVERY;
    let mut catch_up = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.stopping.cancelled() => return,
        }
        wait = REAP_EVERY;
        if state.publisher().is_err() {
            catch_up = true;
            continue;
        }
        let now = OffsetDateTime::now_utc();
        if catch_up {
            match state.store.extend_leases(now + CATCH_UP).await {
                Ok(extended) => {
                    if extended > 0 {
                        tracing::info!(
                            jobs = extended,
                            "extended the leases of running long jobs while their heartbeats catch up"
                        );
                    }
                    catch_up = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not extend the leases of running long jobs; trying again")
                }
            }
            continue;
        }
        let reaped = match state.store.reap_lapsed(now, REAP_BATCH).await {
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
