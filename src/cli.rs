//! Command-line interface: the subcommands and their flags. Every flag can also be set through
//! the environment variable named in `--help` (the Go service's names where it had one), so
//! existing deployments keep working.

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "jobscope",
    version,
    about = "Job observability for HPC clusters",
    long_about = "jobscope records what the jobs of an HPC cluster do: Slurm's prolog and epilog \
                  post lifecycle events, every change is stored with an audit trail, and the \
                  /v1 API serves jobs, their samples and their history.\n\n\
                  Start with `jobscope serve --demo` and open http://127.0.0.1:8080/v1/jobs."
)]
pub struct Cli {
    /// Log format on stderr. Log levels come from RUST_LOG (default: info).
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API: lifecycle hooks, jobs, samples and audit trail.
    Serve(ServeArgs),
    /// Follow the live stream in the terminal: one line per state change, sample or gap.
    #[command(long_about = crate::watch::LONG_ABOUT)]
    Watch(WatchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchedulerKind {
    /// Jobs come only from the hooks and the API.
    None,
    /// Demo cluster: seeds mock nodes, jobs and samples (implied by --demo).
    Mock,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Use 0.0.0.0 in containers (and then configure --tokens-file).
    #[arg(long, env = "HOST", value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// TCP port to listen on (0 picks a free one and logs it).
    #[arg(long, env = "PORT", value_name = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Database: sqlite://PATH (created if missing) or postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "sqlite://jobscope.db"
    )]
    pub database_url: String,

    /// Days of samples and stream events to keep; older ones are pruned hourly.
    #[arg(long, env = "METRICS_RETENTION_DAYS", value_name = "METRICS_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub retention_days: u32,

    /// Seed a realistic demo cluster (50 nodes, ~100 jobs with samples). Safe to repeat.
    #[arg(long, env = "SEED_DEMO", value_name = "SEED_DEMO", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub demo: bool,

    /// Where jobs come from besides the hooks: none, or mock (with --demo).
    #[arg(
        long,
        env = "SCHEDULER_BACKEND",
        value_name = "SCHEDULER_BACKEND",
        value_enum
    )]
    pub scheduler: Option<SchedulerKind>,

    /// File of `ROLE TOKEN` lines (roles: hook, agent, reader, admin). Without it the API has no
    /// authentication and serve listens only on loopback addresses.
    #[arg(
        long,
        env = "JOBSCOPE_TOKENS_FILE",
        value_name = "JOBSCOPE_TOKENS_FILE"
    )]
    pub tokens_file: Option<PathBuf>,

    /// Allow listening on a non-loopback address without a tokens file. Anyone who can reach
    /// the port can then change and delete jobs.
    #[arg(long, env = "JOBSCOPE_INSECURE_NO_AUTH", value_name = "JOBSCOPE_INSECURE_NO_AUTH", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub insecure_no_auth: bool,

    /// Origins (`scheme://host[:port]`, comma-separated) whose web pages may open WebSocket
    /// streams. Pages served from the server's own host, and clients that send no Origin
    /// header (scripts, terminals), are always allowed; every other Origin gets 403.
    #[arg(
        long,
        env = "JOBSCOPE_ALLOWED_ORIGINS",
        value_name = "JOBSCOPE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Seconds a client may leave the server's data unread (its receive window closed) before
    /// the kernel drops the connection (TCP_USER_TIMEOUT). Frees what a stuck stream client holds.
    #[arg(
        long,
        env = "JOBSCOPE_CLIENT_STALL_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub client_stall_timeout: u64,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Follow this one job (its samples included) and exit when it ends, with a status taken
    /// from its final state. Without it, follow every job matching --user/--states.
    #[arg(value_name = "JOB_ID")]
    pub job_id: Option<String>,

    /// Only this user's jobs (the all-jobs stream only).
    #[arg(long, value_name = "USER", conflicts_with = "job_id")]
    pub user: Option<String>,

    /// Only jobs in these states, comma-separated: pending,running,completed,failed,cancelled
    /// (the all-jobs stream only).
    #[arg(long, value_name = "STATES", conflicts_with = "job_id")]
    pub states: Option<String>,

    /// Base URL of a `jobscope serve`.
    #[arg(
        long,
        env = "JOBSCOPE_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,

    /// File holding the API token (sent as `Authorization: Bearer`); needed when the server has
    /// a tokens file. A reader token is enough.
    #[arg(long, env = "JOBSCOPE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}
