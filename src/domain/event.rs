//! The event contract: the kinds of event-log rows ([`EventKind`]) and the one payload type of
//! each, which the store serializes when it writes a row and every reader (metrics, streams and
//! their filters, the report scheduler, `jobscope watch`) deserializes. `crate::events`
//! re-exports them; they live here, below the store, because the store writes them.
//!
//! The JSON of these types is the stream wire format (`openapi/jobscope.yaml`, `api/stream.rs`):
//! field names and nesting must not change. Payloads borrow on the write path (a sample batch
//! queues a thousand of them) and own on the read path, through [`Cow`].

use super::report::Report;
use super::{Job, JobState, MetricSample, Node, Partition};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// The kind of an event-log row; its text (`as_str`) is the `kind` column and the `type` of a
/// stream envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A job the store did not have ([`JobChange`]).
    JobCreated,
    /// A change that left the job running or pending, or a terminal job's late figures
    /// ([`JobChange`]).
    JobUpdated,
    /// The job reached a terminal state ([`JobChange`]).
    JobFinished,
    /// The job was deleted ([`JobChange`], without `previous_state`).
    JobDeleted,
    /// A usage sample of a job ([`JobSample`]).
    JobSample,
    /// A finished job's efficiency report ([`JobReport`], `report_events`).
    JobReport,
    /// A node's state or figures changed ([`NodeChange`]).
    NodeUpdated,
    /// A partition was created or changed ([`PartitionChange`]).
    PartitionUpdated,
    /// A partition is gone from the scheduler ([`PartitionChange`]).
    PartitionDeleted,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::JobCreated,
        EventKind::JobUpdated,
        EventKind::JobFinished,
        EventKind::JobDeleted,
        EventKind::JobSample,
        EventKind::JobReport,
        EventKind::NodeUpdated,
        EventKind::PartitionUpdated,
        EventKind::PartitionDeleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::JobCreated => "job_created",
            EventKind::JobUpdated => "job_updated",
            EventKind::JobFinished => "job_finished",
            EventKind::JobDeleted => "job_deleted",
            EventKind::JobSample => "job_sample",
            EventKind::JobReport => "job_report",
            EventKind::NodeUpdated => "node_updated",
            EventKind::PartitionUpdated => "partition_updated",
            EventKind::PartitionDeleted => "partition_deleted",
        }
    }

    /// The kind of a change from `before` (none: a new job) to a job now in `after`.
    pub fn of_change(before: Option<JobState>, after: JobState) -> EventKind {
        match before {
            None => EventKind::JobCreated,
            Some(prev) if !prev.is_terminal() && after.is_terminal() => EventKind::JobFinished,
            Some(_) => EventKind::JobUpdated,
        }
    }

    /// A change of the job itself, whose payload is a [`JobChange`].
    pub fn is_job_change(self) -> bool {
        matches!(
            self,
            EventKind::JobCreated
                | EventKind::JobUpdated
                | EventKind::JobFinished
                | EventKind::JobDeleted
        )
    }

    /// About one job (the job streams carry it): its changes, samples and report.
    pub fn is_about_a_job(self) -> bool {
        self.is_job_change() || matches!(self, EventKind::JobSample | EventKind::JobReport)
    }

    /// A partition's change, whose payload is a [`PartitionChange`].
    pub fn is_partition_change(self) -> bool {
        matches!(
            self,
            EventKind::PartitionUpdated | EventKind::PartitionDeleted
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind equals its text (`event.kind == "job_sample"` reads as the log's column does).
impl PartialEq<str> for EventKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Error for a string that names no event kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind {0:?}")]
pub struct UnknownEventKind(pub String);

impl FromStr for EventKind {
    type Err = UnknownEventKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}

/// `job_created`, `job_updated`, `job_finished`, `job_deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobChange<'a> {
    pub job: Cow<'a, Job>,
    #[serde(default)]
    pub correlation_id: Cow<'a, str>,
    /// The state before the change; absent when the job is new or deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_state: Option<JobState>,
}

/// `job_sample`: who the sample belongs to, so stream filters (user, state, node, partition)
/// apply to samples without a lookup per event. The store keeps the sample itself as the
/// `metric_samples` row the log row refers to (`events.sample_id`) and adds it as `sample` when
/// the log is read, so the log does not store every sample twice (it was 87 % of the row, and
/// the log's largest cost; BENCHMARKS.md, "Sample ingestion"); rows from before migration 0008
/// carry it inline. `sample` is `null` when the sample is gone (its job deleted, or pruned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSample<'a> {
    /// The job's id (older readers fall back to `job.id` when it is absent).
    #[serde(default)]
    pub job_id: Cow<'a, str>,
    pub job: JobSummary<'a>,
    #[serde(default)]
    pub correlation_id: Cow<'a, str>,
    /// Never written by the store (see the type's doc); read back from the sample's row.
    #[serde(default, skip_serializing)]
    pub sample: Option<MetricSample>,
}

impl JobSample<'_> {
    /// The job the sample belongs to.
    pub fn job_id(&self) -> &str {
        if self.job_id.is_empty() {
            &self.job.id
        } else {
            &self.job_id
        }
    }
}

