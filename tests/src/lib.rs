//! Harness for the HTTP-level integration tests: runs the real `offload-api` and
//! `offload-worker` binaries against the real RabbitMQ, each test under its own queue prefix
//! and store file, and polls with deadlines.
//!
//! # Layout
//! - [`TestEnv`]: a random queue prefix, a store file, the broker connection, clean-up.
//! - [`ApiProcess`] / [`WorkerProcess`]: the binaries as child processes, with their logs.
//! - [`poll`]: wait for a condition with a deadline, never a bare sleep.
//! - [`announce`]: worker announcements a test publishes itself.
//! - [`rabbit_users`]: broker users with exact permissions, deleted afterwards.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use lapin::{
    Connection, ConnectionProperties,
    options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::{FieldTable, ShortString},
};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub use offload_shared::topology::Names;

pub mod announce;
pub mod postgres;
pub mod rabbit_users;

/// The broker the tests use: `OFFLOAD_TEST_AMQP_URL`, else the local default.
pub fn amqp_url() -> String {
    std::env::var("OFFLOAD_TEST_AMQP_URL")
        .unwrap_or_else(|_| offload_shared::settings::DEFAULT_AMQP_URL.to_owned())
}

/// Connects to the test broker or fails the test with the fix.
pub async fn broker() -> Connection {
    connect_or_fail(&amqp_url()).await
}

async fn connect_or_fail(url: &str) -> Connection {
    let connect = Connection::connect(url, ConnectionProperties::default());
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!(
            "RabbitMQ is not answering at {url}: {e}. Start it with `rabbitmq-server -detached` \
             (or run scripts/test.sh, which starts it)."
        ),
        Err(_) => panic!(
            "RabbitMQ at {url} did not answer within 5 s. Start it with `rabbitmq-server -detached` \
             (or run scripts/test.sh, which starts it)."
        ),
    }
}

/// Paths of the two binaries, built once per test run (a no-op when up to date) so the
/// tests always run what the source says.
fn binaries() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
            .expect("the test executable lives in target/<profile>/deps");
        let mut build = offload_shared::build::workspace_bins(dir.ends_with("release"));
        // The SDK's example workers too (tests/tests/sdk.rs and long_jobs.rs run them): one
        // build, one lock.
        build.args(["--example", "text_stats", "--example", "long_report"]);
        build.current_dir(env!("CARGO_MANIFEST_DIR"));
        let status = build.status().expect("cargo runs");
        assert!(
            status.success(),
            "building offload-api and offload-worker failed"
        );
        (dir.join("offload-api"), dir.join("offload-worker"))
    })
}

/// Path of a program of this workspace, after building the binaries: a binary (`offload-api`,
/// `misconfigured-worker`) or, with `example`, the SDK example of that name (`text_stats`,
/// `long_report`).
pub fn program(name: &str, example: bool) -> PathBuf {
    let api = &binaries().0;
    let dir = api.parent().expect("target/<profile>");
    if example {
        dir.join("examples").join(name)
    } else {
        dir.join(name)
    }
}

/// First retry delay in the tests: short, so retries are quick to watch.
pub const RETRY_BASE_MS: u64 = 200;
/// Longest retry delay in the tests.
pub const RETRY_CAP_MS: u64 = 800;

/// A test's own slice of the broker and its own store file.
pub struct TestEnv {
    /// The queue prefix, unique per test.
    pub prefix: String,
    /// Exchange and queue names under the prefix.
    pub names: Names,
    /// The store file.
    pub database: PathBuf,
    /// A connection for inspecting queues.
    pub broker: Connection,
    /// The broker's address.
    pub url: String,
    /// The harness's admin token per store URL: an API started again on the same store is the
    /// same client's, with the same key (its jobs and idempotency keys).
    tokens: Mutex<std::collections::HashMap<String, String>>,
}

impl TestEnv {
    /// A fresh prefix and store file; fails with the fix if the broker is not answering.
    pub async fn new() -> Self {
        Self::on(&amqp_url()).await
    }

