//! `offload-bench`: measures the broker's raw ceiling and the real binaries (enqueue rate,
//! end-to-end latency, drain throughput, CPU and memory) in one run, each phase under its own
//! random queue prefix, and refuses to report numbers from a run that lost or refused a job.
//!
//! # Layout
//! - [`procs`]: the `offload-api` / `offload-worker` child processes, their logs, CPU and RSS.
//! - [`raw`]: lapin publisher and consumer against a bare durable queue (the ceiling).
//! - [`phases`]: the HTTP phases: enqueue (closed loop), end-to-end (open loop), drain.
//! - [`kinds`]: the built-in kinds (thumbnails, PDFs, webhooks), each drained by one stock worker,
//!   thumbnails against a plain-loop ceiling.
//! - [`report`]: the table and `docs/benchmarks.md`.

pub mod kinds;
pub mod phases;
pub mod procs;
pub mod raw;
pub mod report;

use std::time::Duration;

use clap::Parser;

/// Why a benchmark run failed or refused to report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The broker refused or dropped something.
    #[error("broker: {1}: {0}")]
    Broker(#[source] lapin::Error, &'static str),
    /// An HTTP call failed below the status line.
    #[error("http: {1}: {0}")]
    Http(#[source] reqwest::Error, &'static str),
    /// A process or file operation failed.
    #[error("{1}: {0}")]
    Io(#[source] std::io::Error, String),
    /// A wait ran past its deadline.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// The run was not correct (lost jobs, failed requests): its numbers are not reported.
    #[error("refusing to report: {0}")]
    Incorrect(String),
    /// Something needed is missing, with the fix.
    #[error("{0}")]
    Setup(String),
}

/// Result of a benchmark step.
pub type Result<T> = std::result::Result<T, BenchError>;

/// Queue type of every queue the run declares: the same setting the binaries take.
pub use offload_shared::QueueType;

/// Command-line options; counts default by mode (full, or `--quick`).
#[derive(Debug, Clone, Parser)]
#[command(name = "offload-bench", version, about)]
pub struct Args {
    /// Small counts for CI: proves the harness works and that no job is lost, not speed.
    #[arg(long)]
    pub quick: bool,
    /// Queue type of every queue declared.
    #[arg(long, value_enum, default_value = "quorum")]
    pub queue_type: QueueType,
    /// Write docs/benchmarks.md with the table, the machine and the command.
    #[arg(long)]
    pub write_report: bool,
    /// RabbitMQ address.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_AMQP_URL", default_value = offload_shared::settings::DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// Unconfirmed messages in flight of the raw publisher.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Messages of the raw phase (default 100000, quick 5000).
    #[arg(long)]
    pub raw_messages: Option<u64>,
    /// Seconds per concurrency level of the enqueue phase (default 10, quick 1).
    #[arg(long)]
    pub enqueue_seconds: Option<u64>,
    /// Offered rate of the end-to-end phase in jobs/s (default 1000, quick 200).
    #[arg(long)]
    pub e2e_rate: Option<u64>,
    /// Seconds of offered load in the end-to-end phase (default 20, quick 3).
    #[arg(long)]
    pub e2e_seconds: Option<u64>,
    /// Workers during the end-to-end phase (default 2, quick 1).
    #[arg(long)]
    pub e2e_workers: Option<usize>,
    /// Backlog of the drain phase (default 100000, quick 2000).
    #[arg(long)]
    pub drain_jobs: Option<u64>,
    /// Worker counts of the drain phase, comma-separated (default 1,2,4; quick 1).
    #[arg(long, value_delimiter = ',')]
    pub drain_workers: Option<Vec<usize>>,
    /// Prefetch (and concurrency) of each worker in the drain phase.
    #[arg(long, default_value_t = 128)]
    pub drain_prefetch: u16,
    /// Jobs per `POST /jobs/batch` request in the batch phase.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// `image.thumbnail` jobs (and ceiling loop runs) of the kinds phase (default 40, quick 2).
    #[arg(long)]
    pub thumbnail_jobs: Option<u64>,
    /// `pdf.render` jobs of the kinds phase (default 500, quick 5).
    #[arg(long)]
    pub pdf_jobs: Option<u64>,
    /// `http.request` jobs of the kinds phase (default 5000, quick 50).
    #[arg(long)]
    pub webhook_jobs: Option<u64>,
    /// Phases to run, comma-separated (default all). A partial run prints its table but
    /// never writes the report.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Option<Vec<Phase>>,
}

/// A phase of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// The raw broker ceiling.
    Raw,
    /// `POST /jobs`, closed loop.
    Enqueue,
    /// `POST /jobs/batch`, closed loop.
    Batch,
    /// End-to-end latency at a fixed rate.
    E2e,
    /// Draining a backlog.
    Drain,
    /// The built-in kinds: thumbnails (against a plain-loop ceiling), PDFs, webhooks.
    Kinds,
}

/// Counts of one run, after the mode's defaults are applied.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Raw phase messages.
    pub raw_messages: u64,
    /// Raw publisher window.
    pub window: usize,
    /// Enqueue concurrency levels.
    pub concurrency: Vec<usize>,
    /// Duration of each enqueue level.
    pub enqueue_for: Duration,
    /// End-to-end offered rate (jobs/s).
    pub e2e_rate: u64,
    /// End-to-end duration of offered load.
    pub e2e_for: Duration,
    /// Workers in the end-to-end phase.
    pub e2e_workers: usize,
    /// Drain backlog.
    pub drain_jobs: u64,
    /// Worker counts of the drain phase.
    pub drain_workers: Vec<usize>,
    /// Drain workers' prefetch.
    pub drain_prefetch: u16,
    /// Jobs per batch request.
    pub batch_size: usize,
    /// Batch phase concurrency levels.
    pub batch_concurrency: Vec<usize>,
    /// Job counts of the kinds phase.
    pub kinds: kinds::KindsPlan,
    /// Phases to run.
    pub phases: Vec<Phase>,
}

