//! A worker with a long kind, `report.build` on the queue `reports`: builds a report step by step
//! for as many seconds as asked (up to 24 hours), reporting its progress and stopping early when
//! cancelled. Being long (`fn long`), its jobs are held by a lease the worker renews with
//! heartbeats instead of an unacknowledged delivery, so RabbitMQ's consumer timeout (30 min by
//! default) never cuts them off; if the worker dies, the API starts the job again within about
//! `OFFLOAD_LEASE_S` (30 s by default).
//!
//! Run it next to the API (same broker, same `OFFLOAD_QUEUE_PREFIX`):
//!
//! ```text
//! OFFLOAD_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example long_report
//! curl -s localhost:8080/jobs -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
//!   -d '{"kind":"report.build","payload":{"seconds":7200},"timeout_s":10800}'
//! ```

use std::{process::ExitCode, time::Duration};

use offload_worker::{Job, JobContext, JobError, Settings, Worker, shutdown, telemetry};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The kind `report.build`.
struct BuildReport;

/// What to build.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReportPayload {
    /// How long the report takes to build, in seconds (one step a second), at most 86400.
    #[schemars(range(min = 1, max = 86_400))]
    seconds: u32,
}

/// What the job returns.
#[derive(Debug, Serialize, PartialEq)]
struct Report {
    /// Steps built.
    steps: u32,
}

impl Job for BuildReport {
    const KIND: &'static str = "report.build";
    type Payload = ReportPayload;
    type Output = Report;

    fn queue(&self) -> &str {
        "reports"
    }

    /// Runs for hours: held by a lease, not by an unacknowledged delivery.
    fn long(&self) -> bool {
        true
    }

    /// Four hours unless the request says otherwise (at most 24 hours for a long kind).
    fn timeout_s(&self) -> Option<u64> {
        Some(4 * 3600)
    }

    fn max_attempts(&self) -> Option<u32> {
        Some(3)
    }

    async fn run(&self, ctx: JobContext, p: ReportPayload) -> Result<Report, JobError> {
        for step in 0..p.seconds {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                // Cancelled, or the worker is stopping: give up; the job is then retried later
                // (or, when cancelled, ends cancelled).
                () = ctx.cancelled() => return Err(JobError::retryable("stopped before the report was built")),
            }
            ctx.progress(
                f64::from(step + 1) / f64::from(p.seconds),
                format!("step {} of {}", step + 1, p.seconds),
            );
        }
        Ok(Report { steps: p.seconds })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::load();
    telemetry::init(settings.log_format);
    let token = shutdown::on_signal();
    let outcome = match Worker::builder(settings).job(BuildReport).build().await {
        Ok(worker) => worker.run_until_stopped(token).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "report worker cannot run");
            eprintln!("long_report: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_one_step_a_second() {
        let ctx = JobContext::standalone(BuildReport::KIND, Duration::from_secs(5));
        let report = BuildReport
            .run(ctx, ReportPayload { seconds: 1 })
            .await
            .expect("builds");
        assert_eq!(report, Report { steps: 1 });
    }
}
