//! Cancelling jobs against the real broker, API and workers: a queued job never runs, a running
//! `sleep` stops early and its worker serves on, a job whose worker is killed as it is cancelled
//! never starts again, finished jobs are 409, and a bulk cancel by kind and status.

use std::time::Duration;

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll};
use serde_json::{Value, json};

/// `POST path` with a JSON body; status and JSON answer.
async fn post(api: &ApiProcess, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = api.http.post(api.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn cancel(api: &ApiProcess, id: &str) -> (u16, Value) {
    post(api, &format!("/jobs/{id}/cancel"), None).await
}

fn id(job: &Value) -> String {
    job["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_queued_job_cancelled_never_runs_and_a_finished_one_is_409() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "cancel-q", 1, &[]).await;
    // The worker (prefetch 1) is busy with the blocker; the next two wait in the queue.
    let blocker = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 1500}}))
        .await;
    api.wait_for_status(&id(&blocker), "running", Duration::from_secs(20))
        .await;
    let doomed = api.submit(json!({"kind": "noop"})).await;
    let kept = api.submit(json!({"kind": "noop"})).await;

    let (status, job) = cancel(&api, &id(&doomed)).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(
        job["error"].as_str().unwrap_or("").contains("cancelled by"),
        "who cancelled it: {job}"
    );

    // The job after it runs, so the cancelled one was taken off the queue and acked unrun.
    api.wait_for_status(&id(&kept), "succeeded", Duration::from_secs(30))
        .await;
    let settled = poll(
        Duration::from_secs(20),
        "the worker to settle the cancel",
        || async {
            let n = worker.settled(&["outcome=\"cancelled\""]).await;
            (n >= 1.0).then_some(n)
        },
    )
    .await;
    assert_eq!(settled, 1.0);
    let job = api.job(&id(&doomed)).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(job["runs"], 0, "a cancelled queued job never starts: {job}");
    assert!(job["started_at"].is_null(), "{job}");

    // Finished jobs, and a second cancel, are 409; unknown ones 404.
    let (status, problem) = cancel(&api, &id(&kept)).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("succeeded"),
        "{problem}"
    );
    assert_eq!(cancel(&api, &id(&doomed)).await.0, 409);
    assert_eq!(
        cancel(&api, "0193e0f4-0000-7000-8000-000000000000").await.0,
        404
    );
    assert_eq!(cancel(&api, "not-a-job").await.0, 404);

    api.stop().await;
    drop(worker);
    env.cleanup().await;
}

#[tokio::test]
async fn a_running_sleep_stops_early_and_its_worker_serves_on() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    // `sleep` ignores its context: it is dropped when the grace period (1 s here) ends.
    let worker =
        WorkerProcess::start(&env, "cancel-r", 1, &[("OFFLOAD_CANCEL_GRACE_MS", "1000")]).await;
    let long = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 60_000}, "timeout_s": 120}))
        .await;
    api.wait_for_status(&id(&long), "running", Duration::from_secs(20))
        .await;
    let asked = std::time::Instant::now();
    let (status, job) = cancel(&api, &id(&long)).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "cancelled");

    // The worker stops it and is free again: the next job runs on it well before 60 s.
    let next = api.submit(json!({"kind": "noop"})).await;
    let done = api
        .wait_for_status(&id(&next), "succeeded", Duration::from_secs(20))
        .await;
    let freed_after = asked.elapsed();
    assert_eq!(done["worker"], worker.name.as_str());
    assert!(
        freed_after < Duration::from_secs(15),
        "freed after {freed_after:?}"
    );
    println!("a cancelled 60 s sleep freed its worker after {freed_after:?} (grace 1 s)");
    let job = api.job(&id(&long)).await;
    assert_eq!(
        job["status"], "cancelled",
        "a late event never revives it: {job}"
    );
    assert_eq!(job["runs"], 1, "{job}");
    assert!(job["result"].is_null(), "{job}");

    api.stop().await;
    drop(worker);
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_cancelled_as_its_worker_is_killed_never_runs_again() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let doomed = WorkerProcess::start(&env, "cancel-k1", 1, &[]).await;
    let long = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 60_000}, "timeout_s": 120}))
        .await;
    let running = api
        .wait_for_status(&id(&long), "running", Duration::from_secs(20))
        .await;
    assert_eq!(running["worker"], doomed.name.as_str());
    // The survivor is idle and consuming: the broker redelivers the job to it at once.
    let survivor = WorkerProcess::start(&env, "cancel-k2", 1, &[]).await;

    let long_id = id(&long);
    let ((), (status, job)) = tokio::join!(doomed.kill9(), cancel(&api, &long_id));
    assert_eq!(status, 200, "{job}");

    // The survivor took the redelivery and acked it unrun.
    poll(
        Duration::from_secs(20),
        "the survivor to settle the redelivered cancelled job",
        || async { (survivor.settled(&["outcome=\"cancelled\""]).await >= 1.0).then_some(()) },
    )
    .await;
    // A job submitted after it runs on the survivor, so the redelivery is behind us.
    let next = api.submit(json!({"kind": "noop"})).await;
    api.wait_for_status(&id(&next), "succeeded", Duration::from_secs(20))
        .await;
    let job = api.job(&id(&long)).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(
        job["runs"], 1,
        "started once, by the killed worker, never again: {job}"
    );
    assert_eq!(job["worker"], "cancel-k1", "{job}");

    api.stop().await;
    drop(survivor);
    env.cleanup().await;
}

#[tokio::test]
async fn a_bulk_cancel_takes_every_waiting_job_of_a_kind() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    // No worker yet: every job waits in the queue.
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(id(&api.submit(json!({"kind": "noop"})).await));
    }
    let other = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 1}}))
        .await;

    let (status, problem) = post(&api, "/jobs/cancel", Some(json!({}))).await;
    assert_eq!(status, 422, "no filter: {problem}");
    let (status, problem) = post(&api, "/jobs/cancel", Some(json!({"status": "succeeded"}))).await;
    assert_eq!(status, 422, "a final status: {problem}");
    // A queue (or kind) nothing runs on matches no job, like any filter.
    let (status, answer) = post(&api, "/jobs/cancel", Some(json!({"queue": "nowhere"}))).await;
    assert_eq!(
        (status, answer["cancelled"].clone()),
        (200, json!(0)),
        "{answer}"
    );

    let (status, answer) = post(
        &api,
        "/jobs/cancel",
        Some(json!({"kind": "noop", "status": "queued"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["cancelled"], 20, "{answer}");
    assert_eq!(answer["more"], false);
    let mut listed: Vec<String> = answer["job_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    let page = api.get_json("/jobs?status=cancelled&limit=100").await;
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(20));

    // A worker started now acks all twenty unrun and runs the other kind's job.
    let worker = WorkerProcess::start(&env, "cancel-b", 4, &[]).await;
    api.wait_for_status(&id(&other), "succeeded", Duration::from_secs(30))
        .await;
    poll(
        Duration::from_secs(30),
        "all twenty to be settled unrun",
        || async { (worker.settled(&["outcome=\"cancelled\""]).await >= 20.0).then_some(()) },
    )
    .await;
    for job in &ids {
        assert_eq!(api.job(job).await["runs"], 0);
    }

    api.stop().await;
    drop(worker);
    env.cleanup().await;
}
