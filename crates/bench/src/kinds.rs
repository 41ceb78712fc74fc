//! The `kinds` phase: the built-in kinds (`image.thumbnail`, `pdf.render`, `http.request`) run
//! by one stock worker serving only that kind's queue, drain-style: the backlog is built with no
//! worker running, then one worker starts and the phase times until the store shows every job
//! succeeded. Thumbnails are also measured against a ceiling: the same work in a plain loop in
//! this process, with no job system.

use std::{
    io::Cursor,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use image::{ImageBuffer, Rgb};
use offload_worker::handlers::{
    pdf::{Cell, PdfPayload, sample_three_page_report},
    thumbnail::{OutputFormat, ThumbnailOptions, make_thumbnail},
};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::{
    BenchError, Result,
    phases::{self, Context},
    procs::{self, Proc, Slice},
};

/// Width of the generated photo.
pub const PHOTO_WIDTH: u32 = 4000;
/// Height of the generated photo.
pub const PHOTO_HEIGHT: u32 = 3000;
/// JPEG quality of the generated photo.
pub const PHOTO_QUALITY: u8 = 90;
/// The thumbnail box (both sides).
pub const THUMB_SIDE: u32 = 256;
/// `OFFLOAD_MAX_BODY_BYTES` of the phase's API and worker: room for the photo.
const MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
/// `OFFLOAD_THUMBNAIL_MAX_PIXELS` default, used by the ceiling loop too.
const MAX_PIXELS: u64 = 40_000_000;

/// Job counts of the phase.
#[derive(Debug, Clone, Copy)]
pub struct KindsPlan {
    /// `image.thumbnail` jobs (and ceiling iterations).
    pub thumbnails: u64,
    /// `pdf.render` jobs.
    pub pdfs: u64,
    /// `http.request` jobs.
    pub webhooks: u64,
}

/// A plain loop in this process, one core, no job system.
#[derive(Debug, Clone)]
pub struct CeilingResult {
    /// What the loop does.
    pub label: &'static str,
    /// Iterations.
    pub runs: u64,
    /// Wall seconds of the loop (one thread).
    pub seconds: f64,
    /// Iterations per second.
    pub per_s: f64,
    /// CPU seconds this process spent in the loop (it runs alone on one thread).
    pub cpu_s: f64,
    /// Iterations per CPU second: what the worker's per-core rate compares with.
    pub per_cpu_s: f64,
    /// Size of one output in bytes.
    pub output_bytes: usize,
}

/// One built-in kind drained by one stock worker.
#[derive(Debug, Clone)]
pub struct KindResult {
    /// The kind.
    pub kind: &'static str,
    /// Its queue (`OFFLOAD_QUEUES` of the worker).
    pub queue: &'static str,
    /// Jobs submitted.
    pub jobs: u64,
    /// The worker's prefetch.
    pub prefetch: u16,
    /// Submissions not answered 202.
    pub failed: u64,
    /// Accepted jobs not `succeeded` by the deadline.
    pub lost: u64,
    /// Seconds from starting the worker to the last job `succeeded` in the store.
    pub seconds: f64,
    /// Succeeded jobs per wall second.
    pub per_s: f64,
    /// The worker's CPU seconds (user + system) over the drain.
    pub worker_cpu_s: f64,
    /// Succeeded jobs per worker CPU second.
    pub per_worker_core_s: f64,
    /// The API's CPU seconds over the drain.
    pub api_cpu_s: f64,
    /// The worker's peak RSS (MiB).
    pub worker_rss_mib: f64,
}

impl KindResult {
    /// Worker CPU milliseconds per job.
    pub fn worker_cpu_ms_per_job(&self) -> f64 {
        let done = self.jobs.saturating_sub(self.lost);
        if done == 0 {
            0.0
        } else {
            self.worker_cpu_s * 1e3 / done as f64
        }
    }
}

/// The thumbnail part of the phase.
#[derive(Debug, Clone)]
pub struct ThumbnailBench {
    /// Size of the generated JPEG in bytes.
    pub photo_bytes: usize,
    /// `make_thumbnail` in a loop (the ceiling).
    pub ceiling: CeilingResult,
    /// The plain `image` crate in a loop, for reference.
    pub plain_image: CeilingResult,
    /// The job system.
    pub job: KindResult,
}

/// Everything the phase measured.
#[derive(Debug, Clone)]
pub struct KindsResult {
    /// Thumbnails.
    pub thumbnails: ThumbnailBench,
    /// PDFs.
    pub pdf: KindResult,
    /// Webhooks.
    pub webhooks: KindResult,
    /// Requests the local webhook server saw.
    pub webhook_requests: u64,
}

/// A 4000×3000 JPEG (quality 90) that compresses like a photo: smooth gradients and soft
/// blobs of colour with mild per-pixel noise (not pure noise, which no photo is).
pub fn generate_photo() -> Result<Vec<u8>> {
    let (w, h) = (PHOTO_WIDTH, PHOTO_HEIGHT);
    // Low-frequency structure per column and per row, computed once.
    let cols: Vec<[f32; 3]> = (0..w)
        .map(|x| {
            let t = x as f32 / w as f32;
            [
                90.0 * t + 25.0 * (t * 7.0).sin(),
                60.0 + 40.0 * (t * 3.1 + 1.0).sin(),
                40.0 * (1.0 - t) + 20.0 * (t * 11.0).cos(),
            ]
        })
        .collect();
    let rows: Vec<[f32; 3]> = (0..h)
        .map(|y| {
            let t = y as f32 / h as f32;
            [
                70.0 * (1.0 - t) + 15.0 * (t * 9.0).cos(),
                50.0 * t + 20.0 * (t * 5.0).sin(),
                110.0 * (1.0 - t * 0.6) + 25.0 * (t * 13.0).sin(),
            ]
        })
        .collect();
    let mut state: u32 = 0x9E37_79B9;
    let img = ImageBuffer::from_fn(w, h, |x, y| {
        // xorshift32: mild noise, a few levels either way, as a sensor gives.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = ((state & 0xF) as f32) - 7.5;
        let (c, r) = (cols[x as usize], rows[y as usize]);
        // A coarse checker of soft tiles gives edges the encoder has to spend bits on.
        let tile = if ((x / 250) + (y / 250)) % 2 == 0 {
            12.0
        } else {
            -12.0
        };
        let px = |i: usize| (c[i] + r[i] + tile + noise).clamp(0.0, 255.0) as u8;
        Rgb([px(0), px(1), px(2)])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, PHOTO_QUALITY)
        .encode_image(&img)
        .map_err(|e| BenchError::Setup(format!("encoding the photo: {e}")))?;
    Ok(out)
}

/// The thumbnail options of both the ceiling and the jobs: 256-px box, contain, WebP.
fn thumb_options() -> ThumbnailOptions {
    ThumbnailOptions {
        format: OutputFormat::Webp,
        ..ThumbnailOptions::new(THUMB_SIDE, THUMB_SIDE)
    }
}

/// `runs` × `make_thumbnail` on one thread.
pub fn ceiling_make_thumbnail(photo: &[u8], runs: u64) -> Result<CeilingResult> {
    let opts = thumb_options();
    let start = Instant::now();
    let cpu = procs::cpu_seconds(std::process::id());
    let mut output_bytes = 0;
    for _ in 0..runs {
        let thumb = make_thumbnail(photo, &opts, MAX_PIXELS)
            .map_err(|e| BenchError::Setup(format!("make_thumbnail: {e}")))?;
        output_bytes = thumb.bytes.len();
    }
    Ok(ceiling(
        "make_thumbnail (decode, resize, WebP)",
        runs,
        (start, cpu),
        output_bytes,
    ))
}

/// `runs` × the plain `image` crate: `load_from_memory`, `thumbnail(256, 256)`, WebP encode.
pub fn ceiling_plain_image(photo: &[u8], runs: u64) -> Result<CeilingResult> {
    let start = Instant::now();
    let cpu = procs::cpu_seconds(std::process::id());
    let mut output_bytes = 0;
    for _ in 0..runs {
        let img = image::load_from_memory(photo)
            .map_err(|e| BenchError::Setup(format!("image::load_from_memory: {e}")))?;
        let thumb = img.thumbnail(THUMB_SIDE, THUMB_SIDE);
        let mut out = Cursor::new(Vec::new());
        thumb
            .write_to(&mut out, image::ImageFormat::WebP)
            .map_err(|e| BenchError::Setup(format!("WebP encode: {e}")))?;
        output_bytes = out.get_ref().len();
    }
    Ok(ceiling(
        "image crate alone (load_from_memory, thumbnail, WebP)",
        runs,
        (start, cpu),
        output_bytes,
    ))
}

fn ceiling(
    label: &'static str,
    runs: u64,
    (start, cpu_before): (Instant, f64),
    output_bytes: usize,
) -> CeilingResult {
    let seconds = start.elapsed().as_secs_f64();
    let cpu_s = procs::cpu_seconds(std::process::id()) - cpu_before;
    let rate = |s: f64| if s > 0.0 { runs as f64 / s } else { 0.0 };
    CeilingResult {
        label,
        runs,
        seconds,
        per_s: rate(seconds),
        cpu_s,
        per_cpu_s: rate(cpu_s),
        output_bytes,
    }
}

/// How the backlog of a kind is submitted.
enum Backlog {
    /// Multipart `POST /jobs` of the photo, one per job.
    Thumbnails(Arc<Vec<u8>>),
    /// `POST /jobs/batch` of these payloads (one per job) of `kind`.
    Json(Vec<Value>),
}

/// Runs the whole phase.
pub async fn run(ctx: &Context<'_>, plan: KindsPlan) -> Result<KindsResult> {
    eprintln!("   generating the {PHOTO_WIDTH}×{PHOTO_HEIGHT} photo");
    let photo = tokio::task::spawn_blocking(generate_photo)
        .await
        .map_err(|e| BenchError::Setup(format!("photo task: {e}")))??;
    eprintln!(
        "   photo: {:.2} MB JPEG; ceiling loops ({} runs each)",
        photo.len() as f64 / 1e6,
        plan.thumbnails
    );
    let photo = Arc::new(photo);
    let runs = plan.thumbnails.max(1);
    let (ceil, plain) = {
        let photo = photo.clone();
        tokio::task::spawn_blocking(move || {
            Ok::<_, BenchError>((
                ceiling_make_thumbnail(&photo, runs)?,
                ceiling_plain_image(&photo, runs)?,
            ))
        })
        .await
        .map_err(|e| BenchError::Setup(format!("ceiling task: {e}")))??
    };

    eprintln!("   image.thumbnail: {} jobs", plan.thumbnails);
    let thumb_job = drain_kind(
        ctx,
        "image.thumbnail",
        "thumbnails",
        1,
        Backlog::Thumbnails(photo.clone()),
        plan.thumbnails,
        &[],
    )
    .await?;

    eprintln!("   pdf.render: {} jobs", plan.pdfs);
    let sample = pdf_payload_json(&sample_three_page_report());
    let pdf = drain_kind(
        ctx,
        "pdf.render",
        "documents",
        2,
        Backlog::Json(vec![sample; plan.pdfs as usize]),
        plan.pdfs,
        &[],
    )
    .await?;

    eprintln!("   http.request: {} jobs", plan.webhooks);
    let (addr, hits, server) = hook_server().await?;
    let payloads = (0..plan.webhooks)
        .map(|i| json!({"url": format!("http://{addr}/hook"), "body": {"n": i}}))
        .collect();
    let webhooks = drain_kind(
        ctx,
        "http.request",
        "webhooks",
        64,
        Backlog::Json(payloads),
        plan.webhooks,
        &[("OFFLOAD_WEBHOOK_ALLOW", "127.0.0.1".to_owned())],
    )
    .await;
    server.abort();
    let webhooks = webhooks?;

    Ok(KindsResult {
        thumbnails: ThumbnailBench {
            photo_bytes: photo.len(),
            ceiling: ceil,
            plain_image: plain,
            job: thumb_job,
        },
        pdf,
        webhooks,
        webhook_requests: hits.load(Ordering::Relaxed),
    })
}

/// The JSON of a `pdf.render` payload (`PdfPayload` is not `Serialize`): reports only, which is
/// what the sample is.
pub fn pdf_payload_json(doc: &PdfPayload) -> Value {
    match doc {
        PdfPayload::Report { title, data } => {
            let rows: Vec<Vec<Value>> = data
                .rows
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|cell| match cell {
                            Cell::Number(n) => Value::Number(n.clone()),
                            Cell::Text(t) => Value::String(t.clone()),
                        })
                        .collect()
                })
                .collect();
            json!({
                "template": "report",
                "title": title,
                "data": {
                    "paragraphs": data.paragraphs,
                    "columns": data.columns,
                    "rows": rows,
                    "conclusion": data.conclusion,
                }
            })
        }
        PdfPayload::Invoice { .. } => json!({"template": "invoice"}),
    }
}

