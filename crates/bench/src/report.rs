//! The results table, the correctness gate, and `docs/benchmarks.md`.

use std::{fmt::Write as _, path::PathBuf};

use crate::{
    Args, BenchError, Plan, Result,
    kinds::{KindResult, KindsResult},
    phases::{DrainResult, EndToEndResult, EnqueueResult},
    raw::RawResult,
};

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Results {
    /// RabbitMQ version from the server properties.
    pub broker_version: String,
    /// Raw ceiling, window matched to the enqueue concurrency.
    pub raw: Option<RawResult>,
    /// Raw publisher with a batch's window, the ceiling of the batch phase.
    pub raw_wide: Option<RawResult>,
    /// Enqueue levels.
    pub enqueue: Vec<EnqueueResult>,
    /// Batch enqueue levels.
    pub batch: Vec<EnqueueResult>,
    /// End-to-end.
    pub e2e: Option<EndToEndResult>,
    /// Drain runs.
    pub drain: Vec<DrainResult>,
    /// The built-in kinds.
    pub kinds: Option<KindsResult>,
}

impl Results {
    /// Fails unless every request was a 202 and every accepted job succeeded.
    pub fn check(&self) -> Result<()> {
        let mut problems = Vec::new();
        for e in self.enqueue.iter().chain(&self.batch) {
            if e.failed > 0 {
                problems.push(format!(
                    "{} requests of {} jobs failed at concurrency {}",
                    e.failed, e.batch, e.concurrency
                ));
            }
            if e.accepted == 0 {
                problems.push(format!("no job accepted at concurrency {}", e.concurrency));
            }
        }
        if let Some(e) = &self.e2e {
            if e.failed > 0 {
                problems.push(format!(
                    "{} POST /jobs failed in the end-to-end phase",
                    e.failed
                ));
            }
            if e.lost > 0 {
                problems.push(format!(
                    "{} of {} jobs never succeeded in the end-to-end phase",
                    e.lost, e.accepted
                ));
            }
        }
        for d in &self.drain {
            if d.failed > 0 {
                problems.push(format!(
                    "{} POST /jobs failed building the drain backlog",
                    d.failed
                ));
            }
            if d.lost > 0 {
                problems.push(format!(
                    "{} of {} jobs never succeeded draining with {} worker(s)",
                    d.lost, d.jobs, d.workers
                ));
            }
        }
        if let Some(k) = &self.kinds {
            for r in [&k.thumbnails.job, &k.pdf, &k.webhooks] {
                if r.failed > 0 {
                    problems.push(format!("{} submissions of {} failed", r.failed, r.kind));
                }
                if r.lost > 0 {
                    problems.push(format!(
                        "{} of {} {} jobs never succeeded",
                        r.lost, r.jobs, r.kind
                    ));
                }
            }
            if k.webhook_requests < k.webhooks.jobs {
                problems.push(format!(
                    "the webhook server saw {} requests for {} http.request jobs",
                    k.webhook_requests, k.webhooks.jobs
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BenchError::Incorrect(problems.join("; ")))
        }
    }
}

/// The results as Markdown tables.
pub fn table(r: &Results) -> String {
    let mut s = String::new();
    if let Some(raw) = &r.raw {
        let _ = writeln!(
            s,
            "| Raw broker ({} msgs, ~200 B, persistent, confirms) | msg/s |\n|---|---:|",
            raw.messages
        );
        for raw in std::iter::once(raw).chain(&r.raw_wide) {
            let _ = writeln!(
                s,
                "| publish (confirmed), window {} (CPU s / 1000: broker {}, publisher {:.3}) | {:.0} |",
                raw.window,
                cpu(raw.publish_cpu.broker),
                raw.publish_cpu.client,
                raw.publish_per_s
            );
        }
        let _ = writeln!(
            s,
            "| consume (ack each, prefetch 256) | {:.0} |\n",
            raw.consume_per_s
        );
    }
    for (rows, title) in [
        (&r.enqueue, "Enqueue: POST /jobs, concurrency"),
        (&r.batch, "Batch: POST /jobs/batch, concurrency × jobs"),
    ] {
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "| {title} | jobs/s | p50 ms | p99 ms | p99.9 ms | jobs accepted | failed requests | CPU s / 1000 jobs: API / broker / client | API peak RSS MiB |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for e in rows {
            let level = if e.batch == 1 {
                e.concurrency.to_string()
            } else {
                format!("{} × {}", e.concurrency, e.batch)
            };
            let _ = writeln!(
                s,
                "| {level} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {:.3} / {} / {:.3} | {:.1} |",
                e.per_s,
                e.latency.p50,
                e.latency.p99,
                e.latency.p999,
                e.accepted,
                e.failed,
                e.api_cpu_per_1000,
                cpu(e.other_cpu.broker),
                e.other_cpu.client,
                e.api_rss_mib
            );
        }
        s.push('\n');
    }
    if let Some(e) = &r.e2e {
        let _ = writeln!(
            s,
            "| End-to-end: offered jobs/s, workers (prefetch 16) | jobs | p50 ms | p99 ms | lost | failed | API CPU s / 1000 | worker CPU s / 1000 | API / worker peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let _ = writeln!(
            s,
            "| {} jobs/s, {} | {} | {:.1} | {:.1} | {} | {} | {:.3} | {:.3} | {:.1} / {:.1} |\n",
            e.rate,
            e.workers,
            e.accepted,
            e.latency.p50,
            e.latency.p99,
            e.lost,
            e.failed,
            e.api_cpu_per_1000,
            e.worker_cpu_per_1000,
            e.api_rss_mib,
            e.worker_rss_mib
        );
    }
    if !r.drain.is_empty() {
        let _ = writeln!(
            s,
            "| Drain: backlog, queues, workers per queue × prefetch | seconds | jobs/s | lost | API CPU s / 1000 | worker CPU s / 1000 | worker peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for d in &r.drain {
            let _ = writeln!(
                s,
                "| {} jobs, {} queue{}, {} × {} | {:.2} | {:.0} | {} | {:.3} | {:.3} | {:.1} |",
                d.jobs,
                d.queues,
                if d.queues == 1 { "" } else { "s" },
                d.workers,
                d.prefetch,
                d.seconds,
                d.per_s,
                d.lost,
                d.api_cpu_per_1000,
                d.worker_cpu_per_1000,
                d.worker_rss_mib
            );
        }
        s.push('\n');
    }
    if let Some(k) = &r.kinds {
        kinds_table(k, &mut s);
    }
    targets(r, &mut s);
    s
}

/// The kinds phase's tables: the thumbnail ceiling, then one row per kind.
fn kinds_table(k: &KindsResult, s: &mut String) {
    let t = &k.thumbnails;
    let _ = writeln!(
        s,
        "| Thumbnail ceiling: one core, no job system ({:.2} MB 4000×3000 JPEG q90 → 256 px WebP) | runs | seconds | thumbnails/s (wall) | CPU s | thumbnails per CPU second |\n|---|---:|---:|---:|---:|---:|",
        t.photo_bytes as f64 / 1e6
    );
    for c in [&t.ceiling, &t.plain_image] {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            c.label, c.runs, c.seconds, c.per_s, c.cpu_s, c.per_cpu_s
        );
    }
    s.push('\n');
    let _ = writeln!(
        s,
        "| Built-in kind (one stock worker, OFFLOAD_QUEUES, prefetch) | jobs | seconds | jobs/s (wall) | worker CPU s | worker CPU ms / job | jobs per worker-core-second | API CPU s | lost | worker peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in [&t.job, &k.pdf, &k.webhooks] {
        kind_row(r, s);
    }
    s.push('\n');
    // CPU against CPU: the machine is shared, so wall time of either side includes waiting.
    let ratio = if t.ceiling.per_cpu_s > 0.0 {
        t.job.per_worker_core_s / t.ceiling.per_cpu_s
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "Thumbnails per worker-core-second against the one-core ceiling (thumbnails per CPU second of the make_thumbnail loop): {:.2} / {:.2} = {ratio:.2} × (target ≥ 0.80: {}). The webhook server saw {} requests for {} jobs.\n",
        t.job.per_worker_core_s,
        t.ceiling.per_cpu_s,
        if ratio >= 0.8 { "met" } else { "not met" },
        k.webhook_requests,
        k.webhooks.jobs
    );
}

