//! The job as the API shows it (field names of the Go service, kept for wire compatibility),
//! its states, and the rows that hang off it (samples, audit events).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Lifecycle state of a job. `completed`, `failed` and `cancelled` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// Whether a job in `self` may move to `next`. Terminal states are final, and a job that
    /// has started never goes back to pending. Staying in the same state is allowed (a PATCH
    /// that only updates usage figures repeats the state).
    pub fn can_move_to(self, next: JobState) -> bool {
        if self.is_terminal() {
            return false;
        }
        !(self == JobState::Running && next == JobState::Pending)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that names no job state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownState;

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or(UnknownState)
    }
}

/// Which GPU vendor(s) a job's devices come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    None,
    Nvidia,
    Amd,
    Mixed,
}

impl GpuVendor {
    pub fn as_str(self) -> &'static str {
        match self {
            GpuVendor::None => "none",
            GpuVendor::Nvidia => "nvidia",
            GpuVendor::Amd => "amd",
            GpuVendor::Mixed => "mixed",
        }
    }
}

impl FromStr for GpuVendor {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            GpuVendor::None,
            GpuVendor::Nvidia,
            GpuVendor::Amd,
            GpuVendor::Mixed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or(UnknownState)
    }
}

/// The free-form part of a Slurm job's scheduler info: its name and, for an array task, the
/// array's job id and the task's index; `None` when there is none of them.
pub fn scheduler_extra(
    job_name: Option<&str>,
    array_job_id: Option<&str>,
    array_task_id: Option<i64>,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut extra = serde_json::Map::new();
    if let Some(name) = job_name {
        extra.insert("job_name".into(), name.into());
    }
    if let Some(id) = array_job_id {
        extra.insert("array_job_id".into(), id.into());
    }
    if let Some(task) = array_task_id {
        extra.insert("array_task_id".into(), task.into());
    }
    (!extra.is_empty()).then_some(extra)
}

/// Scheduler-side facts about a job (the Go service's `scheduler` object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedulerInfo {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_job_id: Option<String>,
    /// The scheduler's own state name, e.g. Slurm's `TIMEOUT` or `OUT_OF_MEMORY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_minutes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    /// Slurm's cluster-unique job id (`SLURM_JOB_SLUID`, Slurm 26.05+; e.g. `s5K1KKYAYG5D00`),
    /// which also names the job's cgroup directory there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sluid: Option<String>,
}

/// A job as the API returns it. Optional fields are omitted when unknown, as the Go service did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub user: String,
    pub nodes: Vec<String>,
    pub node_count: i64,
    pub state: JobState,
    pub start_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_usage_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_usage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_cpus: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_cpus: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_memory_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_memory_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_gpus: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_gpus: Option<i64>,
    pub cluster_name: String,
    pub scheduler_instance: String,
    pub ingest_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sample_at: Option<DateTime<Utc>>,
    pub sample_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_cpu_usage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cpu_usage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_usage_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_gpu_usage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gpu_usage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_vendor: Option<GpuVendor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i64>,
    /// The trace id of the job's lifecycle: the correlation id its first event recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Exact memory of the newest agent sample, beside the compat `memory_usage_mb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_usage_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_usage_bytes: Option<i64>,
    /// The job's GPUs as its newest agent sample saw them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<crate::domain::gpu::GpuReading>,
}

