//! The worker SDK as a user runs it: the example worker `text_stats` (kind `text.stats` on the
//! queue `text`) against the real broker. It announces its kind, consumes only its own queue,
//! heartbeats and says when it leaves; a worker with an invalid kind refuses to start; a worker
//! that lacks a kind returns its jobs to the queue for one that has it (a mixed-version rollout).

use std::time::Duration;

use lapin::{
    BasicProperties, Channel,
    options::{BasicGetOptions, QueueDeleteOptions},
    types::ShortString,
};
use offload_shared::{
    JobEnvelope, JobEvent, JobId, JobKind, JobStatus, Settings,
    announce::{Announcement, WorkerState},
    broker,
    envelope::WIRE_VERSION,
    kinds::QueueName,
    topology,
};
use offload_tests::{
    ApiProcess, RETRY_BASE_MS, RETRY_CAP_MS, TestEnv, WorkerProcess, poll, program,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

const WITHIN: Duration = Duration::from_secs(20);
const KIND: &str = "text.stats";

/// The example's work queue under this test's prefix.
fn text_queue(env: &TestEnv) -> String {
    env.names
        .work_queue(&QueueName::parse("text").expect("valid"))
}

/// Starts the example worker named `name`, heartbeating every second.
async fn example(env: &TestEnv, name: &str) -> WorkerProcess {
    let path = program("text_stats", true);
    WorkerProcess::start_program(env, &path, name, 1, &[("OFFLOAD_WORKER_HEARTBEAT_S", "1")]).await
}

/// Settings of this test's slice of the broker, for declaring and binding as the API would.
fn settings(env: &TestEnv) -> Settings {
    let mut settings = Settings::from_env().expect("defaults");
    settings.amqp_url = env.url.clone();
    settings.queue_prefix = topology::QueuePrefix::parse(&env.prefix).expect("valid");
    settings.retry_base_ms = RETRY_BASE_MS;
    settings.retry_cap_ms = RETRY_CAP_MS;
    settings
}

/// A `text.stats` job as a producer publishes it.
fn job(text: &str) -> JobEnvelope {
    JobEnvelope {
        v: WIRE_VERSION,
        id: JobId::new(),
        kind: JobKind::parse(KIND).expect("valid"),
        payload: json!({"text": text, "top": 1}),
        attempt: 1,
        max_attempts: 3,
        timeout_ms: 10_000,
        submitted_at: OffsetDateTime::now_utc(),
        files: Vec::new(),
    }
}

/// Publishes `envelope` straight to the queue `queue` (default exchange), confirmed.
async fn publish_to_queue(env: &TestEnv, queue: &str, envelope: &JobEnvelope) {
    let channel = broker::confirm_channel(&env.broker, Duration::from_secs(5))
        .await
        .expect("confirm channel");
    let properties: BasicProperties = broker::persistent_json()
        .with_message_id(ShortString::from(envelope.id.to_string()))
        .with_type(ShortString::from(envelope.kind.as_str()));
    broker::publish_confirmed(
        &channel,
        "",
        queue,
        &envelope.to_bytes(),
        properties,
        Duration::from_secs(5),
    )
    .await
    .expect("published");
}

/// Takes every message waiting in `queue`.
async fn take_all(channel: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    while let Some(message) = channel
        .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        bodies.push(message.delivery.data);
    }
    bodies
}

/// Reads announcements from the workers queue until one matches `wanted`.
async fn announcement(
    env: &TestEnv,
    what: &str,
    wanted: impl Fn(&Announcement) -> bool,
) -> Announcement {
    let channel = env.broker.create_channel().await.expect("channel");
    poll(WITHIN, what, || async {
        take_all(&channel, &env.names.workers_queue)
            .await
            .iter()
            .filter_map(|body| Announcement::from_bytes(body).ok())
            .find(|a| wanted(a))
    })
    .await
}

