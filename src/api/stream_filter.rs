//! Which event-log rows a stream connection wants: the query filters of the job streams
//! (`/v1/stream/jobs`, `/v1/stream/cluster`, `/v1/stream/jobs/{id}`, WebSocket `jobs`/`job`)
//! of the node stream (`/v1/stream/nodes`, WebSocket `nodes`) and of the partition stream
//! (`/v1/stream/partitions`, WebSocket `partitions`), parsed and validated once per connection and then applied to every event the connection sees.
//!
//! Matching runs once per event per subscriber, so it borrows from the event's JSON and never
//! allocates.

use super::error::ApiError;
use super::request::state_param;
use crate::domain::validate;
use crate::domain::{JobState, NodeState, PartitionState};
use crate::events::EventKind;
use crate::store::StoredEvent;
use serde_json::Value;
use std::collections::HashMap;

/// Most entries in a `job_ids` or `node_names` list.
pub(super) const MAX_LIST: usize = 1000;

/// Which events a connection wants.
#[derive(Debug, Clone)]
pub(super) enum StreamFilter {
    Jobs(JobEvents),
    Nodes(NodeEvents),
    Partitions(PartitionEvents),
    /// No logged event (a seed-001 cluster subscription with `state_changes: false`, which
    /// wants only the periodic status).
    Nothing,
}

/// Filters of the job streams; every field empty means "all jobs".
#[derive(Debug, Clone, Default)]
pub(super) struct JobEvents {
    pub(super) user: Option<String>,
    pub(super) states: Vec<JobState>,
    pub(super) partition: Option<String>,
    pub(super) node: Option<String>,
    pub(super) job_ids: Vec<String>,
    pub(super) exclude_samples: bool,
    /// Seed 000's `exclude_new`: no `job_created` events.
    pub(super) exclude_new: bool,
    /// Seed 000's `exclude_completed`: nothing about jobs that have finished (their
    /// `job_finished`, and later updates, reports and deletions).
    pub(super) exclude_completed: bool,
    /// A user's scope: only jobs owned by `owner.0` (lifecycle events of every job too when
    /// `owner.1`, `--users-see-all-jobs`; samples always only their own).
    pub(super) owner: Option<(String, bool)>,
}

/// Filters of the node stream.
#[derive(Debug, Clone, Default)]
pub(super) struct NodeEvents {
    pub(super) node_names: Vec<String>,
    pub(super) states: Vec<NodeState>,
    pub(super) partition: Option<String>,
    /// Slurm node features: a node with any of them matches.
    pub(super) features: Vec<String>,
}

/// Filters of the partition stream.
#[derive(Debug, Clone, Default)]
pub(super) struct PartitionEvents {
    pub(super) partition_names: Vec<String>,
    pub(super) states: Vec<PartitionState>,
}

