//! A worker built on the SDK for the artifact tests: kind `test.artifacts` (queue `files`)
//! attaches `count` artifacts of `size` bytes each and of `content_type`, named
//! `<prefix><n><ext>`, after waiting `ms`, and returns `{"count": count}`.

use std::{process::ExitCode, time::Duration};

use offload_worker::{Artifact, Job, JobContext, JobError, Settings, Worker, telemetry};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

/// What to attach.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Files {
    /// How many artifacts.
    count: u32,
    /// Bytes in each (the byte `n % 256` repeated, for artifact `n`).
    size: usize,
    /// Their media type.
    content_type: String,
    /// Their names' start (default `file-`).
    #[serde(default)]
    prefix: Option<String>,
    /// Their names' end, e.g. `.png` (default none).
    #[serde(default)]
    ext: Option<String>,
    /// Milliseconds to wait before attaching (default 0).
    #[serde(default)]
    ms: u64,
}

/// Attaches files as its payload says.
struct Attach;

impl Job for Attach {
    const KIND: &'static str = "test.artifacts";
    type Payload = Files;
    type Output = Value;

    fn queue(&self) -> &str {
        "files"
    }

    async fn run(&self, ctx: JobContext, p: Files) -> Result<Value, JobError> {
        tokio::time::sleep(Duration::from_millis(p.ms)).await;
        let prefix = p.prefix.unwrap_or_else(|| "file-".to_owned());
        let ext = p.ext.unwrap_or_default();
        for n in 0..p.count {
            let byte = u8::try_from(n % 256).unwrap_or(0);
            ctx.attach(Artifact::new(
                format!("{prefix}{n}{ext}"),
                p.content_type.clone(),
                vec![byte; p.size],
            ));
        }
        Ok(json!({"count": p.count}))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load();
    telemetry::init(settings.log_format);
    let token = offload_worker::shutdown::on_signal();
    let outcome = match Worker::builder(settings).job(Attach).build().await {
        Ok(worker) => worker.run_until_stopped(token).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("artifact-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
