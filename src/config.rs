//! Typed configuration of `serve`, built once from the parsed command line. Every check here
//! fails with a message that names the flag and its environment variable; nothing falls back
//! silently to a default. The flags themselves (clap's argument structs) are [`args`], so
//! that the settings never look up at `cli`.

use crate::api::auth::Tokens;
use crate::api::connections::ConnectionLimits;
pub use args::{LimitsArgs, SchedulerKind, ServeArgs};
use args::{MetricsArgs, SlurmArgs};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

pub mod args;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub database_url: String,
    /// `--database-read-url`: a read replica of `database_url` for the API's reads.
    pub database_read_url: Option<String>,
    pub retention: Duration,
    /// `--rollup-retention-days`: rollups kept (never shorter than `retention`).
    pub rollup_retention: Duration,
    pub demo: bool,
    pub scheduler: SchedulerKind,
    /// `None`: no authentication (only allowed on loopback, or with `insecure_no_auth`).
    pub tokens: Option<Tokens>,
    pub insecure_no_auth: bool,
    /// Origins (lower-case `scheme://host[:port]`) allowed to open WebSockets besides the
    /// server's own host.
    pub allowed_origins: Vec<String>,
    /// How long a peer may leave sent data unread before the kernel drops it (TCP_USER_TIMEOUT).
    pub client_stall_timeout: Duration,
    /// Set with `--scheduler slurm`.
    pub slurm: Option<crate::scheduler::slurm::SlurmConfig>,
    /// `--collect`: sample this machine's jobs in-process.
    pub collect: Option<CollectConfig>,
    /// `GET /metrics`: per-job series, grace period, and its own token.
    pub metrics: MetricsConfig,
    /// Header-read and idle timeouts, connection cap (`crate::api::connections`).
    pub connections: crate::api::connections::ConnectionLimits,
    /// How long a request waits for the database (`--db-acquire-timeout`).
    pub db_acquire_timeout: Duration,
    /// `--demo-speed`: how much faster than real time the living demo runs.
    pub demo_speed: f64,
    /// Serve the web console at `/` (`--no-console` turns it off).
    pub console: bool,
    /// How long after a job's end its `job_report` event waits for late samples.
    pub report_grace: Duration,
    /// `--log-max-bytes-per-job`: job output kept per job and stream.
    pub log_max_bytes_per_job: u64,
}

impl ServeConfig {
    /// `serve` on a free loopback port (127.0.0.1:0) with `database_url` and nothing else: no
    /// tokens (loopback only), no demo, no scheduler, no collector, a week of retention. For
    /// running the service in-process (tests, benchmarks, embedding).
    pub fn loopback(database_url: &str) -> ServeConfig {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.to_string(),
            database_read_url: None,
            retention: Duration::from_secs(7 * 86_400),
            rollup_retention: Duration::from_secs(90 * 86_400),
            demo: false,
            scheduler: SchedulerKind::None,
            tokens: None,
            insecure_no_auth: false,
            allowed_origins: Vec::new(),
            client_stall_timeout: crate::api::socket::DEFAULT_STALL_TIMEOUT,
            slurm: None,
            collect: None,
            metrics: MetricsConfig::default(),
            connections: Default::default(),
            db_acquire_timeout: crate::store::DEFAULT_ACQUIRE_TIMEOUT,
            demo_speed: 1.0,
            console: true,
            report_grace: crate::report_events::DEFAULT_GRACE,
            log_max_bytes_per_job: crate::store::logs::DEFAULT_MAX_BYTES as u64,
        }
    }
}

/// The Prometheus export's settings.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    pub options: crate::metrics::MetricsOptions,
    /// `--metrics-token`; never logged (`Debug` shows only whether it is set).
    pub token: Option<MetricsToken>,
}

/// A secret that only `Debug`-prints as `***`.
#[derive(Clone)]
pub struct MetricsToken(pub std::sync::Arc<str>);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

fn metrics_config(args: &MetricsArgs) -> Result<MetricsConfig, ConfigError> {
    let token = match args.metrics_token.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(token)
            if token.len() < crate::api::auth::MIN_TOKEN_LEN
                || token.contains(char::is_whitespace) =>
        {
            return Err(invalid(
                "--metrics-token (JOBSCOPE_METRICS_TOKEN)",
                format!(
                    "must be at least {} characters without spaces (e.g. `openssl rand -hex 24`)",
                    crate::api::auth::MIN_TOKEN_LEN
                ),
            ))
        }
        Some(token) => Some(MetricsToken(token.into())),
    };
    if args.metrics_grace < std::time::Duration::from_secs(1) {
        return Err(invalid(
            "--metrics-grace (JOBSCOPE_METRICS_GRACE)",
            "must be at least 1s, or a finished job's last values may never be scraped",
        ));
    }
    Ok(MetricsConfig {
        options: crate::metrics::MetricsOptions {
            per_job: args.per_job_metrics,
            grace: args.metrics_grace,
        },
        token,
    })
}

