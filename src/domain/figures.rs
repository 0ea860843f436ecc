//! A multi-node job measured as one: each node's latest figures for the job ([`NodeFigures`],
//! kept in `jobs.node_figures`) and the whole job's totals computed from them ([`JobTotals`]).
//!
//! Every node of a job runs its own agent, so a job on N nodes gets N sample series. The job's
//! figures are the sums over its nodes (CPU time, memory, I/O), its CPU usage is the share of
//! *all* its allocated CPUs (a node that has not reported yet counts as idle, never as absent),
//! and its GPUs are every node's. Nothing here does I/O.

use crate::domain::gpu::GpuReading;
use crate::domain::MetricSample;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One node's newest figures for a job, and its running aggregates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeFigures {
    /// When the newest sample of the node was collected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// Percent of the node's allocated CPUs (the agent's figure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_usage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_time_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_usage_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_read_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_write_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_usage: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuReading>,
    /// Samples of this node, and the sum and count of those with a CPU percentage.
    pub samples: i64,
    pub cpu_samples: i64,
    pub cpu_sum: f64,
}

impl NodeFigures {
    /// Takes one sample of this node: the aggregates always, the current figures when it is
    /// the newest (a late sample from a spool never overwrites fresher figures); an unknown
    /// figure never overwrites a known one.
    pub fn absorb(&mut self, s: &MetricSample) {
        self.samples += 1;
        if let Some(cpu) = s.cpu_usage {
            self.cpu_samples += 1;
            self.cpu_sum += cpu;
        }
        if self.at.is_some_and(|at| s.timestamp < at) {
            return;
        }
        let d = &s.detail;
        self.at = Some(s.timestamp);
        macro_rules! take {
            ($($field:ident = $value:expr),*) => { $( if $value.is_some() { self.$field = $value; } )* };
        }
        take!(
            cpu_usage = s.cpu_usage,
            cpu_time_seconds = d.cpu_time_seconds,
            memory_usage_bytes = d
                .memory_usage_bytes
                .or(s.memory_usage_mb.map(|mb| mb << 20)),
            memory_peak_bytes = d.memory_peak_bytes,
            oom_kills = d.oom_kills,
            io_read_bytes = d.io_read_bytes,
            io_write_bytes = d.io_write_bytes,
            gpu_usage = s.gpu_usage
        );
        if !d.gpus.is_empty() {
            self.gpus = d.gpus.clone();
        }
    }

    /// Mean CPU percentage of this node's samples.
    pub fn avg_cpu_usage(&self) -> Option<f64> {
        (self.cpu_samples > 0).then(|| self.cpu_sum / self.cpu_samples as f64)
    }
}

/// What `jobs.node_figures` holds: the nodes' figures by node name, and the whole job's maxima
/// seen so far (a maximum of sums cannot be recomputed from the nodes' own maxima).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobFigures {
    pub nodes: BTreeMap<String, NodeFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cpu_usage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<i64>,
}

impl JobFigures {
    /// Takes a sample measured on `node` (a sample without a node is the job's first node's).
    pub fn absorb(&mut self, node: &str, sample: &MetricSample) {
        self.nodes
            .entry(node.to_owned())
            .or_default()
            .absorb(sample);
    }

