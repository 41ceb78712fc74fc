//! Concurrency limits: at most `concurrency_limit` jobs of one `concurrency_key` (e.g. a
//! tenant), and at most `max_running` jobs of a kind, queued or running at once across every
//! worker. Such jobs are accepted into the store `held` (status `scheduled`, no `run_at`) and
//! [`run_dispatcher`] releases them as slots free; the reconciler then publishes them. A job
//! counts against its limits from its release until it finishes (a retry waiting in a delay
//! queue still counts), so the limit holds for running jobs whatever the workers do.

use std::{collections::HashMap, time::Duration};

use time::OffsetDateTime;

use crate::state::AppState;

/// How often the dispatcher looks while jobs are held (a finished job frees a slot: its event
/// does not wake the dispatcher, this period bounds the wait).
const HELD_PERIOD: Duration = Duration::from_millis(100);

/// How often it looks when nothing is held (a limited submit wakes it at once).
const IDLE_PERIOD: Duration = Duration::from_secs(1);

/// Releases held jobs as their limits allow, for as long as the API runs.
pub async fn run_dispatcher(state: AppState) {
    loop {
        let wait = match dispatch(&state).await {
            Ok(true) => HELD_PERIOD,
            Ok(false) => IDLE_PERIOD,
            Err(e) => {
                tracing::warn!(error = %e, "could not release jobs held by concurrency limits; trying again");
                HELD_PERIOD
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.gate_changed.notified() => {}
            () = state.stopping.cancelled() => return,
        }
    }
}

/// One pass; true while jobs are still held.
async fn dispatch(state: &AppState) -> Result<bool, crate::store::StoreError> {
    let kinds: HashMap<String, u32> = state
        .kinds
        .all()
        .iter()
        .filter_map(|k| k.spec.max_running.map(|n| (k.spec.name.to_string(), n)))
        .collect();
    let (released, held) = state
        .store
        .release_held(&kinds, OffsetDateTime::now_utc())
        .await?;
    if !released.is_empty() {
        tracing::debug!(
            jobs = released.len(),
            "released jobs held by concurrency limits"
        );
        state.reconcile_soon.notify_one();
    }
    Ok(held)
}
