//! Long jobs past the broker's consumer timeout, on the private fault node with its consumer
//! timeout lowered to 5 s (`scripts/fault-broker.sh consumer-timeout=5000`): the SDK example
//! `long_report` (kind `report.build`, marked long) runs a job for 4× that timeout exactly once
//! with heartbeats showing on the job; when its worker is killed mid-run the API starts it again
//! within the lease and another worker finishes it; a worker of prefetch 1 busy with a long job
//! leaves the next one in the queue (for other workers) instead of holding it. A job of a kind
//! that is not long, run past the timeout, is cut off and delivered again: the timeout is real.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use offload_shared::kinds::QueueName;
use offload_tests::{ApiProcess, TestEnv, WorkerProcess, fault_broker, poll, program, timestamp};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The fault node's consumer timeout during these tests.
const CONSUMER_TIMEOUT: Duration = Duration::from_secs(5);

/// Tests of this binary using the lowered timeout; the last one to finish restores the default,
/// so the fault tests of other binaries get the broker's usual 30 minutes.
static USERS: Mutex<usize> = Mutex::new(0);

/// Holds the fault node's lowered consumer timeout for one test.
struct ShortTimeout;

impl ShortTimeout {
    async fn set() -> Self {
        fault_broker("start").await;
        *USERS.lock().expect("users") += 1;
        fault_broker(&format!(
            "consumer-timeout={}",
            CONSUMER_TIMEOUT.as_millis()
        ))
        .await;
        ShortTimeout
    }
}

impl Drop for ShortTimeout {
    fn drop(&mut self) {
        let mut users = USERS.lock().expect("users");
        *users -= 1;
        if *users == 0 {
            let script =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fault-broker.sh");
            let _ = std::process::Command::new("bash")
                .arg(script)
                .arg("consumer-timeout=1800000")
                .output();
        }
    }
}

fn id(job: &Value) -> String {
    job["id"].as_str().expect("id").to_owned()
}

/// The fault node's test env, an API, and the API's knowledge of `report.build` once `worker`
/// (the `long_report` example) has announced it.
async fn start(name: &str, extra: &[(&str, &str)]) -> (TestEnv, ApiProcess, WorkerProcess) {
    let url = fault_broker("url").await;
    let env = TestEnv::on(&url).await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = report_worker(&env, name, extra).await;
    poll(
        Duration::from_secs(30),
        "the API to learn report.build",
        || async { api.kind("report.build").await.filter(|k| k["long"] == true) },
    )
    .await;
    (env, api, worker)
}

async fn report_worker(env: &TestEnv, name: &str, extra: &[(&str, &str)]) -> WorkerProcess {
    WorkerProcess::start_program(env, &program("long_report", true), name, 1, extra).await
}

async fn submit_report(api: &ApiProcess, seconds: u64) -> String {
    id(&api
        .submit(json!({"kind": "report.build", "payload": {"seconds": seconds}}))
        .await)
}

#[tokio::test]
async fn a_long_job_runs_four_times_the_consumer_timeout_exactly_once_with_heartbeats() {
    let _timeout = ShortTimeout::set().await;
    // The default lease (30 s, a heartbeat every 10 s): no test-only setting.
    let (env, api, worker) = start("long-once", &[]).await;
    let job = submit_report(&api, 4 * CONSUMER_TIMEOUT.as_secs()).await;

    let running = api
        .wait_for_status(&job, "running", Duration::from_secs(20))
        .await;
    assert!(running["lease_until"].is_string(), "{running}");
    let beat = poll(
        Duration::from_secs(20),
        "a heartbeat after the start",
        || async {
            let now = api.job(&job).await;
            (now["status"] == "running"
                && now["heartbeat_at"].is_string()
                && timestamp(&now, "heartbeat_at") > timestamp(&now, "started_at"))
            .then_some(now)
        },
    )
    .await;
    println!(
        "heartbeat {} after the start, lease until {}",
        timestamp(&beat, "heartbeat_at") - timestamp(&beat, "started_at"),
        beat["lease_until"]
    );
    let done = api
        .wait_for_status(&job, "succeeded", Duration::from_secs(60))
        .await;
    let ran = timestamp(&done, "finished_at") - timestamp(&done, "started_at");
    println!(
        "ran {ran} under a {CONSUMER_TIMEOUT:?} consumer timeout: runs {}, attempt {}",
        done["runs"], done["attempt"]
    );
    assert_eq!(
        (done["runs"].as_u64(), done["attempt"].as_u64()),
        (Some(1), Some(1)),
        "started once: {done}"
    );
    assert_eq!(done["result"], json!({"steps": 20}));
    assert!(ran >= time::Duration::seconds(20), "{ran}");
    assert_eq!(
        done["lease_until"],
        Value::Null,
        "the end releases the lease"
    );
    assert_eq!(worker.settled(&["outcome=\"succeeded\""]).await, 1.0);
    let lost: Vec<String> = worker
        .logs()
        .into_iter()
        .filter(|l| l.contains("lost the broker"))
        .collect();
    assert!(
        lost.is_empty(),
        "the broker never closed the worker's channel: {lost:?}"
    );

    api.stop().await;
    drop(worker);
    env.cleanup().await;
}

