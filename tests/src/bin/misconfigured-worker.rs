//! A worker built on the SDK with a job whose kind name breaks the naming rule, for the test
//! that such a worker refuses to start, exits non-zero and says why.

use std::process::ExitCode;

use offload_worker::{Job, JobContext, JobError, Settings, Worker, telemetry};

/// A job with an invalid kind name (upper case and a space).
struct BadlyNamed;

impl Job for BadlyNamed {
    const KIND: &'static str = "Bad Kind";
    type Payload = serde_json::Value;
    type Output = serde_json::Value;

    async fn run(
        &self,
        _ctx: JobContext,
        payload: Self::Payload,
    ) -> Result<Self::Output, JobError> {
        Ok(payload)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load();
    telemetry::init(settings.log_format);
    match Worker::builder(settings).job(BadlyNamed).build().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("misconfigured-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
