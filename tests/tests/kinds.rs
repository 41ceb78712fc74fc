//! Kinds are data: workers announce them (here the test publishes the announcements itself,
//! straight to `<prefix>.workers`), the API records, binds and accepts them at once, keeps a
//! differing spec out while the recorded one is still run, and lists kinds and workers.

use std::time::Duration;

use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, QueueDeleteOptions},
    types::ShortString,
};
use offload_tests::{ApiProcess, TestEnv, announce::announcement, metric_sum, poll};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(15);

fn resize_on(queue: &str) -> Value {
    json!({
        "name": "resize",
        "queue": queue,
        "payload_schema": {
            "type": "object",
            "properties": {"width": {"type": "integer", "minimum": 1}},
            "required": ["width"],
        },
    })
}

/// `worker` announces itself (`state`: alive or leaving) as running `resize` on `queue`.
async fn announce_resize(env: &TestEnv, worker: &str, state: &str, queue: &str) {
    env.announce(&announcement(
        worker,
        state,
        json!([resize_on(queue)]),
        &[queue],
    ))
    .await;
}

/// `w1`, the worker of `resize` on `images`, leaves; waits until `resize` lists no worker.
async fn resize_worker_leaves(env: &TestEnv, api: &ApiProcess) {
    announce_resize(env, "w1", "leaving", "images").await;
    poll(WITHIN, "resize to list no worker", || async {
        api.kind("resize")
            .await
            .filter(|k| k["workers"] == json!([]))
    })
    .await;
}

