//! The dashboard's page times with a large store: seeds `--jobs` jobs (default a million, spread
//! over 30 days, of five kinds, eight workers and every status) into a fresh store migrated by
//! the real `offload-api`, starts the real API on it, and times each dashboard page over HTTP
//! (`--samples` requests each, after one warm-up), filtered every way the jobs page offers.
//!
//! Usage: `cargo run --release -p offload-bench --bin offload-bench-dashboard -- [--jobs N]
//! [--database-url sqlite:///path.db | postgres://…] [--samples N]`. Needs RabbitMQ (the API
//! connects to it at start), as every run path does.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use clap::Parser;
use serde_json::Value;
use sqlx::{Connection, PgConnection, SqliteConnection};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

#[derive(Debug, Parser)]
#[command(about = "Times the dashboard's pages with a large job store")]
struct Args {
    /// Jobs to seed.
    #[arg(long, default_value_t = 1_000_000)]
    jobs: u64,
    /// The store: a SQLite file (default: a fresh one in a temporary directory) or an empty
    /// PostgreSQL database (its `public` schema is dropped and made again).
    #[arg(long)]
    database_url: Option<String>,
    /// Timed requests per page.
    #[arg(long, default_value_t = 20)]
    samples: usize,
}

const KINDS: [&str; 5] = [
    "sleep",
    "noop",
    "pdf.render",
    "image.thumbnail",
    "http.request",
];

/// Status of the `i`th job: mostly succeeded, some of each other status.
fn status_of(i: u64) -> &'static str {
    match i % 100 {
        0..=1 => "dead",
        2..=4 => "failed",
        5 => "cancelled",
        6 => "queued",
        7 => "retrying",
        _ => "succeeded",
    }
}