/// What `serve --collect` samples, and how often.
#[derive(Debug, Clone)]
pub struct CollectConfig {
    pub sampler: crate::collector::SamplerConfig,
    pub gpu: crate::collector::GpuChoice,
}

impl ServeConfig {
    pub fn from_args(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
        let ip = parse_host(&args.host)?;
        let database_url = check_database_url(&args.database_url)?;
        let database_read_url = args
            .database_read_url
            .as_deref()
            .map(|url| check_read_url(url, &database_url))
            .transpose()?;
        let tokens = match &args.tokens_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        "--tokens-file (JOBSCOPE_TOKENS_FILE)",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                warn_if_readable_by_others(path);
                let tokens = Tokens::parse(&text).map_err(|e| {
                    invalid(
                        "--tokens-file (JOBSCOPE_TOKENS_FILE)",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                Some(tokens)
            }
            None => None,
        };
        let jwt =
            match &args.slurm_jwt_key_file {
                Some(path) => Some(crate::api::jwt::JwtKey::load(path).map_err(|e| {
                    invalid("--slurm-jwt-key-file (JOBSCOPE_SLURM_JWT_KEY_FILE)", e)
                })?),
                None => None,
            };
        let tokens = match (tokens, jwt) {
            (Some(tokens), jwt) => Some(tokens.with_jwt(jwt)),
            (None, Some(jwt)) => Some(Tokens::jwt_only(jwt)),
            (None, None) => None,
        }
        .map(|mut tokens| {
            tokens.users_see_all_jobs = args.users_see_all_jobs;
            tokens
        });
        if tokens.is_none() && !ip.is_loopback() && !args.insecure_no_auth {
            return Err(invalid(
                "--host (HOST)",
                format!(
                    "{ip} is not a loopback address and no --tokens-file is configured; anyone who \
                     can reach the port could change jobs. Configure --tokens-file, or pass \
                     --insecure-no-auth if the network is trusted"
                ),
            ));
        }
        let scheduler = match (args.scheduler, args.demo) {
            (Some(kind), _) => kind,
            (None, true) => SchedulerKind::Mock,
            (None, false) => SchedulerKind::None,
        };
        // The Go service ignored SEED_DEMO with its slurm backend; a site moving over keeps
        // its environment, so it is a warning here too.
        let demo = if args.demo && scheduler == SchedulerKind::Slurm {
            tracing::warn!(
                "SEED_DEMO (--demo) is ignored with --scheduler slurm: demo jobs are for the mock scheduler"
            );
            false
        } else {
            args.demo
        };
        if demo && scheduler != SchedulerKind::Mock {
            return Err(invalid(
                "--scheduler (SCHEDULER_BACKEND)",
                "--demo seeds mock jobs and needs the mock scheduler; leave --scheduler unset or set it to mock",
            ));
        }
        if args.rollup_retention_days < args.retention_days {
            return Err(invalid(
                "--rollup-retention-days (METRICS_ROLLUP_RETENTION_DAYS)",
                format!(
                    "{} days is shorter than --retention-days ({}): rollups would expire before \
                     the raw samples they stand for",
                    args.rollup_retention_days, args.retention_days
                ),
            ));
        }
        Ok(ServeConfig {
            listen: SocketAddr::new(ip, args.port),
            database_url,
            database_read_url,
            retention: Duration::from_secs(u64::from(args.retention_days) * 86_400),
            rollup_retention: Duration::from_secs(u64::from(args.rollup_retention_days) * 86_400),
            demo: demo || scheduler == SchedulerKind::Mock,
            scheduler,
            tokens,
            insecure_no_auth: args.insecure_no_auth,
            allowed_origins: check_origins(&args.allowed_origins)?,
            slurm: slurm_config(scheduler, &args.slurm)?,
            collect: collect_config(args)?,
            metrics: metrics_config(&args.metrics)?,
            client_stall_timeout: Duration::from_secs(args.client_stall_timeout),
            connections: connection_limits(&args.limits)?,
            db_acquire_timeout: nonzero(
                args.limits.db_acquire_timeout,
                "JOBSCOPE_DB_ACQUIRE_TIMEOUT",
            )?,
            demo_speed: args.demo_speed,
            console: !args.no_console,
            report_grace: crate::report_events::DEFAULT_GRACE,
            log_max_bytes_per_job: args.log_max_bytes_per_job,
        })
    }
}

/// `--scheduler slurm` and its flags.
fn slurm_config(
    scheduler: SchedulerKind,
    args: &SlurmArgs,
) -> Result<Option<crate::scheduler::slurm::SlurmConfig>, ConfigError> {
    if scheduler != SchedulerKind::Slurm {
        return Ok(None);
    }
    let key = "--slurmrestd-url (SLURMRESTD_URL, or the Go service's SLURM_BASE_URL)";
    let given = match (
        args.slurmrestd_url.as_deref().map(str::trim),
        args.slurm_base_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty()),
    ) {
        (Some(a), Some(b)) if a.trim_end_matches('/') != b.trim_end_matches('/') => {
            return Err(invalid(
                key,
                "SLURMRESTD_URL and SLURM_BASE_URL name different servers; set one",
            ))
        }
        (a, b) => a.or(b),
    };
    let url = match given {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => u.to_owned(),
        Some(u) if u.starts_with("unix:/") => u.to_owned(),
        Some(u) => {
            return Err(invalid(
                key,
                format!("{u:?} must be http://host:port, https://... or unix:/path"),
            ))
        }
        None => return Err(invalid(key, "--scheduler slurm needs the slurmrestd URL")),
    };
    let interval = args.reconcile_interval;
    if interval < Duration::from_millis(100) || interval > Duration::from_secs(86_400) {
        return Err(invalid(
            "--reconcile-interval (JOBSCOPE_RECONCILE_INTERVAL)",
            "must be between 100ms and 24h",
        ));
    }
    let version = match args.slurm_api_version.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(v) => {
            let wanted = if v.starts_with('v') {
                v.to_owned()
            } else {
                format!("v{v}")
            };
            let known = crate::scheduler::slurm::client::VERSIONS;
            match known.iter().find(|k| **k == wanted) {
                Some(k) => Some(*k),
                None => {
                    return Err(invalid(
                        "--slurm-api-version (SLURM_API_VERSION)",
                        format!(
                            "{v:?} is not a version jobscope speaks ({})",
                            known.join(", ")
                        ),
                    ))
                }
            }
        }
    };
    let token = args
        .slurm_auth_token
        .as_ref()
        .map(|t| t.0.trim())
        .filter(|t| !t.is_empty())
        .map(|t| crate::scheduler::slurm::SlurmToken(t.to_owned()));
    if token.is_some() && args.slurmrestd_token_file.is_some() {
        tracing::warn!(
            "both SLURM_AUTH_TOKEN and --slurmrestd-token-file are set; the file is used"
        );
    }
    Ok(Some(crate::scheduler::slurm::SlurmConfig {
        url,
        user: args.slurmrestd_user.clone(),
        token_file: args.slurmrestd_token_file.clone(),
        token,
        version,
        interval,
    }))
}

