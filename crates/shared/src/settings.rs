//! The one settings struct: built-in defaults, then `OFFLOAD_*` environment variables, then
//! `--flags` of the same names, validated at start-up with messages a person can act on.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    kinds::QueueName,
    secret_url::{
        SecretUrl, check_amqp_url, check_database_url, check_management_url, with_password,
        with_password_each, without_secrets,
    },
    topology::QueuePrefix,
};

/// Default broker address: the local RabbitMQ with its stock account.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Longest run-time limit a job may have: below RabbitMQ's default consumer timeout (30 min),
/// so the broker never closes a worker's channel under a job that is still within its limit.
pub const MAX_JOB_TIMEOUT_S: u64 = 1500;

/// The worker's metrics address when `OFFLOAD_METRICS_ADDR` is not set. If its port is taken
/// (another worker on the same machine), the worker falls back to a free port and logs it.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9090);

/// Default of `OFFLOAD_BROKER_MAX_MESSAGE_BYTES`: RabbitMQ 4.x's default `max_message_size`.
pub const DEFAULT_BROKER_MAX_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;

/// Default of `OFFLOAD_MAX_QUEUE_LENGTH`: 100,000 messages. With the default 1 MiB body limit a
/// full quorum queue could hold up to ~100 GB in the worst case, but typical jobs of a few KB
/// make it a few hundred MB, far below a broker's memory alarm, while it is still hours of
/// backlog for a small fleet: the limit is reached only when workers cannot keep up at all.
pub const DEFAULT_MAX_QUEUE_LENGTH: u32 = 100_000;

/// Share (in percent) of `OFFLOAD_MAX_QUEUE_LENGTH` at which the API refuses new jobs, so
/// retries dead-lettered back from the delay queues still fit the queue.
pub const QUEUE_FULL_PERCENT: u32 = 90;

/// Default `OFFLOAD_MAX_ARTIFACT_BYTES`: 8 MiB.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 8 * 1024 * 1024;

/// Default of `OFFLOAD_MAX_RESULT_BYTES`: 1 MiB.
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 1024 * 1024;

/// Largest `OFFLOAD_MAX_RESULT_BYTES`: 8 MiB. A result travels in one event message, which must
/// stay below the broker's message size limit (16 MiB by default on RabbitMQ 4.x).
pub const MAX_RESULT_BYTES_CAP: u64 = 8 * 1024 * 1024;
/// Longest `OFFLOAD_RETENTION_S` and `OFFLOAD_IDEMPOTENCY_TTL_S`: 100 years.
pub const MAX_RETENTION_S: u64 = 100 * 365 * 24 * 3600;

/// The RabbitMQ queue type of the work, dead-letter and events queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueType {
    /// Replicated, fsync'd before confirm, counts deliveries (poison messages are dead-lettered).
    Quorum,
    /// Single-node queue; faster on one node, no delivery limit.
    Classic,
}

impl QueueType {
    /// The value of the `x-queue-type` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

/// What the binary does instead of serving.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Exit 0 if this process's HTTP port answers `GET /health/ready` with 200 (for container
    /// healthchecks: the API's OFFLOAD_HTTP_ADDR, the worker's OFFLOAD_METRICS_ADDR, default
    /// 0.0.0.0:9090).
    Healthcheck,
    /// [api] Manage API keys in the store OFFLOAD_DATABASE_URL names (no broker needed; the API
    /// may be running).
    Keys {
        /// What to do with the keys.
        #[command(subcommand)]
        action: KeysCommand,
    },
}

/// `offload-api keys …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its token on stdout (only there, only now: the store keeps a hash).
    Create {
        /// A unique name for the key (who or what uses it).
        #[arg(long, value_parser = parse_key_name)]
        name: String,
        /// A scope the key grants; repeat for several.
        #[arg(long = "scope", value_enum, required = true)]
        scopes: Vec<Scope>,
        /// Days until the key expires; without it the key does not expire.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        expires_in_days: Option<u32>,
        /// Submits per second this key may make (its own rate limit; default OFFLOAD_RATE_LIMIT_PER_S).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        rate_per_s: Option<u32>,
        /// Submits this key may make at once (its own burst; default OFFLOAD_RATE_LIMIT_BURST).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        burst: Option<u32>,
    },
    /// List the keys: name, scopes, created, expires, revoked (never tokens or hashes).
    List,
    /// Revoke the key of this name: its token and its browser sessions stop working at once.
    Revoke {
        /// The key's name.
        name: String,
    },
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Scope {
    /// `POST /jobs`, `POST /jobs/batch`.
    Submit,
    /// `GET /jobs`, `GET /jobs/{id}`, `GET /kinds`, `GET /workers`.
    Read,
    /// Everything: every key's jobs, redrive, `/metrics`.
    Admin,
    /// `GET /metrics` only (for Prometheus).
    Metrics,
}

