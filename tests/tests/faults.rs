//! Fault injection: workers killed at random while thousands of jobs run, and the broker stopped
//! and started while jobs are being submitted. Each test is bounded in time and prints its
//! counts. They run one at a time (they load the machine) and the broker tests use a RabbitMQ
//! node of their own (`scripts/fault-broker.sh`), so other tests never see the outage.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// `OFFLOAD_AMQP_URL` may list a cluster's nodes: addresses that do not answer (here two no
/// broker listens on; each connection starts at a random one) are skipped and the API and the
/// worker run on the one that does. (The compose suite loses real nodes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_broker_addresses_skips_one_that_does_not_answer() {
    let env = TestEnv::new().await;
    let list = format!(
        "amqp://guest:guest@127.0.0.1:1/%2f,{},amqp://guest:guest@127.0.0.1:2/%2f",
        offload_tests::amqp_url()
    );
    let vars = [("OFFLOAD_AMQP_URL", list.as_str())];
    let api = ApiProcess::start(&env, &vars).await;
    let worker = WorkerProcess::start(&env, "listed-1", 4, &vars).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let job = api.submit(json!({"kind": "noop", "payload": {}})).await;
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        api.wait_for_status(id, "succeeded", Duration::from_secs(30))
            .await;
    }
    drop(worker);
    env.cleanup().await;
}