/// Reads lifecycle events until each of `ids` has one with `status`; returns those, in order.
async fn events(env: &TestEnv, ids: &[JobId], status: JobStatus) -> Vec<JobEvent> {
    let channel = env.broker.create_channel().await.expect("channel");
    let seen = std::sync::Mutex::new(Vec::<JobEvent>::new());
    poll(WITHIN, &format!("{status:?} events of {ids:?}"), || async {
        let taken = take_all(&channel, &env.names.events_queue).await;
        let mut seen = seen.lock().expect("lock");
        seen.extend(
            taken
                .iter()
                .flat_map(|body| JobEvent::parse_message(body))
                .filter_map(Result::ok)
                .filter(|e| e.status == status),
        );
        ids.iter()
            .map(|id| seen.iter().find(|e| e.job_id == *id).cloned())
            .collect::<Option<Vec<_>>>()
    })
    .await
}

/// Deletes the example's work queue (not among the names `cleanup` knows).
async fn delete_text_queue(env: &TestEnv) {
    let channel = env.broker.create_channel().await.expect("channel");
    let _ = channel
        .queue_delete(
            ShortString::from(text_queue(env).as_str()),
            QueueDeleteOptions::default(),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_announces_its_kind_runs_jobs_of_its_queue_and_says_when_it_leaves() {
    let env = TestEnv::new().await;
    let mut worker = example(&env, "stats-1").await;

    let first = announcement(&env, "the example's announcement", |a| {
        a.worker == "stats-1" && a.state == WorkerState::Alive
    })
    .await;
    assert_eq!(first.queues, [QueueName::parse("text").expect("valid")]);
    assert_eq!(first.kinds.len(), 1, "{first:?}");
    let spec = &first.kinds[0];
    assert_eq!(spec.name.as_str(), KIND);
    assert_eq!(spec.queue.as_str(), "text");
    assert_eq!(spec.max_attempts, Some(3));
    assert_eq!(
        spec.payload_schema["properties"]["text"]["type"], "string",
        "{}",
        spec.payload_schema
    );
    assert_eq!(spec.payload_schema["additionalProperties"], false);
    assert_eq!((first.prefetch, first.heartbeat_s), (1, 1));
    assert!(
        first.software.starts_with("offload-worker "),
        "{}",
        first.software
    );
    let beat = announcement(&env, "a heartbeat after the announcement", |a| {
        a.worker == "stats-1" && a.at > first.at
    })
    .await;
    assert_eq!(beat.started_at, first.started_at);

    // A job put straight in the example's queue runs there: the worker consumes `<p>.jobs.text`.
    let envelope = job("to be or not to be");
    publish_to_queue(&env, &text_queue(&env), &envelope).await;
    let done = events(&env, &[envelope.id], JobStatus::Succeeded)
        .await
        .remove(0);
    assert_eq!(done.worker, "stats-1");
    assert_eq!(
        done.result,
        Some(json!({"words": 6, "distinct": 4, "top": [{"word": "be", "count": 2}]}))
    );
    // It does not consume the default queue: that one has no consumer.
    let channel = env.broker.create_channel().await.expect("channel");
    let default = channel
        .queue_declare(
            ShortString::from(env.names.jobs_queue.as_str()),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("the default queue exists");
    assert_eq!(default.consumer_count(), 0);

    worker.terminate();
    assert!(worker.wait_exit(WITHIN).await.success());
    announcement(&env, "the leaving announcement", |a| {
        a.worker == "stats-1" && a.state == WorkerState::Leaving
    })
    .await;
    delete_text_queue(&env).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_an_invalid_kind_name_refuses_to_start_naming_why() {
    let env = TestEnv::new().await;
    // A broker that is not there: the refusal comes before connecting.
    let nowhere = [("OFFLOAD_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")];
    let vars = [nowhere[0], ("SDK_TEST_JOBS", "bad-kind")];
    let path = program("sdk-test-worker", false);
    let (status, logs) = WorkerProcess::program_failing(&env, &path, &vars).await;
    assert!(!status.success(), "{status}: {logs}");
    assert!(logs.contains("cannot run job kind \"Bad Kind\""), "{logs}");
    assert!(logs.contains("kind name"), "{logs}");
    assert!(!logs.contains("cannot reach RabbitMQ"), "{logs}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_the_kind_returns_its_jobs_to_the_queue_for_one_that_has_it() {
    let env = TestEnv::new().await;
    // The stock worker runs noop and sleep only; `text.stats` is routed to its own queue, as
    // the API does once a worker announced it.
    let old = WorkerProcess::start(&env, "old", 1, &[]).await;
    topology::bind_kind(
        &env.broker,
        &settings(&env),
        &JobKind::parse(KIND).expect("valid"),
        &QueueName::parse("text").expect("valid"),
    )
    .await
    .expect("bound");

    // Two jobs land in the default queue, as if published before the kind moved.
    let jobs = [job("one two two"), job("three three three")];
    for envelope in &jobs {
        publish_to_queue(&env, &env.names.jobs_queue, envelope).await;
    }
    poll(WITHIN, "the old worker returning both jobs", || async {
        let returned = old
            .settled(&["kind=\"text.stats\"", "outcome=\"returned\""])
            .await;
        (returned >= 2.0).then_some(())
    })
    .await;
    poll(WITHIN, "both jobs back in the text queue", || async {
        (env.ready_count(&text_queue(&env)).await == 2).then_some(())
    })
    .await;
    let warnings = old
        .logs()
        .iter()
        .filter(|l| l.contains("no handler for kind text.stats"))
        .count();
    assert_eq!(warnings, 1, "one warning per kind, not per job");

    // A worker that has the kind runs them, still on their first attempt.
    let _new = example(&env, "new").await;
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let done = events(&env, &ids, JobStatus::Succeeded).await;
    for (done, top) in done.into_iter().zip(["two", "three"]) {
        assert_eq!((done.worker.as_str(), done.attempt), ("new", 1));
        let result: Value = done.result.expect("a result");
        assert_eq!(result["top"][0]["word"], top, "{result}");
    }
    delete_text_queue(&env).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_is_per_queue_and_jobs_given_up_on_shutdown_go_back_on_the_same_attempt() {
    let env = TestEnv::new().await;
    let path = program("sdk-test-worker", false);
    let vars = [
        ("SDK_TEST_JOBS", "patient,patient.other"),
        ("OFFLOAD_WORKER_HEARTBEAT_S", "1"),
    ];
    let mut worker = WorkerProcess::start_program(&env, &path, "patient-1", 1, &vars).await;
    let other_queue = env
        .names
        .work_queue(&QueueName::parse("other").expect("valid"));

    // With prefetch 1, one long job per queue: both run at once, since the prefetch is per queue.
    let mut long = job("");
    long.kind = JobKind::parse("patient").expect("valid");
    long.payload = json!({"ms": 600_000});
    let mut other = job("");
    other.id = JobId::new();
    other.kind = JobKind::parse("patient.other").expect("valid");
    other.payload = json!({"ms": 600_000});
    publish_to_queue(&env, &env.names.jobs_queue, &long).await;
    publish_to_queue(&env, &other_queue, &other).await;
    events(&env, &[long.id, other.id], JobStatus::Running).await;
    let busy = announcement(&env, "a heartbeat with both jobs in flight", |a| {
        a.worker == "patient-1" && a.in_flight == 2
    })
    .await;
    let default = QueueName::default_queue();
    assert_eq!(
        busy.queues,
        [default, QueueName::parse("other").expect("valid")]
    );

    // SIGTERM: their contexts are cancelled, they give up, and go back unspent.
    worker.terminate();
    assert!(worker.wait_exit(WITHIN).await.success());
    let channel = env.broker.create_channel().await.expect("channel");
    for (queue, sent) in [(&env.names.jobs_queue, &long), (&other_queue, &other)] {
        let back = take_all(&channel, queue).await;
        assert_eq!(back.len(), 1, "{queue}");
        let envelope = JobEnvelope::from_bytes(&back[0]).expect("an envelope");
        assert_eq!((envelope.id, envelope.attempt), (sent.id, 1), "{queue}");
    }
    let later: Vec<JobEvent> = take_all(&channel, &env.names.events_queue)
        .await
        .iter()
        .flat_map(|body| JobEvent::parse_message(body))
        .filter_map(Result::ok)
        .filter(|e| e.status != JobStatus::Running)
        .collect();
    assert!(later.is_empty(), "no attempt ended: {later:?}");
    let _ = channel
        .queue_delete(
            ShortString::from(other_queue.as_str()),
            QueueDeleteOptions::default(),
        )
        .await;
    env.cleanup().await;
}

/// Closes the broker connection of the worker named `name` (`rabbitmqctl close_connection`),
/// as a network cut would; other connections are left alone.
fn close_connection_of(name: &str) {
    let listed = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "--no-table-headers",
            "-q",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    let wanted = format!("\"offload-worker {name}\"");
    let pid = text
        .lines()
        .find(|l| l.contains(&wanted))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("no connection of {name}:\n{text}"));
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", pid, "the sdk test cuts it"])
        .output()
        .expect("rabbitmqctl runs");
    assert!(closed.status.success(), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_lost_connection_the_worker_announces_itself_again_and_consumes() {
    let env = TestEnv::new().await;
    // Heartbeats far apart: an announcement within the test comes from the reconnection.
    let path = program("text_stats", true);
    let vars = [("OFFLOAD_WORKER_HEARTBEAT_S", "300")];
    let worker = WorkerProcess::start_program(&env, &path, "stats-re", 1, &vars).await;
    let first = announcement(&env, "the first announcement", |a| a.worker == "stats-re").await;

    close_connection_of("stats-re");
    let again = announcement(&env, "an announcement after reconnecting", |a| {
        a.worker == "stats-re" && a.at > first.at
    })
    .await;
    assert_eq!(again.state, WorkerState::Alive);
    assert_eq!(again.started_at, first.started_at, "the same process");
    assert!(
        worker.logs().iter().any(|l| l.contains("lost the broker")),
        "the connection was really lost"
    );
    let envelope = job("again and again");
    publish_to_queue(&env, &text_queue(&env), &envelope).await;
    let done = events(&env, &[envelope.id], JobStatus::Succeeded)
        .await
        .remove(0);
    assert_eq!(done.worker, "stats-re");
    delete_text_queue(&env).await;
    env.cleanup().await;
}

/// The example end to end, as docs/writing-workers.md tells a user to run it: the API learns
/// the kind from the worker's announcement, checks payloads against its schema, and the job's
/// typed result shows in `GET /jobs/{id}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_submitted_through_the_api_runs_on_the_example_with_its_typed_result() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = example(&env, "stats-api").await;
    let body = json!({"kind": KIND, "payload": {"text": "a b a", "top": 1}});
    // The API accepts the kind once it has read the worker's announcement.
    let id = poll(
        WITHIN,
        "POST /jobs of text.stats to be accepted",
        || async {
            let response = api
                .http
                .post(api.url("/jobs"))
                .json(&body)
                .send()
                .await
                .expect("POST /jobs");
            if response.status() != 202 {
                return None;
            }
            let job: Value = response.json().await.expect("job JSON");
            job["id"].as_str().map(str::to_owned)
        },
    )
    .await;
    let job = api.wait_for_status(&id, "succeeded", WITHIN).await;
    assert_eq!(
        job["result"],
        json!({"words": 3, "distinct": 2, "top": [{"word": "a", "count": 2}]})
    );
    delete_text_queue(&env).await;
    env.cleanup().await;
}
