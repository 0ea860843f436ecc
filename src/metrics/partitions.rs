//! The partition series (`hpc_partition_*`): Slurm's queues as the Slurm backend (or the demo)
//! last stored them, kept from `partition_updated` / `partition_deleted` events and rendered at
//! scrape time like the node series. Separate from the job and node picture because partitions
//! change on their own schedule (each reconcile pass) and carry no per-job state.

use super::text::{self, header, sample, sample_with, Kind};
use crate::domain::{Partition, PartitionState};
use std::collections::BTreeMap;

#[derive(Debug)]
struct PartitionEntry {
    /// `partition="..."`.
    labels: String,
    state: PartitionState,
    nodes: f64,
    cpus: Option<f64>,
    running: f64,
    pending: f64,
}

/// Every partition by name.
#[derive(Debug, Default)]
pub(crate) struct PartitionSeries {
    partitions: BTreeMap<String, PartitionEntry>,
}

impl PartitionSeries {
    /// Starts over from the store's partitions.
    pub(crate) fn reset(&mut self, partitions: &[Partition]) {
        self.partitions.clear();
        for p in partitions {
            self.record(p);
        }
    }

    fn record(&mut self, p: &Partition) {
        let entry = PartitionEntry {
            labels: text::labels(&[("partition", &p.name)]),
            state: p.state,
            nodes: p.total_nodes.unwrap_or(p.nodes.len() as i64) as f64,
            cpus: p.total_cpus.map(|c| c as f64),
            running: p.jobs_running as f64,
            pending: p.jobs_pending as f64,
        };
        self.partitions.insert(p.name.clone(), entry);
    }

    /// Applies a `partition_updated` (`deleted: false`) or `partition_deleted` payload.
    #[cfg(test)]
    pub(crate) fn apply(
        &mut self,
        payload: &serde_json::Value,
        deleted: bool,
    ) -> serde_json::Result<()> {
        use serde::Deserialize as _;
        let change = crate::events::PartitionChange::deserialize(payload)?;
        self.apply_change(&change.partition, deleted);
        Ok(())
    }

    /// Applies a partition's change (`deleted`: it is gone).
    pub(crate) fn apply_change(&mut self, p: &Partition, deleted: bool) {
        if deleted {
            self.partitions.remove(&p.name);
        } else {
            self.record(p);
        }
    }

    pub(crate) fn render(&self, out: &mut String) {
        header(
            out,
            "hpc_partition_jobs",
            Kind::Gauge,
            "Jobs running (state=running: running, completing or suspended) and waiting (state=pending) in the partition, as Slurm last listed them; a job queued for several partitions counts in each.",
        );
        for p in self.partitions.values() {
            sample_with(
                out,
                "hpc_partition_jobs",
                &p.labels,
                ("state", "running"),
                p.running,
            );
            sample_with(
                out,
                "hpc_partition_jobs",
                &p.labels,
                ("state", "pending"),
                p.pending,
            );
        }
        header(
            out,
            "hpc_partition_nodes",
            Kind::Gauge,
            "Nodes of the partition.",
        );
        for p in self.partitions.values() {
            sample(out, "hpc_partition_nodes", &p.labels, p.nodes);
        }
        header(
            out,
            "hpc_partition_cpus",
            Kind::Gauge,
            "CPUs of the partition's nodes.",
        );
        for p in self.partitions.values() {
            if let Some(cpus) = p.cpus {
                sample(out, "hpc_partition_cpus", &p.labels, cpus);
            }
        }
        header(
            out,
            "hpc_partition_state",
            Kind::Gauge,
            "1 for the partition's current state (up, down, drain, inactive, unknown), 0 for the others.",
        );
        for p in self.partitions.values() {
            for state in PartitionState::ALL {
                let value = f64::from(u8::from(p.state == state));
                sample_with(
                    out,
                    "hpc_partition_state",
                    &p.labels,
                    ("state", state.as_str()),
                    value,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(name: &str, state: &str, running: i64) -> serde_json::Value {
        json!({"partition": {"name": name, "state": state, "is_default": false, "nodes": ["n1", "n2"],
            "total_nodes": 2, "total_cpus": 64, "limits": {}, "jobs_running": running,
            "jobs_pending": 3, "updated_at": "2026-11-29T10:00:00Z"}})
    }

    #[test]
    fn updates_render_and_deletes_remove() {
        let mut series = PartitionSeries::default();
        series.apply(&payload("gpu", "up", 5), false).unwrap();
        series.apply(&payload("cpu", "drain", 1), false).unwrap();
        series.apply(&payload("gpu", "down", 4), false).unwrap();
        let mut out = String::new();
        series.render(&mut out);
        for line in [
            "hpc_partition_jobs{partition=\"gpu\",state=\"running\"} 4",
            "hpc_partition_jobs{partition=\"gpu\",state=\"pending\"} 3",
            "hpc_partition_nodes{partition=\"cpu\"} 2",
            "hpc_partition_cpus{partition=\"cpu\"} 64",
            "hpc_partition_state{partition=\"gpu\",state=\"down\"} 1",
            "hpc_partition_state{partition=\"gpu\",state=\"up\"} 0",
            "hpc_partition_state{partition=\"cpu\",state=\"drain\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
        series.apply(&payload("gpu", "down", 4), true).unwrap();
        let mut out = String::new();
        series.render(&mut out);
        assert!(!out.contains("partition=\"gpu\""), "{out}");
        assert!(series
            .apply(&json!({"partition": {"name": 3}}), false)
            .is_err());
    }
}
