//! `jobscope hook prolog|epilog`: the Slurm hook client. It reads the job from the `SLURM_*`
//! environment ([`event`]), posts `job-started`/`job-finished` with a short timeout and the
//! `hook` token, and spools what it could not deliver ([`crate::spool`]); the next hook run, and
//! `jobscope agent` through [`deliver_spooled`], send the spool oldest first.
//!
//! Two rules from Slurm shape it: a Prolog that exits non-zero drains the node, so [`run`]
//! always returns and the process exits 0, whatever happens (bad input, dead server, full disk,
//! a panic); and Slurm waits for the Prolog before the job starts, so every network wait is
//! bounded by the timeout (at most one timeout for the backlog and one for the event itself).
//!
//! A spooled event is deleted only once the server took it: a 2xx, or a 4xx that can never
//! succeed (the event itself is bad: any 4xx but those below), which is logged and dropped.
//! 401, 403, 408 and 429 are configuration or load problems an admin can fix, and 5xx and
//! network errors are transient: those events stay, and the pass stops (the rest would fail
//! alike). A 404 (an epilog without a user for a job whose prolog is still in another node's
//! spool) concerns that event only: it stays for up to [`MAX_NOT_FOUND_AGE`] and the pass
//! goes on with the next.

pub mod config;
pub mod event;
/// Moved to `domain` (the Slurm backend parses host lists too); kept here by its old path.
pub use crate::domain::nodelist;

use crate::client::{self, ApiClient, Call, ClientOptions};
use crate::log_safe::Esc;
use crate::spool::{PushOutcome, Rejected, Spool, SpoolLimits, WhenFull};
use config::HookArgs;
use config::HookConfig;
use event::Event;
use std::path::Path;
use std::time::{Duration, Instant};

pub use event::HookKind;

/// Bounds of the hook spool: lifecycle events are small (~300 bytes) and the first ones of an
/// outage matter most, so a full spool refuses new events rather than dropping old ones.
pub const SPOOL_LIMITS: SpoolLimits = SpoolLimits {
    max_records: 20_000,
    max_bytes: 32 << 20,
    when_full: WhenFull::RejectNew,
};

/// How long a spooled event the server answers 404 for is kept (its job's prolog may still be
/// on its way from another spool).
pub const MAX_NOT_FOUND_AGE: Duration = Duration::from_secs(24 * 3600);

/// Opens (creating 0700 if needed) the hook spool in `dir`.
pub fn open_spool(dir: &Path) -> std::io::Result<Spool> {
    Spool::open(dir, SPOOL_LIMITS)
}

/// What the server did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// 2xx: recorded (or already known).
    Accepted,
    /// A 4xx that will never succeed: the event is bad. Drop it.
    Refused(u16, String),
    /// 404: the server does not know the job (yet). Keep this one, try the others.
    NotFound,
    /// Network error, 5xx, or a 4xx an admin can fix: keep it for later.
    Failed(String),
}

/// HTTP client for the lifecycle endpoints ([`crate::client`], [`Call::Lifecycle`]'s retries).
#[derive(Debug, Clone)]
pub struct HookClient {
    api: std::sync::Arc<ApiClient>,
}

impl HookClient {
    /// `server` is the base URL; `timeout` bounds each request, connection included.
    pub fn new(server: &str, token: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        let options = ClientOptions {
            timeout: Some(timeout),
            connect_timeout: timeout,
            user_agent: Some(concat!("jobscope-hook/", env!("CARGO_PKG_VERSION"))),
        };
        let api = ApiClient::new(client::server_url(server)?, token.as_deref(), options)?;
        Ok(HookClient {
            api: std::sync::Arc::new(api),
        })
    }

    /// Client for a resolved hook configuration (reads the token file).
    pub fn from_config(cfg: &HookConfig) -> anyhow::Result<Self> {
        HookClient::new(
            &cfg.server,
            read_token(cfg.token_file.as_deref()),
            cfg.timeout,
        )
    }

    /// POSTs one event.
    pub async fn post(&self, event: &Event) -> Delivery {
        let request = self
            .api
            .post(self.api.url_of_path(&event.path))
            .json(&event.body);
        match request.send().await {
            Err(e) => Delivery::Failed(client::describe(&e)),
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    Delivery::Accepted
                } else if status == reqwest::StatusCode::NOT_FOUND {
                    Delivery::NotFound
                } else if !Call::Lifecycle.retry(status) {
                    let text = resp.text().await.unwrap_or_default();
                    Delivery::Refused(status.as_u16(), text.chars().take(300).collect())
                } else {
                    Delivery::Failed(format!("HTTP {}", status.as_u16()))
                }
            }
        }
    }
}

