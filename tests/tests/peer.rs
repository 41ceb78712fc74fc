//! The wire protocol, proved by a peer in another language: `tests/peer/offload_peer.py`, a
//! Python worker (pika, prefetch 1, manual acks after the outcome event is confirmed) written
//! from `docs/protocol.md` alone, runs a kind of its own next to a Rust worker; and a job another
//! AMQP client publishes straight to the jobs exchange runs and shows in the API.
//!
//! The Python interpreter with pika is `OFFLOAD_PEER_PYTHON`, or the virtualenv
//! `scripts/test.sh` creates (`~/.cache/offload/peer-venv`).

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll};

const WITHIN: Duration = Duration::from_secs(30);

/// The interpreter that has pika, or a failure saying how to get one.
fn python() -> PathBuf {
    let python = std::env::var_os("OFFLOAD_PEER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
                });
            cache.join("offload/peer-venv/bin/python")
        });
    let has_pika = std::process::Command::new(&python)
        .args(["-c", "import pika"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_pika,
        "{} cannot import pika. Run scripts/test.sh (it creates the virtualenv), or: python3 -m \
         venv ~/.cache/offload/peer-venv && ~/.cache/offload/peer-venv/bin/pip install \
         'pika>=1.3,<2' (or set OFFLOAD_PEER_PYTHON)",
        python.display()
    );
    python
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peer/offload_peer.py")
}

fn peer(env: &TestEnv, args: &[&str]) -> Command {
    let mut command = Command::new(python());
    command
        .arg(script())
        .args(args)
        .envs(env.vars())
        .env("OFFLOAD_WORKER_HEARTBEAT_S", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Starts the Python worker `name`.
fn peer_worker(env: &TestEnv, name: &str) -> Child {
    peer(env, &["worker", name])
        .stdout(Stdio::null())
        .spawn()
        .expect("the Python worker starts")
}

/// Publishes a job straight to the jobs exchange with the Python producer; returns its id.
async fn peer_publish(env: &TestEnv, kind: &str, payload: &Value) -> String {
    let output = peer(env, &["publish", kind, &payload.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("the Python producer runs");
    assert!(
        output.status.success(),
        "the Python producer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The live workers GET /kinds lists for `kind`, if it lists the kind.
async fn kind_workers(api: &ApiProcess, kind: &str) -> Option<Vec<String>> {
    let entry = api.kind(kind).await?;
    Some(
        entry["workers"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_written_from_the_protocol_runs_its_kind_beside_a_rust_worker() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let rust = WorkerProcess::start(&env, "rust-1", 1, &[]).await;
    let mut python = peer_worker(&env, "py-1");

    // Accepted as soon as the API has applied the peer's announcement; no restart.
    let first = poll(WITHIN, "the API to accept py.reverse", || async {
        let (status, body) = api
            .post_job(&json!({"kind": "py.reverse", "payload": {"text": "abc"}}))
            .await;
        (status == 202).then(|| body["id"].as_str().expect("id").to_owned())
    })
    .await;
    let (status, problem) = api
        .post_job(&json!({"kind": "py.reverse", "payload": {"text": 5}}))
        .await;
    assert_eq!(status, 422, "the peer's schema is enforced: {problem}");
    assert!(
        problem["detail"].as_str().unwrap_or("").contains("/text"),
        "names the field: {problem}"
    );

    let mut python_jobs = vec![(first, "cba".to_owned())];
    for text in ["hello", "racecar!", "Offload"] {
        let (status, body) = api
            .post_job(&json!({"kind": "py.reverse", "payload": {"text": text}}))
            .await;
        assert_eq!(status, 202, "{body}");
        python_jobs.push((
            body["id"].as_str().expect("id").to_owned(),
            text.chars().rev().collect(),
        ));
    }
    let (_, retried) = api
        .post_job(&json!({"kind": "py.reverse", "payload": {"text": "again", "fail": "once"}}))
        .await;
    let (_, dead) = api
        .post_job(&json!({"kind": "py.reverse", "payload": {"text": "x", "fail": "permanent"}}))
        .await;
    let rust_jobs: Vec<String> = {
        let mut ids = Vec::new();
        for n in 0..3 {
            let (status, body) = api
                .post_job(&json!({"kind": "noop", "payload": {"n": n}}))
                .await;
            assert_eq!(status, 202, "{body}");
            ids.push(body["id"].as_str().expect("id").to_owned());
        }
        ids
    };

    for (id, reversed) in &python_jobs {
        let job = api.wait_for_status(id, "succeeded", WITHIN).await;
        assert_eq!(job["result"]["reversed"], reversed.as_str(), "{job}");
        assert_eq!(job["worker"], "py-1", "{job}");
    }
    for id in &rust_jobs {
        let job = api.wait_for_status(id, "succeeded", WITHIN).await;
        assert_eq!(job["worker"], rust.name, "{job}");
    }
    let job = api
        .wait_for_status(retried["id"].as_str().expect("id"), "succeeded", WITHIN)
        .await;
    assert_eq!(
        job["attempt"], 2,
        "retried once through the delay exchange: {job}"
    );
    let job = api
        .wait_for_status(dead["id"].as_str().expect("id"), "dead", WITHIN)
        .await;
    assert!(
        job["error"]
            .as_str()
            .unwrap_or("")
            .contains("asked to fail"),
        "{job}"
    );
    assert_eq!(
        kind_workers(&api, "py.reverse").await,
        Some(vec!["py-1".to_owned()]),
        "GET /kinds shows the live peer"
    );

    // Another AMQP client publishes v1 envelopes straight to the exchange: one for the Rust
    // worker, one for the Python one. Both run and become visible from their events.
    let direct_rust = peer_publish(&env, "noop", &json!({"hello": 1})).await;
    let direct_python = peer_publish(&env, "py.reverse", &json!({"text": "xyz"})).await;
    let job = api.wait_for_status(&direct_rust, "succeeded", WITHIN).await;
    assert_eq!(job["result"], json!({"hello": 1}), "{job}");
    let job = api
        .wait_for_status(&direct_python, "succeeded", WITHIN)
        .await;
    assert_eq!(job["result"]["reversed"], "zyx", "{job}");

    // A graceful stop says `leaving`: the kind stays, with no worker.
    let pid = python.id().expect("running");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let exit = tokio::time::timeout(WITHIN, python.wait())
        .await
        .expect("the peer stops")
        .expect("exit status");
    assert!(exit.success(), "{exit}");
    poll(WITHIN, "py.reverse to have no worker", || async {
        (kind_workers(&api, "py.reverse").await == Some(Vec::new())).then_some(())
    })
    .await;
    let (status, body) = api
        .post_job(&json!({"kind": "py.reverse", "payload": {"text": "later"}}))
        .await;
    assert_eq!(
        status, 202,
        "a kind without workers still accepts jobs: {body}"
    );
    env.cleanup().await;
}
