//! What the report is computed from: a job's samples summarized per node ([`NodeSummary`])
//! and per GPU device ([`DeviceSummary`]), folded from a sample series by [`summarize`] (the
//! store computes the same summaries in SQL).

use super::*;
use crate::domain::gpu::GpuReading;
use crate::domain::{Job, MetricSample};
use std::collections::BTreeMap;

/// One node's samples of a job, summarized (archived as JSON when the samples expire).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeSummary {
    pub node: String,
    pub samples: i64,
    /// Cumulative CPU seconds: the newest reading (counters start with the job's cgroup).
    pub cpu_time_seconds: Option<f64>,
    /// Mean of the samples' CPU percentages (of the node's allocated CPUs).
    pub cpu_usage_mean: Option<f64>,
    pub cpu_throttled_seconds: Option<f64>,
    /// Largest memory use or peak the samples saw.
    pub memory_peak_bytes: Option<i64>,
    pub oom_kills: Option<i64>,
    pub io_read_bytes: Option<i64>,
    pub io_write_bytes: Option<i64>,
}

/// One GPU device's samples, summarized (archived as JSON when the samples expire).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceSummary {
    pub node: String,
    pub index: u32,
    pub uuid: Option<String>,
    pub samples: i64,
    pub utilization_samples: i64,
    pub utilization_sum: f64,
    pub utilization_max: Option<f64>,
    /// Samples below the idle threshold.
    pub idle_samples: i64,
    pub memory_peak_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub energy_first: Option<f64>,
    pub energy_last: Option<f64>,
}

/// Folds GPU readings into per-device summaries, in the order they were sampled.
#[derive(Debug, Default)]
pub struct DeviceFold {
    devices: BTreeMap<(String, u32), DeviceSummary>,
    idle_percent: f64,
}

impl DeviceFold {
    pub fn new(thresholds: &Thresholds) -> DeviceFold {
        DeviceFold {
            devices: BTreeMap::new(),
            idle_percent: thresholds.gpu_idle_percent,
        }
    }

    /// One sample's readings of `node`'s devices; samples must come oldest first.
    pub fn add(&mut self, node: &str, readings: &[GpuReading]) {
        for g in readings {
            let d = self
                .devices
                .entry((node.to_owned(), g.index))
                .or_insert_with(|| DeviceSummary {
                    node: node.to_owned(),
                    index: g.index,
                    ..DeviceSummary::default()
                });
            d.samples += 1;
            if d.uuid.is_none() {
                d.uuid = g.uuid.clone();
            }
            if let Some(u) = g.utilization_percent {
                d.utilization_samples += 1;
                d.utilization_sum += u;
                d.utilization_max = Some(d.utilization_max.map_or(u, |m: f64| m.max(u)));
                if u < self.idle_percent {
                    d.idle_samples += 1;
                }
            }
            if let Some(m) = g.memory_used_bytes {
                d.memory_peak_bytes = Some(d.memory_peak_bytes.map_or(m, |p| p.max(m)));
            }
            d.memory_total_bytes = g.memory_total_bytes.or(d.memory_total_bytes);
            if let Some(e) = g.energy_joules {
                d.energy_first.get_or_insert(e);
                d.energy_last = Some(e);
            }
        }
    }

    pub fn finish(self) -> Vec<DeviceSummary> {
        self.devices.into_values().collect()
    }
}

fn max_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y > x { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Summaries of a sample series (any order). A sample without a node is the job's first
/// node's.
pub fn summarize(
    job: &Job,
    samples: &[MetricSample],
    thresholds: &Thresholds,
) -> (Vec<NodeSummary>, Vec<DeviceSummary>) {
    let mut sorted: Vec<&MetricSample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.timestamp);
    let first = job.nodes.first().cloned().unwrap_or_default();
    let mut nodes: BTreeMap<String, (NodeSummary, f64, i64)> = BTreeMap::new();
    let mut gpus = DeviceFold::new(thresholds);
    for s in sorted {
        let name = s.detail.node.clone().unwrap_or_else(|| first.clone());
        let d = &s.detail;
        let (n, cpu_sum, cpu_count) = nodes.entry(name.clone()).or_insert_with(|| {
            (
                NodeSummary {
                    node: name.clone(),
                    ..NodeSummary::default()
                },
                0.0,
                0,
            )
        });
        n.samples += 1;
        if let Some(c) = s.cpu_usage {
            *cpu_sum += c;
            *cpu_count += 1;
        }
        n.cpu_time_seconds = max_opt(n.cpu_time_seconds, d.cpu_time_seconds);
        n.cpu_throttled_seconds = max_opt(n.cpu_throttled_seconds, d.cpu_throttled_seconds);
        let memory = max_opt(
            d.memory_peak_bytes,
            d.memory_usage_bytes
                .or(s.memory_usage_mb.map(|mb| mb << 20)),
        );
        n.memory_peak_bytes = max_opt(n.memory_peak_bytes, memory);
        n.oom_kills = max_opt(n.oom_kills, d.oom_kills);
        n.io_read_bytes = max_opt(n.io_read_bytes, d.io_read_bytes);
        n.io_write_bytes = max_opt(n.io_write_bytes, d.io_write_bytes);
        gpus.add(&name, &d.gpus);
    }
    let nodes = nodes
        .into_values()
        .map(|(mut n, sum, count)| {
            n.cpu_usage_mean = (count > 0).then(|| sum / count as f64);
            n
        })
        .collect();
    (nodes, gpus.finish())
}