    /// The whole job's figures over `node_count` allocated nodes holding `allocated_cpus`.
    pub fn totals(&self, node_count: i64, allocated_cpus: Option<i64>) -> JobTotals {
        fn sum<T: std::iter::Sum<T> + Copy>(values: impl Iterator<Item = Option<T>>) -> Option<T> {
            let known: Vec<T> = values.flatten().collect();
            (!known.is_empty()).then(|| known.into_iter().sum())
        }
        let nodes = &self.nodes;
        let node_count = node_count.max(nodes.len() as i64).max(1);
        // Each node's percentage is of its own CPUs; without a per-node count the allocation
        // is taken as spread evenly, so the job's share is the mean over all its nodes.
        let cpu_usage = sum(nodes.values().map(|n| n.cpu_usage)).map(|s| s / node_count as f64);
        let avg_cpu_usage =
            sum(nodes.values().map(NodeFigures::avg_cpu_usage)).map(|s| s / node_count as f64);
        let cores_busy = match (cpu_usage, allocated_cpus) {
            (Some(pct), Some(cpus)) => Some(pct / 100.0 * cpus as f64),
            _ => None,
        };
        let memory_usage_bytes = sum(nodes.values().map(|n| n.memory_usage_bytes));
        let largest = nodes
            .iter()
            .filter_map(|(name, n)| n.memory_usage_bytes.map(|m| (name, m)))
            .max_by_key(|&(_, m)| m);
        JobTotals {
            nodes_reporting: nodes.len() as i64,
            node_count,
            cpu_usage,
            avg_cpu_usage,
            max_cpu_usage: max(self.max_cpu_usage, cpu_usage),
            cores_busy,
            cpu_time_seconds: sum(nodes.values().map(|n| n.cpu_time_seconds)),
            memory_usage_bytes,
            max_memory_bytes: max(self.max_memory_bytes, memory_usage_bytes),
            memory_peak_bytes: sum(nodes.values().map(|n| n.memory_peak_bytes)),
            largest_node: largest.map(|(name, _)| name.clone()),
            largest_node_memory_bytes: largest.map(|(_, m)| m),
            oom_kills: sum(nodes.values().map(|n| n.oom_kills)),
            io_read_bytes: sum(nodes.values().map(|n| n.io_read_bytes)),
            io_write_bytes: sum(nodes.values().map(|n| n.io_write_bytes)),
            gpu_usage: {
                let known: Vec<f64> = nodes.values().filter_map(|n| n.gpu_usage).collect();
                (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
            },
            gpu_count: nodes.values().map(|n| n.gpus.len() as i64).sum(),
        }
    }

    /// Every node's GPUs, in node order.
    pub fn gpus(&self) -> Vec<GpuReading> {
        self.nodes.values().flat_map(|n| n.gpus.clone()).collect()
    }

    /// Records the whole job's current figures in the maxima.
    pub fn update_maxima(&mut self, node_count: i64) {
        let t = self.totals(node_count, None);
        self.max_cpu_usage = t.max_cpu_usage;
        self.max_memory_bytes = t.max_memory_bytes;
    }

    /// The per-node breakdown as the API shows it.
    pub fn per_node(&self) -> Vec<PerNode> {
        self.nodes
            .iter()
            .map(|(name, n)| PerNode {
                node: name.clone(),
                avg_cpu_usage: n.avg_cpu_usage(),
                figures: n.clone(),
            })
            .collect()
    }
}

fn max<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y > x { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The whole job's figures (`totals` of `GET /v1/jobs/{id}`). Absent figures were not
/// measured on any node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobTotals {
    /// Nodes that have reported samples, of the job's `node_count`.
    pub nodes_reporting: i64,
    pub node_count: i64,
    /// Percent of all the job's allocated CPUs busy, now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_usage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg_cpu_usage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cpu_usage: Option<f64>,
    /// CPUs busy now, over all nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores_busy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_time_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_usage_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<i64>,
    /// Sum of the nodes' own peaks (an upper bound of the job's peak: nodes peak at different
    /// times).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub largest_node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub largest_node_memory_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_read_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_write_bytes: Option<i64>,
    /// Mean over the nodes that measured GPU use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_usage: Option<f64>,
    /// Devices seen over all nodes.
    pub gpu_count: i64,
}

/// One node's line of `per_node` in `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerNode {
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg_cpu_usage: Option<f64>,
    #[serde(flatten)]
    pub figures: NodeFigures,
}

