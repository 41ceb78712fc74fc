//! Per-queue stock workers: `OFFLOAD_QUEUES` makes the stock `offload-worker` run only the
//! built-in kinds of the queues it lists, so each queue gets its own workers (the compose files
//! run one service per queue); a queue no built-in kind uses stops it at start-up.

use std::time::Duration;

use offload_tests::{ApiProcess, TestEnv, WorkerProcess, poll};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(20);

fn invoice() -> Value {
    json!({"kind": "pdf.render", "payload": {
        "template": "invoice",
        "data": {
            "seller": {"name": "Offload GmbH"},
            "customer": {"name": "ACME Widgets Ltd"},
            "number": "2024-0042",
            "date": "2024-05-31",
            "items": [{"description": "Consulting", "quantity": 2, "unit_price": 612.5}]
        }
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_documents_worker_announces_only_pdf_render_and_leaves_other_queues_alone() {
    let env = TestEnv::new().await;
    let api = ApiProcess::start(&env, &[]).await;
    let worker = WorkerProcess::start(&env, "docs", 1, &[("OFFLOAD_QUEUES", "documents")]).await;

    // It announces pdf.render on the queue documents, and nothing else.
    let listed = poll(WITHIN, "the documents worker to be listed", || async {
        let workers = api.get_json("/workers").await;
        workers["workers"]
            .as_array()?
            .iter()
            .find(|w| w["name"] == "docs")
            .cloned()
    })
    .await;
    assert_eq!(listed["kinds"], json!(["pdf.render"]), "{listed}");
    assert_eq!(listed["queues"], json!(["documents"]), "{listed}");
    let kind = api.kind("pdf.render").await.expect("pdf.render listed");
    assert_eq!(kind["queue"], "documents", "{kind}");

    // A sleep job waits in the default queue, which this worker does not consume, while an
    // invoice submitted after it is rendered.
    api.submit(json!({"kind": "sleep", "payload": {"ms": 1}}))
        .await;
    let job = api.submit(invoice()).await;
    let id = job["id"].as_str().expect("id");
    let done = api.wait_for_status(id, "succeeded", WITHIN).await;
    assert_eq!(done["worker"], "docs", "{done}");
    assert_eq!(done["result"]["pages"], 1, "{done}");
    assert_eq!(done["result"]["template"], "invoice", "{done}");
    assert!(done["result"]["bytes"].as_u64() > Some(500), "{done}");
    let default_queue = format!("{}.jobs", env.prefix);
    poll(
        WITHIN,
        "the sleep job to wait in the default queue",
        || async { (env.ready_count(&default_queue).await == 1).then_some(()) },
    )
    .await;

    drop(worker);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_no_builtin_kind_uses_stops_the_worker_naming_the_known_queues() {
    let env = TestEnv::new().await;

    let (status, logs) =
        WorkerProcess::start_failing(&env, &[("OFFLOAD_QUEUES", "default,videos")]).await;

    assert_eq!(
        status.code(),
        Some(2),
        "an unknown queue is a configuration error:\n{logs}"
    );
    assert!(
        logs.contains("OFFLOAD_QUEUES lists videos")
            && logs.contains("queues are default, thumbnails, documents, webhooks"),
        "{logs}"
    );
    env.cleanup().await;
}
