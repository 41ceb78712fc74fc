//! The RabbitMQ users docs/operations.md ("RabbitMQ users and permissions") documents are
//! enough: an API user and a worker user with exactly those permissions on the prefix run a
//! job to success, a retried job too, and the API reads queue depth through the management API.

use std::time::Duration;

use offload_tests::{
    ApiProcess, TestEnv, WorkerProcess, metric_sum, poll, rabbit_users::RabbitUser,
};
use serde_json::json;

const DONE_WITHIN: Duration = Duration::from_secs(30);

/// The documented permissions for prefix `p` (regex-escaped): configure, write, read.
fn documented(p: &str) -> [String; 3] {
    [
        format!("^{p}\\."),
        format!("^({p}\\..*|amq\\.default)$"),
        format!("^{p}\\."),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_user_and_a_worker_user_with_the_documented_permissions_run_jobs_and_retries() {
    let env = TestEnv::new().await;
    let [configure, write, read] = documented(&env.prefix.replace('.', "\\."));
    let perms = [configure.as_str(), write.as_str(), read.as_str()];
    // The API's user has the `management` tag for OFFLOAD_MANAGEMENT_URL; the worker's none.
    let api_user = RabbitUser::create("offload-api", "api-pw-1", perms, &["management"]);
    let worker_user = RabbitUser::create("offload-worker", "worker-pw-1", perms, &[]);
    let api_url = api_user.amqp_url(5672);
    let worker_url = worker_user.amqp_url(5672);
    let management = format!(
        "http://{}:{}@127.0.0.1:15672",
        api_user.name, api_user.password
    );

    let mut api = ApiProcess::start(
        &env,
        &[
            ("OFFLOAD_AMQP_URL", &api_url),
            ("OFFLOAD_MANAGEMENT_URL", &management),
        ],
    )
    .await;
    let mut worker =
        WorkerProcess::start(&env, "w1", 1, &[("OFFLOAD_AMQP_URL", &worker_url)]).await;

    // A job, and one that fails its first attempt and is retried through the delay queues.
    let plain = api.submit(json!({"kind": "noop", "payload": {}})).await;
    let retried = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 10, "fail_attempts": 1}}))
        .await;
    let plain = plain["id"].as_str().expect("id");
    let retried = retried["id"].as_str().expect("id");
    api.wait_for_status(plain, "succeeded", DONE_WITHIN).await;
    let job = api.wait_for_status(retried, "succeeded", DONE_WITHIN).await;
    assert_eq!(job["attempt"], 2, "{job}");

    // The management API answers the API's user: the unacked gauge of the work queue is read.
    let queue = env.names.jobs_queue.clone();
    poll(
        Duration::from_secs(15),
        "the unacked gauge from the management API",
        || async {
            let text = api.metrics().await;
            text.lines()
                .any(|l| {
                    l.starts_with("offload_queue_messages_unacked")
                        && l.contains(&format!("queue=\"{queue}\""))
                })
                .then_some(())
        },
    )
    .await;
    let text = api.metrics().await;
    assert_eq!(
        metric_sum(
            &text,
            "offload_jobs_finished_total",
            &["status=\"succeeded\""]
        ),
        2.0,
        "{text}"
    );

    // Neither process logged a permission failure.
    worker.terminate();
    assert!(worker.wait_exit(Duration::from_secs(20)).await.success());
    api.terminate();
    assert!(api.wait_exit(Duration::from_secs(40)).await.success());
    for line in api.logs().iter().chain(worker.logs().iter()) {
        assert!(
            !line.contains("ACCESS_REFUSED") && !line.contains("access to"),
            "{line}"
        );
    }
    env.cleanup().await;
    drop(api_user);
    drop(worker_user);
}
