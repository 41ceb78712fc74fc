//! A worker built on the SDK for the input-file tests (tests/tests/inputs.rs): the kind
//! `test.inputs` on the queue `inputs` answers with what it received, each input file's field,
//! file name, content type, size and SHA-256, so a test sees the files as a handler does. With
//! `fail_below: N` an attempt below N fails (retryable, or with `permanent` for good), so a test
//! sees the files of a retry and of a redrive too.

use std::process::ExitCode;

use offload_worker::{Job, JobContext, JobError, Settings, Worker, telemetry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The job's payload.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Payload {
    /// Any text; echoed back.
    #[serde(default)]
    note: Option<String>,
    /// Attempts below this one fail.
    #[serde(default)]
    fail_below: u32,
    /// Those failures are permanent (the job ends dead) instead of retryable.
    #[serde(default)]
    permanent: bool,
}

/// One input file as the handler saw it.
#[derive(Serialize)]
struct Seen {
    field: String,
    filename: Option<String>,
    content_type: String,
    size: usize,
    sha256: String,
}

/// What the handler received.
#[derive(Serialize)]
struct Received {
    attempt: u32,
    note: Option<String>,
    inputs: Vec<Seen>,
}

/// `test.inputs`: lists its input files.
struct Inputs;

impl Job for Inputs {
    const KIND: &'static str = "test.inputs";
    type Payload = Payload;
    type Output = Received;

    fn queue(&self) -> &str {
        "inputs"
    }

    async fn run(&self, ctx: JobContext, p: Payload) -> Result<Received, JobError> {
        if ctx.attempt < p.fail_below {
            let why = format!("attempt {} fails as asked", ctx.attempt);
            return Err(if p.permanent {
                JobError::permanent(why)
            } else {
                JobError::retryable(why)
            });
        }
        let inputs = ctx
            .input_fields()
            .filter_map(|field| ctx.input(field).cloned())
            .map(|f| Seen {
                field: f.field,
                filename: f.filename,
                content_type: f.content_type,
                size: f.data.len(),
                sha256: Sha256::digest(&f.data)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            })
            .collect();
        Ok(Received {
            attempt: ctx.attempt,
            note: p.note,
            inputs,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load();
    telemetry::init(settings.log_format);
    let token = offload_worker::shutdown::on_signal();
    let outcome = match Worker::builder(settings).job(Inputs).build().await {
        Ok(worker) => worker.run_until_stopped(token).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inputs-test-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