fn collect_config(args: &ServeArgs) -> Result<Option<CollectConfig>, ConfigError> {
    if !args.collect {
        return Ok(None);
    }
    let proc_root = std::path::PathBuf::from(crate::collector::DEFAULT_PROC_ROOT);
    let node = crate::collector::sampler::node_name(args.node.as_deref(), &proc_root).ok_or_else(
        || {
            invalid(
                "--node (JOBSCOPE_NODE)",
                "not set and the host name cannot be read; pass the Slurm node name",
            )
        },
    )?;
    if args.collect_interval < Duration::from_millis(100) {
        return Err(invalid(
            "--collect-interval (JOBSCOPE_INTERVAL)",
            "at least 100ms",
        ));
    }
    Ok(Some(CollectConfig {
        sampler: crate::collector::SamplerConfig {
            node,
            cgroup_root: args.cgroup_root.clone(),
            proc_root,
            drm_root: crate::collector::DEFAULT_DRM_ROOT.into(),
            interval: args.collect_interval,
            max_open_cgroup_files: crate::collector::fd_limit::KEPT_FILES_CEILING,
        },
        gpu: args.gpu,
    }))
}

/// Tokens are secrets: say so when the file can be read by anyone but its owner.
fn warn_if_readable_by_others(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o044 != 0 {
                tracing::warn!(path = %path.display(), "tokens file is readable by group or others; chmod 600 it");
            }
        }
    }
}

