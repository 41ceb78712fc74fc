use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = offload_bench::Args::parse();
    match offload_bench::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("offload-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
