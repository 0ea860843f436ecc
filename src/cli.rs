//! Command-line interface: the subcommands and their flags. Every flag can also be set through
//! the environment variable named in `--help` (the Go service's names where it had one), so
//! existing deployments keep working. `serve`'s flags live with its settings
//! ([`crate::config::args`]), the hook's with its ([`crate::hook::config::HookArgs`]), and the
//! `--server`/`--token-file` pair of the API's clients is [`crate::client::ServerArgs`].

use crate::config::ServeArgs;
use crate::domain::duration::parse_duration;
use crate::hook::config::HookArgs;
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

    /// How long the agent still reads a job's stdout/stderr files after the job has left the
    /// node (after its epilog), for output its last processes flush late; then the job's log is
    /// closed (complete). At most 1m: the server takes a finished job's output for 2 minutes.
    #[arg(long, env = "JOBSCOPE_LOG_DRAIN", value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub log_drain: std::time::Duration,

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

    #[command(flatten)]
    pub api: crate::client::ServerArgs,

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
            server: args.api.server,
            token_file: args.api.token_file,
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
        if args.log_drain > crate::log_tail::MAX_DRAIN {
            anyhow::bail!(
                "--log-drain (JOBSCOPE_LOG_DRAIN): at most {}s (the server closes a finished job's log after 2 minutes)",
                crate::log_tail::MAX_DRAIN.as_secs()
            );
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
            log_drain: args.log_drain,
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