impl Job {
    /// A job with the given identity and every figure unknown.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        user: String,
        nodes: Vec<String>,
        state: JobState,
        start_time: chrono::DateTime<chrono::Utc>,
        cluster_name: &str,
        scheduler_instance: &str,
        ingest_version: &str,
    ) -> Job {
        Job {
            id,
            user,
            node_count: nodes.len() as i64,
            nodes,
            state,
            start_time,
            end_time: None,
            runtime_seconds: None,
            cpu_usage: None,
            memory_usage_mb: None,
            gpu_usage: None,
            requested_cpus: None,
            allocated_cpus: None,
            requested_memory_mb: None,
            allocated_memory_mb: None,
            requested_gpus: None,
            allocated_gpus: None,
            cluster_name: cluster_name.to_owned(),
            scheduler_instance: scheduler_instance.to_owned(),
            ingest_version: ingest_version.to_owned(),
            last_sample_at: None,
            sample_count: 0,
            avg_cpu_usage: None,
            max_cpu_usage: None,
            max_memory_usage_mb: None,
            avg_gpu_usage: None,
            max_gpu_usage: None,
            scheduler: None,
            cgroup_path: None,
            gpu_vendor: None,
            gpu_devices: Vec::new(),
            gpu_count: None,
            exit_code: None,
            signal: None,
            correlation_id: None,
            memory_usage_bytes: None,
            max_memory_usage_bytes: None,
            gpus: Vec::new(),
        }
    }

    /// Ingest version of a job created by an epilog that arrived before its prolog: its start
    /// time is not known yet (it was recorded as the end time).
    pub const START_UNKNOWN: &'static str = "epilog-v1";

    /// This job completed with what a later job-started event knows and it does not: Slurm runs
    /// several prologs per job (the controller's and every node's), each with part of the
    /// picture, and an epilog can arrive before any of them. Known values are never replaced;
    /// the start time is taken only when it was unknown.
    pub fn fill_from_start(&self, started: &Job) -> Job {
        let mut job = self.clone();
        macro_rules! fill {
            ($($field:ident),*) => { $( if job.$field.is_none() { job.$field = started.$field.clone(); } )* };
        }
        fill!(
            requested_cpus,
            allocated_cpus,
            requested_memory_mb,
            allocated_memory_mb,
            requested_gpus,
            allocated_gpus,
            cgroup_path,
            gpu_vendor,
            gpu_count
        );
        if job.gpu_devices.is_empty() {
            job.gpu_devices = started.gpu_devices.clone();
        }
        if let Some(new) = &started.scheduler {
            let s = job.scheduler.get_or_insert_with(SchedulerInfo::default);
            s.kind = s.kind.take().or_else(|| new.kind.clone());
            s.external_job_id = s
                .external_job_id
                .take()
                .or_else(|| new.external_job_id.clone());
            s.partition = s.partition.take().or_else(|| new.partition.clone());
            s.account = s.account.take().or_else(|| new.account.clone());
            s.sluid = s.sluid.take().or_else(|| new.sluid.clone());
            if let Some(extra) = &new.extra {
                let mine = s.extra.get_or_insert_with(Default::default);
                for (k, v) in extra {
                    mine.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        if job.ingest_version == Self::START_UNKNOWN {
            job.start_time = started
                .start_time
                .min(job.end_time.unwrap_or(started.start_time));
            job.ingest_version = started.ingest_version.clone();
            if job.state.is_terminal() {
                job.runtime_seconds = Some(Job::runtime_at(
                    job.start_time,
                    job.end_time,
                    job.start_time,
                ));
            }
        }
        job
    }

    /// Seconds between start and end, or until `now` for a job still going; never negative
    /// (node clocks can disagree by a little).
    pub fn runtime_at(start: DateTime<Utc>, end: Option<DateTime<Utc>>, now: DateTime<Utc>) -> f64 {
        let until = end.unwrap_or(now);
        let micros = (until - start).num_microseconds().unwrap_or(0).max(0);
        micros as f64 / 1_000_000.0
    }
}

/// One usage sample of a job: the compat fields of `metric_samples` (the Go service's), and what a
/// node agent measured beside them. `cpu_usage` is `null` on a job's first agent sample (a
/// percentage needs two readings) and `memory_usage_mb` where the cgroup has no memory figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    pub timestamp: DateTime<Utc>,
    pub cpu_usage: Option<f64>,
    pub memory_usage_mb: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_usage: Option<f64>,
    #[serde(flatten)]
    pub detail: super::usage::SampleDetail,
}

/// One row of a job's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: i64,
    pub job_id: String,
    pub change_type: String,
    pub changed_at: DateTime<Utc>,
    pub changed_by: String,
    pub source: String,
    pub correlation_id: String,
    pub job_snapshot: serde_json::Value,
    /// Who did it, as authenticated (`role:hook`, `user:alice`, `admin`); absent for the
    /// server's own changes, unauthenticated servers and rows older than identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// The correlation id of a job's lifecycle: the caller's, or a UUID derived from the job id so
/// that the prolog and the epilog of one job (separate requests, often from separate nodes)
/// share it without coordinating.
pub fn lifecycle_correlation_id(given: Option<String>, job_id: &str) -> String {
    given.unwrap_or_else(|| {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("jobscope:job:{job_id}").as_bytes(),
        )
        .to_string()
    })
}

