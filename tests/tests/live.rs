//! `GET /jobs/{id}/events` against the real API, broker and worker: a subscriber gets the job as
//! it is, then each change until it ends, then `end`; a late subscriber gets the finished job
//! and `end` at once; an unknown job is a 404 problem.

use std::time::{Duration, Instant};

use offload_tests::{ApiProcess, TestEnv, WorkerProcess};
use serde_json::{Value, json};

/// One Server-Sent Event.
#[derive(Debug)]
struct Sse {
    event: String,
    data: String,
}

/// Reads the stream at `path` until it closes (bounded by `within`); its events, in order.
async fn read_stream(api: &ApiProcess, path: &str, within: Duration) -> (Vec<Sse>, Duration) {
    read_stream_then(api, path, within, async {}).await
}

/// [`read_stream`], running `after_first` once the first event has arrived.
async fn read_stream_then(
    api: &ApiProcess,
    path: &str,
    within: Duration,
    after_first: impl Future<Output = ()>,
) -> (Vec<Sse>, Duration) {
    let mut after_first = Some(after_first);
    let started = Instant::now();
    let mut response = api.http.get(api.url(path)).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{:?}",
        response.headers()
    );
    let mut text = String::new();
    loop {
        let left = within
            .checked_sub(started.elapsed())
            .unwrap_or_else(|| panic!("the stream did not end within {within:?}:\n{text}"));
        match tokio::time::timeout(left, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                text.push_str(&String::from_utf8_lossy(&chunk));
                if text.contains("\n\n")
                    && let Some(then) = after_first.take()
                {
                    then.await;
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("reading the stream: {e}\n{text}"),
            Err(_) => panic!("the stream did not end within {within:?}:\n{text}"),
        }
    }
    let events = text
        .split("\n\n")
        .filter_map(|block| {
            let mut event = String::from("message");
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            (!data.is_empty()).then(|| Sse {
                event,
                data: data.join("\n"),
            })
        })
        .collect();
    (events, started.elapsed())
}

#[tokio::test]
async fn a_subscriber_sees_each_change_until_the_end_and_a_late_one_gets_the_end_at_once() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "live-w", 1, &[]).await;

    let job = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 1500}}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let (events, took) =
        read_stream(&api, &format!("/jobs/{id}/events"), Duration::from_secs(30)).await;
    let statuses: Vec<String> = events
        .iter()
        .filter(|e| e.event == "job")
        .map(|e| {
            let job: Value = serde_json::from_str(&e.data).expect("job JSON");
            assert_eq!(job["id"], id.as_str());
            job["status"].as_str().expect("status").to_owned()
        })
        .collect();
    assert!(
        statuses.contains(&"running".to_owned()),
        "the stream shows the job running: {events:?}"
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("succeeded"),
        "{events:?}"
    );
    let last = events.last().expect("events");
    assert_eq!(last.event, "end", "{events:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&last.data).expect("JSON")["status"],
        "succeeded"
    );
    // Each event is a change (a status, or the progress `sleep` reports), in the job's order.
    let jobs: Vec<&str> = events
        .iter()
        .filter(|e| e.event == "job")
        .map(|e| e.data.as_str())
        .collect();
    assert!(jobs.windows(2).all(|w| w[0] != w[1]), "{events:?}");
    let mut order = statuses.clone();
    order.dedup();
    assert!(
        order == ["queued", "running", "succeeded"] || order == ["running", "succeeded"],
        "{statuses:?}"
    );
    println!("stream of a 1.5 s sleep: {statuses:?}, closed after {took:?}");

    // A late subscriber gets the finished job, then the end, at once.
    let (late, took) =
        read_stream(&api, &format!("/jobs/{id}/events"), Duration::from_secs(5)).await;
    assert_eq!(late.len(), 2, "{late:?}");
    assert_eq!(late[0].event, "job");
    assert_eq!(
        serde_json::from_str::<Value>(&late[0].data).expect("JSON")["status"],
        "succeeded"
    );
    assert_eq!(late[1].event, "end");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // An unknown job is a 404 problem, not an empty stream.
    let response = api
        .http
        .get(api.url("/jobs/0193e0f4-0000-7000-8000-000000000000/events"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(
        api.http
            .get(api.url("/jobs/not-a-job/events"))
            .send()
            .await
            .expect("GET")
            .status(),
        404
    );

    api.stop().await;
    drop(worker);
    env.cleanup().await;
}

#[tokio::test]
async fn a_stream_follows_a_scheduled_job_to_its_cancel_and_ends_when_the_api_stops() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let job = api.submit(json!({"kind": "noop", "delay_s": 600})).await;
    let id = job["id"].as_str().expect("id").to_owned();
    let path = format!("/jobs/{id}/events");
    let cancel = async {
        let status = api
            .http
            .post(api.url(&format!("/jobs/{id}/cancel")))
            .send()
            .await
            .expect("cancel")
            .status();
        assert_eq!(status, 200);
    };
    let streamed = read_stream_then(&api, &path, Duration::from_secs(20), cancel).await;
    let (events, _) = streamed;
    let statuses: Vec<Value> = events
        .iter()
        .filter(|e| e.event == "job")
        .map(|e| serde_json::from_str::<Value>(&e.data).expect("JSON")["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [json!("scheduled"), json!("cancelled")],
        "{events:?}"
    );
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("end"));

    // An open stream does not hold up the API's stop: it ends when the API begins to stop.
    let waiting = api.submit(json!({"kind": "noop", "delay_s": 600})).await;
    let mut open = api
        .http
        .get(api.url(&format!(
            "/jobs/{}/events",
            waiting["id"].as_str().expect("id")
        )))
        .send()
        .await
        .expect("GET");
    let first = open.chunk().await.expect("chunk").expect("the first event");
    assert!(String::from_utf8_lossy(&first).contains("scheduled"));
    let stopping = Instant::now();
    let status = api.stop().await;
    assert!(status.success(), "{status}");
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = open.chunk().await {}
    })
    .await;
    assert!(drained.is_ok(), "the stream ended with the API");
    env.cleanup().await;
}

