use offload_shared::{Settings, healthcheck, settings::Command, shutdown, telemetry};
use offload_worker::Application;

#[tokio::main]
async fn main() {
    let settings = Settings::load();
    if settings.command == Some(Command::Healthcheck) {
        std::process::exit(healthcheck::exit_code(settings.metrics_addr_or_default()));
    }
    telemetry::init(settings.log_format);
    let token = shutdown::on_signal();
    let outcome = match Application::build(settings).await {
        Ok(app) => app.run_until_stopped(token).await,
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, "offload-worker cannot run");
        eprintln!("offload-worker: {e}");
        std::process::exit(1);
    }
}