#[tokio::test]
async fn a_long_job_whose_worker_is_killed_starts_again_within_its_lease_and_succeeds() {
    const LEASE_S: u64 = 6;
    let _timeout = ShortTimeout::set().await;
    let lease = LEASE_S.to_string();
    let vars = [("OFFLOAD_LEASE_S", lease.as_str())];
    let (env, api, first) = start("long-killed", &vars).await;
    let job = submit_report(&api, 12).await;
    let running = api
        .wait_for_status(&job, "running", Duration::from_secs(20))
        .await;
    assert_eq!(running["worker"], "long-killed");
    let second = report_worker(&env, "long-heir", &vars).await;
    // Past the consumer timeout: the first worker holds the job by its lease alone.
    tokio::time::sleep(CONSUMER_TIMEOUT + Duration::from_secs(1)).await;
    assert_eq!(api.job(&job).await["runs"], 1);

    first.kill9().await;
    let killed = OffsetDateTime::now_utc();
    let killed_at = Instant::now();
    let again = poll(Duration::from_secs(30), "attempt 2 to start", || async {
        let now = api.job(&job).await;
        (now["attempt"] == 2 && now["status"] == "running").then_some(now)
    })
    .await;
    let restart = timestamp(&again, "started_at") - killed;
    println!(
        "started again {restart} after the kill (lease {LEASE_S} s), on {}: {}",
        again["worker"], again["error"]
    );
    assert_eq!(again["worker"], "long-heir");
    assert!(
        restart <= time::Duration::seconds(i64::try_from(LEASE_S).expect("small") + 4),
        "a dead worker's long job starts again within its lease and a reaper pass: {restart}"
    );
    let done = api
        .wait_for_status(&job, "succeeded", Duration::from_secs(40))
        .await;
    println!(
        "succeeded {:?} after the kill: runs {}, attempt {}",
        killed_at.elapsed(),
        done["runs"],
        done["attempt"]
    );
    assert_eq!(
        (
            done["runs"].as_u64(),
            done["attempt"].as_u64(),
            done["worker"].as_str()
        ),
        (Some(2), Some(2), Some("long-heir")),
        "{done}"
    );

    api.stop().await;
    drop(second);
    env.cleanup().await;
}

#[tokio::test]
async fn a_busy_worker_leaves_the_next_job_in_the_queue_while_a_long_job_fills_its_slot() {
    let _timeout = ShortTimeout::set().await;
    let (env, api, worker) = start("long-slot", &[]).await;
    let first = submit_report(&api, 10).await;
    api.wait_for_status(&first, "running", Duration::from_secs(20))
        .await;
    let second = submit_report(&api, 1).await;
    let work_queue = env
        .names
        .work_queue(&QueueName::parse("reports").expect("valid"));
    // Past the consumer timeout: a job this worker held unacknowledged would close its channel.
    let until = Instant::now() + CONSUMER_TIMEOUT + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(
            api.job(&second).await["status"],
            "queued",
            "the second job waits for the slot"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        env.ready_count(&work_queue).await,
        1,
        "it waits in the broker, where another worker would take it"
    );
    let one = api
        .wait_for_status(&first, "succeeded", Duration::from_secs(30))
        .await;
    let two = api
        .wait_for_status(&second, "succeeded", Duration::from_secs(30))
        .await;
    assert!(
        timestamp(&two, "started_at") >= timestamp(&one, "finished_at"),
        "one at a time on a worker of prefetch 1: {one} {two}"
    );
    for job in [&one, &two] {
        assert_eq!(
            (job["runs"].as_u64(), job["attempt"].as_u64()),
            (Some(1), Some(1)),
            "{job}"
        );
    }

    api.stop().await;
    drop(worker);
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_that_is_not_long_is_cut_off_by_the_consumer_timeout_and_delivered_again() {
    let _timeout = ShortTimeout::set().await;
    let url = fault_broker("url").await;
    let env = TestEnv::on(&url).await;
    let api = ApiProcess::start(&env, &[]).await;
    // Only the default queue: fewer queues to declare on the fault node.
    let worker = WorkerProcess::start(&env, "short-cut", 1, &[("OFFLOAD_QUEUES", "default")]).await;
    let job = id(&api
        .submit(json!({"kind": "sleep", "payload": {"ms": 9000}}))
        .await);
    let twice = poll(Duration::from_secs(30), "a second start", || async {
        let now = api.job(&job).await;
        (now["runs"].as_u64() >= Some(2)).then_some(now)
    })
    .await;
    println!("a 9 s sleep under a {CONSUMER_TIMEOUT:?} consumer timeout: {twice}");
    assert!(
        worker.logs().iter().any(|l| l.contains("lost the broker")),
        "the broker closed the channel holding the unacknowledged job"
    );

    api.stop().await;
    drop(worker);
    env.cleanup().await;
}