    /// Like [`TestEnv::new`], on the broker at `url`.
    pub async fn on(url: &str) -> Self {
        let broker = connect_or_fail(url).await;
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        let names = Names::new(
            &offload_shared::topology::QueuePrefix::parse(&prefix).expect("a valid prefix"),
            &offload_shared::retry::RetryPolicy::new(RETRY_BASE_MS, RETRY_CAP_MS),
        );
        let database = std::env::temp_dir().join(format!("offload-{prefix}.db"));
        TestEnv {
            prefix,
            names,
            database,
            broker,
            url: url.to_owned(),
            tokens: Mutex::default(),
        }
    }

    /// Environment every process of this test gets.
    pub fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("OFFLOAD_AMQP_URL".into(), self.url.clone()),
            ("OFFLOAD_QUEUE_PREFIX".into(), self.prefix.clone()),
            (
                "OFFLOAD_DATABASE_URL".into(),
                format!("sqlite://{}", self.database.display()),
            ),
            ("OFFLOAD_HTTP_ADDR".into(), "127.0.0.1:0".into()),
            ("OFFLOAD_METRICS_ADDR".into(), "127.0.0.1:0".into()),
            ("OFFLOAD_LOG_FORMAT".into(), "json".into()),
            ("OFFLOAD_RETRY_BASE_MS".into(), RETRY_BASE_MS.to_string()),
            ("OFFLOAD_RETRY_CAP_MS".into(), RETRY_CAP_MS.to_string()),
            ("RUST_LOG".into(), "info".into()),
        ]
    }

    /// Ready messages in `queue` (a passive declare: fails if the queue does not exist).
    pub async fn ready_count(&self, queue: &str) -> u32 {
        let channel = self.broker.create_channel().await.expect("channel");
        let q = channel
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists");
        let _ = channel.close(200, "done".into()).await;
        q.message_count()
    }

    /// Applies a RabbitMQ policy with `definition` (JSON) to this test's queue `queue` alone,
    /// through `rabbitmqctl` on the main node; it is cleared when the guard drops.
    pub fn queue_policy(&self, queue: &str, definition: &str) -> QueuePolicy {
        let name = format!("{queue}-policy");
        let pattern = format!("^{}$", queue.replace('-', "\\-").replace('.', "\\."));
        let set = std::process::Command::new("rabbitmqctl")
            .args([
                "set_policy",
                "--apply-to",
                "queues",
                &name,
                &pattern,
                definition,
            ])
            .output()
            .expect("rabbitmqctl runs (scripts/test.sh installs RabbitMQ)");
        assert!(set.status.success(), "set_policy {name}: {set:?}");
        QueuePolicy { name }
    }

    /// Deletes this test's queues, exchanges and store file.
    pub async fn cleanup(self) {
        // Every broker wait is bounded: a connection a test left in a bad state must not hang
        // the suite (lapin's close once never returned under load). What the broker did not
        // delete in time is deleted with rabbitmqctl.
        const WAIT: Duration = Duration::from_secs(5);
        // The work queues of kinds on other queues (`<prefix>.jobs.<queue>`) too: every quorum
        // queue left behind costs the broker for as long as it exists.
        let mut queues: Vec<String> = self.names.queues().into_iter().map(str::to_owned).collect();
        queues.extend(self.prefixed_queues().await);
        queues.sort();
        queues.dedup();
        let mut left: Vec<String> = queues.clone();
        if let Ok(Ok(channel)) = tokio::time::timeout(WAIT, self.broker.create_channel()).await {
            left.clear();
            for q in &queues {
                // A refused delete closes the channel: what follows goes to rabbitmqctl too.
                let deleted = if channel.status().connected() {
                    tokio::time::timeout(
                        WAIT,
                        channel.queue_delete(
                            ShortString::from(q.as_str()),
                            QueueDeleteOptions::default(),
                        ),
                    )
                    .await
                    .is_ok_and(|d| d.is_ok())
                } else {
                    false
                };
                if !deleted {
                    left.push(q.clone());
                }
            }
            for x in self.names.exchanges() {
                let _ = tokio::time::timeout(
                    WAIT,
                    channel.exchange_delete(ShortString::from(x), ExchangeDeleteOptions::default()),
                )
                .await;
            }
        }
        for q in &left {
            let _ = tokio::process::Command::new("rabbitmqctl")
                .args(["-q", "delete_queue", q])
                .stdin(std::process::Stdio::null())
                .output()
                .await;
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.database.display()));
        }
        let _ = tokio::time::timeout(WAIT, self.broker.close(200, "done".into())).await;
    }
}

