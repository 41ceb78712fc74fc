//! Several API replicas on one PostgreSQL: two `offload-api` processes share the broker queues
//! (one queue prefix) and one database schema, so either answers for every job.

use std::time::Duration;

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll, postgres::PgSchema, run_binary};
use serde_json::{Value, json};

const DONE_WITHIN: Duration = Duration::from_secs(20);

/// Two APIs started at the same moment (so they also create the schema's tables together).
async fn two_apis(env: &TestEnv, schema: &PgSchema) -> (ApiProcess, ApiProcess) {
    let vars = [("OFFLOAD_DATABASE_URL", schema.url.as_str())];
    tokio::join!(ApiProcess::start(env, &vars), ApiProcess::start(env, &vars))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_submitted_to_one_api_replica_is_tracked_by_the_other() {
    let env = TestEnv::new().await;
    let schema = PgSchema::create().await;
    let (one, two) = two_apis(&env, &schema).await;
    let _worker = WorkerProcess::start(&env, "w1", 1, &[]).await;

    // Submitted through #1, read through #2 until it succeeds, and the other way round.
    for (to, from, hello) in [(&one, &two, "one"), (&two, &one, "two")] {
        let job = to
            .submit(json!({"kind": "noop", "payload": {"hello": hello}}))
            .await;
        let id = job["id"].as_str().expect("id").to_owned();
        let done = from.wait_for_status(&id, "succeeded", DONE_WITHIN).await;
        assert_eq!(done["result"], json!({"hello": hello}), "{done}");
        assert_eq!(
            (done["worker"].as_str(), &done["runs"]),
            (Some("w1"), &json!(1))
        );
        assert_eq!(to.job(&id).await, done, "both replicas show the same job");
    }

    // Both replicas consume lifecycle events from the one events queue, so each applies some
    // of every job's events to the shared store: all of them still end up succeeded, once.
    let mut ids = Vec::new();
    for n in 0..20 {
        let api = if n % 2 == 0 { &one } else { &two };
        let job = api
            .submit(json!({"kind": "noop", "payload": {"n": n}}))
            .await;
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        let job = one.wait_for_status(id, "succeeded", DONE_WITHIN).await;
        assert_eq!(job["runs"], 1, "{job}");
    }
    let (listed_one, listed_two) = (
        one.all_jobs("succeeded").await,
        two.all_jobs("succeeded").await,
    );
    assert_eq!(listed_one.len(), 22);
    assert_eq!(listed_one, listed_two, "both replicas list the same jobs");

    for api in [&one, &two] {
        let ready = api
            .http
            .get(api.url("/health/ready"))
            .send()
            .await
            .expect("GET /health/ready");
        assert_eq!(
            ready.status(),
            200,
            "{}",
            ready.text().await.unwrap_or_default()
        );
    }
    schema.remove().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_repeated_on_the_other_api_replica_returns_the_same_job() {
    let env = TestEnv::new().await;
    let schema = PgSchema::create().await;
    // No worker: every published job stays countable in the queue.
    let (one, two) = two_apis(&env, &schema).await;
    let post = |api: &ApiProcess, key: String, body: Value| {
        api.http
            .post(api.url("/jobs"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let body = json!({"kind": "sleep", "payload": {"ms": 5}});

    let first = post(&one, "order-1".into(), body.clone())
        .await
        .expect("POST");
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("JSON");
    let repeat = post(&two, "order-1".into(), body.clone())
        .await
        .expect("POST");
    assert_eq!(repeat.status(), 200, "a repeat, even on the other replica");
    let repeat: Value = repeat.json().await.expect("JSON");
    assert_eq!(repeat["id"], first["id"]);
    let other = post(&two, "order-1".into(), json!({"kind": "noop"}))
        .await
        .expect("POST");
    assert_eq!(other.status(), 422, "the key belongs to another request");

    // The same key sent to both replicas at the same moment: one job, one message. The repeat
    // that arrives while the first is still waiting for its confirm gets 409 (repeat later),
    // never an id whose job may not run.
    const RACES: usize = 10;
    let mut conflicts = 0;
    for n in 0..RACES {
        let key = format!("race-{n}");
        let (a, b) = tokio::join!(
            post(&one, key.clone(), body.clone()),
            post(&two, key.clone(), body.clone())
        );
        let (a, b) = (a.expect("POST #1"), b.expect("POST #2"));
        let mut statuses = [a.status().as_u16(), b.status().as_u16()];
        statuses.sort_unstable();
        let (a, b): (Value, Value) = (a.json().await.expect("JSON"), b.json().await.expect("JSON"));
        match statuses {
            [200, 202] => assert_eq!(a["id"], b["id"], "race-{n}"),
            [202, 409] => {
                conflicts += 1;
                let accepted = if a["id"].is_string() { &a } else { &b };
                let again = post(&two, key, body.clone()).await.expect("POST");
                assert_eq!(again.status(), 200, "race-{n}: once resolved");
                let again: Value = again.json().await.expect("JSON");
                assert_eq!(again["id"], accepted["id"], "race-{n}");
            }
            other => panic!("race-{n}: {other:?}: {a} / {b}"),
        }
    }
    println!("{conflicts} of {RACES} races answered 409 to the repeat");

    poll(
        Duration::from_secs(5),
        "one message per key in the queue",
        || async {
            (env.ready_count(&env.names.jobs_queue).await == 1 + RACES as u32).then_some(())
        },
    )
    .await;
    assert_eq!(one.all_jobs("queued").await.len(), 1 + RACES);
    schema.remove().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_cannot_open_its_database_exits_with_the_fix_and_no_password() {
    let env = TestEnv::new().await;
    let mut vars = env.vars();
    let run = |vars: &[(String, String)]| {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_binary(true, &[], &vars)
    };

    vars.push((
        "OFFLOAD_DATABASE_URL".into(),
        "mysql://app:hunter2@db/offload".into(),
    ));
    let (status, output) = run(&vars);
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("sqlite://") && output.contains("postgres://user:password@host/db"),
        "names both accepted forms: {output}"
    );

    // Nothing listens on port 1: the connection is refused at once.
    vars.push((
        "OFFLOAD_DATABASE_URL".into(),
        "postgres://app:hunter2@127.0.0.1:1/offload".into(),
    ));
    let (status, output) = run(&vars);
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("cannot open the job store postgres://app:***@127.0.0.1:1/offload"),
        "{output}"
    );
    assert!(!output.contains("hunter2"), "the password leaked: {output}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_one_replica_recorded_is_accepted_by_the_other() {
    let env = TestEnv::new().await;
    let schema = PgSchema::create().await;
    let (one, two) = two_apis(&env, &schema).await;

    // One announcement reaches one of the two replicas (they share the workers queue).
    let spec = json!([{"name": "resize", "queue": "images",
        "payload_schema": {"type": "object", "required": ["width"]}}]);
    env.announce(&offload_tests::announce::announcement(
        "w1",
        "alive",
        spec,
        &["images"],
    ))
    .await;

    // Both accept it: the replica that did not apply it reads it from the store on first use.
    for api in [&one, &two] {
        poll(
            DONE_WITHIN,
            "resize to be accepted by both replicas",
            || async {
                let (status, _) = api
                    .post_job(&json!({"kind": "resize", "payload": {"width": 3}}))
                    .await;
                (status == 202).then_some(())
            },
        )
        .await;
        let resize = api.kind("resize").await.expect("listed by both");
        assert_eq!(resize["workers"], json!(["w1"]), "{resize}");
    }
    if let Ok(channel) = env.broker.create_channel().await {
        let queue = format!("{}.jobs.images", env.prefix);
        let _ = channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    schema.remove().await;
    env.cleanup().await;
}
