//! The API's Prometheus metrics: jobs by kind and outcome, publish-confirm latency, job
//! run time, HTTP requests, and the depth of every queue.

use std::time::Duration;

use axum::{
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use offload_shared::{JobEvent, JobKind, JobStatus, http_server::ConnMetrics};

use crate::{error::Refusal, state::AppState};

/// Label set of a kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    kind: String,
}

/// Label set of a finished job.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    kind: String,
    status: &'static str,
}

/// Label set of an HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// Label set of an HTTP route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    method: String,
    route: String,
}

/// Label set of a refused submit.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    reason: &'static str,
}

/// Label set of a queue.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    queue: String,
}

/// Label set of a schedule tick's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    outcome: &'static str,
}

/// Every metric the API exposes on `GET /metrics`.
pub struct ApiMetrics {
    registry: Registry,
    submitted: Family<KindLabel, Counter>,
    finished: Family<FinishedLabels, Counter>,
    retries: Family<KindLabel, Counter>,
    publish_confirm: Histogram,
    job_run: Family<KindLabel, Histogram>,
    http_requests: Family<RequestLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram>,
    queue_ready: Family<QueueLabel, Gauge>,
    queue_unacked: Family<QueueLabel, Gauge>,
    queue_consumers: Family<QueueLabel, Gauge>,
    events_parked: Counter,
    publish_unknown: Counter,
    republished: Counter,
    scheduled: Family<KindLabel, Counter>,
    released: Counter,
    schedule_ticks: Family<OutcomeLabel, Counter>,
    leases_lapsed: Family<OutcomeLabel, Counter>,
    retention_jobs: Counter,
    retention_keys: Counter,
    announcements_refused: Counter,
    kind_conflicts: Counter,
    /// Connections of the HTTP listener (open, refused over the limit).
    pub connections: ConnMetrics,
    refused: Family<ReasonLabel, Counter>,
}

fn seconds_histogram() -> Histogram {
    // 0.5 ms to about 33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("offload");
        let submitted = Family::<KindLabel, Counter>::default();
        registry.register(
            "jobs_submitted",
            "Jobs accepted (202), by kind",
            submitted.clone(),
        );
        let finished = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "jobs_finished",
            "Jobs that reached an end, by kind and status (succeeded, dead)",
            finished.clone(),
        );
        let retries = Family::<KindLabel, Counter>::default();
        registry.register(
            "job_retries",
            "Failed attempts scheduled for retry, by kind",
            retries.clone(),
        );
        let publish_confirm = seconds_histogram();
        registry.register(
            "publish_confirm_seconds",
            "Time from publishing a job to the broker's confirm",
            publish_confirm.clone(),
        );
        let job_run = Family::<KindLabel, Histogram>::new_with_constructor(seconds_histogram);
        registry.register(
            "job_run_seconds",
            "Handler run time of finished attempts, by kind",
            job_run.clone(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests, by method, route and status",
            http_requests.clone(),
        );
        let http_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(seconds_histogram);
        registry.register(
            "http_request_seconds",
            "HTTP request latency, by method and route",
            http_seconds.clone(),
        );
        let queue_ready = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "queue_messages_ready",
            "Messages waiting in the queue",
            queue_ready.clone(),
        );
        let queue_unacked = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "queue_messages_unacked",
            "Messages delivered to a consumer and not yet acknowledged (from the management API)",
            queue_unacked.clone(),
        );
        let queue_consumers = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "queue_consumers",
            "Consumers of the queue",
            queue_consumers.clone(),
        );
        let events_parked = Counter::default();
        registry.register(
            "events_parked",
            "Lifecycle events that did not parse, parked in <prefix>.events.parked with the reason",
            events_parked.clone(),
        );
        let publish_unknown = Counter::default();
        registry.register(
            "publish_unknown",
            "Job publishes whose confirm did not arrive in time (the job stays pending until resolved)",
            publish_unknown.clone(),
        );
        let republished = Counter::default();
        registry.register(
            "jobs_republished",
            "Unresolved jobs republished under their id because their first publish was never confirmed",
            republished.clone(),
        );
        let scheduled = Family::<KindLabel, Counter>::default();
        registry.register(
            "jobs_scheduled",
            "Jobs accepted to run later (run_at, delay_s), by kind; counted again in jobs_submitted when published",
            scheduled.clone(),
        );
        let released = Counter::default();
        registry.register(
            "scheduled_jobs_published",
            "Scheduled jobs published because their time came",
            released.clone(),
        );
        let schedule_ticks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "schedule_ticks",
            "Cron schedule ticks this API made, by outcome: made (a job), overlapped (the previous \
             job still ran, overlap skip), failed (no job could be made; see the schedule's \
             last_error)",
            schedule_ticks.clone(),
        );
        let leases_lapsed = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "leases_lapsed",
            "Long jobs whose worker stopped renewing its lease (it died or lost the broker), by \
             outcome: restarted (as the next attempt) or dead (it was the last attempt)",
            leases_lapsed.clone(),
        );
        let retention_jobs = Counter::default();
        registry.register(
            "retention_deleted_jobs",
            "Finished jobs deleted by retention (OFFLOAD_RETENTION_S after they finished)",
            retention_jobs.clone(),
        );
        let retention_keys = Counter::default();
        registry.register(
            "retention_deleted_keys",
            "Idempotency keys deleted by retention (expired, or their job was deleted)",
            retention_keys.clone(),
        );
        let announcements_refused = Counter::default();
        registry.register(
            "announcements_refused",
            "Worker announcements that did not parse or had another wire version (acknowledged and dropped)",
            announcements_refused.clone(),
        );
        let kind_conflicts = Counter::default();
        registry.register(
            "kind_conflicts",
            "Announced kind specs that differ from the recorded one while it is kept (counted once per worker and kind)",
            kind_conflicts.clone(),
        );
        let connections = ConnMetrics::default();
        connections.register(&mut registry);
        let refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "jobs_refused",
            "Submits and redrives refused with nothing enqueued, by reason: queue_full, \
             broker_blocked, broker_unavailable, body_too_large, message_too_large, \
             headers_too_large",
            refused.clone(),
        );
        ApiMetrics {
            connections,
            registry,
            refused,
            announcements_refused,
            kind_conflicts,
            events_parked,
            publish_unknown,
            republished,
            scheduled,
            released,
            schedule_ticks,
            leases_lapsed,
            submitted,
            finished,
            retries,
            publish_confirm,
            job_run,
            http_requests,
            http_seconds,
            queue_ready,
            queue_unacked,
            queue_consumers,
            retention_jobs,
            retention_keys,
        }
    }
}

