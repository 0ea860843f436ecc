//! Partitions as slurmrestd reports them (`GET /slurm/<version>/partitions`), read tolerantly
//! across API versions, plus the running and pending job counts jobscope adds from Slurm's job
//! list.
//!
//! v0.0.37–v0.0.38 (Slurm 22.05) give `state` as one upper-case word, `nodes` as a compressed
//! host list, `total_cpus`/`total_nodes`, and limits as plain integers where `-1` means
//! unlimited and `null` unset (`max_time_limit`, `default_time_limit`, `maximum_nodes_per_job`;
//! times in minutes). v0.0.36 has no `state` at all (the partition is then `unknown`). v0.0.40
//! and later nest them: `partition.state` is a list, `nodes.configured` the host list,
//! `cpus.total`, `nodes.total`, `maximums.time`, `defaults.time` and `maximums.nodes` are
//! `{set, infinite, number}`. The default partition has the `default` flag (v0.0.38) or
//! `DEFAULT` in `partition.flags`/`flags` (later versions). A partition without a name is
//! skipped.

use super::jobs::{int, text, SlurmJob};
use crate::domain::nodelist;
use crate::domain::{Partition, PartitionLimits, PartitionState};
use serde_json::Value;
use std::collections::HashMap;

/// A limit: unset, infinite and Slurm's "unlimited" (negative) all mean no limit.
fn limit(v: Option<&Value>) -> Option<i64> {
    int(v).filter(|n| *n >= 0)
}

