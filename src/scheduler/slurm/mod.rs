//! The Slurm backend (`serve --scheduler slurm`): slurmrestd is the truth about how jobs end.
//!
//! The hooks see a cancelled or timed-out job as a success, and an epilog or prolog can be lost
//! (node crash, full spool). Every `--reconcile-interval` the [`reconcile`] pass reads Slurm's job
//! list and, with an audit row by `slurm-reconciler`:
//! - confirms final states: a job Slurm has finished gets Slurm's state, exit code and signal,
//!   whether it is still running in jobscope (its epilog never arrived) or an epilog already
//!   finished it with a guess;
//! - creates jobs whose prolog never arrived (running, or finished having run);
//! - fills in what the hooks cannot know of a job's allocation, memory above all (no hook
//!   environment carries it; [`jobs`] says where slurmrestd has it), keeping the hooks' finer times;
//! - finalizes jobs jobscope still has as running but Slurm no longer knows (it forgets finished
//!   jobs after `MinJobAge`) as `failed` with raw state `VANISHED`: how they ended is lost.
//!
//! [`client`] speaks to slurmrestd over http(s) or a unix socket (`unix:/path`), with JWT headers
//! from `--slurmrestd-user` and `--slurmrestd-token-file` (re-read when the file changes), and
//! picks the newest API version the server offers from v0.0.38 (Debian's 22.05) up.
//! Each pass also reads Slurm's node list ([`nodes`]) and stores state, reason, partitions and,
//! where no live agent reports them, CPUs, memory and load; a node Slurm stops listing falls back
//! to what its agent says. It also keeps Slurm's partitions ([`partitions`]): state, nodes,
//! limits, and the jobs running and pending in each, counted from the same job list; a partition
//! Slurm no longer lists is deleted. Node and partition changes are events like any other
//! (`node_updated`, `partition_updated`, `partition_deleted`).
//!
//! While slurmrestd cannot be reached, [`SlurmHealth`] says so and `GET /v1/health` reports
//! `degraded`.

pub mod client;
pub mod jobs;
pub mod nodes;
pub mod partitions;
pub mod reconcile;

use std::path::PathBuf;
use std::time::Duration;

/// Settings of the Slurm backend, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmConfig {
    /// `http(s)://host:port` or `unix:/path/to/socket`.
    pub url: String,
    pub user: Option<String>,
    pub token_file: Option<PathBuf>,
    /// A token given as a value (`SLURM_AUTH_TOKEN`, the Go service's variable); the token
    /// file wins when both are set.
    pub token: Option<SlurmToken>,
    /// An API version to use instead of negotiating (`SLURM_API_VERSION`), one of
    /// [`client::VERSIONS`].
    pub version: Option<&'static str>,
    pub interval: Duration,
}

/// A slurmrestd token given as a value. `Debug` does not show it.
#[derive(Clone, PartialEq)]
pub struct SlurmToken(pub String);

impl std::fmt::Debug for SlurmToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlurmToken(<redacted>)")
    }
}

/// Whether the reconciler can reach slurmrestd, for `GET /v1/health`. Shared by the reconcile
/// loop (writer) and the API (reader); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SlurmHealth {
    problem: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl SlurmHealth {
    /// Why the Slurm backend is degraded, or `None` while slurmrestd answers.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }
}

/// A captured (or hand-written) slurmrestd response from `tests/fixtures/slurmrestd`, checked
/// to carry no errors.
#[cfg(test)]
pub(crate) fn fixture_body(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/tests/fixtures/slurmrestd/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let body: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(jobs::errors(&body).is_empty(), "{name}");
    body
}