type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    let args = Args::parse();
    tokio::runtime::Runtime::new()?.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Failure> {
    let dir = std::env::temp_dir().join(format!("offload-bench-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("jobs.db").display()));
    let postgres = url.starts_with("postgres");
    if postgres {
        let mut conn = PgConnection::connect(&url).await?;
        sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            .execute(&mut conn)
            .await?;
    }
    let api_bin = sibling("offload-api")?;
    // `keys create` migrates the store and makes the admin key the requests send.
    let out = Command::new(&api_bin)
        .args([
            "keys",
            "create",
            "--name",
            "bench-dashboard",
            "--scope",
            "admin",
        ])
        .env("OFFLOAD_DATABASE_URL", &url)
        .stderr(Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!("offload-api keys create failed on {url}").into());
    }
    let token = String::from_utf8(out.stdout)?.trim().to_owned();

    let started = Instant::now();
    if postgres {
        seed_postgres(&url, args.jobs).await?;
    } else {
        seed_sqlite(&url, args.jobs).await?;
    }
    println!(
        "seeded {} jobs into {} in {:.1} s",
        args.jobs,
        if postgres { "PostgreSQL" } else { "SQLite" },
        started.elapsed().as_secs_f64()
    );

    let (mut api, base) = start_api(&api_bin, &url).await?;
    let client = reqwest::Client::new();
    let now = time::OffsetDateTime::now_utc();
    let day = |d: i64| {
        (now - time::Duration::days(d))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
            .replace(':', "%3A")
            .replace('+', "%2B")
    };
    let mut pages: Vec<(String, String)> = vec![
        ("jobs, no filter".into(), "/ui/jobs".into()),
        ("status=dead".into(), "/ui/jobs?status=dead".into()),
        ("status=queued".into(), "/ui/jobs?status=queued".into()),
        ("kind=pdf.render".into(), "/ui/jobs?kind=pdf.render".into()),
        (
            "queue=default (2 kinds)".into(),
            "/ui/jobs?queue=default".into(),
        ),
        ("worker=w-3".into(), "/ui/jobs?worker=w-3".into()),
        (
            "status=failed&kind=sleep (matches none)".into(),
            "/ui/jobs?status=failed&kind=sleep".into(),
        ),
        (
            "one day, 10 days ago".into(),
            format!("/ui/jobs?from={}&to={}", day(10), day(9)),
        ),
        (
            "status=dead, one day".into(),
            format!("/ui/jobs?status=dead&from={}&to={}", day(10), day(9)),
        ),
        ("search text, common".into(), "/ui/jobs?q=user-42".into()),
        (
            "search text, one job".into(),
            "/ui/jobs?q=%22n%22%3A777777%7D".into(),
        ),
        (
            "search text, no match".into(),
            "/ui/jobs?q=nobody-at-all".into(),
        ),
        (
            "search text, no match, one day".into(),
            format!("/ui/jobs?q=nobody-at-all&from={}&to={}", day(10), day(9)),
        ),
        ("dead letters".into(), "/ui/dead".into()),
        (
            "overview (live section)".into(),
            "/ui/live?fragment=1".into(),
        ),
    ];
    if postgres {
        pages.push((
            "JSON path, one job".into(),
            "/ui/jobs?q=%24.n%20%3F%20(%40%20%3D%3D%20777777)".into(),
        ));
        pages.push((
            "JSON path, no match, one day".into(),
            format!(
                "/ui/jobs?q=%24.n%20%3F%20(%40%20%3D%3D%20-1)&from={}&to={}",
                day(10),
                day(9)
            ),
        ));
    }
    // A deep page: follow the cursor 100 pages down the unfiltered list.
    let deep = deep_cursor(&client, &base, &token, 100).await?;
    pages.push(("jobs, page 101".into(), format!("/ui/jobs?cursor={deep}")));

    println!("\n| page | p50 ms | p95 ms | max ms | jobs shown |");
    println!("|---|---:|---:|---:|---:|");
    for (name, path) in &pages {
        let mut times = Vec::with_capacity(args.samples);
        let mut rows = 0;
        for i in 0..=args.samples {
            let t = Instant::now();
            let response = client
                .get(format!("{base}{path}"))
                .bearer_auth(&token)
                .send()
                .await?;
            let status = response.status();
            let body = response.text().await?;
            if !status.is_success() {
                return Err(format!("GET {path} answered {status}: {body}").into());
            }
            // The first is a warm-up.
            if i > 0 {
                times.push(t.elapsed());
            }
            rows = body.matches("<tr><td><a href=\"/jobs/").count();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {rows} |",
            ms(at(0.5)),
            ms(at(0.95)),
            ms(times[times.len() - 1]),
        );
    }
    let _ = api.kill().await;
    let amqp = std::env::var("OFFLOAD_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    offload_bench::raw::delete_topology(&amqp, &prefix()).await;
    if !postgres {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// The queue prefix of this run's API.
fn prefix() -> String {
    format!("bench-dash-{}", std::process::id())
}

/// `offload-api` (or another binary) beside this executable.
fn sibling(name: &str) -> Result<PathBuf, Failure> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.is_file() {
        return Err(format!(
            "{} is missing: build it first (cargo build --release -p offload-api)",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// Starts the API on `url` (any free port, a queue prefix of its own); its base URL.
async fn start_api(bin: &PathBuf, url: &str) -> Result<(Child, String), Failure> {
    let mut child = Command::new(bin)
        .env("OFFLOAD_DATABASE_URL", url)
        .env("OFFLOAD_HTTP_ADDR", "127.0.0.1:0")
        .env(
            "OFFLOAD_QUEUE_PREFIX",
            format!("bench-dash-{}", std::process::id()),
        )
        .env("OFFLOAD_LOG_FORMAT", "json")
        // The seeded jobs finished up to 30 days ago: kept for the whole run.
        .env("OFFLOAD_RETENTION_S", (400 * 86_400).to_string())
        .stdout(Stdio::null())
        // Its log, where it says it listens.
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let log = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(log).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(line) = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await??
        else {
            break;
        };
        let parsed: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if parsed["message"] == "listening" {
            let addr = parsed["addr"]
                .as_str()
                .ok_or("listening without addr")?
                .to_owned();
            // Keep reading its output so it never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((child, format!("http://{addr}")));
        }
    }
    Err("the API did not start within 60 s (is RabbitMQ running? scripts/services.sh)".into())
}

/// The cursor `pages` pages down the unfiltered jobs list.
async fn deep_cursor(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    pages: usize,
) -> Result<String, Failure> {
    let mut cursor = String::new();
    for _ in 0..pages {
        let path = if cursor.is_empty() {
            "/jobs?limit=50".to_owned()
        } else {
            format!("/jobs?limit=50&cursor={cursor}")
        };
        let page: Value = client
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        cursor = page["next_cursor"]
            .as_str()
            .ok_or("no next page")?
            .to_owned();
    }
    Ok(cursor)
}

/// One seeded job's columns.
struct Seed {
    id: uuid::Uuid,
    kind: &'static str,
    status: &'static str,
    worker: String,
    submitted_us: i64,
    payload: String,
    result: Option<String>,
    error: Option<String>,
}

/// The `i`th of `n` jobs, submitted in order over the 30 days before now.
fn seed(i: u64, n: u64, now_us: i64) -> Seed {
    let span_us: i64 = 30 * 86_400 * 1_000_000;
    let submitted_us = now_us - span_us + (span_us / n.max(1) as i64) * i as i64;
    let ms = u64::try_from(submitted_us / 1000).unwrap_or(0);
    let ts =
        uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    let status = status_of(i);
    Seed {
        id: uuid::Uuid::new_v7(ts),
        kind: KINDS[(i % 5) as usize],
        status,
        worker: format!("w-{}", i % 8),
        submitted_us,
        payload: format!("{{\"user\":\"user-{}\",\"n\":{i}}}", i % 10_000),
        result: (status == "succeeded").then(|| format!("{{\"ok\":true,\"n\":{i}}}")),
        error: matches!(status, "dead" | "failed").then(|| {
            format!(
                "permanent error: attempt 1 of job {i} failed: upstream answered {}",
                500 + i % 4
            )
        }),
    }
}

/// Rows per insert statement.
const CHUNK: u64 = 500;

async fn seed_sqlite(url: &str, n: u64) -> Result<(), Failure> {
    let mut conn = SqliteConnection::connect(url).await?;
    sqlx::raw_sql("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF")
        .execute(&mut conn)
        .await?;
    let now_us = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
    let mut tx = conn.begin().await?;
    let mut i = 0;
    while i < n {
        let end = (i + CHUNK).min(n);
        let rows = (i..end)
            .map(|_| "(?,?,?,0,1,1,?,?,?,?,?,?,?,?,0,1)")
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, worker, submitted_at, \
             started_at, finished_at, payload, result, error, timeout_ms, budget, runs) VALUES {rows}"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for j in i..end {
            let s = seed(j, n, now_us);
            let finished = !matches!(s.status, "queued" | "retrying");
            q = q
                .bind(s.id.to_string())
                .bind(s.kind)
                .bind(s.status)
                .bind(s.worker)
                .bind(s.submitted_us)
                .bind(finished.then_some(s.submitted_us + 1000))
                .bind(finished.then_some(s.submitted_us + 1000 + (j % 900) as i64 * 1000))
                .bind(s.payload)
                .bind(s.result)
                .bind(s.error)
                .bind(300_000_i64);
        }
        q.execute(&mut *tx).await?;
        i = end;
    }
    tx.commit().await?;
    sqlx::raw_sql("ANALYZE").execute(&mut conn).await?;
    Ok(())
}

async fn seed_postgres(url: &str, n: u64) -> Result<(), Failure> {
    let mut conn = PgConnection::connect(url).await?;
    let now_us = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
    let at = |us: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    let mut tx = conn.begin().await?;
    let mut i = 0;
    while i < n {
        let end = (i + CHUNK).min(n);
        let mut p = 0;
        let rows = (i..end)
            .map(|_| {
                let r = format!(
                    "(${},${},${},0,1,1,${},${},${},${},${},${},${},300000,0,1)",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7,
                    p + 8,
                    p + 9,
                    p + 10
                );
                p += 10;
                r
            })
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, worker, submitted_at, \
             started_at, finished_at, payload, result, error, timeout_ms, budget, runs) VALUES {rows}"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for j in i..end {
            let s = seed(j, n, now_us);
            let finished = !matches!(s.status, "queued" | "retrying");
            q = q
                .bind(s.id)
                .bind(s.kind)
                .bind(s.status)
                .bind(s.worker)
                .bind(at(s.submitted_us))
                .bind(finished.then(|| at(s.submitted_us + 1000)))
                .bind(finished.then(|| at(s.submitted_us + 1000 + (j % 900) as i64 * 1000)))
                .bind(s.payload)
                .bind(s.result)
                .bind(s.error);
        }
        q.execute(&mut *tx).await?;
        i = end;
    }
    tx.commit().await?;
    sqlx::raw_sql("ANALYZE jobs").execute(&mut conn).await?;
    Ok(())
}
