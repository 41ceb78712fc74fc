//! The README's Docker-free run command, exactly as printed: `scripts/run.sh`, with only the HTTP
//! address and the queue prefix changed so it shares the machine and the broker with other tests.
//! It builds the release binaries first, so the first run on a fresh clone takes minutes.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use offload_shared::{retry::RetryPolicy, topology::QueuePrefix};
use offload_tests::{Names, TestEnv, poll};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// Building the release binaries from nothing took 3 min 22 s on an idle 2-core machine (crates
/// already downloaded); room for a busy one.
const BUILD_AND_START_WITHIN: Duration = Duration::from_secs(15 * 60);
/// The default OFFLOAD_SHUTDOWN_GRACE_S is 30 s; the jobs here are short.
const STOP_WITHIN: Duration = Duration::from_secs(45);

/// The script, run in a process group of its own as a terminal runs a foreground command.
struct Script {
    child: Child,
    group: i32,
    output: Arc<Mutex<Vec<String>>>,
}

impl Script {
    fn start(repo: &Path, vars: &[(&str, String)]) -> Self {
        let mut command = Command::new("scripts/run.sh");
        command.current_dir(repo);
        // What a user's shell has: none of this test run's settings...
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("OFFLOAD_") || name == "RUST_LOG" {
                command.env_remove(name.as_ref());
            }
        }
        // ...nor the variables cargo sets for a test (the script's `cargo build` would rebuild
        // crates whose build scripts read them).
        for (name, value) in offload_shared::build::workspace_bins(true).get_envs() {
            if value.is_none() {
                command.env_remove(name);
            }
        }
        command
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("scripts/run.sh starts");
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .expect("a pid");
        let output = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            collect(BufReader::new(out), output.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect(BufReader::new(err), output.clone());
        }
        Script {
            child,
            group,
            output,
        }
    }

    fn output(&self) -> String {
        self.output.lock().expect("output lock").join("\n")
    }

    /// Fails the test with the script's output if it has exited.
    fn assert_running(&mut self, while_: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "scripts/run.sh exited ({status}) while {while_}:\n{}",
                self.output()
            );
        }
    }

    /// Sends `signal` to the whole process group, as a terminal does for Ctrl-C.
    fn signal_group(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, "--", &format!("-{}", self.group)])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} -{} failed", self.group);
    }

    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("wait for the script"),
            Err(_) => panic!(
                "scripts/run.sh did not exit within {within:?} of Ctrl-C:\n{}",
                self.output()
            ),
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        // A failed test must not leave the API and the workers running: stop the whole group.
        if !group_members(self.group).is_empty() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.group)])
                .status();
        }
        if std::thread::panicking() {
            eprintln!("---- output of scripts/run.sh ----\n{}", self.output());
        }
    }
}

fn collect<R: AsyncBufRead + Unpin + Send + 'static>(reader: R, sink: Arc<Mutex<Vec<String>>>) {
    tokio::spawn(async move {
        let mut lines = reader.lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().expect("output lock").push(line);
        }
    });
}

