//! Nodes as slurmrestd reports them (`GET /slurm/<version>/nodes`), read tolerantly across API
//! versions and turned into what the store keeps of a node ([`SchedulerNode`]).
//!
//! v0.0.36–v0.0.38 (Slurm 22.05) give `state` as one lower-case word and, from v0.0.37, the flags
//! (`DRAIN`, `NOT_RESPONDING`, `COMPLETING`, ...) in `state_flags`; v0.0.36 has no flags and no
//! `partitions` at all, so a drain shows there only as its reason. v0.0.40 and later give
//! `state` as a list, base state first, flags after. `cpu_load` is the 1-minute load average
//! times 100 and `real_memory` is in MiB in every version. A node without a name or a state is
//! skipped; any other missing field is `None` (the stored value stays).

use super::jobs::{int, text};
use crate::domain::NodeState;
use crate::store::SchedulerNode;
use serde_json::Value;

/// jobscope's state of a Slurm node from its base state and flags, as `sinfo` shows it: a drain
/// wins over everything (an admin took the node out, whatever else it is), then down or not
/// responding, then what the node is doing.
pub fn map_state(base: &str, flags: &[String]) -> NodeState {
    let has = |f: &str| flags.iter().any(|x| x.eq_ignore_ascii_case(f));
    let base = base.to_ascii_uppercase();
    if has("DRAIN") || matches!(base.as_str(), "DRAIN" | "DRAINED" | "DRAINING") {
        return NodeState::Drained;
    }
    if has("NOT_RESPONDING") || base == "DOWN" {
        return NodeState::Down;
    }
    match base.as_str() {
        "ALLOCATED" | "COMPLETING" => NodeState::Allocated,
        "MIXED" => NodeState::Mixed,
        // An idle node still cleaning up after a job is busy with it.
        "IDLE" if has("COMPLETING") => NodeState::Allocated,
        "IDLE" => NodeState::Idle,
        _ => NodeState::Unknown,
    }
}

/// `(base state, flags)` of either encoding.
fn state_parts(v: &Value) -> Option<(String, Vec<String>)> {
    let mut flags: Vec<String> = v
        .get("state_flags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let base = match v.get("state")? {
        Value::String(s) => s.trim().to_owned(),
        Value::Array(a) => {
            let mut words = a.iter().filter_map(Value::as_str).map(str::to_owned);
            let base = words.next()?;
            flags.extend(words);
            base
        }
        _ => return None,
    };
    (!base.is_empty()).then_some((base, flags))
}

fn node(v: &Value) -> Option<SchedulerNode> {
    let name = text(v.get("name"))?;
    let (base, flags) = state_parts(v)?;
    let partitions = v.get("partitions").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    });
    Some(SchedulerNode {
        state: map_state(&base, &flags),
        state_reason: text(v.get("reason")),
        partitions,
        features: features(v.get("features")),
        cpus: int(v.get("cpus")).filter(|c| *c > 0),
        memory_total_bytes: int(v.get("real_memory"))
            .filter(|m| *m > 0)
            .and_then(|mib| mib.checked_mul(1024 * 1024)),
        load_1: int(v.get("cpu_load"))
            .filter(|l| *l >= 0)
            .map(|l| l as f64 / 100.0),
        name,
    })
}

/// A node's features: comma-joined text up to v0.0.39 (`"gpu,ssd"`, empty for none), a list of
/// names from v0.0.40. Absent (or of another shape): `None`, leaving what is stored as it is.
fn features(v: Option<&Value>) -> Option<Vec<String>> {
    let names: Vec<String> = match v? {
        Value::String(joined) => joined.split(',').map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => return None,
    };
    Some(
        names
            .into_iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect(),
    )
}