impl ApiMetrics {
    /// A job was accepted after `confirm` waiting for the broker.
    pub fn accepted(&self, kind: &JobKind, confirm: Duration) {
        self.submitted
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
        self.publish_confirm.observe(confirm.as_secs_f64());
    }

    /// A request was refused for `reason`, nothing enqueued.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// An announcement was refused as a whole.
    pub fn announcement_refused(&self) {
        self.announcements_refused.inc();
    }

    /// An announced kind spec conflicts with the recorded one.
    pub fn kind_conflict(&self) {
        self.kind_conflicts.inc();
    }

    /// An unreadable lifecycle event was parked.
    pub fn event_parked(&self) {
        self.events_parked.inc();
    }

    /// A publish's confirm did not arrive in time.
    pub fn publish_unknown(&self) {
        self.publish_unknown.inc();
    }

    /// A job of `kind` was accepted to run later.
    pub fn scheduled(&self, kind: &JobKind) {
        self.scheduled
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// `jobs` scheduled jobs were published, their time having come.
    pub fn released(&self, jobs: usize) {
        self.released
            .inc_by(u64::try_from(jobs).unwrap_or(u64::MAX));
    }

    /// A schedule ticked with `outcome` (`made`, `overlapped`, `failed`).
    pub fn schedule_tick(&self, outcome: &'static str) {
        self.schedule_ticks
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// A long job's lease lapsed: it was `restarted` as its next attempt, or ended dead.
    pub fn lease_lapsed(&self, restarted: bool) {
        let outcome = if restarted { "restarted" } else { "dead" };
        self.leases_lapsed
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// `jobs` unresolved jobs were republished.
    pub fn republished(&self, jobs: usize) {
        self.republished
            .inc_by(u64::try_from(jobs).unwrap_or(u64::MAX));
    }

    /// A lifecycle event arrived from a worker.
    pub fn event(&self, event: &JobEvent) {
        let Some(kind) = event.kind.as_ref().map(JobKind::to_string) else {
            return;
        };
        if let Some(ms) = event.run_ms {
            #[allow(clippy::cast_precision_loss)]
            let seconds = ms as f64 / 1000.0;
            self.job_run
                .get_or_create(&KindLabel { kind: kind.clone() })
                .observe(seconds);
        }
        match event.status {
            JobStatus::Retrying => {
                self.retries.get_or_create(&KindLabel { kind }).inc();
            }
            status if status.is_terminal() => {
                self.finished
                    .get_or_create(&FinishedLabels {
                        kind,
                        status: status.as_str(),
                    })
                    .inc();
            }
            _ => {}
        }
    }

    /// The depth of `queue` as AMQP reports it.
    pub fn queue(&self, queue: &str, ready: u32, consumers: u32) {
        let label = QueueLabel {
            queue: queue.to_owned(),
        };
        self.queue_ready.get_or_create(&label).set(i64::from(ready));
        self.queue_consumers
            .get_or_create(&label)
            .set(i64::from(consumers));
    }

    /// The unacked count of `queue`, which only the management API reports.
    pub fn unacked(&self, queue: &str, unacked: u64) {
        let label = QueueLabel {
            queue: queue.to_owned(),
        };
        self.queue_unacked
            .get_or_create(&label)
            .set(i64::try_from(unacked).unwrap_or(i64::MAX));
    }

    /// Retention deleted `jobs` finished jobs and `keys` idempotency keys.
    pub fn retention_deleted(&self, jobs: u64, keys: u64) {
        self.retention_jobs.inc_by(jobs);
        self.retention_keys.inc_by(keys);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Jobs by kind and outcome, publish-confirm latency, job run time, \
        HTTP requests, queue depth (offload_queue_messages_ready / _unacked / offload_queue_consumers), \
        retention deletions (offload_retention_deleted_jobs_total / _keys_total)",
        content_type = "application/openmetrics-text")))]
pub async fn serve(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Counts every request by its route template (not its path, which would explode the labels).
pub async fn track_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let metrics = &state.metrics;
    if let Some(Refusal(reason)) = response.extensions().get::<Refusal>() {
        metrics.refused(reason);
    }
    metrics
        .http_requests
        .get_or_create(&RequestLabels {
            method: method.clone(),
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    metrics
        .http_seconds
        .get_or_create(&RouteLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    response
}
