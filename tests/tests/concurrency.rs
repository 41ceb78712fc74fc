//! Concurrency limits against the real broker, store, API and three workers: jobs sharing a
//! `concurrency_key` never run more than its limit at once, nor jobs of a kind more than its
//! `max_running`, whatever the workers could take; the rest wait and every job still runs once.

use std::time::Duration;

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll, timestamp};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The most of `jobs` whose `[started_at, finished_at]` overlap at one moment.
fn most_at_once(jobs: &[&Value]) -> usize {
    let mut edges: Vec<(OffsetDateTime, i32)> = Vec::new();
    for job in jobs {
        edges.push((timestamp(job, "started_at"), 1));
        edges.push((timestamp(job, "finished_at"), -1));
    }
    // An end at the same instant as a start frees its slot first.
    edges.sort_by_key(|(t, step)| (*t, *step));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

async fn submit_batch(api: &ApiProcess, jobs: Vec<Value>) -> Vec<Value> {
    let response = api
        .http
        .post(api.url("/jobs/batch"))
        .json(&json!({ "jobs": jobs }))
        .send()
        .await
        .expect("POST /jobs/batch");
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    response.json::<Value>().await.expect("jobs")["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until all `n` jobs succeeded; returns them.
async fn all_succeeded(api: &ApiProcess, n: usize) -> Vec<Value> {
    poll(Duration::from_secs(90), "every job to succeed", || async {
        let done = api.all_jobs("succeeded").await;
        (done.len() == n).then_some(done)
    })
    .await
}

#[tokio::test]
async fn jobs_of_a_key_never_run_past_its_limit_across_three_workers() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    for (body, says) in [
        (
            json!({"kind": "noop", "concurrency_limit": 2}),
            "concurrency_key",
        ),
        (
            json!({"kind": "noop", "concurrency_key": ""}),
            "concurrency_key",
        ),
        (
            json!({"kind": "noop", "concurrency_key": "a", "concurrency_limit": 0}),
            "concurrency_limit",
        ),
        (
            json!({"kind": "noop", "concurrency_key": "a", "delay_s": 5}),
            "run_at or delay_s",
        ),
    ] {
        let (status, problem) = api.post_job(&body).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap_or("").contains(says),
            "{body}: {problem}"
        );
    }
    // Three workers that could run 4 jobs each at once.
    let workers = [
        WorkerProcess::start(&env, "limits-w1", 4, &[]).await,
        WorkerProcess::start(&env, "limits-w2", 4, &[]).await,
        WorkerProcess::start(&env, "limits-w3", 4, &[]).await,
    ];
    let sleep = |key: Option<&str>, limit: Option<u32>| {
        let mut job = json!({"kind": "sleep", "payload": {"ms": 300}});
        if let Some(key) = key {
            job["concurrency_key"] = json!(key);
        }
        if let Some(limit) = limit {
            job["concurrency_limit"] = json!(limit);
        }
        job
    };
    let mut jobs = Vec::new();
    jobs.extend((0..12).map(|_| sleep(Some("tenant-a"), Some(2))));
    jobs.extend((0..6).map(|_| sleep(Some("tenant-b"), None)));
    jobs.extend((0..12).map(|_| sleep(None, None)));
    let accepted = submit_batch(&api, jobs).await;
    assert_eq!(accepted.len(), 30);
    let held: Vec<&Value> = accepted
        .iter()
        .filter(|j| j["concurrency_key"].is_string())
        .collect();
    assert!(
        held.iter()
            .all(|j| j["status"] == "scheduled" && j["run_at"].is_null()),
        "limited jobs wait in the store: {held:?}"
    );

    let done = all_succeeded(&api, 30).await;
    let of = |key: Option<&str>| -> Vec<&Value> {
        done.iter()
            .filter(|j| j["concurrency_key"].as_str() == key)
            .collect()
    };
    let (a, b, free) = (of(Some("tenant-a")), of(Some("tenant-b")), of(None));
    let (most_a, most_b, most_free) = (most_at_once(&a), most_at_once(&b), most_at_once(&free));
    let workers_a: std::collections::BTreeSet<&str> =
        a.iter().filter_map(|j| j["worker"].as_str()).collect();
    println!(
        "three workers of prefetch 4: tenant-a (limit 2) ran at most {most_a} at once on \
         {} workers, tenant-b (limit 1) at most {most_b}, unlimited jobs at most {most_free}",
        workers_a.len()
    );
    assert_eq!((a.len(), b.len(), free.len()), (12, 6, 12));
    assert!(most_a <= 2, "tenant-a ran {most_a} at once");
    assert!(most_b <= 1, "tenant-b ran {most_b} at once");
    assert_eq!(most_a, 2, "tenant-a used its two slots");
    assert!(
        most_free > 2,
        "unlimited jobs ran side by side ({most_free})"
    );
    assert!(done.iter().all(|j| j["runs"] == 1), "every job ran once");
    drop(workers);
    env.cleanup().await;
}

#[tokio::test]
async fn a_kinds_max_running_holds_across_three_workers() {
    let env = TestEnv::new().await;
    let file = std::env::temp_dir().join(format!("offload-kinds-{}.yaml", env.prefix));
    std::fs::write(&file, "- name: sleep\n  max_running: 2\n- name: noop\n")
        .expect("write the kinds file");
    let path = file.display().to_string();
    let api = ApiProcess::start(&env, &[("OFFLOAD_KINDS_FILE", &path)]).await;
    let kind = api.kind("sleep").await.expect("sleep is listed");
    assert_eq!(kind["max_running"], 2, "{kind}");
    let workers = [
        WorkerProcess::start(&env, "kind-limit-w1", 3, &[]).await,
        WorkerProcess::start(&env, "kind-limit-w2", 3, &[]).await,
        WorkerProcess::start(&env, "kind-limit-w3", 3, &[]).await,
    ];
    let jobs: Vec<Value> = (0..10)
        .map(|_| json!({"kind": "sleep", "payload": {"ms": 300}}))
        .collect();
    submit_batch(&api, jobs).await;
    let done = all_succeeded(&api, 10).await;
    let all: Vec<&Value> = done.iter().collect();
    let most = most_at_once(&all);
    println!(
        "kind sleep with max_running 2 on three workers of prefetch 3: at most {most} at once"
    );
    assert_eq!(most, 2, "the kind used its two slots and never more");
    assert!(done.iter().all(|j| j["runs"] == 1), "every job ran once");
    drop(workers);
    let _ = std::fs::remove_file(&file);
    env.cleanup().await;
}
