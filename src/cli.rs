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
                  Start with `jobscope serve --demo` and open http://127.0.0.1:8080/ in a browser."
)]
pub struct Cli {
    /// Log format on stderr. Log levels come from RUST_LOG (default: info).
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Debug logging when RUST_LOG is not set (the Go service's DEBUG=1). From the environment
    /// only: 1, true, yes or on turn it on; any other value (DEBUG is a common name) does not.
    #[arg(long, env = "DEBUG", value_name = "DEBUG", global = true, hide = true)]
    pub debug: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether `DEBUG` asks for debug logging.
    pub fn debug_logging(&self) -> bool {
        self.debug.as_deref().is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
    }
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
    /// Run on a compute node: sample every running job's cgroup, GPUs and the node, and push
    /// the figures to `jobscope serve`.
    #[command(long_about = AGENT_ABOUT)]
    Agent(AgentArgs),
    /// Slurm Prolog/Epilog client: post job-started/job-finished, spool what cannot be
    /// delivered. Always exits 0.
    #[command(long_about = HOOK_ABOUT)]
    Hook(HookArgs),
    /// A job's efficiency report (did it use what it asked for?), or a list of jobs since a
    /// time, worst first.
    Report(crate::report::ReportArgs),
    /// A job's output (stdout or stderr) as the server holds it; `--tail N` for the last lines.
    Log(crate::log_cmd::LogArgs),
    /// Bring the database to this version's schema, or with --dry-run say what that would
    /// change. A PostgreSQL database created by the Go service is adopted in place (its jobs,
    /// samples and audit trail kept), as `serve` does at start.
    Migrate(MigrateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Database: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "sqlite://jobscope.db"
    )]
    pub database_url: String,

