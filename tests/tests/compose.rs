//! The compose suite: deploy/docker-compose.yml run for real in Docker, as a user runs it, with
//! the images of scripts/compose-images.sh (Offload's own from the release binaries, RabbitMQ
//! and PostgreSQL from Debian's packages: nothing is pulled) swapped in by
//! scripts/compose/standin.override.yml, which changes only the image names and RabbitMQ's
//! published ports (the host's test broker holds 5672). Everything else is the file's own:
//! healthchecks, `depends_on`, environment, volumes, stop grace, replicas, profiles.
//!
//! One stack, in steps: every healthcheck turns healthy and nothing starts before the broker is
//! healthy; 60 jobs spread over three `worker` replicas; scaled down to one while jobs run, the
//! stopped replicas finish their jobs within `stop_grace_period`; a replica killed mid-job, the
//! job redelivered and succeeded; `down` then `up`, queued jobs and the job store survive on
//! their volumes; the `postgres` profile, two API replicas sharing one store.
//!
//! Skips, saying why, only where no Docker engine can run (scripts/compose-images.sh exits 3).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use offload_tests::{client, poll};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const COMPOSE: &str = "deploy/docker-compose.yml";
const OVERRIDE: &str = "scripts/compose/standin.override.yml";
const CLUSTER: &str = "deploy/docker-compose.cluster.yml";
const CLUSTER_OVERRIDE: &str = "scripts/compose/standin.cluster.override.yml";
/// The file's `stop_grace_period`.
const STOP_GRACE: Duration = Duration::from_secs(45);
const WITHIN: Duration = Duration::from_secs(120);