impl Scope {
    /// The scope's name, as stored and as `WWW-Authenticate` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Metrics => "metrics",
        }
    }

    /// The scope named `raw`, if any.
    pub fn parse(raw: &str) -> Option<Self> {
        [Scope::Submit, Scope::Read, Scope::Admin, Scope::Metrics]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// Whether the API asks for credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Every route but the probes, the API document and the sign-in page needs a key.
    On,
    /// No credentials: anyone who reaches the port is admin. Refused unless OFFLOAD_HTTP_ADDR is
    /// a loopback address.
    Off,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// JSON lines when stderr is not a terminal (containers), readable text otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Settings of both binaries. Every field has a flag `--name` and a variable `OFFLOAD_NAME`.
#[derive(Debug, Clone, Parser)]
#[command(version, about, long_about = None, next_line_help = false)]
pub struct Settings {
    /// Run a command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// RabbitMQ address (`amqp://` or `amqps://`), or the addresses of a cluster's nodes
    /// separated by commas (a comma in a password is written %2C): each connection goes to the
    /// first that answers, starting from a random one, so a node's loss moves connections to
    /// the others.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_AMQP_URL", default_value = DEFAULT_AMQP_URL, value_parser = SecretUrl(check_amqp_url))]
    pub amqp_url: String,

    /// [api] Address the HTTP server binds; port 0 picks a free port (the bound address is logged).
    #[arg(
        long,
        hide_env_values = true,
        env = "OFFLOAD_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub http_addr: SocketAddr,

    /// [api] `on`: every route but the probes, `/openapi.json`, `/docs` and the sign-in page
    /// needs an API key (`offload-api keys create`). `off` (no credentials, everyone is admin)
    /// is refused unless OFFLOAD_HTTP_ADDR is a loopback address.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_AUTH", value_enum, default_value_t = AuthMode::On)]
    pub auth: AuthMode,

    /// [api] Submits per second a key may make (token bucket refill), unless the key has its own
    /// (`keys create --rate-per-s`). A batch of N jobs counts N. Per API replica.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_RATE_LIMIT_PER_S", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_per_s: u32,

    /// [api] Submits a key may make at once (token bucket size), unless the key has its own
    /// (`keys create --burst`). Per API replica.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_RATE_LIMIT_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_burst: u32,

    /// [api] Seconds a browser session (signed in with a key at `/`) lasts. Default 12 hours.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_SESSION_TTL_S", default_value_t = 43_200, value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub session_ttl_s: u64,

    /// Prefix of every exchange and queue name, so tenants and tests can share one broker.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_QUEUE_PREFIX", default_value = "offload", value_parser = QueuePrefix::parse)]
    pub queue_prefix: QueuePrefix,

    /// Queue type of the queues this process declares. Must match queues that already exist.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_QUEUE_TYPE", value_enum, default_value_t = QueueType::Quorum)]
    pub queue_type: QueueType,

    /// Quorum queues only: deliveries of one message before it is dead-lettered (a job that keeps
    /// killing its worker). Must match the existing queue.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_DELIVERY_LIMIT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub delivery_limit: u32,

    /// [worker] Unacknowledged jobs per worker (`basic.qos`), which is also how many it runs at once.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_PREFETCH", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub prefetch: u16,

    /// [worker] Queues the stock `offload-worker` serves, comma-separated (e.g. `documents`, or
    /// `default,webhooks`): it runs only the built-in kinds of those queues, so each queue can
    /// have its own workers. Empty: every built-in kind's queue.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_QUEUES", default_value = "", value_parser = parse_queue_list)]
    pub queues: QueueList,

    /// [api] Job store: `sqlite://path/to/file.db` (one API process) or `postgres://user@host/db`
    /// (several API replicas sharing one database).
    #[arg(
        long,
        hide_env_values = true,
        env = "OFFLOAD_DATABASE_URL",
        default_value = "sqlite://data/offload.db",
        value_parser = SecretUrl(check_database_url)
    )]
    pub database_url: String,

    /// [api] A YAML or JSON list of kind specs (name, queue, payload_schema, max_attempts,
    /// timeout_s) that locks the deployment down: only these kinds are accepted, and worker
    /// announcements add none. Unset: the kinds workers announce are accepted.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_KINDS_FILE")]
    pub kinds_file: Option<std::path::PathBuf>,

    /// [api] Largest accepted request body in bytes; larger bodies get 413.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(256..=(256 * 1024 * 1024)))]
    pub max_body_bytes: u64,

    /// The broker's message size limit in bytes: set it to the broker's `max_message_size`
    /// (RabbitMQ 4.x: 16 MiB by default; 3.x: 128 MiB, 512 MiB at most). A message over it is
    /// refused before it is sent; OFFLOAD_MAX_BODY_BYTES and OFFLOAD_MAX_RESULT_BYTES plus the
    /// envelope (4 KiB) must fit it.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_BROKER_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_BROKER_MAX_MESSAGE_BYTES, value_parser = clap::value_parser!(u64).range(8192..=(512 * 1024 * 1024)))]
    pub broker_max_message_bytes: u64,

    /// Most messages a work queue holds (`x-max-length`, with `x-overflow=reject-publish`: a
    /// full queue refuses publishes). The API refuses submits with 503 `queue-full` once a
    /// queue's ready count reaches 90 % of it, so retries coming back from the delay queues
    /// still fit. Fixed when a queue is created; existing queues take it from a policy.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_MAX_QUEUE_LENGTH", default_value_t = DEFAULT_MAX_QUEUE_LENGTH, value_parser = clap::value_parser!(u32).range(10..=100_000_000))]
    pub max_queue_length: u32,

    /// Seconds a stopping process waits for in-flight work before it exits.
    #[arg(
        long,
        hide_env_values = true,
        env = "OFFLOAD_SHUTDOWN_GRACE_S",
        default_value_t = 30
    )]
    pub shutdown_grace_s: u64,

    /// Milliseconds a running job's handler has to stop once its job is cancelled (its
    /// context's cancellation fires at once); then the worker drops it and acks the job.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_CANCEL_GRACE_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub cancel_grace_ms: u64,

    /// Least milliseconds between two progress reports of one job (`ctx.progress`): reports in
    /// between are merged, the latest kept, so a chatty handler cannot flood the broker.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_PROGRESS_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub progress_interval_ms: u64,

    /// [worker] Seconds a long job's lease lasts ([`crate::kinds::KindSpec::long`]): the worker
    /// renews it with a heartbeat every third of it, and if it lapses (the worker died) the API
    /// starts the job again, so a dead worker's long job restarts within about this long.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_LEASE_S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub lease_s: u64,

    /// Milliseconds a client has to send a request's line and headers (also the longest wait for
    /// the next request on a kept-alive connection); then the connection is closed. Both HTTP
    /// listeners (the API's and the worker's metrics endpoint).
    #[arg(long, hide_env_values = true, env = "OFFLOAD_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub http_header_timeout_ms: u64,

    /// [api] Milliseconds a client has to send a whole request body once its headers arrived;
    /// past it the request gets 408.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_HTTP_BODY_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub http_body_timeout_ms: u64,

    /// A file holding the password of OFFLOAD_AMQP_URL (whose user it completes, e.g.
    /// `amqp://offload@rabbitmq:5672/%2f`), read at start; trailing newlines are dropped. For
    /// generated credentials (compose) and secret mounts. Unset: the URL's own password.
    #[arg(
        long,
        hide_env_values = true,
        env = "OFFLOAD_AMQP_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub amqp_password_file: Option<std::path::PathBuf>,

    /// [api] A file holding the password of OFFLOAD_DATABASE_URL (PostgreSQL), read at start.
    #[arg(
        long,
        hide_env_values = true,
        env = "OFFLOAD_DATABASE_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub database_password_file: Option<std::path::PathBuf>,

    /// [api] A file holding the password of OFFLOAD_MANAGEMENT_URL, read at start.
    #[arg(
        long,
        hide_env_values = true,
        env = "OFFLOAD_MANAGEMENT_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub management_password_file: Option<std::path::PathBuf>,

    /// Open connections one HTTP listener serves at once; a connection past it is closed at once
    /// (and counted in `offload_http_connections_refused_total`). Lowered at start to fit the
    /// process's file-descriptor limit. Both HTTP listeners.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_HTTP_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub http_max_connections: u64,

    /// Largest request line plus headers in bytes; a larger head is answered 431 and the
    /// connection closed. Both HTTP listeners.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_HTTP_MAX_HEADER_BYTES", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1024..=1_048_576))]
    pub http_max_header_bytes: u64,

    /// Deadline in milliseconds of every broker wait (connect, publish, confirm).
    #[arg(long, hide_env_values = true, env = "OFFLOAD_BROKER_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub broker_timeout_ms: u64,

    /// [api] Deadline in milliseconds of one publish and its confirm; past it `POST /jobs` answers 503.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_PUBLISH_TIMEOUT_MS", default_value_t = 1500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub publish_timeout_ms: u64,

    /// [api] Seconds a job whose publish was not confirmed in time stays `pending` while the API
    /// waits for a late confirm or the job's own events; after that the API republishes it under
    /// the same id (also for a job recorded but never published, e.g. the API was killed).
    #[arg(long, hide_env_values = true, env = "OFFLOAD_RESOLVE_AFTER_S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub resolve_after_s: u64,

    /// Seconds between AMQP heartbeats; a silent broker is declared lost after about two.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_HEARTBEAT_S", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=600))]
    pub heartbeat_s: u16,

    /// [worker] Seconds between a worker's announcements (heartbeats) to the API; the API counts
    /// a worker gone after three missed ones. Not the AMQP heartbeat (OFFLOAD_HEARTBEAT_S).
    #[arg(long, hide_env_values = true, env = "OFFLOAD_WORKER_HEARTBEAT_S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub worker_heartbeat_s: u64,

    /// [api] Default run-time limit of a job in seconds, when the request names none.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_JOB_TIMEOUT_S", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=MAX_JOB_TIMEOUT_S))]
    pub job_timeout_s: u64,

    /// [api] Largest run-time limit a request may ask for, in seconds (at most 1500, below the
    /// broker's 30-minute consumer timeout).
    #[arg(long, hide_env_values = true, env = "OFFLOAD_MAX_JOB_TIMEOUT_S", default_value_t = MAX_JOB_TIMEOUT_S, value_parser = clap::value_parser!(u64).range(1..=MAX_JOB_TIMEOUT_S))]
    pub max_job_timeout_s: u64,

    /// First retry delay in milliseconds; each further attempt doubles it (with jitter).
    #[arg(long, hide_env_values = true, env = "OFFLOAD_RETRY_BASE_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub retry_base_ms: u64,

    /// Longest retry delay in milliseconds.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_RETRY_CAP_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub retry_cap_ms: u64,

    /// [worker] Address of the worker's metrics and health endpoint (`/metrics`, `/health/ready`)
    /// [default: 0.0.0.0:9090, or a free port if 9090 is taken, e.g. by another worker on this
    /// machine; the bound address is logged]. When set, exactly this address, and start-up fails
    /// if it is taken; port 0 picks a free port.
    #[arg(
        long,
        hide_env_values = true,
        env = "OFFLOAD_METRICS_ADDR",
        value_name = "ADDR"
    )]
    pub metrics_addr: Option<SocketAddr>,

    /// [worker] Largest result a handler may return, in bytes of JSON; a larger one (or one nested
    /// deeper than 64 levels) is not sent, and the job ends dead with the reason.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_MAX_RESULT_BYTES", default_value_t = DEFAULT_MAX_RESULT_BYTES, value_parser = clap::value_parser!(u64).range(64..=MAX_RESULT_BYTES_CAP))]
    pub max_result_bytes: u64,

    /// [worker] Largest total of the artifacts (files) one job may return, in bytes; a job whose
    /// artifacts add up to more ends dead with the reason. Each artifact is one broker message,
    /// so this must fit in one (below OFFLOAD_BROKER_MAX_MESSAGE_BYTES). Default 8 MiB, or less
    /// when the broker's message limit is lower (what one message can carry).
    #[arg(long, hide_env_values = true, env = "OFFLOAD_MAX_ARTIFACT_BYTES", value_parser = clap::value_parser!(u64).range(0..=u64::from(u32::MAX)))]
    pub max_artifact_bytes: Option<u64>,

    /// [api] RabbitMQ management API (e.g. `http://guest:guest@127.0.0.1:15672`), read for the
    /// unacked count of the queues; empty: only what AMQP tells (ready messages and consumers).
    #[arg(long, hide_env_values = true, env = "OFFLOAD_MANAGEMENT_URL", default_value = "", value_parser = SecretUrl(check_management_url))]
    pub management_url: String,

    /// [api] Seconds a finished job (succeeded, failed, dead) is kept after it finished; then
    /// it is deleted, with its result, and its id answers 404. Default 7 days.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_RETENTION_S", default_value_t = 604_800, value_parser = clap::value_parser!(u64).range(1..=MAX_RETENTION_S))]
    pub retention_s: u64,

    /// [api] Seconds an `Idempotency-Key` is remembered after its first request; a repeat
    /// after that is a new job. The key of a job still pending its publish is kept until the
    /// job is resolved. Default 24 hours.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_IDEMPOTENCY_TTL_S", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=MAX_RETENTION_S))]
    pub idempotency_ttl_s: u64,

    /// [api] Milliseconds between two retention passes (each deletes in batches of 500 rows
    /// until nothing more is due).
    #[arg(long, hide_env_values = true, env = "OFFLOAD_RETENTION_INTERVAL_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub retention_interval_ms: u64,

    /// [worker] Largest image `image.thumbnail` decodes, in pixels (width × height, read from
    /// the header before decoding): a larger one fails permanently, so a small file claiming
    /// huge dimensions (a decompression bomb) cannot exhaust memory. Default 40 megapixels.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_THUMBNAIL_MAX_PIXELS", default_value_t = 40_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub thumbnail_max_pixels: u64,

    /// [worker] Name reported in job status; defaults to `<hostname>-<pid>`.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_WORKER_NAME")]
    pub worker_name: Option<String>,

    /// [worker] Where `http.request` jobs may send: comma-separated host names
    /// (`hooks.example.com`), wildcard subdomains (`*.example.com`), IP addresses and CIDRs
    /// (`203.0.113.7`, `10.0.0.0/8`, `::1`), each with an optional `:port`. Empty (the
    /// default): every destination is refused. Private, loopback and link-local addresses need
    /// an IP or CIDR entry covering them; a host name alone does not unlock them.
    #[arg(
        long,
        hide_env_values = true,
        env = "OFFLOAD_WEBHOOK_ALLOW",
        default_value = ""
    )]
    pub webhook_allow: String,

    /// [worker] Where kinds that fetch their input from a URL may fetch from; the syntax of
    /// OFFLOAD_WEBHOOK_ALLOW. Empty (the default): no fetches.
    #[arg(
        long,
        hide_env_values = true,
        env = "OFFLOAD_FETCH_ALLOW",
        default_value = ""
    )]
    pub fetch_allow: String,

    /// [worker] File of `http.request` signing keys, one `name=whsec_<base64>` a line (`#`
    /// starts a comment); a job's `sign_with` names one. Unset: no signing keys.
    #[arg(
        long,
        hide_env_values = true,
        env = "OFFLOAD_WEBHOOK_SECRETS_FILE",
        value_name = "PATH"
    )]
    pub webhook_secrets_file: Option<std::path::PathBuf>,

    /// Log format: auto (JSON unless stderr is a terminal), json or text. Filter with `RUST_LOG`.
    #[arg(long, hide_env_values = true, env = "OFFLOAD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