/// A `job_sample` row as the store keeps it (issue 19): the job's state when the sample was
/// stored, nothing else. The store adds the rest of [`JobSample`] back when the log is read: the
/// summary from the job (or, once it is deleted, from what was kept of it) and the sample from
/// its row or pack. A copy of the summary in every sample's row was most of the row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StoredJobSample {
    pub state: JobState,
}

/// The log row kind of [`StoredSampleBatch`]. Not an [`EventKind`]: no stream ever shows it, the
/// store expands it into `job_sample` events when the log is read.
pub const SAMPLE_BATCH_KIND: &str = "job_samples";

/// The `job_sample` events of one stored sample batch, kept as one log row (issue 19): a row
/// per sample cost ~137 bytes a sample, more than the packed sample itself. The row's id is the
/// last of a block of ids, one per sample in this order, so every sample keeps its own event
/// id (a stream resumes inside a batch as well as between two) and the log's ids stay in commit
/// order. Entry `i` is the job's sample `sample_ids[i]`, stored while the job was `states[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSampleBatch<'a> {
    pub job_ids: Vec<Cow<'a, str>>,
    pub sample_ids: Vec<i64>,
    pub states: Vec<JobState>,
}

impl StoredSampleBatch<'_> {
    /// Samples (and so event ids) the row stands for.
    pub fn len(&self) -> usize {
        self.sample_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sample_ids.is_empty()
    }

    /// Whether the three lists agree; a row where they do not is damaged.
    pub fn is_whole(&self) -> bool {
        self.job_ids.len() == self.sample_ids.len() && self.states.len() == self.sample_ids.len()
    }
}

/// `job_report`: a finished job's efficiency report, with the job's summary (what the stream
/// filters read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReport<'a> {
    pub job_id: Cow<'a, str>,
    pub job: JobSummary<'a>,
    pub report: Cow<'a, Report>,
}

impl<'a> JobReport<'a> {
    pub fn new(job: &'a Job, report: &'a Report) -> JobReport<'a> {
        JobReport {
            job_id: Cow::Borrowed(&job.id),
            job: JobSummary::of(job),
            report: Cow::Borrowed(report),
        }
    }
}

/// The job summary of a [`JobSample`] and a [`JobReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary<'a> {
    pub id: Cow<'a, str>,
    pub user: Cow<'a, str>,
    pub state: JobState,
    pub nodes: Cow<'a, [String]>,
    pub scheduler: SummaryScheduler<'a>,
}

impl<'a> JobSummary<'a> {
    pub fn of(job: &'a Job) -> JobSummary<'a> {
        JobSummary {
            id: Cow::Borrowed(&job.id),
            user: Cow::Borrowed(&job.user),
            state: job.state,
            nodes: Cow::Borrowed(&job.nodes),
            scheduler: SummaryScheduler {
                partition: job
                    .scheduler
                    .as_ref()
                    .and_then(|s| s.partition.as_deref())
                    .map(Cow::Borrowed),
            },
        }
    }
}

/// The scheduler part of a [`JobSummary`]; `partition` is `null` when unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryScheduler<'a> {
    #[serde(default)]
    pub partition: Option<Cow<'a, str>>,
}

