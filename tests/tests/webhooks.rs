//! `http.request` through the front door: the real API and worker deliver to a local HTTP
//! server this test runs, which records every request (and verifies signatures itself).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const DONE_WITHIN: Duration = Duration::from_secs(30);

/// The signing key the worker gets, as raw bytes.
const SECRET: &[u8] = b"offload-webhook-test-secret-0123";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    fn of(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

/// HMAC-SHA256 written out from its definition (RFC 2104), independent of the worker's ring.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// True when the request carries a valid Standard Webhooks signature under [`SECRET`].
fn verified(headers: &HeaderMap, body: &[u8]) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sig)) = (
        text("webhook-id"),
        text("webhook-timestamp"),
        text("webhook-signature"),
    ) else {
        return false;
    };
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(hmac_sha256(SECRET, &signed))
    );
    sig.split(' ').any(|s| s == expected)
}

/// `/signed`: 200 if the signature verifies, else 401. `/flaky`: 503 with `Retry-After: 1`
/// the first time, then 200. `/missing`: 404. `/slow`: 3 s the first time, then 200.
async fn receive(
    State(receiver): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let earlier = {
        let mut seen = receiver.seen.lock().expect("lock");
        let earlier = seen.iter().filter(|s| s.path == path).count();
        seen.push(Seen {
            path: path.clone(),
            at: Instant::now(),
            headers: headers.clone(),
            body: body.clone(),
        });
        earlier
    };
    match (path.as_str(), earlier) {
        ("/signed", _) if verified(&headers, &body) => (StatusCode::OK, "verified").into_response(),
        ("/signed", _) => (StatusCode::UNAUTHORIZED, "bad signature").into_response(),
        ("/flaky", 0) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "busy",
        )
            .into_response(),
        ("/missing", _) => (StatusCode::NOT_FOUND, "no such hook").into_response(),
        ("/slow", 0) => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, "late").into_response()
        }
        _ => (StatusCode::OK, [("x-seen", earlier.to_string())], "ok").into_response(),
    }
}