impl Settings {
    /// Settings from defaults and the environment only, as a test starts from before changing fields.
    pub fn from_env() -> Result<Self, clap::Error> {
        Self::try_parse_from(["offload"])
    }

    /// Checks what one flag alone cannot: the relations between settings.
    pub fn validate(self) -> Result<Self, String> {
        if self.retry_cap_ms < self.retry_base_ms {
            return Err(format!(
                "OFFLOAD_RETRY_CAP_MS ({}) is below OFFLOAD_RETRY_BASE_MS ({}); the cap must be at least the base",
                self.retry_cap_ms, self.retry_base_ms
            ));
        }
        if self.resolve_after() <= self.publish_timeout() * 2 {
            return Err(format!(
                "OFFLOAD_RESOLVE_AFTER_S ({} s) must be more than twice OFFLOAD_PUBLISH_TIMEOUT_MS ({} ms): \
                 a job is republished only after its first publish had time to be confirmed",
                self.resolve_after_s, self.publish_timeout_ms
            ));
        }
        let overhead = crate::frames::ENVELOPE_OVERHEAD_BYTES;
        for (name, value) in [
            ("OFFLOAD_MAX_BODY_BYTES", self.max_body_bytes),
            ("OFFLOAD_MAX_RESULT_BYTES", self.max_result_bytes),
        ] {
            if value.saturating_add(overhead) > self.broker_max_message_bytes {
                return Err(format!(
                    "{name} ({value}) plus the job envelope ({overhead} bytes) is above \
                     OFFLOAD_BROKER_MAX_MESSAGE_BYTES ({}): the broker would refuse such a message \
                     and close the connection every request shares. Lower {name} to at most {}, or \
                     raise the broker's max_message_size and OFFLOAD_BROKER_MAX_MESSAGE_BYTES with it",
                    self.broker_max_message_bytes,
                    self.broker_max_message_bytes.saturating_sub(overhead)
                ));
            }
        }
        let overhead = crate::artifacts::ARTIFACT_OVERHEAD_BYTES;
        let explicit = self.max_artifact_bytes.unwrap_or(0);
        if explicit.saturating_add(overhead) > self.broker_max_message_bytes {
            return Err(format!(
                "OFFLOAD_MAX_ARTIFACT_BYTES ({}) plus an artifact message's headers ({overhead} bytes) \
                 is above OFFLOAD_BROKER_MAX_MESSAGE_BYTES ({}): the broker would refuse such an \
                 artifact. Lower OFFLOAD_MAX_ARTIFACT_BYTES to at most {}, or raise the broker's \
                 max_message_size and OFFLOAD_BROKER_MAX_MESSAGE_BYTES with it",
                explicit,
                self.broker_max_message_bytes,
                self.broker_max_message_bytes.saturating_sub(overhead)
            ));
        }
        if self.job_timeout_s > self.max_job_timeout_s {
            return Err(format!(
                "OFFLOAD_JOB_TIMEOUT_S ({}) is above OFFLOAD_MAX_JOB_TIMEOUT_S ({}); lower the default or raise the maximum",
                self.job_timeout_s, self.max_job_timeout_s
            ));
        }
        Ok(self)
    }

