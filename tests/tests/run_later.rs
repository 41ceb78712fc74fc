//! Jobs to run later (`run_at`, `delay_s`) against the real broker, store, API and worker: a
//! scheduled job waits in the store (not the broker), is visible and cancellable, starts close
//! to its time, survives an API restart and a broker restart, and two API replicas on
//! PostgreSQL publish each scheduled job once.

use std::time::Duration;

use futures_util::future::join_all;
use offload_tests::{
    ApiProcess, TestEnv, WorkerProcess, fault_broker, metric_sum, poll, postgres::PgSchema,
    timestamp,
};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

fn id(job: &Value) -> String {
    job["id"].as_str().expect("id").to_owned()
}

/// Seconds from `run_at` to `started_at` of a finished job (negative if it started early).
fn start_delay(job: &Value) -> f64 {
    (timestamp(job, "started_at") - timestamp(job, "run_at")).as_seconds_f64()
}

/// Waits, polling the clock, until `t` has passed.
async fn until_past(t: OffsetDateTime) {
    let left = t - OffsetDateTime::now_utc();
    let within = Duration::try_from(left).unwrap_or_default() + Duration::from_secs(5);
    poll(within, "the clock to pass a job's run_at", || async {
        (OffsetDateTime::now_utc() > t).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_delayed_job_waits_outside_the_broker_then_starts_close_to_its_time() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "later-w", 1, &[]).await;

    // Bad requests are 422s, saying why.
    for (body, says) in [
        (
            json!({"kind": "noop", "delay_s": 5, "run_at": "2030-01-01T00:00:00Z"}),
            "both",
        ),
        (json!({"kind": "noop", "run_at": "tomorrow"}), "RFC 3339"),
        (json!({"kind": "noop", "delay_s": 40_000_000}), "days"),
        (json!({"kind": "noop", "delay_s": -1}), "whole number"),
    ] {
        let (status, problem) = api.post_job(&body).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap_or("").contains(says),
            "{body}: {problem}"
        );
    }

    // Five jobs, a third of a second apart, by delay_s and by run_at in another time zone.
    let soon = OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let mut jobs = vec![api.submit(json!({"kind": "noop", "delay_s": 2})).await];
    for i in 1..5i64 {
        let at = (soon + time::Duration::milliseconds(333 * i))
            .to_offset(time::UtcOffset::from_hms(5, 30, 0).expect("offset"));
        let body = json!({"kind": "noop", "run_at": at.format(&Rfc3339).expect("format")});
        jobs.push(api.submit(body).await);
    }
    for job in &jobs {
        assert_eq!(job["status"], "scheduled", "{job}");
        assert!(
            timestamp(job, "run_at") > OffsetDateTime::now_utc(),
            "{job}"
        );
        assert!(
            job["run_at"].as_str().unwrap_or("").ends_with('Z'),
            "in UTC: {job}"
        );
    }
    // Visible and listed while waiting, and not in the broker.
    let first = api.job(&id(&jobs[0])).await;
    assert_eq!(first["status"], "scheduled", "{first}");
    assert_eq!(first["run_at"], jobs[0]["run_at"]);
    let listed = api.all_jobs("scheduled").await;
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert_eq!(env.ready_count(&env.names.jobs_queue).await, 0);
    assert_eq!(worker.settled(&[]).await, 0.0);

    let mut delays = Vec::new();
    for job in &jobs {
        let done = api
            .wait_for_status(&id(job), "succeeded", Duration::from_secs(30))
            .await;
        assert_eq!(done["runs"], 1, "{done}");
        delays.push(start_delay(&done));
    }
    println!("run_at to started_at, seconds: {delays:?}");
    assert!(
        delays.iter().all(|d| *d >= 0.0),
        "no job starts before its time: {delays:?}"
    );
    let mut sorted = delays.clone();
    sorted.sort_by(f64::total_cmp);
    assert!(
        sorted[2] < 1.0,
        "the median job starts within a second of its time: {delays:?}"
    );
    assert!(
        sorted[4] < 3.0,
        "every job starts within 3 s of its time: {delays:?}"
    );
    let metrics = api.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "offload_jobs_scheduled_total", &[]),
        5.0
    );
    assert_eq!(
        metric_sum(&metrics, "offload_scheduled_jobs_published_total", &[]),
        5.0
    );

    api.stop().await;
    drop(worker);
    env.cleanup().await;
}

