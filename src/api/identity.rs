//! Who a request comes from, and what that lets it see.
//!
//! An identity is either a role from the tokens file (`hook`, `agent`, `reader`, `admin`, with
//! their meaning unchanged) or a person: `user:NAME`, from a `user:NAME TOKEN` line of the tokens
//! file or a Slurm JWT (see [`super::jwt`]). A user is narrower than a reader: their own jobs
//! (another user's job is indistinguishable from a missing one), nodes, partitions and the
//! cluster stream; never `/metrics`, `/v1/stream/status` or a write. With
//! `--users-see-all-jobs` they may also list every job's lifecycle (Slurm's `PrivateData=jobs`
//! turned off), but samples and audit trails stay their own.

use super::auth::Role;
use super::error::ApiError;
use crate::domain::Job;
use serde_json::{json, Value};
use std::fmt;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No tokens are configured: everything is open, as before identities existed.
    Open,
    Role(Role),
    User(String),
}

impl Identity {
    /// The user name of a person, `None` for roles (who see every job).
    pub fn user(&self) -> Option<&str> {
        match self {
            Identity::User(name) => Some(name),
            _ => None,
        }
    }

    /// What the audit log records as the actor: `admin`, `role:hook`, `user:alice`, or `open`
    /// (no authentication configured).
    pub fn actor(&self) -> String {
        self.to_string()
    }

    /// The actor an audit row records: `None` when nothing was authenticated.
    pub fn audit_actor(&self) -> Option<String> {
        (*self != Identity::Open).then(|| self.actor())
    }

    /// Whether this identity may see job `job`'s lifecycle (its row, its state changes).
    pub fn may_see_job(&self, job: &Job, users_see_all_jobs: bool) -> bool {
        self.may_see_owner(&job.user, users_see_all_jobs)
    }

    /// Whether a job owned by `owner` is visible; `all_lifecycles` is `--users-see-all-jobs`
    /// for lifecycle reads and `false` for samples, audit and output.
    pub fn may_see_owner(&self, owner: &str, all_lifecycles: bool) -> bool {
        match self {
            Identity::User(name) => all_lifecycles || name == owner,
            _ => true,
        }
    }

    /// A job of someone else's answers exactly as a missing job does.
    pub fn check_job(&self, job: &Job, all_lifecycles: bool) -> Result<(), ApiError> {
        if self.may_see_owner(&job.user, all_lifecycles) {
            Ok(())
        } else {
            Err(ApiError::job_not_found())
        }
    }

    /// `GET /v1/whoami`: the identity and what it may do, for clients that adapt.
    pub fn describe(&self, users_see_all_jobs: bool) -> Value {
        let (kind, name, can) = match self {
            Identity::Open => (
                "open",
                None,
                vec!["read", "write", "hook", "samples", "metrics"],
            ),
            Identity::Role(Role::Admin) => (
                "role",
                Some("admin"),
                vec![
                    "read",
                    "write",
                    "hook",
                    "samples",
                    "metrics",
                    "stream_status",
                ],
            ),
            Identity::Role(Role::Reader) => ("role", Some("reader"), vec!["read", "metrics"]),
            Identity::Role(Role::Hook) => ("role", Some("hook"), vec!["hook"]),
            Identity::Role(Role::Agent) => ("role", Some("agent"), vec!["samples", "node_jobs"]),
            Identity::User(name) => ("user", Some(name.as_str()), vec!["read_own_jobs"]),
        };
        json!({
            "identity": self.to_string(),
            "kind": kind,
            "name": name,
            "can": can,
            "jobs_visible": match self {
                Identity::User(_) if users_see_all_jobs => "all_lifecycles_own_samples",
                Identity::User(_) => "own",
                _ => "all",
            },
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Open => f.write_str("open"),
            Identity::Role(Role::Admin) => f.write_str("admin"),
            Identity::Role(role) => write!(f, "role:{}", role.as_str()),
            Identity::User(name) => write!(f, "user:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_and_scope() {
        assert_eq!(Identity::Role(Role::Admin).actor(), "admin");
        assert_eq!(Identity::Role(Role::Hook).actor(), "role:hook");
        assert_eq!(Identity::User("alice".into()).actor(), "user:alice");
        let alice = Identity::User("alice".into());
        assert!(alice.may_see_owner("alice", false));
        assert!(!alice.may_see_owner("bob", false));
        assert!(alice.may_see_owner("bob", true));
        assert!(Identity::Role(Role::Reader).may_see_owner("bob", false));
        assert_eq!(alice.describe(false)["jobs_visible"], "own");
    }
}