    /// Print what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

const AGENT_ABOUT: &str = "Run on every compute node. Each interval the agent asks the server \
which jobs run on this node, finds their cgroups (cgroup v2 and v1, every Slurm layout), reads \
CPU, memory, IO, pids and pressure, assigns NVIDIA (NVML) and AMD (amdgpu sysfs) GPUs to jobs, \
reads the node's CPU, memory and load, and posts one batch to POST /v1/samples. Nothing is \
invented: what cannot be read is left out. When the server cannot be reached, batches wait in \
a bounded spool on disk and are sent oldest first when it answers again.\n\n\
Example: jobscope agent --server https://jobscope.example:8080 --token-file /etc/jobscope/agent.token";

/// A duration: `15s`, `500ms`, `2m`, `1h`, or a bare number of seconds (`15`, `0.5`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 15s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ))
        }
    };
    std::time::Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Base URL of `jobscope serve`.
    #[arg(
        long,
        env = "JOBSCOPE_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,

    /// File whose first line is an `agent` token (needed when the server has a tokens file).
    #[arg(long, env = "JOBSCOPE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// This node's name as Slurm knows it (default: the short host name).
    #[arg(long, env = "JOBSCOPE_NODE", value_name = "NAME")]
    pub node: Option<String>,

    /// Time between samples: 15s, 500ms, 1m, or a bare number of seconds.
    #[arg(long, env = "JOBSCOPE_INTERVAL", value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub interval: std::time::Duration,

    /// Where the cgroup hierarchy is mounted.
    #[arg(long, env = "JOBSCOPE_CGROUP_ROOT", value_name = "DIR", default_value = crate::collector::DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: PathBuf,

    /// Where procfs is mounted (node figures, process cgroups for GPU assignment).
    #[arg(long, env = "JOBSCOPE_PROC_ROOT", value_name = "DIR", default_value = crate::collector::DEFAULT_PROC_ROOT)]
    pub proc_root: PathBuf,

    /// DRM class directory of amdgpu cards.
    #[arg(long, env = "JOBSCOPE_DRM_ROOT", value_name = "DIR", default_value = crate::collector::DEFAULT_DRM_ROOT)]
    pub drm_root: PathBuf,

    /// GPUs to read: auto (NVML, else amdgpu), nvidia, amd or none.
    #[arg(long, env = "JOBSCOPE_GPU", value_enum, default_value_t = crate::collector::GpuChoice::Auto)]
    pub gpu: crate::collector::GpuChoice,

    /// Cgroup files kept open between samples (about 11 per job). Each saves a few µs of CPU per
    /// sample and holds ~5 KiB of kernel memory charged to the agent; 0 opens every file afresh.
    /// The open-files limit may allow fewer.
    #[arg(long, env = "JOBSCOPE_MAX_OPEN_CGROUP_FILES", value_name = "N", default_value_t = crate::collector::fd_limit::KEPT_FILES_CEILING)]
    pub max_open_cgroup_files: usize,

    /// Directory of batches waiting for the server.
    #[arg(
        long,
        env = "JOBSCOPE_AGENT_SPOOL_DIR",
        value_name = "DIR",
        default_value = "/var/spool/jobscope/agent"
    )]
    pub spool_dir: PathBuf,

    /// Most batches the spool keeps; past it the oldest are dropped (and counted).
    #[arg(long, value_name = "N", default_value_t = 5760, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub spool_max_batches: u64,

    /// Most megabytes the spool keeps; past it the oldest batches are dropped (and counted).
    #[arg(long, value_name = "MB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub spool_max_mb: u64,

    /// Limit for one request to the server.
    #[arg(long, env = "JOBSCOPE_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,

    /// Job output shipped per job and stream, in bytes per second: a job printing faster has
    /// the oldest part of its backlog skipped (and marked in its log). 0 turns off reading
    /// jobs' stdout/stderr files (found with `scontrol show job`, on the job's batch host).
    #[arg(long, env = "JOBSCOPE_LOG_RATE", value_name = "BYTES", default_value_t = crate::log_tail::DEFAULT_RATE, value_parser = clap::value_parser!(u64).range(0..=1_073_741_824))]
    pub log_rate: u64,

    /// The Slurm hook's settings file: the agent also delivers the events `jobscope hook` spooled
    /// on this node (with the hook token named there), so an event is not stuck until the next
    /// job's hook runs. Skipped when the hook's spool directory does not exist.
    #[arg(long, env = "JOBSCOPE_HOOK_CONFIG", value_name = "FILE")]
    pub hook_config: Option<PathBuf>,

    /// Serve this node's per-job, node and agent series on `ADDR` (`GET /metrics`, no
    /// authentication: bind it to an address only Prometheus reaches). For large clusters,
    /// scrape agents directly and run serve with --per-job-metrics=false.
    #[arg(long, env = "JOBSCOPE_AGENT_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// How long a finished job's series stay on the agent's /metrics.
    #[arg(long, env = "JOBSCOPE_METRICS_GRACE", value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub metrics_grace: std::time::Duration,
}

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
    /// a tokens file. A reader or user token is enough. The token is the first line that is not
    /// blank or a `#` comment (`SLURM_JWT=...` as `scontrol token` prints it works too).
    /// Without this option, when `scontrol` is on the PATH, watch runs `scontrol token
    /// lifespan=3600` and sends your Slurm JWT (the server needs --slurm-jwt-key-file), and
    /// fetches a fresh one once when the server answers 401.
    #[arg(long, env = "JOBSCOPE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Print the job's output as it grows (like `tail -f`) instead of its events, then exit
    /// with the job's status. Needs JOB_ID and a token of the job's owner (or an admin).
    #[arg(long, requires = "job_id")]
    pub log: bool,

    /// With --log: which stream, stdout or stderr.
    #[arg(long, value_name = "STREAM", default_value = "stdout", requires = "log", value_parser = crate::log_cmd::parse_stream)]
    pub stream: crate::domain::joblog::LogStream,
}

impl From<WatchArgs> for crate::watch::WatchConfig {
    fn from(args: WatchArgs) -> Self {
        crate::watch::WatchConfig {
            job_id: args.job_id,
            user: args.user,
            states: args.states,
            server: args.server,
            token_file: args.token_file,
            log: args.log.then_some(args.stream),
        }
    }
}

// ---- jobscope hook -----------------------------------------------------------------------------

const HOOK_ABOUT: &str = "Slurm hook client. Install `jobscope hook prolog` as Prolog= and \
PrologSlurmctld=, `jobscope hook epilog` as Epilog= and EpilogSlurmctld= (through a wrapper script: \
Slurm runs a path without arguments). It reads the job from the SLURM_* environment, posts \
/v1/events/job-started or /v1/events/job-finished with the hook token, and spools the event when \
the server cannot be reached; spooled events are sent, oldest first, by the next hook run and by \
`jobscope agent`.\n\n\
It always exits 0 (a failing Prolog drains the node) and logs problems on stderr (RUST_LOG, \
default warn). Settings come from the TOML file (--config; keys server, token_file, timeout, \
spool_dir, gpu_vendor), then from these flags or their environment variables, the later winning; \
see scripts/slurm/hook.toml.example.";

