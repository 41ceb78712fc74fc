//! A worker built on the SDK with one kind of its own, `bench.echo` on the queue `bench`: it
//! returns its payload, like the built-in `noop` on the queue `default`. The benchmark drains
//! both queues at once with it beside the stock worker.

use std::process::ExitCode;

use offload_worker::{Job, JobContext, JobError, Settings, Worker, shutdown, telemetry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The kind `bench.echo`.
struct Echo;

/// Anything: the payload comes back as the result.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
struct EchoPayload(serde_json::Map<String, serde_json::Value>);

impl Job for Echo {
    const KIND: &'static str = "bench.echo";
    type Payload = EchoPayload;
    type Output = EchoPayload;

    fn queue(&self) -> &str {
        "bench"
    }

    async fn run(&self, _ctx: JobContext, payload: EchoPayload) -> Result<EchoPayload, JobError> {
        Ok(payload)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load();
    telemetry::init(settings.log_format);
    let token = shutdown::on_signal();
    let outcome = match Worker::builder(settings).job(Echo).build().await {
        Ok(worker) => worker.run_until_stopped(token).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("offload-bench-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
