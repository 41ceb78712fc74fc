//! Queue-depth back-pressure: a flood past the work queue's length limit is refused fast with a
//! 503 `queue-full`, every accepted job still succeeds, the worker keeps draining all along, and
//! the broker's queue never holds more than its `x-max-length`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use offload_tests::{ApiProcess, TestEnv, WorkerProcess, metric_sum, poll};
use serde_json::json;

/// The work queue's length limit in this test.
const LIMIT: u32 = 300;
/// Concurrent clients submitting as fast as they can.
const CLIENTS: usize = 4;
/// How long they flood.
const FLOOD: Duration = Duration::from_secs(5);

/// What one client saw.
#[derive(Default)]
struct Tally {
    accepted: Vec<String>,
    refused_ms: Vec<f64>,
    other: Vec<(u16, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_queue_limit_is_refused_fast_while_the_worker_keeps_draining() {
    let env = TestEnv::new().await;
    let limit = LIMIT.to_string();
    let settings = [("OFFLOAD_MAX_QUEUE_LENGTH", limit.as_str())];
    let api = Arc::new(ApiProcess::start(&env, &settings).await);
    let worker = WorkerProcess::start(&env, "slow", 1, &settings).await;
    let queue = env.names.jobs_queue.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients = (0..CLIENTS).map(|_| {
        let api = api.clone();
        let stop = stop.clone();
        async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let response = api
                    .http
                    .post(api.url("/jobs"))
                    .json(&json!({"kind": "sleep", "payload": {"ms": 3}}))
                    .send()
                    .await
                    .expect("POST /jobs");
                let took = sent.elapsed();
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                match status {
                    202 => tally
                        .accepted
                        .push(body["id"].as_str().expect("id").to_owned()),
                    503 if body["type"] == "/problems/queue-full" && retry_after => {
                        tally.refused_ms.push(took.as_secs_f64() * 1000.0);
                    }
                    _ => tally.other.push((status, body.to_string())),
                }
            }
            tally
        }
    });
    // Beside the flood: the broker's ready count and the worker's succeeded count.
    let watch = async {
        let mut most_ready = 0u32;
        let mut succeeded = Vec::new();
        let mut last_sample = Instant::now() - Duration::from_secs(1);
        while started.elapsed() < FLOOD {
            most_ready = most_ready.max(env.ready_count(&queue).await);
            if last_sample.elapsed() >= Duration::from_secs(1) {
                succeeded.push(worker.succeeded().await);
                last_sample = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::Relaxed);
        succeeded.push(worker.succeeded().await);
        (most_ready, succeeded)
    };
    let (tallies, (most_ready, succeeded)) = tokio::join!(join_all(clients), watch);

    let accepted: Vec<String> = tallies.iter().flat_map(|t| t.accepted.clone()).collect();
    let mut refused: Vec<f64> = tallies.iter().flat_map(|t| t.refused_ms.clone()).collect();
    let other: Vec<&(u16, String)> = tallies.iter().flat_map(|t| &t.other).collect();
    refused.sort_by(f64::total_cmp);
    let p99 = refused
        .get(refused.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    println!(
        "flood of {CLIENTS} clients for {FLOOD:?} at x-max-length {LIMIT}: {} accepted, {} \
         refused queue-full (p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms), {} other; most ready \
         {most_ready}; worker succeeded per second {succeeded:?}",
        accepted.len(),
        refused.len(),
        refused.get(refused.len() / 2).copied().unwrap_or_default(),
        refused.last().copied().unwrap_or_default(),
        other.len(),
    );
    assert!(
        other.is_empty(),
        "answers other than 202 and 503 queue-full: {other:?}"
    );
    assert!(
        refused.len() > accepted.len(),
        "the flood was not refused: {} accepted, {} refused",
        accepted.len(),
        refused.len()
    );
    assert!(p99 < 200.0, "queue-full refusals p99 {p99:.1} ms");
    assert!(
        most_ready <= LIMIT,
        "the queue held {most_ready} ready jobs, over its x-max-length {LIMIT}"
    );
    assert!(
        succeeded.windows(2).all(|w| w[1] > w[0]),
        "the worker stalled during the flood: succeeded per second {succeeded:?}"
    );

    // Every accepted job runs.
    let want = accepted.len() as f64;
    let done = poll(
        Duration::from_secs(120),
        "every accepted job to succeed",
        || async {
            let text = api.metrics().await;
            let done = metric_sum(
                &text,
                "offload_jobs_finished_total",
                &["status=\"succeeded\""],
            );
            (done >= want).then_some(text)
        },
    )
    .await;
    for id in accepted.iter().step_by(accepted.len() / 20 + 1) {
        assert_eq!(api.job(id).await["status"], "succeeded", "job {id}");
    }
    let counted = metric_sum(
        &done,
        "offload_jobs_refused_total",
        &["reason=\"queue_full\""],
    );
    assert_eq!(
        counted,
        refused.len() as f64,
        "refusals counted by reason in /metrics"
    );

    drop(worker);
    Arc::into_inner(api).expect("one owner").stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_queue_declared_before_the_length_limit_is_kept_with_a_warning_naming_the_policy() {
    let env = TestEnv::new().await;
    // The work queue as earlier builds declared it: every argument but x-max-length.
    let mut settings = offload_shared::Settings::from_env().expect("defaults");
    settings.queue_prefix =
        offload_shared::topology::QueuePrefix::parse(&env.prefix).expect("prefix");
    let all = offload_shared::topology::jobs_queue_arguments(&settings, &env.names);
    let mut legacy = lapin::types::FieldTable::default();
    for (key, value) in all.inner() {
        if key.as_str() != offload_shared::topology::MAX_LENGTH_ARGUMENT {
            legacy.insert(key.clone(), value.clone());
        }
    }
    let channel = env.broker.create_channel().await.expect("channel");
    channel
        .exchange_declare(
            env.names.dead_exchange.as_str().into(),
            lapin::ExchangeKind::Fanout,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("dead-letter exchange");
    channel
        .queue_declare(
            env.names.jobs_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            legacy,
        )
        .await
        .expect("legacy work queue");
    let _ = channel.close(200, "declared".into()).await;

    let api = ApiProcess::start(&env, &[]).await;
    let _worker = WorkerProcess::start(&env, "legacy", 1, &[]).await;
    let warning = api
        .logs()
        .into_iter()
        .find(|l| l.contains("exists without x-max-length"))
        .expect("a warning about the queue without the limit");
    assert!(warning.contains("rabbitmqctl set_policy"), "{warning}");
    assert!(warning.contains("max-length"), "{warning}");
    let job = api.submit(json!({"kind": "noop"})).await;
    api.wait_for_status(
        job["id"].as_str().expect("id"),
        "succeeded",
        Duration::from_secs(20),
    )
    .await;
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_work_queue_of_the_other_type_still_stops_start_up_naming_the_queue_type() {
    let env = TestEnv::new().await;
    // A classic work queue as earlier builds declared it: no x-max-length, no x-overflow.
    let mut classic = offload_shared::Settings::from_env().expect("defaults");
    classic.queue_type = offload_shared::QueueType::Classic;
    let all = offload_shared::topology::jobs_queue_arguments(&classic, &env.names);
    let mut legacy = lapin::types::FieldTable::default();
    for (key, value) in all.inner() {
        if key.as_str() != offload_shared::topology::MAX_LENGTH_ARGUMENT
            && key.as_str() != offload_shared::topology::OVERFLOW_ARGUMENT
        {
            legacy.insert(key.clone(), value.clone());
        }
    }
    let channel = env.broker.create_channel().await.expect("channel");
    channel
        .queue_declare(
            env.names.jobs_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            legacy,
        )
        .await
        .expect("legacy classic work queue");
    let _ = channel.close(200, "declared".into()).await;

    let vars = env.vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, output) = offload_tests::run_binary(true, &[], &vars);
    assert!(
        !status.success(),
        "a quorum API must refuse a classic queue:\n{output}"
    );
    for needle in ["'x-queue-type'", "OFFLOAD_QUEUE_TYPE"] {
        assert!(output.contains(needle), "{needle} missing from:\n{output}");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_own_reject_publish_nack_is_the_same_queue_full_answer_with_nothing_stored() {
    let env = TestEnv::new().await;
    // The queue already exists with a lower limit (another replica's setting, or a policy):
    // the API's own 90 % check does not see it coming; the broker's nack must.
    let mut low = offload_shared::Settings::from_env().expect("defaults");
    low.queue_prefix = offload_shared::topology::QueuePrefix::parse(&env.prefix).expect("prefix");
    low.max_queue_length = 20;
    let channel = env.broker.create_channel().await.expect("channel");
    channel
        .exchange_declare(
            env.names.dead_exchange.as_str().into(),
            lapin::ExchangeKind::Fanout,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("dead-letter exchange");
    channel
        .queue_declare(
            env.names.jobs_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            offload_shared::topology::jobs_queue_arguments(&low, &env.names),
        )
        .await
        .expect("work queue limited to 20");
    let _ = channel.close(200, "declared".into()).await;

    // No worker: nothing drains the queue.
    let api = ApiProcess::start(&env, &[("OFFLOAD_MAX_QUEUE_LENGTH", "300")]).await;
    let mut accepted = 0u32;
    let mut refused = Vec::new();
    for i in 0..30 {
        let response = api
            .http
            .post(api.url("/jobs"))
            .json(&json!({"kind": "noop", "payload": {"i": i}}))
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        match status {
            202 => accepted += 1,
            503 => {
                assert_eq!(body["type"], "/problems/queue-full", "{body}");
                assert!(retry_after, "503 without Retry-After");
                refused.push(i);
            }
            other => panic!("submit {i}: {other} {body}"),
        }
    }
    // A quorum queue checks its limit before it takes a message, so it can end one over it.
    assert!(
        (20..=21).contains(&accepted),
        "{accepted} accepted past the broker's limit of 20; refused {refused:?}"
    );
    assert_eq!(env.ready_count(&env.names.jobs_queue).await, accepted);
    // Nothing was recorded for the refused jobs.
    let stored = api.all_jobs("queued").await.len() + api.all_jobs("pending").await.len();
    assert_eq!(stored, accepted as usize, "jobs in the store");
    let metrics = api.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "offload_jobs_refused_total",
            &["reason=\"queue_full\""]
        ),
        f64::from(30 - accepted)
    );
    api.stop().await;
    env.cleanup().await;
}