#[tokio::test]
async fn progress_reports_reach_the_job_and_its_stream_at_most_once_per_interval() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    // `sleep` reports every 100 ms; the worker passes on at most one report per 500 ms.
    let worker = WorkerProcess::start(
        &env,
        "live-p",
        1,
        &[("OFFLOAD_PROGRESS_INTERVAL_MS", "500")],
    )
    .await;
    let job = api
        .submit(json!({"kind": "sleep", "payload": {"ms": 3000}}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let (events, _) =
        read_stream(&api, &format!("/jobs/{id}/events"), Duration::from_secs(30)).await;
    let reports: Vec<Value> = events
        .iter()
        .filter(|e| e.event == "job")
        .filter_map(|e| {
            let job: Value = serde_json::from_str(&e.data).expect("JSON");
            (job["status"] == "running" && job["progress"].is_object())
                .then(|| job["progress"].clone())
        })
        .collect();
    println!("progress seen on the stream: {reports:?}");
    assert!(reports.len() >= 3, "{events:?}");
    let fractions: Vec<f64> = reports
        .iter()
        .map(|p| p["fraction"].as_f64().expect("fraction"))
        .collect();
    assert!(
        fractions.windows(2).all(|w| w[0] < w[1]),
        "each report moves on: {fractions:?}"
    );
    assert!(fractions.iter().all(|f| (0.0..=1.0).contains(f)));
    assert!(
        reports[0]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("slept "),
        "{reports:?}"
    );
    // Rate-limited: reports are at least the interval apart, though the handler reports every
    // 100 ms (30 times in all).
    let times: Vec<time::OffsetDateTime> = reports
        .iter()
        .map(|p| offload_tests::timestamp(p, "at"))
        .collect();
    for pair in times.windows(2) {
        let gap = (pair[1] - pair[0]).as_seconds_f64();
        assert!(gap >= 0.45, "reports {gap} s apart: {times:?}");
    }
    assert!(
        reports.len() <= 8,
        "{} reports for a 3 s job",
        reports.len()
    );
    // The finished job keeps the last report it had.
    let done = api.job(&id).await;
    assert_eq!(done["status"], "succeeded");
    assert!(done["progress"]["fraction"].as_f64().is_some(), "{done}");

    api.stop().await;
    drop(worker);
    env.cleanup().await;
}
