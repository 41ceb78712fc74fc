//! Workers as a user starts them on one machine: with no metrics setting, any number of them run
//! side by side and serve jobs; an address the operator set stays binding.

use std::{collections::BTreeSet, time::Duration};

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll, run_binary};
use serde_json::json;

const DONE_WITHIN: Duration = Duration::from_secs(20);

/// The log line a worker writes when the default metrics port was taken and it took another.
const FELL_BACK: &str = "OFFLOAD_METRICS_ADDR is not set";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_with_the_default_metrics_address_start_on_one_machine_and_both_serve_jobs() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    // Arrange: two workers, neither told where to listen (the default is 0.0.0.0:9090).
    let mut first = WorkerProcess::start_with_default_metrics(&env, "w1", &[]).await;
    let mut second = WorkerProcess::start_with_default_metrics(&env, "w2", &[]).await;

    assert!(
        first.is_running() && second.is_running(),
        "both keep running"
    );
    assert_ne!(
        first.metrics_base, second.metrics_base,
        "each has its own port"
    );
    // 9090 can belong to one process at most (another test's worker may hold it), so at least
    // one of the two fell back to a free port, and said so with the address and the fix.
    let fallbacks: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|w| w.logs())
        .filter(|line| line.contains(FELL_BACK))
        .collect();
    assert!(
        !fallbacks.is_empty(),
        "no worker logged its fallback port:\n{}\n{}",
        first.logs().join("\n"),
        second.logs().join("\n")
    );
    for line in &fallbacks {
        assert!(
            line.contains("0.0.0.0:9090") && line.contains("set OFFLOAD_METRICS_ADDR to pin"),
            "{line}"
        );
    }
    for worker in [&first, &second] {
        let url = format!("{}/health/ready", worker.metrics_base);
        poll(
            Duration::from_secs(10),
            &format!("{} to answer {url}", worker.name),
            || async {
                let r = api.http.get(&url).send().await.ok()?;
                (r.status() == 200).then_some(())
            },
        )
        .await;
    }
    // The healthcheck with no setting probes 0.0.0.0:9090: it answers for the one of ours that
    // holds it (in a container, the only worker there).
    if let Some(holder) = [&first, &second]
        .into_iter()
        .find(|w| w.metrics_base.ends_with(":9090"))
    {
        let (status, output) = run_binary(false, &["healthcheck"], &[]);
        assert!(status.success(), "{} holds 9090: {output}", holder.name);
    }

    // Act: jobs arrive round-robin (prefetch 1 each).
    let mut ids = Vec::new();
    for _ in 0..8 {
        let job = api
            .submit(json!({"kind": "sleep", "payload": {"ms": 50}}))
            .await;
        ids.push(job["id"].as_str().expect("id").to_owned());
    }

    // Assert: all succeed, and both workers ran some.
    let mut ran_on = BTreeSet::new();
    for id in &ids {
        let done = api.wait_for_status(id, "succeeded", DONE_WITHIN).await;
        ran_on.insert(done["worker"].as_str().expect("worker").to_owned());
    }
    assert_eq!(
        ran_on,
        BTreeSet::from(["w1".to_owned(), "w2".to_owned()]),
        "both default workers serve jobs"
    );
    first.terminate();
    second.terminate();
    for worker in [&mut first, &mut second] {
        let status = worker.wait_exit(Duration::from_secs(30)).await;
        assert!(status.success(), "{} stops cleanly: {status}", worker.name);
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_the_operator_set_that_is_taken_stops_the_worker_naming_the_setting() {
    let env = TestEnv::new().await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = holder.local_addr().expect("addr").to_string();

    let (status, logs) =
        WorkerProcess::start_failing(&env, &[("OFFLOAD_METRICS_ADDR", &taken)]).await;

    assert!(
        !status.success(),
        "a set address does not fall back:\n{logs}"
    );
    assert!(
        logs.contains(&format!("cannot listen on {taken} (OFFLOAD_METRICS_ADDR)")),
        "{logs}"
    );
    assert!(!logs.contains(FELL_BACK), "{logs}");
    drop(holder);
    env.cleanup().await;
}