/// The processes (pid and command line) still in process group `group`.
fn group_members(group: i32) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid pgrp ...`: comm may hold spaces, so split after its `)`.
            let pgrp: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(2)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (pgrp == group).then_some((pid, cmdline))
        })
        .collect()
}

/// A loopback address with a port that was free a moment ago.
fn free_loopback_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

async fn job(http: &reqwest::Client, base: &str, id: &str) -> Option<Value> {
    let response = http.get(format!("{base}/jobs/{id}")).send().await.ok()?;
    response.json().await.ok()
}

async fn submit(http: &reqwest::Client, base: &str) -> String {
    let response = http
        .post(format!("{base}/jobs"))
        .json(&json!({"kind": "sleep", "payload": {"ms": 50}}))
        .send()
        .await
        .expect("POST /jobs");
    assert_eq!(response.status(), 202, "POST /jobs");
    let job: Value = response.json().await.expect("job JSON");
    job["id"].as_str().expect("id").to_owned()
}

async fn wait_succeeded(http: &reqwest::Client, base: &str, id: &str) -> Value {
    poll(
        Duration::from_secs(30),
        &format!("job {id} to succeed"),
        || async {
            job(http, base, id)
                .await
                .filter(|j| j["status"] == "succeeded")
        },
    )
    .await
}

/// One run of the script, its test's slice of the broker, and a client for its API.
struct Run {
    env: TestEnv,
    script: Script,
    base: String,
    http: reqwest::Client,
    /// Holds the other test of this file off: each run builds, and both use the default store.
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Run {
    /// Starts `scripts/run.sh` as the README prints it, with only the HTTP address and the
    /// queue prefix set, and waits until its API is ready.
    async fn start() -> Self {
        let one_at_a_time = ONE_AT_A_TIME.lock().await;
        let mut env = TestEnv::new().await;
        // The script's processes use the default retry delays, hence these delay queues.
        env.names = Names::new(
            &QueuePrefix::parse(&env.prefix).expect("a valid prefix"),
            &RetryPolicy::new(1000, 60_000),
        );
        let repo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the workspace root")
            .to_owned();
        let http_addr = free_loopback_addr();
        let mut vars = vec![
            ("OFFLOAD_HTTP_ADDR", http_addr.clone()),
            ("OFFLOAD_QUEUE_PREFIX", env.prefix.clone()),
        ];
        if env.url != offload_shared::settings::DEFAULT_AMQP_URL {
            // Only when the tests run against another broker than the script's default.
            vars.push(("OFFLOAD_AMQP_URL", env.url.clone()));
        }
        let base = format!("http://{http_addr}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");

        let started = Instant::now();
        let mut script = Script::start(&repo, &vars);
        let deadline = started + BUILD_AND_START_WITHIN;
        loop {
            script.assert_running("building and starting");
            let ready = http.get(format!("{base}/health/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the API did not answer within {BUILD_AND_START_WITHIN:?}:\n{}",
                script.output()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!(
            "scripts/run.sh built and answered in {:?}",
            started.elapsed()
        );
        // The script prints a token for the run; the test uses it as a user would.
        let output = script.output();
        let token = output
            .split_whitespace()
            .find(|w| w.starts_with("ofl_") && w.len() == 47)
            .unwrap_or_else(|| panic!("scripts/run.sh printed no API token:\n{output}"))
            .to_owned();
        let http = offload_tests::client(Some(&token));
        Run {
            env,
            script,
            base,
            http,
            _one_at_a_time: one_at_a_time,
        }
    }

    /// The pids of the workers the script started.
    fn workers(&self) -> Vec<i32> {
        group_members(self.script.group)
            .into_iter()
            .filter(|(_, cmdline)| cmdline.contains("offload-worker"))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Waits for the script to exit; asserts that nothing of the run is left; returns the
    /// status and the script's output.
    async fn wait_exit(&mut self) -> (ExitStatus, String) {
        let status = self.script.wait_exit(STOP_WITHIN).await;
        let leftovers = group_members(self.script.group);
        assert!(
            leftovers.is_empty(),
            "processes of the run outlived it: {leftovers:?}"
        );
        (status, self.script.output())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_run_script_serves_jobs_on_two_default_workers_and_stops_cleanly_on_ctrl_c() {
    let mut run = Run::start().await;
    let (http, base) = (run.http.clone(), run.base.clone());

    // A job runs; jobs reach both default workers.
    let id = submit(&http, &base).await;
    let done = wait_succeeded(&http, &base, &id).await;
    assert_eq!(done["result"], json!({"slept_ms": 50}), "{done}");
    let mut ran_on = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ran_on.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "jobs ran only on {ran_on:?} within 60 s"
        );
        let id = submit(&http, &base).await;
        let done = wait_succeeded(&http, &base, &id).await;
        ran_on.insert(done["worker"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        ran_on,
        BTreeSet::from(["worker-1".to_owned(), "worker-2".to_owned()])
    );
    run.script.assert_running("serving jobs");
    assert_eq!(run.workers().len(), 2, "two workers run");

    // Ctrl-C: the whole foreground group gets SIGINT.
    run.script.signal_group("-INT");
    let (status, output) = run.wait_exit().await;
    assert_eq!(status.code(), Some(0), "exit status {status}:\n{output}");
    assert!(output.contains("stopped"), "{output}");
    assert!(!output.contains("exited with status"), "{output}");
    run.env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_worker_of_the_run_script_dies_everything_stops_with_a_non_zero_exit() {
    let mut run = Run::start().await;
    let workers = run.workers();
    assert_eq!(workers.len(), 2, "two workers run");

    let status = std::process::Command::new("kill")
        .args(["-KILL", &workers[0].to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());

    let (status, output) = run.wait_exit().await;
    assert_eq!(
        status.code(),
        Some(137),
        "the worker's status (killed): {status}:\n{output}"
    );
    assert!(
        output.contains("exited by itself with status 137; stopping the others"),
        "{output}"
    );
    run.env.cleanup().await;
}