fn parse_host(host: &str) -> Result<IpAddr, ConfigError> {
    if host == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.parse().map_err(|_| {
        invalid(
            "--host (HOST)",
            format!("{host:?} is not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1)"),
        )
    })
}

fn check_database_url(url: &str) -> Result<String, ConfigError> {
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if known.iter().any(|prefix| url.starts_with(prefix)) {
        Ok(url.to_owned())
    } else {
        Err(invalid(
            "--database-url (DATABASE_URL)",
            "must start with sqlite:// (e.g. sqlite://jobscope.db) or postgres://",
        ))
    }
}

/// A read replica only makes sense beside a PostgreSQL primary (SQLite has no replicas).
fn check_read_url(url: &str, primary: &str) -> Result<String, ConfigError> {
    let key = "--database-read-url (DATABASE_READ_URL)";
    if !crate::store::is_postgres_url(url) {
        return Err(invalid(
            key,
            "must start with postgres:// (a PostgreSQL read replica)",
        ));
    }
    if !crate::store::is_postgres_url(primary) {
        return Err(invalid(
            key,
            "needs a PostgreSQL --database-url (DATABASE_URL); SQLite has no read replicas",
        ));
    }
    Ok(url.to_owned())
}

/// Normalises `--allowed-origins` to what browsers send in `Origin`: lower-case
/// `scheme://host[:port]`, no path. Empty entries (a trailing comma) are skipped.
fn check_origins(origins: &[String]) -> Result<Vec<String>, ConfigError> {
    let key = "--allowed-origins (JOBSCOPE_ALLOWED_ORIGINS)";
    let mut out = Vec::new();
    for raw in origins {
        let origin = raw.trim().trim_end_matches('/').to_ascii_lowercase();
        if origin.is_empty() {
            continue;
        }
        // Every origin (CORS `*`, and any WebSocket `Origin`); credentials are never allowed.
        if origin == "*" {
            out.push(origin);
            continue;
        }
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        match host {
            Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']) => {
                out.push(origin)
            }
            _ => {
                return Err(invalid(
                    key,
                    format!("{raw:?} is not an origin like https://dashboard.example.org[:port]"),
                ))
            }
        }
    }
    Ok(out)
}

/// A duration setting that must not be zero (`key`: its environment variable).
/// `--header-read-timeout` and `--max-connections`.
fn connection_limits(args: &LimitsArgs) -> Result<ConnectionLimits, ConfigError> {
    Ok(ConnectionLimits {
        header_read_timeout: nonzero(args.header_read_timeout, "JOBSCOPE_HEADER_READ_TIMEOUT")?,
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
    })
}