async fn delete_queue(env: &TestEnv, queue: &str) {
    if let Ok(channel) = env.broker.create_channel().await {
        let _ = channel
            .queue_delete(ShortString::from(queue), QueueDeleteOptions::default())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_kind_is_accepted_at_once_and_a_differing_spec_is_kept_out() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let images = format!("{}.jobs.images", env.prefix);
    let good = json!({"kind": "resize", "payload": {"width": 640}});

    // Arrange: before any announcement the kind is unknown.
    let (status, problem) = api.post_job(&good).await;
    assert_eq!(status, 422, "{problem}");

    // Act: a worker announces it.
    announce_resize(&env, "w1", "alive", "images").await;

    // Assert: accepted as soon as the announcement is applied, no restart.
    poll(WITHIN, "resize to be accepted", || async {
        (api.post_job(&good).await.0 == 202).then_some(())
    })
    .await;
    let (status, problem) = api
        .post_job(&json!({"kind": "resize", "payload": {"width": "wide"}}))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap_or("").contains("/width"),
        "{problem}"
    );
    poll(WITHIN, "the job to wait in the images queue", || async {
        (env.ready_count(&images).await >= 1).then_some(())
    })
    .await;

    let listed = api.kind("resize").await.expect("resize listed");
    assert_eq!(listed["queue"], "images");
    assert_eq!(listed["work_queue"], images.as_str());
    assert_eq!(listed["source"], "announced");
    assert_eq!(listed["workers"], json!(["w1"]));
    assert_eq!(listed["conflict"], Value::Null);
    assert_eq!(listed["payload_schema"]["required"], json!(["width"]));
    let stats = poll(WITHIN, "the work queue's depth in GET /kinds", || async {
        api.kind("resize")
            .await
            .map(|k| k["queue_stats"].clone())
            .filter(|q| q["ready"].as_u64() >= Some(1))
    })
    .await;
    assert_eq!(stats["consumers"], 0, "{stats}");
    let label = format!("queue=\"{images}\"");
    let ready = metric_sum(
        &api.metrics().await,
        "offload_queue_messages_ready",
        &[&label],
    );
    assert!(ready >= 1.0, "the kind's queue has its gauge: {ready}");
    let doc = api.get_json("/openapi.json").await;
    let payload = &doc["components"]["schemas"]["payload.resize"];
    assert_eq!(
        payload["required"],
        json!(["width"]),
        "the announced schema is documented"
    );
    let sleep = api.kind("sleep").await.expect("built-in sleep listed");
    assert_eq!(sleep["source"], "builtin");
    let workers = api.get_json("/workers").await;
    let w1 = workers["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["name"] == "w1")
        .cloned()
        .expect("w1 listed");
    assert_eq!(w1["state"], "alive");
    assert_eq!(w1["kinds"], json!(["resize"]));
    assert_eq!(w1["queues"], json!(["images"]));
    assert_eq!(w1["software"], "kinds-test");

    // A second worker announces resize on another queue while w1 still runs it: a conflict,
    // reported and not merged.
    announce_resize(&env, "w2", "alive", "thumbs").await;
    let conflicted = poll(WITHIN, "the conflict to be reported", || async {
        api.kind("resize")
            .await
            .filter(|k| k["conflict"].is_string())
    })
    .await;
    let text = conflicted["conflict"].as_str().expect("text");
    assert!(
        text.contains("w2") && text.contains("w1") && text.contains("thumbs"),
        "{text}"
    );
    assert_eq!(conflicted["queue"], "images");
    assert_eq!(conflicted["workers"], json!(["w1"]));
    let conflicts = metric_sum(&api.metrics().await, "offload_kind_conflicts_total", &[]);
    assert_eq!(conflicts, 1.0);
    let (status, problem) = api.post_job(&good).await;
    assert_eq!(status, 202, "{problem}");
    poll(WITHIN, "the second job in the images queue too", || async {
        (env.ready_count(&images).await >= 2).then_some(())
    })
    .await;

    // w2 leaves; w1's next heartbeat finds nobody announcing another spec: the conflict is over.
    announce_resize(&env, "w2", "leaving", "thumbs").await;
    announce_resize(&env, "w1", "alive", "images").await;
    poll(WITHIN, "the conflict to clear", || async {
        api.kind("resize").await.filter(|k| k["conflict"].is_null())
    })
    .await;

    // w1 leaves: the kind stays accepted, its jobs wait, and it lists no worker.
    resize_worker_leaves(&env, &api).await;
    let (status, problem) = api.post_job(&good).await;
    assert_eq!(status, 202, "{problem}");
    let workers = api.get_json("/workers").await;
    assert_eq!(
        workers["workers"],
        json!([]),
        "leaving workers are not listed"
    );

    for queue in [images.as_str(), &format!("{}.jobs.thumbs", env.prefix)] {
        delete_queue(&env, queue).await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_announcements_and_invalid_specs_are_refused_and_the_api_keeps_serving() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;

    env.announce(b"not an announcement").await;
    let mut newer: Value =
        serde_json::from_slice(&announcement("w0", "alive", json!([]), &[])).expect("json");
    newer["v"] = json!(99);
    env.announce(newer.to_string().as_bytes()).await;
    let kinds = json!([
        {"name": "Bad Name"},
        {"name": "broken", "payload_schema": {"type": 12}},
        {"name": "fine"},
    ]);
    env.announce(&announcement("w3", "alive", kinds, &["default"]))
        .await;

    // The valid kind of the same announcement is taken; the invalid ones are not.
    poll(WITHIN, "the valid kind to be listed", || async {
        api.kind("fine").await
    })
    .await;
    let listed = api.get_json("/kinds").await;
    let names: Vec<&str> = listed["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    // The valid announced kind beside the built-in ones, by name.
    let mut expected: Vec<String> = offload_worker::handlers::builtin::specs()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    expected.push("fine".to_owned());
    expected.sort();
    assert_eq!(names, expected, "{listed}");
    assert_eq!(
        api.kind("fine").await.expect("fine")["workers"],
        json!(["w3"])
    );
    let (status, problem) = api
        .post_job(&json!({"kind": "broken", "payload": {}}))
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) = api.post_job(&json!({"kind": "fine", "payload": {}})).await;
    assert_eq!(status, 202, "{problem}");
    // A worker whose heartbeats stop counts as gone after three missed ones; its kind stays.
    let mut brief: Value = serde_json::from_slice(&announcement(
        "w4",
        "alive",
        json!([{"name": "brief"}]),
        &[],
    ))
    .expect("json");
    brief["heartbeat_s"] = json!(1);
    env.announce(brief.to_string().as_bytes()).await;
    poll(WITHIN, "brief to list its worker", || async {
        api.kind("brief")
            .await
            .filter(|k| k["workers"] == json!(["w4"]))
    })
    .await;
    poll(WITHIN, "the silent worker to count as gone", || async {
        api.kind("brief")
            .await
            .filter(|k| k["workers"] == json!([]))
    })
    .await;
    let workers = api.get_json("/workers").await;
    assert!(
        !workers["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .any(|w| w["name"] == "w4"),
        "{workers}"
    );
    let (status, problem) = api.post_job(&json!({"kind": "brief", "payload": {}})).await;
    assert_eq!(status, 202, "{problem}");

    let refused = metric_sum(
        &api.metrics().await,
        "offload_announcements_refused_total",
        &[],
    );
    assert_eq!(refused, 2.0);
    let health = api
        .http
        .get(api.url("/health/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(health.status(), 200);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_another_producer_published_runs_and_shows_in_the_store() {
    use offload_shared::{JobEnvelope, JobId, JobKind, envelope::WIRE_VERSION};

    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = offload_tests::WorkerProcess::start(&env, "w1", 1, &[]).await;

    // Arrange: an envelope published straight to the jobs exchange, as another producer would.
    let id = JobId::new();
    let envelope = JobEnvelope {
        v: WIRE_VERSION,
        id,
        kind: JobKind::parse("noop").expect("valid"),
        payload: json!({"from": "elsewhere"}),
        attempt: 1,
        max_attempts: 2,
        timeout_ms: 10_000,
        submitted_at: time::OffsetDateTime::now_utc(),
        files: Vec::new(),
    };
    let channel = env.broker.create_channel().await.expect("channel");
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirms");
    let confirm = channel
        .basic_publish(
            ShortString::from(env.names.jobs_exchange.as_str()),
            ShortString::from("noop"),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &envelope.to_bytes(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(id.to_string().into())
                .with_content_type("application/json".into())
                .with_type("noop".into()),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(
        confirm.is_ack() && confirm.take_message().is_none(),
        "routed"
    );

    // Assert: the stock worker runs it, and its events make it visible through the API.
    let id = id.to_string();
    let done = poll(WITHIN, "the job to show succeeded", || async {
        let response = api
            .http
            .get(api.url(&format!("/jobs/{id}")))
            .send()
            .await
            .expect("GET");
        if response.status() != 200 {
            return None;
        }
        let job: Value = response.json().await.expect("JSON");
        (job["status"] == "succeeded").then_some(job)
    })
    .await;
    assert_eq!(done["kind"], "noop");
    assert_eq!(done["worker"], "w1");
    assert_eq!(done["max_attempts"], 2);
    assert_eq!(done["result"], json!({"from": "elsewhere"}));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_kinds_survive_a_restart_and_a_new_spec_replaces_an_abandoned_one() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    announce_resize(&env, "w1", "alive", "images").await;
    poll(WITHIN, "resize to be listed", || async {
        api.kind("resize").await
    })
    .await;

    // Restarted, the API accepts the recorded kind before any worker announces it again.
    api.stop().await;
    let api = ApiProcess::start(&env, &[]).await;
    let (status, problem) = api
        .post_job(&json!({"kind": "resize", "payload": {"width": 1}}))
        .await;
    assert_eq!(status, 202, "{problem}");

    // Its worker leaves; a worker announcing it on another queue now takes it over.
    resize_worker_leaves(&env, &api).await;
    announce_resize(&env, "w2", "alive", "thumbs").await;
    let moved = poll(WITHIN, "resize to move to thumbs", || async {
        api.kind("resize").await.filter(|k| k["queue"] == "thumbs")
    })
    .await;
    assert_eq!(moved["workers"], json!(["w2"]));
    assert_eq!(moved["conflict"], Value::Null);
    // The store shows the move as soon as it is recorded; the binding follows within moments.
    let thumbs = format!("{}.jobs.thumbs", env.prefix);
    poll(WITHIN, "a new job to wait in the new queue", || async {
        let before = env.ready_count(&thumbs).await;
        let (status, problem) = api
            .post_job(&json!({"kind": "resize", "payload": {"width": 2}}))
            .await;
        assert_eq!(status, 202, "{problem}");
        (env.ready_count(&thumbs).await > before).then_some(())
    })
    .await;

    let images = format!("{}.jobs.images", env.prefix);
    for queue in [images.as_str(), thumbs.as_str()] {
        delete_queue(&env, queue).await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kinds_file_pins_the_kinds_and_a_bad_one_stops_the_start() {
    let env = TestEnv::new().await;
    let file = std::env::temp_dir().join(format!("offload-kinds-{}.yaml", env.prefix));
    std::fs::write(
        &file,
        "- name: resize\n  queue: images\n  payload_schema: {type: object, required: [width]}\n- name: noop\n",
    )
    .expect("write the kinds file");
    let path = file.display().to_string();
    let api = ApiProcess::start(&env, &[("OFFLOAD_KINDS_FILE", &path)]).await;

    let listed = api.get_json("/kinds").await;
    let names: Vec<&str> = listed["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["noop", "resize"], "only the pinned kinds: {listed}");
    assert_eq!(
        api.kind("resize").await.expect("resize")["source"],
        "pinned"
    );
    let (status, problem) = api
        .post_job(&json!({"kind": "sleep", "payload": {"ms": 1}}))
        .await;
    assert_eq!(status, 422, "sleep is not pinned: {problem}");

    // An announced kind outside the file is not accepted; a differing pinned one is a conflict.
    let other = json!({"name": "other"});
    let differing = json!({"name": "resize", "queue": "thumbs"});
    env.announce(&announcement(
        "w1",
        "alive",
        json!([other, differing]),
        &["default"],
    ))
    .await;
    let conflicted = poll(WITHIN, "the conflict with the pinned spec", || async {
        api.kind("resize")
            .await
            .filter(|k| k["conflict"].is_string())
    })
    .await;
    assert!(
        conflicted["conflict"]
            .as_str()
            .unwrap_or("")
            .contains("pinned"),
        "{conflicted}"
    );
    assert_eq!(conflicted["queue"], "images");
    assert!(api.kind("other").await.is_none());
    let (status, problem) = api.post_job(&json!({"kind": "other", "payload": {}})).await;
    assert_eq!(status, 422, "{problem}");
    let workers = api.get_json("/workers").await;
    assert_eq!(
        workers["workers"][0]["name"], "w1",
        "the worker is still recorded"
    );
    api.stop().await;

    // A file with a misspelt field is a start-up error naming the file and the fix.
    std::fs::write(&file, "- name: resize\n  max_attemps: 3\n").expect("write");
    let mut vars = env.vars();
    vars.push(("OFFLOAD_KINDS_FILE".into(), path.clone()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, output) = offload_tests::run_binary(true, &[], &vars);
    assert!(!status.success(), "{output}");
    assert!(output.contains(&path), "{output}");
    assert!(output.contains("max_attemps"), "{output}");
    assert!(output.contains("unset OFFLOAD_KINDS_FILE"), "{output}");
    let _ = std::fs::remove_file(&file);
    delete_queue(&env, &format!("{}.jobs.images", env.prefix)).await;
    env.cleanup().await;
}
