//! Scheduler partitions (Slurm's queues) as jobscope keeps and serves them
//! (`GET /v1/partitions`, the `partitions` stream): their state, nodes, limits and how many jobs
//! run and wait in each. Partitions come only from a scheduler backend; jobscope never invents one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Whether a partition takes and runs jobs, as `sinfo`'s AVAIL column says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionState {
    /// Takes new jobs and runs them.
    Up,
    /// Takes new jobs, starts none.
    Down,
    /// Takes no new jobs, runs what it has.
    Drain,
    /// Takes no new jobs and starts none.
    Inactive,
    /// The scheduler did not say (slurmrestd v0.0.36 has no partition state).
    Unknown,
}

impl PartitionState {
    pub const ALL: [PartitionState; 5] = [
        PartitionState::Up,
        PartitionState::Down,
        PartitionState::Drain,
        PartitionState::Inactive,
        PartitionState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PartitionState::Up => "up",
            PartitionState::Down => "down",
            PartitionState::Drain => "drain",
            PartitionState::Inactive => "inactive",
            PartitionState::Unknown => "unknown",
        }
    }

    /// Slurm's name of the state (`UP`, `DOWN`, `DRAIN`, `INACTIVE`), any case.
    pub fn from_slurm(raw: &str) -> PartitionState {
        let raw = raw.trim().to_ascii_lowercase();
        raw.parse().unwrap_or(PartitionState::Unknown)
    }
}

impl fmt::Display for PartitionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PartitionState {
    type Err = super::job::UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PartitionState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or(super::job::UnknownState)
    }
}

/// Per-job limits of a partition. `None`: no limit (or the scheduler did not say).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLimits {
    /// Longest time limit a job may ask for (Slurm's `MaxTime`), minutes.
    #[serde(default)]
    pub max_time_minutes: Option<i64>,
    /// Time limit of a job that asks for none (`DefaultTime`), minutes.
    #[serde(default)]
    pub default_time_minutes: Option<i64>,
    /// Most nodes one job may use (`MaxNodes`).
    #[serde(default)]
    pub max_nodes_per_job: Option<i64>,
}

/// A partition as the API shows it. `updated_at` is when jobscope last saw it change; the store
/// stamps it, whatever a caller puts there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    pub name: String,
    pub state: PartitionState,
    /// Jobs that name no partition go here.
    #[serde(default)]
    pub is_default: bool,
    /// Its nodes, expanded from the scheduler's compressed list.
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub total_nodes: Option<i64>,
    #[serde(default)]
    pub total_cpus: Option<i64>,
    #[serde(default)]
    pub limits: PartitionLimits,
    /// Jobs running (or completing, or suspended) in it, as the scheduler last listed them.
    #[serde(default)]
    pub jobs_running: i64,
    /// Jobs waiting for it; a job queued for several partitions counts in each.
    #[serde(default)]
    pub jobs_pending: i64,
    pub updated_at: DateTime<Utc>,
}

impl Partition {
    /// Whether `other` says something different about the partition (its stamp aside).
    pub fn differs_from(&self, other: &Partition) -> bool {
        let mut other = other.clone();
        other.updated_at = self.updated_at;
        *self != other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_slurm_names_map() {
        for s in PartitionState::ALL {
            assert_eq!(s.as_str().parse::<PartitionState>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(PartitionState::from_slurm("UP"), PartitionState::Up);
        assert_eq!(PartitionState::from_slurm(" Drain "), PartitionState::Drain);
        assert_eq!(
            PartitionState::from_slurm("INACTIVE"),
            PartitionState::Inactive
        );
        assert_eq!(
            PartitionState::from_slurm("SLEEPY"),
            PartitionState::Unknown
        );
        assert!(
            "UP".parse::<PartitionState>().is_err(),
            "the API's names are lower case"
        );
    }

    #[test]
    fn a_new_stamp_alone_is_no_difference() {
        let a = Partition {
            name: "debug".into(),
            state: PartitionState::Up,
            is_default: true,
            nodes: vec!["n1".into()],
            total_nodes: Some(1),
            total_cpus: Some(2),
            limits: PartitionLimits::default(),
            jobs_running: 1,
            jobs_pending: 0,
            updated_at: Utc::now(),
        };
        let mut b = a.clone();
        b.updated_at = a.updated_at + chrono::Duration::seconds(30);
        assert!(!a.differs_from(&b));
        b.jobs_pending = 2;
        assert!(a.differs_from(&b));
    }
}