impl TestEnv {
    /// The queues named `<prefix>.…` on the default test broker, read from its management API
    /// (`OFFLOAD_TEST_MANAGEMENT_URL`, enabled by scripts/test.sh); none when it does not answer.
    async fn prefixed_queues(&self) -> Vec<String> {
        if self.url != amqp_url() {
            return Vec::new();
        }
        let management = std::env::var("OFFLOAD_TEST_MANAGEMENT_URL")
            .unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".to_owned());
        let Ok(base) = reqwest::Url::parse(&management) else {
            return Vec::new();
        };
        let (user, password) = (
            base.username().to_owned(),
            base.password().map(str::to_owned),
        );
        let url = format!(
            "{}://{}:{}/api/queues?columns=name",
            base.scheme(),
            base.host_str().unwrap_or("127.0.0.1"),
            base.port_or_known_default().unwrap_or(15672)
        );
        let answer = reqwest::Client::new()
            .get(url)
            .basic_auth(user, password)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let Ok(queues) = (match answer {
            Ok(response) => response.json::<Vec<Value>>().await,
            Err(e) => Err(e),
        }) else {
            return Vec::new();
        };
        let own = format!("{}.", self.prefix);
        // A worker's control queue is exclusive: it goes with the worker's connection, and a
        // delete from another connection is refused (closing the channel).
        let control = format!("{}.", self.names.control_exchange);
        queues
            .iter()
            .filter_map(|q| q["name"].as_str())
            .filter(|name| name.starts_with(&own) && !name.starts_with(&control))
            .map(str::to_owned)
            .collect()
    }
}

/// A policy set by [`TestEnv::queue_policy`], cleared on drop.
pub struct QueuePolicy {
    name: String,
}

impl Drop for QueuePolicy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["clear_policy", &self.name])
            .output();
    }
}

/// A child process with its log lines kept for assertions and failure reports.
struct Proc {
    label: String,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    /// The task copying stderr into `logs`: done once the process closed stderr, so after an
    /// exit its last lines (a start-up error) are in `logs` only when it has finished.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl Proc {
    fn spawn(label: &str, program: &Path, vars: &[(String, String)]) -> Self {
        let mut child = Command::new(program)
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let reader = child.stderr.take().map(|stderr| {
            let sink = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.lock().expect("log lock").push(line);
                }
            })
        });
        Proc {
            label: label.to_owned(),
            child,
            logs,
            reader,
        }
    }

    fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Waits for a JSON log line whose `message` is `message`; returns it.
    async fn wait_for_log(&mut self, message: &str, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let found = self.logs().iter().find_map(|line| {
                serde_json::from_str::<Value>(line)
                    .ok()
                    .filter(|v| v["message"] == message)
            });
            if let Some(v) = found {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.read_to_end().await;
                panic!(
                    "{} exited ({status}) before logging {message:?}:\n{}",
                    self.label,
                    self.logs().join("\n")
                );
            }
            assert!(
                start.elapsed() < within,
                "{} did not log {message:?} within {within:?}:\n{}",
                self.label,
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Once the process has exited: waits until its last log lines are in `logs` (its exit
    /// can be seen before they were read). Bounded, since a child the process left behind
    /// may hold stderr open.
    async fn read_to_end(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
    }

    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.read_to_end().await;
                status
            }
            Ok(Err(e)) => panic!("waiting for {} failed: {e}", self.label),
            Err(_) => panic!(
                "{} did not exit within {within:?}:\n{}",
                self.label,
                self.logs().join("\n")
            ),
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the process is running");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- logs of {} ----\n{}",
                self.label,
                self.logs().join("\n")
            );
        }
    }
}

