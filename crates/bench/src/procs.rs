//! The real binaries as child processes: start them under a prefix, wait for their
//! "listening" / "consuming" log lines, and read their CPU time and peak RSS from `/proc`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::{BenchError, QueueType, Result};

/// Retry delays the bench passes to both binaries, so queue names are known for clean-up.
pub const RETRY_BASE_MS: u64 = 1_000;
/// Longest retry delay passed to both binaries.
pub const RETRY_CAP_MS: u64 = 60_000;
/// `OFFLOAD_MAX_QUEUE_LENGTH` of the benchmark's processes: above any backlog a phase builds.
pub const BENCH_MAX_QUEUE_LENGTH: u32 = 10_000_000;

/// Paths of `offload-api` and `offload-worker` next to this executable.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `target/<profile>/offload-api`.
    pub api: PathBuf,
    /// `target/<profile>/offload-worker`.
    pub worker: PathBuf,
    /// `target/<profile>/offload-bench-worker`: an SDK worker of the kind `bench.echo` on the
    /// queue `bench`.
    pub bench_worker: PathBuf,
}

impl Binaries {
    /// Finds the binaries in this executable's directory; under `cargo run` (CARGO is set)
    /// builds them first with the same profile, so the bench measures what the source says.
    pub fn locate() -> Result<Self> {
        let exe = std::env::current_exe()
            .map_err(|e| BenchError::Io(e, "cannot find this executable".into()))?;
        let dir = exe
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| BenchError::Setup("this executable has no directory".into()))?;
        let release = dir.ends_with("release");
        if std::env::var_os("CARGO").is_some() {
            let mut build = offload_shared::build::workspace_bins(release);
            let status = build
                .status()
                .map_err(|e| BenchError::Io(e, "cannot run cargo build".into()))?;
            if !status.success() {
                return Err(BenchError::Setup(
                    "building offload-api and offload-worker failed".into(),
                ));
            }
        }
        let bins = Binaries {
            api: dir.join("offload-api"),
            worker: dir.join("offload-worker"),
            bench_worker: dir.join("offload-bench-worker"),
        };
        for path in [&bins.api, &bins.worker, &bins.bench_worker] {
            if !path.exists() {
                let flag = if release { " --release" } else { "" };
                return Err(BenchError::Setup(format!(
                    "{} is missing: build it with `cargo build{flag} --bins`",
                    path.display()
                )));
            }
        }
        Ok(bins)
    }
}

/// One phase's private slice: a random queue prefix and a store file.
#[derive(Debug, Clone)]
pub struct Slice {
    /// The queue prefix.
    pub prefix: String,
    /// The SQLite store file.
    pub database: PathBuf,
    /// RabbitMQ address.
    pub amqp_url: String,
    /// Queue type.
    pub queue_type: QueueType,
    /// The token of the bench's admin key, once [`start_api`] made it.
    token: std::sync::OnceLock<String>,
}

impl Slice {
    /// A fresh prefix and store file.
    pub fn new(amqp_url: &str, queue_type: QueueType) -> Self {
        let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let database = std::env::temp_dir().join(format!("offload-{prefix}.db"));
        Slice {
            prefix,
            database,
            amqp_url: amqp_url.to_owned(),
            queue_type,
            token: std::sync::OnceLock::new(),
        }
    }

    /// The token clients send (`Authorization: Bearer`); empty before [`start_api`].
    pub fn token(&self) -> &str {
        self.token.get().map_or("", String::as_str)
    }

