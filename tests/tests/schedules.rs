//! Cron schedules against the real broker, store, API and worker: bad requests are 422s; a
//! schedule ticking every second makes one job a second, each due on its second; pause, run
//! now, resume and delete do what they say; `overlap: skip` never runs two jobs of a schedule
//! at once; ticks missed while the API was down run once; and two API replicas on PostgreSQL
//! make exactly one job per tick.

use std::time::Duration;

use offload_tests::{
    ApiProcess, TestEnv, WorkerProcess, metric_sum, poll, postgres::PgSchema, timestamp,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// POSTs `body` to `path`; the status and the JSON answer (null if none).
async fn post(api: &ApiProcess, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut request = api.http.post(api.url(path));
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Every job of `kind`, oldest tick first.
async fn jobs_of(api: &ApiProcess, kind: &str) -> Vec<Value> {
    let page = api.get_json(&format!("/jobs?kind={kind}&limit=1000")).await;
    let mut jobs = page["jobs"].as_array().cloned().unwrap_or_default();
    jobs.sort_by_key(|j| timestamp(j, "run_at"));
    jobs
}

/// Waits, polling the clock, until `t` has passed.
async fn until_past(t: OffsetDateTime) {
    let left = Duration::try_from(t - OffsetDateTime::now_utc()).unwrap_or_default();
    poll(
        left + Duration::from_secs(5),
        "the clock to pass a time",
        || async { (OffsetDateTime::now_utc() > t).then_some(()) },
    )
    .await;
}

/// The ticks of `jobs` (their `run_at`) are whole seconds, each one second after the last.
fn assert_one_job_per_second(jobs: &[Value]) {
    let ticks: Vec<OffsetDateTime> = jobs.iter().map(|j| timestamp(j, "run_at")).collect();
    for t in &ticks {
        assert_eq!(t.nanosecond(), 0, "a tick is on its second: {t}");
    }
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            time::Duration::seconds(1),
            "one job per tick, none missed or doubled: {ticks:?}"
        );
    }
}