fn words(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn partition(v: &Value, now: chrono::DateTime<chrono::Utc>) -> Option<Partition> {
    let name = text(v.get("name"))?;
    // v0.0.40+: the state and flags live under `partition`.
    let inner = v.get("partition");
    let state = words(
        inner
            .and_then(|p| p.get("state"))
            .or_else(|| v.get("state")),
    )
    .first()
    .map(|s| PartitionState::from_slurm(s))
    .unwrap_or(PartitionState::Unknown);
    let mut flags = words(v.get("flags"));
    flags.extend(words(inner.and_then(|p| p.get("flags"))));
    let is_default = flags.iter().any(|f| f.eq_ignore_ascii_case("default"));
    let (node_list, total_nodes) = match v.get("nodes") {
        Some(Value::Object(n)) => (text(n.get("configured")), int(n.get("total"))),
        other => (text(other), int(v.get("total_nodes"))),
    };
    let nodes = node_list
        .map(|list| {
            nodelist::expand(&list, crate::domain::validate::MAX_NODES).unwrap_or_else(|e| {
                tracing::debug!(partition = %name, error = %e, "partition node list not expanded");
                vec![list]
            })
        })
        .unwrap_or_default();
    let total_cpus = v
        .get("cpus")
        .and_then(|c| int(c.get("total")))
        .or_else(|| int(v.get("total_cpus")));
    let maximums = v.get("maximums");
    let defaults = v.get("defaults");
    let limits = PartitionLimits {
        max_time_minutes: limit(
            maximums
                .and_then(|m| m.get("time"))
                .or_else(|| v.get("max_time_limit")),
        ),
        default_time_minutes: limit(
            defaults
                .and_then(|d| d.get("time"))
                .or_else(|| v.get("default_time_limit")),
        ),
        max_nodes_per_job: limit(
            maximums
                .and_then(|m| m.get("nodes"))
                .or_else(|| v.get("maximum_nodes_per_job")),
        ),
    };
    Some(Partition {
        name,
        state,
        is_default,
        nodes,
        total_nodes: total_nodes.filter(|n| *n >= 0),
        total_cpus: total_cpus.filter(|n| *n >= 0),
        limits,
        jobs_running: 0,
        jobs_pending: 0,
        updated_at: now,
    })
}

/// The partitions of a `/partitions` response, each once (the first entry of a name wins);
/// entries that make no sense are skipped.
pub fn parse_partitions(body: &Value) -> Vec<Partition> {
    let now = crate::domain::now_micros();
    let mut seen = std::collections::HashSet::new();
    body.get("partitions")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|p| partition(p, now))
                .filter(|p| seen.insert(p.name.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets each partition's running and pending job counts from Slurm's job list. A pending job
/// queued for several partitions (`debug,batch`) counts in each; a running one runs in one.
pub fn count_jobs(partitions: &mut [Partition], jobs: &[SlurmJob]) {
    let mut counts: HashMap<&str, (i64, i64)> = HashMap::new();
    for job in jobs {
        let pending = job.state == "PENDING";
        if !pending && !job.is_running() {
            continue;
        }
        let Some(list) = job.partition.as_deref() else {
            continue;
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let entry = counts.entry(name).or_default();
            if pending {
                entry.1 += 1;
            } else {
                entry.0 += 1;
            }
        }
    }
    for p in partitions {
        let (running, pending) = counts.get(p.name.as_str()).copied().unwrap_or_default();
        p.jobs_running = running;
        p.jobs_pending = pending;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Vec<Partition> {
        parse_partitions(&super::super::fixture_body(name))
    }

    fn summary(p: &Partition) -> Value {
        json!([
            p.name,
            p.state.as_str(),
            p.is_default,
            p.nodes,
            p.total_nodes,
            p.total_cpus,
            p.limits.max_time_minutes,
            p.limits.default_time_minutes,
            p.limits.max_nodes_per_job
        ])
    }

    /// Captured from Debian's slurmrestd 22.05 (scripts/dev-slurm.sh: one node `vm` with 2
    /// CPUs, partition `debug`, `Default=YES MaxTime=INFINITE State=UP`).
    #[test]
    fn real_22_05_partition_in_every_version() {
        for v in ["v0.0.37", "v0.0.38"] {
            let parts = fixture(&format!("partitions-{v}.json"));
            assert_eq!(parts.len(), 1, "{v}");
            assert_eq!(
                summary(&parts[0]),
                json!(["debug", "up", true, ["vm"], 1, 2, null, null, null]),
                "{v}"
            );
        }
        // v0.0.36 says nothing of the state.
        let parts = fixture("partitions-v0.0.36.json");
        assert_eq!(
            summary(&parts[0]),
            json!(["debug", "unknown", true, ["vm"], 1, 2, null, null, null])
        );
    }

    /// The same partition after `scontrol update partitionname=debug state=drain
    /// maxtime=2-00:00:00 DefaultTime=30 MaxNodes=4`.
    #[test]
    fn real_22_05_drained_partition_with_limits() {
        let parts = fixture("partitions-v0.0.38.drain.json");
        assert_eq!(
            summary(&parts[0]),
            json!(["debug", "drain", true, ["vm"], 1, 2, 2880, 30, 4])
        );
    }

    #[test]
    fn newer_versions_shape() {
        let parts = fixture("partitions-v0.0.41.handwritten.json");
        let got: Vec<Value> = parts.iter().map(summary).collect();
        assert_eq!(
            got,
            vec![
                json!([
                    "batch",
                    "up",
                    true,
                    ["n01", "n02", "n03"],
                    3,
                    192,
                    2880,
                    60,
                    null
                ]),
                json!(["gpu", "down", false, ["n04"], 1, 64, 1440, null, 1]),
                json!(["old", "inactive", false, [], 0, 0, null, null, null]),
            ],
            "the nameless entry is skipped"
        );
    }

    #[test]
    fn garbage_is_skipped_not_fatal() {
        let body = json!({"partitions": [
            {"state": "UP"},
            {"name": "", "state": "UP"},
            {"name": "a", "state": 5, "nodes": 7, "total_cpus": "x", "max_time_limit": -1,
             "maximum_nodes_per_job": {"set": true, "infinite": false, "number": -3},
             "flags": "default"},
            {"name": "a", "state": "DOWN"},
            {"name": "b", "partition": {"state": []}, "nodes": {"configured": "n[1-"}},
            3
        ]});
        let parts = parse_partitions(&body);
        let got: Vec<Value> = parts.iter().map(summary).collect();
        assert_eq!(
            got,
            vec![
                json!(["a", "unknown", true, [], null, null, null, null, null]),
                json!([
                    "b",
                    "unknown",
                    false,
                    ["n[1-"],
                    null,
                    null,
                    null,
                    null,
                    null
                ]),
            ]
        );
        assert!(parse_partitions(&json!({"errors": []})).is_empty());
    }

    fn job(state: &str, partition: Option<&str>) -> SlurmJob {
        SlurmJob {
            id: "1".into(),
            state: state.into(),
            exit_code: None,
            signal: None,
            user: None,
            partition: partition.map(str::to_owned),
            account: None,
            name: None,
            cluster: None,
            nodes: vec![],
            cpus: None,
            requested_memory_mb: None,
            allocated_memory_mb: None,
            array_job_id: None,
            array_task_id: None,
            start: None,
            end: None,
        }
    }

    #[test]
    fn running_and_pending_jobs_are_counted_per_partition() {
        let mut parts = fixture("partitions-v0.0.41.handwritten.json");
        let jobs = [
            job("RUNNING", Some("batch")),
            job("COMPLETING", Some("batch")),
            job("PENDING", Some("batch,gpu")),
            job("PENDING", Some("gpu")),
            job("COMPLETED", Some("batch")),
            job("CANCELLED", Some("gpu")),
            job("RUNNING", None),
            job("RUNNING", Some("elsewhere")),
        ];
        count_jobs(&mut parts, &jobs);
        let counts: Vec<(&str, i64, i64)> = parts
            .iter()
            .map(|p| (p.name.as_str(), p.jobs_running, p.jobs_pending))
            .collect();
        assert_eq!(counts, [("batch", 2, 1), ("gpu", 0, 2), ("old", 0, 0)]);
    }

    /// A real array with two tasks running and one pending (see the jobs module's test).
    #[test]
    fn real_22_05_array_counts() {
        let jobs =
            super::super::jobs::parse_jobs(&super::super::fixture_body("jobs-v0.0.38.array.json"));
        let mut parts = fixture("partitions-v0.0.38.json");
        count_jobs(&mut parts, &jobs);
        assert_eq!((parts[0].jobs_running, parts[0].jobs_pending), (2, 1));
    }
}
