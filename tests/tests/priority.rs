//! Priorities against the real broker, store, API and worker: a `high` job goes to its queue's
//! high lane and, with prefetch 1, starts before the normal jobs waiting ahead of it, whether
//! it was waiting when the worker started or submitted while the worker drains a backlog; a
//! high job's retry comes back to the high lane.

use std::time::Duration;

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll, timestamp};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// Normal jobs waiting ahead of the first high job.
const BACKLOG: usize = 1000;

fn id(job: &Value) -> String {
    job["id"].as_str().expect("id").to_owned()
}

/// Normal jobs of `jobs` that started after `from` and before `job` did.
fn started_between(jobs: &[Value], from: OffsetDateTime, job: &Value) -> usize {
    let started = timestamp(job, "started_at");
    jobs.iter()
        .filter(|j| j["priority"] == "normal")
        .map(|j| timestamp(j, "started_at"))
        .filter(|t| *t > from && *t < started)
        .count()
}

#[tokio::test]
async fn a_high_job_starts_before_the_normal_jobs_waiting_ahead_of_it() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;

    // A priority that is not one is a 422 naming the choices.
    let (status, problem) = api
        .post_job(&json!({"kind": "noop", "priority": "urgent"}))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("normal, high"),
        "{problem}"
    );

    // A thousand normal jobs, then one high job, all waiting: no worker runs yet.
    let normal: Vec<Value> = (0..BACKLOG)
        .map(|_| json!({"kind": "sleep", "payload": {"ms": 2}}))
        .collect();
    let response = api
        .http
        .post(api.url("/jobs/batch"))
        .json(&json!({ "jobs": normal }))
        .send()
        .await
        .expect("POST /jobs/batch");
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let first_high = api
        .submit(json!({"kind": "noop", "priority": "high"}))
        .await;
    assert_eq!(first_high["priority"], "high", "{first_high}");
    let lane = &env.names.jobs_high_lane;
    poll(
        Duration::from_secs(10),
        "the backlog and the high job to wait in their lanes",
        || async {
            (env.ready_count(&env.names.jobs_queue).await == BACKLOG as u32
                && env.ready_count(lane).await == 1)
                .then_some(())
        },
    )
    .await;

    // One worker, prefetch 1, drains them.
    let worker = WorkerProcess::start(&env, "prio-w", 1, &[]).await;
    let first_high = api
        .wait_for_status(&id(&first_high), "succeeded", Duration::from_secs(30))
        .await;
    // A second high job, submitted while the backlog drains.
    poll(
        Duration::from_secs(60),
        "a hundred normal jobs to finish",
        || async { (api.all_jobs("succeeded").await.len() > 100).then_some(()) },
    )
    .await;
    let second_high = api
        .submit(json!({"kind": "noop", "priority": "high"}))
        .await;
    let second_high = api
        .wait_for_status(&id(&second_high), "succeeded", Duration::from_secs(30))
        .await;
    let done = poll(Duration::from_secs(120), "every job to succeed", || async {
        let done = api.all_jobs("succeeded").await;
        (done.len() == BACKLOG + 2).then_some(done)
    })
    .await;
    assert!(
        env.ready_count(&env.names.jobs_queue).await == 0,
        "nothing left"
    );

    let before_first = started_between(&done, OffsetDateTime::UNIX_EPOCH, &first_high);
    let second_submitted = timestamp(&second_high, "submitted_at");
    let before_second = started_between(&done, second_submitted, &second_high);
    let waiting_at_second = done
        .iter()
        .filter(|j| j["priority"] == "normal")
        .filter(|j| timestamp(j, "started_at") > second_submitted)
        .count();
    println!(
        "prefetch 1, {BACKLOG} normal jobs waiting: normal jobs started before the high job \
         submitted last: {before_first}; before a high job submitted while {waiting_at_second} \
         normal jobs still waited: {before_second}"
    );
    assert!(
        before_first < 100,
        "the high job starts before the next hundred normal ones: {before_first} started first"
    );
    assert!(
        waiting_at_second > 100,
        "the second high job was submitted with a backlog still waiting ({waiting_at_second})"
    );
    assert!(
        before_second < 100,
        "a high job submitted mid-backlog starts before the next hundred: {before_second}"
    );
    assert!(done.iter().all(|j| j["runs"] == 1), "every job ran once");
    drop(worker);
    env.cleanup().await;
}

#[tokio::test]
async fn a_high_jobs_retry_returns_to_the_high_lane() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let mut worker = WorkerProcess::start(&env, "prio-retry-w", 1, &[]).await;
    // Fails its first attempt; the retry waits a second in a delay queue.
    let job = api
        .submit(json!({
            "kind": "sleep",
            "payload": {"ms": 0, "fail_attempts": 1},
            "priority": "high",
        }))
        .await;
    poll(
        Duration::from_secs(20),
        "the first attempt to fail",
        || async { (api.job(&id(&job)).await["status"] == "retrying").then_some(()) },
    )
    .await;
    // With no worker to take it, the retry is seen back in the high lane.
    worker.terminate();
    worker.wait_exit(Duration::from_secs(30)).await;
    poll(
        Duration::from_secs(20),
        "the retry to wait in the high lane",
        || async { (env.ready_count(&env.names.jobs_high_lane).await == 1).then_some(()) },
    )
    .await;
    assert_eq!(env.ready_count(&env.names.jobs_queue).await, 0);
    let _worker = WorkerProcess::start(&env, "prio-retry-w2", 1, &[]).await;
    let done = api
        .wait_for_status(&id(&job), "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(done["priority"], "high", "{done}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_full_normal_backlog_does_not_refuse_high_jobs() {
    let env = TestEnv::new().await;
    // A small limit, and no worker: the normal lane fills up.
    let api = ApiProcess::start(&env, &[("OFFLOAD_MAX_QUEUE_LENGTH", "20")]).await;
    let mut refused = None;
    for i in 0..40 {
        let (status, answer) = api.post_job(&json!({"kind": "noop"})).await;
        if status == 503 {
            refused = Some((i, answer));
            break;
        }
        assert_eq!(status, 202, "{answer}");
    }
    let (accepted, problem) = refused.expect("the normal lane fills up");
    assert!(
        problem["type"]
            .as_str()
            .unwrap_or("")
            .ends_with("queue-full"),
        "{problem}"
    );
    // The high lane is counted on its own.
    let high = api
        .submit(json!({"kind": "noop", "priority": "high"}))
        .await;
    assert_eq!(high["priority"], "high", "{high}");
    println!("the normal lane refused after {accepted} jobs; a high job was still accepted");
    env.cleanup().await;
}