#[tokio::test]
async fn a_schedule_makes_one_job_per_tick_and_obeys_pause_resume_run_now_and_delete() {
    let env = TestEnv::new().await;
    let mut api = ApiProcess::start(&env, &[]).await;
    let _worker = WorkerProcess::start(&env, "cron-w", 1, &[]).await;

    let every_second = |name: &str| json!({"name": name, "cron": "* * * * * *", "job": {"kind": "noop", "payload": {"from": name}}});
    for (body, says) in [
        (
            json!({"name": "x", "cron": "61 * * * *", "job": {"kind": "noop"}}),
            "cron",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "timezone": "Mars/Base", "job": {"kind": "noop"}}),
            "IANA",
        ),
        (
            json!({"name": "Bad Name", "cron": "* * * * *", "job": {"kind": "noop"}}),
            "name",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "job": {"kind": "noop", "delay_s": 5}}),
            "delay_s",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "job": {"kind": "nope"}}),
            "kind",
        ),
        (
            json!({"name": "x", "cron": "* * * * *", "job": {"kind": "sleep", "payload": {"ms": "x"}}}),
            "payload",
        ),
    ] {
        let (status, problem) = post(&api, "/schedules", Some(&body)).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap_or("").contains(says),
            "{body}: {problem}"
        );
    }
    assert_eq!(api.get_json("/schedules").await["schedules"], json!([]));

    // Every second, in another time zone (the same seconds).
    let mut body = every_second("tick");
    body["timezone"] = json!("Asia/Kolkata");
    let (status, created) = post(&api, "/schedules", Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["paused"], false);
    assert!(timestamp(&created, "next_run_at") > timestamp(&created, "created_at"));
    let (status, _) = post(&api, "/schedules", Some(&body)).await;
    assert_eq!(status, 409, "a second schedule of one name");

    let ticked = poll(Duration::from_secs(20), "four ticks to succeed", || async {
        let jobs = jobs_of(&api, "noop").await;
        (jobs.iter().filter(|j| j["status"] == "succeeded").count() >= 4).then_some(jobs)
    })
    .await;
    let done: Vec<Value> = ticked
        .into_iter()
        .filter(|j| j["status"] == "succeeded")
        .collect();
    assert_one_job_per_second(&done);
    let mut delays: Vec<f64> = done
        .iter()
        .map(|j| (timestamp(j, "started_at") - timestamp(j, "run_at")).as_seconds_f64())
        .collect();
    delays.sort_by(f64::total_cmp);
    println!("tick to start, seconds: {delays:?}");
    assert!(
        delays.iter().all(|d| *d >= 0.0),
        "none starts early: {delays:?}"
    );
    assert!(
        delays[delays.len() / 2] < 1.0,
        "the median starts within a second: {delays:?}"
    );
    let full = api.job(done[0]["id"].as_str().expect("id")).await;
    assert_eq!(full["priority"], "normal", "{full}");

    // Paused: no more ticks; run now still makes one job.
    let (status, paused) = post(&api, "/schedules/tick/pause", None).await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["paused"], true);
    assert!(paused["next_run_at"].is_null(), "{paused}");
    let before = jobs_of(&api, "noop").await.len();
    let (status, ran) = post(&api, "/schedules/tick/run", None).await;
    assert_eq!(status, 202, "{ran}");
    api.wait_for_status(
        ran["id"].as_str().expect("id"),
        "succeeded",
        Duration::from_secs(20),
    )
    .await;
    until_past(OffsetDateTime::now_utc() + time::Duration::milliseconds(2500)).await;
    assert_eq!(
        jobs_of(&api, "noop").await.len(),
        before + 1,
        "paused: only the run-now job was made"
    );
    let schedule = api.get_json("/schedules/tick").await;
    assert_eq!(schedule["last_job_id"], ran["id"], "{schedule}");

    // Resumed: ticks again, from now on (the paused seconds are not made up).
    let resumed_at = OffsetDateTime::now_utc();
    let (status, resumed) = post(&api, "/schedules/tick/resume", None).await;
    assert_eq!(status, 200, "{resumed}");
    poll(
        Duration::from_secs(10),
        "a tick after the resume",
        || async {
            jobs_of(&api, "noop")
                .await
                .iter()
                .any(|j| timestamp(j, "run_at") > resumed_at)
                .then_some(())
        },
    )
    .await;

    // Ticks missed while the API was down run once when it is back.
    post(&api, "/schedules/tick/pause", None).await;
    let mut body = every_second("outage");
    body["job"]["kind"] = json!("sleep");
    body["job"]["payload"] = json!({"ms": 0});
    let (status, _) = post(&api, "/schedules", Some(&body)).await;
    assert_eq!(status, 201);
    poll(
        Duration::from_secs(10),
        "the outage schedule to tick",
        || async { (!jobs_of(&api, "sleep").await.is_empty()).then_some(()) },
    )
    .await;
    api.terminate();
    api.wait_exit(Duration::from_secs(30)).await;
    let down_since = OffsetDateTime::now_utc();
    until_past(down_since + time::Duration::seconds(3)).await;
    let restarted_at = OffsetDateTime::now_utc();
    let api = ApiProcess::start(&env, &[]).await;
    let jobs = poll(
        Duration::from_secs(20),
        "a tick after the restart",
        || async {
            let jobs = jobs_of(&api, "sleep").await;
            jobs.iter()
                .any(|j| timestamp(j, "run_at") > restarted_at)
                .then_some(jobs)
        },
    )
    .await;
    // Made after the restart for a tick before it: the missed ticks' one job.
    let missed: Vec<&Value> = jobs
        .iter()
        .filter(|j| {
            timestamp(j, "submitted_at") >= restarted_at && timestamp(j, "run_at") < restarted_at
        })
        .collect();
    println!(
        "API down for {:.1} s: {} job made for the ticks missed meanwhile",
        (restarted_at - down_since).as_seconds_f64(),
        missed.len()
    );
    assert_eq!(missed.len(), 1, "the missed ticks ran once: {missed:?}");

    // Deleted: gone, its jobs stay.
    let response = api
        .http
        .delete(api.url("/schedules/outage"))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(response.status(), 204);
    let response = api
        .http
        .get(api.url("/schedules/outage"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 404);
    assert!(!jobs_of(&api, "sleep").await.is_empty());
    let metrics = api.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "offload_schedule_ticks_total",
            &["outcome=\"made\""]
        ) >= 1.0
    );
    env.cleanup().await;
}

