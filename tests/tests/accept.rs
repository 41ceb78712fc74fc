//! The accept path at its edges: for every way a publish can end (confirmed, refused, not
//! confirmed in time, the API gone between its store write and its publish) the store tells the
//! truth afterwards. Each test counts jobs accepted, jobs run (by the workers' own metrics) and
//! jobs visible, and runs per job. The memory-alarm test runs on the private fault broker
//! (`scripts/fault-broker.sh`), so other tests never see the alarm.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use lapin::{
    options::QueueBindOptions,
    types::{FieldTable, ShortString},
};
use offload_tests::{ApiProcess, TestEnv, WorkerProcess, fault_broker, metric_sum, poll};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// One fault-broker test at a time: an alarm stops the whole node.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// One answer to a `POST /jobs`.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: bool,
    body: Value,
    took: Duration,
}

async fn post(api: &ApiProcess, body: &Value, key: Option<&str>) -> Answer {
    let mut request = api.http.post(api.url("/jobs")).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let started = Instant::now();
    let response = request.send().await.expect("an answer to POST /jobs");
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
        took: started.elapsed(),
    }
}

/// Repeats each keyed submit (`body(i)` under `keys[i]`) until it is answered with its job (200
/// or 202); every 409 on the way must carry `Retry-After`. Returns the job ids, in key order,
/// and how many keys were answered 409 (unresolved) at least once.
async fn resolve_keys(
    api: &ApiProcess,
    keys: &[String],
    body: impl Fn(usize) -> Value,
) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut unresolved = 0;
    for (i, key) in keys.iter().enumerate() {
        let saw_409 = std::cell::Cell::new(false);
        let answer = poll(Duration::from_secs(40), "a keyed retry to resolve", || {
            let body = body(i);
            let saw_409 = &saw_409;
            async move {
                let a = post(api, &body, Some(key)).await;
                if a.status == 409 {
                    assert!(a.retry_after, "409 without Retry-After: {a:?}");
                    saw_409.set(true);
                }
                matches!(a.status, 200 | 202).then_some(a)
            }
        })
        .await;
        unresolved += usize::from(saw_409.get());
        ids.push(answer.body["id"].as_str().expect("id").to_owned());
    }
    (ids, unresolved)
}

/// What became of `ids`, once every one succeeded: runs the store recorded, jobs the worker ran
/// (its own count, waited for up to `expected`), and succeeded jobs the store shows.
async fn tally(
    api: &ApiProcess,
    worker: &WorkerProcess,
    ids: &[String],
    expected: usize,
) -> (u64, f64, usize) {
    let mut runs = 0;
    for id in ids {
        let job = api
            .wait_for_status(id, "succeeded", Duration::from_secs(30))
            .await;
        runs += job["runs"].as_u64().unwrap_or(0);
    }
    let ran = poll(Duration::from_secs(15), "the worker's count", || async {
        let n = worker.succeeded().await;
        (n >= expected as f64).then_some(n)
    })
    .await;
    (runs, ran, api.all_jobs("succeeded").await.len())
}

/// Clears the alarm even when an assertion fails, so the fault broker stays usable.
struct AlarmGuard;

