//! Settings of `jobscope hook`: defaults, then `/etc/jobscope/hook.toml` (or `--config`), then
//! flags (or their `JOBSCOPE_*` environment variables), the later winning.
//!
//! Slurm runs hooks with an empty environment, so the file is the usual place. A hook must never
//! fail because of its configuration: a missing default file is normal, and a malformed file,
//! an unknown key or a bad value is logged and its default used; the event is still sent or
//! spooled.

use crate::domain::duration::parse_duration;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG: &str = "/etc/jobscope/hook.toml";
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
pub const DEFAULT_SPOOL_DIR: &str = "/var/spool/jobscope";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest timeout accepted: Slurm waits for the Prolog before it starts the job.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HookConfig {
    /// Base URL without a trailing slash.
    pub server: String,
    pub token_file: Option<PathBuf>,
    pub timeout: Duration,
    pub spool_dir: PathBuf,
    /// `gpu_vendor` to report for the job's GPUs; `None`: guessed from /dev.
    pub gpu_vendor: Option<String>,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            server: DEFAULT_SERVER.into(),
            token_file: None,
            timeout: DEFAULT_TIMEOUT,
            spool_dir: DEFAULT_SPOOL_DIR.into(),
            gpu_vendor: None,
        }
    }
}

/// Resolves the settings; the second value holds what was wrong, for the log.
pub fn resolve(
    args: &HookArgs,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> (HookConfig, Vec<String>) {
    let mut cfg = HookConfig::default();
    let mut warnings = Vec::new();
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match read(&path) {
        Ok(text) => apply_file(&mut cfg, &path, &text, &mut warnings),
        // Only a file asked for by name is missed; the default may well not exist.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && args.config.is_none() => {}
        Err(e) => warnings.push(format!("{}: {e}; using defaults", path.display())),
    }
    let mut set = |key: &str, value: Option<&str>, cfg: &mut HookConfig| {
        if let Some(v) = value {
            if let Err(e) = set_key(cfg, key, v) {
                warnings.push(format!("--{}: {e}", key.replace('_', "-")));
            }
        }
    };
    set("server", args.server.as_deref(), &mut cfg);
    set("timeout", args.timeout.as_deref(), &mut cfg);
    set("gpu_vendor", args.gpu_vendor.as_deref(), &mut cfg);
    if let Some(p) = &args.token_file {
        cfg.token_file = Some(p.clone());
    }
    if let Some(p) = &args.spool_dir {
        cfg.spool_dir = p.clone();
    }
    (cfg, warnings)
}

fn apply_file(cfg: &mut HookConfig, path: &Path, text: &str, warnings: &mut Vec<String>) {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("malformed TOML");
            warnings.push(format!("{}: {first}; using defaults", path.display()));
            return;
        }
    };
    for (key, value) in table {
        let result = match (key.as_str(), &value) {
            ("token_file", toml::Value::String(s)) => {
                cfg.token_file = (!s.is_empty()).then(|| PathBuf::from(s));
                Ok(())
            }
            ("spool_dir", toml::Value::String(s)) if !s.is_empty() => {
                cfg.spool_dir = PathBuf::from(s);
                Ok(())
            }
            ("timeout", toml::Value::Integer(n)) => set_key(cfg, "timeout", &n.to_string()),
            ("timeout", toml::Value::Float(f)) => set_key(cfg, "timeout", &f.to_string()),
            ("server" | "timeout" | "gpu_vendor", toml::Value::String(s)) => set_key(cfg, &key, s),
            ("server" | "token_file" | "timeout" | "spool_dir" | "gpu_vendor", _) => {
                Err(format!("expected a string, not {}", value.type_str()))
            }
            _ => Err(
                "unknown key (known: server, token_file, timeout, spool_dir, gpu_vendor)".into(),
            ),
        };
        if let Err(e) = result {
            warnings.push(format!("{}: {key}: {e}; ignored", path.display()));
        }
    }
}

