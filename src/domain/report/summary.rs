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

/// One node's [`NodeSummary`] while it is folded: the CPU mean kept as sum and count, so that
/// tallies of parts of a series (a sample pack, the rows not yet packed) merge into the whole's.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeTally {
    /// `cpu_usage_mean` stays `None` here; [`NodeTally::finish`] sets it.
    pub summary: NodeSummary,
    pub cpu_usage_sum: f64,
    pub cpu_usage_count: i64,
}

impl NodeTally {
    pub fn new(node: &str) -> NodeTally {
        NodeTally {
            summary: NodeSummary {
                node: node.to_owned(),
                ..NodeSummary::default()
            },
            ..NodeTally::default()
        }
    }

    /// One sample of the node.
    pub fn add(&mut self, s: &MetricSample) {
        let (n, d) = (&mut self.summary, &s.detail);
        n.samples += 1;
        if let Some(c) = s.cpu_usage {
            self.cpu_usage_sum += c;
            self.cpu_usage_count += 1;
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
    }

    /// Another part of the same node's series (any order: every figure is a count, a sum or
    /// a maximum).
    pub fn merge(&mut self, other: &NodeTally) {
        let (n, o) = (&mut self.summary, &other.summary);
        n.samples += o.samples;
        self.cpu_usage_sum += other.cpu_usage_sum;
        self.cpu_usage_count += other.cpu_usage_count;
        n.cpu_time_seconds = max_opt(n.cpu_time_seconds, o.cpu_time_seconds);
        n.cpu_throttled_seconds = max_opt(n.cpu_throttled_seconds, o.cpu_throttled_seconds);
        n.memory_peak_bytes = max_opt(n.memory_peak_bytes, o.memory_peak_bytes);
        n.oom_kills = max_opt(n.oom_kills, o.oom_kills);
        n.io_read_bytes = max_opt(n.io_read_bytes, o.io_read_bytes);
        n.io_write_bytes = max_opt(n.io_write_bytes, o.io_write_bytes);
    }

    pub fn finish(self) -> NodeSummary {
        let (sum, count) = (self.cpu_usage_sum, self.cpu_usage_count);
        NodeSummary {
            cpu_usage_mean: (count > 0).then(|| sum / count as f64),
            ..self.summary
        }
    }
}

impl DeviceSummary {
    /// Folds in the summary of the same device's `later` samples (order matters only for the
    /// first uuid and energy reading and the newest memory size).
    pub fn merge(&mut self, later: &DeviceSummary) {
        self.samples += later.samples;
        if self.uuid.is_none() {
            self.uuid = later.uuid.clone();
        }
        self.utilization_samples += later.utilization_samples;
        self.utilization_sum += later.utilization_sum;
        self.utilization_max = max_opt(self.utilization_max, later.utilization_max);
        self.idle_samples += later.idle_samples;
        self.memory_peak_bytes = max_opt(self.memory_peak_bytes, later.memory_peak_bytes);
        self.memory_total_bytes = later.memory_total_bytes.or(self.memory_total_bytes);
        if self.energy_first.is_none() {
            self.energy_first = later.energy_first;
        }
        self.energy_last = later.energy_last.or(self.energy_last);
    }
}

/// What a report needs of one node's run of samples (a sample pack's, stored beside it), so a
/// report reads a few of these instead of every sample's GPU list. Idle samples are counted
/// against `idle_percent`; a site that changes the threshold gets digests computed anew.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleDigest {
    pub idle_percent: f64,
    pub node: NodeTally,
    pub devices: Vec<DeviceSummary>,
}

impl SampleDigest {
    /// The digest of `node`'s samples (oldest first).
    pub fn of<'a>(
        node: &str,
        samples: impl IntoIterator<Item = &'a MetricSample>,
        thresholds: &Thresholds,
    ) -> SampleDigest {
        let mut tally = NodeTally::new(node);
        let mut gpus = DeviceFold::new(thresholds);
        for s in samples {
            tally.add(s);
            gpus.add(node, &s.detail.gpus);
        }
        SampleDigest {
            idle_percent: thresholds.gpu_idle_percent,
            node: tally,
            devices: gpus.finish(),
        }
    }

    /// Names the node the samples were taken on (`node` everywhere in the digest).
    pub fn rename(&mut self, node: &str) {
        self.node.summary.node = node.to_owned();
        for d in &mut self.devices {
            d.node = node.to_owned();
        }
    }

    /// Whether its idle counts hold under `thresholds`.
    pub fn fits(&self, thresholds: &Thresholds) -> bool {
        self.idle_percent == thresholds.gpu_idle_percent
    }
}

/// Merges summaries of parts of a job's samples (packs, unpacked rows) into the whole job's.
/// Node tallies merge in any order; device summaries by the time their part starts.
#[derive(Debug, Default)]
pub struct SummaryMerge {
    nodes: BTreeMap<String, NodeTally>,
    devices: Vec<(chrono::DateTime<chrono::Utc>, Vec<DeviceSummary>)>,
}

impl SummaryMerge {
    pub fn add_node(&mut self, tally: NodeTally) {
        match self.nodes.get_mut(&tally.summary.node) {
            Some(known) => known.merge(&tally),
            None => {
                self.nodes.insert(tally.summary.node.clone(), tally);
            }
        }
    }

    /// Device summaries of a part whose first sample was taken at `first_at`.
    pub fn add_devices(
        &mut self,
        first_at: chrono::DateTime<chrono::Utc>,
        devices: Vec<DeviceSummary>,
    ) {
        if !devices.is_empty() {
            self.devices.push((first_at, devices));
        }
    }

    pub fn add_digest(&mut self, first_at: chrono::DateTime<chrono::Utc>, digest: SampleDigest) {
        self.add_node(digest.node);
        self.add_devices(first_at, digest.devices);
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.devices.is_empty()
    }

    pub fn finish(mut self) -> (Vec<NodeSummary>, Vec<DeviceSummary>) {
        self.devices.sort_by_key(|(first_at, _)| *first_at);
        let mut devices: BTreeMap<(String, u32), DeviceSummary> = BTreeMap::new();
        for d in self.devices.into_iter().flat_map(|(_, part)| part) {
            match devices.get_mut(&(d.node.clone(), d.index)) {
                Some(known) => known.merge(&d),
                None => {
                    devices.insert((d.node.clone(), d.index), d);
                }
            }
        }
        (
            self.nodes.into_values().map(NodeTally::finish).collect(),
            devices.into_values().collect(),
        )
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
    let mut nodes: BTreeMap<String, NodeTally> = BTreeMap::new();
    let mut gpus = DeviceFold::new(thresholds);
    for s in sorted {
        let name = s.detail.node.as_deref().unwrap_or(&first);
        nodes
            .entry(name.to_owned())
            .or_insert_with(|| NodeTally::new(name))
            .add(s);
        gpus.add(name, &s.detail.gpus);
    }
    let nodes = nodes.into_values().map(NodeTally::finish).collect();
    (nodes, gpus.finish())
}
