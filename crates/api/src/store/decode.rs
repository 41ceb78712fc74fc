//! Rows into records, once for both databases: a job, its summary, a JSON column, a count.

use serde_json::Value;

use offload_shared::{Priority, artifacts::ArtifactMeta, limits::first_chars};

use super::{
    ArtifactLink, Gate, JobProgress, JobRecord, JobSummary, SUMMARY_ERROR_CHARS, StoreError,
    dialect::Dialect,
};

/// A JSON text column.
pub(super) fn json<D: Dialect>(row: &D::Row, col: &str) -> Result<Option<Value>, StoreError> {
    D::get_text(row, col)?
        .map(|text| {
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                id: D::get_id(row, "id").map_or_else(|_| "?".into(), |id| id.to_string()),
                reason: format!("{col}: {e}"),
            })
        })
        .transpose()
}

/// A non-negative integer column as the `u32` the record holds.
pub(super) fn count<D: Dialect>(row: &D::Row, col: &str) -> Result<u32, String> {
    let n = D::get_int(row, col)
        .map_err(|e| format!("{col}: {e}"))?
        .ok_or_else(|| format!("{col}: NULL"))?;
    u32::try_from(n).map_err(|e| format!("{col} {n}: {e}"))
}

/// A job row: the columns of `job_columns!` (a listing row has `result` as NULL).
pub(super) fn job<D: Dialect>(row: &D::Row) -> Result<JobRecord, StoreError> {
    let id = D::get_id(row, "id")?;
    let corrupt = |reason: String| StoreError::Corrupt {
        id: id.to_string(),
        reason,
    };
    let text = |col: &str| -> Result<String, StoreError> {
        D::get_text(row, col)?.ok_or_else(|| corrupt(format!("{col}: NULL")))
    };
    Ok(JobRecord {
        id,
        kind: text("kind")?
            .parse()
            .map_err(|e| corrupt(format!("kind: {e}")))?,
        status: text("status")?
            .parse()
            .map_err(|e| corrupt(format!("status: {e}")))?,
        attempt: count::<D>(row, "attempt").map_err(corrupt)?,
        max_attempts: count::<D>(row, "max_attempts").map_err(corrupt)?,
        timeout_ms: u64::try_from(D::get_int(row, "timeout_ms")?.unwrap_or(0)).unwrap_or(0),
        worker: D::get_text(row, "worker")?,
        submitted_at: D::get_time(row, "submitted_at")?
            .ok_or_else(|| corrupt("submitted_at: NULL".into()))?,
        started_at: D::get_time(row, "started_at")?,
        finished_at: D::get_time(row, "finished_at")?,
        result: json::<D>(row, "result")?,
        error: D::get_text(row, "error")?,
        runs: count::<D>(row, "runs").map_err(corrupt)?,
        artifacts: match json::<D>(row, "artifacts")? {
            None => Vec::new(),
            Some(listed) => serde_json::from_value::<Vec<ArtifactMeta>>(listed)
                .map_err(|e| corrupt(format!("artifacts: {e}")))?
                .into_iter()
                .map(|meta| ArtifactLink::new(id, meta))
                .collect(),
        },
        owner: D::get_text(row, "owner")?,
        run_at: D::get_time(row, "run_at")?,
        priority: match D::get_text(row, "priority")? {
            None => Priority::Normal,
            Some(p) => Priority::parse(&p).map_err(|e| corrupt(format!("priority: {e}")))?,
        },
        concurrency_key: D::get_text(row, "concurrency_key")?,
        concurrency_limit: D::get_int(row, "concurrency_limit")?
            .map(|n| u32::try_from(n).map_err(|e| corrupt(format!("concurrency_limit: {e}"))))
            .transpose()?,
        gate: match D::get_text(row, "gate")? {
            None => None,
            Some(g) => Some(Gate::parse(&g).ok_or_else(|| corrupt(format!("gate {g:?}")))?),
        },
        progress: match (
            D::get_int(row, "progress_ppm")?,
            D::get_time(row, "progress_at")?,
        ) {
            #[allow(clippy::cast_precision_loss)]
            (Some(ppm), Some(at)) => Some(JobProgress {
                fraction: (ppm as f64 / 1_000_000.0).clamp(0.0, 1.0),
                message: D::get_text(row, "progress_message")?,
                at,
            }),
            _ => None,
        },
        heartbeat_at: D::get_time(row, "heartbeat_at")?,
        lease_until: D::get_time(row, "lease_until")?,
        inputs: Vec::new(),
    })
}

/// A row of [`sql::LIST`]: the job's columns without its result, and whether it has one.
pub(super) fn summary<D: Dialect>(row: &D::Row) -> Result<JobSummary, StoreError> {
    let has_result = D::get_int(row, "has_result")?.unwrap_or(0) != 0;
    let JobRecord {
        id,
        kind,
        status,
        attempt,
        max_attempts,
        timeout_ms,
        worker,
        submitted_at,
        started_at,
        finished_at,
        result: _,
        error,
        runs,
        artifacts,
        owner: _,
        run_at,
        priority,
        concurrency_key,
        concurrency_limit: _,
        gate: _,
        progress: _,
        heartbeat_at: _,
        lease_until: _,
        inputs: _,
    } = job::<D>(row)?;
    Ok(JobSummary {
        id,
        kind,
        status,
        attempt,
        max_attempts,
        timeout_ms,
        worker,
        submitted_at,
        started_at,
        finished_at,
        has_result,
        error: error.map(shorten),
        runs,
        artifacts,
        run_at,
        priority,
        concurrency_key,
    })
}

/// `error` cut to [`SUMMARY_ERROR_CHARS`] characters, the last one `…` when it was longer.
fn shorten(error: String) -> String {
    if first_chars(&error, SUMMARY_ERROR_CHARS).len() == error.len() {
        error
    } else {
        format!("{}…", first_chars(&error, SUMMARY_ERROR_CHARS - 1))
    }
}