/// One stack at a time: both publish the API on 8080.
static SERIAL: Mutex<()> = Mutex::const_new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// stdout of `cmd`, or a failed test with its output.
fn ok(cmd: &mut Command) -> String {
    let output = run(cmd);
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Builds (or finds cached) the images; false if no Docker engine can run here.
fn images() -> bool {
    let output = run(Command::new("bash").arg("scripts/compose-images.sh"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => {
            print!("{}", String::from_utf8_lossy(&output.stdout));
            true
        }
        Some(3) => {
            println!("SKIPPED the compose suite: no Docker engine can run here: {stderr}");
            false
        }
        _ => panic!(
            "scripts/compose-images.sh failed ({}): {stderr}\n(the release binaries come from \
             cargo build --release --locked -p offload-api -p offload-worker)",
            output.status
        ),
    }
}

/// A compose project of the real files with the stand-in override; `down -v` when dropped.
struct Stack {
    name: String,
    files: [&'static str; 2],
    profiles: Vec<&'static str>,
}

impl Stack {
    /// The single-node file (with its `postgres` profile).
    fn new() -> Self {
        Self::of("offload-suite", [COMPOSE, OVERRIDE], vec!["postgres"])
    }

    /// The 3-node cluster file.
    fn cluster() -> Self {
        Self::of("offload-cluster-suite", [CLUSTER, CLUSTER_OVERRIDE], vec![])
    }

    fn of(name: &str, files: [&'static str; 2], profiles: Vec<&'static str>) -> Self {
        let stack = Stack {
            // A fixed name: a stack an earlier run left behind (it died before cleaning up) is
            // found and removed first; the tests run one at a time.
            name: name.to_owned(),
            files,
            profiles,
        };
        // A project of an earlier run that died without cleaning up.
        stack.down(true);
        stack
    }

    /// `docker compose` on the files, with this project's name.
    fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.args(["compose", "-p", &self.name]);
        for file in self.files {
            cmd.args(["-f", file]);
        }
        // The engine here may not raise a container's open-file limit above its own: the file's
        // own setting for that case.
        if let Some(hard) = hard_nofile().filter(|h| *h < 65536) {
            cmd.env("OFFLOAD_NOFILE", hard.to_string());
        }
        cmd.args(args);
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(&mut self.compose(args))
    }

    fn down(&self, volumes: bool) {
        let mut args = vec![];
        for p in &self.profiles {
            args.extend(["--profile", p]);
        }
        args.extend(["down", "--remove-orphans", "-t", "5"]);
        if volumes {
            args.push("-v");
        }
        run(&mut self.compose(&args));
    }

    /// Container ids of `service`'s running replicas.
    fn containers(&self, service: &str) -> Vec<String> {
        self.ok(&["ps", "-q", service])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `docker inspect` of one container.
    fn inspect(id: &str) -> Value {
        let text = ok(Command::new("docker").args(["inspect", id]));
        let list: Value = serde_json::from_str(&text).expect("inspect is JSON");
        list[0].clone()
    }

    /// The hostnames of `service`'s replicas: a worker names itself `<hostname>-<pid>`.
    fn hostnames(&self, service: &str) -> BTreeSet<String> {
        self.containers(service)
            .iter()
            .map(|id| {
                Self::inspect(id)["Config"]["Hostname"]
                    .as_str()
                    .expect("hostname")
                    .to_owned()
            })
            .collect()
    }

    /// Every container of the project: none may be unhealthy, every one with a healthcheck
    /// healthy, the one-shot `secrets` exited 0.
    fn assert_all_healthy(&self) {
        let all = self.ok(&["ps", "-a", "-q"]);
        for id in all.lines() {
            let c = Self::inspect(id);
            let name = c["Name"].as_str().unwrap_or(id);
            if name.contains("-secrets-") {
                assert_eq!(c["State"]["ExitCode"], 0, "{name}: {}", c["State"]);
                continue;
            }
            assert_eq!(c["State"]["Status"], "running", "{name}: {}", c["State"]);
            assert_eq!(
                c["State"]["Health"]["Status"], "healthy",
                "{name}: {}",
                c["State"]["Health"]
            );
        }
    }

    /// A new admin key on the store of `service`'s first replica, with the image's own CLI; its
    /// rate limit above any load here.
    fn token(&self, service: &str) -> String {
        self.ok(&[
            "exec",
            "-T",
            service,
            "offload-api",
            "keys",
            "create",
            "--name",
            "compose-suite",
            "--scope",
            "admin",
            "--rate-per-s",
            "100000",
            "--burst",
            "100000",
        ])
        .trim()
        .to_owned()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = run(&mut self.compose(&["logs", "--no-color", "--tail", "30"]));
            eprintln!(
                "---- the stack's logs ----\n{}",
                String::from_utf8_lossy(&logs.stdout)
            );
        }
        self.down(true);
    }
}

/// The open-file hard limit of this process (the engine's, in the same sandbox).
fn hard_nofile() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(_, hard)| hard)
}

/// One API of the stack, over its published port.
#[derive(Clone)]
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(port: u16, token: &str) -> Self {
        Api {
            base: format!("http://127.0.0.1:{port}"),
            http: client(Some(token)),
        }
    }

    async fn submit(&self, body: Value) -> String {
        let response = self
            .http
            .post(format!("{}/jobs", self.base))
            .json(&body)
            .send()
            .await
            .expect("POST /jobs");
        assert_eq!(response.status(), 202, "{body}");
        let job: Value = response.json().await.expect("JSON");
        job["id"].as_str().expect("id").to_owned()
    }

    async fn job(&self, id: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/jobs/{id}", self.base))
            .send()
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        response.json().await.ok()
    }

    /// Waits until every one of `ids` shows `status`; their records.
    async fn all_reach(&self, ids: &[String], status: &str, within: Duration) -> Vec<Value> {
        let mut done = Vec::new();
        for id in ids {
            let job = poll(within, &format!("job {id} to be {status}"), || async {
                self.job(id).await.filter(|j| j["status"] == status)
            })
            .await;
            done.push(job);
        }
        done
    }
}

