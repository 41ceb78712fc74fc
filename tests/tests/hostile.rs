//! Hostile input never costs other jobs their status: payloads the worker or the event path
//! could not carry are refused at the door, and event messages that do not parse (whole, or one
//! event inside a batch) are parked with their reason while every other event is applied.

use std::time::Duration;

use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, ShortString},
};
use offload_shared::{JobEvent, JobId, JobStatus};
use offload_tests::{ApiProcess, TestEnv, WorkerProcess, metric_sum, poll};
use serde_json::{Value, json};

fn nested(levels: usize) -> Value {
    let text = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    serde_json::from_str(&text).expect("nested arrays")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_and_events_among_100_jobs_leave_every_normal_job_succeeded() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _a = WorkerProcess::start(&env, "hostile-a", 4, &[]).await;
    let _b = WorkerProcess::start(&env, "hostile-b", 4, &[]).await;

    // Refused at the door, with the limit named; nothing is recorded for them.
    let refusals = [
        (
            json!({"kind": "noop", "payload": {"a": nested(65)}}),
            422,
            "64",
        ),
        (json!({"kind": "noop", "payload": nested(126)}), 422, "64"),
        (
            json!({"kind": "noop", "payload": {"s": "x".repeat(2 * 1024 * 1024)}}),
            413,
            "1048576",
        ),
    ];
    // Accepted edge cases that must come back intact.
    let edges = [
        json!({"kind": "noop", "payload": {"a": nested(63)}}),
        json!({"kind": "noop", "payload": {"nul": "a\u{0}b", "emoji": "\u{1F600}", "n": 1e300}}),
    ];

    let mut normal = Vec::new();
    for i in 0..50 {
        normal.push(
            api.submit(json!({"kind": "noop", "payload": {"i": i}}))
                .await,
        );
    }
    for (body, status, limit) in &refusals {
        let r = api
            .http
            .post(api.url("/jobs"))
            .json(body)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status().as_u16(), *status);
        let problem: Value = r.json().await.expect("problem");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(limit), "the limit is named: {detail}");
    }
    let mut edge_jobs = Vec::new();
    for body in &edges {
        edge_jobs.push((api.submit(body.clone()).await, body["payload"].clone()));
    }

    // Event messages no worker would send: garbage, a truncated batch, a batch whose events are
    // bad in different ways around a good one, an event of a newer wire version.
    let channel = env.broker.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let victim = normal[10]["id"].as_str().expect("id").to_owned();
    let mut running = JobEvent::now(
        victim.parse::<JobId>().expect("job id"),
        1,
        JobStatus::Running,
        "intruder",
    );
    let good = String::from_utf8(running.to_bytes()).expect("utf-8");
    running.v = 2;
    let newer = String::from_utf8(running.to_bytes()).expect("utf-8");
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let hostile: Vec<(String, usize)> = vec![
        ("not json at all".into(), 1),
        ("[1, 2".into(), 1),
        (format!("[{good}, {deep}, {{\"v\":1}}, 17]"), 3),
        (newer, 1),
    ];
    let unreadable: usize = hostile.iter().map(|(_, n)| n).sum();
    for (body, _) in &hostile {
        channel
            .basic_publish(
                ShortString::from(""),
                ShortString::from(env.names.events_queue.as_str()),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
    for i in 50..100 {
        normal.push(
            api.submit(json!({"kind": "noop", "payload": {"i": i}}))
                .await,
        );
    }

    for job in &normal {
        let id = job["id"].as_str().expect("id");
        api.wait_for_status(id, "succeeded", Duration::from_secs(30))
            .await;
    }
    for (job, payload) in &edge_jobs {
        let id = job["id"].as_str().expect("id");
        let done = api
            .wait_for_status(id, "succeeded", Duration::from_secs(30))
            .await;
        assert_eq!(&done["result"], payload, "round trip of {id}");
    }
    let parked = poll(Duration::from_secs(10), "the parked count", || async {
        let n = metric_sum(&api.metrics().await, "offload_events_parked_total", &[]);
        (n >= unreadable as f64).then_some(n)
    })
    .await;
    assert_eq!(parked, unreadable as f64);
    // The good event of the hostile batch was applied (a start counts as a run), not dropped
    // with its unreadable neighbours.
    let victim_job = poll(
        Duration::from_secs(10),
        "the batch's good event",
        || async {
            let job = api.job(&victim).await;
            (job["runs"] == 2).then_some(job)
        },
    )
    .await;
    assert_eq!(victim_job["status"], "succeeded", "{victim_job}");
    // Each one waits in the parked queue with its reason.
    let mut reasons = Vec::new();
    while let Some(message) = channel
        .basic_get(
            ShortString::from(env.names.parked_events_queue.as_str()),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get")
    {
        let reason = message
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-offload-reason").cloned());
        match reason {
            Some(AMQPValue::LongString(text)) => reasons.push(text.to_string()),
            other => panic!("a parked event without its reason: {other:?}"),
        }
    }
    assert_eq!(reasons.len(), unreadable, "{reasons:?}");
    let jobs_total = api.all_jobs("succeeded").await.len();
    println!(
        "hostile input: {} refused at the door, {} edge payloads round-tripped, {unreadable} \
         unreadable events parked ({}), {} of {} normal jobs succeeded",
        refusals.len(),
        edge_jobs.len(),
        reasons.join(" | ").chars().take(300).collect::<String>(),
        jobs_total - edge_jobs.len(),
        normal.len()
    );
    assert_eq!(jobs_total, normal.len() + edge_jobs.len());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_queue_stays_within_its_policy_bound_and_the_store_keeps_every_dead_job() {
    let env = TestEnv::new().await;
    // The policy docs/operations.md gives, scoped to this test's prefix.
    let policy = env.queue_policy(
        &env.names.dead_queue,
        r#"{"max-length": 2, "overflow": "drop-head"}"#,
    );
    let api = ApiProcess::start(&env, &[]).await;
    let _w = WorkerProcess::start(&env, "dead-w", 1, &[]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let job = api
            .submit(json!({"kind": "sleep", "payload": {"ms": i, "fail": "permanent"}}))
            .await;
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        let job = api
            .wait_for_status(id, "dead", Duration::from_secs(20))
            .await;
        assert!(job["error"].is_string(), "the reason is kept: {job}");
    }
    let held = poll(Duration::from_secs(10), "the bound to hold", || async {
        let n = env.ready_count(&env.names.dead_queue).await;
        (n <= 2).then_some(n)
    })
    .await;
    drop(policy);
    println!("dead-letter bound: 5 dead jobs in the store, {held} in the bounded queue");
    assert_eq!(held, 2);
    env.cleanup().await;
}