    /// Parses the command line and environment, reads the password files and validates; on
    /// error prints it and exits 2.
    pub fn load() -> Self {
        let settings = <Self as Parser>::parse();
        match settings.read_password_files().and_then(Self::validate) {
            Ok(s) => s,
            Err(message) => {
                eprintln!("error: {message}");
                std::process::exit(2);
            }
        }
    }

    /// Completes the URLs with the passwords of `OFFLOAD_*_PASSWORD_FILE`, where set.
    pub fn read_password_files(mut self) -> Result<Self, String> {
        let files = [
            (
                self.amqp_password_file.clone(),
                &mut self.amqp_url,
                "OFFLOAD_AMQP",
                check_amqp_url as fn(&str) -> Result<(), String>,
            ),
            (
                self.database_password_file.clone(),
                &mut self.database_url,
                "OFFLOAD_DATABASE",
                check_database_url,
            ),
            (
                self.management_password_file.clone(),
                &mut self.management_url,
                "OFFLOAD_MANAGEMENT",
                check_management_url,
            ),
        ];
        for (file, url, name, check) in files {
            let Some(file) = file else { continue };
            let password = std::fs::read_to_string(&file).map_err(|e| {
                format!("{name}_PASSWORD_FILE: cannot read {}: {e}", file.display())
            })?;
            let password = password.trim_end_matches(['\n', '\r']);
            // An AMQP URL may be a list of a cluster's nodes: each gets the password.
            let complete = if name == "OFFLOAD_AMQP" {
                with_password_each
            } else {
                with_password
            };
            let completed = complete(url, password).map_err(|problem| {
                format!("{name}_URL cannot take the password of {name}_PASSWORD_FILE: {problem}")
            })?;
            check(&completed).map_err(|problem| {
                format!(
                    "{name}_URL with the password of {name}_PASSWORD_FILE is not valid: {}",
                    without_secrets(&without_secrets(&problem, &completed), password)
                )
            })?;
            *url = completed;
        }
        Ok(self)
    }