/// The token file, read by [`crate::token_file`]'s rule. A file that cannot be read, or holds
/// no token, is logged and the request sent without a token (the server answers 401 and the
/// event is spooled until the file is fixed). The token itself is never logged.
pub fn read_token(path: Option<&Path>) -> Option<String> {
    let path = path?;
    match crate::token_file::read(path) {
        Ok(token) => Some(token),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "sending without a token");
            None
        }
    }
}

/// What one pass over the spool did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub delivered: usize,
    /// Refused by the server for good, or unreadable: deleted.
    pub dropped: usize,
    /// Still waiting.
    pub remaining: usize,
    /// Why the pass stopped before the spool was empty: the server is unreachable, the time
    /// budget ran out, or another process is draining.
    pub stopped: Option<String>,
}

/// Delivers spooled events oldest first until the spool is empty, a delivery fails (the server
/// is down: the rest would fail too) or `budget` is spent. Each event is deleted only after the
/// server accepted or permanently refused it. Another process draining the same spool makes
/// this a no-op (it delivers them). For `jobscope agent` and the hook itself.
pub async fn deliver_spooled(spool: &Spool, client: &HookClient, budget: Duration) -> DrainReport {
    let deadline = Instant::now() + budget;
    let mut report = DrainReport::default();
    let guard = match spool.try_drain() {
        Ok(Some(g)) => g,
        Ok(None) => {
            report.stopped = Some("another process is draining the spool".into());
            report.remaining = spool.depth().map(|d| d.records).unwrap_or(0);
            return report;
        }
        Err(e) => {
            report.stopped = Some(format!("cannot lock the spool: {e}"));
            return report;
        }
    };
    let entries: Vec<_> = match spool.oldest_first() {
        Ok(it) => it.collect(),
        Err(e) => {
            report.stopped = Some(format!("cannot list the spool: {e}"));
            return report;
        }
    };
    let total = entries.len();
    for (i, entry) in entries.iter().enumerate() {
        if Instant::now() >= deadline {
            report.stopped = Some("time budget spent".into());
            report.remaining += total - i;
            break;
        }
        let payload = match spool.read(entry) {
            Ok(Some(p)) => p,
            Ok(None) => continue, // gone or damaged (moved aside by read)
            Err(e) => {
                report.stopped = Some(format!("cannot read {}: {e}", entry.name()));
                report.remaining += total - i;
                break;
            }
        };
        let event = match serde_json::from_slice::<Event>(&payload) {
            Ok(ev) if ev.path == HookKind::Prolog.path() || ev.path == HookKind::Epilog.path() => {
                ev
            }
            _ => {
                tracing::warn!(
                    record = entry.name(),
                    "spooled record is not a lifecycle event; dropped"
                );
                let _ = spool.remove(entry);
                report.dropped += 1;
                continue;
            }
        };
        match client.post(&event).await {
            Delivery::Accepted => {
                tracing::info!(job_id = %Esc(&event.job_id), path = %event.path, "spooled event delivered");
                report.delivered += 1;
            }
            Delivery::Refused(status, body) => {
                tracing::warn!(job_id = %Esc(&event.job_id), path = %event.path, status, body = %Esc(&body), "server refused a spooled event; dropped");
                report.dropped += 1;
            }
            Delivery::NotFound => {
                let expired = entry
                    .pushed_at()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > MAX_NOT_FOUND_AGE);
                if !expired {
                    report.remaining += 1;
                    continue;
                }
                tracing::warn!(job_id = %Esc(&event.job_id), path = %event.path, "server still does not know the job after a day; spooled event dropped");
                report.dropped += 1;
            }
            Delivery::Failed(reason) => {
                report.stopped = Some(reason);
                report.remaining += total - i;
                break;
            }
        }
        if let Err(e) = spool.remove(entry) {
            // Delivered but not deleted: it will be sent again, and the server absorbs repeats.
            tracing::warn!(record = entry.name(), error = %e, "cannot delete a delivered spool record");
        }
    }
    drop(guard);
    report
}

/// Runs one hook invocation. Never fails: every problem is logged (stderr) and the caller exits 0.
pub async fn run(args: HookArgs) {
    // A panic must not become a non-zero exit: run the work as a task and swallow its failure.
    let handle = tokio::spawn(run_inner(args));
    if let Err(e) = handle.await {
        tracing::error!(error = %e, "hook failed unexpectedly; exiting 0 so Slurm does not drain the node");
    }
}