/// `node_updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeChange<'a> {
    pub node: Cow<'a, Node>,
}

/// `partition_updated`, `partition_deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionChange<'a> {
    pub partition: Cow<'a, Partition>,
}

/// A logged event's payload, read as the type of its kind (boxed: a job is large).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Job(Box<JobChange<'static>>),
    Sample(Box<JobSample<'static>>),
    Report(Box<JobReport<'static>>),
    Node(NodeChange<'static>),
    Partition(PartitionChange<'static>),
}

impl Payload {
    /// `payload` read as the payload of a `kind` row.
    pub fn read(kind: EventKind, payload: &serde_json::Value) -> serde_json::Result<Payload> {
        use serde::de::Deserialize as _;
        Ok(match kind {
            EventKind::JobCreated
            | EventKind::JobUpdated
            | EventKind::JobFinished
            | EventKind::JobDeleted => Payload::Job(Box::new(JobChange::deserialize(payload)?)),
            EventKind::JobSample => Payload::Sample(Box::new(JobSample::deserialize(payload)?)),
            EventKind::JobReport => Payload::Report(Box::new(JobReport::deserialize(payload)?)),
            EventKind::NodeUpdated => Payload::Node(NodeChange::deserialize(payload)?),
            EventKind::PartitionUpdated | EventKind::PartitionDeleted => {
                Payload::Partition(PartitionChange::deserialize(payload)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_from_their_text() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::from(kind.as_str())
            );
        }
        assert!("job_exploded".parse::<EventKind>().is_err());
    }

    #[test]
    fn a_change_is_named_by_the_states_around_it() {
        use JobState::*;
        assert_eq!(EventKind::of_change(None, Running), EventKind::JobCreated);
        assert_eq!(
            EventKind::of_change(Some(Running), Completed),
            EventKind::JobFinished
        );
        assert_eq!(
            EventKind::of_change(Some(Pending), Running),
            EventKind::JobUpdated
        );
        assert_eq!(
            EventKind::of_change(Some(Failed), Failed),
            EventKind::JobUpdated
        );
    }

    #[test]
    fn a_sample_payload_writes_no_sample_and_reads_one_back() {
        let job = Job::new(
            "7".into(),
            "alice".into(),
            vec!["n1".into()],
            JobState::Running,
            "2026-11-29T23:00:00Z".parse().unwrap(),
            "c",
            "slurm",
            "v",
        );
        let written = JobSample {
            job_id: Cow::Borrowed("7"),
            job: JobSummary::of(&job),
            correlation_id: Cow::Borrowed("c-1"),
            sample: None,
        };
        let mut value = serde_json::to_value(&written).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"job_id": "7", "correlation_id": "c-1", "job": {"id": "7",
                "user": "alice", "state": "running", "nodes": ["n1"],
                "scheduler": {"partition": null}}})
        );
        value["sample"] = serde_json::json!({"timestamp": "2026-11-29T23:00:05Z",
            "cpu_usage": 12.5, "memory_usage_mb": 3, "node": "n1"});
        let Payload::Sample(read) = Payload::read(EventKind::JobSample, &value).unwrap() else {
            panic!("not a sample")
        };
        assert_eq!(read.job_id(), "7");
        let sample = read.sample.unwrap();
        assert_eq!(sample.cpu_usage, Some(12.5));
        assert_eq!(sample.detail.node.as_deref(), Some("n1"));
        value["sample"] = serde_json::Value::Null;
        value.as_object_mut().unwrap().remove("job_id");
        let Payload::Sample(read) = Payload::read(EventKind::JobSample, &value).unwrap() else {
            panic!("not a sample")
        };
        assert_eq!((read.job_id(), &read.sample), ("7", &None));
    }
}
