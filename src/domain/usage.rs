//! What a job and a node used, as stored and served: the agent-measured figures of a sample
//! ([`SampleDetail`], flattened into `MetricSample`) and the node resource ([`Node`]).
//!
//! Every figure is optional: `None` means "not measured" (no such controller, no such driver, a
//! file that could not be read), and is never replaced by a guess. Counters are cumulative since
//! the job's cgroup was created, so rates and efficiencies can be computed over any window.

use crate::domain::gpu::GpuReading;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// PSI `some` figures of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PressureFigures {
    /// Percent of wall time at least one task stalled, over the last 10 s.
    pub some_avg10: f64,
    /// Cumulative stall time, microseconds.
    pub some_total_usec: u64,
}

/// PSI of the job's cgroup, per resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<PressureFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<PressureFigures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<PressureFigures>,
}

impl Pressure {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none() && self.io.is_none()
    }
}

/// The figures of a sample beyond the Go service's four. Absent from JSON when unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleDetail {
    /// Node whose agent measured the sample (a multi-node job has one series per node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_user_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_system_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_throttled_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_nr_throttled: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_usage_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_anon_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_file_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_shmem_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_read_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_write_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_read_ops: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_write_ops: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<Pressure>,
    /// The job's devices on that node; empty when it holds none (or the node has no GPU source).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuReading>,
}

/// A node's state: the scheduler's word when one has spoken, otherwise derived from its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Idle,
    Allocated,
    Mixed,
    Down,
    Drained,
    Unknown,
}

impl NodeState {
    pub const ALL: [NodeState; 6] = [
        NodeState::Idle,
        NodeState::Allocated,
        NodeState::Mixed,
        NodeState::Down,
        NodeState::Drained,
        NodeState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Idle => "idle",
            NodeState::Allocated => "allocated",
            NodeState::Mixed => "mixed",
            NodeState::Down => "down",
            NodeState::Drained => "drained",
            NodeState::Unknown => "unknown",
        }
    }

    /// Without a scheduler: a node whose agent went silent is `unknown` (it may be down, or only
    /// its agent); otherwise it is `allocated` while it runs jobs and `idle` when it runs none.
    pub fn from_agent(stale: bool, running_jobs: i64) -> NodeState {
        if stale {
            NodeState::Unknown
        } else if running_jobs > 0 {
            NodeState::Allocated
        } else {
            NodeState::Idle
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NodeState {
    type Err = super::job::UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or(super::job::UnknownState)
    }
}

/// A compute node as the API shows it (`GET /v1/nodes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub state: NodeState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    #[serde(default)]
    pub partitions: Vec<String>,
    /// Slurm's node features (`Feature=` in slurm.conf); empty where no scheduler says.
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usage_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_5: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_15: Option<f64>,
    #[serde(default)]
    pub gpus: Vec<GpuReading>,
    /// Jobs the store has as running on this node.
    pub running_jobs: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_at: Option<DateTime<Utc>>,
    /// The agent's reporting interval, as it last said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_interval_seconds: Option<f64>,
    /// The agent has been silent for three of its intervals (or never reported).
    pub stale: bool,
    pub updated_at: DateTime<Utc>,
}

/// Silent intervals after which a node's agent counts as gone.
pub const STALE_AFTER_INTERVALS: f64 = 3.0;
/// Interval assumed for an agent that did not say its own.
pub const DEFAULT_REPORT_INTERVAL_SECONDS: f64 = 15.0;

/// Whether an agent that last reported at `last` every `interval` seconds is silent at `now`.
pub fn is_stale(last: Option<DateTime<Utc>>, interval: Option<f64>, now: DateTime<Utc>) -> bool {
    let Some(last) = last else { return true };
    let interval = interval
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(DEFAULT_REPORT_INTERVAL_SECONDS);
    let silent = (now - last).num_milliseconds() as f64 / 1000.0;
    silent > interval * STALE_AFTER_INTERVALS
}

/// One sample of a batch, for one job.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleItem {
    pub job_id: String,
    pub sample: super::MetricSample,
}

/// A node's own figures from its agent's report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeReport {
    pub name: String,
    pub reported_at: DateTime<Utc>,
    /// The agent's sampling interval, so the node can be called stale after three missed.
    pub interval_seconds: Option<f64>,
    pub cpus: Option<i64>,
    pub memory_total_bytes: Option<i64>,
    pub memory_used_bytes: Option<i64>,
    pub cpu_usage_percent: Option<f64>,
    pub load_1: Option<f64>,
    pub load_5: Option<f64>,
    pub load_15: Option<f64>,
    pub gpus: Vec<GpuReading>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn a_node_is_stale_after_three_silent_intervals() {
        let now = Utc::now();
        assert!(is_stale(None, Some(15.0), now), "never reported");
        assert!(!is_stale(
            Some(now - Duration::seconds(44)),
            Some(15.0),
            now
        ));
        assert!(is_stale(Some(now - Duration::seconds(46)), Some(15.0), now));
        assert!(!is_stale(Some(now - Duration::seconds(2)), Some(1.0), now));
        assert!(is_stale(Some(now - Duration::seconds(4)), Some(1.0), now));
        // a nonsensical interval falls back to the default
        assert!(!is_stale(
            Some(now - Duration::seconds(40)),
            Some(-1.0),
            now
        ));
    }

    #[test]
    fn node_state_from_the_agent_alone() {
        assert_eq!(NodeState::from_agent(true, 3), NodeState::Unknown);
        assert_eq!(NodeState::from_agent(false, 3), NodeState::Allocated);
        assert_eq!(NodeState::from_agent(false, 0), NodeState::Idle);
        for s in NodeState::ALL {
            assert_eq!(s.as_str().parse::<NodeState>(), Ok(s));
        }
        assert!("busy".parse::<NodeState>().is_err());
    }

    #[test]
    fn unknown_figures_are_absent_from_json() {
        let json = serde_json::to_value(SampleDetail {
            memory_peak_bytes: Some(10),
            ..SampleDetail::default()
        })
        .unwrap();
        assert_eq!(json, serde_json::json!({"memory_peak_bytes": 10}));
    }
}
