//! The core path through the front door: submit, queue, fair dispatch, status, bad input,
//! killed and stopped workers, and a mismatched topology.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll, run_binary, timestamp};
use serde_json::{Value, json};

const DONE_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noop_job_runs_to_succeeded_with_its_result() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "w1", 1, &[]).await;

    let started = Instant::now();
    let response = api
        .http
        .post(api.url("/jobs"))
        .json(&json!({"kind": "noop", "payload": {"hello": "world"}}))
        .send()
        .await
        .expect("POST /jobs");
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let job: Value = response.json().await.expect("job JSON");
    let id = job["id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/jobs/{id}"));
    assert_eq!(job["status"], "queued");
    assert_eq!(job["kind"], "noop");
    assert_eq!(
        uuid::Uuid::parse_str(&id).expect("uuid").get_version_num(),
        7
    );

    let done = api.wait_for_status(&id, "succeeded", DONE_WITHIN).await;
    let elapsed = started.elapsed();
    println!("noop job: POST to succeeded observed in {elapsed:?}");
    assert_eq!(done["result"], json!({"hello": "world"}));
    assert_eq!(done["worker"], worker.name.as_str());
    assert_eq!(done["attempt"], 1);
    assert!(done["error"].is_null());
    for field in ["submitted_at", "started_at", "finished_at"] {
        timestamp(&done, field);
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_form_submits_a_job_and_a_browser_is_redirected_to_it() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = WorkerProcess::start(&env, "w1", 1, &[]).await;

    // A script's form post: 202 with the job.
    let response = api
        .http
        .post(api.url("/jobs"))
        .form(&[("kind", "sleep"), ("payload", r#"{"ms": 10}"#)])
        .send()
        .await
        .expect("form POST");
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.expect("job JSON");
    let id = job["id"].as_str().expect("id").to_owned();
    let done = api.wait_for_status(&id, "succeeded", DONE_WITHIN).await;
    assert_eq!(done["result"], json!({"slept_ms": 10}));

    // A browser's form post: 303 to the job's page, which shows the status.
    let response = api
        .http
        .post(api.url("/jobs"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .form(&[("kind", "noop"), ("payload", "")])
        .send()
        .await
        .expect("browser POST");
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(location.starts_with("/jobs/"), "{location}");
    let page = poll(DONE_WITHIN, "the job page to show succeeded", || async {
        let page = api
            .http
            .get(api.url(&location))
            .header("accept", "text/html")
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        page.contains("<span id=\"status\" class=\"status s-succeeded\">succeeded</span>")
            .then_some(page)
    })
    .await;
    assert!(page.contains("<!doctype html>"));
    let index = api
        .http
        .get(api.url("/ui/submit"))
        .send()
        .await
        .expect("GET /ui/submit");
    assert!(
        index
            .text()
            .await
            .expect("page")
            .contains("<form method=\"post\" action=\"/jobs\">")
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problem_json_and_publishes_nothing() {
    let env = TestEnv::new().await;
    // No worker: whatever is published stays in the queue, where it can be counted.
    let api = ApiProcess::start(&env, &[("OFFLOAD_MAX_BODY_BYTES", "2048")]).await;
    let json_type = "application/json";
    let big = format!(
        r#"{{"kind":"noop","payload":{{"pad":"{}"}}}}"#,
        "x".repeat(4096)
    );
    let cases: Vec<(&str, &str, String, u16)> = vec![
        (
            "malformed JSON",
            json_type,
            r#"{"kind": "noop""#.into(),
            400,
        ),
        ("not JSON at all", json_type, "hello".into(), 400),
        ("body over the limit", json_type, big, 413),
        ("plain text", "text/plain", r#"{"kind":"noop"}"#.into(), 415),
        ("no content type", "", r#"{"kind":"noop"}"#.into(), 415),
        (
            "unknown kind",
            json_type,
            r#"{"kind":"resize","payload":{}}"#.into(),
            422,
        ),
        (
            "unknown field",
            json_type,
            r#"{"kind":"noop","priority":9}"#.into(),
            422,
        ),
        (
            "invalid payload",
            json_type,
            r#"{"kind":"sleep","payload":{"ms":"soon"}}"#.into(),
            422,
        ),
        ("missing kind", json_type, r#"{"payload":{}}"#.into(), 422),
        (
            "form with bad payload JSON",
            "application/x-www-form-urlencoded",
            "kind=noop&payload=%7B".into(),
            422,
        ),
        (
            "form with unknown kind",
            "application/x-www-form-urlencoded",
            "kind=resize".into(),
            422,
        ),
    ];
    for (what, content_type, body, status) in &cases {
        let mut request = api.http.post(api.url("/jobs")).body(body.clone());
        if !content_type.is_empty() {
            request = request.header("content-type", *content_type);
        }
        let response = request.send().await.expect("POST /jobs");
        assert_eq!(response.status().as_u16(), *status, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let problem: Value = response.json().await.expect("problem JSON");
        assert_eq!(problem["status"], *status, "{what}: {problem}");
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("/problems/")),
            "{what}: {problem}"
        );
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {problem}"
        );
    }

    let unknown = api
        .http
        .get(api.url("/jobs/0190f5b2-0000-7000-8000-000000000000"))
        .send()
        .await
        .expect("GET");
    assert_eq!(unknown.status(), 404);
    let garbage = api
        .http
        .get(api.url("/jobs/not-an-id"))
        .send()
        .await
        .expect("GET");
    assert_eq!(garbage.status(), 404);
    assert_eq!(
        garbage.headers()["content-type"],
        "application/problem+json"
    );

    // Nothing above reached the queue; one good job does, so the count can tell.
    assert_eq!(env.ready_count(&env.names.jobs_queue).await, 0);
    api.submit(json!({"kind": "noop"})).await;
    poll(
        Duration::from_secs(5),
        "the good job in the queue",
        || async { (env.ready_count(&env.names.jobs_queue).await == 1).then_some(()) },
    )
    .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_jobs_are_spread_round_robin_over_two_workers() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let a = WorkerProcess::start(&env, "rr-a", 1, &[]).await;
    let b = WorkerProcess::start(&env, "rr-b", 1, &[]).await;

    let mut ids = Vec::new();
    for _ in 0..20 {
        let job = api
            .submit(json!({"kind": "sleep", "payload": {"ms": 100}}))
            .await;
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        let job = api.wait_for_status(id, "succeeded", DONE_WITHIN).await;
        *per_worker
            .entry(job["worker"].as_str().expect("worker").to_owned())
            .or_default() += 1;
    }
    println!("round robin, 20 jobs of 100 ms: {per_worker:?}");
    for w in [&a.name, &b.name] {
        let n = per_worker.get(w.as_str()).copied().unwrap_or(0);
        assert!((7..=13).contains(&n), "{w} ran {n} of 20: {per_worker:?}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_dispatch_sends_light_jobs_past_a_worker_busy_with_a_heavy_one() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _a = WorkerProcess::start(&env, "fair-a", 1, &[]).await;
    let _b = WorkerProcess::start(&env, "fair-b", 1, &[]).await;

    let heavy = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 4000}}))
        .await;
    let heavy_id = heavy["id"].as_str().expect("id").to_owned();
    let running = api.wait_for_status(&heavy_id, "running", DONE_WITHIN).await;
    let busy = running["worker"].as_str().expect("worker").to_owned();

    let mut light = Vec::new();
    for _ in 0..6 {
        let job = api
            .submit(json!({"kind": "sleep", "payload": {"ms": 100}}))
            .await;
        light.push(job["id"].as_str().expect("id").to_owned());
    }
    let mut light_done = Vec::new();
    for id in &light {
        light_done.push(api.wait_for_status(id, "succeeded", DONE_WITHIN).await);
    }
    let heavy_done = api
        .wait_for_status(&heavy_id, "succeeded", DONE_WITHIN)
        .await;
    let heavy_finished = timestamp(&heavy_done, "finished_at");
    for job in &light_done {
        assert_ne!(
            job["worker"],
            busy.as_str(),
            "a light job waited behind the heavy one: {job}"
        );
        assert!(
            timestamp(job, "finished_at") < heavy_finished,
            "light job finished after the heavy one: {job}"
        );
    }
    println!(
        "fair dispatch: 6 light jobs all ran on the idle worker while {busy} ran the heavy one"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_a_killed_worker_is_redelivered_and_succeeds_elsewhere() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let a = WorkerProcess::start(&env, "kill-a", 1, &[]).await;
    let b = WorkerProcess::start(&env, "kill-b", 1, &[]).await;

    let job = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 1500}}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let running = api.wait_for_status(&id, "running", DONE_WITHIN).await;
    let victim = running["worker"].as_str().expect("worker").to_owned();
    let (doomed, survivor) = if victim == a.name { (a, b) } else { (b, a) };
    assert_eq!(doomed.name, victim);
    doomed.kill9().await;

    let done = api.wait_for_status(&id, "succeeded", DONE_WITHIN).await;
    assert_eq!(done["worker"], survivor.name.as_str(), "{done}");
    assert_eq!(done["result"], json!({"slept_ms": 1500}));
    println!(
        "kill -9 of {victim} mid-job: redelivered to {} and succeeded",
        survivor.name
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_job_finish_then_exits_zero() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let mut worker =
        WorkerProcess::start(&env, "drain", 1, &[("OFFLOAD_SHUTDOWN_GRACE_S", "10")]).await;

    let job = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 1500}}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    api.wait_for_status(&id, "running", DONE_WITHIN).await;
    worker.terminate();
    let waiting = api.submit(json!({"kind": "noop"})).await;
    let waiting_id = waiting["id"].as_str().expect("id").to_owned();

    let status = worker.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "worker exited with {status}");
    let done = api.job(&id).await;
    assert_eq!(
        done["status"], "succeeded",
        "the running job finished during the drain: {done}"
    );
    assert_eq!(done["worker"], "drain");
    // The job submitted during the drain was not taken; the next worker runs it.
    assert_eq!(api.job(&waiting_id).await["status"], "queued");
    let _next = WorkerProcess::start(&env, "next", 1, &[]).await;
    let later = api
        .wait_for_status(&waiting_id, "succeeded", DONE_WITHIN)
        .await;
    assert_eq!(later["worker"], "next");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_running_when_the_grace_period_ends_is_redelivered() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let mut worker =
        WorkerProcess::start(&env, "short-grace", 1, &[("OFFLOAD_SHUTDOWN_GRACE_S", "1")]).await;

    let job = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 6000}}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    api.wait_for_status(&id, "running", DONE_WITHIN).await;
    let stopping = Instant::now();
    worker.terminate();
    let status = worker.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "worker exited with {status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        stopping.elapsed()
    );
    assert_eq!(api.job(&id).await["status"], "running");

    let _next = WorkerProcess::start(&env, "next", 1, &[]).await;
    let done = api.wait_for_status(&id, "succeeded", DONE_WITHIN).await;
    assert_eq!(done["worker"], "next");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_with_other_arguments_stops_start_up_with_the_fix() {
    let env = TestEnv::new().await;
    // An earlier deployment ran with OFFLOAD_QUEUE_TYPE=classic; this one asks for quorum.
    let mut classic = offload_shared::Settings::from_env().expect("defaults");
    classic.queue_type = offload_shared::QueueType::Classic;
    let args = offload_shared::topology::jobs_queue_arguments(&classic, &env.names);
    let channel = env.broker.create_channel().await.expect("channel");
    channel
        .queue_declare(
            env.names.jobs_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .expect("declare the conflicting queue");

    for api in [false, true] {
        let (status, output) = if api {
            run_binary(
                true,
                &[],
                &env.vars()
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<Vec<_>>(),
            )
        } else {
            WorkerProcess::start_failing(&env, &[]).await
        };
        let which = if api { "offload-api" } else { "offload-worker" };
        assert!(!status.success(), "{which} must refuse to start:\n{output}");
        for needle in [
            format!("queue '{}'", env.names.jobs_queue),
            "'x-queue-type'".to_owned(),
            "OFFLOAD_QUEUE_TYPE".to_owned(),
        ] {
            assert!(
                output.contains(&needle),
                "{which}: {needle:?} missing from:\n{output}"
            );
        }
        assert!(
            !output.contains("panicked") && !output.contains("RUST_BACKTRACE"),
            "{output}"
        );
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_quick_start_up_error_naming_the_fix() {
    for api in [true, false] {
        let started = Instant::now();
        let (status, output) = run_binary(
            api,
            &[],
            &[
                ("OFFLOAD_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
                ("OFFLOAD_HTTP_ADDR", "127.0.0.1:0"),
                ("OFFLOAD_BROKER_TIMEOUT_MS", "2000"),
            ],
        );
        assert!(!status.success(), "{output}");
        assert!(
            output.contains("cannot reach RabbitMQ at amqp://guest@127.0.0.1:1"),
            "{output}"
        );
        assert!(output.contains("OFFLOAD_AMQP_URL"), "{output}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_the_settings_and_the_probes_answer() {
    for api in [true, false] {
        let (status, help) = run_binary(api, &["--help"], &[]);
        assert!(status.success(), "{help}");
        for var in [
            "OFFLOAD_AMQP_URL",
            "OFFLOAD_HTTP_ADDR",
            "OFFLOAD_QUEUE_PREFIX",
            "OFFLOAD_QUEUE_TYPE",
            "OFFLOAD_PREFETCH",
            "OFFLOAD_DATABASE_URL",
            "OFFLOAD_MAX_BODY_BYTES",
            "OFFLOAD_SHUTDOWN_GRACE_S",
        ] {
            assert!(help.contains(var), "{var} missing from --help:\n{help}");
        }
    }
    let (status, output) = run_binary(false, &["--prefetch", "0"], &[]);
    assert!(
        !status.success() && output.contains("--prefetch"),
        "{output}"
    );

    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let live = api
        .http
        .get(api.url("/health/live"))
        .send()
        .await
        .expect("live");
    assert_eq!(live.status(), 200);
    let ready = poll(Duration::from_secs(10), "readiness", || async {
        let r = api.http.get(api.url("/health/ready")).send().await.ok()?;
        (r.status() == 200).then_some(r)
    })
    .await;
    let body: Value = ready.json().await.expect("JSON");
    assert_eq!(body["status"], "ready");
    env.cleanup().await;
}
