//! HTTP client for slurmrestd: transport (TCP or unix socket), JWT headers, version negotiation.

use super::jobs::{self, SlurmJob};
use super::SlurmConfig;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// API versions tried, newest first; the first one the server answers `ping` for is used.
/// v0.0.37 (the Go service's default, also offered by Debian's 22.05) comes last: on a
/// server that offers v0.0.38 too, that one says more (node flags, job flags).
pub const VERSIONS: &[&str] = &[
    "v0.0.44", "v0.0.43", "v0.0.42", "v0.0.41", "v0.0.40", "v0.0.39", "v0.0.38", "v0.0.37",
];

/// Limit of one request to slurmrestd.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("cannot reach slurmrestd at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("slurmrestd answered HTTP {status} for {path}: {detail}")]
    Status {
        status: u16,
        path: String,
        detail: String,
    },
    #[error("slurmrestd sent something that is not JSON for {path}: {reason}")]
    Decode { path: String, reason: String },
    #[error("slurmrestd at {url} offers none of the API versions jobscope speaks ({tried})")]
    NoVersion { url: String, tried: String },
    #[error("invalid slurmrestd URL {0:?}: expected http://host:port, https://... or unix:/path")]
    BadUrl(String),
}

/// The token file, re-read when its modification time changes (tokens from `scontrol token`
/// expire and are replaced in place).
#[derive(Debug)]
struct TokenFile {
    path: Option<PathBuf>,
    cached: Mutex<Option<(SystemTime, String)>>,
    /// Without a file: the token given as a value (`SLURM_AUTH_TOKEN`).
    fixed: Option<super::SlurmToken>,
}

impl TokenFile {
    fn current(&self) -> Option<String> {
        let Some(path) = self.path.as_ref() else {
            return self.fixed.as_ref().map(|t| t.0.clone());
        };
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(m), Some((seen, token))) = (mtime, cached.as_ref()) {
            if *seen == m {
                return Some(token.clone());
            }
        }
        match std::fs::read_to_string(path) {
            Ok(text) => {
                // `scontrol token` prints SLURM_JWT=...; accept that form too.
                let line = text.lines().next().unwrap_or("").trim();
                let token = line.strip_prefix("SLURM_JWT=").unwrap_or(line).to_owned();
                if let Some(m) = mtime {
                    *cached = Some((m, token.clone()));
                }
                Some(token)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the slurmrestd token file");
                cached.as_ref().map(|(_, t)| t.clone())
            }
        }
    }
}

/// A slurmrestd connection.
#[derive(Debug)]
pub struct SlurmRest {
    http: reqwest::Client,
    base: String,
    shown_url: String,
    user: Option<String>,
    token: TokenFile,
    /// `SLURM_API_VERSION`: the only version tried.
    pinned: Option<&'static str>,
    version: Mutex<Option<&'static str>>,
}

impl SlurmRest {
    pub fn new(cfg: &SlurmConfig) -> Result<SlurmRest, RestError> {
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("jobscope/", env!("CARGO_PKG_VERSION")));
        let url = cfg.url.trim().trim_end_matches('/');
        let base = if let Some(path) = url.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(RestError::BadUrl(cfg.url.clone()));
            }
            builder = builder.unix_socket(PathBuf::from(path));
            "http://slurmrestd".to_owned()
        } else if url.starts_with("http://") || url.starts_with("https://") {
            url.to_owned()
        } else {
            return Err(RestError::BadUrl(cfg.url.clone()));
        };
        let http = builder.build().map_err(|e| RestError::Unreachable {
            url: cfg.url.clone(),
            reason: e.to_string(),
        })?;
        Ok(SlurmRest {
            http,
            base,
            shown_url: cfg.url.clone(),
            user: cfg.user.clone(),
            token: TokenFile {
                path: cfg.token_file.clone(),
                cached: Mutex::new(None),
                fixed: cfg.token.clone(),
            },
            pinned: cfg.version,
            version: Mutex::new(None),
        })
    }

    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// The negotiated API version, if any.
    pub fn version(&self) -> Option<&'static str> {
        *self.version.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn get(&self, path: &str) -> Result<Value, RestError> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(user) = &self.user {
            req = req.header("X-SLURM-USER-NAME", user);
        }
        if let Some(token) = self.token.current() {
            req = req.header("X-SLURM-USER-TOKEN", token);
        }
        let resp = req.send().await.map_err(|e| RestError::Unreachable {
            url: self.shown_url.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| RestError::Unreachable {
            url: self.shown_url.clone(),
            reason: e.to_string(),
        })?;
        if !(200..300).contains(&status) {
            let parsed: Option<Value> = serde_json::from_str(&body).ok();
            let detail = parsed
                .as_ref()
                .map(jobs::errors)
                .filter(|e| !e.is_empty())
                .map(|e| e.join("; "))
                .unwrap_or_else(|| body.chars().take(200).collect());
            return Err(RestError::Status {
                status,
                path: path.to_owned(),
                detail,
            });
        }
        serde_json::from_str(&body).map_err(|e| RestError::Decode {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Finds the newest API version the server answers `ping` for. Authentication errors are
    /// returned at once (they would fail for every version).
    pub async fn negotiate(&self) -> Result<&'static str, RestError> {
        let pinned;
        let versions = match self.pinned {
            Some(v) => {
                pinned = [v];
                &pinned[..]
            }
            None => VERSIONS,
        };
        for v in versions {
            match self.get(&format!("/slurm/{v}/ping")).await {
                Ok(_) => {
                    *self.version.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
                    return Ok(v);
                }
                Err(RestError::Status { status, .. }) if status == 404 || status == 400 => continue,
                // 22.05's slurmrestd answers an unknown path with a JSON error and 500 or so;
                // only an authentication failure is worth stopping for.
                Err(
                    e @ RestError::Status {
                        status: 401 | 403, ..
                    },
                ) => return Err(e),
                Err(RestError::Status { .. }) | Err(RestError::Decode { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RestError::NoVersion {
            url: self.shown_url.clone(),
            tried: versions.join(", "),
        })
    }

    /// `GET /slurm/<version>/<what>`, negotiating the version first if none is yet.
    async fn get_current(&self, what: &str) -> Result<Value, RestError> {
        let v = match self.version() {
            Some(v) => v,
            None => self.negotiate().await?,
        };
        self.get(&format!("/slurm/{v}/{what}")).await
    }

    /// Every job slurmctld knows (running, pending and finished within `MinJobAge`).
    pub async fn jobs(&self) -> Result<Vec<SlurmJob>, RestError> {
        Ok(jobs::parse_jobs(&self.get_current("jobs").await?))
    }

    /// Every node slurmctld knows, as the store keeps them.
    pub async fn nodes(&self) -> Result<Vec<crate::store::SchedulerNode>, RestError> {
        Ok(super::nodes::parse_nodes(&self.get_current("nodes").await?))
    }

    /// Every partition slurmctld knows, without job counts (see [`super::partitions::count_jobs`]).
    pub async fn partitions(&self) -> Result<Vec<crate::domain::Partition>, RestError> {
        Ok(super::partitions::parse_partitions(
            &self.get_current("partitions").await?,
        ))
    }
}
