//! The phases that run the real binaries: enqueue and batch enqueue (closed loop, no workers),
//! end-to-end (open loop, workers running) and drain (a backlog, then W workers). Each phase has its
//! own queue prefix and store file and deletes them at the end.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::task::JoinSet;

use crate::{
    BenchError, QueueType, Result,
    procs::{self, Binaries, Proc, Slice},
};

/// What every phase needs.
pub struct Context<'a> {
    /// The binaries.
    pub bins: &'a Binaries,
    /// RabbitMQ address.
    pub amqp_url: &'a str,
    /// Queue type.
    pub queue_type: QueueType,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

impl Percentiles {
    fn of(mut ms: Vec<f64>) -> Self {
        if ms.is_empty() {
            return Percentiles::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |p: f64| {
            let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
            ms[i]
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

/// One concurrency level of the enqueue phase (`POST /jobs`) or of the batch phase
/// (`POST /jobs/batch`).
#[derive(Debug, Clone)]
pub struct EnqueueResult {
    /// Requests in flight.
    pub concurrency: usize,
    /// Jobs per request: 1 for `POST /jobs`.
    pub batch: usize,
    /// Jobs accepted (202).
    pub accepted: u64,
    /// Requests answered with anything else (including transport errors).
    pub failed: u64,
    /// Accepted jobs per second.
    pub per_s: f64,
    /// Latency of the accepted requests.
    pub latency: Percentiles,
    /// API CPU seconds per 1,000 accepted jobs.
    pub api_cpu_per_1000: f64,
    /// Broker and load-generator CPU seconds per 1,000 accepted jobs.
    pub other_cpu: procs::CpuShare,
    /// API peak RSS so far (MiB).
    pub api_rss_mib: f64,
}

/// The end-to-end phase.
#[derive(Debug, Clone)]
pub struct EndToEndResult {
    /// Offered jobs/s.
    pub rate: u64,
    /// Workers running.
    pub workers: usize,
    /// 202 answers.
    pub accepted: u64,
    /// Non-202 answers.
    pub failed: u64,
    /// Accepted jobs not `succeeded` by the deadline.
    pub lost: u64,
    /// POST to `finished_at`.
    pub latency: Percentiles,
    /// API CPU seconds per 1,000 jobs (submit + events).
    pub api_cpu_per_1000: f64,
    /// Worker CPU seconds per 1,000 jobs (all workers).
    pub worker_cpu_per_1000: f64,
    /// Peak RSS of the API (MiB).
    pub api_rss_mib: f64,
    /// Largest peak RSS of a worker (MiB).
    pub worker_rss_mib: f64,
}

/// One drain run.
#[derive(Debug, Clone)]
pub struct DrainResult {
    /// Backlog size.
    pub jobs: u64,
    /// Work queues the backlog is split over (1: `noop` on `default`; 2: also `bench.echo` on
    /// `bench`, drained by the SDK's `offload-bench-worker`).
    pub queues: usize,
    /// Workers per queue.
    pub workers: usize,
    /// Each worker's prefetch (and concurrency).
    pub prefetch: u16,
    /// Non-202 answers while building the backlog.
    pub failed: u64,
    /// Backlog jobs not `succeeded` by the deadline.
    pub lost: u64,
    /// Seconds from starting the workers to the last job `succeeded` in the store.
    pub seconds: f64,
    /// Jobs per second.
    pub per_s: f64,
    /// API CPU seconds per 1,000 jobs during the drain (events into the store).
    pub api_cpu_per_1000: f64,
    /// Worker CPU seconds per 1,000 jobs (all workers).
    pub worker_cpu_per_1000: f64,
    /// Largest peak RSS of a worker (MiB).
    pub worker_rss_mib: f64,
}

/// A client sending the slice's token.
pub(crate) fn client(slice: &Slice) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(value) = format!("Bearer {}", slice.token()).parse() {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(1024)
        .build()
        .map_err(|e| BenchError::Http(e, "build the HTTP client"))
}

/// POSTs a noop job; the id on 202, `None` on anything else.
async fn post_job(http: &reqwest::Client, base: &str) -> Option<String> {
    let response = http
        .post(format!("{base}/jobs"))
        .json(&json!({"kind": "noop", "payload": {}}))
        .send()
        .await
        .ok()?;
    if response.status() != 202 {
        return None;
    }
    let job: Value = response.json().await.ok()?;
    job["id"].as_str().map(str::to_owned)
}

/// The body of a batch of `size` noop jobs.
fn batch_body(size: usize) -> String {
    kind_batch_body("noop", size)
}

/// The body of a batch of `size` jobs of `kind`, each with the payload `{}`.
fn kind_batch_body(kind: &str, size: usize) -> String {
    json!({ "jobs": vec![json!({"kind": kind, "payload": {}}); size] }).to_string()
}

/// The kinds of a drain over `queues` work queues, and who runs each.
fn drain_kinds(queues: usize) -> &'static [&'static str] {
    if queues > 1 {
        &["noop", "bench.echo"]
    } else {
        &["noop"]
    }
}

/// POSTs a batch; the ids on 202 (all of them: a short list is a failure), `None` otherwise.
pub(crate) async fn post_batch(
    http: &reqwest::Client,
    base: &str,
    body: String,
    size: usize,
) -> Option<Vec<String>> {
    let response = http
        .post(format!("{base}/jobs/batch"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    if response.status() != 202 {
        return None;
    }
    let answer: Value = response.json().await.ok()?;
    let ids: Vec<String> = answer["jobs"]
        .as_array()?
        .iter()
        .filter_map(|j| j["id"].as_str().map(str::to_owned))
        .collect();
    (ids.len() == size).then_some(ids)
}

/// Closed loop at each concurrency for `each`, `batch` jobs per request (1: `POST /jobs`, more:
/// `POST /jobs/batch`); no workers, so jobs pile up until the level ends.
pub async fn enqueue(
    ctx: &Context<'_>,
    levels: &[usize],
    batch: usize,
    each: Duration,
) -> Result<Vec<EnqueueResult>> {
    let mut results = Vec::new();
    // Each level gets a fresh API, queue and store: a backlog left by the previous level would
    // slow the broker and the store down.
    for &c in levels {
        let slice = Slice::new(ctx.amqp_url, ctx.queue_type);
        let outcome = async {
            let (api, base) = procs::start_api(ctx.bins, &slice).await?;
            let http = client(&slice)?;
            let level = enqueue_level(&api, &http, &base, c.max(1), batch, each).await;
            api.stop(Duration::from_secs(10)).await;
            level
        }
        .await;
        slice.cleanup().await;
        results.push(outcome?);
    }
    Ok(results)
}

async fn enqueue_level(
    api: &Proc,
    http: &reqwest::Client,
    base: &str,
    concurrency: usize,
    batch: usize,
    each: Duration,
) -> Result<EnqueueResult> {
    let cpu_before = api.cpu_seconds();
    let others = procs::CpuMark::now();
    let start = Instant::now();
    let body = batch_body(batch);
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (http, base, body) = (http.clone(), base.to_owned(), body.clone());
        tasks.spawn(async move {
            let mut ms = Vec::new();
            let mut failed = 0u64;
            while start.elapsed() < each {
                let t = Instant::now();
                let ok = if batch == 1 {
                    post_job(&http, &base).await.is_some()
                } else {
                    post_batch(&http, &base, body.clone(), batch)
                        .await
                        .is_some()
                };
                if ok {
                    ms.push(t.elapsed().as_secs_f64() * 1e3);
                } else {
                    failed += 1;
                }
            }
            (ms, failed)
        });
    }
    let mut all = Vec::new();
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        let (ms, f) =
            joined.map_err(|e| BenchError::Setup(format!("a client task failed: {e}")))?;
        all.extend(ms);
        failed += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let accepted = all.len() as u64 * batch as u64;
    Ok(EnqueueResult {
        concurrency,
        batch,
        accepted,
        failed,
        per_s: accepted as f64 / elapsed,
        latency: Percentiles::of(all),
        api_cpu_per_1000: per_1000(api.cpu_seconds() - cpu_before, accepted),
        other_cpu: others.per_1000(accepted),
        api_rss_mib: api.peak_rss_mib(),
    })
}

pub(crate) fn per_1000(cpu: f64, jobs: u64) -> f64 {
    if jobs == 0 {
        0.0
    } else {
        cpu * 1000.0 / jobs as f64
    }
}

/// Open loop at `rate` jobs/s for `offered` with `workers` workers (prefetch 16).
pub async fn end_to_end(
    ctx: &Context<'_>,
    rate: u64,
    offered: Duration,
    workers: usize,
) -> Result<EndToEndResult> {
    let slice = Slice::new(ctx.amqp_url, ctx.queue_type);
    let outcome = end_to_end_in(ctx, &slice, rate, offered, workers).await;
    slice.cleanup().await;
    outcome
}

async fn end_to_end_in(
    ctx: &Context<'_>,
    slice: &Slice,
    rate: u64,
    offered: Duration,
    workers: usize,
) -> Result<EndToEndResult> {
    let (api, base) = procs::start_api(ctx.bins, slice).await?;
    let mut procs_w = Vec::new();
    for i in 0..workers {
        procs_w.push(procs::start_worker(ctx.bins, slice, &format!("bench-{i}"), 16).await?);
    }
    let http = client(slice)?;
    let api_cpu = api.cpu_seconds();
    let worker_cpu: f64 = procs_w.iter().map(Proc::cpu_seconds).sum();

    let total = rate * offered.as_secs().max(1);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut tasks = JoinSet::new();
    let http = Arc::new(http);
    for _ in 0..total {
        tick.tick().await;
        let http = http.clone();
        let base = base.clone();
        tasks.spawn(async move {
            let sent = OffsetDateTime::now_utc();
            post_job(&http, &base).await.map(|id| (id, sent))
        });
    }
    let mut sent_at = HashMap::new();
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Some((id, t))) => {
                sent_at.insert(id, t);
            }
            _ => failed += 1,
        }
    }
    let settled = wait_settled(&http, &base, Duration::from_secs(60)).await?;
    let succeeded = finished_times(&http, &base).await?;
    let mut ms = Vec::new();
    let mut lost = 0;
    for (id, sent) in &sent_at {
        match succeeded.get(id) {
            Some(done) => ms.push((*done - *sent).as_seconds_f64() * 1e3),
            None => lost += 1,
        }
    }
    if !settled {
        eprintln!("end-to-end: jobs still queued or running at the deadline");
    }
    let accepted = sent_at.len() as u64;
    let result = EndToEndResult {
        rate,
        workers,
        accepted,
        failed,
        lost,
        latency: Percentiles::of(ms),
        api_cpu_per_1000: per_1000(api.cpu_seconds() - api_cpu, accepted),
        worker_cpu_per_1000: per_1000(
            procs_w.iter().map(Proc::cpu_seconds).sum::<f64>() - worker_cpu,
            accepted,
        ),
        api_rss_mib: api.peak_rss_mib(),
        worker_rss_mib: procs_w.iter().map(Proc::peak_rss_mib).fold(0.0, f64::max),
    };
    for w in procs_w {
        w.stop(Duration::from_secs(10)).await;
    }
    api.stop(Duration::from_secs(10)).await;
    Ok(result)
}

/// A backlog of `jobs`, then `workers` workers (at `prefetch`) until the store shows all
/// succeeded.
pub async fn drain(
    ctx: &Context<'_>,
    jobs: u64,
    queues: usize,
    workers: usize,
    prefetch: u16,
) -> Result<DrainResult> {
    let slice = Slice::new(ctx.amqp_url, ctx.queue_type);
    let outcome = drain_in(ctx, &slice, jobs, queues, workers, prefetch).await;
    slice.cleanup().await;
    outcome
}

/// Starts the worker of the `kind` drain kind.
async fn start_drain_worker(
    ctx: &Context<'_>,
    slice: &Slice,
    kind: &str,
    name: &str,
    prefetch: u16,
) -> Result<Proc> {
    let program = if kind == "noop" {
        &ctx.bins.worker
    } else {
        &ctx.bins.bench_worker
    };
    procs::start_program(program, slice, name, prefetch).await
}

/// Starts an SDK worker once so the API learns `bench.echo` from its announcement (and binds
/// it), waits until `GET /kinds` lists it, and stops the worker before the backlog is built.
async fn announce_bench_kind(
    ctx: &Context<'_>,
    slice: &Slice,
    http: &reqwest::Client,
    base: &str,
) -> Result<()> {
    let worker = start_drain_worker(ctx, slice, "bench.echo", "bench-announce", 1).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let kinds = get_page(http, &format!("{base}/kinds")).await?;
        let known = kinds["kinds"]
            .as_array()
            .is_some_and(|all| all.iter().any(|k| k["name"] == "bench.echo"));
        if known {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(
                "the API did not list bench.echo within 30 s of its worker starting".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop(Duration::from_secs(10)).await;
    Ok(())
}

async fn drain_in(
    ctx: &Context<'_>,
    slice: &Slice,
    jobs: u64,
    queues: usize,
    workers: usize,
    prefetch: u16,
) -> Result<DrainResult> {
    let (api, base) = procs::start_api(ctx.bins, slice).await?;
    let http = client(slice)?;
    let kinds = drain_kinds(queues);
    if queues > 1 {
        announce_bench_kind(ctx, slice, &http, &base).await?;
    }
    // The backlog, in batches of up to 1,000 from 4 clients sharing a counter of jobs to submit.
    // With several queues, the clients take turns over the kinds, so each queue gets its share.
    let remaining = Arc::new(std::sync::atomic::AtomicU64::new(jobs));
    let mut tasks = JoinSet::new();
    for client_no in 0..4 {
        let (http, base, remaining) = (http.clone(), base.clone(), remaining.clone());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            let mut failed = 0u64;
            let mut turn = client_no;
            while let Ok(left) = remaining.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| n.checked_sub(n.min(1000)).filter(|_| n > 0),
            ) {
                let size = left.min(1000) as usize;
                let kind = kinds[turn % kinds.len()];
                turn += 1;
                match post_batch(&http, &base, kind_batch_body(kind, size), size).await {
                    Some(batch) => ids.extend(batch),
                    None => failed += 1,
                }
            }
            (ids, failed)
        });
    }
    let mut ids = Vec::new();
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, f) = joined.map_err(|e| BenchError::Setup(format!("a client task failed: {e}")))?;
        ids.extend(i);
        failed += f;
    }

    let api_cpu = api.cpu_seconds();
    let start = Instant::now();
    let mut procs_w = Vec::new();
    for kind in kinds {
        for i in 0..workers {
            let name = format!("bench-{kind}-{i}");
            procs_w.push(start_drain_worker(ctx, slice, kind, &name, prefetch).await?);
        }
    }
    let deadline = Duration::from_secs(60 + jobs / 50);
    let settled = wait_settled(&http, &base, deadline).await?;
    let seconds = start.elapsed().as_secs_f64();
    if !settled {
        eprintln!("drain: jobs still queued or running after {deadline:?}");
    }
    let succeeded = finished_times(&http, &base).await?;
    let lost = ids.iter().filter(|id| !succeeded.contains_key(*id)).count() as u64;
    let done = ids.len() as u64 - lost;
    let result = DrainResult {
        jobs,
        queues,
        workers,
        prefetch,
        failed,
        lost,
        seconds,
        per_s: done as f64 / seconds,
        api_cpu_per_1000: per_1000(api.cpu_seconds() - api_cpu, done),
        worker_cpu_per_1000: per_1000(procs_w.iter().map(Proc::cpu_seconds).sum(), done),
        worker_rss_mib: procs_w.iter().map(Proc::peak_rss_mib).fold(0.0, f64::max),
    };
    for w in procs_w {
        w.stop(Duration::from_secs(10)).await;
    }
    api.stop(Duration::from_secs(10)).await;
    Ok(result)
}