struct Setup {
    env: TestEnv,
    api: ApiProcess,
    worker: WorkerProcess,
    receiver: Receiver,
    base: String,
    _dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn setup() -> Setup {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new().fallback(receive).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir =
        TempDir(std::env::temp_dir().join(format!("offload-webhooks-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let secrets = dir.0.join("webhook-secrets");
    std::fs::write(
        &secrets,
        format!(
            "# test key\ntest=whsec_{}\n",
            base64::engine::general_purpose::STANDARD.encode(SECRET)
        ),
    )
    .expect("write secrets");

    let env = TestEnv::new().await;
    // Tiers 200 … 1600 ms, so a `Retry-After: 1` fits under the cap.
    let retry = [("OFFLOAD_RETRY_CAP_MS", "1600")];
    let api = ApiProcess::start(&env, &retry).await;
    let secrets = secrets.display().to_string();
    let worker = WorkerProcess::start(
        &env,
        "webhooks",
        4,
        &[
            retry[0],
            ("OFFLOAD_WEBHOOK_ALLOW", "127.0.0.1"),
            ("OFFLOAD_WEBHOOK_SECRETS_FILE", secrets.as_str()),
        ],
    )
    .await;
    Setup {
        env,
        api,
        worker,
        receiver,
        base,
        _dir: dir,
    }
}

impl Setup {
    async fn submit(&self, payload: Value, max_attempts: u32) -> String {
        let job = self
            .api
            .submit(
                json!({"kind": "http.request", "payload": payload, "max_attempts": max_attempts}),
            )
            .await;
        job["id"].as_str().expect("id").to_owned()
    }

    async fn finish(mut self) {
        self.worker.terminate();
        self.worker.wait_exit(Duration::from_secs(20)).await;
        self.api.stop().await;
        self.env.cleanup().await;
    }
}

#[tokio::test]
async fn http_request_delivers_signs_retries_and_refuses() {
    let s = setup().await;
    let signed = s
        .submit(
            json!({"url": format!("{}/signed", s.base), "body": {"event": "paid", "n": 1}, "sign_with": "test"}),
            1,
        )
        .await;
    let flaky = s
        .submit(
            json!({"url": format!("{}/flaky", s.base), "method": "PUT", "body": "plain", "sign_with": "test"}),
            3,
        )
        .await;
    let missing = s
        .submit(
            json!({"url": format!("{}/missing?token=hidden", s.base)}),
            3,
        )
        .await;
    let port = s.base.rsplit(':').next().expect("port").to_owned();
    let refused = s
        .submit(json!({"url": format!("http://127.0.0.2:{port}/signed")}), 3)
        .await;
    let slow = s
        .submit(
            json!({"url": format!("{}/slow", s.base), "method": "GET", "timeout_ms": 300}),
            3,
        )
        .await;

    // A signed delivery: the receiver verified the signature itself (else 401 → dead).
    let done = s
        .api
        .wait_for_status(&signed, "succeeded", DONE_WITHIN)
        .await;
    assert_eq!(done["result"]["status"], 200, "{done}");
    assert_eq!(done["result"]["body"], "verified", "{done}");
    assert_eq!(done["result"]["body_truncated"], false, "{done}");
    let got = s.receiver.of("/signed");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers["webhook-id"], signed.as_str(), "the job id");
    assert_eq!(got[0].headers["content-type"], "application/json");
    assert_eq!(
        serde_json::from_slice::<Value>(&got[0].body).expect("JSON"),
        json!({"event": "paid", "n": 1})
    );

    // 503 with Retry-After: 1, then 200: succeeded on attempt 2, at least 1 s later, same id.
    let done = s
        .api
        .wait_for_status(&flaky, "succeeded", DONE_WITHIN)
        .await;
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(done["result"]["headers"]["x-seen"], "1", "{done}");
    let got = s.receiver.of("/flaky");
    assert_eq!(got.len(), 2, "{got:?}");
    let waited = got[1].at - got[0].at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    assert_eq!(got[0].headers["webhook-id"], flaky.as_str());
    assert_eq!(got[1].body, Bytes::from_static(b"plain"));
    assert!(verified(&got[1].headers, &got[1].body));

    // 404: dead at once, the status in the error, the query (a secret, maybe) not.
    let dead = s.api.wait_for_status(&missing, "dead", DONE_WITHIN).await;
    assert_eq!(dead["attempt"], 1, "not retried: {dead}");
    let error = dead["error"].as_str().expect("error");
    assert!(error.contains("404"), "{error}");
    assert!(!error.contains("hidden"), "{error}");

    // Not in the allow-list: dead at once, naming the setting; nothing was sent.
    let dead = s.api.wait_for_status(&refused, "dead", DONE_WITHIN).await;
    assert_eq!(dead["attempt"], 1, "not retried: {dead}");
    let error = dead["error"].as_str().expect("error");
    assert!(error.contains("OFFLOAD_WEBHOOK_ALLOW"), "{error}");
    assert!(error.contains("127.0.0.2"), "{error}");
    assert_eq!(
        s.receiver.of("/signed").len(),
        1,
        "the refused job sent nothing"
    );

    // A timeout is retried; the second attempt is answered at once.
    let done = s.api.wait_for_status(&slow, "succeeded", DONE_WITHIN).await;
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(done["result"]["body"], "ok", "{done}");
    let retried = poll(DONE_WITHIN, "the slow endpoint's two requests", || async {
        let got = s.receiver.of("/slow");
        (got.len() == 2).then_some(got)
    })
    .await;
    assert_eq!(retried.len(), 2);

    s.finish().await;
}

#[tokio::test]
async fn a_bad_allow_list_or_secrets_file_stops_the_worker_at_start_up() {
    let env = TestEnv::new().await;
    let dir =
        TempDir(std::env::temp_dir().join(format!("offload-webhooks-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let bad_secrets = dir.0.join("secrets");
    std::fs::write(&bad_secrets, "# keys\nacme=not-a-whsec-hunter2\n").expect("write");
    let bad_secrets = bad_secrets.display().to_string();
    let cases = [
        (
            "an allow-list entry that is a URL",
            (
                vec![("OFFLOAD_WEBHOOK_ALLOW", "https://hooks.example.com")],
                vec![
                    "OFFLOAD_WEBHOOK_ALLOW",
                    "https://hooks.example.com",
                    "not a URL",
                ],
            ),
        ),
        (
            "a CIDR prefix too long",
            (
                vec![("OFFLOAD_WEBHOOK_ALLOW", "10.0.0.0/40")],
                vec!["OFFLOAD_WEBHOOK_ALLOW", "10.0.0.0/40"],
            ),
        ),
        (
            "a malformed secrets file",
            (
                vec![("OFFLOAD_WEBHOOK_SECRETS_FILE", bad_secrets.as_str())],
                vec!["OFFLOAD_WEBHOOK_SECRETS_FILE", "line 2", "whsec_"],
            ),
        ),
        (
            "a missing secrets file",
            (
                vec![(
                    "OFFLOAD_WEBHOOK_SECRETS_FILE",
                    "/nonexistent/offload-secrets",
                )],
                vec!["OFFLOAD_WEBHOOK_SECRETS_FILE", "cannot read"],
            ),
        ),
    ];
    for (case, (vars, expected)) in cases {
        let (status, logs) = WorkerProcess::start_failing(&env, &vars).await;
        assert_eq!(status.code(), Some(2), "{case}: {logs}");
        for needle in expected {
            assert!(
                logs.contains(needle),
                "{case}: {needle:?} missing from {logs}"
            );
        }
        assert!(
            !logs.contains("hunter2"),
            "{case}: a secret was printed: {logs}"
        );
    }
    env.cleanup().await;
}