/// A connection the API or a worker gives up on (its consumer failed, or its set-up timed out)
/// is closed, not dropped: a consumer lapin still holds keeps the connection open and
/// heartbeating, and its unacknowledged deliveries would stay with it, never redelivered. Here
/// the consumer is kept alive, as lapin keeps one the broker registered after the wait for it
/// timed out: closing the connection hands its delivery back to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_given_up_on_hands_its_unacked_deliveries_back() {
    use lapin::{
        BasicProperties,
        options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions},
        types::{FieldTable, ShortString},
    };
    use offload_shared::broker;
    let env = TestEnv::new().await;
    // `test-`: a queue a failed run leaves is deleted by the next scripts/test.sh.
    let queue = format!("test-abandon-{}", uuid::Uuid::new_v4());
    let admin = env.broker.create_channel().await.expect("channel");
    admin
        .queue_declare(
            ShortString::from(queue.as_str()),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    admin
        .basic_publish(
            ShortString::from(""),
            ShortString::from(queue.as_str()),
            BasicPublishOptions::default(),
            b"job",
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    let deadline = Duration::from_secs(5);
    let given_up = broker::connect(&offload_tests::amqp_url(), "given up on", deadline, 5)
        .await
        .expect("connect");
    let channel = given_up.create_channel().await.expect("channel");
    let mut consumer = broker::consume(&channel, &queue, "held".into(), 1, deadline)
        .await
        .expect("consume");
    let delivery = tokio::time::timeout(deadline, consumer.next())
        .await
        .expect("a delivery in time")
        .expect("a delivery")
        .expect("no error");
    assert_eq!(delivery.data, b"job");
    assert_eq!(env.ready_count(&queue).await, 0, "the delivery is unacked");

    broker::abandon(&given_up).await;
    assert!(!given_up.status().connected(), "the connection is closed");
    poll(
        Duration::from_secs(10),
        "the delivery back in its queue",
        || async { (env.ready_count(&queue).await == 1).then_some(()) },
    )
    .await;
    drop((consumer, channel, given_up));
    admin
        .queue_delete(
            ShortString::from(queue.as_str()),
            QueueDeleteOptions::default(),
        )
        .await
        .expect("delete");
    env.cleanup().await;
}

/// One fault test at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Submits `count` jobs made by `job`, `concurrency` at a time; returns the ids of the 202s.
async fn submit_all(
    api: &ApiProcess,
    count: usize,
    concurrency: usize,
    job: impl Fn(usize) -> Value,
) -> Vec<String> {
    let bodies: Vec<Value> = (0..count).map(job).collect();
    stream::iter(bodies)
        .map(|body| async move {
            api.submit(body).await["id"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

async fn kill_storm(queue_type: &str) {
    let _serial = SERIAL.lock().await;
    const JOBS: usize = 2000;
    let env = TestEnv::new().await;
    let extra = [("OFFLOAD_QUEUE_TYPE", queue_type)];
    let api = ApiProcess::start(&env, &extra).await;

    // The whole backlog is queued first, so that every kill hits workers in the middle of jobs.
    let ids = submit_all(
        &api,
        JOBS,
        16,
        |i| json!({"kind": "sleep", "payload": {"ms": 5 + (i * 7919) % 46}}),
    )
    .await;
    assert_eq!(ids.len(), JOBS);
    let started = Instant::now();
    let mut workers = Vec::new();
    for i in 0..3 {
        workers.push(WorkerProcess::start(&env, &format!("storm-{i}"), 4, &extra).await);
    }

    // Every second: kill -9 a random worker and start a replacement, until every job is done.
    let mut kills = 0;
    let mut next_name = 3;
    let deadline = Duration::from_secs(60);
    let mut succeeded;
    loop {
        succeeded = api.all_jobs("succeeded").await;
        if succeeded.len() >= JOBS {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "only {} of {JOBS} jobs succeeded after {deadline:?}",
            succeeded.len()
        );
        let victim = workers.swap_remove(fastrand::usize(..workers.len()));
        victim.kill9().await;
        kills += 1;
        workers.push(WorkerProcess::start(&env, &format!("storm-{next_name}"), 4, &extra).await);
        next_name += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elapsed = started.elapsed();

    let by_id: HashMap<&str, &Value> = succeeded
        .iter()
        .filter_map(|j| Some((j["id"].as_str()?, j)))
        .collect();
    let lost: Vec<&String> = ids
        .iter()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .collect();
    let runs: u64 = succeeded
        .iter()
        .map(|j| j["runs"].as_u64().unwrap_or(0))
        .sum();
    let duplicated = succeeded
        .iter()
        .filter(|j| j["runs"].as_u64().unwrap_or(0) > 1)
        .count();
    let dead = api.all_jobs("dead").await.len();
    println!(
        "kill storm ({queue_type}): {JOBS} jobs, 3 workers at prefetch 4, {kills} kill -9s in {elapsed:.1?}: \
         {} succeeded, {} lost, {dead} dead, {duplicated} jobs ran more than once ({} extra runs)",
        succeeded.len(),
        lost.len(),
        runs.saturating_sub(JOBS as u64),
    );
    assert!(lost.is_empty(), "lost jobs: {lost:?}");
    assert_eq!(dead, 0);
    assert!(
        kills >= 1,
        "the storm must kill at least one worker mid-run"
    );
    assert_eq!(env.ready_count(&env.names.dead_queue).await, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_storm_loses_no_job_on_a_quorum_queue() {
    kill_storm("quorum").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_storm_loses_no_job_on_a_classic_queue() {
    kill_storm("classic").await;
}

/// What one submission during the outage came to.
struct Submission {
    status: u16,
    latency: Duration,
    id: Option<String>,
    /// A 503 whose confirm did not come in time names the job: it may still run.
    unknown: Option<String>,
    retry_after: bool,
}

async fn broker_restart(queue_type: &str) {
    let _serial = SERIAL.lock().await;
    const JOBS: usize = 1000;
    offload_tests::fault_broker("start").await;
    let url = offload_tests::fault_broker("url").await;
    let env = TestEnv::on(&url).await;
    let extra = [("OFFLOAD_QUEUE_TYPE", queue_type)];
    // Unknown outcomes are resolved within the test's bound.
    let mut api = ApiProcess::start(&env, &[extra[0], ("OFFLOAD_RESOLVE_AFTER_S", "5")]).await;
    let mut workers = Vec::new();
    for i in 0..2 {
        workers.push(WorkerProcess::start(&env, &format!("restart-{i}"), 4, &extra).await);
    }
    let client = api.http.clone();

    // Four clients submit at about 50 jobs/s in all while the broker goes away and comes back.
    let submitted = std::sync::atomic::AtomicUsize::new(0);
    let submit_one = |i: usize| {
        let client = client.clone();
        let url = api.url("/jobs");
        let submitted = &submitted;
        async move {
            tokio::time::sleep(Duration::from_millis(80)).await;
            let started = Instant::now();
            let response = client
                .post(url)
                .json(&json!({"kind": "sleep", "payload": {"ms": i % 20}}))
                .send()
                .await;
            let latency = started.elapsed();
            submitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match response {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry_after = r.headers().contains_key("retry-after");
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    Submission {
                        status,
                        latency,
                        id: (status == 202).then(|| body["id"].as_str().unwrap_or("").to_owned()),
                        unknown: body["job_id"].as_str().map(str::to_owned),
                        retry_after,
                    }
                }
                Err(e) => panic!("a submission failed without an answer after {latency:?}: {e}"),
            }
        }
    };
    let submissions = stream::iter(0..JOBS)
        .map(submit_one)
        .buffer_unordered(4)
        .collect::<Vec<_>>();
    let outage = async {
        poll(
            Duration::from_secs(30),
            "250 submissions before the outage",
            || async {
                (submitted.load(std::sync::atomic::Ordering::Relaxed) >= 250).then_some(())
            },
        )
        .await;
        offload_tests::fault_broker("stop-app").await;
        let down = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        offload_tests::fault_broker("start-app").await;
        let back = Instant::now();
        // The API finds the broker again by itself.
        poll(
            Duration::from_secs(15),
            "the API to be ready again within 15 s",
            || async {
                let r = api.http.get(api.url("/health/ready")).send().await.ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await;
        let api_ready = back.elapsed();
        // And the workers: a new job runs end to end.
        let after = api.submit(json!({"kind": "noop"})).await;
        let after_id = after["id"].as_str().expect("id").to_owned();
        api.wait_for_status(&after_id, "succeeded", Duration::from_secs(15))
            .await;
        (down, back, api_ready, back.elapsed(), after_id)
    };
    let (results, (down_at, back_at, recovered_in, workers_in, after_id)) =
        tokio::join!(submissions, outage);
    let accepted: Vec<String> = results
        .iter()
        .filter_map(|s| s.id.clone())
        .chain([after_id])
        .collect();
    let refused = results.iter().filter(|s| s.status == 503).count();
    let other: Vec<u16> = results
        .iter()
        .map(|s| s.status)
        .filter(|s| *s != 202 && *s != 503)
        .collect();
    let slowest = results.iter().map(|s| s.latency).max().unwrap_or_default();
    assert!(other.is_empty(), "answers other than 202/503: {other:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "a submission took {slowest:?}"
    );
    assert!(
        results
            .iter()
            .filter(|s| s.status == 503)
            .all(|s| s.retry_after),
        "a 503 without Retry-After"
    );
    assert!(refused > 0, "the outage must have refused some submissions");

    let started = Instant::now();
    let succeeded = poll(
        Duration::from_secs(90),
        "every accepted job to succeed",
        || async {
            // By id: jobs whose 503 was unknown may succeed too, and must not stand in for others.
            let done = api.all_jobs("succeeded").await;
            let ids: std::collections::HashSet<&str> =
                done.iter().filter_map(|j| j["id"].as_str()).collect();
            let all = accepted.iter().all(|id| ids.contains(id.as_str()));
            all.then_some(done)
        },
    )
    .await;
    let by_id: HashMap<&str, &Value> = succeeded
        .iter()
        .filter_map(|j| Some((j["id"].as_str()?, j)))
        .collect();
    let lost: Vec<&String> = accepted
        .iter()
        .filter(|id| !by_id.contains_key(id.as_str()))
        .collect();
    let extra_runs: u64 = succeeded
        .iter()
        .map(|j| j["runs"].as_u64().unwrap_or(1).saturating_sub(1))
        .sum();
    println!(
        "broker restart ({queue_type}): {JOBS} submissions, {} answered 202, {refused} answered 503, \
         slowest answer {slowest:?}; broker down {:.1?}; API ready {recovered_in:.1?} after the broker \
         was back, a new job succeeded {workers_in:.1?} after; all accepted jobs succeeded {:.1?} later; {} lost, {extra_runs} extra runs",
        accepted.len() - 1,
        back_at - down_at,
        started.elapsed(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");

    // The store tells the truth about the rest: a job whose confirm was unknown either ran and is
    // visible, or never ran and is gone; nothing stays pending or queued, and the workers ran no
    // job the store does not show.
    let unknown: Vec<&String> = results.iter().filter_map(|s| s.unknown.as_ref()).collect();
    poll(
        Duration::from_secs(60),
        "no job left pending or queued",
        || async {
            let open = api.all_jobs("pending").await.len() + api.all_jobs("queued").await.len();
            (open == 0).then_some(())
        },
    )
    .await;
    let visible = api.all_jobs("succeeded").await;
    let visible_ids: std::collections::HashSet<&str> =
        visible.iter().filter_map(|j| j["id"].as_str()).collect();
    let unknown_ran = unknown
        .iter()
        .filter(|id| visible_ids.contains(id.as_str()))
        .count();
    let mut ran = 0.0;
    for w in &workers {
        ran += w.succeeded().await;
    }
    let runs: u64 = visible
        .iter()
        .map(|j| j["runs"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "broker restart ({queue_type}): {} answers were unknown (503 naming the job); {unknown_ran} \
         of them ran and are visible, the rest are gone; visible jobs {}, runs recorded {runs}, \
         runs the workers settled {ran}",
        unknown.len(),
        visible.len()
    );
    assert!(
        ran <= runs as f64,
        "the workers ran {ran} jobs but the store shows only {runs} runs: a job ran invisibly"
    );
    assert!(api.is_running(), "the API must recover without a restart");
    for w in &mut workers {
        assert!(w.is_running(), "{} must recover without a restart", w.name);
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_submission_loses_no_accepted_job_on_a_quorum_queue() {
    broker_restart("quorum").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_submission_loses_no_accepted_job_on_a_classic_queue() {
    broker_restart("classic").await;
}