/// `<hostname>-<pid>` → `<hostname>`.
fn host_of(worker: &Value) -> String {
    let name = worker.as_str().expect("a worker name");
    name.rsplit_once('-')
        .map_or(name, |(host, _)| host)
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_file_runs_scales_drains_survives_and_shares_a_postgres_store() {
    let _one = SERIAL.lock().await;
    if !images() {
        return;
    }
    let stack = Stack::new();

    // Up with three default workers: every healthcheck turns healthy, and no API or worker
    // started before the broker was healthy (it waits while the broker is not).
    let started = Instant::now();
    stack.ok(&[
        "up",
        "-d",
        "--wait",
        "--wait-timeout",
        "240",
        "--scale",
        "worker=3",
    ]);
    println!(
        "up --wait: every service healthy in {:?}",
        started.elapsed()
    );
    stack.assert_all_healthy();
    let rabbitmq = Stack::inspect(&stack.containers("rabbitmq")[0]);
    let log = rabbitmq["State"]["Health"]["Log"]
        .as_array()
        .expect("health log")
        .clone();
    let first_pass = log.iter().position(|check| check["ExitCode"] == 0);
    // Docker keeps the last 5 checks: the first pass is known only if a failure precedes it in
    // the log, or the log is not full yet.
    let broker_healthy = first_pass
        .filter(|&i| i > 0 || log.len() < 5)
        .and_then(|i| log[i]["End"].as_str())
        .map(str::to_owned);
    let Some(broker_healthy) = broker_healthy else {
        panic!("the broker's health log no longer shows its first passing check: {log:?}");
    };
    for service in ["api", "worker", "thumbnails"] {
        for id in stack.containers(service) {
            let c = Stack::inspect(&id);
            let started_at = c["State"]["StartedAt"].as_str().expect("StartedAt");
            // RFC 3339 in UTC with the same precision: they compare as text.
            assert!(
                started_at > broker_healthy.as_str(),
                "{service} started at {started_at}, before the broker's first passing check \
                 ended ({broker_healthy})"
            );
        }
    }

    let api = Api::new(8080, &stack.token("api"));

    // 60 jobs spread over all three worker containers.
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(
            api.submit(json!({"kind": "sleep", "payload": {"ms": 200}}))
                .await,
        );
    }
    let done = api.all_reach(&ids, "succeeded", WITHIN).await;
    let used: BTreeSet<String> = done.iter().map(|j| host_of(&j["worker"])).collect();
    let replicas = stack.hostnames("worker");
    assert_eq!(replicas.len(), 3);
    assert_eq!(
        used, replicas,
        "60 jobs ran on {used:?}, not on every replica"
    );
    println!("60 jobs: all succeeded, on all three worker containers");

    // Scaled to one while every replica runs a job: the two stopped finish theirs within the
    // stop grace (nothing redelivered, nothing lost).
    let mut running = Vec::new();
    for _ in 0..9 {
        running.push(
            api.submit(json!({"kind": "sleep", "payload": {"ms": 3000}}))
                .await,
        );
    }
    poll(WITHIN, "three jobs running at once", || async {
        let mut n = 0;
        for id in &running {
            if api.job(id).await.is_some_and(|j| j["status"] == "running") {
                n += 1;
            }
        }
        (n == 3).then_some(())
    })
    .await;
    let scaling = Instant::now();
    stack.ok(&["up", "-d", "--no-recreate", "--scale", "worker=1"]);
    let took = scaling.elapsed();
    assert!(took < STOP_GRACE, "scaling down took {took:?}");
    let done = api.all_reach(&running, "succeeded", WITHIN).await;
    for job in &done {
        assert_eq!(job["runs"], 1, "a job ran twice: {job}");
    }
    println!("scaled 3 -> 1 while 3 jobs ran: stopped in {took:?}; all 9 succeeded, each run once");

    // A replica killed mid-job: the broker redelivers the job to another, which succeeds.
    stack.ok(&["up", "-d", "--wait", "--no-recreate", "--scale", "worker=2"]);
    let id = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 4000}}))
        .await;
    let job = poll(WITHIN, "the job to run", || async {
        api.job(&id).await.filter(|j| j["status"] == "running")
    })
    .await;
    let victim_host = host_of(&job["worker"]);
    let victim = stack
        .containers("worker")
        .into_iter()
        .find(|c| Stack::inspect(c)["Config"]["Hostname"] == victim_host.as_str())
        .expect("the container running the job");
    ok(Command::new("docker").args(["kill", &victim]));
    let job = api.all_reach(&[id], "succeeded", WITHIN).await.remove(0);
    assert_eq!(
        job["runs"], 2,
        "the killed run and the redelivered one: {job}"
    );
    println!(
        "killed the worker container running a job ({victim_host}); redelivered, it succeeded on {}",
        job["worker"]
    );

    // down, then up: jobs still queued (no default worker to take them) and the job store
    // are on volumes, so both are there after it.
    stack.ok(&["up", "-d", "--no-recreate", "--scale", "worker=0"]);
    let mut queued = Vec::new();
    for _ in 0..5 {
        queued.push(
            api.submit(json!({"kind": "sleep", "payload": {"ms": 10}}))
                .await,
        );
    }
    api.all_reach(&queued, "queued", WITHIN).await;
    stack.ok(&["down", "-t", "50"]);

    // Up again with an unhealthy broker: its node runs but serves no AMQP (the app stopped), so
    // its healthcheck fails; neither the API nor a worker starts until it is healthy again.
    stack.ok(&["up", "-d", "--wait", "--wait-timeout", "240", "rabbitmq"]);
    stack.ok(&["exec", "-T", "rabbitmq", "rabbitmqctl", "stop_app"]);
    let rabbitmq = stack.containers("rabbitmq").remove(0);
    poll(
        Duration::from_secs(150),
        "the broker's container to turn unhealthy",
        || async {
            (Stack::inspect(&rabbitmq)["State"]["Health"]["Status"] == "unhealthy").then_some(())
        },
    )
    .await;
    let refused = run(&mut stack.compose(&["up", "-d", "api", "worker"]));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("unhealthy"),
        "up with an unhealthy broker: {}, {said}",
        refused.status
    );
    for service in ["api", "worker"] {
        for id in stack.ok(&["ps", "-a", "-q", service]).lines() {
            let state = &Stack::inspect(id)["State"];
            assert_ne!(state["Status"], "running", "{service} started: {state}");
            assert_eq!(
                state["StartedAt"], "0001-01-01T00:00:00Z",
                "{service} ran: {state}"
            );
        }
    }
    println!(
        "broker unhealthy: `up` refused to start the API and workers ({})",
        said.trim().lines().last().unwrap_or_default()
    );
    stack.ok(&["exec", "-T", "rabbitmq", "rabbitmqctl", "start_app"]);
    // `up` refuses while the broker is still marked unhealthy: its next passing check first.
    stack.healthy("rabbitmq").await;
    stack.ok(&["up", "-d", "--wait", "--wait-timeout", "240"]);
    // The key is in the store, so the same token still works.
    api.all_reach(&queued, "succeeded", WITHIN).await;
    let first = api.job(&ids[0]).await.expect("a job from before down");
    assert_eq!(first["status"], "succeeded");
    println!(
        "down and up (once the broker was healthy again): 5 queued jobs ran after it; the store \
         kept the earlier jobs"
    );

    // The postgres profile: two API replicas on one PostgreSQL store see each other's jobs.
    stack.ok(&[
        "--profile",
        "postgres",
        "up",
        "-d",
        "--wait",
        "--wait-timeout",
        "240",
    ]);
    let token = stack.token("api-pg");
    let (one, two) = (Api::new(8081, &token), Api::new(8082, &token));
    let mut shared = Vec::new();
    for _ in 0..5 {
        shared.push(one.submit(json!({"kind": "noop", "payload": {}})).await);
        shared.push(two.submit(json!({"kind": "noop", "payload": {}})).await);
    }
    one.all_reach(&shared, "succeeded", WITHIN).await;
    two.all_reach(&shared, "succeeded", WITHIN).await;
    println!(
        "postgres profile: 10 jobs submitted across both replicas, each seen succeeded by both"
    );
}