/// A running `offload-api`.
pub struct ApiProcess {
    proc: Proc,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client that does not follow redirects and sends the admin token the harness made.
    pub http: reqwest::Client,
    /// The token of the harness's admin key (a rate limit no test reaches).
    pub token: String,
    /// The variables the API was started with (for `keys` commands on its store).
    vars: Vec<(String, String)>,
}

/// Runs `offload-api keys <args>` with `vars`; its stdout, or a failed test with its output.
pub fn keys_command(vars: &[(String, String)], args: &[&str]) -> String {
    let output = std::process::Command::new(&binaries().0)
        .arg("keys")
        .args(args)
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("offload-api keys runs");
    assert!(
        output.status.success(),
        "offload-api keys {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A client that does not follow redirects, sending `Authorization: Bearer <token>` if given.
pub fn client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()
        .expect("http client")
}

impl ApiProcess {
    /// Starts the API for `env` with extra variables; returns once it listens. First creates
    /// an admin key with the real `keys create` (on the same store), whose token [`Self::http`]
    /// sends.
    pub async fn start(env: &TestEnv, extra: &[(&str, &str)]) -> Self {
        let mut vars = env.vars();
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let store = vars
            .iter()
            .rev()
            .find(|(k, _)| k == "OFFLOAD_DATABASE_URL")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let known = env.tokens.lock().expect("tokens").get(&store).cloned();
        let token = match known {
            Some(token) => token,
            None => {
                let name = format!(
                    "harness-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                );
                let args = [
                    "create",
                    "--name",
                    &name,
                    "--scope",
                    "admin",
                    "--rate-per-s",
                    "1000000",
                    "--burst",
                    "1000000",
                ];
                let token = keys_command(&vars, &args).trim().to_owned();
                env.tokens
                    .lock()
                    .expect("tokens")
                    .insert(store, token.clone());
                token
            }
        };
        let mut proc = Proc::spawn("offload-api", &binaries().0, &vars);
        let line = proc
            .wait_for_log("listening", Duration::from_secs(30))
            .await;
        let addr = line["addr"]
            .as_str()
            .expect("listening line has addr")
            .to_owned();
        ApiProcess {
            proc,
            base: format!("http://{addr}"),
            http: client(Some(&token)),
            token,
            vars,
        }
    }

    /// Creates a key with the real `keys create` on this API's store (`extra`: more flags, e.g.
    /// `--burst 3`); returns its token.
    pub fn create_key(&self, name: &str, scopes: &[&str], extra: &[&str]) -> String {
        let mut args = vec!["create", "--name", name];
        for scope in scopes {
            args.extend(["--scope", scope]);
        }
        args.extend(extra);
        keys_command(&self.vars, &args).trim().to_owned()
    }

    /// Runs `offload-api keys <args>` on this API's store; its stdout.
    pub fn keys(&self, args: &[&str]) -> String {
        keys_command(&self.vars, args)
    }

    /// A client with `token` (no redirects).
    pub fn client_with(&self, token: &str) -> reqwest::Client {
        client(Some(token))
    }

    /// A client without credentials (no redirects).
    pub fn anonymous(&self) -> reqwest::Client {
        client(None)
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Submits a JSON job and asserts 202; returns the job's JSON.
    pub async fn submit(&self, body: Value) -> Value {
        let response = self
            .http
            .post(self.url("/jobs"))
            .json(&body)
            .send()
            .await
            .expect("POST /jobs");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(status, 202, "POST /jobs {body} answered {status}: {text}");
        serde_json::from_str(&text).expect("job JSON")
    }

    /// `GET /jobs/{id}` as JSON; panics unless 200.
    pub async fn job(&self, id: &str) -> Value {
        let response = self
            .http
            .get(self.url(&format!("/jobs/{id}")))
            .send()
            .await
            .expect("GET /jobs/{id}");
        assert_eq!(response.status(), 200, "GET /jobs/{id}");
        response.json().await.expect("job JSON")
    }

    /// Polls the job until its status is `status`; returns the job.
    pub async fn wait_for_status(&self, id: &str, status: &str, within: Duration) -> Value {
        poll(within, &format!("job {id} to reach {status}"), || async {
            let job = self.job(id).await;
            (job["status"] == status).then_some(job)
        })
        .await
    }

    /// POSTs `body` to `/jobs`; the status and the JSON answer (null if none).
    pub async fn post_job(&self, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/jobs"))
            .json(body)
            .send()
            .await
            .expect("POST /jobs");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GETs `path`, asserting 200; its JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("JSON")
    }

    /// The entry of kind `name` in `GET /kinds`, if listed.
    pub async fn kind(&self, name: &str) -> Option<Value> {
        self.get_json("/kinds").await["kinds"]
            .as_array()
            .expect("kinds")
            .iter()
            .find(|k| k["name"] == name)
            .cloned()
    }

    /// Every job with `status`, following `next_cursor` through all pages.
    pub async fn all_jobs(&self, status: &str) -> Vec<Value> {
        let mut jobs = Vec::new();
        let mut cursor = String::new();
        loop {
            let url = self.url(&format!("/jobs?status={status}&limit=1000{cursor}"));
            let page: Value = self
                .http
                .get(url)
                .send()
                .await
                .expect("GET /jobs")
                .json()
                .await
                .expect("page JSON");
            jobs.extend(page["jobs"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => return jobs,
            }
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// The API's log lines.
    pub fn logs(&self) -> Vec<String> {
        self.proc.logs()
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn stop(mut self) -> ExitStatus {
        self.proc.signal("-TERM");
        self.proc.wait_exit(Duration::from_secs(40)).await
    }

    /// Sends SIGTERM without waiting (see [`ApiProcess::wait_exit`]).
    pub fn terminate(&self) {
        self.proc.signal("-TERM");
    }

    /// Waits for the process to exit; fails the test after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        self.proc.wait_exit(within).await
    }

    /// The address the API listens on, for raw TCP probes.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("base is http://<ip>:<port>")
    }

    /// kill -9: the process dies wherever it is, mid-request included.
    pub async fn kill9(mut self) {
        self.proc.signal("-KILL");
        self.proc.wait_exit(Duration::from_secs(10)).await;
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

/// The sum of every sample of `name` in a Prometheus text exposition whose labels contain each
/// of `labels` (e.g. `outcome="succeeded"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// A running `offload-worker`.
pub struct WorkerProcess {
    proc: Proc,
    /// Its name, as job status shows it.
    pub name: String,
    /// `http://127.0.0.1:<port>` of its metrics and health endpoint.
    pub metrics_base: String,
}

impl WorkerProcess {
    /// Starts a worker named `name` with `prefetch`; returns once it consumes.
    pub async fn start(env: &TestEnv, name: &str, prefetch: u16, extra: &[(&str, &str)]) -> Self {
        let proc = Self::spawn(env, name, prefetch, extra);
        Self::started(proc, name).await
    }

    /// Starts a worker named `name` as a user would on their machine: without the test-only
    /// `OFFLOAD_METRICS_ADDR` (so it binds 0.0.0.0:9090, or a free port if that is taken) and
    /// with the default prefetch. Returns once it consumes; `metrics_base` is where it listens.
    pub async fn start_with_default_metrics(
        env: &TestEnv,
        name: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut vars = env.vars();
        vars.retain(|(k, _)| k != "OFFLOAD_METRICS_ADDR");
        vars.push(("OFFLOAD_WORKER_NAME".into(), name.to_owned()));
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let proc = Proc::spawn(&format!("offload-worker {name}"), &binaries().1, &vars);
        Self::started(proc, name).await
    }

    /// Waits until a spawned worker listens and consumes.
    async fn started(mut proc: Proc, name: &str) -> Self {
        let line = proc
            .wait_for_log("metrics listening", Duration::from_secs(30))
            .await;
        let addr: std::net::SocketAddr = line["addr"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("metrics line has addr");
        // An unspecified address (0.0.0.0) is reached on this host's loopback.
        let addr = if addr.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        proc.wait_for_log("consuming", Duration::from_secs(30))
            .await;
        WorkerProcess {
            proc,
            name: name.to_owned(),
            metrics_base: format!("http://{addr}"),
        }
    }

    /// Starts a worker that is expected to fail at start-up; returns its exit status and logs.
    pub async fn start_failing(env: &TestEnv, extra: &[(&str, &str)]) -> (ExitStatus, String) {
        Self::program_failing(env, &binaries().1, extra).await
    }

    /// Like [`WorkerProcess::start_failing`], running `program` (see [`program`]).
    pub async fn program_failing(
        env: &TestEnv,
        program: &Path,
        extra: &[(&str, &str)],
    ) -> (ExitStatus, String) {
        let mut proc = Self::spawn_program(env, program, "failing", 1, extra);
        let status = proc.wait_exit(Duration::from_secs(20)).await;
        (status, proc.logs().join("\n"))
    }

    /// Starts `program` (a worker built on the SDK, see [`program`]) named `name` with
    /// `prefetch`; returns once it consumes.
    pub async fn start_program(
        env: &TestEnv,
        program: &Path,
        name: &str,
        prefetch: u16,
        extra: &[(&str, &str)],
    ) -> Self {
        let proc = Self::spawn_program(env, program, name, prefetch, extra);
        Self::started(proc, name).await
    }

    fn spawn(env: &TestEnv, name: &str, prefetch: u16, extra: &[(&str, &str)]) -> Proc {
        Self::spawn_program(env, &binaries().1, name, prefetch, extra)
    }

    fn spawn_program(
        env: &TestEnv,
        program: &Path,
        name: &str,
        prefetch: u16,
        extra: &[(&str, &str)],
    ) -> Proc {
        let mut vars = env.vars();
        vars.push(("OFFLOAD_WORKER_NAME".into(), name.to_owned()));
        vars.push(("OFFLOAD_PREFETCH".into(), prefetch.to_string()));
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Proc::spawn(&format!("offload-worker {name}"), program, &vars)
    }

    /// The sum of this worker's `offload_worker_jobs_total` samples with all of `labels`.
    pub async fn settled(&self, labels: &[&str]) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.metrics_base))
            .await
            .expect("worker metrics")
            .text()
            .await
            .expect("metrics text");
        metric_sum(&text, "offload_worker_jobs_total", labels)
    }

    /// Jobs this worker settled as succeeded, by its own `/metrics`.
    pub async fn succeeded(&self) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.metrics_base))
            .await
            .expect("worker metrics")
            .text()
            .await
            .expect("metrics text");
        metric_sum(
            &text,
            "offload_worker_jobs_total",
            &["outcome=\"succeeded\""],
        )
    }

    /// kill -9: the process dies without acking anything.
    pub async fn kill9(mut self) {
        self.proc.signal("-KILL");
        self.proc.wait_exit(Duration::from_secs(10)).await;
    }

    /// Sends SIGTERM (graceful stop).
    pub fn terminate(&self) {
        self.proc.signal("-TERM");
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        self.proc.wait_exit(within).await
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// The worker's log lines.
    pub fn logs(&self) -> Vec<String> {
        self.proc.logs()
    }
}

/// Runs a program of this workspace to completion (e.g. `--help`); returns status and output.
pub fn run_binary(api: bool, args: &[&str], vars: &[(&str, &str)]) -> (ExitStatus, String) {
    let (a, w) = binaries();
    let output = std::process::Command::new(if api { a } else { w })
        .args(args)
        .envs(vars.iter().copied())
        .output()
        .expect("binary runs");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status, text)
}

/// Runs `scripts/fault-broker.sh <command>` (the private RabbitMQ node that fault tests stop
/// and start); returns its standard output, or fails the test with everything it printed.
pub async fn fault_broker(command: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fault-broker.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(command)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success(),
        "scripts/fault-broker.sh {command} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Calls `check` until it returns `Some`, at most for `within`; fails the test naming `what`.
pub async fn poll<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Parses an RFC 3339 timestamp from a job's JSON field.
pub fn timestamp(job: &Value, field: &str) -> time::OffsetDateTime {
    let text = job[field]
        .as_str()
        .unwrap_or_else(|| panic!("job has no {field}: {job}"));
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{field} {text:?}: {e}"))
}
