//! `jobscope` binary: parse the command line, set up logging, run the chosen command.

use clap::Parser;
use jobscope::app::{shutdown_signal, Application};
use jobscope::cli::{Cli, Command, LogFormat};
use jobscope::config::ServeConfig;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
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
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A hook must exit 0 even when Slurm's wrapper passes something odd: a failing Prolog
        // drains the node. --help and --version still print and exit as usual.
        Err(err) if is_hook_invocation() && err.use_stderr() => {
            eprintln!("jobscope hook: {err}");
            return ExitCode::SUCCESS;
        }
        Err(err) => err.exit(),
    };
    // Hooks run for every job: only problems are worth a line.
    let default_filter = match (&cli.command, cli.debug_logging()) {
        (Command::Hook(_), false) => "warn",
        (Command::Hook(_), true) => "warn,jobscope=debug",
        (_, false) => "info,warp=warn",
        // DEBUG=1: our own debug lines, not every dependency's.
        (_, true) => "info,jobscope=debug,warp=warn",
    };
    init_tracing(cli.log_format, default_filter);
    jobscope::install_crypto_provider();
    let result = match cli.command {
        Command::Hook(args) => {
            jobscope::hook::run(args).await;
            return ExitCode::SUCCESS;
        }
        Command::Serve(args) => serve(args).await,
        // watch reports its own errors: its exit status carries the watched job's outcome.
        Command::Watch(args) => return jobscope::watch::run(args.into()).await,
        Command::Report(args) => return jobscope::report::run(args).await,
        Command::Log(args) => return jobscope::log_cmd::run(args).await,
        Command::Agent(args) => agent(args).await,
        Command::Migrate(args) => migrate(args).await,
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

async fn migrate(args: jobscope::cli::MigrateArgs) -> anyhow::Result<()> {
    for line in jobscope::store::migrate(&args.database_url, args.dry_run).await? {
        println!("{line}");
    }
    Ok(())
}

/// Whether the command line names the `hook` subcommand.
fn is_hook_invocation() -> bool {
    std::env::args().skip(1).any(|a| a == "hook")
}

async fn serve(args: jobscope::config::ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::from_args(&args)?;
    if let Some(path) = &args.report_thresholds {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let thresholds = jobscope::domain::report::Thresholds::from_toml(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        jobscope::domain::report::Thresholds::set_site(thresholds);
    }
    let app = Application::build(config).await?;
    app.run_until(shutdown_signal()).await
}
