//! `serve`'s flags (clap's argument structs, with their environment variables), which
//! [`super::ServeConfig::from_args`] checks and turns into settings. They live with the settings,
//! below `cli`, so that the settings never look up at the command line.

use crate::domain::duration::parse_duration;
use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchedulerKind {
    /// Jobs come only from the hooks and the API.
    None,
    /// Demo cluster: seeds mock nodes, jobs and samples (implied by --demo).
    Mock,
    /// Slurm through slurmrestd: confirms final states, finds lost prologs and epilogs
    /// (needs --slurmrestd-url).
    Slurm,
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

    /// A PostgreSQL read replica of DATABASE_URL (postgres://USER@HOST/DB): the API's heavy
    /// reads (job lists, a job, its metrics, audit trail and reports) go there, so dashboards do
    /// not load the primary. They may lag the primary by the replica's replay delay; writes,
    /// streams and `/metrics` stay on the primary.
    #[arg(long, env = "DATABASE_READ_URL", value_name = "DATABASE_READ_URL")]
    pub database_read_url: Option<String>,

    /// Days of samples and stream events to keep; older ones are pruned hourly.
    #[arg(long, env = "METRICS_RETENTION_DAYS", value_name = "METRICS_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub retention_days: u32,

    /// Days of 5-minute rollups (min, mean, max per node and GPU) to keep; past
    /// --retention-days a job's metrics are answered from them. At least --retention-days.
    #[arg(long, env = "METRICS_ROLLUP_RETENTION_DAYS", value_name = "METRICS_ROLLUP_RETENTION_DAYS",
          default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub rollup_retention_days: u32,

    /// Bytes of output kept per job and stream (stdout, stderr): past it the first half is
    /// kept, then the newest output, with one line saying how many bytes were skipped.
    #[arg(long, env = "JOBSCOPE_LOG_MAX_BYTES_PER_JOB", value_name = "BYTES",
          default_value_t = crate::store::logs::DEFAULT_MAX_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(4096..=1_099_511_627_776))]
    pub log_max_bytes_per_job: u64,

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

    /// The cluster's Slurm JWT key (auth/jwt's `jwt_hs256.key`): users then sign in with
    /// `scontrol token` and see only their own jobs. Must be readable by its owner only;
    /// re-read when it changes.
    #[arg(
        long,
        env = "JOBSCOPE_SLURM_JWT_KEY_FILE",
        value_name = "JOBSCOPE_SLURM_JWT_KEY_FILE"
    )]
    pub slurm_jwt_key_file: Option<PathBuf>,

    /// Let users (Slurm JWTs, `user:NAME` tokens) list every job's lifecycle, as Slurm does
    /// without `PrivateData=jobs`; samples and audit trails stay their own.
    #[arg(long, env = "JOBSCOPE_USERS_SEE_ALL_JOBS", value_name = "JOBSCOPE_USERS_SEE_ALL_JOBS", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub users_see_all_jobs: bool,

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

    /// Also sample this machine's jobs in-process, as `jobscope agent` would (a single-node
    /// setup, no HTTP hop). Uses --node, --collect-interval, --cgroup-root and --gpu.
    #[arg(long, env = "JOBSCOPE_COLLECT", value_name = "JOBSCOPE_COLLECT", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub collect: bool,

    /// With --collect: this node's Slurm name (default: the short host name).
    #[arg(long, env = "JOBSCOPE_NODE", value_name = "NAME")]
    pub node: Option<String>,

    /// With --collect: time between samples.
    #[arg(long, env = "JOBSCOPE_INTERVAL", value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub collect_interval: std::time::Duration,

    /// With --collect: where the cgroup hierarchy is mounted.
    #[arg(long, env = "JOBSCOPE_CGROUP_ROOT", value_name = "DIR", default_value = crate::collector::DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: PathBuf,

    /// With --collect: GPUs to read (auto, nvidia, amd, none).
    #[arg(long, env = "JOBSCOPE_GPU", value_enum, default_value_t = crate::collector::GpuChoice::Auto)]
    pub gpu: crate::collector::GpuChoice,

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

    #[command(flatten)]
    pub metrics: MetricsArgs,

    #[command(flatten)]
    pub slurm: SlurmArgs,

    /// With --demo: run the living demo cluster this many times faster than real time (one
    /// tick, when agents report and jobs move, is 5 s divided by it).
    #[arg(long, env = "JOBSCOPE_DEMO_SPEED", value_name = "FACTOR", default_value_t = 1.0,
          value_parser = parse_demo_speed)]
    pub demo_speed: f64,

    /// Do not serve the web console at `/` (the API is unchanged).
    #[arg(long, env = "JOBSCOPE_NO_CONSOLE", value_name = "BOOL", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub no_console: bool,

    /// TOML file of the site's efficiency-report thresholds (see `domain::report::Thresholds`;
    /// keys cpu_efficiency_low, memory_use_low, gpu_idle_percent, ...); defaults otherwise.
    #[arg(long, env = "JOBSCOPE_REPORT_THRESHOLDS", value_name = "FILE")]
    pub report_thresholds: Option<PathBuf>,

    #[command(flatten)]
    pub limits: LimitsArgs,
}