    /// The retry back-off these settings describe.
    pub fn retry_policy(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy::new(self.retry_base_ms, self.retry_cap_ms)
    }

    /// Deadline of one publish and its confirm.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    /// How long a job whose publish was not confirmed stays pending before it is republished.
    pub fn resolve_after(&self) -> Duration {
        Duration::from_secs(self.resolve_after_s)
    }

    /// Deadline of one broker wait.
    pub fn broker_timeout(&self) -> Duration {
        Duration::from_millis(self.broker_timeout_ms)
    }

    /// How long a browser session lasts.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_s)
    }

    /// Checks the API's own start-up rule: `OFFLOAD_AUTH=off` only on a loopback address.
    pub fn check_auth(&self) -> Result<(), String> {
        if self.auth == AuthMode::Off && !self.http_addr.ip().is_loopback() {
            return Err(format!(
                "OFFLOAD_AUTH=off is refused on OFFLOAD_HTTP_ADDR {}: without authentication anyone \
                 who reaches the port could submit and read every job. Either keep OFFLOAD_AUTH=on \
                 and create a key (offload-api keys create --name me --scope submit --scope read), \
                 or listen on a loopback address (OFFLOAD_HTTP_ADDR=127.0.0.1:8080)",
                self.http_addr
            ));
        }
        Ok(())
    }

    /// The ready count of a work queue at which the API refuses new jobs
    /// ([`QUEUE_FULL_PERCENT`] of `OFFLOAD_MAX_QUEUE_LENGTH`, at least 1).
    pub fn queue_full_at(&self) -> u32 {
        let at = u64::from(self.max_queue_length) * u64::from(QUEUE_FULL_PERCENT) / 100;
        u32::try_from(at).unwrap_or(u32::MAX).max(1)
    }

    /// How long a finished job is kept.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_s)
    }

    /// How long an idempotency key is remembered.
    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_s)
    }

    /// Time between two retention passes.
    pub fn retention_interval(&self) -> Duration {
        Duration::from_millis(self.retention_interval_ms)
    }

    /// How long a cancelled job's handler has to stop (`OFFLOAD_CANCEL_GRACE_MS`).
    pub fn cancel_grace(&self) -> Duration {
        Duration::from_millis(self.cancel_grace_ms)
    }

    /// How long a long job's lease lasts (`OFFLOAD_LEASE_S`).
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_s)
    }

    /// Least time between two progress reports of one job (`OFFLOAD_PROGRESS_INTERVAL_MS`).
    pub fn progress_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms)
    }

    /// How long a stopping process waits for in-flight work.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_s)
    }

    /// The worker's metrics address: `OFFLOAD_METRICS_ADDR` if set, else [`DEFAULT_METRICS_ADDR`]
    /// (which the worker may replace by a free port if it is taken; the healthcheck probes it).
    pub fn metrics_addr_or_default(&self) -> SocketAddr {
        self.metrics_addr.unwrap_or(DEFAULT_METRICS_ADDR)
    }

    /// `OFFLOAD_MAX_RESULT_BYTES` as a length (it is at most [`MAX_RESULT_BYTES_CAP`]).
    pub fn max_result_bytes(&self) -> usize {
        usize::try_from(self.max_result_bytes).unwrap_or(usize::MAX)
    }

    /// `OFFLOAD_MAX_ARTIFACT_BYTES` as a length; unset, 8 MiB or what one broker message can
    /// carry if that is less.
    pub fn max_artifact_bytes(&self) -> usize {
        let bytes = self.max_artifact_bytes.unwrap_or_else(|| {
            DEFAULT_MAX_ARTIFACT_BYTES.min(
                self.broker_max_message_bytes
                    .saturating_sub(crate::artifacts::ARTIFACT_OVERHEAD_BYTES),
            )
        });
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }

    /// The worker's name in job status.
    pub fn worker_name(&self) -> String {
        self.worker_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "worker".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// A key name: 1 to 64 characters of `[A-Za-z0-9._-]` (it is printed in lists and logs).
/// A comma-separated list of queue names (`OFFLOAD_QUEUES`), each once, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueList(pub Vec<QueueName>);

impl QueueList {
    /// True when no queue is listed (the stock worker then serves every built-in queue).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `default, documents` as two queue names: blanks around names and empty items are ignored.
fn parse_queue_list(raw: &str) -> Result<QueueList, String> {
    let mut queues: Vec<QueueName> = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let queue = QueueName::parse(name).map_err(|e| e.to_string())?;
        if !queues.contains(&queue) {
            queues.push(queue);
        }
    }
    Ok(QueueList(queues))
}

fn parse_key_name(raw: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err("a key name is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_a_comma_separated_list_of_queue_names() {
        let s =
            Settings::try_parse_from(["offload", "--queues", " documents, default,,documents "])
                .expect("valid list");
        let names: Vec<&str> = s.queues.0.iter().map(QueueName::as_str).collect();
        assert_eq!(names, ["documents", "default"]);
        let empty = Settings::try_parse_from(["offload", "--queues", ""]).expect("empty list");
        assert!(empty.queues.is_empty());
    }

    #[test]
    fn defaults_parse() {
        let s = Settings::try_parse_from(["offload"]).expect("defaults are valid");
        assert_eq!(s.prefetch, 1);
        assert!(s.queues.is_empty(), "every built-in queue by default");
        assert_eq!(s.worker_heartbeat_s, 10);
        assert_eq!(s.queue_type, QueueType::Quorum);
        assert_eq!(s.max_body_bytes, 1024 * 1024);
        assert_eq!(s.max_result_bytes, 1024 * 1024);
        assert_eq!(s.retention(), Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.idempotency_ttl(), Duration::from_secs(24 * 3600));
        assert_eq!(s.auth, AuthMode::On, "secure by default");
        assert!(
            s.http_addr.ip().is_loopback(),
            "listens on loopback by default"
        );
    }

    #[test]
    fn auth_off_is_refused_off_loopback() {
        let mut s = Settings::try_parse_from(["offload", "--auth", "off"]).expect("valid");
        assert!(s.check_auth().is_ok(), "loopback: allowed");
        s.http_addr = "0.0.0.0:8080".parse().expect("addr");
        let err = s.check_auth().expect_err("refused");
        assert!(
            err.contains("OFFLOAD_AUTH=off") && err.contains("keys create"),
            "{err}"
        );
    }

    #[test]
    fn keys_commands_parse() {
        let s = Settings::try_parse_from([
            "offload", "keys", "create", "--name", "ci", "--scope", "submit", "--scope", "read",
        ])
        .expect("valid");
        let Some(Command::Keys {
            action: KeysCommand::Create { name, scopes, .. },
        }) = s.command
        else {
            panic!("not keys create: {:?}", s.command);
        };
        assert_eq!(name, "ci");
        assert_eq!(scopes, vec![Scope::Submit, Scope::Read]);
        for bad in [
            &["offload", "keys", "create", "--name", "ci"][..],
            &[
                "offload", "keys", "create", "--name", "a b", "--scope", "read",
            ],
            &[
                "offload", "keys", "create", "--name", "x", "--scope", "root",
            ],
        ] {
            assert!(Settings::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_metrics_address_is_the_default_unless_set() {
        let unset = Settings::try_parse_from(["offload"]).expect("defaults");
        assert_eq!(unset.metrics_addr, None, "unset means: may fall back");
        assert_eq!(
            unset.metrics_addr_or_default(),
            "0.0.0.0:9090".parse::<SocketAddr>().expect("addr")
        );
        let set = Settings::try_parse_from(["offload", "--metrics-addr", "127.0.0.1:9191"])
            .expect("valid");
        assert_eq!(
            set.metrics_addr_or_default(),
            "127.0.0.1:9191".parse::<SocketAddr>().expect("addr")
        );
    }

    #[test]
    fn related_settings_are_checked_together() {
        let mut s = Settings::try_parse_from(["offload"]).expect("defaults");
        s.retry_cap_ms = 5;
        s.retry_base_ms = 10;
        assert!(
            s.validate()
                .expect_err("cap below base")
                .contains("OFFLOAD_RETRY_CAP_MS")
        );
        let mut s = Settings::try_parse_from(["offload"]).expect("defaults");
        s.max_job_timeout_s = 10;
        assert!(
            s.validate()
                .expect_err("default above max")
                .contains("OFFLOAD_MAX_JOB_TIMEOUT_S")
        );
    }

    #[test]
    fn no_argument_shows_its_environment_value_in_help() {
        use clap::CommandFactory;
        let command = Settings::command();
        let mut checked = 0;
        for arg in command.get_arguments() {
            if arg.get_env().is_some() {
                assert!(
                    arg.is_hide_env_values_set(),
                    "--{} shows its environment value in --help (which may be a secret): add \
                     `hide_env_values = true`",
                    arg.get_id()
                );
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} arguments have an env var");
    }

    #[test]
    fn malformed_urls_are_refused_without_their_password() {
        let cases = [
            (
                "--amqp-url",
                "amqp://user:s3cr3tpw@host:notaport/%2f",
                "OFFLOAD_AMQP_URL",
            ),
            (
                "--amqp-url",
                "http://user:s3cr3tpw@host/",
                "OFFLOAD_AMQP_URL",
            ),
            (
                "--database-url",
                "mysql://user:s3cr3tpw@host/db",
                "OFFLOAD_DATABASE_URL",
            ),
            (
                "--management-url",
                "ftp://user:s3cr3tpw@host",
                "OFFLOAD_MANAGEMENT_URL",
            ),
        ];
        for (flag, value, env) in cases {
            let err = Settings::try_parse_from(["offload", flag, value])
                .expect_err(value)
                .to_string();
            assert!(err.contains(flag) && err.contains(env), "{value}: {err}");
            assert!(!err.contains("s3cr3tpw"), "{value}: {err}");
            assert!(!err.contains(value), "{value}: {err}");
        }
    }

    #[test]
    fn password_files_complete_the_urls() {
        let dir =
            std::env::temp_dir().join(format!("offload-pw-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("pw");
        std::fs::write(&file, "p@ss/w:rd\n").expect("write");
        let mut s = Settings::try_parse_from(["offload"]).expect("defaults");
        s.amqp_url = "amqp://offload@rabbitmq:5672/%2f".to_owned();
        s.amqp_password_file = Some(file.clone());
        s.management_url = "http://offload:old@rabbitmq:15672".to_owned();
        s.management_password_file = Some(file.clone());
        let s = s.read_password_files().expect("completed");
        assert_eq!(
            s.amqp_url,
            "amqp://offload:p%40ss%2Fw%3Ard@rabbitmq:5672/%2f"
        );
        assert_eq!(
            s.management_url,
            "http://offload:p%40ss%2Fw%3Ard@rabbitmq:15672"
        );
        let parsed: lapin::uri::AMQPUri = s.amqp_url.parse().expect("parses");
        assert_eq!(parsed.authority.userinfo.password, "p@ss/w:rd");

        let mut s = Settings::try_parse_from(["offload"]).expect("defaults");
        s.amqp_url = "amqp://rabbitmq:5672/%2f".to_owned();
        s.amqp_password_file = Some(file.clone());
        let err = s.read_password_files().expect_err("no user");
        assert!(
            err.contains("OFFLOAD_AMQP_URL") && !err.contains("p@ss"),
            "{err}"
        );
        let mut s = Settings::try_parse_from(["offload"]).expect("defaults");
        s.amqp_password_file = Some(dir.join("missing"));
        let err = s.read_password_files().expect_err("no file");
        assert!(err.contains("OFFLOAD_AMQP_PASSWORD_FILE"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_artifact_limit_the_broker_cannot_carry_is_refused_naming_both_settings() {
        let s = Settings::try_parse_from(["offload"]).expect("defaults");
        assert_eq!(s.max_artifact_bytes(), 8 * 1024 * 1024);
        let mut s = s.validate().expect("the default fits");
        // A small broker limit (with the body and result limits under it, which it also bounds).
        s.broker_max_message_bytes = 65536;
        s.max_body_bytes = 1024;
        s.max_result_bytes = 1024;
        assert_eq!(
            s.max_artifact_bytes(),
            65536 - 4096,
            "unset, it fits the broker's limit"
        );
        let mut s = s.validate().expect("unset, it always fits");
        s.max_artifact_bytes = Some(s.broker_max_message_bytes);
        let err = s.validate().expect_err("no room for the headers");
        assert!(err.contains("OFFLOAD_MAX_ARTIFACT_BYTES"), "{err}");
        assert!(err.contains("OFFLOAD_BROKER_MAX_MESSAGE_BYTES"), "{err}");
        let mut s = Settings::try_parse_from(["offload"]).expect("defaults");
        s.max_artifact_bytes =
            Some(s.broker_max_message_bytes - crate::artifacts::ARTIFACT_OVERHEAD_BYTES);
        assert!(s.validate().is_ok(), "exactly at the bound");
    }

    #[test]
    fn a_body_limit_the_broker_cannot_carry_is_refused_naming_both_settings() {
        let mut s = Settings::try_parse_from(["offload"]).expect("defaults");
        s.max_body_bytes = 256 * 1024 * 1024;
        let err = s.validate().expect_err("256 MiB over a 16 MiB broker");
        assert!(err.contains("OFFLOAD_MAX_BODY_BYTES"), "{err}");
        assert!(err.contains("OFFLOAD_BROKER_MAX_MESSAGE_BYTES"), "{err}");
        let mut s = Settings::try_parse_from(["offload"]).expect("defaults");
        s.max_body_bytes = s.broker_max_message_bytes - crate::frames::ENVELOPE_OVERHEAD_BYTES;
        assert!(s.validate().is_ok(), "exactly at the bound");
        let mut s = Settings::try_parse_from(["offload"]).expect("defaults");
        s.broker_max_message_bytes = 256 * 1024 * 1024;
        s.max_body_bytes = 200 * 1024 * 1024;
        assert!(
            s.validate().is_ok(),
            "a broker configured for large messages"
        );
    }

    #[test]
    fn the_api_refuses_below_the_queue_length_limit() {
        let mut s = Settings::try_parse_from(["offload"]).expect("defaults");
        assert_eq!(s.queue_full_at(), 90_000);
        s.max_queue_length = 300;
        assert_eq!(s.queue_full_at(), 270);
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let cases: &[(&[&str], &str)] = &[
            (&["offload", "--prefetch", "0"], "--prefetch"),
            (&["offload", "--queues", "default,Bad Name"], "--queues"),
            (&["offload", "--queue-type", "stream"], "--queue-type"),
            (&["offload", "--amqp-url", "http://x"], "--amqp-url"),
            (&["offload", "--queue-prefix", "bad name"], "--queue-prefix"),
            (&["offload", "--http-addr", "nowhere"], "--http-addr"),
            (&["offload", "--metrics-addr", "nowhere"], "--metrics-addr"),
            (
                &["offload", "--max-result-bytes", "10"],
                "--max-result-bytes",
            ),
            (
                &["offload", "--max-result-bytes", "999999999"],
                "--max-result-bytes",
            ),
            (&["offload", "--retention-s", "0"], "--retention-s"),
            (
                &["offload", "--max-queue-length", "0"],
                "--max-queue-length",
            ),
            (
                &["offload", "--broker-max-message-bytes", "100"],
                "--broker-max-message-bytes",
            ),
            (
                &["offload", "--worker-heartbeat-s", "301"],
                "--worker-heartbeat-s",
            ),
            (
                &["offload", "--idempotency-ttl-s", "0"],
                "--idempotency-ttl-s",
            ),
        ];
        for (args, flag) in cases {
            let err = Settings::try_parse_from(*args).expect_err("must be refused");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }
}