/// The figures of a job as `GET /v1/jobs/{id}` adds them: `stored` for a multi-node job, else
/// built from the job's own row and its `newest` sample (a single-node job's figures are its
/// node's).
pub fn of_job(
    job: &crate::domain::Job,
    stored: Option<JobFigures>,
    newest: Option<&MetricSample>,
) -> JobFigures {
    if let Some(figures) = stored {
        return figures;
    }
    let mut figures = JobFigures {
        max_cpu_usage: job.max_cpu_usage,
        max_memory_bytes: job
            .max_memory_usage_bytes
            .or(job.max_memory_usage_mb.map(|mb| mb << 20)),
        ..JobFigures::default()
    };
    if let Some(sample) = newest {
        let node = sample
            .detail
            .node
            .clone()
            .or_else(|| job.nodes.first().cloned())
            .unwrap_or_default();
        let n = figures.nodes.entry(node).or_default();
        n.absorb(sample);
        // The row's aggregates are over every sample of the job.
        n.samples = job.sample_count;
        match job.avg_cpu_usage {
            Some(avg) => (n.cpu_samples, n.cpu_sum) = (1, avg),
            None => (n.cpu_samples, n.cpu_sum) = (0, 0.0),
        }
    }
    figures
}

/// The `totals` and `per_node` fields `GET /v1/jobs/{id}` adds to a job.
pub fn with_figures(job: &crate::domain::Job, figures: &JobFigures) -> serde_json::Value {
    let mut value = serde_json::to_value(job).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut value {
        let totals = figures.totals(job.node_count, job.allocated_cpus.or(job.requested_cpus));
        map.insert(
            "totals".into(),
            serde_json::to_value(totals).unwrap_or_default(),
        );
        map.insert(
            "per_node".into(),
            serde_json::to_value(figures.per_node()).unwrap_or_default(),
        );
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SampleDetail;

    fn sample(secs: i64, cpu: f64, mem: i64, cpu_time: f64) -> MetricSample {
        MetricSample {
            timestamp: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
            cpu_usage: Some(cpu),
            memory_usage_mb: Some(mem >> 20),
            gpu_usage: None,
            detail: SampleDetail {
                cpu_time_seconds: Some(cpu_time),
                memory_usage_bytes: Some(mem),
                io_read_bytes: Some(10),
                ..SampleDetail::default()
            },
        }
    }

    #[test]
    fn figures_two_nodes_are_summed_and_usage_is_of_all_cpus() {
        let mut f = JobFigures::default();
        f.absorb("a", &sample(0, 20.0, 1 << 30, 100.0));
        f.absorb("a", &sample(10, 40.0, 2 << 30, 150.0));
        f.absorb("b", &sample(10, 80.0, 3 << 30, 300.0));
        // A late sample of node a: counted in its mean, but not its current figures.
        f.absorb("a", &sample(5, 30.0, 9 << 30, 120.0));
        let t = f.totals(2, Some(16));
        assert_eq!(t.cpu_usage, Some(60.0));
        assert_eq!(t.cores_busy, Some(9.6));
        assert_eq!(t.cpu_time_seconds, Some(450.0));
        assert_eq!(t.memory_usage_bytes, Some(5 << 30));
        assert_eq!(t.largest_node.as_deref(), Some("b"));
        assert_eq!(t.io_read_bytes, Some(20));
        assert_eq!(t.avg_cpu_usage, Some((30.0 + 80.0) / 2.0));
        assert_eq!(t.nodes_reporting, 2);
    }

    #[test]
    fn figures_a_silent_node_counts_as_idle_cpus() {
        let mut f = JobFigures::default();
        f.absorb("a", &sample(0, 90.0, 1 << 30, 10.0));
        let t = f.totals(3, Some(12));
        assert_eq!(t.cpu_usage, Some(30.0));
        assert_eq!(t.nodes_reporting, 1);
        assert_eq!(t.node_count, 3);
    }

    #[test]
    fn figures_maxima_are_of_the_whole_job() {
        let mut f = JobFigures::default();
        f.absorb("a", &sample(0, 50.0, 4 << 30, 10.0));
        f.absorb("b", &sample(0, 50.0, 4 << 30, 10.0));
        f.update_maxima(2);
        f.absorb("a", &sample(10, 10.0, 1 << 30, 10.0));
        f.update_maxima(2);
        let t = f.totals(2, None);
        assert_eq!(t.max_memory_bytes, Some(8 << 30));
        assert_eq!(t.memory_usage_bytes, Some(5 << 30));
        assert_eq!(t.max_cpu_usage, Some(50.0));
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(serde_json::from_value::<JobFigures>(json).unwrap(), f);
    }
}