pub(super) fn comma_list(params: &HashMap<String, String>, key: &str) -> Vec<String> {
    params
        .get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn optional(params: &HashMap<String, String>, key: &str) -> Result<Option<String>, ApiError> {
    Ok(validate::optional_name(
        key,
        params.get(key).map(String::as_str),
    )?)
}

/// A `true`/`false` (or `1`/`0`) parameter; absent or empty is `default`.
fn flag(params: &HashMap<String, String>, key: &str, default: bool) -> Result<bool, ApiError> {
    match params.get(key).map(|s| s.trim()) {
        None | Some("") => Ok(default),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(_) => Err(ApiError::Validation(format!("{key} must be true or false"))),
    }
}

/// Query parameters every stream route takes besides its filters: the resume cursor and the
/// ways to authenticate in a URL (see `auth::require_stream`).
const COMMON_PARAMS: &[&str] = &["last_event_id", "ticket", "access_token", "token"];

/// The query parameters of the job streams (`/v1/stream/jobs`, `/v1/stream/cluster` adds
/// `interval_seconds`), seed 000's names included.
pub(super) const JOB_PARAMS: &[&str] = &[
    "user",
    "user_id",
    "states",
    "partition",
    "node",
    "job_ids",
    "exclude_samples",
    "exclude_new",
    "exclude_completed",
];
/// The query parameters of the node stream.
pub(super) const NODE_PARAMS: &[&str] = &["node_names", "states", "partition", "features"];
/// The query parameters of the partition stream.
pub(super) const PARTITION_PARAMS: &[&str] = &["partition_names", "states"];

/// A 400 naming every query parameter that is neither in `allowed` nor one that all streams
/// take: a misspelt filter must not silently stream everything.
pub(super) fn reject_unknown(
    params: &HashMap<String, String>,
    allowed: &[&[&str]],
) -> Result<(), ApiError> {
    let known =
        |key: &str| COMMON_PARAMS.contains(&key) || allowed.iter().any(|list| list.contains(&key));
    let mut unknown: Vec<&str> = params
        .keys()
        .map(String::as_str)
        .filter(|key| !known(key))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    let expected: Vec<&str> = allowed
        .iter()
        .flat_map(|list| list.iter().copied())
        .collect();
    // The names are the client's own, echoed back escaped (`{:?}`), never logged.
    let unknown: Vec<String> = unknown.iter().map(|k| format!("{k:?}")).collect();
    Err(ApiError::InvalidRequest(format!(
        "Unknown query parameter {} for this stream (filters: {})",
        unknown.join(", "),
        expected.join(", ")
    )))
}

impl StreamFilter {
    /// The job streams' filters: `user`, `states`, `partition`, `node`, `job_ids`,
    /// `exclude_samples` (default `exclude_samples_default`).
    pub(super) fn parse(
        params: &HashMap<String, String>,
        exclude_samples_default: bool,
    ) -> Result<StreamFilter, ApiError> {
        // In any case: seed 000's clients send Slurm's `RUNNING,PENDING`.
        let known: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        let states = comma_list(params, "states")
            .iter()
            .map(|s| state_param::<JobState>(s, "job", &known))
            .collect::<Result<Vec<_>, _>>()?;
        let job_ids = validate::name_list("job_ids", &comma_list(params, "job_ids"), MAX_LIST)?;
        // Seed 000 names the user `user_id`; both at once must agree.
        let user = match (optional(params, "user")?, optional(params, "user_id")?) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::Validation(
                    "user and user_id name the same filter; give one".into(),
                ))
            }
            (a, b) => a.or(b),
        };
        Ok(StreamFilter::Jobs(JobEvents {
            user,
            states,
            partition: optional(params, "partition")?,
            node: optional(params, "node")?,
            job_ids,
            exclude_samples: flag(params, "exclude_samples", exclude_samples_default)?,
            exclude_new: flag(params, "exclude_new", false)?,
            exclude_completed: flag(params, "exclude_completed", false)?,
            owner: None,
        }))
    }

    /// The node stream's filters: `node_names`, `states` (node states), `partition`, `features`
    /// (seed 000's: Slurm node features, any of them).
    pub(super) fn parse_nodes(params: &HashMap<String, String>) -> Result<StreamFilter, ApiError> {
        let known: Vec<&str> = NodeState::ALL.iter().map(|s| s.as_str()).collect();
        let states = comma_list(params, "states")
            .iter()
            .map(|s| state_param::<NodeState>(s, "node", &known))
            .collect::<Result<Vec<_>, _>>()?;
        let node_names =
            validate::name_list("node_names", &comma_list(params, "node_names"), MAX_LIST)?;
        Ok(StreamFilter::Nodes(NodeEvents {
            node_names,
            states,
            partition: optional(params, "partition")?,
            features: validate::name_list("features", &comma_list(params, "features"), MAX_LIST)?,
        }))
    }

    /// The partition stream's filters: `partition_names`, `states` (partition states).
    pub(super) fn parse_partitions(
        params: &HashMap<String, String>,
    ) -> Result<StreamFilter, ApiError> {
        let states = comma_list(params, "states")
            .iter()
            .map(|s| super::partitions::parse_state(s))
            .collect::<Result<Vec<_>, _>>()?;
        let partition_names = validate::name_list(
            "partition_names",
            &comma_list(params, "partition_names"),
            MAX_LIST,
        )?;
        Ok(StreamFilter::Partitions(PartitionEvents {
            partition_names,
            states,
        }))
    }

    /// One job's stream: its lifecycle, and its samples unless excluded.
    pub(super) fn single_job(id: String, exclude_samples: bool) -> StreamFilter {
        StreamFilter::Jobs(JobEvents {
            job_ids: vec![id],
            exclude_samples,
            ..JobEvents::default()
        })
    }

    /// The same filter, narrowed to what `who` may see: a user's job streams carry only their
    /// own jobs' events, whatever filters they passed.
    pub(super) fn scoped(
        self,
        who: &super::identity::Identity,
        all_lifecycles: bool,
    ) -> StreamFilter {
        match (self, who.user()) {
            (StreamFilter::Jobs(mut jobs), Some(user)) => {
                jobs.owner = Some((user.to_owned(), all_lifecycles));
                StreamFilter::Jobs(jobs)
            }
            (filter, _) => filter,
        }
    }

    /// The filters as JSON, for the `connected` event: `{"stream": "jobs", "user": ..., ...}`,
    /// every filter of the stream named, unset ones `null` or empty.
    pub(super) fn describe(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            StreamFilter::Jobs(f) => json!({
                "user": f.user,
                "states": f.states.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "partition": f.partition,
                "node": f.node,
                "job_ids": f.job_ids,
                "exclude_samples": f.exclude_samples,
                "exclude_new": f.exclude_new,
                "exclude_completed": f.exclude_completed,
                // A user's own jobs only, whatever else was asked for.
                "owner": f.owner.as_ref().map(|(user, _)| user),
            }),
            StreamFilter::Nodes(f) => json!({
                "node_names": f.node_names,
                "states": f.states.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "partition": f.partition,
                "features": f.features,
            }),
            StreamFilter::Partitions(f) => json!({
                "partition_names": f.partition_names,
                "states": f.states.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            }),
            StreamFilter::Nothing => serde_json::Value::Null,
        }
    }

    pub(super) fn matches(&self, event: &StoredEvent) -> bool {
        match self {
            StreamFilter::Jobs(filter) => filter.matches(event),
            StreamFilter::Nodes(filter) => filter.matches(event),
            StreamFilter::Partitions(filter) => filter.matches(event),
            StreamFilter::Nothing => false,
        }
    }
}

