//! The results table, the correctness gate, and `docs/benchmarks.md`.

use std::{fmt::Write as _, path::PathBuf};

use crate::{
    Args, BenchError, Plan, Result,
    phases::{DrainResult, EndToEndResult, EnqueueResult},
    raw::RawResult,
};

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Results {
    /// RabbitMQ version from the server properties.
    pub broker_version: String,
    /// Raw ceiling.
    pub raw: Option<RawResult>,
    /// Enqueue levels.
    pub enqueue: Vec<EnqueueResult>,
    /// End-to-end.
    pub e2e: Option<EndToEndResult>,
    /// Drain runs.
    pub drain: Vec<DrainResult>,
}

impl Results {
    /// Fails unless every request was a 202 and every accepted job succeeded.
    pub fn check(&self) -> Result<()> {
        let mut problems = Vec::new();
        for e in &self.enqueue {
            if e.failed > 0 {
                problems.push(format!(
                    "{} POST /jobs failed at concurrency {}",
                    e.failed, e.concurrency
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
            "| Raw broker ({} msgs, ~200 B, persistent, confirms, window {}) | msg/s |\n|---|---:|",
            raw.messages, raw.window
        );
        let _ = writeln!(s, "| publish (confirmed) | {:.0} |", raw.publish_per_s);
        let _ = writeln!(
            s,
            "| consume (ack each, prefetch 256) | {:.0} |\n",
            raw.consume_per_s
        );
    }
    if !r.enqueue.is_empty() {
        let _ = writeln!(
            s,
            "| Enqueue: POST /jobs, concurrency | jobs/s | p50 ms | p99 ms | p99.9 ms | 202s | failed | API CPU s / 1000 jobs | API peak RSS MiB |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for e in &r.enqueue {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {:.3} | {:.1} |",
                e.concurrency,
                e.per_s,
                e.latency.p50,
                e.latency.p99,
                e.latency.p999,
                e.accepted,
                e.failed,
                e.api_cpu_per_1000,
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
            "| Drain: backlog, workers (prefetch 64) | seconds | jobs/s | lost | API CPU s / 1000 | worker CPU s / 1000 | worker peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for d in &r.drain {
            let _ = writeln!(
                s,
                "| {} jobs, {} | {:.2} | {:.0} | {} | {:.3} | {:.3} | {:.1} |",
                d.jobs,
                d.workers,
                d.seconds,
                d.per_s,
                d.lost,
                d.api_cpu_per_1000,
                d.worker_cpu_per_1000,
                d.worker_rss_mib
            );
        }
    }
    s
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

/// Writes `docs/benchmarks.md` (relative to the current directory); returns its path.
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
         (add `--queue-type classic` for classic queues). Every phase runs under its own queue \
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
        "- Counts used: raw {} messages; enqueue {:?} s per concurrency level {:?}; end-to-end {} jobs/s for {:?} s with {} worker(s); drain backlog {} jobs with {:?} worker(s)",
        plan.raw_messages,
        plan.enqueue_for.as_secs(),
        plan.concurrency,
        plan.e2e_rate,
        plan.e2e_for.as_secs(),
        plan.e2e_workers,
        plan.drain_jobs,
        plan.drain_workers
    );
    let _ = writeln!(
        doc,
        "- The API, workers, RabbitMQ and the load generator share the machine, so they compete for its CPUs. Drain time runs from starting the workers to the last job `succeeded` in the store.\n"
    );
    doc.push_str(table);
    let path = PathBuf::from("docs/benchmarks.md");
    std::fs::write(&path, doc)
        .map_err(|e| BenchError::Io(e, format!("cannot write {}", path.display())))?;
    Ok(path)
}