/// A local HTTP server answering `POST /hook` with 200 "ok" and counting requests.
async fn hook_server() -> Result<(
    std::net::SocketAddr,
    Arc<AtomicU64>,
    tokio::task::JoinHandle<()>,
)> {
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::any(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::Io(e, "cannot bind the webhook server".into()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::Io(e, "webhook server address".into()))?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, hits, server))
}

/// One kind in its own slice: API, backlog, one worker on `queue`, until all succeeded.
async fn drain_kind(
    ctx: &Context<'_>,
    kind: &'static str,
    queue: &'static str,
    prefetch: u16,
    backlog: Backlog,
    jobs: u64,
    worker_env: &[(&str, String)],
) -> Result<KindResult> {
    let slice = Slice::new(ctx.amqp_url, ctx.queue_type);
    let outcome = drain_kind_in(
        ctx, &slice, kind, queue, prefetch, backlog, jobs, worker_env,
    )
    .await;
    slice.cleanup().await;
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn drain_kind_in(
    ctx: &Context<'_>,
    slice: &Slice,
    kind: &'static str,
    queue: &'static str,
    prefetch: u16,
    backlog: Backlog,
    jobs: u64,
    worker_env: &[(&str, String)],
) -> Result<KindResult> {
    let body_limit = ("OFFLOAD_MAX_BODY_BYTES", MAX_BODY_BYTES.to_string());
    let (api, base) =
        procs::start_api_with(ctx.bins, slice, std::slice::from_ref(&body_limit)).await?;
    let http = phases::client(slice)?;
    let (ids, failed) = match backlog {
        Backlog::Thumbnails(photo) => submit_thumbnails(&http, &base, photo, jobs).await,
        Backlog::Json(payloads) => submit_json(&http, &base, kind, payloads).await,
    };

    let api_cpu = api.cpu_seconds();
    let start = Instant::now();
    let mut env = vec![body_limit, ("OFFLOAD_QUEUES", queue.to_owned())];
    env.extend(worker_env.iter().cloned());
    let worker = procs::start_program_with(
        &ctx.bins.worker,
        slice,
        &format!("bench-{queue}"),
        prefetch,
        &env,
    )
    .await?;
    let deadline = Duration::from_secs(120 + jobs / 20);
    let settled = phases::wait_settled(&http, &base, deadline).await?;
    let seconds = start.elapsed().as_secs_f64();
    let worker_cpu_s = worker.cpu_seconds();
    let worker_rss_mib = worker.peak_rss_mib();
    if !settled {
        eprintln!("{kind}: jobs still queued or running after {deadline:?}");
    }
    let succeeded = phases::finished_times(&http, &base).await?;
    let lost = ids.iter().filter(|id| !succeeded.contains_key(*id)).count() as u64;
    let done = ids.len() as u64 - lost;
    let result = KindResult {
        kind,
        queue,
        jobs,
        prefetch,
        failed,
        lost: lost + jobs.saturating_sub(ids.len() as u64 + failed),
        seconds,
        per_s: done as f64 / seconds,
        worker_cpu_s,
        per_worker_core_s: if worker_cpu_s > 0.0 {
            done as f64 / worker_cpu_s
        } else {
            0.0
        },
        api_cpu_s: api.cpu_seconds() - api_cpu,
        worker_rss_mib,
    };
    stop(worker).await;
    stop(api).await;
    Ok(result)
}

async fn stop(proc: Proc) {
    proc.stop(Duration::from_secs(10)).await;
}

/// `jobs` multipart submissions of the photo from two clients; the ids and the failures.
async fn submit_thumbnails(
    http: &reqwest::Client,
    base: &str,
    photo: Arc<Vec<u8>>,
    jobs: u64,
) -> (Vec<String>, u64) {
    let remaining = Arc::new(AtomicU64::new(jobs));
    let mut tasks = JoinSet::new();
    for _ in 0..2 {
        let (http, base, photo, remaining) = (
            http.clone(),
            base.to_owned(),
            photo.clone(),
            remaining.clone(),
        );
        tasks.spawn(async move {
            let mut ids = Vec::new();
            let mut failed = 0u64;
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                match post_thumbnail(&http, &base, &photo).await {
                    Some(id) => ids.push(id),
                    None => failed += 1,
                }
            }
            (ids, failed)
        });
    }
    collect(tasks).await
}