fn set_key(cfg: &mut HookConfig, key: &str, value: &str) -> Result<(), String> {
    match key {
        "server" => {
            let v = value.trim().trim_end_matches('/');
            let rest = v
                .strip_prefix("http://")
                .or_else(|| v.strip_prefix("https://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
                    cfg.server = v.to_owned();
                    Ok(())
                }
                _ => Err(format!("{value:?} is not an http:// or https:// URL")),
            }
        }
        "timeout" => {
            let t = parse_duration(value)?;
            if t.is_zero() || t > MAX_TIMEOUT {
                return Err(format!("{value:?} must be more than 0 and at most 60s"));
            }
            cfg.timeout = t;
            Ok(())
        }
        "gpu_vendor" => match value {
            "nvidia" | "amd" | "mixed" | "none" => {
                cfg.gpu_vendor = Some(value.into());
                Ok(())
            }
            _ => Err(format!("{value:?}: expected nvidia, amd, mixed or none")),
        },
        _ => Err(format!("unknown key {key}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn args(extra: &[&str]) -> HookArgs {
        let mut argv = vec!["hook", "prolog"];
        argv.extend_from_slice(extra);
        crate::config::args::parse_for_test(&argv).unwrap()
    }

    fn files(map: &[(&str, &str)]) -> impl Fn(&Path) -> io::Result<String> {
        let map: Vec<(PathBuf, String)> = map
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        move |p: &Path| {
            map.iter()
                .find(|(q, _)| q == p)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    #[test]
    fn defaults_without_any_file() {
        let (cfg, warnings) = resolve(&args(&[]), &files(&[]));
        assert_eq!(cfg, HookConfig::default());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.timeout, Duration::from_secs(2));
        assert_eq!(cfg.spool_dir, PathBuf::from("/var/spool/jobscope"));
    }

    #[test]
    fn the_file_overrides_defaults_and_flags_override_the_file() {
        let toml = r#"
            server = "http://jobscope.example:8080/"
            token_file = "/etc/jobscope/hook.token"
            timeout = "1.5s"
            spool_dir = "/var/spool/js"
        "#;
        let read = files(&[(DEFAULT_CONFIG, toml)]);
        let (cfg, warnings) = resolve(&args(&[]), &read);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.server, "http://jobscope.example:8080");
        assert_eq!(cfg.token_file, Some("/etc/jobscope/hook.token".into()));
        assert_eq!(cfg.timeout, Duration::from_millis(1500));
        assert_eq!(cfg.spool_dir, PathBuf::from("/var/spool/js"));

        let (cfg, warnings) = resolve(
            &args(&[
                "--server",
                "https://other:9",
                "--timeout",
                "500ms",
                "--spool-dir",
                "/tmp/s",
            ]),
            &read,
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.server, "https://other:9");
        assert_eq!(cfg.timeout, Duration::from_millis(500));
        assert_eq!(cfg.spool_dir, PathBuf::from("/tmp/s"));
        assert_eq!(
            cfg.token_file,
            Some("/etc/jobscope/hook.token".into()),
            "kept from the file"
        );
    }

    #[test]
    fn another_config_file_by_flag() {
        let read = files(&[
            ("/site/hook.toml", "timeout = 3\n"),
            (DEFAULT_CONFIG, "timeout = 5\n"),
        ]);
        let (cfg, _) = resolve(&args(&["--config", "/site/hook.toml"]), &read);
        assert_eq!(cfg.timeout, Duration::from_secs(3));
        // A file named on the command line that is missing is worth a warning.
        let (cfg, warnings) = resolve(&args(&["--config", "/nope.toml"]), &read);
        assert_eq!(cfg, HookConfig::default());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }

    #[test]
    fn malformed_files_and_bad_values_fall_back_to_defaults() {
        let (cfg, warnings) = resolve(
            &args(&[]),
            &files(&[(DEFAULT_CONFIG, "server = \"http://x\n[")]),
        );
        assert_eq!(cfg, HookConfig::default());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("using defaults"), "{warnings:?}");

        let toml = "server = \"ftp://x\"\ntimeout = \"soon\"\nspool_dir = 3\ncolour = \"red\"\ntoken_file = \"/t\"\n";
        let (cfg, warnings) = resolve(&args(&[]), &files(&[(DEFAULT_CONFIG, toml)]));
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert_eq!(cfg.server, DEFAULT_SERVER);
        assert_eq!(cfg.timeout, DEFAULT_TIMEOUT);
        assert_eq!(cfg.spool_dir, PathBuf::from(DEFAULT_SPOOL_DIR));
        assert_eq!(cfg.token_file, Some("/t".into()), "good keys still apply");

        let (cfg, warnings) = resolve(&args(&["--timeout", "0", "--server", "x"]), &files(&[]));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert_eq!(cfg, HookConfig::default());
        let (_, warnings) = resolve(&args(&["--timeout", "61s"]), &files(&[]));
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("NaN").is_err());
    }
}