/// The nodes of a `/nodes` response; entries that make no sense are skipped.
pub fn parse_nodes(body: &Value) -> Vec<SchedulerNode> {
    body.get("nodes")
        .and_then(Value::as_array)
        .map(|nodes| nodes.iter().filter_map(node).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeState::*;

    fn fixture(name: &str) -> Vec<SchedulerNode> {
        parse_nodes(&super::super::fixture_body(name))
    }

    /// Captured from Debian's slurmrestd 22.05 (scripts/dev-slurm.sh, node `vm`, 2 CPUs,
    /// 24105 MiB, load 8.84): one job running on one CPU while the node was drained with the
    /// reason "disk check (jobscope test)" (`sinfo`: drng).
    #[test]
    fn real_22_05_draining_node_in_every_version() {
        for v in ["v0.0.36", "v0.0.37", "v0.0.38"] {
            let nodes = fixture(&format!("nodes-{v}.json"));
            assert_eq!(nodes.len(), 1, "{v}");
            let n = &nodes[0];
            assert_eq!(n.name, "vm");
            assert_eq!(n.cpus, Some(2));
            assert_eq!(n.memory_total_bytes, Some(24105 * 1024 * 1024));
            assert_eq!(n.load_1, Some(8.84));
            assert_eq!(
                n.state_reason.as_deref(),
                Some("disk check (jobscope test)")
            );
            // Slurm's `"features": ""`: none configured, said.
            assert_eq!(n.features, Some(vec![]), "{v}");
            if v == "v0.0.36" {
                // No flags, no partitions in this version: the drain is invisible.
                assert_eq!(n.state, Allocated);
                assert_eq!(n.partitions, None);
            } else {
                assert_eq!(n.state, Drained, "{v}: mixed + DRAIN");
                assert_eq!(n.partitions, Some(vec!["debug".to_owned()]));
            }
        }
    }

    #[test]
    fn real_22_05_idle_and_down() {
        let idle = &fixture("nodes-v0.0.38.idle.json")[0];
        assert_eq!((idle.state, idle.state_reason.as_deref()), (Idle, None));
        // `scontrol update state=down` on a node being drained: still drained, as sinfo says.
        let down = &fixture("nodes-v0.0.38.down.json")[0];
        assert_eq!(
            (down.state, down.state_reason.as_deref()),
            (Drained, Some("power supply"))
        );
    }

    #[test]
    fn newer_versions_shape() {
        let nodes = fixture("nodes-v0.0.41.handwritten.json");
        let summary: Vec<(&str, NodeState, Option<&str>, Option<f64>)> = nodes
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.state,
                    n.state_reason.as_deref(),
                    n.load_1,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("n01", Idle, None, Some(0.12)),
                ("n02", Drained, Some("bad DIMM"), Some(31.5)),
                ("n03", Down, Some("Not responding"), None),
                ("n04", Allocated, None, Some(1.01)),
                ("n05", Unknown, None, None),
            ],
            "the nameless entry is skipped"
        );
        assert_eq!(
            nodes[0].partitions,
            Some(vec!["batch".to_owned(), "debug".to_owned()])
        );
        assert_eq!(nodes[0].memory_total_bytes, Some(257000 * 1024 * 1024));
        assert_eq!(nodes[4].partitions, Some(vec![]));
        // A list from v0.0.40, trimmed; a node that does not say leaves them unknown.
        assert_eq!(
            nodes[0].features,
            Some(vec!["avx512".to_owned(), "ssd".to_owned()])
        );
        assert_eq!(nodes[1].features, None);
    }

    #[test]
    fn state_mapping() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(map_state("idle", &[]), Idle);
        assert_eq!(map_state("ALLOCATED", &[]), Allocated);
        assert_eq!(map_state("completing", &[]), Allocated);
        assert_eq!(map_state("mixed", &[]), Mixed);
        assert_eq!(map_state("down", &[]), Down);
        assert_eq!(map_state("IDLE", &f(&["NOT_RESPONDING"])), Down);
        assert_eq!(map_state("idle", &f(&["DRAIN"])), Drained);
        assert_eq!(map_state("ALLOCATED", &f(&["DRAIN"])), Drained);
        assert_eq!(map_state("DOWN", &f(&["DRAIN", "NOT_RESPONDING"])), Drained);
        assert_eq!(map_state("draining", &[]), Drained);
        assert_eq!(map_state("future", &[]), Unknown);
        assert_eq!(map_state("error", &[]), Unknown);
    }

    #[test]
    fn garbage_is_skipped_not_fatal() {
        let body = serde_json::json!({"nodes": [
            {"name": "a"},
            {"state": "idle"},
            {"name": "", "state": "idle"},
            {"name": "b", "state": []},
            {"name": "c", "state": 5},
            {"name": "d", "state": "idle", "cpus": -1, "real_memory": i64::MAX,
             "cpu_load": "x", "partitions": "debug", "reason": 3, "features": 5},
            7
        ]});
        let nodes = parse_nodes(&body);
        assert_eq!(nodes.len(), 1);
        let d = &nodes[0];
        assert_eq!(d.name, "d");
        assert_eq!(
            (
                d.cpus,
                d.memory_total_bytes,
                d.load_1,
                &d.partitions,
                &d.state_reason,
                &d.features
            ),
            (None, None, None, &None, &None, &None)
        );
        assert!(parse_nodes(&serde_json::json!({"errors": []})).is_empty());
    }
}