/// One multipart `POST /jobs` of `image.thumbnail`; the id on 202.
async fn post_thumbnail(http: &reqwest::Client, base: &str, photo: &[u8]) -> Option<String> {
    let part = reqwest::multipart::Part::bytes(photo.to_vec())
        .file_name("photo.jpg")
        .mime_str("image/jpeg")
        .ok()?;
    let form = reqwest::multipart::Form::new()
        .text("kind", "image.thumbnail")
        .text("payload.file", "image")
        .text("payload.width", THUMB_SIDE.to_string())
        .text("payload.format", "webp")
        .part("image", part);
    let response = http
        .post(format!("{base}/jobs"))
        .timeout(Duration::from_secs(60))
        .multipart(form)
        .send()
        .await
        .ok()?;
    if response.status() != 202 {
        eprintln!(
            "image.thumbnail submit answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        return None;
    }
    let job: Value = response.json().await.ok()?;
    job["id"].as_str().map(str::to_owned)
}

/// The payloads as `POST /jobs/batch` requests of up to 500 from 4 clients.
async fn submit_json(
    http: &reqwest::Client,
    base: &str,
    kind: &str,
    payloads: Vec<Value>,
) -> (Vec<String>, u64) {
    let bodies: Vec<(String, usize)> = payloads
        .chunks(500)
        .map(|chunk| {
            let jobs: Vec<Value> = chunk
                .iter()
                .map(|p| json!({"kind": kind, "payload": p}))
                .collect();
            (json!({ "jobs": jobs }).to_string(), chunk.len())
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let mut tasks = JoinSet::new();
    for _ in 0..4 {
        let (http, base, queue) = (http.clone(), base.to_owned(), queue.clone());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            let mut failed = 0u64;
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some((body, size)) = next else { break };
                match phases::post_batch(&http, &base, body, size).await {
                    Some(batch) => ids.extend(batch),
                    None => failed += size as u64,
                }
            }
            (ids, failed)
        });
    }
    collect(tasks).await
}