/// Polls until no job is queued, running or retrying; false if `within` passed first.
pub(crate) async fn wait_settled(
    http: &reqwest::Client,
    base: &str,
    within: Duration,
) -> Result<bool> {
    let start = Instant::now();
    loop {
        let mut busy = false;
        for status in ["queued", "running", "retrying"] {
            let page = get_page(http, &format!("{base}/jobs?status={status}&limit=1")).await?;
            if page["jobs"].as_array().is_some_and(|j| !j.is_empty()) {
                busy = true;
                break;
            }
        }
        if !busy {
            return Ok(true);
        }
        if start.elapsed() > within {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn get_page(http: &reqwest::Client, url: &str) -> Result<Value> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| BenchError::Http(e, "GET /jobs"))?;
    if response.status() != 200 {
        return Err(BenchError::Setup(format!(
            "GET {url} answered {}",
            response.status()
        )));
    }
    response
        .json()
        .await
        .map_err(|e| BenchError::Http(e, "GET /jobs page"))
}

/// Every succeeded job's `finished_at`, by id, following `next_cursor`.
pub(crate) async fn finished_times(
    http: &reqwest::Client,
    base: &str,
) -> Result<HashMap<String, OffsetDateTime>> {
    let mut out = HashMap::new();
    let mut cursor = String::new();
    loop {
        let page = get_page(
            http,
            &format!("{base}/jobs?status=succeeded&limit=1000{cursor}"),
        )
        .await?;
        for job in page["jobs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let id = job["id"].as_str();
            let finished = job["finished_at"].as_str().and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            });
            if let (Some(id), Some(finished)) = (id, finished) {
                out.insert(id.to_owned(), finished);
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return Ok(out),
        }
    }
}
