//! The Slurm backend (`serve --scheduler slurm`): slurmrestd is the truth about how jobs end.
//!
//! The hooks see a cancelled or timed-out job as a success, and an epilog or prolog can be lost
//! (node crash, full spool). Every `--reconcile-interval` the [`reconcile`] pass reads Slurm's job
//! list and, with an audit row by `slurm-reconciler`:
//! - confirms final states: a job Slurm has finished gets Slurm's state, exit code and signal,
//!   whether it is still running in jobscope (its epilog never arrived) or an epilog already
//!   finished it with a guess;
//! - creates jobs whose prolog never arrived (running, or finished having run);
//! - finalizes jobs jobscope still has as running but Slurm no longer knows (it forgets finished
//!   jobs after `MinJobAge`) as `failed` with raw state `VANISHED`: how they ended is lost.
//!
//! [`client`] speaks to slurmrestd over http(s) or a unix socket (`unix:/path`), with JWT headers
//! from `--slurmrestd-user` and `--slurmrestd-token-file` (re-read when the file changes), and
//! picks the newest API version the server offers from v0.0.38 (Debian's 22.05) up.
//! Not built yet: partitions, the node feed and health degradation while slurmrestd is away.

pub mod client;
pub mod jobs;
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
    pub interval: Duration,
}