async fn collect(mut tasks: JoinSet<(Vec<String>, u64)>) -> (Vec<String>, u64) {
    let mut ids = Vec::new();
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, f)) => {
                ids.extend(i);
                failed += f;
            }
            Err(_) => failed += 1,
        }
    }
    (ids, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pdf_sample_round_trips_through_its_json() {
        let sample = sample_three_page_report();
        let back: PdfPayload =
            serde_json::from_value(pdf_payload_json(&sample)).expect("the JSON parses back");
        assert_eq!(back, sample);
    }

    #[test]
    fn the_ceiling_makes_a_256_px_webp() {
        // A small image: the loop's plumbing, not its speed.
        let img =
            ImageBuffer::from_fn(800, 600, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .expect("encodes");
        let c = ceiling_make_thumbnail(&jpeg, 2).expect("thumbnails");
        assert_eq!(c.runs, 2);
        assert!(c.output_bytes > 0 && c.per_s > 0.0);
        assert!(c.cpu_s >= 0.0);
        let p = ceiling_plain_image(&jpeg, 1).expect("thumbnails");
        assert!(p.output_bytes > 0);
        let thumb = make_thumbnail(&jpeg, &thumb_options(), MAX_PIXELS).expect("thumbnail");
        assert_eq!((thumb.width, thumb.height), (256, 192));
    }
}