fn kind_row(r: &KindResult, s: &mut String) {
    let _ = writeln!(
        s,
        "| {} (queue {}, prefetch {}) | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.1} |",
        r.kind,
        r.queue,
        r.prefetch,
        r.jobs,
        r.seconds,
        r.per_s,
        r.worker_cpu_s,
        r.worker_cpu_ms_per_job(),
        r.per_worker_core_s,
        r.api_cpu_s,
        r.lost,
        r.worker_rss_mib
    );
}

/// A CPU figure, or "?" where it could not be read.
fn cpu(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "?".to_owned(), |s| format!("{s:.3}"))
}

/// The targets against this run, where the run measured them.
fn targets(r: &Results, s: &mut String) {
    let mut rows: Vec<(String, String, bool)> = Vec::new();
    let raw = r.raw.as_ref();
    if let (Some(raw), Some(e)) = (raw, r.enqueue.iter().find(|e| e.concurrency == 64)) {
        let ratio = e.per_s / raw.publish_per_s;
        rows.push((
            "enqueue at 64 ≥ 0.8 × raw publish and ≥ 10,000 jobs/s".into(),
            format!("{:.0} jobs/s = {ratio:.2} ×", e.per_s),
            ratio >= 0.8 && e.per_s >= 10_000.0,
        ));
    }
    if let (Some(wide), Some(best)) = (
        r.raw_wide.as_ref(),
        r.batch.iter().max_by(|a, b| a.per_s.total_cmp(&b.per_s)),
    ) {
        let ratio = best.per_s / wide.publish_per_s;
        rows.push((
            format!(
                "POST /jobs/batch ≥ 0.9 × raw publish (window {})",
                wide.window
            ),
            format!(
                "{:.0} jobs/s at {} × {} = {ratio:.2} ×",
                best.per_s, best.concurrency, best.batch
            ),
            ratio >= 0.9,
        ));
    }
    if let Some(e) = r.enqueue.iter().find(|e| e.concurrency == 1) {
        rows.push((
            "single connection p50 ≤ 1.5 ms, p99 ≤ 5 ms".into(),
            format!("{:.2} / {:.2} ms", e.latency.p50, e.latency.p99),
            e.latency.p50 <= 1.5 && e.latency.p99 <= 5.0,
        ));
    }
    if let Some(e) = r.e2e.as_ref().filter(|e| e.rate == 1000) {
        rows.push((
            "end-to-end at 1,000 jobs/s p50 ≤ 10 ms, p99 ≤ 50 ms".into(),
            format!("{:.1} / {:.1} ms", e.latency.p50, e.latency.p99),
            e.latency.p50 <= 10.0 && e.latency.p99 <= 50.0,
        ));
    }
    if let (Some(raw), Some(d)) = (
        raw,
        r.drain.iter().find(|d| d.workers == 2 && d.queues == 1),
    ) {
        let ratio = d.per_s / raw.consume_per_s;
        rows.push((
            "drain with 2 workers ≥ 0.7 × raw consume".into(),
            format!("{:.0} jobs/s = {ratio:.2} ×", d.per_s),
            ratio >= 0.7,
        ));
    }
    let api_rss = r
        .enqueue
        .iter()
        .chain(&r.batch)
        .map(|e| e.api_rss_mib)
        .chain(r.e2e.as_ref().map(|e| e.api_rss_mib))
        .fold(0.0, f64::max);
    if api_rss > 0.0 {
        rows.push((
            "API ≤ 64 MB RSS under full load".into(),
            format!("{:.1} MiB", api_rss),
            api_rss * 1.048_576 <= 64.0,
        ));
    }
    let worker_rss = r
        .drain
        .iter()
        .map(|d| d.worker_rss_mib)
        .chain(r.e2e.as_ref().map(|e| e.worker_rss_mib))
        .fold(0.0, f64::max);
    if worker_rss > 0.0 {
        rows.push((
            "idle worker ≤ 24 MB RSS (its peak under load here)".into(),
            format!("{worker_rss:.1} MiB"),
            worker_rss * 1.048_576 <= 24.0,
        ));
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(s, "| Target | measured | met |\n|---|---:|:---:|");
    for (target, measured, met) in rows {
        let _ = writeln!(
            s,
            "| {target} | {measured} | {} |",
            if met { "yes" } else { "no" }
        );
    }
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn machine() -> String {
    let cpus = command_output("nproc", &[]).unwrap_or_else(|| "?".into());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    format!("{cpus} CPUs ({model}), {mem} RAM, {}", std::env::consts::OS)
}

/// Writes `docs/benchmarks.md` for quorum queues, `docs/benchmarks-classic.md` for classic ones
/// (relative to the current directory); returns its path.
pub fn write(args: &Args, plan: &Plan, r: &Results, table: &str) -> Result<PathBuf> {
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"])
        .unwrap_or_else(|| "unknown".into());
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mode = if args.quick { "quick" } else { "full" };
    let mut doc = String::new();
    let _ = writeln!(doc, "# Benchmarks\n");
    let _ = writeln!(
        doc,
        "Measured by `offload-bench` (crates/bench); reproduce with \
         `cargo build --release --bins && target/release/offload-bench --write-report` \
         (`--queue-type classic` writes docs/benchmarks-classic.md). Targets are for quorum queues. Every phase runs under its own queue \
         prefix and SQLite store file; no worker runs during the enqueue phase. The run refuses \
         to write this file if any request failed or any accepted job did not succeed.\n"
    );
    let _ = writeln!(doc, "- Command: `{command}`");
    let _ = writeln!(doc, "- Mode: {mode}");
    let _ = writeln!(doc, "- Queue type: {}", args.queue_type.as_str());
    let _ = writeln!(doc, "- RabbitMQ: {}", r.broker_version);
    let _ = writeln!(doc, "- Machine: {}", machine());
    let _ = writeln!(doc, "- Commit: {commit}");
    let _ = writeln!(doc, "- Date: {date}");
    let _ = writeln!(
        doc,
        "- Counts used: raw {} messages; enqueue {:?} s per concurrency level {:?}; batch {:?} s per level {:?} × {} jobs; end-to-end {} jobs/s for {:?} s with {} worker(s); drain backlog {} jobs with {:?} worker(s) at prefetch {}",
        plan.raw_messages,
        plan.enqueue_for.as_secs(),
        plan.concurrency,
        plan.enqueue_for.as_secs(),
        plan.batch_concurrency,
        plan.batch_size,
        plan.e2e_rate,
        plan.e2e_for.as_secs(),
        plan.e2e_workers,
        plan.drain_jobs,
        plan.drain_workers,
        plan.drain_prefetch
    );
    let _ = writeln!(
        doc,
        "- Built-in kinds: {} image.thumbnail, {} pdf.render (the 3-page sample report), {} http.request (to a local server in the bench), each as a backlog drained by one stock worker serving only that kind's queue (OFFLOAD_QUEUES); the thumbnail ceiling is the same decode, resize and WebP encode in a plain loop on one core. Jobs per worker-core-second divide by the worker's CPU seconds only (the API and broker share the machine).",
        plan.kinds.thumbnails, plan.kinds.pdfs, plan.kinds.webhooks
    );
    let _ = writeln!(
        doc,
        "- The API, workers, RabbitMQ and the load generator share the machine, so they compete for its CPUs. Drain time runs from starting the workers to the last job `succeeded` in the store.\n"
    );
    doc.push_str(table);
    let path = PathBuf::from(match args.queue_type {
        crate::QueueType::Quorum => "docs/benchmarks.md",
        crate::QueueType::Classic => "docs/benchmarks-classic.md",
    });
    std::fs::write(&path, doc)
        .map_err(|e| BenchError::Io(e, format!("cannot write {}", path.display())))?;
    Ok(path)
}