/// What a steady load saw, counted as RabbitMQ's Jepsen checker counts.
#[derive(Debug, Default)]
struct Counts {
    /// 202s: the ids accepted.
    accepted: Vec<String>,
    /// 503s.
    refused: u64,
    /// Anything else (a connection error, another status).
    errors: u64,
    /// What the errors were, by kind.
    error_kinds: std::collections::BTreeMap<String, u64>,
    /// When each 202 arrived, from the load's start.
    accepted_at: Vec<Duration>,
}

/// Submits a `noop` job every `1 / rate` seconds (each request on its own, at most 256 in
/// flight) until `stop` is set; what came back.
async fn steady_load(api: Api, rate: u32, stop: tokio::sync::watch::Receiver<bool>) -> Counts {
    let counts = std::sync::Arc::new(Mutex::new(Counts::default()));
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut tasks = Vec::new();
    while !*stop.borrow() {
        tick.tick().await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let mut counts = counts.lock().await;
            counts.errors += 1;
            *counts
                .error_kinds
                .entry("not sent: 256 in flight".into())
                .or_default() += 1;
            continue;
        };
        let (api, counts) = (api.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let sent = api
                .http
                .post(format!("{}/jobs", api.base))
                .json(&json!({"kind": "noop", "payload": {}}))
                .send()
                .await;
            let mut counts = counts.lock().await;
            match sent {
                Ok(r) if r.status() == 202 => {
                    let job: Value = r.json().await.unwrap_or_default();
                    if let Some(id) = job["id"].as_str() {
                        counts.accepted.push(id.to_owned());
                        counts.accepted_at.push(start.elapsed());
                    } else {
                        counts.errors += 1;
                    }
                }
                Ok(r) if r.status() == 503 => counts.refused += 1,
                other => {
                    let kind = match other {
                        Ok(r) => format!("HTTP {}", r.status()),
                        Err(e) if e.is_timeout() => "timed out (10 s)".to_owned(),
                        Err(e) if e.is_connect() => "connection refused".to_owned(),
                        Err(_) => "request failed".to_owned(),
                    };
                    counts.errors += 1;
                    *counts.error_kinds.entry(kind).or_default() += 1;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut counts = std::mem::take(&mut *counts.lock().await);
    counts.accepted_at.sort();
    counts
}

/// One scenario's row: accepted, lost (accepted, never succeeded), duplicated (ran more than
/// once), refused, other errors, the longest time without a 202.
struct Row {
    scenario: &'static str,
    accepted: usize,
    lost: Vec<String>,
    duplicated: usize,
    refused: u64,
    errors: u64,
    longest_gap: Duration,
}

/// Waits for every accepted job to succeed (up to `within`), then counts.
async fn checked(api: &Api, scenario: &'static str, counts: Counts, within: Duration) -> Row {
    let deadline = Instant::now() + within;
    let mut lost = Vec::new();
    let mut duplicated = 0;
    for id in &counts.accepted {
        let job = loop {
            let job = api.job(id).await;
            if job.as_ref().is_some_and(|j| j["status"] == "succeeded") || Instant::now() > deadline
            {
                break job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match job {
            Some(j) if j["status"] == "succeeded" => {
                if j["runs"].as_u64().unwrap_or(0) > 1 {
                    duplicated += 1;
                }
            }
            other => {
                eprintln!("{scenario}: job {id} did not succeed: {other:?}");
                lost.push(id.clone());
            }
        }
    }
    let longest_gap = counts
        .accepted_at
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    Row {
        scenario,
        accepted: counts.accepted.len(),
        lost,
        duplicated,
        refused: counts.refused,
        errors: counts.errors,
        longest_gap,
    }
}

impl Stack {
    /// The node (`rabbit1`..) the container `id`'s connections go to, as the cluster lists them.
    fn node_of(&self, id: &str, ask: &str) -> Option<String> {
        let c = Self::inspect(id);
        let ip = c["NetworkSettings"]["Networks"]
            .as_object()?
            .values()
            .find_map(|n| n["IPAddress"].as_str().filter(|ip| !ip.is_empty()))?
            .to_owned();
        let listed = self.rabbitmqctl(ask, &["list_connections", "pid", "peer_host"]);
        if !listed.status.success() {
            return None;
        }
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .find_map(|line| {
                let (pid, host) = line.split_once('\t')?;
                (host.trim() == ip).then(|| {
                    pid.trim_start_matches("<rabbit@")
                        .split('.')
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                })
            })
    }

    /// The node the API's connection goes to (asked of a node that is up).
    async fn api_node(self: &std::sync::Arc<Self>) -> String {
        let s = self.clone();
        blocking(move || {
            let api = s.containers("api")[0].clone();
            ["rabbit1", "rabbit2", "rabbit3"]
                .iter()
                .find_map(|ask| s.node_of(&api, ask))
        })
        .await
        .expect("the API's connection is listed")
    }

    /// `rabbitmqctl -q <args>` on the node `node`.
    fn rabbitmqctl(&self, node: &str, args: &[&str]) -> Output {
        let mut all = vec!["exec", "-T", node, "rabbitmqctl", "-q"];
        all.extend_from_slice(args);
        run(&mut self.compose(&all))
    }

    /// True if a node says all three are running and no partition is left.
    fn cluster_whole(&self) -> bool {
        ["rabbit1", "rabbit2", "rabbit3"].iter().any(|ask| {
            let out = self.rabbitmqctl(ask, &["cluster_status", "--formatter", "json"]);
            let Ok(status) = serde_json::from_slice::<Value>(&out.stdout) else {
                return false;
            };
            let running = status["running_nodes"].as_array().map_or(0, Vec::len);
            let split = match &status["partitions"] {
                Value::Object(m) => !m.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => false,
            };
            out.status.success() && running == 3 && !split
        })
    }

    /// Waits until the cluster is whole again: every node running, no partition (a cut-off
    /// node's container stays "healthy" for a minute of failed checks, so health alone does not
    /// tell).
    async fn whole(self: &std::sync::Arc<Self>) {
        let started = Instant::now();
        poll(
            Duration::from_secs(180),
            "the cluster to be whole",
            || async {
                let s = self.clone();
                blocking(move || s.cluster_whole()).await.then_some(())
            },
        )
        .await;
        println!(
            "(the cluster was whole again after {:?})",
            started.elapsed()
        );
    }

    /// Waits until the node `service` is healthy and the cluster whole again after a fault.
    async fn recovered(self: &std::sync::Arc<Self>, service: &str) {
        self.healthy(service).await;
        self.whole().await;
    }

    /// Waits until `service`'s container is healthy again.
    async fn healthy(&self, service: &str) {
        poll(
            Duration::from_secs(180),
            &format!("{service} to be healthy"),
            || async {
                let id = self.containers(service).pop()?;
                (Self::inspect(&id)["State"]["Health"]["Status"] == "healthy").then_some(())
            },
        )
        .await;
    }

    /// What the stack knows of jobs that did not succeed: the queues as a node that answers
    /// lists them, and every API and worker log line naming one of the first few.
    fn explain(&self, lost: &[String]) {
        for ask in ["rabbit1", "rabbit2", "rabbit3"] {
            let out = self.rabbitmqctl(
                ask,
                &[
                    "list_queues",
                    "name",
                    "messages_ready",
                    "messages_unacknowledged",
                    "consumers",
                    "leader",
                ],
            );
            if out.status.success() {
                eprintln!(
                    "---- the queues, as {ask} lists them ----\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
                break;
            }
        }
        let logs = run(&mut self.compose(&["logs", "--no-color", "--timestamps", "api", "worker"]));
        let logs = String::from_utf8_lossy(&logs.stdout);
        for id in lost.iter().take(3) {
            eprintln!("---- log lines naming {id} ----");
            for line in logs.lines().filter(|l| l.contains(id.as_str())) {
                eprintln!("{line}");
            }
        }
    }

    /// The compose network's name.
    fn network(&self) -> String {
        format!("{}_default", self.name)
    }
}

/// Load kept on after a fault has healed, before the counts close.
const SETTLE: Duration = Duration::from_secs(10);

/// Runs `fault` under a steady load of `rate` jobs/s (3 s of load before, [`SETTLE`] after),
/// then checks every accepted job.
async fn under_load<F, Fut>(
    stack: &std::sync::Arc<Stack>,
    api: &Api,
    scenario: &'static str,
    rate: u32,
    fault: F,
) -> Row
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(steady_load(api.clone(), rate, stopped));
    tokio::time::sleep(Duration::from_secs(3)).await;
    fault().await;
    tokio::time::sleep(SETTLE).await;
    stop.send(true).expect("the load listens");
    let counts = load.await.expect("the load ran");
    if !counts.error_kinds.is_empty() {
        println!("({scenario}: other errors {:?})", counts.error_kinds);
    }
    let row = checked(api, scenario, counts, Duration::from_secs(120)).await;
    println!(
        "| {} | {} | {} | {} | {} | {} | {:.1} |",
        row.scenario,
        row.accepted,
        row.lost.len(),
        row.duplicated,
        row.refused,
        row.errors,
        row.longest_gap.as_secs_f64()
    );
    if !row.lost.is_empty() {
        let s = stack.clone();
        let lost = row.lost.clone();
        blocking(move || s.explain(&lost)).await;
    }
    row
}

/// Every AMQP packet (port 5672, both ways) of the process `pid`'s network namespace dropped,
/// with the host's iptables, until this is dropped: a silent network cut, as a failed switch
/// makes, not a refused connection. The pid is the local engine's (scripts/compose-images.sh
/// runs one here), and entering its namespace needs root, as the suite has.
struct AmqpCut {
    pid: String,
    /// The rules in place: (chain, port match).
    rules: Vec<(&'static str, &'static str)>,
}

impl AmqpCut {
    fn new(pid: u64) -> Self {
        let mut cut = AmqpCut {
            pid: pid.to_string(),
            rules: Vec::new(),
        };
        for rule in [("OUTPUT", "--dport"), ("INPUT", "--sport")] {
            let out = run(&mut cut.iptables("-I", rule));
            // A rule that did go in is taken out again by the drop.
            assert!(
                out.status.success(),
                "could not cut process {pid} off the broker (nsenter and iptables, as root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            cut.rules.push(rule);
        }
        cut
    }

    fn iptables(&self, op: &str, (chain, port): (&str, &str)) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid, "-n", "iptables", "-w", op, chain])
            .args(["-p", "tcp", port, "5672", "-j", "DROP"]);
        cmd
    }
}

impl Drop for AmqpCut {
    fn drop(&mut self) {
        for rule in std::mem::take(&mut self.rules) {
            let out = run(&mut self.iptables("-D", rule));
            if !out.status.success() {
                eprintln!(
                    "could not remove the AMQP cut's {} rule: {}",
                    rule.0,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// Runs a blocking command off the runtime's threads (the load keeps its pace).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("ran")
}

/// `docker <args>` off the runtime's threads; its stdout, or a failed test.
async fn docker(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    blocking(move || ok(Command::new("docker").args(&args))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_file_loses_no_accepted_job_when_nodes_fail() {
    let _one = SERIAL.lock().await;
    if !images() {
        return;
    }
    let stack = std::sync::Arc::new(Stack::cluster());
    // The API and the default workers on the three nodes (the other worker services are the
    // same binary on other queues).
    let started = Instant::now();
    stack.ok(&[
        "up",
        "-d",
        "--wait",
        "--wait-timeout",
        "300",
        "api",
        "worker",
    ]);
    println!("cluster up --wait: healthy in {:?}", started.elapsed());
    let api = Api::new(8080, &stack.token("api"));
    let rate = 100;
    println!(
        "| scenario ({rate} submits/s) | accepted | lost | duplicated | refused (503) | other errors | longest window without a 202 (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();

    // The node the API is connected to, killed; started again after 15 s.
    let s = stack.clone();
    rows.push(
        under_load(&stack, &api, "kill the API's node", rate, || async move {
            let node = s.api_node().await;
            let victim = s.containers(&node)[0].clone();
            docker(&["kill", &victim]).await;
            println!("(killed {node} at {})", time::OffsetDateTime::now_utc());
            tokio::time::sleep(Duration::from_secs(15)).await;
            docker(&["start", &victim]).await;
            s.recovered(&node).await;
        })
        .await,
    );

    // The API's node cut off from the others and from every client for 20 s (the minority
    // side pauses), then reconnected.
    let s = stack.clone();
    rows.push(
        under_load(
            &stack,
            &api,
            "cut the API's node off for 20 s",
            rate,
            || async move {
                let node = s.api_node().await;
                let id = s.containers(&node)[0].clone();
                let network = s.network();
                docker(&["network", "disconnect", &network, &id]).await;
                tokio::time::sleep(Duration::from_secs(20)).await;
                docker(&["network", "connect", "--alias", &node, &network, &id]).await;
                s.recovered(&node).await;
            },
        )
        .await,
    );

    // The API cut off from every node for 20 s (its packets to and from the broker's port
    // dropped inside its own network namespace: clients still reach it, the broker does not),
    // then let through again.
    let s = stack.clone();
    rows.push(
        under_load(
            &stack,
            &api,
            "cut the API off from the broker for 20 s",
            rate,
            || async move {
                let pid = Stack::inspect(&s.containers("api")[0])["State"]["Pid"]
                    .as_u64()
                    .expect("the API container's pid");
                let cut = blocking(move || AmqpCut::new(pid)).await;
                tokio::time::sleep(Duration::from_secs(20)).await;
                blocking(move || drop(cut)).await;
                s.healthy("api").await;
            },
        )
        .await,
    );

    // Every node restarted in turn, each once the cluster is whole again.
    let s = stack.clone();
    rows.push(
        under_load(
            &stack,
            &api,
            "rolling restart of all three",
            rate,
            || async move {
                for node in ["rabbit1", "rabbit2", "rabbit3"] {
                    let id = s.containers(node)[0].clone();
                    docker(&["restart", "-t", "30", &id]).await;
                    s.recovered(node).await;
                }
            },
        )
        .await,
    );

    for row in &rows {
        assert!(
            row.lost.is_empty(),
            "{}: accepted jobs were lost: {:?}",
            row.scenario,
            row.lost
        );
        assert!(row.accepted > 0, "{}: nothing was accepted", row.scenario);
    }
}
