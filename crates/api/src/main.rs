use offload_api::Application;
use offload_shared::{Settings, healthcheck, http_server, settings::Command, shutdown, telemetry};

#[tokio::main]
async fn main() {
    let settings = Settings::load();
    if settings.command == Some(Command::Healthcheck) {
        std::process::exit(healthcheck::exit_code(settings.http_addr));
    }
    telemetry::init(settings.log_format);
    if let Some(Command::Keys { action }) = &settings.command {
        if let Err(e) = offload_api::auth::cli::run(&settings, action).await {
            eprintln!("offload-api keys: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Some(nofile) = http_server::raise_nofile_limit() {
        tracing::info!(
            nofile,
            "file-descriptor limit (RLIMIT_NOFILE) raised to the hard limit"
        );
    }
    let token = shutdown::on_signal();
    let outcome = match Application::build(settings).await {
        Ok(app) => app.run_until_stopped(token).await,
        Err(e) => Err(e),
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, "offload-api cannot run");
        eprintln!("offload-api: {e}");
        std::process::exit(1);
    }
}