    /// Creates the slice's admin key with `offload-api keys create` (a rate limit the bench
    /// never reaches, so it measures the API and not the limiter), once.
    fn create_key(&self, api: &Path) -> Result<()> {
        if self.token.get().is_some() {
            return Ok(());
        }
        let output = std::process::Command::new(api)
            .args([
                "keys",
                "create",
                "--name",
                "bench",
                "--scope",
                "admin",
                "--rate-per-s",
                "1000000",
                "--burst",
                "1000000",
            ])
            .envs(self.vars())
            .output()
            .map_err(|e| BenchError::Io(e, "cannot run offload-api keys create".into()))?;
        if !output.status.success() {
            return Err(BenchError::Setup(format!(
                "offload-api keys create failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let _ = self.token.set(token);
        Ok(())
    }

    fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("OFFLOAD_AMQP_URL".into(), self.amqp_url.clone()),
            ("OFFLOAD_QUEUE_PREFIX".into(), self.prefix.clone()),
            ("OFFLOAD_QUEUE_TYPE".into(), self.queue_type.as_str().into()),
            (
                "OFFLOAD_DATABASE_URL".into(),
                format!("sqlite://{}", self.database.display()),
            ),
            ("OFFLOAD_HTTP_ADDR".into(), "127.0.0.1:0".into()),
            ("OFFLOAD_METRICS_ADDR".into(), "127.0.0.1:0".into()),
            ("OFFLOAD_LOG_FORMAT".into(), "json".into()),
            ("OFFLOAD_RETRY_BASE_MS".into(), RETRY_BASE_MS.to_string()),
            ("OFFLOAD_RETRY_CAP_MS".into(), RETRY_CAP_MS.to_string()),
            // The enqueue phases run with no worker and fill one queue with a few hundred
            // thousand jobs: far past the default OFFLOAD_MAX_QUEUE_LENGTH, which would refuse
            // them (503 queue-full) and measure the back-pressure instead of the enqueue path.
            (
                "OFFLOAD_MAX_QUEUE_LENGTH".into(),
                BENCH_MAX_QUEUE_LENGTH.to_string(),
            ),
            // Per-request logs would make the bench measure logging.
            (
                "RUST_LOG".into(),
                "warn,offload_api=info,offload_worker=info".into(),
            ),
        ]
    }

    /// Deletes the slice's queues, exchanges and store file.
    pub async fn cleanup(&self) {
        crate::raw::delete_topology(&self.amqp_url, &self.prefix).await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.database.display()));
        }
    }
}

