//! Artifacts end to end: a worker built on the SDK (`artifact-worker`, kind `test.artifacts`)
//! attaches files; they travel through `<prefix>.artifacts` to the API's store and are served
//! by `GET /jobs/{id}/result`, on SQLite and on PostgreSQL.

use std::time::{Duration, Instant};

use lapin::{
    BasicProperties,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll, postgres::PgSchema, program};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const DONE_WITHIN: Duration = Duration::from_secs(30);
const KIND: &str = "test.artifacts";

/// Lowercase hex SHA-256.
fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The artifact worker, once the API lists its kind (so jobs of it are accepted).
async fn artifact_worker(env: &TestEnv, api: &ApiProcess, extra: &[(&str, &str)]) -> WorkerProcess {
    let path = program("artifact-worker", false);
    let worker = WorkerProcess::start_program(env, &path, "files", 2, extra).await;
    poll(DONE_WITHIN, "the API to record test.artifacts", || async {
        api.kind(KIND).await.map(|_| ())
    })
    .await;
    worker
}

/// Submits a `test.artifacts` job; its id.
async fn submit(api: &ApiProcess, payload: Value) -> String {
    let job = api.submit(json!({"kind": KIND, "payload": payload})).await;
    job["id"].as_str().expect("id").to_owned()
}

async fn get(api: &ApiProcess, path: &str, if_none_match: Option<&str>) -> reqwest::Response {
    let mut request = api.http.get(api.url(path));
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    request.send().await.expect("GET")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header: {:?}", response.headers()))
}

