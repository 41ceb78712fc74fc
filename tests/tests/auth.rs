//! The front door's locks, through the real binaries: API keys made with the real `keys`
//! command, scopes, 401/403 problems with their challenge, each key's own jobs and idempotency
//! keys, browser sessions and the same-origin rule, per-key rate limits, redrive conflicts, and
//! the `OFFLOAD_AUTH=off` rule.

use std::time::Duration;

use offload_tests::{
    ApiProcess, TestEnv, WorkerProcess, client, poll, postgres::PgSchema, run_binary,
};
use reqwest::{Response, header};
use serde_json::{Value, json};

const DONE_WITHIN: Duration = Duration::from_secs(20);

fn sleep_job() -> Value {
    json!({"kind": "sleep", "payload": {"ms": 1}})
}

/// Asserts `response` is a problem+json with `status`; returns its `WWW-Authenticate` and body.
async fn problem(response: Response, status: u16, what: &str) -> (String, Value) {
    assert_eq!(response.status().as_u16(), status, "{what}");
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "{what}");
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["status"], status, "{what}: {body}");
    (challenge, body)
}

/// The protected routes: (method, path, body).
fn protected(id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("POST", "/jobs".into(), Some(sleep_job())),
        (
            "POST",
            "/jobs/batch".into(),
            Some(json!({"jobs": [sleep_job()]})),
        ),
        ("GET", "/jobs".into(), None),
        ("GET", format!("/jobs/{id}"), None),
        ("POST", format!("/jobs/{id}/retry"), None),
        ("GET", "/kinds".into(), None),
        ("GET", "/workers".into(), None),
        ("GET", "/metrics".into(), None),
    ]
}

