//! A worker built on the SDK for the SDK tests, running the jobs `SDK_TEST_JOBS` lists
//! (comma separated): `patient` (queue `default`) and `patient.other` (queue `other`) sleep
//! `ms` or until they are cancelled, and then give up; `bad-kind` has a kind name that breaks
//! the naming rule, so the worker refuses to start.

use std::{process::ExitCode, time::Duration};

use offload_worker::{Job, JobContext, JobError, Settings, Worker, telemetry};
use schemars::JsonSchema;
use serde::Deserialize;

/// How long a patient job waits.
#[derive(Deserialize, JsonSchema)]
struct Wait {
    ms: u64,
}

/// Waits `ms`, or gives up (a retryable error) when its context is cancelled.
async fn wait(ctx: JobContext, p: Wait) -> Result<u64, JobError> {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(p.ms)) => Ok(p.ms),
        () = ctx.cancelled() => Err(JobError::retryable("gave up: the worker is stopping")),
    }
}

/// `patient` on the queue `default`.
struct Patient;

impl Job for Patient {
    const KIND: &'static str = "patient";
    type Payload = Wait;
    type Output = u64;

    async fn run(&self, ctx: JobContext, p: Wait) -> Result<u64, JobError> {
        wait(ctx, p).await
    }
}

/// `patient.other` on the queue `other`.
struct PatientOther;

impl Job for PatientOther {
    const KIND: &'static str = "patient.other";
    type Payload = Wait;
    type Output = u64;

    fn queue(&self) -> &str {
        "other"
    }

    async fn run(&self, ctx: JobContext, p: Wait) -> Result<u64, JobError> {
        wait(ctx, p).await
    }
}

/// A job with an invalid kind name (upper case and a space).
struct BadlyNamed;

impl Job for BadlyNamed {
    const KIND: &'static str = "Bad Kind";
    type Payload = serde_json::Value;
    type Output = serde_json::Value;

    async fn run(
        &self,
        _ctx: JobContext,
        p: serde_json::Value,
    ) -> Result<serde_json::Value, JobError> {
        Ok(p)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load();
    telemetry::init(settings.log_format);
    let token = offload_worker::shutdown::on_signal();
    let mut builder = Worker::builder(settings);
    for name in std::env::var("SDK_TEST_JOBS")
        .unwrap_or_default()
        .split(',')
    {
        builder = match name {
            "patient" => builder.job(Patient),
            "patient.other" => builder.job(PatientOther),
            "bad-kind" => builder.job(BadlyNamed),
            _ => builder,
        };
    }
    let outcome = match builder.build().await {
        Ok(worker) => worker.run_until_stopped(token).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sdk-test-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