impl Drop for AlarmGuard {
    fn drop(&mut self) {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fault-broker.sh");
        let _ = std::process::Command::new("bash")
            .arg(script)
            .arg("alarm-off")
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_alarm_gets_503s_and_each_keyed_retry_then_gets_the_one_job_that_ran() {
    let _serial = SERIAL.lock().await;
    fault_broker("start").await;
    let url = fault_broker("url").await;
    let env = TestEnv::on(&url).await;
    // Default settings: publish deadline 1.5 s, resolve after 60 s.
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "alarm-w", 4, &[]).await;
    let before = api.submit(json!({"kind": "noop"})).await;
    api.wait_for_status(
        before["id"].as_str().expect("id"),
        "succeeded",
        Duration::from_secs(15),
    )
    .await;

    let _guard = AlarmGuard;
    fault_broker("alarm-on").await;
    const JOBS: usize = 20;
    let body = |i: usize| json!({"kind": "sleep", "payload": {"ms": i}});
    let keys: Vec<String> = (0..JOBS)
        .map(|i| format!("alarm-{}-{i}", env.prefix))
        .collect();
    let answers = join_all((0..JOBS).map(|i| {
        let api = &api;
        let key = keys[i].clone();
        async move { post(api, &body(i), Some(&key)).await }
    }))
    .await;
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.status, 503, "submit {i} during the alarm: {a:?}");
        assert!(a.retry_after, "submit {i}: 503 without Retry-After");
        assert!(
            a.took < Duration::from_millis(3500),
            "submit {i} took {:?}, past the publish deadline",
            a.took
        );
    }
    let unknown: Vec<(usize, String)> = answers
        .iter()
        .enumerate()
        .filter_map(|(i, a)| Some((i, a.body["job_id"].as_str()?.to_owned())))
        .collect();
    // The readiness probe says why, and a submit now is refused at once.
    let ready = poll(
        Duration::from_secs(10),
        "readiness to name the alarm",
        || async {
            let r = api.http.get(api.url("/health/ready")).send().await.ok()?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.ok()?;
            (status == 503 && body["broker"].as_str()?.contains("blocking")).then_some(body)
        },
    )
    .await;
    let blocked = post(&api, &body(0), Some("another-key")).await;
    assert_eq!(blocked.status, 503, "{blocked:?}");
    assert!(blocked.took < Duration::from_millis(500), "{blocked:?}");
    assert_eq!(
        blocked.body["type"], "/problems/queue-blocked",
        "{blocked:?}"
    );

    fault_broker("alarm-off").await;
    let cleared = Instant::now();
    // Every key resolves to exactly one job: the one the broker took, if it took one.
    let (ids, _) = resolve_keys(&api, &keys, body).await;
    let conflicts = unknown.iter().filter(|(i, id)| ids[*i] != *id).count();
    let (runs, ran, visible) = tally(&api, &worker, &ids, JOBS + 1).await;
    println!(
        "memory alarm: {JOBS} keyed submits during the alarm, all 503 (slowest {:?}), {} of them \
         unknown (job id given); readiness said {:?}; after the alarm cleared every key resolved \
         within {:?}; runs recorded {runs}, jobs run {ran}, visible {visible}, {conflicts} keys whose job differs from the \
         503's job id",
        answers.iter().map(|a| a.took).max().unwrap_or_default(),
        unknown.len(),
        ready["broker"],
        cleared.elapsed(),
    );
    assert_eq!(
        conflicts, 0,
        "a keyed retry got another job than the unknown one"
    );
    assert_eq!(runs, JOBS as u64, "each job ran once");
    assert_eq!(ran, (JOBS + 1) as f64, "jobs run by the worker");
    assert_eq!(visible, JOBS + 1, "jobs visible in the store");
    env.cleanup().await;
}