impl Plan {
    /// The counts for `args`.
    pub fn from_args(args: &Args) -> Self {
        let q = args.quick;
        Plan {
            raw_messages: args.raw_messages.unwrap_or(if q { 5_000 } else { 100_000 }),
            window: args.window.max(1),
            concurrency: if q {
                vec![1, 16, 64]
            } else {
                vec![1, 16, 64, 256]
            },
            enqueue_for: Duration::from_secs(args.enqueue_seconds.unwrap_or(if q {
                1
            } else {
                10
            })),
            e2e_rate: args.e2e_rate.unwrap_or(if q { 200 } else { 1_000 }).max(1),
            e2e_for: Duration::from_secs(args.e2e_seconds.unwrap_or(if q { 3 } else { 20 })),
            e2e_workers: args.e2e_workers.unwrap_or(if q { 1 } else { 2 }).max(1),
            drain_jobs: args.drain_jobs.unwrap_or(if q { 2_000 } else { 100_000 }),
            drain_workers: args
                .drain_workers
                .clone()
                .unwrap_or_else(|| if q { vec![1] } else { vec![1, 2, 4] }),
            drain_prefetch: args.drain_prefetch.max(1),
            batch_size: args.batch_size.clamp(1, if q { 100 } else { 1000 }),
            batch_concurrency: if q { vec![2] } else { vec![1, 2, 4] },
            kinds: kinds::KindsPlan {
                thumbnails: args.thumbnail_jobs.unwrap_or(if q { 2 } else { 40 }).max(1),
                pdfs: args.pdf_jobs.unwrap_or(if q { 5 } else { 500 }).max(1),
                webhooks: args
                    .webhook_jobs
                    .unwrap_or(if q { 50 } else { 5_000 })
                    .max(1),
            },
            phases: args.only.clone().unwrap_or_else(|| {
                vec![
                    Phase::Raw,
                    Phase::Enqueue,
                    Phase::Batch,
                    Phase::E2e,
                    Phase::Drain,
                    Phase::Kinds,
                ]
            }),
        }
    }
}

