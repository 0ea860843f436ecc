//! `jobscope` binary: parse the command line, set up logging, run the chosen command.

use clap::Parser;
use jobscope::app::{shutdown_signal, Application};
use jobscope::cli::{Cli, Command, LogFormat};
use jobscope::config::ServeConfig;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,warp=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    jobscope::install_crypto_provider();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        // watch reports its own errors: its exit status carries the watched job's outcome.
        Command::Watch(args) => return jobscope::watch::run(args).await,
        Command::Agent(args) => agent(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jobscope: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn agent(args: jobscope::cli::AgentArgs) -> anyhow::Result<()> {
    let config = jobscope::agent::AgentConfig::from_args(&args)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    jobscope::agent::run(config, stopped).await?;
    Ok(())
}

async fn serve(args: jobscope::cli::ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::from_args(&args)?;
    let app = Application::build(config).await?;
    app.run_until(shutdown_signal()).await
}