async fn send(
    http: &reqwest::Client,
    api: &ApiProcess,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Response {
    let request = match method {
        "POST" => http.post(api.url(path)),
        _ => http.get(api.url(path)),
    };
    let request = match body {
        Some(b) => request.json(b),
        None => request,
    };
    request.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_key_every_protected_route_is_401_and_the_open_ones_answer() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let job = api.submit(sleep_job()).await;
    let id = job["id"].as_str().expect("id");
    let revoked = api.create_key("gone", &["submit", "read"], &[]);
    api.keys(&["revoke", "gone"]);
    let expired = api.create_key("old", &["submit", "read"], &["--expires-in-days", "1"]);
    // A day is the shortest expiry the command takes: move it into the past in the store.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", env.database.display()))
        .await
        .expect("store");
    sqlx::query("UPDATE keys SET expires_at = 0 WHERE name = 'old'")
        .execute(&pool)
        .await
        .expect("expire");
    pool.close().await;

    let anonymous = api.anonymous();
    let cases = [
        (
            anonymous.clone(),
            "no credentials",
            "Bearer realm=\"offload\"",
        ),
        (
            client(Some("ofl_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
            "an unknown token",
            "Bearer realm=\"offload\", error=\"invalid_token\"",
        ),
        (
            client(Some("not-a-token")),
            "garbage",
            "Bearer realm=\"offload\", error=\"invalid_token\"",
        ),
        (
            client(Some(&revoked)),
            "a revoked key",
            "Bearer realm=\"offload\", error=\"invalid_token\"",
        ),
        (
            client(Some(&expired)),
            "an expired key",
            "Bearer realm=\"offload\", error=\"invalid_token\"",
        ),
    ];
    for (http, who, challenge) in &cases {
        for (method, path, body) in protected(id) {
            let what = format!("{method} {path} with {who}");
            let response = send(http, &api, method, &path, body.as_ref()).await;
            let (got, problem) = problem(response, 401, &what).await;
            assert_eq!(&got, challenge, "{what}");
            assert_eq!(problem["type"], "/problems/unauthenticated", "{what}");
        }
    }
    for path in [
        "/health/live",
        "/health/ready",
        "/openapi.json",
        "/docs",
        "/",
    ] {
        let response = anonymous.get(api.url(path)).send().await.expect("GET");
        assert_eq!(response.status(), 200, "{path} is open");
    }
    assert_eq!(
        api.all_jobs("queued").await.len() + api.all_jobs("succeeded").await.len(),
        1,
        "nothing was submitted without a key"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_may_use_only_the_routes_of_its_scopes() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let job = api.submit(sleep_job()).await;
    let id = job["id"].as_str().expect("id");
    let reader = client(Some(&api.create_key("reader", &["read"], &[])));
    let submitter = client(Some(&api.create_key("submitter", &["submit"], &[])));
    let prometheus = client(Some(&api.create_key("prometheus", &["metrics"], &[])));

    // (client, who, method, path, allowed, the scope a refusal names)
    let cases = [
        (&reader, "read", "POST", "/jobs", false, "submit"),
        (&reader, "read", "POST", "/jobs/batch", false, "submit"),
        (&reader, "read", "GET", "/kinds", true, ""),
        (&reader, "read", "GET", "/workers", true, ""),
        (&reader, "read", "GET", "/metrics", false, "metrics"),
        (&reader, "read", "POST", "/jobs/{id}/retry", false, "admin"),
        (&submitter, "submit", "GET", "/jobs", false, "read"),
        (&submitter, "submit", "POST", "/jobs", true, ""),
        (&prometheus, "metrics", "GET", "/metrics", true, ""),
        (&prometheus, "metrics", "GET", "/jobs", false, "read"),
        (&api.http, "admin", "GET", "/metrics", true, ""),
        (&api.http, "admin", "GET", "/jobs/{id}", true, ""),
    ];
    for (http, who, method, path, allowed, scope) in cases {
        let path = path.replace("{id}", id);
        let body = (method == "POST").then(|| {
            if path.ends_with("batch") {
                json!({"jobs": [sleep_job()]})
            } else {
                sleep_job()
            }
        });
        let what = format!("{method} {path} with a {who} key");
        let response = send(http, &api, method, &path, body.as_ref()).await;
        if allowed {
            assert!(
                response.status().is_success(),
                "{what}: {}",
                response.status()
            );
        } else {
            let (challenge, body) = problem(response, 403, &what).await;
            assert_eq!(
                challenge,
                format!(
                    "Bearer realm=\"offload\", error=\"insufficient_scope\", scope=\"{scope}\""
                ),
                "{what}"
            );
            assert_eq!(body["type"], "/problems/insufficient-scope", "{what}");
        }
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sees_and_deduplicates_only_its_own_jobs_and_admin_sees_all() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let a = client(Some(&api.create_key("a", &["submit", "read"], &[])));
    let b = client(Some(&api.create_key("b", &["submit", "read"], &[])));
    let keyed = |http: &reqwest::Client| {
        http.post(api.url("/jobs"))
            .header("idempotency-key", "same-key")
            .json(&sleep_job())
            .send()
    };
    let first_a: Value = keyed(&a).await.expect("a").json().await.expect("job");
    let again_a = keyed(&a).await.expect("a again");
    assert_eq!(again_a.status(), 200, "a repeat under the same key");
    let again_a: Value = again_a.json().await.expect("job");
    let first_b = keyed(&b).await.expect("b");
    assert_eq!(
        first_b.status(),
        202,
        "the same Idempotency-Key under B is a new job"
    );
    let first_b: Value = first_b.json().await.expect("job");
    let (id_a, id_b) = (
        first_a["id"].as_str().expect("id"),
        first_b["id"].as_str().expect("id"),
    );
    assert_eq!(again_a["id"], id_a);
    assert_ne!(id_a, id_b);

    let get = |http: &reqwest::Client, id: &str| http.get(api.url(&format!("/jobs/{id}"))).send();
    assert_eq!(get(&a, id_a).await.expect("get").status(), 200);
    let (_, body) = problem(get(&b, id_a).await.expect("get"), 404, "B reads A's job").await;
    assert_eq!(body["type"], "/problems/job-not-found");
    let list = |http: &reqwest::Client| {
        let url = api.url("/jobs");
        let http = http.clone();
        async move {
            let page: Value = http
                .get(url)
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("page");
            page["jobs"]
                .as_array()
                .expect("jobs")
                .iter()
                .filter_map(|j| j["id"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(&a).await, vec![id_a.to_owned()]);
    assert_eq!(list(&b).await, vec![id_b.to_owned()]);
    let all = list(&api.http).await;
    assert!(
        all.contains(&id_a.to_owned()) && all.contains(&id_b.to_owned()),
        "{all:?}"
    );
    assert_eq!(
        get(&api.http, id_b).await.expect("get").status(),
        200,
        "admin reads B's job"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_prints_only_the_token_and_the_store_keeps_only_its_hash() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let output = api.keys(&[
        "create", "--name", "ci", "--scope", "submit", "--scope", "read",
    ]);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {output:?}");
    let token = lines[0];
    assert!(
        token.starts_with("ofl_")
            && token.len() == 47
            && token[4..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );
    // The token works...
    let http = client(Some(token));
    let response = http
        .post(api.url("/jobs"))
        .json(&sleep_job())
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 202);
    // ...and is nowhere in the store's files, nor in the listing, nor in the API's log.
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", env.database.display());
        if let Ok(bytes) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(&token[4..]), "{path} holds the token");
        }
    }
    let listing = api.keys(&["list"]);
    assert!(
        listing.contains("ci") && listing.contains("submit,read"),
        "{listing}"
    );
    assert!(!listing.contains(&token[4..]), "{listing}");
    assert!(
        api.logs().iter().all(|l| !l.contains(&token[4..])),
        "the token is logged"
    );
    // stdout and stderr of a create together: the token once (stdout), logs without it.
    let (status, both) = run_binary(
        true,
        &["keys", "create", "--name", "ci2", "--scope", "read"],
        &[
            (
                "OFFLOAD_DATABASE_URL",
                &format!("sqlite://{}", env.database.display()),
            ),
            ("OFFLOAD_LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
        ],
    );
    assert!(status.success(), "{both}");
    let printed = both
        .split_whitespace()
        .filter(|w| w.contains("ofl_"))
        .count();
    assert_eq!(printed, 1, "the token is printed once, not logged: {both}");
    // A second key of the same name is refused; revoking names it.
    let (status, text) = run_binary(
        true,
        &["keys", "create", "--name", "ci", "--scope", "read"],
        &[(
            "OFFLOAD_DATABASE_URL",
            &format!("sqlite://{}", env.database.display()),
        )],
    );
    assert!(
        !status.success() && text.contains("exists already"),
        "{text}"
    );
    api.keys(&["revoke", "ci"]);
    // Each replica trusts a key it looked up for a second (auth::cache::TTL).
    poll(
        Duration::from_secs(3),
        "the revoked key is refused",
        || async {
            let response = http.get(api.url("/jobs")).send().await.expect("list");
            (response.status() == 401).then_some(())
        },
    )
    .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_form_post_is_403_and_enqueues_nothing() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let form = [("kind", "sleep"), ("payload", "{\"ms\": 1}")];
    let cases = [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ];
    for (name, value) in cases {
        let response = api
            .http
            .post(api.url("/jobs"))
            .header(name, value)
            .header(header::ACCEPT, "text/html")
            .form(&form)
            .send()
            .await
            .expect("post");
        let (_, body) = problem(response, 403, &format!("{name}: {value}")).await;
        assert_eq!(body["type"], "/problems/cross-origin");
    }
    assert_eq!(
        env.ready_count(&env.names.jobs_queue).await,
        0,
        "nothing enqueued"
    );
    assert!(api.all_jobs("queued").await.is_empty(), "nothing recorded");
    env.cleanup().await;
}

/// Signs in at `/session` with `token`; the session cookie's `name=value`, after checking its
/// attributes.
async fn sign_in(api: &ApiProcess, token: &str) -> String {
    let response = api
        .anonymous()
        .post(api.url("/session"))
        .header("origin", &api.base)
        .form(&[("token", token)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[header::LOCATION], "/");
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .expect("cookie")
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie.split("; ").any(|a| a == attribute),
            "{attribute}: {cookie}"
        );
    }
    assert!(!cookie.contains(token), "{cookie}");
    cookie.split(';').next().expect("name=value").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_with_a_token_and_submits_the_form_with_its_cookie() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let browser = api.anonymous();
    let page = browser.get(api.url("/")).send().await.expect("GET /");
    let page = page.text().await.expect("page");
    assert!(page.contains("action=\"/session\""), "sign-in form: {page}");
    let wrong = browser
        .post(api.url("/session"))
        .form(&[("token", "ofl_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")])
        .send()
        .await
        .expect("sign in");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get(header::SET_COOKIE).is_none());

    let token = api.create_key("browser", &["submit", "read"], &[]);
    let cookie = sign_in(&api, &token).await;
    let page = browser
        .get(api.url("/ui/submit"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("GET /ui/submit")
        .text()
        .await
        .expect("page");
    assert!(page.contains("action=\"/jobs\""), "the job form: {page}");
    let host = api.base.clone();
    let posted = browser
        .post(api.url("/jobs"))
        .header(header::COOKIE, &cookie)
        .header("origin", &host)
        .header(header::ACCEPT, "text/html")
        .form(&[("kind", "sleep"), ("payload", "{\"ms\": 1}")])
        .send()
        .await
        .expect("form post");
    assert_eq!(posted.status(), 303);
    let location = posted.headers()[header::LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(location.starts_with("/jobs/"), "{location}");
    let job_page = browser
        .get(api.url(&location))
        .header(header::COOKIE, &cookie)
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .expect("job page");
    assert_eq!(job_page.status(), 200);

    let out = browser
        .post(api.url("/session/logout"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()[header::SET_COOKIE]
            .to_str()
            .expect("cookie")
            .contains("Max-Age=0"),
        "the cookie is cleared"
    );
    let after = browser
        .get(api.url(&location))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("job after logout");
    assert_eq!(after.status(), 401, "the session has ended");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_redrive_of_a_job_that_is_no_longer_dead_is_409() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "w1", 1, &[]).await;
    let job = api
        .submit(json!({"kind": "sleep", "payload": {"fail": "permanent"}}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    api.wait_for_status(&id, "dead", DONE_WITHIN).await;
    // Without a worker the redriven job stays queued, so it is not dead again by the second.
    worker.kill9().await;
    let redrive = || api.http.post(api.url(&format!("/jobs/{id}/retry"))).send();
    let (one, two) = tokio::join!(redrive(), redrive());
    let mut statuses = [
        one.expect("redrive").status().as_u16(),
        two.expect("redrive").status().as_u16(),
    ];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 409], "two redrives at once: one is taken");
    let third = redrive().await.expect("redrive");
    let (_, body) = problem(third, 409, "a redrive of a queued job").await;
    assert_eq!(body["type"], "/problems/conflict");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_rate_limit_a_key_gets_429_with_retry_after_then_is_served_again() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let token = api.create_key(
        "slow",
        &["submit", "read"],
        &["--rate-per-s", "1", "--burst", "3"],
    );
    let http = client(Some(&token));
    let submit = || http.post(api.url("/jobs")).json(&sleep_job()).send();
    for i in 0..3 {
        let response = submit().await.expect("submit");
        assert_eq!(response.status(), 202, "submit {i} is within the burst");
        let rate = response.headers()["ratelimit"].to_str().expect("header");
        assert!(rate.starts_with("\"default\";r="), "{rate}");
    }
    let refused = submit().await.expect("submit");
    let headers = refused.headers().clone();
    let (_, body) = problem(refused, 429, "the fourth submit").await;
    assert_eq!(body["type"], "/problems/rate-limited");
    let retry_after: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .expect("retry-after")
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(headers["ratelimit-policy"], "\"default\";q=3;w=3");
    assert!(
        headers["ratelimit"]
            .to_str()
            .expect("header")
            .starts_with("\"default\";r=0;t="),
        "{:?}",
        headers["ratelimit"]
    );
    // A batch larger than the burst can never fit: 422, not an endless 429.
    let batch = json!({"jobs": [sleep_job(), sleep_job(), sleep_job(), sleep_job()]});
    let too_big = http
        .post(api.url("/jobs/batch"))
        .json(&batch)
        .send()
        .await
        .expect("batch");
    assert_eq!(too_big.status(), 422);
    // Another key is not limited by this one's bucket.
    assert_eq!(
        api.http
            .post(api.url("/jobs"))
            .json(&sleep_job())
            .send()
            .await
            .expect("admin")
            .status(),
        202
    );
    poll(Duration::from_secs(5), "the bucket to refill", || async {
        (submit().await.expect("submit").status() == 202).then_some(())
    })
    .await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_off_is_refused_on_a_public_address_and_allowed_on_loopback_with_a_warning() {
    let env = TestEnv::new().await;
    let mut vars: Vec<(String, String)> = env.vars();
    vars.retain(|(k, _)| k != "OFFLOAD_HTTP_ADDR");
    vars.push(("OFFLOAD_HTTP_ADDR".into(), "0.0.0.0:0".into()));
    vars.push(("OFFLOAD_AUTH".into(), "off".into()));
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, output) = run_binary(true, &[], &borrowed);
    assert!(!status.success(), "refused: {output}");
    assert!(
        output.contains("OFFLOAD_AUTH=off is refused") && output.contains("127.0.0.1"),
        "names the fix: {output}"
    );

    let api = ApiProcess::start(&env, &[("OFFLOAD_AUTH", "off")]).await;
    let warned = api
        .logs()
        .iter()
        .any(|l| l.contains("WARN") && l.contains("OFFLOAD_AUTH=off"));
    assert!(warned, "a warning at start: {:?}", api.logs());
    let response = api
        .anonymous()
        .post(api.url("/jobs"))
        .json(&sleep_job())
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), 202, "no key needed");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_session_made_on_one_replica_works_on_the_other() {
    let env = TestEnv::new().await;
    let schema = PgSchema::create().await;
    let vars = [("OFFLOAD_DATABASE_URL", schema.url.as_str())];
    let one = ApiProcess::start(&env, &vars).await;
    let two = ApiProcess::start(&env, &vars).await;
    let token = one.create_key("shared", &["submit", "read"], &[]);
    let cookie = sign_in(&one, &token).await;
    let job = client(Some(&token))
        .post(two.url("/jobs"))
        .json(&sleep_job())
        .send()
        .await
        .expect("submit");
    assert_eq!(job.status(), 202, "the key works on the other replica");
    let job: Value = job.json().await.expect("job");
    let id = job["id"].as_str().expect("id");
    let seen = two
        .anonymous()
        .get(two.url(&format!("/jobs/{id}")))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(seen.status(), 200, "the session works on the other replica");
    drop((one, two));
    schema.remove().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_refuses_the_keys_command_naming_the_api() {
    let (status, output) = run_binary(false, &["keys", "list"], &[]);
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("offload-api keys"), "{output}");
}