/// Runs every phase, prints the table, and writes the report if asked.
pub async fn run(args: Args) -> Result<()> {
    let plan = Plan::from_args(&args);
    if args.write_report && args.only.is_some() {
        return Err(BenchError::Setup(
            "--write-report needs every phase: drop --only".into(),
        ));
    }
    let bins = procs::Binaries::locate()?;
    let mut results = report::Results::default();

    let ctx = phases::Context {
        bins: &bins,
        amqp_url: &args.amqp_url,
        queue_type: args.queue_type,
    };
    let runs = |p: Phase| plan.phases.contains(&p);
    if runs(Phase::Raw) {
        eprintln!(
            "== raw broker ceiling ({} messages, window {})",
            plan.raw_messages, plan.window
        );
        let raw = raw::run(
            &args.amqp_url,
            args.queue_type,
            plan.raw_messages,
            plan.window,
        )
        .await?;
        results.broker_version = raw.server_version.clone();
        results.raw = Some(raw);
        // The batch phase keeps a whole batch in flight per request: its ceiling is a raw
        // publisher with that window.
        eprintln!(
            "== raw broker ceiling ({} messages, window {})",
            plan.raw_messages, plan.batch_size
        );
        results.raw_wide = Some(
            raw::run(
                &args.amqp_url,
                args.queue_type,
                plan.raw_messages,
                plan.batch_size,
            )
            .await?,
        );
    }
    if runs(Phase::Enqueue) {
        eprintln!("== enqueue (closed loop, {:?} per level)", plan.enqueue_for);
        results.enqueue = phases::enqueue(&ctx, &plan.concurrency, 1, plan.enqueue_for).await?;
    }
    if runs(Phase::Batch) {
        eprintln!(
            "== batch enqueue ({} jobs per request, closed loop, {:?} per level)",
            plan.batch_size, plan.enqueue_for
        );
        results.batch = phases::enqueue(
            &ctx,
            &plan.batch_concurrency,
            plan.batch_size,
            plan.enqueue_for,
        )
        .await?;
    }
    if runs(Phase::E2e) {
        eprintln!(
            "== end-to-end ({} jobs/s for {:?}, {} worker(s))",
            plan.e2e_rate, plan.e2e_for, plan.e2e_workers
        );
        results.e2e =
            Some(phases::end_to_end(&ctx, plan.e2e_rate, plan.e2e_for, plan.e2e_workers).await?);
    }
    if runs(Phase::Drain) {
        for &w in &plan.drain_workers {
            eprintln!(
                "== drain ({} jobs, {w} worker(s), prefetch {})",
                plan.drain_jobs, plan.drain_prefetch
            );
            results.drain.push(
                phases::drain(&ctx, plan.drain_jobs, 1, w.max(1), plan.drain_prefetch).await?,
            );
        }
        // Two queues at once (noop on `default` by the stock worker, bench.echo on `bench` by an
        // SDK worker), one worker each: what two kinds that scale separately reach together.
        eprintln!(
            "== drain over two queues ({} jobs, 1 worker per queue, prefetch {})",
            plan.drain_jobs, plan.drain_prefetch
        );
        results
            .drain
            .push(phases::drain(&ctx, plan.drain_jobs, 2, 1, plan.drain_prefetch).await?);
    }
    if runs(Phase::Kinds) {
        eprintln!(
            "== built-in kinds ({} thumbnails, {} PDFs, {} webhooks; one worker each)",
            plan.kinds.thumbnails, plan.kinds.pdfs, plan.kinds.webhooks
        );
        results.kinds = Some(kinds::run(&ctx, plan.kinds).await?);
    }

    let table = report::table(&results);
    println!("{table}");
    results.check()?;
    if args.write_report {
        let path = report::write(&args, &plan, &results, &table)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