impl JobEvents {
    fn matches(&self, event: &StoredEvent) -> bool {
        if !event.kind.is_about_a_job() {
            return false;
        }
        if self.exclude_samples && event.kind == EventKind::JobSample {
            return false;
        }
        if self.exclude_new && event.kind == "job_created" {
            return false;
        }
        let job = &event.payload["job"];
        if self.exclude_completed
            && job["state"]
                .as_str()
                .and_then(|s| s.parse::<JobState>().ok())
                .is_some_and(JobState::is_terminal)
        {
            return false;
        }
        if let Some((owner, all_lifecycles)) = &self.owner {
            // Samples and reports (made of samples) stay their owner's, whatever the flag.
            let lifecycle_ok = *all_lifecycles
                && !matches!(event.kind, EventKind::JobSample | EventKind::JobReport);
            if !lifecycle_ok && job["user"].as_str() != Some(owner.as_str()) {
                return false;
            }
        }
        if !self.job_ids.is_empty()
            && !event
                .job_id
                .as_ref()
                .is_some_and(|id| self.job_ids.contains(id))
        {
            return false;
        }
        if let Some(user) = &self.user {
            if job["user"].as_str() != Some(user.as_str()) {
                return false;
            }
        }
        if !self.states.is_empty() && !self.states.iter().any(|s| job["state"] == s.as_str()) {
            return false;
        }
        if let Some(partition) = &self.partition {
            if job["scheduler"]["partition"].as_str() != Some(partition.as_str()) {
                return false;
            }
        }
        if let Some(node) = &self.node {
            if !contains(&job["nodes"], node) {
                return false;
            }
        }
        true
    }
}

impl NodeEvents {
    fn matches(&self, event: &StoredEvent) -> bool {
        if event.kind != EventKind::NodeUpdated {
            return false;
        }
        let node = &event.payload["node"];
        if !self.node_names.is_empty()
            && !node["name"]
                .as_str()
                .is_some_and(|name| self.node_names.iter().any(|n| n == name))
        {
            return false;
        }
        if !self.states.is_empty() && !self.states.iter().any(|s| node["state"] == s.as_str()) {
            return false;
        }
        if let Some(partition) = &self.partition {
            if !contains(&node["partitions"], partition) {
                return false;
            }
        }
        self.features.is_empty() || self.features.iter().any(|f| contains(&node["features"], f))
    }
}

impl PartitionEvents {
    fn matches(&self, event: &StoredEvent) -> bool {
        if !event.kind.is_partition_change() {
            return false;
        }
        let partition = &event.payload["partition"];
        if !self.partition_names.is_empty()
            && !partition["name"]
                .as_str()
                .is_some_and(|name| self.partition_names.iter().any(|n| n == name))
        {
            return false;
        }
        self.states.is_empty() || self.states.iter().any(|s| partition["state"] == s.as_str())
    }
}

