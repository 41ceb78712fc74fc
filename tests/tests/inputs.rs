//! Input files through the front door: a `multipart/form-data` submit whose files reach the
//! handler intact (the test worker `inputs-test-worker` reports each file's SHA-256), a browser
//! submit sent to the job's page, an idempotent repeat with the same files, and the limits (the
//! job message with its base64 files must fit the broker's message limit; at most 16 files).

use std::time::Duration;

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll, program};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use sha2::{Digest, Sha256};

const WITHIN: Duration = Duration::from_secs(30);

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bytes no text codec leaves alone: every byte value, many times over.
fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

fn file(bytes: Vec<u8>, name: &str, content_type: &str) -> Part {
    Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str(content_type)
        .expect("media type")
}

/// POSTs `form` to `/jobs` with `headers`; the status and the body as JSON (null if none).
async fn post(api: &ApiProcess, form: Form, headers: &[(&str, &str)]) -> (u16, Value, String) {
    let mut request = api.http.post(api.url("/jobs")).multipart(form);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("POST /jobs");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        location,
    )
}

#[tokio::test]
async fn uploaded_files_reach_the_handler_intact_and_the_job_lists_them() {
    // Arrange: the API and a worker that reports what it received.
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start_program(
        &env,
        &program("inputs-test-worker", false),
        "inputs-1",
        1,
        &[],
    )
    .await;
    poll(WITHIN, "the API to know test.inputs", || async {
        api.kind("test.inputs").await
    })
    .await;
    let photo = binary(200_000);
    let notes = b"line one\r\nline two\n\x00end".to_vec();

    // Act: a multipart submit with two files and a payload built from payload.<key> fields.
    let form = Form::new()
        .text("kind", "test.inputs")
        .text("payload.note", "hi")
        .part("photo", file(photo.clone(), "photo.jpg", "image/jpeg"))
        .part("notes", file(notes.clone(), "notes.txt", "text/plain"))
        // What a browser sends for a file input left empty: ignored.
        .part("nothing", file(Vec::new(), "", "application/octet-stream"));
    let (status, job, location) = post(&api, form, &[]).await;

    // Assert: accepted, listed without bytes, and seen intact by the handler.
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/jobs/{id}"));
    let listed = job["inputs"].as_array().expect("inputs listed");
    assert_eq!(listed.len(), 2, "{job}");
    assert_eq!(listed[0]["field"], "photo");
    assert_eq!(listed[0]["filename"], "photo.jpg");
    assert_eq!(listed[0]["content_type"], "image/jpeg");
    assert_eq!(listed[0]["size"], photo.len());
    assert_eq!(listed[0]["sha256"], sha256(&photo));
    assert!(listed[0].get("data").is_none(), "{job}");
    let done = api.wait_for_status(&id, "succeeded", WITHIN).await;
    assert_eq!(
        done["inputs"], job["inputs"],
        "GET /jobs/{{id}} lists them too"
    );
    let result = &done["result"];
    assert_eq!(result["note"], "hi", "{result}");
    let seen = result["inputs"].as_array().expect("the handler's list");
    assert_eq!(seen.len(), 2, "{result}");
    let by_field = |field: &str| {
        seen.iter()
            .find(|s| s["field"] == field)
            .unwrap_or_else(|| panic!("{field} not received: {result}"))
    };
    for (field, bytes, name, content_type) in [
        ("photo", &photo, "photo.jpg", "image/jpeg"),
        ("notes", &notes, "notes.txt", "text/plain"),
    ] {
        let got = by_field(field);
        assert_eq!(got["sha256"], sha256(bytes), "{field}: {got}");
        assert_eq!(got["size"], bytes.len(), "{field}");
        assert_eq!(got["filename"], name, "{field}");
        assert_eq!(got["content_type"], content_type, "{field}");
    }

    let mut worker = worker;
    worker.terminate();
    worker.wait_exit(Duration::from_secs(10)).await;
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_recorded_but_never_published_is_republished_with_its_files() {
    // Arrange: what an API killed between its store write and its publish leaves: an
    // unresolved row with its input file, and no message.
    let env = TestEnv::new().await;
    ApiProcess::start(&env, &[]).await.stop().await;
    let id = uuid::Uuid::now_v7().to_string();
    let bytes = binary(10_000);
    let now = time::OffsetDateTime::now_utc();
    let micros = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1000) as i64;
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", env.database.display()))
        .await
        .expect("store file");
    sqlx::query(
        "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, timeout_ms, budget,
                           submitted_at, payload, resolve_at)
         VALUES (?1, 'test.inputs', 'queued', 4, 1, 5, 300000, 5, ?2, '{\"note\":\"again\"}', ?3)",
    )
    .bind(&id)
    .bind(micros(now))
    .bind(micros(now + Duration::from_secs(3)))
    .execute(&db)
    .await
    .expect("unresolved row");
    sqlx::query(
        "INSERT INTO job_inputs (job_id, position, field, filename, content_type, size, sha256, data)
         VALUES (?1, 0, 'doc', 'doc.bin', 'application/octet-stream', ?2, ?3, ?4)",
    )
    .bind(&id)
    .bind(bytes.len() as i64)
    .bind(sha256(&bytes))
    .bind(bytes.clone())
    .execute(&db)
    .await
    .expect("its file");
    db.close().await;

    // Act: the worker (so the kind's queue is bound), then the API, whose reconciler
    // republishes the row once it is due.
    let mut worker = WorkerProcess::start_program(
        &env,
        &program("inputs-test-worker", false),
        "inputs-3",
        1,
        &[],
    )
    .await;
    let api = ApiProcess::start(&env, &[]).await;

    // Assert: it ran with its file intact.
    let done = api.wait_for_status(&id, "succeeded", WITHIN).await;
    assert_eq!(done["result"]["note"], "again", "{done}");
    assert_eq!(done["result"]["inputs"][0]["field"], "doc", "{done}");
    assert_eq!(
        done["result"]["inputs"][0]["sha256"],
        sha256(&bytes),
        "{done}"
    );
    assert_eq!(done["inputs"][0]["size"], bytes.len(), "{done}");

    worker.terminate();
    worker.wait_exit(Duration::from_secs(10)).await;
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_retry_and_a_redrive_carry_the_files_again() {
    // Arrange: the API (short retry delays) and the reporting worker.
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let mut worker = WorkerProcess::start_program(
        &env,
        &program("inputs-test-worker", false),
        "inputs-2",
        1,
        &[],
    )
    .await;
    poll(WITHIN, "the API to know test.inputs", || async {
        api.kind("test.inputs").await
    })
    .await;
    let bytes = binary(30_000);
    let form = |permanent: &str| {
        Form::new()
            .text("kind", "test.inputs")
            .text("payload.fail_below", "2")
            .text("payload.permanent", permanent.to_owned())
            .part(
                "doc",
                file(bytes.clone(), "doc.bin", "application/octet-stream"),
            )
    };

    // A retryable failure: attempt 2 (from the delay queue) has the file.
    let (status, job, _) = post(&api, form("false"), &[]).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_owned();
    let done = api.wait_for_status(&id, "succeeded", WITHIN).await;
    assert_eq!(done["result"]["attempt"], 2, "{done}");
    assert_eq!(
        done["result"]["inputs"][0]["sha256"],
        sha256(&bytes),
        "{done}"
    );

    // A permanent failure, then POST /jobs/{id}/retry: the redriven attempt has the file.
    let (status, job, _) = post(&api, form("true"), &[]).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_owned();
    api.wait_for_status(&id, "dead", WITHIN).await;
    let response = api
        .http
        .post(api.url(&format!("/jobs/{id}/retry")))
        .send()
        .await
        .expect("POST retry");
    assert_eq!(response.status(), 202);
    let done = api.wait_for_status(&id, "succeeded", WITHIN).await;
    assert_eq!(done["result"]["attempt"], 2, "{done}");
    assert_eq!(
        done["result"]["inputs"][0]["sha256"],
        sha256(&bytes),
        "{done}"
    );
    assert_eq!(done["result"]["inputs"][0]["size"], bytes.len());

    worker.terminate();
    worker.wait_exit(Duration::from_secs(10)).await;
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn multipart_submits_answer_like_forms_and_keep_to_the_limits() {
    // Arrange: a broker limit small enough to reach with a file that fits the body limit.
    let env = TestEnv::new().await;
    let api = ApiProcess::start(
        &env,
        &[
            ("OFFLOAD_BROKER_MAX_MESSAGE_BYTES", "65536"),
            ("OFFLOAD_MAX_BODY_BYTES", "61440"),
            ("OFFLOAD_MAX_RESULT_BYTES", "32768"),
            // The API refuses to start with artifacts the broker limit cannot carry.
            ("OFFLOAD_MAX_ARTIFACT_BYTES", "32768"),
        ],
    )
    .await;
    let small = || file(b"tiny file".to_vec(), "t.bin", "application/octet-stream");

    // The submit page offers the thumbnail form, made from the kind's payload schema (a file
    // input for its upload field), beside the JSON form.
    let home = api
        .http
        .get(api.url("/ui/submit"))
        .send()
        .await
        .expect("GET /ui/submit")
        .text()
        .await
        .expect("page");
    for needle in [
        r#"<form method="post" action="/jobs" data-kind="image.thumbnail" enctype="multipart/form-data">"#,
        r#"name="kind" value="image.thumbnail""#,
        r#"<input type="hidden" name="payload.file" value="upload-file">"#,
        r#"type="file" name="upload-file""#,
        r#"name="payload.width""#,
        r#"name="payload.format">"#,
        r#"<textarea id="json-payload" name="payload""#,
    ] {
        assert!(
            home.contains(needle),
            "{needle} not on the submit page: {home}"
        );
    }

    // A browser (Accept: text/html) is sent to the job's page.
    let form = Form::new().text("kind", "noop").part("f", small());
    let (status, _, location) = post(&api, form, &[("accept", "text/html")]).await;
    assert_eq!(status, 303);
    assert!(location.starts_with("/jobs/"), "{location}");

    // An idempotent repeat with the same files is the same job; other files are another request.
    let keyed = |bytes: &[u8]| {
        Form::new()
            .text("kind", "noop")
            .text("payload.n", "1")
            .part(
                "f",
                file(bytes.to_vec(), "a.bin", "application/octet-stream"),
            )
    };
    let key = [("idempotency-key", "inputs-repeat-1")];
    let (first, job, _) = post(&api, keyed(b"same"), &key).await;
    assert_eq!(first, 202, "{job}");
    let (again, repeat, _) = post(&api, keyed(b"same"), &key).await;
    assert_eq!(again, 200, "{repeat}");
    assert_eq!(repeat["id"], job["id"]);
    let (other, problem, _) = post(&api, keyed(b"different"), &key).await;
    assert_eq!(other, 422, "{problem}");

    // A file within the body limit whose job message (base64) is over the broker's: 413.
    let form = Form::new().text("kind", "noop").part(
        "big",
        file(binary(50_000), "big.bin", "application/octet-stream"),
    );
    let (status, problem, _) = post(&api, form, &[]).await;
    assert_eq!(status, 413, "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("OFFLOAD_BROKER_MAX_MESSAGE_BYTES"),
        "{problem}"
    );

    // Seventeen files: 422 naming the limit.
    let mut form = Form::new().text("kind", "noop");
    for i in 0..17 {
        form = form.part(format!("f{i}"), small());
    }
    let (status, problem, _) = post(&api, form, &[]).await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("16"),
        "{problem}"
    );

    // Unknown text fields are named; a body without a boundary is malformed.
    let form = Form::new().text("kind", "noop").text("colour", "red");
    let (status, problem, _) = post(&api, form, &[]).await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("colour"),
        "{problem}"
    );
    let response = api
        .http
        .post(api.url("/jobs"))
        .header("content-type", "multipart/form-data")
        .body("--x\r\n\r\n")
        .send()
        .await
        .expect("POST /jobs");
    assert_eq!(response.status(), 400);

    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_whose_file_does_not_match_its_sha256_is_dead_lettered_with_the_reason() {
    use lapin::{
        BasicProperties,
        options::{BasicGetOptions, BasicPublishOptions},
        types::{AMQPValue, ShortString},
    };
    use offload_shared::{
        JobEnvelope, JobId, JobKind,
        broker::REASON_HEADER,
        envelope::{EnvelopeFile, WIRE_VERSION},
    };

    // Arrange: a stock worker, and an envelope whose file was damaged on the way.
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let mut worker = WorkerProcess::start(&env, "w1", 1, &[]).await;
    let id = JobId::new();
    let mut damaged = EnvelopeFile::new("doc".into(), None, "text/plain".into(), b"hello");
    damaged.sha256 = sha256(b"something else");
    let envelope = JobEnvelope {
        v: WIRE_VERSION,
        id,
        kind: JobKind::parse("noop").expect("valid"),
        payload: serde_json::json!({}),
        attempt: 1,
        max_attempts: 3,
        timeout_ms: 10_000,
        submitted_at: time::OffsetDateTime::now_utc(),
        files: vec![damaged],
    };

    // Act: published straight to the jobs exchange, as another producer would.
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
    assert!(confirm.is_ack(), "published");

    // Assert: dead-lettered at once, the reason naming the file and the mismatch.
    let reason = poll(WITHIN, "the dead letter", || async {
        let message = channel
            .basic_get(
                ShortString::from(env.names.dead_queue.as_str()),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")?;
        let headers = message.delivery.properties.headers().clone()?;
        match headers.inner().get(REASON_HEADER) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        reason.contains("\"doc\"") && reason.contains("SHA-256"),
        "{reason}"
    );
    assert!(worker.is_running(), "the worker carries on");

    worker.terminate();
    worker.wait_exit(Duration::from_secs(10)).await;
    api.stop().await;
    env.cleanup().await;
}