/// `serve`'s bounds on what clients and the database may hold up (see `api::connections`).
#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    /// How long a connection may take to send a request's headers, counted from when it is
    /// ready for its next request: also how long a kept-alive connection may sit idle (e.g. 20s).
    /// Streams (SSE, WebSocket) are answered requests and are never cut by it.
    #[arg(long, env = "JOBSCOPE_HEADER_READ_TIMEOUT", value_name = "DURATION", default_value = "20s",
          value_parser = parse_duration)]
    pub header_read_timeout: std::time::Duration,

    /// Most connections served at once (streams included); past it a new connection gets 503
    /// and is closed.
    #[arg(long, env = "JOBSCOPE_MAX_CONNECTIONS", value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// How long a request waits for a database connection before it is answered 503 with
    /// Retry-After (SQLite: also how long a write waits for the database lock).
    #[arg(long, env = "JOBSCOPE_DB_ACQUIRE_TIMEOUT", value_name = "DURATION", default_value = "5s",
          value_parser = parse_duration)]
    pub db_acquire_timeout: std::time::Duration,
}

/// A `--demo-speed` factor: a finite number from 0.1 to 100.
fn parse_demo_speed(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a speed factor from 0.1 to 100")),
    }
}

/// `serve`'s Prometheus export (`GET /metrics`).
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Export per-job series (CPU, memory, IO, GPUs of every running job). Set it to false on a
    /// large cluster where each `jobscope agent --metrics-listen` serves its own node's jobs;
    /// cluster, node and service series stay.
    #[arg(long, env = "JOBSCOPE_PER_JOB_METRICS", value_name = "BOOL", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub per_job_metrics: bool,

    /// How long a finished job's series stay in /metrics, so their last values get scraped
    /// (e.g. 30s, 2m, 1h; at least one scrape interval).
    #[arg(long, env = "JOBSCOPE_METRICS_GRACE", value_name = "DURATION", default_value = "2m",
          value_parser = parse_duration)]
    pub metrics_grace: std::time::Duration,

    /// A bearer token that may read GET /metrics and nothing else (at least 16 characters), for
    /// Prometheus. Reader and admin tokens of --tokens-file may read it too. Prefer the
    /// environment variable: command lines are visible to every user of the machine.
    #[arg(
        long,
        env = "JOBSCOPE_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,
}

/// Flags of `--scheduler slurm`.
#[derive(Debug, Clone, Args)]
pub struct SlurmArgs {
    /// slurmrestd: http://host:6820, https://..., or unix:/path/to/slurmrestd.socket.
    #[arg(long, env = "SLURMRESTD_URL", value_name = "URL")]
    pub slurmrestd_url: Option<String>,

    /// User name sent as X-SLURM-USER-NAME (JWT authentication).
    #[arg(long, env = "SLURMRESTD_USER", value_name = "USER")]
    pub slurmrestd_user: Option<String>,

    /// File holding the JWT sent as X-SLURM-USER-TOKEN (e.g. from `scontrol token`); re-read
    /// when it changes. Preferred over SLURM_AUTH_TOKEN (the Go service's variable, also
    /// read): a file can be replaced when the token expires without restarting serve, and
    /// stays out of the process environment, which /proc/PID/environ, `docker inspect` and
    /// crash reports show.
    #[arg(long, env = "SLURMRESTD_TOKEN_FILE", value_name = "FILE")]
    pub slurmrestd_token_file: Option<PathBuf>,

    /// The Go service's SLURM_BASE_URL: the same as --slurmrestd-url (both set must agree).
    #[arg(long, env = "SLURM_BASE_URL", value_name = "URL", hide = true)]
    pub slurm_base_url: Option<String>,

    /// Use this slurmrestd API version instead of negotiating one: v0.0.37 to v0.0.44 (the
    /// Go service's SLURM_API_VERSION).
    #[arg(long, env = "SLURM_API_VERSION", value_name = "VERSION")]
    pub slurm_api_version: Option<String>,

    /// The Go service's SLURM_AUTH_TOKEN: a JWT as a value, used when there is no
    /// --slurmrestd-token-file (prefer the file, see there). Environment only.
    #[arg(long, env = "SLURM_AUTH_TOKEN", value_name = "TOKEN", hide = true, hide_env_values = true,
          value_parser = |s: &str| Ok::<_, String>(crate::scheduler::slurm::SlurmToken(s.to_owned())))]
    pub slurm_auth_token: Option<crate::scheduler::slurm::SlurmToken>,

    /// How often to reconcile jobs with Slurm: 30s, 1m, 500ms.
    #[arg(
        long,
        env = "JOBSCOPE_RECONCILE_INTERVAL",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub reconcile_interval: std::time::Duration,
}

/// Parses `argv` (the command's name first) as one command's flags, for the settings' tests.
#[cfg(test)]
pub(crate) fn parse_for_test<A: clap::Args>(argv: &[&str]) -> Result<A, clap::Error> {
    use clap::Parser;
    #[derive(Parser)]
    struct One<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    One::<A>::try_parse_from(argv).map(|one| one.args)
}