/// Whether a JSON array of strings holds `wanted`.
fn contains(list: &Value, wanted: &str) -> bool {
    list.as_array()
        .is_some_and(|items| items.iter().any(|n| n.as_str() == Some(wanted)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, job_id: Option<&str>, payload: Value) -> StoredEvent {
        StoredEvent {
            id: 1,
            occurred_at: chrono::Utc::now(),
            kind: kind.parse().expect("an event kind"),
            job_id: job_id.map(str::to_owned),
            payload,
            missing_sample: None,
        }
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn node(name: &str, state: &str, partitions: &[&str]) -> StoredEvent {
        event(
            "node_updated",
            None,
            json!({"node": {"name": name, "state": state, "partitions": partitions}}),
        )
    }

    #[test]
    fn node_filters_select_by_name_state_and_partition() {
        let all = StreamFilter::parse_nodes(&params(&[])).unwrap();
        assert!(all.matches(&node("n1", "idle", &["cpu"])));
        let job = event(
            "job_created",
            Some("1"),
            json!({"job": {"id": "1", "state": "running"}}),
        );
        assert!(!all.matches(&job), "the node stream carries no job events");

        let f = StreamFilter::parse_nodes(&params(&[
            ("node_names", "n1, n2"),
            ("states", "down,Drained"),
            ("partition", "gpu"),
        ]))
        .unwrap();
        assert!(f.matches(&node("n2", "drained", &["cpu", "gpu"])));
        assert!(!f.matches(&node("n3", "down", &["gpu"])), "name");
        assert!(!f.matches(&node("n1", "idle", &["gpu"])), "state");
        assert!(!f.matches(&node("n1", "down", &["cpu"])), "partition");
        assert!(!f.matches(&event("node_updated", None, json!({}))));

        // Seed 000's `features`: a node with any of the listed ones.
        let f = StreamFilter::parse_nodes(&params(&[("features", "a100, ssd")])).unwrap();
        let with = |features: Value| {
            event(
                "node_updated",
                None,
                json!({"node": {"name": "g1", "state": "idle", "features": features}}),
            )
        };
        assert!(f.matches(&with(json!(["ib", "a100"]))));
        assert!(f.matches(&with(json!(["ssd"]))));
        assert!(!f.matches(&with(json!(["ib"]))), "neither feature");
        assert!(
            !f.matches(&node("n1", "idle", &["gpu"])),
            "no features said"
        );

        for bad in [
            ("states", "sleeping"),
            ("node_names", "a,\u{7}"),
            ("features", "gpu,\u{7}"),
        ] {
            assert!(
                StreamFilter::parse_nodes(&params(&[bad])).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn job_streams_carry_only_job_events() {
        let all = StreamFilter::parse(&params(&[("exclude_samples", "false")]), true).unwrap();
        assert!(!all.matches(&node("n1", "idle", &[])));
        let sample = event(
            "job_sample",
            Some("7"),
            json!({"job_id": "7", "job": {"id": "7", "user": "ann", "state": "running",
                   "nodes": ["n1"], "scheduler": {"partition": "gpu"}}, "sample": {}}),
        );
        assert!(all.matches(&sample));
        let f = StreamFilter::parse(
            &params(&[
                ("user", "ann"),
                ("node", "n1"),
                ("partition", "gpu"),
                ("states", "running"),
                ("job_ids", "7,8"),
            ]),
            false,
        )
        .unwrap();
        assert!(f.matches(&sample));
        let excluded = StreamFilter::parse(&params(&[]), true).unwrap();
        assert!(!excluded.matches(&sample));
        let single = StreamFilter::single_job("8".into(), false);
        assert!(!single.matches(&sample));
        use crate::api::identity::Identity;
        let bob = Identity::User("bob".into());
        let ann = Identity::User("ann".into());
        let scoped = all.clone().scoped(&bob, false);
        assert!(!scoped.matches(&sample), "bob never sees ann's events");
        assert!(all.clone().scoped(&ann, false).matches(&sample));
        assert!(
            !all.clone().scoped(&bob, true).matches(&sample),
            "samples stay private with --users-see-all-jobs"
        );
        let created = event(
            "job_created",
            Some("7"),
            json!({"job": {"id": "7", "user": "ann", "state": "running"}}),
        );
        assert!(all.clone().scoped(&bob, true).matches(&created));
        assert!(!all.clone().scoped(&bob, false).matches(&created));
    }

    #[test]
    fn a_job_report_is_its_owners_only() {
        let report = event(
            "job_report",
            Some("7"),
            json!({"job_id": "7", "job": {"id": "7", "user": "ann", "state": "completed",
                   "nodes": ["n1"], "scheduler": {"partition": "gpu"}},
                   "report": {"job_id": "7"}}),
        );
        use crate::api::identity::Identity;
        let (ann, bob) = (Identity::User("ann".into()), Identity::User("bob".into()));
        let all = StreamFilter::parse(&params(&[]), true).unwrap();
        assert!(all.clone().scoped(&ann, false).matches(&report));
        assert!(
            !all.clone().scoped(&bob, false).matches(&report),
            "bob never sees ann's"
        );
        assert!(
            !all.clone().scoped(&bob, true).matches(&report),
            "reports stay private with --users-see-all-jobs, like samples"
        );
        let own = StreamFilter::single_job("7".into(), false).scoped(&ann, false);
        assert!(own.matches(&report), "the job's own stream carries it");
        let filtered =
            StreamFilter::parse(&params(&[("partition", "gpu"), ("node", "n1")]), true).unwrap();
        assert!(
            filtered.matches(&report),
            "the job filters read its summary"
        );
    }
}
