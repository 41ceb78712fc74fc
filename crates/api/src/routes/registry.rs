//! `GET /kinds` and `GET /workers`: the kinds the API accepts, with their queues, live workers
//! and conflicts, and the workers whose heartbeats arrive.

use axum::{Json, extract::State};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use offload_shared::Priority;

use crate::{
    depth::QueueDepth,
    error::{ApiError, Problem},
    state::AppState,
    store::registry::{KindSource, WorkerRecord},
};

/// One accepted kind.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KindView {
    /// The kind's name (the `kind` of `POST /jobs`).
    #[schema(example = "resize")]
    pub name: String,
    /// The queue its jobs go to.
    #[schema(example = "images")]
    pub queue: String,
    /// The broker queue holding its waiting jobs.
    #[schema(example = "offload.jobs.images")]
    pub work_queue: String,
    /// The JSON Schema every payload must meet.
    #[schema(value_type = Object)]
    pub payload_schema: Value,
    /// Attempts when the request names none (`null`: the API's default).
    pub max_attempts: Option<u32>,
    /// Run-time limit in seconds when the request names none (`null`: the API's default).
    pub timeout_s: Option<u64>,
    /// At most this many of its jobs queued or running at once (`null`: no limit).
    pub max_running: Option<u32>,
    /// Its jobs may run for hours (`timeout_s` up to 86,400), held by their worker's lease
    /// and heartbeats instead of an unacknowledged delivery.
    pub long: bool,
    /// Priority of its jobs when the request names none.
    #[schema(value_type = String, example = "normal")]
    pub priority: Priority,
    /// Where the kind came from.
    pub source: KindSource,
    /// Live workers that run it; empty while none does (its jobs wait in its queue).
    pub workers: Vec<String>,
    /// Why a differing announcement of the kind was not taken, if one was not.
    pub conflict: Option<String>,
    /// The work queue's latest depth (`null` until read).
    pub queue_stats: Option<QueueDepth>,
}

/// `GET /kinds`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KindList {
    /// Every accepted kind, by name.
    pub kinds: Vec<KindView>,
}

/// One live worker.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkerView {
    /// Its name.
    pub name: String,
    /// `alive` (a leaving worker is not listed).
    #[schema(example = "alive")]
    pub state: String,
    /// The kinds it runs.
    pub kinds: Vec<String>,
    /// The queues it consumes.
    pub queues: Vec<String>,
    /// Jobs it was running at its last heartbeat.
    pub in_flight: u32,
    /// Its prefetch.
    pub prefetch: u16,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: OffsetDateTime,
    /// When its last announcement arrived.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_heartbeat: OffsetDateTime,
    /// What it runs.
    pub software: String,
}

/// `GET /workers`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WorkerList {
    /// The live workers, by name.
    pub workers: Vec<WorkerView>,
}

/// The workers alive now.
pub(crate) async fn live_workers(state: &AppState) -> Result<Vec<WorkerRecord>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let mut workers = state.store.workers().await?;
    workers.retain(|w| w.is_live(now));
    Ok(workers)
}

/// `GET /kinds`: every kind `POST /jobs` accepts, with its payload schema, queue, live workers,
/// conflict and queue depth.
#[utoipa::path(get, path = "/kinds", tag = "kinds",
    responses(
        (status = 200, description = "The accepted kinds", body = KindList),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_kinds(State(state): State<AppState>) -> Result<Json<KindList>, ApiError> {
    let recorded = state.store.kinds().await?;
    let workers = live_workers(&state).await?;
    let names = offload_shared::topology::Names::for_settings(&state.settings);
    let kinds = state
        .kinds
        .all()
        .into_iter()
        .map(|known| {
            let spec = &known.spec;
            let record = recorded.iter().find(|r| r.spec.name == spec.name);
            let work_queue = names.work_queue(&spec.queue);
            KindView {
                name: spec.name.to_string(),
                queue: spec.queue.to_string(),
                queue_stats: state.queue_stats.get(&work_queue),
                work_queue,
                payload_schema: spec.payload_schema.clone(),
                max_attempts: spec.max_attempts,
                timeout_s: spec.timeout_s,
                priority: spec.priority.unwrap_or_default(),
                max_running: spec.max_running,
                long: spec.long,
                source: record.map_or(KindSource::Builtin, |r| r.source),
                workers: workers
                    .iter()
                    .filter(|w| w.kinds.contains(spec))
                    .map(|w| w.name.clone())
                    .collect(),
                conflict: record.and_then(|r| r.conflict.clone()),
            }
        })
        .collect();
    Ok(Json(KindList { kinds }))
}

/// `GET /workers`: the workers alive now (running, and heard from within three heartbeats).
#[utoipa::path(get, path = "/workers", tag = "kinds",
    responses(
        (status = 200, description = "The live workers", body = WorkerList),
        (status = 503, description = "The store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_workers(State(state): State<AppState>) -> Result<Json<WorkerList>, ApiError> {
    let workers = live_workers(&state)
        .await?
        .into_iter()
        .map(|w| WorkerView {
            state: "alive".to_owned(),
            kinds: w.kinds.iter().map(|k| k.name.to_string()).collect(),
            queues: w.queues.iter().map(ToString::to_string).collect(),
            in_flight: w.in_flight,
            prefetch: w.prefetch,
            started_at: w.started_at,
            last_heartbeat: w.last_seen_at,
            software: w.software,
            name: w.name,
        })
        .collect();
    Ok(Json(WorkerList { workers }))
}