#[derive(Debug, Clone, Args)]
pub struct HookArgs {
    /// Which event to send: prolog (job started) or epilog (job finished).
    #[arg(value_enum)]
    pub kind: crate::hook::HookKind,

    /// TOML settings file. A missing default file is fine; a malformed one is logged and ignored.
    #[arg(long, env = "JOBSCOPE_HOOK_CONFIG", value_name = "FILE", default_value = None,
          long_help = "TOML settings file [default: /etc/jobscope/hook.toml]. A missing default \
                       file is fine; a malformed one is logged and defaults are used.")]
    pub config: Option<PathBuf>,

    /// Base URL of `jobscope serve` [file key: server; default http://127.0.0.1:8080].
    #[arg(long, env = "JOBSCOPE_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// File whose first line is the hook token [file key: token_file].
    #[arg(long, env = "JOBSCOPE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Limit per request, connection included: 2s, 1.5, 500ms [file key: timeout; default 2s].
    #[arg(long, env = "JOBSCOPE_TIMEOUT", value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Where undelivered events wait [file key: spool_dir; default /var/spool/jobscope].
    #[arg(long, env = "JOBSCOPE_HOOK_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// gpu_vendor reported for the job's GPUs: nvidia, amd, mixed or none [file key: gpu_vendor;
    /// default: amd on nodes with /dev/kfd and no /dev/nvidiactl, else nvidia].
    #[arg(long, env = "JOBSCOPE_GPU_VENDOR", value_name = "VENDOR")]
    pub gpu_vendor: Option<String>,
}

// ---- settings from arguments -------------------------------------------------------------------

/// `jobscope agent`'s arguments as its settings.
impl crate::agent::AgentConfig {
    pub fn from_args(args: &AgentArgs) -> anyhow::Result<crate::agent::AgentConfig> {
        use anyhow::Context;
        let server =
            crate::client::server_url(&args.server).context("--server (JOBSCOPE_SERVER)")?;
        let token = match &args.token_file {
            Some(path) => Some(crate::token_file::read(path).context("--token-file")?),
            None => None,
        };
        let node = crate::collector::sampler::node_name(args.node.as_deref(), &args.proc_root).context(
            "--node (JOBSCOPE_NODE) is not set and the host name cannot be read; pass the Slurm node name",
        )?;
        if args.interval < std::time::Duration::from_millis(100) {
            anyhow::bail!("--interval: at least 100ms");
        }
        Ok(crate::agent::AgentConfig {
            server,
            token,
            sampler: crate::collector::SamplerConfig {
                node,
                cgroup_root: args.cgroup_root.clone(),
                proc_root: args.proc_root.clone(),
                drm_root: args.drm_root.clone(),
                interval: args.interval,
                max_open_cgroup_files: args.max_open_cgroup_files,
            },
            gpu: args.gpu,
            spool_dir: args.spool_dir.clone(),
            spool_limits: crate::spool::SpoolLimits {
                max_records: usize::try_from(args.spool_max_batches).unwrap_or(usize::MAX),
                max_bytes: args.spool_max_mb.saturating_mul(1024 * 1024),
                when_full: crate::spool::WhenFull::DropOldest,
            },
            timeout: args.timeout,
            hook: hook_settings(args.hook_config.clone()),
            metrics_listen: args.metrics_listen,
            metrics_grace: args.metrics_grace,
            log_rate: args.log_rate,
        })
    }
}

/// The hook's settings as `jobscope hook` would resolve them from its file.
fn hook_settings(file: Option<PathBuf>) -> crate::hook::config::HookConfig {
    let args = HookArgs {
        kind: crate::hook::HookKind::Epilog,
        config: file,
        server: None,
        token_file: None,
        timeout: None,
        spool_dir: None,
        gpu_vendor: None,
    };
    let (config, warnings) = crate::hook::config::resolve(&args, &|p| std::fs::read_to_string(p));
    for w in warnings {
        tracing::warn!("hook settings: {w}");
    }
    config
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_take_units_or_bare_seconds() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration(" 0.5 "), Ok(Duration::from_millis(500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