#[tokio::test]
async fn a_scheduled_job_survives_an_api_restart_and_a_cancelled_one_never_runs() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "later-r", 1, &[]).await;
    let kept = api.submit(json!({"kind": "noop", "delay_s": 3})).await;
    let doomed = api.submit(json!({"kind": "noop", "delay_s": 3})).await;
    let response = api
        .http
        .post(api.url(&format!("/jobs/{}/cancel", id(&doomed))))
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), 200);
    let cancelled: Value = response.json().await.expect("job");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    // No API runs when the jobs fall due; the next one to start publishes what is due.
    api.stop().await;
    until_past(timestamp(&kept, "run_at") + time::Duration::milliseconds(500)).await;
    let api = ApiProcess::start(&env, &[]).await;
    let done = api
        .wait_for_status(&id(&kept), "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(done["runs"], 1, "{done}");
    // Both fell due together: had the cancelled one been published it would have run by now.
    let job = api.job(&id(&doomed)).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(job["runs"], 0, "{job}");
    assert_eq!(worker.settled(&[]).await, 1.0);

    api.stop().await;
    drop(worker);
    env.cleanup().await;
}

#[tokio::test]
async fn a_scheduled_job_falling_due_while_the_broker_is_down_runs_once_it_is_back() {
    fault_broker("start").await;
    let url = fault_broker("url").await;
    let env = TestEnv::on(&url).await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "later-b", 1, &[]).await;
    // Stopped first, so the job cannot be published before its broker is down: a job to run
    // later needs only the store to be accepted.
    fault_broker("stop").await;
    let job = api.submit(json!({"kind": "noop", "delay_s": 2})).await;
    until_past(timestamp(&job, "run_at") + time::Duration::seconds(1)).await;
    assert_eq!(api.job(&id(&job)).await["status"], "scheduled");
    fault_broker("start").await;
    let done = api
        .wait_for_status(&id(&job), "succeeded", Duration::from_secs(60))
        .await;
    assert_eq!(done["runs"], 1, "{done}");

    api.stop().await;
    drop(worker);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_replicas_on_postgres_publish_each_scheduled_job_once() {
    const JOBS: usize = 200;
    let env = TestEnv::new().await;
    let schema = PgSchema::create().await;
    let db = [("OFFLOAD_DATABASE_URL", schema.url.as_str())];
    let (one, two) = tokio::join!(ApiProcess::start(&env, &db), ApiProcess::start(&env, &db));
    let worker = WorkerProcess::start(&env, "later-pg", 20, &[]).await;

    // All due at the same moment, half submitted through each replica.
    let at = (OffsetDateTime::now_utc() + time::Duration::seconds(4))
        .format(&Rfc3339)
        .expect("format");
    let batch = |n: usize| json!({"jobs": (0..n).map(|_| json!({"kind": "noop", "run_at": at})).collect::<Vec<_>>()});
    let answers = join_all([&one, &two].map(|api| {
        let body = batch(JOBS / 2);
        async move {
            let response = api
                .http
                .post(api.url("/jobs/batch"))
                .json(&body)
                .send()
                .await
                .expect("batch");
            assert_eq!(response.status(), 202);
            response.json::<Value>().await.expect("jobs")
        }
    }))
    .await;
    let ids: Vec<String> = answers
        .iter()
        .flat_map(|a| a["jobs"].as_array().expect("jobs").iter().map(id))
        .collect();
    assert_eq!(ids.len(), JOBS);
    assert_eq!(one.all_jobs("scheduled").await.len(), JOBS);

    let succeeded = poll(
        Duration::from_secs(60),
        "every scheduled job to succeed",
        || async {
            let done = one.all_jobs("succeeded").await;
            (done.len() == JOBS).then_some(done)
        },
    )
    .await;
    assert!(
        succeeded.iter().all(|j| j["runs"] == 1),
        "every job ran once"
    );
    // Each was published once: the worker settled exactly one message per job, and the
    // replicas' counts of what they published add up to the jobs.
    assert_eq!(worker.settled(&[]).await, JOBS as f64);
    let published = metric_sum(
        &one.metrics().await,
        "offload_scheduled_jobs_published_total",
        &[],
    ) + metric_sum(
        &two.metrics().await,
        "offload_scheduled_jobs_published_total",
        &[],
    );
    assert_eq!(published, JOBS as f64);
    let delays: Vec<f64> = succeeded.iter().map(start_delay).collect();
    let worst = delays.iter().copied().fold(0.0, f64::max);
    println!(
        "{JOBS} jobs due at once on two replicas: the last started {worst:.3} s after its time"
    );

    drop((one, two, worker));
    schema.remove().await;
    env.cleanup().await;
}