/// Artifacts of a job on `api`'s store: listed, downloaded with every header, revalidated (304),
/// an unknown name 404, a hostile type inert; a job without artifacts serves its JSON result.
async fn downloads_with_every_header(env: &TestEnv, api: &ApiProcess) {
    let _files = artifact_worker(env, api, &[]).await;
    let _stock = WorkerProcess::start(env, "w1", 1, &[]).await;

    let id = submit(
        api,
        json!({"count": 2, "size": 1000, "content_type": "image/png", "prefix": "thumb é-", "ext": ".png"}),
    )
    .await;
    let job = api.wait_for_status(&id, "succeeded", DONE_WITHIN).await;
    assert_eq!(job["result"], json!({"count": 2}), "{job}");
    let first = vec![0u8; 1000];
    let second = vec![1u8; 1000];
    assert_eq!(
        job["artifacts"],
        json!([
            {"name": "thumb é-0.png", "content_type": "image/png", "size": 1000,
             "sha256": sha256(&first), "url": format!("/jobs/{id}/result?name=thumb%20%C3%A9-0.png")},
            {"name": "thumb é-1.png", "content_type": "image/png", "size": 1000,
             "sha256": sha256(&second), "url": format!("/jobs/{id}/result?name=thumb%20%C3%A9-1.png")},
        ]),
        "{job}"
    );
    let listed = api.all_jobs("succeeded").await;
    let summary = listed
        .iter()
        .find(|j| j["id"] == id.as_str())
        .expect("listed");
    assert_eq!(
        summary["artifacts"], job["artifacts"],
        "listings carry them too"
    );

    // The first by default, the second by the url the job lists. The bytes may trail the
    // event by a moment (503 with Retry-After meanwhile).
    let response = poll(DONE_WITHIN, "the first artifact to be stored", || async {
        let response = get(api, &format!("/jobs/{id}/result"), None).await;
        if response.status() == 503 {
            assert_eq!(header(&response, "retry-after"), "1");
            return None;
        }
        Some(response)
    })
    .await;
    assert_eq!(response.status(), 200);
    let etag = format!("\"{}\"", sha256(&first));
    for (name, value) in [
        ("content-type", "image/png"),
        ("content-length", "1000"),
        (
            "content-disposition",
            "inline; filename=\"thumb _-0.png\"; filename*=UTF-8''thumb%20%C3%A9-0.png",
        ),
        ("etag", etag.as_str()),
        ("x-content-type-options", "nosniff"),
        ("content-security-policy", "sandbox"),
        ("cache-control", "private, max-age=31536000, immutable"),
    ] {
        assert_eq!(header(&response, name), value, "{name}");
    }
    assert_eq!(response.bytes().await.expect("body").as_ref(), first);

    let url = job["artifacts"][1]["url"].as_str().expect("url");
    let response = poll(DONE_WITHIN, "the second artifact to be stored", || async {
        let response = get(api, url, None).await;
        (response.status() != 503).then_some(response)
    })
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.expect("body").as_ref(), second);

    let again = get(api, &format!("/jobs/{id}/result"), Some(&etag)).await;
    assert_eq!(again.status(), 304, "If-None-Match with its ETag");
    assert_eq!(header(&again, "etag"), etag);
    assert!(again.bytes().await.expect("body").is_empty());
    let stale = get(api, &format!("/jobs/{id}/result"), Some("\"0000\"")).await;
    assert_eq!(stale.status(), 200, "another ETag gets the bytes");

    let unknown = get(api, &format!("/jobs/{id}/result?name=nope.png"), None).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(header(&unknown, "content-type"), "application/problem+json");
    let text = unknown.text().await.expect("body");
    assert!(text.contains("nope.png"), "{text}");

    // The browser's page shows the image, pointing at the download.
    let page = api
        .http
        .get(api.url(&format!("/jobs/{id}")))
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET page")
        .text()
        .await
        .expect("page");
    assert!(
        page.contains(&format!(
            "<img class=\"artifact\" alt=\"thumb é-0.png\" src=\"/jobs/{id}/result?name=thumb%20%C3%A9-0.png\">"
        )),
        "{page}"
    );

    // Hostile content: served as what it says, but as an inert download.
    let hostile = submit(
        api,
        json!({"count": 1, "size": 20, "content_type": "text/html", "prefix": "page", "ext": ".html"}),
    )
    .await;
    api.wait_for_status(&hostile, "succeeded", DONE_WITHIN)
        .await;
    let response = poll(DONE_WITHIN, "the html artifact to be stored", || async {
        let response = get(api, &format!("/jobs/{hostile}/result"), None).await;
        (response.status() != 503).then_some(response)
    })
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "text/html");
    assert_eq!(header(&response, "content-security-policy"), "sandbox");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert!(
        header(&response, "content-disposition").starts_with("attachment; "),
        "{:?}",
        response.headers()
    );

    // No artifacts: the JSON result.
    let noop = api
        .submit(json!({"kind": "noop", "payload": {"hello": "x"}}))
        .await;
    let noop = noop["id"].as_str().expect("id").to_owned();
    let done = api.wait_for_status(&noop, "succeeded", DONE_WITHIN).await;
    assert_eq!(done["artifacts"], json!([]), "{done}");
    let response = get(api, &format!("/jobs/{noop}/result"), None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/json");
    let result: Value = response.json().await.expect("JSON");
    assert_eq!(result, json!({"hello": "x"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_served_with_their_headers_on_sqlite() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    downloads_with_every_header(&env, &api).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_served_with_their_headers_on_postgres() {
    let env = TestEnv::new().await;
    let schema = PgSchema::create().await;
    let api = ApiProcess::start(&env, &[("OFFLOAD_DATABASE_URL", schema.url.as_str())]).await;
    downloads_with_every_header(&env, &api).await;
    drop(api);
    schema.remove().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_over_the_limit_end_the_job_dead_naming_the_sizes_and_the_setting() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _files = artifact_worker(&env, &api, &[("OFFLOAD_MAX_ARTIFACT_BYTES", "1000")]).await;

    let id = submit(
        &api,
        json!({"count": 2, "size": 600, "content_type": "application/octet-stream"}),
    )
    .await;
    let job = api.wait_for_status(&id, "dead", DONE_WITHIN).await;
    let error = job["error"].as_str().expect("error");
    assert!(
        error.contains("1200 bytes") && error.contains("OFFLOAD_MAX_ARTIFACT_BYTES (1000)"),
        "{error}"
    );
    assert_eq!(job["artifacts"], json!([]), "{job}");
    let response = get(&api, &format!("/jobs/{id}/result"), None).await;
    assert_eq!(response.status(), 409, "a dead job has no result");
    let text = response.text().await.expect("body");
    assert!(text.contains("dead"), "{text}");

    // Exactly at the limit is fine.
    let id = submit(
        &api,
        json!({"count": 2, "size": 500, "content_type": "application/octet-stream"}),
    )
    .await;
    api.wait_for_status(&id, "succeeded", DONE_WITHIN).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_409_and_another_keys_job_is_404() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _files = artifact_worker(&env, &api, &[]).await;
    let alice = api.client_with(&api.create_key("alice", &["submit", "read"], &[]));
    let bob = api.client_with(&api.create_key("bob", &["submit", "read"], &[]));

    let job: Value = alice
        .post(api.url("/jobs"))
        .json(&json!({"kind": KIND, "payload": {"count": 1, "size": 10, "content_type": "text/plain", "ms": 3000}}))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("job");
    let id = job["id"].as_str().expect("id").to_owned();
    let path = api.url(&format!("/jobs/{id}/result"));
    let early = alice.get(&path).send().await.expect("GET");
    assert_eq!(early.status(), 409, "not finished yet");
    assert_eq!(early.headers()["content-type"], "application/problem+json");
    let text = early.text().await.expect("body");
    assert!(
        ["queued", "running", "pending"]
            .iter()
            .any(|s| text.contains(&format!("is {s}"))),
        "{text}"
    );
    let others = bob.get(&path).send().await.expect("GET");
    assert_eq!(others.status(), 404, "another key's job is unknown to bob");

    api.wait_for_status(&id, "succeeded", DONE_WITHIN).await;
    let response = poll(DONE_WITHIN, "alice's artifact", || async {
        let response = alice.get(&path).send().await.expect("GET");
        (response.status() != 503).then_some(response)
    })
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.expect("body").as_ref(), [0u8; 10]);
    assert_eq!(
        bob.get(&path).send().await.expect("GET").status(),
        404,
        "still bob's 404"
    );
    let anonymous = api.anonymous().get(&path).send().await.expect("GET");
    assert_eq!(anonymous.status(), 401, "the read scope is needed");
    env.cleanup().await;
}

/// Rows in the store's artifacts table.
async fn artifact_rows(url: &str) -> i64 {
    let sql = "SELECT COUNT(*) FROM artifacts";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
        let n = sqlx::query_scalar(sql)
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        n
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("postgres");
        let n = sqlx::query_scalar(sql)
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        n
    }
}

/// An artifact message straight to the artifacts queue, as a worker sends one.
async fn publish_artifact(env: &TestEnv, job_id: &str, name: &str, body: &[u8]) {
    let channel = env.broker.create_channel().await.expect("channel");
    let mut headers = FieldTable::default();
    let size = body.len().to_string();
    let hash = sha256(body);
    for (k, v) in [
        ("job_id", job_id),
        ("attempt", "1"),
        ("name", name),
        ("sha256", hash.as_str()),
        ("size", size.as_str()),
    ] {
        headers.insert(
            ShortString::from(k),
            AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())),
        );
    }
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("text/plain".into())
        .with_headers(headers);
    channel
        .basic_publish(
            "".into(),
            env.names.artifacts_queue.as_str().into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("sent");
    let _ = channel.close(200, "done".into()).await;
}

/// Retention takes a job's artifacts with it, and artifacts no job claims once they are old.
async fn retention_removes_artifacts(env: &TestEnv, database: &str) {
    let vars = [
        ("OFFLOAD_RETENTION_S", "1"),
        ("OFFLOAD_RETENTION_INTERVAL_MS", "100"),
        ("OFFLOAD_DATABASE_URL", database),
    ];
    let api = ApiProcess::start(env, &vars).await;
    let _files = artifact_worker(env, &api, &[]).await;
    // An orphan, and a message with a missing header, which is refused (logged), not stored.
    publish_artifact(
        env,
        &uuid::Uuid::now_v7().to_string(),
        "orphan.txt",
        b"lost",
    )
    .await;
    publish_artifact(env, "not-an-id", "bad.txt", b"bad").await;

    let id = submit(
        &api,
        json!({"count": 3, "size": 100, "content_type": "text/plain"}),
    )
    .await;
    api.wait_for_status(&id, "succeeded", DONE_WITHIN).await;
    poll(DONE_WITHIN, "the finished job to be deleted", || async {
        let status = get(&api, &format!("/jobs/{id}"), None).await.status();
        (status == 404).then_some(())
    })
    .await;
    poll(
        DONE_WITHIN,
        "its artifacts and the orphan to be deleted",
        || async { (artifact_rows(database).await == 0).then_some(()) },
    )
    .await;
    let logs = api.logs().join("\n");
    assert!(
        logs.contains("rejecting an artifact message") && logs.contains("not a job id"),
        "the refused message is logged with its reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_artifacts_with_their_job_and_orphans_on_sqlite() {
    let env = TestEnv::new().await;
    let url = format!("sqlite://{}", env.database.display());
    retention_removes_artifacts(&env, &url).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_artifacts_with_their_job_and_orphans_on_postgres() {
    let env = TestEnv::new().await;
    let schema = PgSchema::create().await;
    retention_removes_artifacts(&env, &schema.url).await;
    schema.remove().await;
    env.cleanup().await;
}

/// Measurement: 8 jobs returning 4 MiB each, submitted together with 100 `noop` jobs. The
/// artifacts travel on their own queue and consumer, so the noop jobs' events are not stalled
/// behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_artifacts_do_not_stall_other_jobs_events() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _files = artifact_worker(&env, &api, &[]).await;
    let _stock = WorkerProcess::start(&env, "w1", 4, &[]).await;

    let started = Instant::now();
    let mut large = Vec::new();
    for _ in 0..8 {
        large.push(
            submit(
                &api,
                json!({"count": 1, "size": 4 * 1024 * 1024, "content_type": "application/octet-stream"}),
            )
            .await,
        );
    }
    let mut small = Vec::new();
    for n in 0..100 {
        let job = api
            .submit(json!({"kind": "noop", "payload": {"n": n}}))
            .await;
        small.push(job["id"].as_str().expect("id").to_owned());
    }
    let submitted = started.elapsed();
    for id in &small {
        api.wait_for_status(id, "succeeded", Duration::from_secs(60))
            .await;
    }
    let noops_done = started.elapsed();
    for id in &large {
        api.wait_for_status(id, "succeeded", Duration::from_secs(120))
            .await;
    }
    let large_done = started.elapsed();
    for id in &large {
        poll(
            Duration::from_secs(60),
            "a large artifact to be stored",
            || async {
                let response = get(&api, &format!("/jobs/{id}/result"), Some("\"x\"")).await;
                (response.status() == 200).then_some(())
            },
        )
        .await;
    }
    let stored = started.elapsed();
    eprintln!(
        "artifacts measurement: 8 x 4 MiB artifact jobs + 100 noop jobs: submitted in {:?}; \
         all noop jobs succeeded after {:?}; all artifact jobs succeeded after {:?}; \
         all artifacts downloadable after {:?}",
        submitted, noops_done, large_done, stored
    );
    assert!(
        noops_done < Duration::from_secs(30),
        "the noop jobs took {noops_done:?}"
    );
    env.cleanup().await;
}
