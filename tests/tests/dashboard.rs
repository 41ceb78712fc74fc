//! The dashboard over HTTP, through the real binaries: a browser session's forms need their
//! anti-forgery token, bad filters are a 4xx page (never a 500), an action through the API's
//! own admin routes lands in the audit list with the key's name, assets are served under their
//! hash and cached, a confirmed bulk delete removes exactly the dead jobs its filter matched,
//! and on PostgreSQL the jobs page searches with a JSON path.
//! (The browser suite, tests/browser.rs, drives the same pages in Chromium.)

use std::time::Duration;

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, client, poll, postgres::PgSchema};
use reqwest::header;
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(30);

/// Signs in with `token` through the form; the session cookie's `name=value`.
async fn session(api: &ApiProcess, token: &str) -> String {
    let response = api
        .anonymous()
        .post(api.url("/session"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("POST /session");
    assert_eq!(response.status(), 303, "signed in");
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    cookie.split(';').next().expect("name=value").to_owned()
}

/// GETs `path` with the session cookie; the status and the page.
async fn page(api: &ApiProcess, cookie: &str, path: &str) -> (u16, String) {
    let response = api
        .anonymous()
        .get(api.url(path))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// `text` percent-encoded for a query string (every byte but letters and digits).
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of the first `name="csrf"` field of `html`.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with its token");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("closed")].to_owned()
}

/// POSTs a form with the session cookie; the status and the `Location`.
async fn post(api: &ApiProcess, cookie: &str, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let response = api
        .anonymous()
        .post(api.url(path))
        .header(header::COOKIE, cookie)
        .form(form)
        .send()
        .await
        .expect("POST");
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (response.status().as_u16(), location)
}

/// Submits `n` sleep jobs that die on their one attempt and waits until they are dead.
async fn dead_jobs(api: &ApiProcess, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let job = api
            .submit(json!({"kind": "sleep", "payload": {"ms": 1, "fail": "permanent"}, "max_attempts": 1}))
            .await;
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        api.wait_for_status(id, "dead", WITHIN).await;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_forms_need_their_token_and_bad_input_is_a_clear_page() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "dash-1", 2, &[]).await;
    poll(WITHIN, "the API to list sleep", || async {
        api.kind("sleep").await.map(|_| ())
    })
    .await;
    let ids = dead_jobs(&api, 3).await;
    let admin = api.create_key("dash-admin", &["admin"], &[]);
    let cookie = session(&api, &admin).await;

    // A job that failed once and then succeeded: its page shows both attempts, the first one's
    // error with it, not only the latest.
    let retried = api
        .submit(
            json!({"kind": "sleep", "payload": {"ms": 1, "fail_attempts": 1}, "max_attempts": 2}),
        )
        .await;
    let retried = retried["id"].as_str().expect("id");
    api.wait_for_status(retried, "succeeded", WITHIN).await;
    let response = api
        .anonymous()
        .get(api.url(&format!("/jobs/{retried}")))
        .header(header::COOKIE, &cookie)
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .expect("GET the job's page");
    assert_eq!(response.status(), 200);
    let html = response.text().await.expect("page");
    for step in [
        "attempt 1 failed on dash-1",
        "it will be retried after",
        "asked to fail its first 1 attempts; this was attempt 1",
        "attempt 2 succeeded on dash-1",
    ] {
        assert!(html.contains(step), "{step}: {html}");
    }

    // Without the token, or with another, the action is refused and nothing is deleted.
    for form in [
        vec![("kind", "sleep")],
        vec![("kind", "sleep"), ("csrf", "forged")],
    ] {
        let (status, _) = post(&api, &cookie, "/ui/dead/delete", &form).await;
        assert_eq!(status, 403, "{form:?}");
    }
    assert_eq!(api.all_jobs("dead").await.len(), 3, "nothing deleted");

    // Bad filters are a 4xx page that says what is wrong.
    let too_long = format!("/ui/jobs?q={}", "x".repeat(501));
    let cases: [(&str, u16, &str); 8] = [
        ("/ui/jobs?status=bogus", 422, "bogus"),
        ("/ui/jobs?cursor=xyz", 422, "cursor"),
        ("/ui/jobs?colour=red", 422, "colour"),
        ("/ui/jobs?from=yesterday", 422, "2026-12-07T06:30"),
        ("/ui/jobs?q=%24.n", 422, "PostgreSQL"),
        (too_long.as_str(), 422, "longer than 500"),
        ("/ui/dead/confirm?action=explode", 422, "redrive or delete"),
        ("/ui/queues/no-such-queue/purge", 404, "no known kind"),
    ];
    for (path, status, says) in cases {
        let (got, html) = page(&api, &cookie, path).await;
        assert_eq!(got, status, "{path}: {html}");
        assert!(
            html.contains("role=\"alert\"") && html.contains(says),
            "{path}: {html}"
        );
    }

    // The confirmation counts, its form carries the token, and the delete takes exactly those.
    let (status, confirm) = page(&api, &cookie, "/ui/dead/confirm?action=delete&kind=sleep").await;
    assert_eq!(status, 200);
    assert!(
        confirm.contains("<strong>3</strong> dead jobs"),
        "{confirm}"
    );
    let token = csrf_of(&confirm);
    let (status, location) = post(
        &api,
        &cookie,
        "/ui/dead/delete",
        &[
            ("kind", "sleep"),
            ("reason", ""),
            ("q", ""),
            ("expected", "3"),
            ("csrf", &token),
        ],
    )
    .await;
    assert_eq!(status, 303);
    assert!(
        location.starts_with("/ui/dead?done=deleted%203%20dead%20jobs"),
        "{location}"
    );
    for id in &ids {
        let response = api
            .http
            .get(api.url(&format!("/jobs/{id}")))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 404, "{id} is deleted");
    }

    // An action through the API's own admin route, with a bearer token, is audited by name.
    let job = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 60000}}))
        .await;
    let id = job["id"].as_str().expect("id");
    let canceller = client(Some(&admin));
    let response = canceller
        .post(api.url(&format!("/jobs/{id}/cancel")))
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), 200);
    let (status, audit) = page(&api, &cookie, "/ui/audit").await;
    assert_eq!(status, 200);
    assert!(
        audit.contains("POST /jobs/{id}/cancel") && audit.contains(&format!("/jobs/{id}/cancel")),
        "{audit}"
    );
    assert!(
        audit.contains("POST /ui/dead/delete") && audit.contains("dash-admin"),
        "{audit}"
    );
    assert_eq!(
        audit.matches("POST /ui/dead/delete").count(),
        1,
        "refused actions are not audited"
    );

    // Assets: under their hash, cached for a year; any other name is a 404.
    let (_, overview) = page(&api, &cookie, "/").await;
    let at = overview
        .find("/assets/offload.")
        .expect("the stylesheet's link");
    let css = &overview[at..at + overview[at..].find('"').expect("closed")];
    let response = api
        .anonymous()
        .get(api.url(css))
        .send()
        .await
        .expect("GET css");
    assert_eq!(response.status(), 200);
    let cache = response
        .headers()
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(cache.contains("immutable"), "{cache}");
    let response = api
        .anonymous()
        .get(api.url("/assets/offload.00000000.css"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 404);

    // A key that may not read sees no overview: a submit key is sent to its form, a metrics
    // key refused.
    let submitter = api.create_key("dash-submitter", &["submit"], &[]);
    let submit_cookie = session(&api, &submitter).await;
    let response = api
        .anonymous()
        .get(api.url("/"))
        .header(header::COOKIE, &submit_cookie)
        .send()
        .await
        .expect("GET /");
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[header::LOCATION], "/ui/submit");
    let prometheus = api.create_key("dash-prometheus", &["metrics"], &[]);
    let response = api
        .anonymous()
        .get(api.url("/"))
        .bearer_auth(&prometheus)
        .send()
        .await
        .expect("GET /");
    assert_eq!(response.status(), 403, "no overview without read");

    // A read key gets the pages and is refused every action.
    let reader = api.create_key("dash-reader", &["read"], &[]);
    let read_cookie = session(&api, &reader).await;
    let (status, dead) = page(&api, &read_cookie, "/ui/dead").await;
    assert_eq!(status, 200);
    assert!(
        !dead.contains("value=\"redrive\""),
        "no redrive offered to a read key"
    );
    for path in ["/ui/dead/confirm?action=delete", "/ui/audit"] {
        assert_eq!(page(&api, &read_cookie, path).await.0, 403, "{path}");
    }

    drop(worker);
    drop(api);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_the_jobs_page_searches_with_a_json_path() {
    let env = TestEnv::new().await;
    let schema = PgSchema::create().await;
    let api = ApiProcess::start(&env, &[("OFFLOAD_DATABASE_URL", schema.url.as_str())]).await;
    let worker = WorkerProcess::start(&env, "dash-1", 2, &[]).await;
    poll(WITHIN, "the API to list sleep", || async {
        api.kind("sleep").await.map(|_| ())
    })
    .await;
    let long = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 25}}))
        .await;
    let short = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 2}}))
        .await;
    for job in [&long, &short] {
        api.wait_for_status(job["id"].as_str().expect("id"), "succeeded", WITHIN)
            .await;
    }
    let admin = api.create_key("dash-admin", &["admin"], &[]);
    let cookie = session(&api, &admin).await;
    let (status, html) = page(&api, &cookie, "/ui/jobs?q=%24.ms%20%3F%20(%40%20%3E%2010)").await;
    assert_eq!(status, 200, "{html}");
    let shown = |id: &serde_json::Value| {
        let id = id.as_str().expect("id");
        html.contains(&format!("/jobs/{id}\""))
    };
    assert!(shown(&long["id"]) && !shown(&short["id"]), "{html}");
    let (status, html) = page(&api, &cookie, "/ui/jobs?q=%24.%5B%5B").await;
    assert_eq!(status, 422, "a malformed path: {html}");
    assert!(html.contains("not a JSON path"), "{html}");
    // A path that parses but cannot run (a date compared without a time zone) is the client's
    // to change: a 422, not the store's 503.
    let path = r#"$ ? ("2020-01-01".datetime() < "2020-01-01 00:00:00+00".datetime())"#;
    let response = api
        .anonymous()
        .get(api.url(&format!("/ui/jobs?q={}", encoded(path))))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    let html = response.text().await.expect("page");
    assert_eq!(status, 422, "{html}");
    assert!(html.contains("cannot be run"), "{html}");

    drop(worker);
    drop(api);
    schema.remove().await;
    env.cleanup().await;
}
