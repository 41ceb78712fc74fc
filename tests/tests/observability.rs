//! What operators watch: `/metrics` of the API and the workers (queue depth above all), the
//! request id from HTTP into the worker's logs, and the `healthcheck` subcommands.

use std::time::Duration;

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll, run_binary};
use serde_json::{Value, json};

/// The value of the sample `name{labels}` in a Prometheus text exposition.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

async fn scrape(http: &reqwest::Client, url: String) -> String {
    http.get(url)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_queue_growing_without_workers_and_draining_with_them() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let ready = format!(
        "offload_queue_messages_ready{{queue=\"{}\"}}",
        env.names.jobs_queue
    );
    let consumers = format!(
        "offload_queue_consumers{{queue=\"{}\"}}",
        env.names.jobs_queue
    );

    // No worker: every job waits, and the gauge climbs.
    for _ in 0..30 {
        api.submit(json!({"kind": "noop"})).await;
    }
    let metrics = poll(
        Duration::from_secs(15),
        "the ready gauge to reach 30",
        || async {
            let text = scrape(&api.http, api.url("/metrics")).await;
            (sample(&text, &ready) == Some(30.0)).then_some(text)
        },
    )
    .await;
    assert_eq!(sample(&metrics, &consumers), Some(0.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "offload_jobs_submitted_total{kind=\"noop\"}"),
        Some(30.0),
        "{metrics}"
    );
    assert!(
        metrics.contains("offload_publish_confirm_seconds_count 30"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "offload_http_requests_total{method=\"POST\",route=\"/jobs\",status=\"202\"} 30"
        ),
        "{metrics}"
    );

    // A worker starts: the gauge falls to zero and the outcomes are counted.
    let worker = WorkerProcess::start(&env, "w1", 4, &[]).await;
    let metrics = poll(Duration::from_secs(20), "the queue to drain", || async {
        let text = scrape(&api.http, api.url("/metrics")).await;
        let drained = sample(&text, &ready) == Some(0.0)
            && sample(
                &text,
                "offload_jobs_finished_total{kind=\"noop\",status=\"succeeded\"}",
            ) == Some(30.0);
        drained.then_some(text)
    })
    .await;
    assert_eq!(sample(&metrics, &consumers), Some(1.0), "{metrics}");
    assert!(
        metrics.contains("offload_job_run_seconds_count{kind=\"noop\"} 30"),
        "{metrics}"
    );

    let worker_metrics = scrape(&api.http, format!("{}/metrics", worker.metrics_base)).await;
    assert_eq!(
        sample(
            &worker_metrics,
            "offload_worker_jobs_total{kind=\"noop\",outcome=\"succeeded\"}"
        ),
        Some(30.0),
        "{worker_metrics}"
    );
    assert_eq!(
        sample(&worker_metrics, "offload_worker_jobs_in_flight"),
        Some(0.0),
        "{worker_metrics}"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_follows_the_job_from_http_into_the_worker_logs() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    // The per-job "job done" line is a debug line.
    let worker =
        WorkerProcess::start(&env, "w1", 1, &[("RUST_LOG", "info,offload_worker=debug")]).await;

    let response = api
        .http
        .post(api.url("/jobs"))
        .header("x-request-id", "req-7f3a")
        .json(&json!({"kind": "noop"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.headers()["x-request-id"], "req-7f3a");
    let job: Value = response.json().await.expect("JSON");
    let id = job["id"].as_str().expect("id").to_owned();
    api.wait_for_status(&id, "succeeded", Duration::from_secs(20))
        .await;

    let line = poll(
        Duration::from_secs(5),
        "the worker's log line about the job",
        || async {
            worker
                .logs()
                .into_iter()
                .find(|l| l.contains("job done") && l.contains(&id))
        },
    )
    .await;
    assert!(line.contains("req-7f3a"), "{line}");
    // Requests without an id get one.
    let response = api
        .http
        .get(api.url("/health/live"))
        .send()
        .await
        .expect("GET");
    assert!(response.headers().contains_key("x-request-id"));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_subcommands_ask_their_own_process() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "w1", 1, &[]).await;
    let api_addr = api.base.trim_start_matches("http://").to_owned();
    let worker_addr = worker.metrics_base.trim_start_matches("http://").to_owned();

    let (status, output) = run_binary(true, &["healthcheck"], &[("OFFLOAD_HTTP_ADDR", &api_addr)]);
    assert!(status.success(), "{output}");
    let (status, output) = run_binary(
        false,
        &["healthcheck"],
        &[("OFFLOAD_METRICS_ADDR", &worker_addr)],
    );
    assert!(status.success(), "{output}");
    let (status, output) = run_binary(
        true,
        &["healthcheck"],
        &[("OFFLOAD_HTTP_ADDR", "127.0.0.1:1")],
    );
    assert!(!status.success(), "nothing listens on port 1: {output}");
    assert!(output.contains("not healthy"), "{output}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_the_problem_shape() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(
        &env,
        &[
            ("OFFLOAD_MAX_JOB_TIMEOUT_S", "90"),
            ("OFFLOAD_JOB_TIMEOUT_S", "60"),
        ],
    )
    .await;
    let doc: Value = api
        .http
        .get(api.url("/openapi.json"))
        .send()
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("JSON");
    let paths = doc["paths"].as_object().expect("paths");
    for (route, method) in [
        ("/", "get"),
        ("/jobs", "post"),
        ("/jobs", "get"),
        ("/jobs/{id}", "get"),
        ("/jobs/{id}/retry", "post"),
        ("/kinds", "get"),
        ("/workers", "get"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/docs", "get"),
    ] {
        assert!(
            paths.get(route).and_then(|p| p.get(method)).is_some(),
            "{method} {route} missing"
        );
    }
    let submit = &paths["/jobs"]["post"]["responses"];
    for status in ["202", "400", "413", "415", "422", "503"] {
        assert!(
            submit.get(status).is_some(),
            "POST /jobs lacks {status}: {submit}"
        );
    }
    // Each kind's payload schema is in the document; the built-in sleep's from its Rust type.
    let sleep = &doc["components"]["schemas"]["payload.sleep"];
    assert!(sleep["properties"]["ms"].is_object(), "{sleep}");
    for schema in [
        "JobRecord",
        "Problem",
        "JsonRequest",
        "JobPage",
        "KindList",
        "WorkerList",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "schema {schema} missing"
        );
    }
    // The running OFFLOAD_MAX_JOB_TIMEOUT_S bounds timeout_s in the document.
    let timeout = &doc["components"]["schemas"]["JsonRequest"]["properties"]["timeout_s"];
    assert_eq!(timeout["maximum"], 90, "{timeout}");
    let docs = api
        .http
        .get(api.url("/docs"))
        .send()
        .await
        .expect("GET /docs");
    // Served entirely by the API: no script, nothing fetched from another origin.
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let page = docs.text().await.expect("page");
    assert!(page.contains("/openapi.json"));
    assert!(!page.contains("<script"), "the docs page loads a script");
    assert!(
        page.contains("<code>/jobs/{id}/retry</code>"),
        "operations listed"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unacked_gauge_counts_jobs_a_worker_holds() {
    let env = TestEnv::new().await;
    let management = std::env::var("OFFLOAD_TEST_MANAGEMENT_URL")
        .unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".to_owned());
    let api = ApiProcess::start(&env, &[("OFFLOAD_MANAGEMENT_URL", &management)]).await;
    let _worker = WorkerProcess::start(&env, "holder", 1, &[]).await;
    let job = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 30000}}))
        .await;
    api.wait_for_status(
        job["id"].as_str().expect("id"),
        "running",
        Duration::from_secs(10),
    )
    .await;
    let unacked = format!(
        "offload_queue_messages_unacked{{queue=\"{}\"}}",
        env.names.jobs_queue
    );
    // The management API refreshes its counts every few seconds.
    poll(
        Duration::from_secs(20),
        &format!("{unacked} to be 1 (the management plugin must run: scripts/test.sh enables it)"),
        || async {
            let text = scrape(&api.http, api.url("/metrics")).await;
            (sample(&text, &unacked) == Some(1.0)).then_some(())
        },
    )
    .await;
    env.cleanup().await;
}
