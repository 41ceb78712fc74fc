//! The stock `offload-worker`: the SDK with the built-in kinds of the queues `OFFLOAD_QUEUES`
//! lists (`noop` and `sleep` on `default`, `image.thumbnail` on `thumbnails`, `pdf.render` on
//! `documents`, `http.request` on `webhooks`; all when empty).

use offload_shared::{Settings, healthcheck, http_server, settings::Command, shutdown, telemetry};
use offload_worker::{Worker, handlers::builtin};

#[tokio::main]
async fn main() {
    let settings = Settings::load();
    if settings.command == Some(Command::Healthcheck) {
        std::process::exit(healthcheck::exit_code(settings.metrics_addr_or_default()));
    }
    if matches!(settings.command, Some(Command::Keys { .. })) {
        eprintln!(
            "offload-worker: `keys` is a command of offload-api (the worker has no job store): \
             run `offload-api keys ...` with OFFLOAD_DATABASE_URL set"
        );
        std::process::exit(2);
    }
    telemetry::init(settings.log_format);
    if let Some(nofile) = http_server::raise_nofile_limit() {
        tracing::info!(
            nofile,
            "file-descriptor limit (RLIMIT_NOFILE) raised to the hard limit"
        );
    }
    // A built-in kind's settings (OFFLOAD_QUEUES, allow-lists, secrets file, limits) that
    // cannot work are a configuration error: exit status 2, like a bad command line.
    let builder = match builtin::stock(Worker::builder(settings.clone()), &settings) {
        Ok(builder) => builder,
        Err(e) => {
            tracing::error!(error = %e, "offload-worker cannot run: bad configuration");
            eprintln!("offload-worker: {e}");
            std::process::exit(2);
        }
    };
    let token = shutdown::on_signal();
    let outcome = match builder.build().await {
        Ok(worker) => worker.run_until_stopped(token).await,
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, "offload-worker cannot run");
        eprintln!("offload-worker: {e}");
        std::process::exit(1);
    }
}