/// A running child process with its log lines.
pub struct Proc {
    label: String,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `program` for `slice` with extra variables.
    pub fn spawn(
        label: &str,
        program: &Path,
        slice: &Slice,
        extra: &[(&str, String)],
    ) -> Result<Self> {
        let mut vars = slice.vars();
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let mut child = Command::new(program)
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Io(e, format!("cannot start {}", program.display())))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut sink) = sink.lock() {
                        // Keep memory bounded on long runs; start-up lines are what we need.
                        if sink.len() < 10_000 {
                            sink.push(line);
                        }
                    }
                }
            });
        }
        Ok(Proc {
            label: label.to_owned(),
            child,
            logs,
        })
    }

    fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits for a JSON log line whose `message` is `message`; returns it.
    pub async fn wait_for_log(&mut self, message: &str, within: Duration) -> Result<Value> {
        let start = Instant::now();
        loop {
            let found = self.logs().iter().find_map(|line| {
                serde_json::from_str::<Value>(line)
                    .ok()
                    .filter(|v| v["message"] == message)
            });
            if let Some(v) = found {
                return Ok(v);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Setup(format!(
                    "{} exited ({status}) before logging {message:?}:\n{}",
                    self.label,
                    self.logs().join("\n")
                )));
            }
            if start.elapsed() > within {
                return Err(BenchError::Timeout(
                    within,
                    format!(
                        "{} to log {message:?}:\n{}",
                        self.label,
                        self.logs().join("\n")
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// CPU seconds (user + system) used so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.pid().map(cpu_seconds).unwrap_or(0.0)
    }

    /// Peak resident set size in MiB (VmHWM).
    pub fn peak_rss_mib(&self) -> f64 {
        self.pid().map(peak_rss_mib).unwrap_or(0.0)
    }

    /// SIGTERM, then waits up to `within` before killing it.
    pub async fn stop(mut self, within: Duration) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(within, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Starts the API; returns it and its base URL once it listens.
pub async fn start_api(bins: &Binaries, slice: &Slice) -> Result<(Proc, String)> {
    start_api_with(bins, slice, &[]).await
}

/// [`start_api`] with extra variables (e.g. a larger `OFFLOAD_MAX_BODY_BYTES`).
pub async fn start_api_with(
    bins: &Binaries,
    slice: &Slice,
    extra_env: &[(&str, String)],
) -> Result<(Proc, String)> {
    slice.create_key(&bins.api)?;
    let mut proc = Proc::spawn("offload-api", &bins.api, slice, extra_env)?;
    let line = proc
        .wait_for_log("listening", Duration::from_secs(30))
        .await?;
    let addr = line["addr"]
        .as_str()
        .ok_or_else(|| BenchError::Setup(format!("listening line without addr: {line}")))?;
    Ok((proc, format!("http://{addr}")))
}

/// Starts a stock worker with `prefetch`; returns once it consumes.
pub async fn start_worker(
    bins: &Binaries,
    slice: &Slice,
    name: &str,
    prefetch: u16,
) -> Result<Proc> {
    start_program(&bins.worker, slice, name, prefetch).await
}

/// Starts the worker program at `program` with `prefetch`; returns once it consumes.
pub async fn start_program(
    program: &Path,
    slice: &Slice,
    name: &str,
    prefetch: u16,
) -> Result<Proc> {
    start_program_with(program, slice, name, prefetch, &[]).await
}

/// [`start_program`] with extra variables (e.g. `OFFLOAD_QUEUES`); returns once it consumes.
pub async fn start_program_with(
    program: &Path,
    slice: &Slice,
    name: &str,
    prefetch: u16,
    extra_env: &[(&str, String)],
) -> Result<Proc> {
    let mut extra = vec![
        ("OFFLOAD_WORKER_NAME", name.to_owned()),
        ("OFFLOAD_PREFETCH", prefetch.to_string()),
    ];
    extra.extend(extra_env.iter().cloned());
    let mut proc = Proc::spawn(
        &format!("{} {name}", program.display()),
        program,
        slice,
        &extra,
    )?;
    proc.wait_for_log("consuming", Duration::from_secs(30))
        .await?;
    Ok(proc)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0)
}

/// CPU seconds spent so far by the local RabbitMQ node and by this benchmark process, to split
/// a phase's CPU by who spent it.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    broker: Option<f64>,
    client: f64,
}

/// CPU seconds per 1,000 jobs since a [`CpuMark`]; the broker's is `None` when its process is
/// not on this machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuShare {
    /// RabbitMQ (its `beam.smp` process).
    pub broker: Option<f64>,
    /// This process: the load generator.
    pub client: f64,
}

impl CpuMark {
    /// The counters now.
    pub fn now() -> Self {
        CpuMark {
            broker: broker_pid().map(cpu_seconds),
            client: cpu_seconds(std::process::id()),
        }
    }

    /// CPU seconds per 1,000 `jobs` since this mark.
    pub fn per_1000(&self, jobs: u64) -> CpuShare {
        let now = CpuMark::now();
        let per = |spent: f64| {
            if jobs == 0 {
                0.0
            } else {
                spent * 1000.0 / jobs as f64
            }
        };
        CpuShare {
            broker: self.broker.zip(now.broker).map(|(a, b)| per(b - a)),
            client: per(now.client - self.client),
        }
    }
}

/// The local RabbitMQ node's process (not the fault tests' second node), found once.
fn broker_pid() -> Option<u32> {
    static PID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *PID.get_or_init(|| {
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let program = cmdline.split(|&b| b == 0).next()?;
                // The fault tests' second node keeps its files under a directory named for it.
                let second_node = cmdline.windows(13).any(|w| w == b"offload-fault");
                (program.ends_with(b"beam.smp") && !second_node).then_some(pid)
            })
    })
}

/// utime + stime of `pid` in seconds, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat are 12 and 13 after "pid (comm)".
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks()
}

/// VmHWM of `pid` in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}