/// Current time truncated to microseconds: both databases store microseconds, so values read
/// back compare equal to what was written.
pub fn now_micros() -> DateTime<Utc> {
    truncate_micros(Utc::now())
}

pub fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.timestamp_subsec_nanos();
    t - chrono::Duration::nanoseconds(i64::from(nanos % 1_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_strings() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert!("RUNNING".parse::<JobState>().is_err());
        assert!("".parse::<JobState>().is_err());
    }

    #[test]
    fn terminal_states_are_final() {
        for from in [JobState::Completed, JobState::Failed, JobState::Cancelled] {
            for to in JobState::ALL {
                assert!(!from.can_move_to(to), "{from} -> {to} must be refused");
            }
        }
        assert!(JobState::Pending.can_move_to(JobState::Running));
        assert!(JobState::Running.can_move_to(JobState::Failed));
        assert!(JobState::Running.can_move_to(JobState::Running));
        assert!(!JobState::Running.can_move_to(JobState::Pending));
    }

    #[test]
    fn runtime_is_never_negative() {
        let start = Utc::now();
        let before = start - chrono::Duration::seconds(5);
        assert_eq!(Job::runtime_at(start, Some(before), start), 0.0);
        let later = start + chrono::Duration::milliseconds(1500);
        assert_eq!(Job::runtime_at(start, Some(later), start), 1.5);
        assert_eq!(Job::runtime_at(start, None, later), 1.5);
    }

    fn sample_job() -> Job {
        Job::new(
            "1".into(),
            "u".into(),
            vec!["n1".into()],
            JobState::Running,
            now_micros(),
            "c",
            "slurm",
            "prolog-v1",
        )
    }

    #[test]
    fn a_later_start_event_fills_gaps_but_never_overwrites() {
        let ctld = Job {
            scheduler: Some(SchedulerInfo {
                account: Some("phys".into()),
                ..Default::default()
            }),
            ..sample_job()
        };
        let node = Job {
            allocated_cpus: Some(8),
            gpu_devices: vec!["0".into()],
            scheduler: Some(SchedulerInfo {
                account: Some("other".into()),
                partition: Some("gpu".into()),
                ..Default::default()
            }),
            ..sample_job()
        };
        let merged = ctld.fill_from_start(&node);
        assert_eq!(merged.allocated_cpus, Some(8));
        assert_eq!(merged.gpu_devices, vec!["0"]);
        let s = merged.scheduler.clone().unwrap();
        assert_eq!(s.account.as_deref(), Some("phys"));
        assert_eq!(s.partition.as_deref(), Some("gpu"));
        assert_eq!(
            merged.start_time, ctld.start_time,
            "a known start time is kept"
        );
        assert_eq!(
            merged.fill_from_start(&node),
            merged,
            "merging again changes nothing"
        );
    }

    #[test]
    fn a_late_prolog_supplies_the_start_of_a_job_its_epilog_created() {
        let end = now_micros();
        let start = end - chrono::Duration::seconds(90);
        let epilog_first = Job {
            state: JobState::Completed,
            start_time: end,
            end_time: Some(end),
            runtime_seconds: Some(0.0),
            ingest_version: Job::START_UNKNOWN.into(),
            ..sample_job()
        };
        let prolog = Job {
            start_time: start,
            ..sample_job()
        };
        let merged = epilog_first.fill_from_start(&prolog);
        assert_eq!(merged.start_time, start);
        assert_eq!(merged.runtime_seconds, Some(90.0));
        assert_eq!(merged.ingest_version, "prolog-v1");
        assert_eq!(merged.state, JobState::Completed);
    }

    #[test]
    fn truncation_keeps_microseconds() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(truncate_micros(t).timestamp_subsec_nanos(), 123_456_000);
    }
}