#[tokio::test]
async fn overlap_skip_never_runs_two_jobs_of_a_schedule_at_once() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    // Prefetch 4: the worker could run several at once; the schedule must not let it.
    let _worker = WorkerProcess::start(&env, "cron-overlap-w", 4, &[]).await;
    let body = json!({
        "name": "slow",
        "cron": "* * * * * *",
        "overlap": "skip",
        "job": {"kind": "sleep", "payload": {"ms": 2500}},
    });
    let (status, created) = post(&api, "/schedules", Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    let jobs = poll(Duration::from_secs(30), "three jobs to finish", || async {
        let jobs = jobs_of(&api, "sleep").await;
        (jobs.iter().filter(|j| j["status"] == "succeeded").count() >= 3).then_some(jobs)
    })
    .await;
    post(&api, "/schedules/slow/pause", None).await;
    let done: Vec<&Value> = jobs.iter().filter(|j| j["status"] == "succeeded").collect();
    for pair in done.windows(2) {
        assert!(
            timestamp(pair[1], "started_at") >= timestamp(pair[0], "finished_at"),
            "the next job started after the previous one finished: {pair:?}"
        );
    }
    let schedule = api.get_json("/schedules/slow").await;
    println!(
        "overlap skip, 2.5 s jobs every second: {} jobs, {} ticks skipped",
        schedule["runs"], schedule["skipped"]
    );
    assert!(schedule["skipped"].as_u64().unwrap_or(0) >= 2, "{schedule}");
    env.cleanup().await;
}

#[tokio::test]
async fn two_api_replicas_on_postgres_make_exactly_one_job_per_tick() {
    let env = TestEnv::new().await;
    let schema = PgSchema::create().await;
    let db = [("OFFLOAD_DATABASE_URL", schema.url.as_str())];
    let (one, two) = tokio::join!(ApiProcess::start(&env, &db), ApiProcess::start(&env, &db));
    let _worker = WorkerProcess::start(&env, "cron-pg-w", 4, &[]).await;
    let body = json!({"name": "both", "cron": "* * * * * *", "job": {"kind": "noop"}});
    let (status, created) = post(&one, "/schedules", Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    // Both replicas see it.
    assert_eq!(two.get_json("/schedules/both").await["name"], "both");
    poll(Duration::from_secs(30), "six ticks to succeed", || async {
        let jobs = jobs_of(&one, "noop").await;
        (jobs.iter().filter(|j| j["status"] == "succeeded").count() >= 6).then_some(())
    })
    .await;
    let (status, _) = post(&two, "/schedules/both/pause", None).await;
    assert_eq!(status, 200);
    let jobs = poll(
        Duration::from_secs(20),
        "every job made to succeed",
        || async {
            let jobs = jobs_of(&one, "noop").await;
            jobs.iter()
                .all(|j| j["status"] == "succeeded")
                .then_some(jobs)
        },
    )
    .await;
    assert_one_job_per_second(&jobs);
    let made: f64 = [&one, &two]
        .iter()
        .map(|api| async {
            metric_sum(
                &api.metrics().await,
                "offload_schedule_ticks_total",
                &["outcome=\"made\""],
            )
        })
        .collect::<futures_util::future::JoinAll<_>>()
        .await
        .into_iter()
        .sum();
    println!(
        "two replicas on PostgreSQL: {} ticks, {} jobs, {made} made by the replicas together",
        jobs.len(),
        jobs.len()
    );
    assert_eq!(made, jobs.len() as f64, "each tick was made by one replica");
    assert_eq!(
        api_runs(&one).await,
        jobs.len() as u64,
        "the schedule counts the jobs it made"
    );
    env.cleanup().await;
}

async fn api_runs(api: &ApiProcess) -> u64 {
    api.get_json("/schedules/both").await["runs"]
        .as_u64()
        .unwrap_or(0)
}