async fn run_inner(args: HookArgs) {
    let started = Instant::now();
    let kind = args.kind;
    let (cfg, warnings) = config::resolve(&args, &|p| std::fs::read_to_string(p));
    for w in &warnings {
        tracing::warn!("config: {w}");
    }
    let vendor = cfg.gpu_vendor.clone();
    let built = event::build(
        kind,
        &|k| std::env::var(k).ok(),
        chrono::Utc::now(),
        &|| vendor.clone().unwrap_or_else(guess_gpu_vendor),
        &user_of_uid,
    );
    let (event, notes) = match built {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no event sent");
            return;
        }
    };
    for n in &notes.0 {
        tracing::warn!(job_id = %Esc(&event.job_id), "{n}");
    }
    let spool = match open_spool(&cfg.spool_dir) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(dir = %cfg.spool_dir.display(), error = %e, "cannot open the spool; undeliverable events will be lost");
            None
        }
    };
    let client = match HookClient::from_config(&cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot build the HTTP client");
            spool_event(spool.as_ref(), &event);
            return;
        }
    };

    // The backlog first, so a job's events arrive in order; if the server is down that shows
    // here and the new event goes straight to the spool (one timeout in all, not two).
    let mut server_down = None;
    if let Some(spool) = &spool {
        if spool.depth().map(|d| d.records > 0).unwrap_or(false) {
            let report = deliver_spooled(spool, &client, cfg.timeout).await;
            tracing::info!(
                delivered = report.delivered,
                dropped = report.dropped,
                remaining = report.remaining,
                "spool drained"
            );
            if report.delivered == 0 && report.remaining > 0 {
                if let Some(reason) = report.stopped.filter(|r| !r.contains("another process")) {
                    server_down = Some(reason);
                }
            }
        }
    }
    let delivery = match server_down {
        Some(reason) => Delivery::Failed(reason),
        None => client.post(&event).await,
    };
    match delivery {
        Delivery::Accepted => {
            tracing::debug!(job_id = %Esc(&event.job_id), path = %event.path, elapsed_ms = started.elapsed().as_millis() as u64, "event delivered")
        }
        Delivery::Refused(status, body) => {
            tracing::warn!(job_id = %Esc(&event.job_id), path = %event.path, status, body = %Esc(&body), "server refused the event; not spooled (it would never be accepted)")
        }
        Delivery::NotFound => {
            tracing::warn!(job_id = %Esc(&event.job_id), path = %event.path, "server does not know the job yet; spooling the event");
            spool_event(spool.as_ref(), &event);
        }
        Delivery::Failed(reason) => {
            tracing::warn!(job_id = %Esc(&event.job_id), path = %event.path, reason = %reason, "event not delivered; spooling it");
            spool_event(spool.as_ref(), &event);
        }
    }
}

fn spool_event(spool: Option<&Spool>, event: &Event) {
    let Some(spool) = spool else {
        tracing::error!(job_id = %Esc(&event.job_id), "event lost: no spool");
        return;
    };
    let payload = match serde_json::to_vec(event) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(job_id = %Esc(&event.job_id), error = %e, "event lost: cannot encode it");
            return;
        }
    };
    match spool.push(&payload) {
        Ok(PushOutcome::Stored { .. }) => {}
        Ok(PushOutcome::Rejected(Rejected::Full)) => {
            tracing::error!(job_id = %Esc(&event.job_id), dir = %spool.dir().display(), "event lost: the spool is full")
        }
        Ok(PushOutcome::Rejected(Rejected::TooLarge)) => {
            tracing::error!(job_id = %Esc(&event.job_id), "event lost: larger than the spool")
        }
        Err(e) => {
            tracing::error!(job_id = %Esc(&event.job_id), dir = %spool.dir().display(), error = %e, "event lost: cannot write the spool")
        }
    }
}

/// `amd` on a node with AMD's compute device and no NVIDIA control device, else `nvidia`.
fn guess_gpu_vendor() -> String {
    let exists = |p: &str| Path::new(p).exists();
    if exists("/dev/kfd") && !exists("/dev/nvidiactl") {
        "amd".into()
    } else {
        "nvidia".into()
    }
}

/// The user name of `uid` from /etc/passwd (hooks have no NSS-aware tool at hand, and a prolog
/// must name a user). Users only in LDAP/SSSD are not found; Slurm sets SLURM_JOB_USER anyway.
fn user_of_uid(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd_lookup(&passwd, uid)
}

fn passwd_lookup(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use crate::client::Call;

    fn refused_for_good(status: u16) -> bool {
        !Call::Lifecycle.retry(reqwest::StatusCode::from_u16(status).unwrap())
    }

    #[test]
    fn a_4xx_is_final_but_for_fixable_setup_and_load() {
        for kept in [401, 403, 404, 408, 429, 500, 502, 503] {
            assert!(!refused_for_good(kept), "{kept}");
        }
        for dropped in [400, 405, 409, 410, 411, 413, 414, 415, 422, 431] {
            assert!(refused_for_good(dropped), "{dropped}");
        }
    }

    use super::*;

    #[test]
    fn passwd_lines() {
        let p = "root:x:0:0:root:/root:/bin/bash\nbroken\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(passwd_lookup(p, 1000).as_deref(), Some("alice"));
        assert_eq!(passwd_lookup(p, 0).as_deref(), Some("root"));
        assert_eq!(passwd_lookup(p, 7), None);
    }
}
