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
    let mut workers = Vec::new();
    for i in 0..3 {
        workers.push(WorkerProcess::start(&env, &format!("storm-{i}"), 4, &extra).await);
    }

    let started = Instant::now();
    let ids = submit_all(
        &api,
        JOBS,
        16,
        |i| json!({"kind": "sleep", "payload": {"ms": 5 + (i * 7919) % 46}}),
    )
    .await;
    assert_eq!(ids.len(), JOBS);

    // Every second: kill -9 a random worker and start a replacement, until every job is done.
    let mut kills = 0;
    let mut next_name = 3;
    let deadline = Duration::from_secs(180);
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
