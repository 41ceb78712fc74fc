//! `POST /jobs/batch`: many jobs in one request, each confirmed before the answer; a bad batch
//! is refused whole; a repeat with its Idempotency-Key enqueues nothing twice.

use std::{collections::HashSet, time::Duration};

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll};
use serde_json::{Value, json};

const DONE_WITHIN: Duration = Duration::from_secs(30);

async fn post_batch(api: &ApiProcess, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut request = api.http.post(api.url("/jobs/batch")).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("POST /jobs/batch");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("POST /jobs/batch answered {status} with non-JSON {text:?}: {e}")
    });
    (status, json)
}

fn ids(answer: &Value) -> Vec<String> {
    answer["jobs"]
        .as_array()
        .expect("jobs array")
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_confirmed_whole_listed_in_order_and_every_job_runs() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let jobs: Vec<Value> = (0..250)
        .map(|i| json!({"kind": "noop", "payload": {"n": i}}))
        .collect();
    let (status, answer) = post_batch(&api, &json!({ "jobs": jobs }), None).await;
    assert_eq!(status, 202, "{answer}");
    let listed = ids(&answer);
    assert_eq!(listed.len(), 250);
    assert_eq!(
        listed.iter().collect::<HashSet<_>>().len(),
        250,
        "every job has its own id"
    );
    assert!(
        answer["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .all(|j| j["status"] == "queued" && j["kind"] == "noop")
    );
    // No worker yet: all 250 are in the queue the moment the answer came.
    assert_eq!(env.ready_count(&env.names.jobs_queue).await, 250);

    let _worker = WorkerProcess::start(&env, "w1", 16, &[]).await;
    for (i, id) in listed.iter().enumerate() {
        let done = api.wait_for_status(id, "succeeded", DONE_WITHIN).await;
        // Listed in the order sent: job i carries payload n = i.
        assert_eq!(done["result"], json!({"n": i}), "job {i}");
        // The worker folds a short job's start into its end: still one run, with a start.
        assert_eq!(done["runs"], 1, "job {i}: {done}");
        assert!(done["started_at"].is_string(), "job {i}: {done}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_batch_is_refused_whole_and_publishes_nothing() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[("OFFLOAD_MAX_BODY_BYTES", "65536")]).await;
    let noop = json!({"kind": "noop"});
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "malformed JSON",
            "application/json",
            "{\"jobs\": [".into(),
            400,
            "",
        ),
        (
            "a form",
            "application/x-www-form-urlencoded",
            "kind=noop".into(),
            415,
            "application/json",
        ),
        (
            "no jobs",
            "application/json",
            json!({"jobs": []}).to_string(),
            422,
            "1 to 1000",
        ),
        (
            "1001 jobs",
            "application/json",
            json!({ "jobs": vec![noop.clone(); 1001] }).to_string(),
            422,
            "1001",
        ),
        (
            "a bad third job",
            "application/json",
            json!({"jobs": [noop, noop, {"kind": "resize"}, noop]}).to_string(),
            422,
            "jobs[2]: ",
        ),
        (
            "a bare array",
            "application/json",
            json!([noop]).to_string(),
            422,
            "",
        ),
        (
            "over the body limit",
            "application/json",
            json!({"jobs": [{"kind": "noop", "payload": {"pad": "x".repeat(70_000)}}]}).to_string(),
            413,
            "",
        ),
    ];
    for (what, content_type, body, status, detail) in &cases {
        let response = api
            .http
            .post(api.url("/jobs/batch"))
            .header("content-type", *content_type)
            .body(body.clone())
            .send()
            .await
            .expect("POST /jobs/batch");
        assert_eq!(response.status().as_u16(), *status, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let problem: Value = response.json().await.expect("problem JSON");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains(detail)),
            "{what}: {problem}"
        );
    }
    assert_eq!(env.ready_count(&env.names.jobs_queue).await, 0);
    assert!(
        api.all_jobs("queued").await.is_empty(),
        "a refused batch leaves no job behind"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_repeated_with_its_key_returns_its_jobs_and_enqueues_nothing_twice() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let batch = json!({"jobs": [
        {"kind": "noop", "payload": {"n": 0}},
        {"kind": "noop", "payload": {"n": 1}},
        {"kind": "sleep", "payload": {"ms": 1}},
    ]});
    let (first, answer) = post_batch(&api, &batch, Some("nightly-2026-11-26")).await;
    assert_eq!(first, 202, "{answer}");
    let (again, repeat) = post_batch(&api, &batch, Some("nightly-2026-11-26")).await;
    assert_eq!(again, 200, "{repeat}");
    assert_eq!(
        ids(&repeat),
        ids(&answer),
        "the same jobs, in the same order"
    );

    // The same key with another job at position 1: refused, naming it, nothing enqueued.
    let changed = json!({"jobs": [
        {"kind": "noop", "payload": {"n": 0}},
        {"kind": "noop", "payload": {"n": 99}},
        {"kind": "sleep", "payload": {"ms": 1}},
        {"kind": "noop"},
    ]});
    let (status, problem) = post_batch(&api, &changed, Some("nightly-2026-11-26")).await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("jobs[1]: ")),
        "{problem}"
    );
    poll(
        Duration::from_secs(5),
        "three jobs in the queue",
        || async { (env.ready_count(&env.names.jobs_queue).await == 3).then_some(()) },
    )
    .await;
    assert_eq!(
        api.all_jobs("queued").await.len(),
        3,
        "only the first batch is stored"
    );
    env.cleanup().await;
}
