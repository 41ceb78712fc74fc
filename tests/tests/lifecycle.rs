//! Failures through the front door: retries with back-off, dead letters with reasons, redrive,
//! panics, time limits, the delivery limit, results over the size limit, idempotent submits
//! and listing.

use std::time::Duration;

use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions},
    types::{AMQPValue, ShortString},
};
use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll};
use serde_json::{Value, json};

const DONE_WITHIN: Duration = Duration::from_secs(20);

/// The reason header of the one message in the dead-letter queue.
async fn dead_letter_reason(env: &TestEnv) -> (String, Vec<u8>) {
    let channel = env.broker.create_channel().await.expect("channel");
    let message = poll(
        Duration::from_secs(10),
        "a message in the dead-letter queue",
        || async {
            channel
                .basic_get(
                    env.names.dead_queue.as_str().into(),
                    BasicGetOptions { no_ack: true },
                )
                .await
                .expect("basic.get")
        },
    )
    .await;
    let headers = message
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    let reason = match headers.inner().get("x-offload-reason") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("no reason header: {other:?}"),
    };
    (reason, message.delivery.data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failing_its_first_attempts_is_retried_with_backoff_and_succeeds() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = WorkerProcess::start(&env, "w1", 1, &[]).await;

    let job = api
        .submit(
            json!({"kind": "sleep", "payload": {"ms": 10, "fail_attempts": 2}, "max_attempts": 5}),
        )
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    // The retry waits in a delay queue; the job shows `retrying` meanwhile.
    let retrying = api.wait_for_status(&id, "retrying", DONE_WITHIN).await;
    assert!(
        retrying["error"]
            .as_str()
            .is_some_and(|e| e.contains("attempt 1 failed")),
        "{retrying}"
    );
    let done = api.wait_for_status(&id, "succeeded", DONE_WITHIN).await;
    assert_eq!(done["attempt"], 3, "succeeded at attempt K+1: {done}");
    assert_eq!(done["runs"], 3, "{done}");
    assert!(done["error"].is_null(), "{done}");
    let waited = offload_tests::timestamp(&done, "finished_at")
        - offload_tests::timestamp(&done, "submitted_at");
    // Back-off 200 ms then 400 ms, each jittered down to half at most: at least 300 ms in all.
    assert!(
        waited >= time::Duration::milliseconds(300),
        "retries did not wait: {waited}"
    );
    println!("fail_attempts=2: succeeded at attempt 3 after {waited}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_attempts_end_dead_in_the_dead_letter_queue_and_can_be_redriven() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = WorkerProcess::start(&env, "w1", 1, &[]).await;

    let job = api
        .submit(json!({"kind": "sleep", "payload": {"fail_attempts": 3}, "max_attempts": 3}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let dead = api.wait_for_status(&id, "dead", DONE_WITHIN).await;
    assert_eq!(dead["attempt"], 3, "{dead}");
    let error = dead["error"].as_str().expect("error").to_owned();
    assert!(error.contains("failed all 3 attempts"), "{error}");
    let (reason, body) = dead_letter_reason(&env).await;
    assert_eq!(reason, error);
    let envelope: Value = serde_json::from_slice(&body).expect("the dead letter is the job");
    assert_eq!(envelope["id"], id.as_str());

    let listed: Value = api
        .http
        .get(api.url("/jobs?status=dead"))
        .send()
        .await
        .expect("GET /jobs")
        .json()
        .await
        .expect("JSON");
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "{listed}");

    // Redrive: the same id, the next attempt, and as many attempts again.
    let response = api
        .http
        .post(api.url(&format!("/jobs/{id}/retry")))
        .send()
        .await
        .expect("retry");
    assert_eq!(response.status(), 202);
    // The answer shows the job as the store has it once the publish was confirmed: a worker
    // may already have started (or finished) the new attempt by then.
    let queued: Value = response.json().await.expect("JSON");
    assert_eq!(queued["attempt"].as_u64(), Some(4), "{queued}");
    assert!(
        matches!(
            queued["status"].as_str(),
            Some("queued" | "running" | "succeeded")
        ),
        "{queued}"
    );
    let done = api.wait_for_status(&id, "succeeded", DONE_WITHIN).await;
    assert_eq!(done["attempt"], 4);
    let again = api
        .http
        .post(api.url(&format!("/jobs/{id}/retry")))
        .send()
        .await
        .expect("retry");
    assert_eq!(again.status(), 409, "only dead jobs can be retried");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_is_dead_at_once_with_its_reason() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = WorkerProcess::start(&env, "w1", 1, &[]).await;

    let job = api
        .submit(json!({"kind": "sleep", "payload": {"fail": "permanent"}}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let dead = api.wait_for_status(&id, "dead", DONE_WITHIN).await;
    assert_eq!(dead["attempt"], 1, "{dead}");
    assert_eq!(dead["runs"], 1, "{dead}");
    assert!(
        dead["error"]
            .as_str()
            .is_some_and(|e| e.contains("permanent error")),
        "{dead}"
    );
    let (reason, _) = dead_letter_reason(&env).await;
    assert!(reason.contains("permanent error"), "{reason}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_workers_limit_is_not_sent_and_the_job_is_dead_naming_the_setting() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker =
        WorkerProcess::start(&env, "w1", 1, &[("OFFLOAD_MAX_RESULT_BYTES", "1024")]).await;

    // `noop` returns its payload: this one's result is 2,011 bytes of JSON.
    let big = json!({"kind": "noop", "payload": {"blob": "x".repeat(2000)}});
    let small = json!({"kind": "noop", "payload": {"blob": "x".repeat(500)}});
    let sleep = json!({"kind": "sleep", "payload": {"ms": 10}});
    let mut normal = Vec::new();
    for body in [small.clone(), sleep.clone()] {
        normal.push(
            api.submit(body).await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let job = api.submit(big).await;
    let id = job["id"].as_str().expect("id").to_owned();
    for body in [small, sleep] {
        normal.push(
            api.submit(body).await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }

    let dead = api.wait_for_status(&id, "dead", DONE_WITHIN).await;
    let expected = "permanent error: result is 2011 bytes, above OFFLOAD_MAX_RESULT_BYTES (1024)";
    assert_eq!(dead["error"], expected, "{dead}");
    assert!(dead["result"].is_null(), "the result was not sent: {dead}");
    assert_eq!(dead["attempt"], 1, "not retried: {dead}");
    let (reason, _) = dead_letter_reason(&env).await;
    assert_eq!(reason, expected);
    for id in &normal {
        let done = api.wait_for_status(id, "succeeded", DONE_WITHIN).await;
        assert!(!done["result"].is_null(), "{done}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_work_queue_is_dead_lettered_with_a_reason_and_the_worker_stays_up() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "w1", 1, &[]).await;

    let channel = env.broker.create_channel().await.expect("channel");
    for body in [
        &b"not json at all"[..],
        br#"{"v":1,"id":"nope"}"#,
        br#"{"v":9}"#,
    ] {
        channel
            .basic_publish(
                env.names.jobs_exchange.as_str().into(),
                ShortString::from("noop"),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .expect("publish garbage");
        let (reason, dead_body) = dead_letter_reason(&env).await;
        assert!(reason.starts_with("unreadable message"), "{reason}");
        assert_eq!(dead_body, body, "the dead letter keeps the original bytes");
    }
    // The same worker still serves.
    let job = api
        .submit(json!({"kind": "noop", "payload": {"after": "garbage"}}))
        .await;
    let done = api
        .wait_for_status(job["id"].as_str().expect("id"), "succeeded", DONE_WITHIN)
        .await;
    assert_eq!(done["worker"], worker.name.as_str());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_failed_attempt_and_the_worker_keeps_serving() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "w1", 1, &[]).await;

    let job = api
        .submit(json!({"kind": "sleep", "payload": {"panic": true}, "max_attempts": 2}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let dead = api.wait_for_status(&id, "dead", DONE_WITHIN).await;
    assert_eq!(
        dead["attempt"], 2,
        "a panic is a failed attempt, retried: {dead}"
    );
    assert!(
        dead["error"]
            .as_str()
            .is_some_and(|e| e.contains("panicked")),
        "{dead}"
    );
    let next = api.submit(json!({"kind": "noop"})).await;
    let done = api
        .wait_for_status(next["id"].as_str().expect("id"), "succeeded", DONE_WITHIN)
        .await;
    assert_eq!(
        done["worker"],
        worker.name.as_str(),
        "the same worker process still serves"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_its_timeout_is_cancelled_and_retried() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = WorkerProcess::start(&env, "w1", 1, &[]).await;

    let job = api
        .submit(
            json!({"kind": "sleep", "payload": {"ms": 60000}, "timeout_s": 1, "max_attempts": 2}),
        )
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let retrying = api.wait_for_status(&id, "retrying", DONE_WITHIN).await;
    assert!(
        retrying["error"]
            .as_str()
            .is_some_and(|e| e.contains("timed out after 1000 ms")),
        "{retrying}"
    );
    let dead = api.wait_for_status(&id, "dead", DONE_WITHIN).await;
    assert_eq!(dead["attempt"], 2, "{dead}");
    let took = offload_tests::timestamp(&dead, "finished_at")
        - offload_tests::timestamp(&dead, "submitted_at");
    assert!(
        took < time::Duration::seconds(10),
        "the 60 s sleep was not cut short: {took}"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_losing_its_worker_is_dead_lettered_at_the_delivery_limit() {
    let env = TestEnv::new().await;
    let limit = [("OFFLOAD_DELIVERY_LIMIT", "2")];
    let api = ApiProcess::start(&env, &limit).await;

    let job = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 30000}}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    // Two workers in turn take the job and die with it.
    for round in 0..2 {
        let worker = WorkerProcess::start(&env, &format!("doomed-{round}"), 1, &limit).await;
        poll(DONE_WITHIN, "the job to run on the new worker", || async {
            let job = api.job(&id).await;
            (job["runs"].as_u64() == Some(round + 1)).then_some(())
        })
        .await;
        worker.kill9().await;
    }
    // The third delivery is over the limit: dead, with the reason, without running again.
    let _last = WorkerProcess::start(&env, "last", 1, &limit).await;
    let dead = api.wait_for_status(&id, "dead", DONE_WITHIN).await;
    assert!(
        dead["error"]
            .as_str()
            .is_some_and(|e| e.contains("delivered 3 times without finishing")),
        "{dead}"
    );
    assert_eq!(dead["runs"], 2, "{dead}");
    let (reason, _) = dead_letter_reason(&env).await;
    assert!(reason.contains("may be crashing its worker"), "{reason}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_same_job_and_enqueues_nothing_more() {
    let env = TestEnv::new().await;
    // No worker: every published job stays countable in the queue.
    let api = ApiProcess::start(&env, &[]).await;
    let post = |key: &'static str, body: Value| {
        api.http
            .post(api.url("/jobs"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let body = json!({"kind": "sleep", "payload": {"ms": 5}});

    let first = post("order-42", body.clone()).await.expect("POST");
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("JSON");
    let repeat = post("order-42", body.clone()).await.expect("POST");
    assert_eq!(repeat.status(), 200);
    let repeat: Value = repeat.json().await.expect("JSON");
    assert_eq!(repeat["id"], first["id"]);
    // The same job as a form is the same request.
    let form = api
        .http
        .post(api.url("/jobs"))
        .header("idempotency-key", "order-42")
        .form(&[("kind", "sleep"), ("payload", r#"{"ms":5}"#)])
        .send()
        .await
        .expect("POST");
    assert_eq!(form.status(), 200);

    let other = post("order-42", json!({"kind": "noop"}))
        .await
        .expect("POST");
    assert_eq!(other.status(), 422);
    assert_eq!(other.headers()["content-type"], "application/problem+json");
    let bad = api
        .http
        .post(api.url("/jobs"))
        .header("idempotency-key", "")
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(bad.status(), 400);
    let fresh = post("order-43", body).await.expect("POST");
    assert_eq!(fresh.status(), 202);

    poll(
        Duration::from_secs(5),
        "exactly two jobs in the queue",
        || async { (env.ready_count(&env.names.jobs_queue).await == 2).then_some(()) },
    )
    .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_jobs_and_refuses_bad_queries() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            api.submit(json!({"kind": "noop"})).await["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = api.url("/jobs?status=queued&kind=noop&limit=2");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = api
            .http
            .get(url)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        seen.extend(
            page["jobs"]
                .as_array()
                .expect("jobs")
                .iter()
                .map(|j| j["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each job once");
    for bad in [
        "status=finished",
        "kind=Not%20a%20kind",
        "limit=0",
        "limit=5000",
        "cursor=x",
        "colour=red",
    ] {
        let response = api
            .http
            .get(api.url(&format!("/jobs?{bad}")))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 422, "{bad}");
    }
    env.cleanup().await;
}