/// The fingerprint the API binds to an `Idempotency-Key` for `{"kind": kind}` with defaults.
fn fingerprint(kind: &str) -> String {
    let canonical = json!({"kind": kind, "payload": {}, "max_attempts": 5, "timeout_s": null});
    Sha256::digest(canonical.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn micros(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).expect("micros")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_recorded_but_never_published_is_republished_once_and_its_key_waits_for_it() {
    let env = TestEnv::new().await;
    // The API creates its store, then stops; what it leaves is what an API killed between its
    // store write and its publish leaves: an unresolved row (queued, with a resolve time) with
    // its key, and no message.
    ApiProcess::start(&env, &[]).await.stop().await;
    let id = uuid::Uuid::now_v7().to_string();
    let key = format!("killed-{}", env.prefix);
    let now = time::OffsetDateTime::now_utc();
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", env.database.display()))
        .await
        .expect("store file");
    // Idempotency keys are stored under the API key that sent them: the harness's one key.
    let owner: String = sqlx::query_scalar("SELECT id FROM keys")
        .fetch_one(&db)
        .await
        .expect("the harness key");
    sqlx::query(
        "INSERT INTO jobs (id, kind, status, progress, attempt, max_attempts, timeout_ms, budget,
                           submitted_at, payload, resolve_at)
         VALUES (?1, 'noop', 'queued', 4, 1, 5, 300000, 5, ?2, '{}', ?3)",
    )
    .bind(&id)
    .bind(micros(now))
    .bind(micros(now + Duration::from_secs(4)))
    .execute(&db)
    .await
    .expect("unresolved row");
    sqlx::query(
        "INSERT INTO idempotency_keys (key, fingerprint, job_id, created_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(format!("{owner}/{key}"))
    .bind(fingerprint("noop"))
    .bind(&id)
    .bind(micros(now))
    .execute(&db)
    .await
    .expect("its key");
    db.close().await;

    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "reconcile-w", 1, &[]).await;
    assert_eq!(
        api.job(&id).await["status"],
        "queued",
        "visible while unresolved: it will run"
    );
    let early = post(&api, &json!({"kind": "noop"}), Some(&key)).await;
    assert_eq!(early.status, 409, "a repeat while unresolved: {early:?}");
    assert!(early.retry_after, "{early:?}");
    let resolved = poll(
        Duration::from_secs(20),
        "the keyed repeat to resolve",
        || async {
            let a = post(&api, &json!({"kind": "noop"}), Some(&key)).await;
            assert!(matches!(a.status, 200 | 409), "{a:?}");
            (a.status == 200).then_some(a)
        },
    )
    .await;
    assert_eq!(
        resolved.body["id"],
        id.as_str(),
        "the same job, not a new one"
    );
    let job = api
        .wait_for_status(&id, "succeeded", Duration::from_secs(15))
        .await;
    assert_eq!(job["runs"], 1, "{job}");
    let republished = metric_sum(&api.metrics().await, "offload_jobs_republished_total", &[]);
    assert_eq!(republished, 1.0);
    let ran = poll(Duration::from_secs(10), "the worker's count", || async {
        let n = worker.succeeded().await;
        (n >= 1.0).then_some(n)
    })
    .await;
    assert_eq!(ran, 1.0, "runs");
    println!(
        "killed between write and publish: 1 unresolved row, 409 while unresolved, republished {republished}, ran {ran}, visible as succeeded"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_no_queue_takes_is_refused_and_leaves_nothing_behind() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let channel = env.broker.create_channel().await.expect("channel");
    let (queue, exchange, routing) = (
        env.names.jobs_queue.as_str(),
        env.names.jobs_exchange.as_str(),
        "noop",
    );
    channel
        .queue_unbind(
            ShortString::from(queue),
            ShortString::from(exchange),
            ShortString::from(routing),
            FieldTable::default(),
        )
        .await
        .expect("unbind");
    let key = format!("returned-{}", env.prefix);
    let refused = post(&api, &json!({"kind": "noop"}), Some(&key)).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.retry_after);
    assert!(
        refused.body.get("job_id").is_none(),
        "refused, not unknown: {refused:?}"
    );
    for status in ["pending", "queued"] {
        assert!(
            api.all_jobs(status).await.is_empty(),
            "a refused job must not be reported {status}"
        );
    }
    channel
        .queue_bind(
            ShortString::from(queue),
            ShortString::from(exchange),
            ShortString::from(routing),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    // The key was freed with the refused job: the retry is a new job, accepted.
    let accepted = post(&api, &json!({"kind": "noop"}), Some(&key)).await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    println!("returned as unroutable: 503, no row left; the keyed retry was accepted");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_mid_confirm_leaves_pending_jobs_that_are_republished_and_run_once() {
    let _serial = SERIAL.lock().await;
    fault_broker("start").await;
    let url = fault_broker("url").await;
    let env = TestEnv::on(&url).await;
    let api = ApiProcess::start(&env, &[("OFFLOAD_RESOLVE_AFTER_S", "5")]).await;
    let worker = WorkerProcess::start(&env, "cut-w", 4, &[]).await;

    // Publishes wait for confirms that cannot come (the alarm), then the connection is cut under
    // them: the broker discards what it had not read, and the API cannot know that.
    let _guard = AlarmGuard;
    fault_broker("alarm-on").await;
    const JOBS: usize = 10;
    let keys: Vec<String> = (0..JOBS)
        .map(|i| format!("cut-{}-{i}", env.prefix))
        .collect();
    let body = json!({"kind": "noop"});
    let submits = join_all(keys.iter().map(|key| post(&api, &body, Some(key))));
    let cut = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        fault_broker("close-connections").await;
    };
    let (answers, ()) = tokio::join!(submits, cut);
    fault_broker("alarm-off").await;
    for a in &answers {
        assert_eq!(a.status, 503, "{a:?}");
        assert!(a.retry_after, "{a:?}");
    }
    let unknown = answers
        .iter()
        .filter(|a| a.body["job_id"].is_string())
        .count();

    let (ids, _) = resolve_keys(&api, &keys, |_| body.clone()).await;
    let conflicts = answers
        .iter()
        .zip(&ids)
        .filter(|(a, id)| a.body["job_id"].as_str().is_some_and(|first| first != *id))
        .count();
    let (runs, ran, visible) = tally(&api, &worker, &ids, JOBS).await;
    let republished = metric_sum(&api.metrics().await, "offload_jobs_republished_total", &[]);
    println!(
        "connection lost mid-confirm: {JOBS} keyed submits, {unknown} unknown 503s; republished \
         {republished}; keys resolved to {} jobs ({conflicts} differing from the 503's job id); \
         runs recorded {runs}, run by the worker {ran}, visible {visible}",
        ids.len()
    );
    assert_eq!(conflicts, 0);
    assert_eq!(visible, JOBS, "one job per key");
    assert_eq!(runs, JOBS as u64, "each job ran once");
    assert_eq!(ran, JOBS as f64, "no job ran invisibly");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_publish_is_refused_and_leaves_nothing_behind() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    // A full quorum queue (x-overflow reject-publish) nacks what it cannot take: one message fits.
    let policy = env.queue_policy(&env.names.jobs_queue, r#"{"max-length": 1}"#);
    let first = poll(Duration::from_secs(10), "the policy to apply", || async {
        // Fill the queue, then see the next publish nacked.
        let a = post(&api, &json!({"kind": "noop"}), None).await;
        (a.status == 503).then_some(a)
    })
    .await;
    assert!(first.retry_after);
    assert!(
        first.body.get("job_id").is_none(),
        "nacked, not unknown: {first:?}"
    );
    let key = format!("nacked-{}", env.prefix);
    let keyed = post(&api, &json!({"kind": "noop"}), Some(&key)).await;
    assert_eq!(keyed.status, 503, "{keyed:?}");
    assert!(
        api.all_jobs("pending").await.is_empty(),
        "a refused job is not kept pending"
    );
    let queued = api.all_jobs("queued").await.len();
    let held = env.ready_count(&env.names.jobs_queue).await as usize;
    assert_eq!(
        queued, held,
        "only the jobs the queue holds are reported queued"
    );
    // The key was freed with the refused job: a repeat is not answered with a job (200) or as
    // unresolved (409), but refused afresh.
    let again = post(&api, &json!({"kind": "noop"}), Some(&key)).await;
    assert_eq!(again.status, 503, "{again:?}");
    drop(policy);
    println!(
        "nacked by a full queue: 503, no pending row, {queued} queued in the store = {held} in the queue; the key stayed free"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_killed_mid_publish_leaves_jobs_that_a_new_api_resolves_and_each_runs_once() {
    let _serial = SERIAL.lock().await;
    fault_broker("start").await;
    let url = fault_broker("url").await;
    let env = TestEnv::on(&url).await;
    let extra = [("OFFLOAD_RESOLVE_AFTER_S", "5")];
    let first = ApiProcess::start(&env, &extra).await;
    let worker = WorkerProcess::start(&env, "killed-w", 4, &[]).await;

    // The broker holds the publishes unconfirmed (an alarm) while the API is killed with its
    // rows written and its confirms outstanding.
    let _guard = AlarmGuard;
    fault_broker("alarm-on").await;
    const JOBS: usize = 10;
    let keys: Vec<String> = (0..JOBS)
        .map(|i| format!("kill-{}-{i}", env.prefix))
        .collect();
    let body = json!({"kind": "noop"});
    let client = first.http.clone();
    let base = first.base.clone();
    let submits: Vec<_> = keys
        .iter()
        .map(|key| {
            let request = client
                .post(format!("{base}/jobs"))
                .header("idempotency-key", key.as_str())
                .json(&body);
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill9().await;
    let answered: Vec<_> = join_all(submits).await;
    let unanswered = answered.iter().filter(|r| !matches!(r, Ok(Ok(_)))).count();
    fault_broker("alarm-off").await;

    let api = ApiProcess::start(&env, &extra).await;
    let (ids, saw_409) = resolve_keys(&api, &keys, |_| body.clone()).await;
    let (runs, ran, visible) = tally(&api, &worker, &ids, JOBS).await;
    let republished = metric_sum(&api.metrics().await, "offload_jobs_republished_total", &[]);
    println!(
        "API killed mid-publish: {JOBS} keyed submits, {unanswered} left without an answer; the new \
         API answered {saw_409} keys 409 while unresolved and republished {republished}; runs \
         recorded {runs}, run by the worker {ran}, visible {visible}"
    );
    assert_eq!(visible, JOBS, "one job per key");
    assert_eq!(runs, JOBS as u64, "each job ran once");
    assert_eq!(ran, JOBS as f64, "no job ran invisibly");
    env.cleanup().await;
}