fn nonzero(d: Duration, key: &'static str) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(invalid(key, "must be more than 0"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use args::parse_for_test;

    /// The Go service's SLURM_BASE_URL, SLURM_API_VERSION and SLURM_AUTH_TOKEN (read from the
    /// environment through these hidden flags' `env`), and SEED_DEMO with the slurm backend.
    #[test]
    fn go_service_variables_are_aliases() {
        let slurm = |extra: &[&str]| {
            let mut argv = vec!["--scheduler", "slurm"];
            argv.extend_from_slice(extra);
            ServeConfig::from_args(&serve_args(&argv))
        };
        let cfg = slurm(&[
            "--slurm-base-url",
            "http://slurm:6820",
            "--slurm-api-version",
            "0.0.37",
            "--slurm-auth-token",
            "jwt-value",
        ])
        .unwrap();
        let s = cfg.slurm.unwrap();
        assert_eq!(s.url, "http://slurm:6820");
        assert_eq!(s.version, Some("v0.0.37"));
        assert_eq!(s.token.as_ref().unwrap().0, "jwt-value");
        assert!(
            !format!("{s:?}").contains("jwt-value"),
            "the token is not in Debug"
        );
        let same = slurm(&[
            "--slurmrestd-url",
            "http://slurm:6820/",
            "--slurm-base-url",
            "http://slurm:6820",
        ]);
        assert!(same.is_ok());
        let err = slurm(&[
            "--slurmrestd-url",
            "http://a:6820",
            "--slurm-base-url",
            "http://b:6820",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("SLURM_BASE_URL"), "{err}");
        let err = slurm(&[
            "--slurm-base-url",
            "http://a",
            "--slurm-api-version",
            "v0.0.36",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("SLURM_API_VERSION"), "{err}");
        // SEED_DEMO with the slurm backend: ignored (a warning), not fatal.
        let cfg = slurm(&["--slurm-base-url", "http://a", "--demo"]).unwrap();
        assert!(!cfg.demo);
        assert_eq!(cfg.scheduler, SchedulerKind::Slurm);
    }

    fn serve_args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(extra);
        parse_for_test(&argv).expect("valid command line")
    }

    #[test]
    fn defaults_are_loopback_sqlite_and_no_auth() {
        let cfg = ServeConfig::from_args(&serve_args(&[])).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.database_url, "sqlite://jobscope.db");
        assert_eq!(cfg.retention, Duration::from_secs(7 * 86_400));
        assert_eq!(cfg.rollup_retention, Duration::from_secs(90 * 86_400));
        assert!(cfg.tokens.is_none());
        assert_eq!(cfg.scheduler, SchedulerKind::None);
        assert!(!cfg.demo);
    }

    #[test]
    fn slurm_scheduler_needs_a_slurmrestd_url() {
        let err = ServeConfig::from_args(&serve_args(&["--scheduler", "slurm"])).unwrap_err();
        assert!(err.to_string().contains("SLURMRESTD_URL"), "{err}");
        let err = ServeConfig::from_args(&serve_args(&[
            "--scheduler",
            "slurm",
            "--slurmrestd-url",
            "localhost:6820",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("unix:/path"), "{err}");
        let cfg = ServeConfig::from_args(&serve_args(&[
            "--scheduler",
            "slurm",
            "--slurmrestd-url",
            "unix:/run/slurmrestd.socket",
            "--reconcile-interval",
            "5s",
        ]))
        .unwrap();
        let slurm = cfg.slurm.unwrap();
        assert_eq!(slurm.url, "unix:/run/slurmrestd.socket");
        assert_eq!(slurm.interval, Duration::from_secs(5));
        let cfg = ServeConfig::from_args(&serve_args(&[
            "--scheduler",
            "slurm",
            "--slurmrestd-url",
            "http://127.0.0.1:6820",
        ]))
        .unwrap();
        assert_eq!(cfg.slurm.unwrap().interval, Duration::from_secs(30));
        let err = ServeConfig::from_args(&serve_args(&[
            "--scheduler",
            "slurm",
            "--slurmrestd-url",
            "http://x",
            "--reconcile-interval",
            "0",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("--reconcile-interval"), "{err}");
        assert!(ServeConfig::from_args(&serve_args(&[]))
            .unwrap()
            .slurm
            .is_none());
    }

    #[test]
    fn a_read_replica_needs_a_postgres_primary_and_a_postgres_url() {
        let pg = ["--database-url", "postgres://u@db/jobscope"];
        let cfg = ServeConfig::from_args(&serve_args(
            &[
                &pg[..],
                &["--database-read-url", "postgres://u@replica/jobscope"],
            ]
            .concat(),
        ))
        .unwrap();
        assert_eq!(
            cfg.database_read_url.as_deref(),
            Some("postgres://u@replica/jobscope")
        );
        assert!(ServeConfig::from_args(&serve_args(&pg))
            .unwrap()
            .database_read_url
            .is_none());
        let err = ServeConfig::from_args(&serve_args(
            &[&pg[..], &["--database-read-url", "sqlite://copy.db"]].concat(),
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("must start with postgres://"),
            "{err}"
        );
        let err = ServeConfig::from_args(&serve_args(&[
            "--database-read-url",
            "postgres://u@replica/jobscope",
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("SQLite has no read replicas"),
            "{err}"
        );
    }

    #[test]
    fn demo_implies_mock_scheduler() {
        let cfg = ServeConfig::from_args(&serve_args(&["--demo"])).unwrap();
        assert_eq!(cfg.scheduler, SchedulerKind::Mock);
        assert!(cfg.demo);
        let err =
            ServeConfig::from_args(&serve_args(&["--demo", "--scheduler", "none"])).unwrap_err();
        assert!(err.to_string().contains("SCHEDULER_BACKEND"), "{err}");
    }

    #[test]
    fn public_address_without_tokens_is_refused() {
        let err = ServeConfig::from_args(&serve_args(&["--host", "0.0.0.0"])).unwrap_err();
        assert!(err.to_string().contains("--host (HOST)"), "{err}");
        assert!(
            ServeConfig::from_args(&serve_args(&["--host", "0.0.0.0", "--insecure-no-auth"]))
                .is_ok()
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = ServeConfig::from_args(&serve_args(&["--host", "not-an-ip"])).unwrap_err();
        assert!(err.to_string().starts_with("--host (HOST)"), "{err}");
        let err =
            ServeConfig::from_args(&serve_args(&["--database-url", "mysql://x"])).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
        let err = parse_for_test::<ServeArgs>(&["serve", "--retention-days", "0"]).unwrap_err();
        assert!(err.to_string().contains("--retention-days"), "{err}");
        let err = ServeConfig::from_args(&serve_args(&[
            "--retention-days",
            "30",
            "--rollup-retention-days",
            "10",
        ]))
        .unwrap_err();
        assert!(
            err.to_string().contains("METRICS_ROLLUP_RETENTION_DAYS"),
            "{err}"
        );
        let err = parse_for_test::<ServeArgs>(&["serve", "--demo=banana"]).unwrap_err();
        assert!(err.to_string().contains("--demo"), "{err}");
    }

    #[test]
    fn metrics_flags_are_parsed_and_checked() {
        let cfg = ServeConfig::from_args(&serve_args(&[])).unwrap();
        assert!(cfg.metrics.options.per_job);
        assert_eq!(cfg.metrics.options.grace, Duration::from_secs(120));
        assert!(cfg.metrics.token.is_none());
        let cfg = ServeConfig::from_args(&serve_args(&[
            "--per-job-metrics=false",
            "--metrics-grace",
            "90s",
            "--metrics-token",
            "0123456789abcdef0123",
        ]))
        .unwrap();
        assert!(!cfg.metrics.options.per_job);
        assert_eq!(cfg.metrics.options.grace, Duration::from_secs(90));
        assert_eq!(format!("{:?}", cfg.metrics.token), "Some(***)");
        let err = ServeConfig::from_args(&serve_args(&["--metrics-token", "short"])).unwrap_err();
        assert!(err.to_string().contains("JOBSCOPE_METRICS_TOKEN"), "{err}");
        let err =
            parse_for_test::<ServeArgs>(&["serve", "--metrics-grace", "2 fortnights"]).unwrap_err();
        assert!(err.to_string().contains("--metrics-grace"), "{err}");
        let err = ServeConfig::from_args(&serve_args(&["--metrics-grace", "0s"])).unwrap_err();
        assert!(err.to_string().contains("--metrics-grace"), "{err}");
        assert_eq!(
            crate::domain::duration::parse_duration("1h").unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            crate::domain::duration::parse_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert!(crate::domain::duration::parse_duration("-1s").is_err());
    }

    #[test]
    fn allowed_origins_are_normalised_and_checked() {
        let cfg = ServeConfig::from_args(&serve_args(&[
            "--allowed-origins",
            "https://Dash.example.org/,http://localhost:3000,",
        ]))
        .unwrap();
        assert_eq!(
            cfg.allowed_origins,
            ["https://dash.example.org", "http://localhost:3000"]
        );
        assert!(ServeConfig::from_args(&serve_args(&[]))
            .unwrap()
            .allowed_origins
            .is_empty());
        let err = ServeConfig::from_args(&serve_args(&["--allowed-origins", "dash.example.org"]))
            .unwrap_err();
        assert!(
            err.to_string().contains("JOBSCOPE_ALLOWED_ORIGINS"),
            "{err}"
        );
        let err = ServeConfig::from_args(&serve_args(&["--allowed-origins", "https://a.org/path"]))
            .unwrap_err();
        assert!(err.to_string().contains("--allowed-origins"), "{err}");
    }

    #[test]
    fn tokens_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("tokens");
        std::fs::write(
            &good,
            "# roles\nadmin s3cret-admin-token\nhook hook-token-0123456\n",
        )
        .unwrap();
        let cfg = ServeConfig::from_args(&serve_args(&[
            "--tokens-file",
            good.to_str().unwrap(),
            "--host",
            "0.0.0.0",
        ]))
        .unwrap();
        assert!(cfg.tokens.is_some());
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "wizard abcdefghijklmnop\n").unwrap();
        let err = ServeConfig::from_args(&serve_args(&["--tokens-file", bad.to_str().unwrap()]))
            .unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(
            !err.to_string().contains("abcdefghijklmnop"),
            "a token leaked into an error: {err}"
        );
        let missing = dir.path().join("missing");
        assert!(
            ServeConfig::from_args(&serve_args(&["--tokens-file", missing.to_str().unwrap()]))
                .is_err()
        );
    }
}
