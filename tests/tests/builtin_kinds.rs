//! The built-in kinds as a user runs them: the real API and the stock `offload-worker` (which
//! serves every built-in queue), jobs submitted the way the README shows, results downloaded
//! and decoded (`image.thumbnail`) or read back with poppler's tools (`pdf.render`).

use std::time::Duration;

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod support {
    pub mod photo;
}
use support::photo;

/// How long a job of a built-in kind may take, the worker's start included.
const WITHIN: Duration = Duration::from_secs(60);

const PDF_HINT: &str = "pdftotext/pdfinfo are missing: run scripts/test.sh (its ensure_pdftotext \
                        installs Debian's poppler-utils), or apt-get install poppler-utils";

/// Lowercase hex SHA-256.
fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The stock worker, once the API lists `kind` (so its jobs are accepted).
async fn stock_worker(
    env: &TestEnv,
    api: &ApiProcess,
    kind: &str,
    extra: &[(&str, &str)],
) -> WorkerProcess {
    let worker = WorkerProcess::start(env, "builtin-1", 2, extra).await;
    poll(WITHIN, &format!("the API to list {kind}"), || async {
        api.kind(kind).await.map(|_| ())
    })
    .await;
    worker
}

/// A multipart `POST /jobs`; the status and the JSON answer.
async fn post_form(api: &ApiProcess, form: Form) -> (u16, Value) {
    let response = api
        .http
        .post(api.url("/jobs"))
        .multipart(form)
        .send()
        .await
        .expect("POST /jobs");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A thumbnail job uploading `image` (as `photo.jpg`) with `payload.<key>` fields; its id.
async fn upload_thumbnail(api: &ApiProcess, image: Vec<u8>, fields: &[(&str, &str)]) -> String {
    let mut form = Form::new()
        .text("kind", "image.thumbnail")
        .text("payload.file", "image");
    for (key, value) in fields {
        form = form.text(format!("payload.{key}"), (*value).to_owned());
    }
    let part = Part::bytes(image)
        .file_name("photo.jpg")
        .mime_str("image/jpeg")
        .expect("media type");
    let (status, job) = post_form(api, form.part("image", part)).await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().expect("id").to_owned()
}

/// `GET /jobs/{id}/result` once the artifact is stored (a 503 meanwhile is retried).
async fn result(api: &ApiProcess, id: &str) -> reqwest::Response {
    poll(WITHIN, "the result to be served", || async {
        let response = api
            .http
            .get(api.url(&format!("/jobs/{id}/result")))
            .send()
            .await
            .expect("GET result");
        (response.status() != 503).then_some(response)
    })
    .await
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header: {:?}", response.headers()))
}

/// The job's error once it is dead.
async fn dead_error(api: &ApiProcess, id: &str) -> String {
    let job = api.wait_for_status(id, "dead", WITHIN).await;
    job["error"].as_str().unwrap_or_default().to_owned()
}

/// Asserts a 422 problem+json answer to `body`; its detail.
async fn assert_unprocessable(api: &ApiProcess, body: &Value) -> String {
    let response = api
        .http
        .post(api.url("/jobs"))
        .json(body)
        .send()
        .await
        .expect("POST /jobs");
    assert_eq!(response.status(), 422, "{body}");
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );
    let problem: Value = response.json().await.expect("problem JSON");
    assert_eq!(problem["status"], 422, "{problem}");
    problem["detail"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_phone_photo_becomes_an_upright_png_thumbnail_served_with_its_headers() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = stock_worker(&env, &api, "image.thumbnail", &[]).await;
    // 400×300 pixels, shown 300×400 (Orientation 6): portrait once turned upright.
    let upload = photo::with_exif_orientation(&photo::jpeg(400, 300), 6);

    let id = upload_thumbnail(&api, upload, &[("width", "128"), ("format", "png")]).await;
    let job = api.wait_for_status(&id, "succeeded", WITHIN).await;

    // Contain in a 128×128 box: the upright 300×400 becomes 96×128.
    let result = &job["result"];
    assert_eq!(result["width"], 96, "{job}");
    assert_eq!(result["height"], 128, "{job}");
    assert_eq!(result["format"], "png", "{job}");
    assert_eq!(result["source"]["format"], "jpeg", "{job}");
    let listed = &job["artifacts"][0];
    assert_eq!(listed["name"], "thumbnail.png", "{job}");
    assert_eq!(listed["content_type"], "image/png", "{job}");

    let response = result_ok(&api, &id).await;
    let etag = header(&response, "etag").to_owned();
    assert_eq!(header(&response, "content-type"), "image/png");
    assert!(
        header(&response, "content-disposition").contains("filename=\"thumbnail.png\""),
        "{:?}",
        response.headers()
    );
    let length: usize = header(&response, "content-length")
        .parse()
        .expect("a length");
    let bytes = response.bytes().await.expect("the thumbnail");
    assert_eq!(bytes.len(), length);
    assert_eq!(etag, format!("\"{}\"", sha256(&bytes)));
    assert_eq!(listed["sha256"], sha256(&bytes), "{job}");
    assert_eq!(
        image::guess_format(&bytes).expect("a known format"),
        image::ImageFormat::Png
    );
    let decoded = image::load_from_memory(&bytes).expect("the thumbnail decodes");
    assert_eq!((decoded.width(), decoded.height()), (96, 128));

    env.cleanup().await;
}

/// The result, asserting 200.
async fn result_ok(api: &ApiProcess, id: &str) -> reqwest::Response {
    let response = result(api, id).await;
    assert_eq!(response.status(), 200, "GET /jobs/{id}/result");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thumbnail_from_an_allowed_url_succeeds_and_from_an_unlisted_one_is_dead() {
    // A local image server: the photo at /photo.jpg.
    let photo = photo::jpeg(400, 300);
    let served = photo.clone();
    let app = axum::Router::new().route(
        "/photo.jpg",
        axum::routing::get(move || {
            let body = served.clone();
            async move { ([("content-type", "image/jpeg")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let port = listener.local_addr().expect("its address").port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = stock_worker(
        &env,
        &api,
        "image.thumbnail",
        &[("OFFLOAD_FETCH_ALLOW", "127.0.0.1")],
    )
    .await;

    let url = format!("http://127.0.0.1:{port}/photo.jpg");
    let job = api
        .submit(json!({"kind": "image.thumbnail",
                       "payload": {"url": url, "width": 100, "format": "jpeg"}}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let done = api.wait_for_status(&id, "succeeded", WITHIN).await;
    assert_eq!(done["result"]["width"], 100, "{done}");
    assert_eq!(done["result"]["height"], 75, "{done}");
    let response = result_ok(&api, &id).await;
    assert_eq!(header(&response, "content-type"), "image/jpeg");
    let bytes = response.bytes().await.expect("the thumbnail");
    let decoded = image::load_from_memory(&bytes).expect("decodes");
    assert_eq!((decoded.width(), decoded.height()), (100, 75));

    // A destination OFFLOAD_FETCH_ALLOW does not list (TEST-NET-1: never reachable anyway).
    let job = api
        .submit(json!({"kind": "image.thumbnail",
                       "payload": {"url": "http://192.0.2.1/photo.jpg", "width": 100}}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let error = dead_error(&api, &id).await;
    assert!(error.contains("OFFLOAD_FETCH_ALLOW"), "{error}");

    server.abort();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_image_and_an_over_the_limit_image_are_dead_saying_why() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = stock_worker(
        &env,
        &api,
        "image.thumbnail",
        &[("OFFLOAD_THUMBNAIL_MAX_PIXELS", "1000")],
    )
    .await;

    let text = b"hello, I am a text file and no image at all\n".to_vec();
    let id = upload_thumbnail(&api, text, &[("width", "64")]).await;
    let error = dead_error(&api, &id).await;
    assert!(error.contains("not an image"), "{error}");

    // 40×30 = 1200 pixels, over the worker's 1000.
    let id = upload_thumbnail(&api, photo::jpeg(40, 30), &[("width", "16")]).await;
    let job = api.wait_for_status(&id, "dead", WITHIN).await;
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("OFFLOAD_THUMBNAIL_MAX_PIXELS"), "{error}");
    assert_eq!(
        job["attempt"], 1,
        "a permanent failure is not retried: {job}"
    );

    env.cleanup().await;
}

#[tokio::test]
async fn a_thumbnail_payload_outside_its_schema_is_a_422() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = stock_worker(&env, &api, "image.thumbnail", &[]).await;

    for payload in [
        json!({"file": "image", "width": 0}),
        json!({"file": "image", "width": 128, "fit": "stretch"}),
        json!({"file": "image", "width": 128, "colour": "red"}),
    ] {
        let detail = assert_unprocessable(
            &api,
            &json!({"kind": "image.thumbnail", "payload": payload}),
        )
        .await;
        assert!(!detail.is_empty(), "{payload}");
    }

    env.cleanup().await;
}

/// The invoice payload exactly as README.md's "pdf.render" section prints it.
const README_INVOICE: &str = r#"{
  "kind": "pdf.render",
  "payload": {"template": "invoice", "data": {
    "seller": {"name": "Offload GmbH", "address": ["Hauptstraße 1", "10115 Berlin"]},
    "customer": {"name": "ACME Widgets Ltd", "address": ["1 Road Runner Way"]},
    "number": "2024-0042", "date": "2024-05-31", "currency": "EUR", "tax_percent": 19,
    "items": [{"description": "Consulting day", "quantity": 2, "unit_price": 612.5}],
    "notes": ["Payable within 30 days."]}}}"#;

/// Runs poppler's `tool` on `path`; its standard output, or a failure with the install hint.
fn poppler(tool: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} cannot run ({e}): {PDF_HINT}"));
    assert!(
        output.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_invoice_renders_a_one_page_pdf_with_the_customer_and_amounts() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = stock_worker(&env, &api, "pdf.render", &[]).await;

    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .expect("README.md is readable");
    assert!(
        readme.contains(&format!("-d '{README_INVOICE}'")),
        "README.md's pdf.render curl no longer sends README_INVOICE: copy it here again"
    );
    let body: Value = serde_json::from_str(README_INVOICE).expect("the README's JSON parses");
    let (status, job) = api.post_job(&body).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_owned();
    let done = api.wait_for_status(&id, "succeeded", WITHIN).await;
    assert_eq!(done["result"]["pages"], 1, "{done}");
    assert_eq!(done["result"]["template"], "invoice", "{done}");

    let response = result_ok(&api, &id).await;
    assert_eq!(header(&response, "content-type"), "application/pdf");
    assert!(
        header(&response, "content-disposition").contains("document.pdf"),
        "{:?}",
        response.headers()
    );
    let bytes = response.bytes().await.expect("the PDF");
    assert!(bytes.starts_with(b"%PDF-"), "not a PDF");
    let dir = std::env::temp_dir().join(format!("offload-invoice-{id}"));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let pdf = dir.join("invoice.pdf");
    std::fs::write(&pdf, &bytes).expect("the PDF is written");
    let path = pdf.to_str().expect("a UTF-8 path");

    let info = poppler("pdfinfo", &[path]);
    assert!(
        info.lines()
            .any(|l| l.starts_with("Pages:") && l.trim_end().ends_with(" 1")),
        "{info}"
    );
    let text = poppler("pdftotext", &["-layout", path, "-"]);
    for expected in [
        "ACME Widgets Ltd",
        "Offload GmbH",
        "Hauptstraße 1",
        "Consulting day",
        // 2 × 612.50 = 1,225.00; 19 % tax 232.75; total 1,457.75.
        "1,225.00 EUR",
        "232.75 EUR",
        "1,457.75 EUR",
        "Page 1 of 1",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);

    // An unknown template: refused by the API against the kind's schema.
    let detail = assert_unprocessable(
        &api,
        &json!({"kind": "pdf.render", "payload": {"template": "poster", "data": {}}}),
    )
    .await;
    assert!(!detail.is_empty());

    env.cleanup().await;
}
