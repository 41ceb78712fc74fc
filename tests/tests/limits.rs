//! Limits on what a client controls: an oversized request id is replaced (it never reaches the
//! broker, so it never costs the API its connection), numbers keep their size from the request
//! to the store, and a body limit the broker cannot carry is refused at start-up.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, run_binary};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_ids_beside_normal_submits_cost_no_submit_and_no_reconnect() {
    let env = TestEnv::new().await;
    let api = Arc::new(ApiProcess::start(&env, &[]).await);
    let _worker = WorkerProcess::start(&env, "ids", 4, &[]).await;

    // A plain id is kept (echoed); anything else gets a fresh UUID.
    let plain = api
        .http
        .post(api.url("/jobs"))
        .header("x-request-id", "client-id_1.2")
        .json(&json!({"kind": "noop"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(plain.status(), 202);
    assert_eq!(plain.headers()["x-request-id"], "client-id_1.2");

    let stop = Arc::new(AtomicBool::new(false));
    let hostile = {
        let api = api.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let huge = "a".repeat(150 * 1024);
            let mut sent = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let response = api
                    .http
                    .post(api.url("/jobs"))
                    .header("x-request-id", huge.as_str())
                    .json(&json!({"kind": "noop"}))
                    .send()
                    .await
                    .expect("POST with a 150 KB request id");
                let status = response.status().as_u16();
                // 202 with a new id; 431 once header sizes are capped at the listener.
                assert!(matches!(status, 202 | 431), "hostile submit: {status}");
                if status == 202 {
                    let id = response.headers()["x-request-id"]
                        .to_str()
                        .expect("ASCII")
                        .to_owned();
                    assert!(
                        uuid::Uuid::parse_str(&id).is_ok(),
                        "replaced by a UUID: {id:.40}"
                    );
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            sent
        })
    };

    let mut normal = 0u32;
    let mut failed = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        let (status, body) = api.post_job(&json!({"kind": "noop"})).await;
        normal += 1;
        if status != 202 {
            failed.push((status, body));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let hostile_sent = hostile.await.expect("hostile loop");

    assert!(hostile_sent >= 15, "only {hostile_sent} hostile requests");
    assert!(normal >= 50, "only {normal} normal submits");
    assert!(
        failed.is_empty(),
        "{} of {normal} normal submits failed: {:?}",
        failed.len(),
        failed.first()
    );
    let logs = api.logs();
    assert!(
        !logs
            .iter()
            .any(|l| l.contains("lost the broker") || l.contains("reconnected to the broker")),
        "the API lost its broker connection"
    );
    println!("{normal} normal submits, {hostile_sent} with a 150 KB request id: 0 failed");
    Arc::into_inner(api).expect("one owner").stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_exponent_numbers_is_stored_and_returned_at_about_its_own_size() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let _worker = WorkerProcess::start(&env, "sizes", 1, &[]).await;

    // About 850 KB of `1e15`: before numbers kept their text, each became
    // `1000000000000000.0` (18 bytes for 4) and the stored result four times the body.
    let numbers = vec!["1e15"; 170_000].join(",");
    let body = format!(r#"{{"kind":"noop","payload":{{"n":[{numbers}]}}}}"#);
    let response = api
        .http
        .post(api.url("/jobs"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 202);
    let job: serde_json::Value = response.json().await.expect("job");
    let id = job["id"].as_str().expect("id").to_owned();
    api.wait_for_status(&id, "succeeded", Duration::from_secs(30))
        .await;

    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", env.database.display()))
        .await
        .expect("store");
    let (payload, result): (i64, i64) =
        sqlx::query_as("SELECT length(payload), length(result) FROM jobs WHERE id = ?")
            .bind(&id)
            .fetch_one(&db)
            .await
            .expect("the job's row");
    db.close().await;
    // The documented bound: one byte more per number written with an unsigned exponent
    // (`1e15` is carried as `1e+15`), so at most 5/4 of the body; here 6/5.
    let body_len = i64::try_from(body.len()).expect("len");
    let bound = body_len * 6 / 5;
    println!("body {body_len} B, stored payload {payload} B, stored result {result} B");
    assert!(payload <= bound, "payload {payload} B over {bound} B");
    assert!(result <= bound, "result {result} B over {bound} B");
    api.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_body_limit_the_broker_cannot_carry_is_refused_at_start_up() {
    let (status, output) = run_binary(
        true,
        &[],
        &[
            ("OFFLOAD_MAX_BODY_BYTES", "268435456"),
            ("OFFLOAD_HTTP_ADDR", "127.0.0.1:0"),
        ],
    );
    assert!(!status.success(), "{output}");
    assert!(output.contains("OFFLOAD_MAX_BODY_BYTES"), "{output}");
    assert!(
        output.contains("OFFLOAD_BROKER_MAX_MESSAGE_BYTES"),
        "{output}"
    );
}
