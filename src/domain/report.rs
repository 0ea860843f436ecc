//! The efficiency report of a job: did it use what it asked for? CPU, memory, GPUs, time and
//! I/O against the allocation, plain advice backed by its figures, and a grade.
//!
//! Pure computation: the input is the job and a summary of its samples per node
//! ([`NodeSummary`]) and per GPU device ([`DeviceSummary`]), which the store computes in SQL
//! (`store/reports.rs`) and [`summarize`] computes from a sample series (tests, small jobs).
//! A figure that was not measured is `None` and says "not measured"; no advice is ever drawn
//! from it. Every threshold lives in [`Thresholds`], which a site may override
//! (`--report-thresholds FILE`, TOML).

use crate::domain::gpu::GpuReading;
use crate::domain::{Job, MetricSample};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every threshold of the report, in one place. Ratios are 0..1; GPU utilization is percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// CPU efficiency below this gets advice to ask for fewer CPUs.
    pub cpu_efficiency_low: f64,
    /// Peak memory below this share of the request gets advice to ask for less.
    pub memory_use_low: f64,
    /// A GPU below this utilization (percent) is idle.
    pub gpu_idle_percent: f64,
    /// A GPU idle for more than this share of its samples is named as mostly idle.
    pub gpu_idle_share: f64,
    /// A job that used less than this share of its time limit gets advice to ask for less.
    pub time_use_low: f64,
    /// No advice on jobs shorter than this (seconds): too short to judge.
    pub min_elapsed_seconds: f64,
    /// Lowest score of grades A, B, C and D (below D's: F).
    pub grade_a: f64,
    pub grade_b: f64,
    pub grade_c: f64,
    pub grade_d: f64,
    /// A GPU hour's worth in CPU hours, when lists are sorted by waste.
    pub gpu_hour_weight: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            cpu_efficiency_low: 0.5,
            memory_use_low: 0.25,
            gpu_idle_percent: 5.0,
            gpu_idle_share: 0.5,
            time_use_low: 0.25,
            min_elapsed_seconds: 60.0,
            grade_a: 0.8,
            grade_b: 0.6,
            grade_c: 0.4,
            grade_d: 0.2,
            gpu_hour_weight: 10.0,
        }
    }
}

static SITE: std::sync::OnceLock<Thresholds> = std::sync::OnceLock::new();

impl Thresholds {
    /// The site's thresholds (`--report-thresholds`), else the defaults.
    pub fn site() -> &'static Thresholds {
        SITE.get_or_init(Thresholds::default)
    }

    /// Makes `t` the site's thresholds; only the first call (at start-up) counts.
    pub fn set_site(t: Thresholds) {
        let _ = SITE.set(t);
    }

    /// Reads a site's thresholds (TOML: any of the fields; the others keep their defaults).
    pub fn from_toml(text: &str) -> Result<Thresholds, String> {
        let t: Thresholds = toml::from_str(text).map_err(|e| e.to_string())?;
        let ratios = [
            ("cpu_efficiency_low", t.cpu_efficiency_low),
            ("memory_use_low", t.memory_use_low),
            ("gpu_idle_share", t.gpu_idle_share),
            ("time_use_low", t.time_use_low),
        ];
        for (name, v) in ratios {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, not {v}"));
            }
        }
        if !(t.grade_a >= t.grade_b && t.grade_b >= t.grade_c && t.grade_c >= t.grade_d) {
            return Err("grade_a >= grade_b >= grade_c >= grade_d must hold".into());
        }
        if !(0.0..=100.0).contains(&t.gpu_idle_percent)
            || t.min_elapsed_seconds < 0.0
            || t.gpu_hour_weight < 0.0
        {
            return Err(
                "gpu_idle_percent must be 0..100, min_elapsed_seconds and gpu_hour_weight >= 0"
                    .into(),
            );
        }
        Ok(t)
    }

    fn grade(&self, score: f64) -> char {
        match score {
            s if s >= self.grade_a => 'A',
            s if s >= self.grade_b => 'B',
            s if s >= self.grade_c => 'C',
            s if s >= self.grade_d => 'D',
            _ => 'F',
        }
    }
}

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

/// One node's CPU and memory in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeLine {
    pub node: String,
    pub samples: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_efficiency: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_time_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<i64>,
    /// Peak memory as a share of the node's share of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_use: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuPart {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated: Option<i64>,
    /// CPU time ÷ (allocated CPUs × elapsed), 0..1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub efficiency: Option<f64>,
    /// CPUs busy on average.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores_busy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_time_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_seconds: Option<f64>,
    /// `cpu_time` (cgroup counters) or `usage_samples` (mean of the sampled percentages, when no
    /// counter was read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryPart {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_bytes: Option<i64>,
    /// Sum of the nodes' peaks (exact for one node, an upper bound for several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<i64>,
    /// The job was killed for memory (OOM kills counted, or the scheduler said so).
    pub oom_killed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuLine {
    pub node: String,
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization_max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_joules: Option<f64>,
    /// Below the idle threshold in every sample.
    pub idle: bool,
    /// Below the idle threshold for more than the idle share of its samples.
    pub mostly_idle: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuPart {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated: Option<i64>,
    /// Mean utilization over every device, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization_mean: Option<f64>,
    pub devices: Vec<GpuLine>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimePart {
    pub elapsed_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_wait_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IoPart {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_bytes: Option<i64>,
}

/// One piece of advice, with the figure it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advice {
    /// `cpu`, `memory`, `gpu`, `time` or `oom`.
    pub topic: String,
    pub text: String,
    pub figure: f64,
}

/// A job's efficiency report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub job_id: String,
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub state: String,
    /// The job is still running: the figures so far.
    pub provisional: bool,
    pub node_count: i64,
    pub samples: i64,
    pub cpu: CpuPart,
    pub memory: MemoryPart,
    pub gpu: GpuPart,
    pub time: TimePart,
    pub io: IoPart,
    pub nodes: Vec<NodeLine>,
    pub advice: Vec<Advice>,
    /// 0..1: the measured efficiencies weighted by what they cost; `None` when nothing was
    /// measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grade: Option<char>,
    /// Allocated but unused, over the elapsed time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_hours_unused: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_hours_unused: Option<f64>,
    /// What was not measured, in words ("GPU utilization", ...).
    pub not_measured: Vec<String>,
    pub computed_at: DateTime<Utc>,
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

fn sum_opt<T: std::iter::Sum<T> + Copy>(values: impl Iterator<Item = Option<T>>) -> Option<T> {
    let known: Vec<T> = values.flatten().collect();
    (!known.is_empty()).then(|| known.into_iter().sum())
}

/// Human-readable bytes, binary units.
pub fn bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

/// Human-readable duration.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as i64;
    match s {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// The report of `job` at `now` from its samples' summaries.
pub fn compute(
    job: &Job,
    nodes: &[NodeSummary],
    devices: &[DeviceSummary],
    now: DateTime<Utc>,
    t: &Thresholds,
) -> Report {
    let node_count = job.node_count.max(nodes.len() as i64).max(1);
    let elapsed = job
        .runtime_seconds
        .filter(|_| job.state.is_terminal())
        .unwrap_or_else(|| Job::runtime_at(job.start_time, job.end_time, now));
    let mut not_measured = Vec::new();

    // CPU.
    let allocated_cpus = job.allocated_cpus.or(job.requested_cpus);
    let per_node_cpus = allocated_cpus.map(|c| c as f64 / node_count as f64);
    let node_efficiency = |n: &NodeSummary| -> Option<f64> {
        match (n.cpu_time_seconds, per_node_cpus) {
            (Some(cpu), Some(cpus)) if cpus > 0.0 && elapsed > 0.0 => {
                Some((cpu / (cpus * elapsed)).clamp(0.0, 1.0))
            }
            _ => n.cpu_usage_mean.map(|p| (p / 100.0).clamp(0.0, 1.0)),
        }
    };
    let cpu_time = sum_opt(nodes.iter().map(|n| n.cpu_time_seconds));
    let (efficiency, method) = match (cpu_time, allocated_cpus) {
        (Some(cpu), Some(cpus)) if cpus > 0 && elapsed > 0.0 => (
            Some((cpu / (cpus as f64 * elapsed)).clamp(0.0, 1.0)),
            Some("cpu_time"),
        ),
        _ => {
            // Without counters (or without an allocation): the sampled percentages, a node
            // that never reported counting as idle.
            let means = sum_opt(nodes.iter().map(|n| n.cpu_usage_mean));
            (
                means.map(|s| (s / 100.0 / node_count as f64).clamp(0.0, 1.0)),
                means.map(|_| "usage_samples"),
            )
        }
    };
    if efficiency.is_none() {
        not_measured.push("CPU usage".to_owned());
    }
    let cores_busy = match (efficiency, allocated_cpus) {
        (Some(e), Some(c)) => Some(e * c as f64),
        _ => None,
    };
    let cpu = CpuPart {
        allocated: allocated_cpus,
        efficiency: efficiency.map(|e| round(e, 4)),
        cores_busy: cores_busy.map(|c| round(c, 2)),
        cpu_time_seconds: cpu_time.map(|c| round(c, 3)),
        throttled_seconds: sum_opt(nodes.iter().map(|n| n.cpu_throttled_seconds)),
        method: method.map(str::to_owned),
    };

    // Memory.
    let allocated_memory = job
        .allocated_memory_mb
        .or(job.requested_memory_mb)
        .map(|mb| mb << 20);
    let per_node_memory = allocated_memory.map(|b| b as f64 / node_count as f64);
    let peak = sum_opt(nodes.iter().map(|n| n.memory_peak_bytes));
    let oom_kills = sum_opt(nodes.iter().map(|n| n.oom_kills));
    let scheduler_oom = job
        .scheduler
        .as_ref()
        .and_then(|s| s.raw_state.as_deref())
        .is_some_and(|s| s.eq_ignore_ascii_case("OUT_OF_MEMORY"));
    let memory = MemoryPart {
        allocated_bytes: allocated_memory,
        peak_bytes: peak,
        use_ratio: match (peak, allocated_memory) {
            (Some(p), Some(a)) if a > 0 => Some(round(p as f64 / a as f64, 4)),
            _ => None,
        },
        oom_kills,
        oom_killed: oom_kills.is_some_and(|k| k > 0) || scheduler_oom,
    };
    if peak.is_none() {
        not_measured.push("memory".to_owned());
    }

    // GPUs.
    let allocated_gpus = job
        .allocated_gpus
        .or(job.gpu_count)
        .or(job.requested_gpus)
        .filter(|&g| g > 0);
    let lines: Vec<GpuLine> = devices
        .iter()
        .map(|d| {
            let mean = (d.utilization_samples > 0)
                .then(|| d.utilization_sum / d.utilization_samples as f64);
            let measured = d.utilization_samples > 0;
            GpuLine {
                node: d.node.clone(),
                index: d.index,
                uuid: d.uuid.clone(),
                utilization_mean: mean.map(|m| round(m, 2)),
                utilization_max: d.utilization_max,
                memory_peak_bytes: d.memory_peak_bytes,
                memory_total_bytes: d.memory_total_bytes,
                energy_joules: match (d.energy_first, d.energy_last) {
                    (Some(a), Some(b)) if b >= a => Some(round(b - a, 1)),
                    _ => None,
                },
                idle: measured && d.idle_samples == d.utilization_samples,
                mostly_idle: measured
                    && d.idle_samples as f64 > t.gpu_idle_share * d.utilization_samples as f64,
            }
        })
        .collect();
    let gpu_mean = {
        let means: Vec<f64> = lines.iter().filter_map(|l| l.utilization_mean).collect();
        (!means.is_empty()).then(|| means.iter().sum::<f64>() / means.len() as f64)
    };
    // No device readings (a reports list reads none): the job's mean of its samples' GPU use.
    let gpu_mean = gpu_mean.or(job.avg_gpu_usage.filter(|_| devices.is_empty()));
    // Devices allocated but never seen in a sample count as idle only when others were seen.
    let gpu_mean = gpu_mean.map(|m| {
        let seen = lines.len() as f64;
        match allocated_gpus {
            Some(a) if seen > 0.0 && a as f64 > seen => m * seen / a as f64,
            _ => m,
        }
    });
    if allocated_gpus.is_some() && gpu_mean.is_none() {
        not_measured.push("GPU utilization".to_owned());
    }
    let gpu = GpuPart {
        allocated: allocated_gpus,
        utilization_mean: gpu_mean.map(|m| round(m, 2)),
        devices: lines,
    };

    // Time.
    let scheduler = job.scheduler.as_ref();
    let limit = scheduler
        .and_then(|s| s.time_limit_minutes)
        .map(|m| m as f64 * 60.0);
    let time = TimePart {
        elapsed_seconds: round(elapsed, 3),
        limit_seconds: limit,
        use_ratio: limit.filter(|&l| l > 0.0).map(|l| round(elapsed / l, 4)),
        queue_wait_seconds: scheduler
            .and_then(|s| s.submit_time)
            .map(|submit| Job::runtime_at(submit, Some(job.start_time), submit)),
    };
    let io = IoPart {
        read_bytes: sum_opt(nodes.iter().map(|n| n.io_read_bytes)),
        write_bytes: sum_opt(nodes.iter().map(|n| n.io_write_bytes)),
    };

    let node_lines = nodes
        .iter()
        .map(|n| NodeLine {
            node: n.node.clone(),
            samples: n.samples,
            cpu_efficiency: node_efficiency(n).map(|e| round(e, 4)),
            cpu_time_seconds: n.cpu_time_seconds,
            memory_peak_bytes: n.memory_peak_bytes,
            memory_use: match (n.memory_peak_bytes, per_node_memory) {
                (Some(p), Some(a)) if a > 0.0 => Some(round(p as f64 / a, 4)),
                _ => None,
            },
        })
        .collect();

    // Score: the measured efficiencies, each weighted by what its resource costs (a GPU hour
    // is worth many CPU hours; memory counts least, since it is often asked for headroom).
    let mut weighted = Vec::new();
    if let Some(e) = efficiency {
        weighted.push((e, 1.0));
    }
    if let (Some(m), Some(_)) = (gpu_mean, allocated_gpus) {
        weighted.push(((m / 100.0).clamp(0.0, 1.0), 3.0));
    }
    if let Some(u) = memory.use_ratio {
        weighted.push((u.clamp(0.0, 1.0), 0.5));
    }
    let score = (!weighted.is_empty()).then(|| {
        let total: f64 = weighted.iter().map(|(_, w)| w).sum();
        round(weighted.iter().map(|(v, w)| v * w).sum::<f64>() / total, 4)
    });
    // An OOM-killed job failed for want of memory, not for waste: its score stands, but its
    // grade says it did not finish.
    let grade = score.map(|s| if memory.oom_killed { 'F' } else { t.grade(s) });

    let hours = elapsed / 3600.0;
    let cpu_hours_unused = match (efficiency, allocated_cpus) {
        (Some(e), Some(c)) => Some(round(c as f64 * hours * (1.0 - e), 4)),
        _ => None,
    };
    let gpu_hours_unused = match (gpu_mean, allocated_gpus) {
        (Some(m), Some(g)) => Some(round(
            g as f64 * hours * (1.0 - (m / 100.0).clamp(0.0, 1.0)),
            4,
        )),
        _ => None,
    };

    let mut report = Report {
        job_id: job.id.clone(),
        user: job.user.clone(),
        account: scheduler.and_then(|s| s.account.clone()),
        state: job.state.as_str().to_owned(),
        provisional: !job.state.is_terminal(),
        node_count,
        samples: nodes.iter().map(|n| n.samples).sum(),
        cpu,
        memory,
        gpu,
        time,
        io,
        nodes: node_lines,
        advice: Vec::new(),
        score,
        grade,
        cpu_hours_unused,
        gpu_hours_unused,
        not_measured,
        computed_at: now,
    };
    report.advice = advise(&report, t);
    report
}

/// Plain advice, each from a measured figure; nothing when the job was efficient.
fn advise(r: &Report, t: &Thresholds) -> Vec<Advice> {
    let mut advice = Vec::new();
    let mut say = |topic: &str, text: String, figure: f64| {
        advice.push(Advice {
            topic: topic.to_owned(),
            text,
            figure,
        })
    };
    if r.memory.oom_killed {
        let kills = r.memory.oom_kills.unwrap_or(0);
        say(
            "oom",
            format!(
                "the job ran out of memory ({kills} OOM kill{}): ask for more memory{}",
                if kills == 1 { "" } else { "s" },
                r.memory
                    .peak_bytes
                    .map(|p| format!(" than the {} it reached", bytes(p as f64)))
                    .unwrap_or_default()
            ),
            kills as f64,
        );
    }
    if r.time.elapsed_seconds < t.min_elapsed_seconds {
        return advice;
    }
    if let (Some(e), Some(cpus), Some(busy)) = (r.cpu.efficiency, r.cpu.allocated, r.cpu.cores_busy)
    {
        if e < t.cpu_efficiency_low && cpus > 1 {
            let ask = (busy.ceil() as i64).max(1);
            say(
                "cpu",
                format!(
                    "asked for {cpus} CPUs, kept {busy:.1} busy on average ({:.0} % efficiency): next time ask for {ask}",
                    e * 100.0
                ),
                e,
            );
        }
    }
    if let (Some(u), Some(peak)) = (r.memory.use_ratio, r.memory.peak_bytes) {
        if u < t.memory_use_low && !r.memory.oom_killed {
            say(
                "memory",
                format!(
                    "peak memory was {:.0} % of the request ({} of {}): ask for less",
                    u * 100.0,
                    bytes(peak as f64),
                    bytes(r.memory.allocated_bytes.unwrap_or(0) as f64)
                ),
                u,
            );
        }
    }
    let idle: Vec<&GpuLine> = r.gpu.devices.iter().filter(|d| d.idle).collect();
    let used = r.gpu.devices.len() - idle.len();
    for d in &idle {
        say(
            "gpu",
            format!(
                "GPU {} on {} was never used (max {:.0} %): ask for {} GPU{}",
                d.index,
                d.node,
                d.utilization_max.unwrap_or(0.0),
                used.max(1),
                if used.max(1) == 1 { "" } else { "s" }
            ),
            d.utilization_max.unwrap_or(0.0),
        );
    }
    for d in r.gpu.devices.iter().filter(|d| d.mostly_idle && !d.idle) {
        say(
            "gpu",
            format!(
                "GPU {} on {} was idle for more than half of the job (mean {:.0} %)",
                d.index,
                d.node,
                d.utilization_mean.unwrap_or(0.0)
            ),
            d.utilization_mean.unwrap_or(0.0),
        );
    }
    if let (Some(u), Some(limit)) = (r.time.use_ratio, r.time.limit_seconds) {
        if u < t.time_use_low && r.provisional.eq(&false) {
            say(
                "time",
                format!(
                    "ran {} of a {} limit: a shorter limit starts sooner",
                    duration(r.time.elapsed_seconds),
                    duration(limit)
                ),
                u,
            );
        }
    }
    advice
}

/// The report as a readable block, like `jobstats JOBID`.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let nm = "not measured";
    let pct = |v: Option<f64>| v.map_or(nm.to_owned(), |v| format!("{:.1} %", v * 100.0));
    let _ = writeln!(
        out,
        "Job {} ({}{}), {}{}",
        r.job_id,
        r.user,
        r.account
            .as_deref()
            .map(|a| format!(", account {a}"))
            .unwrap_or_default(),
        r.state,
        if r.provisional {
            " (provisional: still running)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  Grade:      {}{}",
        r.grade.map_or(nm.to_owned(), |g| g.to_string()),
        r.score
            .map(|s| format!(" (score {:.2})", s))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  Time:       {} elapsed{}{}",
        duration(r.time.elapsed_seconds),
        r.time
            .limit_seconds
            .map(|l| format!(" of a {} limit", duration(l)))
            .unwrap_or_default(),
        r.time
            .queue_wait_seconds
            .map(|w| format!(", waited {} in the queue", duration(w)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  CPU:        {} efficiency, {} of {} CPUs busy on average",
        pct(r.cpu.efficiency),
        r.cpu
            .cores_busy
            .map_or(nm.to_owned(), |c| format!("{c:.1}")),
        r.cpu.allocated.map_or("?".to_owned(), |c| c.to_string())
    );
    let _ = writeln!(
        out,
        "  Memory:     peak {} of {} ({}){}",
        r.memory
            .peak_bytes
            .map_or(nm.to_owned(), |p| bytes(p as f64)),
        r.memory
            .allocated_bytes
            .map_or("?".to_owned(), |a| bytes(a as f64)),
        pct(r.memory.use_ratio),
        if r.memory.oom_killed {
            ", OOM-killed"
        } else {
            ""
        }
    );
    if r.gpu.allocated.is_some() || !r.gpu.devices.is_empty() {
        let _ = writeln!(
            out,
            "  GPUs:       {} allocated, mean utilization {}",
            r.gpu.allocated.map_or("?".to_owned(), |g| g.to_string()),
            r.gpu
                .utilization_mean
                .map_or(nm.to_owned(), |m| format!("{m:.1} %"))
        );
        for d in &r.gpu.devices {
            let _ = writeln!(
                out,
                "    {} GPU {}: mean {}, max {}, memory peak {}{}",
                d.node,
                d.index,
                d.utilization_mean
                    .map_or(nm.to_owned(), |m| format!("{m:.1} %")),
                d.utilization_max
                    .map_or(nm.to_owned(), |m| format!("{m:.0} %")),
                d.memory_peak_bytes
                    .map_or(nm.to_owned(), |m| bytes(m as f64)),
                d.energy_joules
                    .map(|e| format!(", {:.1} Wh", e / 3600.0))
                    .unwrap_or_default()
            );
        }
    }
    let _ = writeln!(
        out,
        "  I/O:        read {}, written {}",
        r.io.read_bytes.map_or(nm.to_owned(), |b| bytes(b as f64)),
        r.io.write_bytes.map_or(nm.to_owned(), |b| bytes(b as f64))
    );
    if r.nodes.len() > 1 {
        for n in &r.nodes {
            let _ = writeln!(
                out,
                "    {}: CPU {}, memory peak {}",
                n.node,
                pct(n.cpu_efficiency),
                n.memory_peak_bytes
                    .map_or(nm.to_owned(), |m| bytes(m as f64))
            );
        }
    }
    let too_short = Thresholds::site().min_elapsed_seconds;
    if r.advice.is_empty() && r.time.elapsed_seconds < too_short {
        // No advice is drawn for short jobs at all: saying they used their share would be a guess.
        let _ = writeln!(
            out,
            "  Advice:     none: too short to judge (under {})",
            duration(too_short)
        );
    } else if r.advice.is_empty() {
        let _ = writeln!(out, "  Advice:     none: the job used what it asked for");
    } else {
        let _ = writeln!(out, "  Advice:");
        for a in &r.advice {
            let _ = writeln!(out, "    - {}", a.text);
        }
    }
    out
}

/// One job's line in a reports list (`GET /v1/reports`, `jobscope report --user`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportLine {
    pub job_id: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grade: Option<char>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_efficiency: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_use: Option<f64>,
    pub elapsed_seconds: f64,
    pub cpu_hours_allocated: f64,
    pub gpu_hours_allocated: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_hours_unused: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_hours_unused: Option<f64>,
    /// The first piece of advice, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

impl ReportLine {
    pub fn of(r: &Report) -> ReportLine {
        let hours = r.time.elapsed_seconds / 3600.0;
        ReportLine {
            job_id: r.job_id.clone(),
            user: r.user.clone(),
            account: r.account.clone(),
            state: r.state.clone(),
            grade: r.grade,
            score: r.score,
            cpu_efficiency: r.cpu.efficiency,
            gpu_utilization: r.gpu.utilization_mean,
            memory_use: r.memory.use_ratio,
            elapsed_seconds: r.time.elapsed_seconds,
            cpu_hours_allocated: round(r.cpu.allocated.unwrap_or(0) as f64 * hours, 4),
            gpu_hours_allocated: round(r.gpu.allocated.unwrap_or(0) as f64 * hours, 4),
            cpu_hours_unused: r.cpu_hours_unused,
            gpu_hours_unused: r.gpu_hours_unused,
            advice: r.advice.first().map(|a| a.text.clone()),
        }
    }

    /// What the line wasted, in CPU hours (a GPU hour counts as `gpu_hour_weight` of them).
    pub fn waste(&self, t: &Thresholds) -> f64 {
        self.cpu_hours_unused.unwrap_or(0.0)
            + self.gpu_hours_unused.unwrap_or(0.0) * t.gpu_hour_weight
    }
}

/// The totals of a reports list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListTotals {
    pub jobs: i64,
    pub cpu_hours_allocated: f64,
    pub cpu_hours_unused: f64,
    pub gpu_hours_allocated: f64,
    pub gpu_hours_unused: f64,
}

impl ListTotals {
    pub fn of(lines: &[ReportLine]) -> ListTotals {
        let mut t = ListTotals::default();
        for l in lines {
            t.jobs += 1;
            t.cpu_hours_allocated += l.cpu_hours_allocated;
            t.gpu_hours_allocated += l.gpu_hours_allocated;
            t.cpu_hours_unused += l.cpu_hours_unused.unwrap_or(0.0);
            t.gpu_hours_unused += l.gpu_hours_unused.unwrap_or(0.0);
        }
        t.cpu_hours_allocated = round(t.cpu_hours_allocated, 3);
        t.gpu_hours_allocated = round(t.gpu_hours_allocated, 3);
        t.cpu_hours_unused = round(t.cpu_hours_unused, 3);
        t.gpu_hours_unused = round(t.gpu_hours_unused, 3);
        t
    }
}

/// A reports list: `GET /v1/reports`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportList {
    pub since: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub sort: String,
    pub jobs: Vec<ReportLine>,
    pub totals: ListTotals,
}

/// `since` of a reports list: an RFC 3339 time, or an age before `now` (`7d`, `24h`, `90m`).
pub fn parse_since(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.to_utc());
    }
    let bad =
        || format!("since must be an RFC 3339 time or an age like 7d, 24h or 90m, not {raw:?}");
    // The unit is the last character, whatever its width (a byte split could cut a UTF-8 one:
    // `?since=Ü=Ñº` panicked here, found by scripts/fuzz-api.sh).
    let Some(unit_char) = raw.chars().last() else {
        return Err(bad());
    };
    let (number, unit) = raw.split_at(raw.len() - unit_char.len_utf8());
    let n: i64 = number.parse().map_err(|_| bad())?;
    if !(0..=3650 * 24 * 60).contains(&n) {
        return Err(bad());
    }
    let age = match unit {
        "d" => chrono::Duration::days(n),
        "h" => chrono::Duration::hours(n),
        "m" => chrono::Duration::minutes(n),
        _ => return Err(bad()),
    };
    Ok(now - age)
}

/// A reports list as a table, worst first as given.
pub fn render_list(list: &ReportList) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0}%", v * 100.0));
    let _ = writeln!(
        out,
        "{:<14} {:<10} {:<10} {:>5} {:>6} {:>6} {:>6} {:>10} {:>9} {:>9}  advice",
        "JOB", "USER", "STATE", "GRADE", "CPU", "GPU", "MEM", "ELAPSED", "CPU-H IDLE", "GPU-H IDLE"
    );
    for l in &list.jobs {
        let _ = writeln!(
            out,
            "{:<14} {:<10} {:<10} {:>5} {:>6} {:>6} {:>6} {:>10} {:>9.1} {:>9.1}  {}",
            l.job_id,
            l.user,
            l.state,
            l.grade.map_or("-".to_owned(), |g| g.to_string()),
            pct(l.cpu_efficiency),
            l.gpu_utilization
                .map_or("-".to_owned(), |g| format!("{g:.0}%")),
            pct(l.memory_use),
            duration(l.elapsed_seconds),
            l.cpu_hours_unused.unwrap_or(0.0),
            l.gpu_hours_unused.unwrap_or(0.0),
            l.advice.as_deref().unwrap_or("")
        );
    }
    let t = &list.totals;
    let _ = writeln!(
        out,
        "{} jobs: {:.1} of {:.1} CPU-hours and {:.1} of {:.1} GPU-hours allocated but unused",
        t.jobs,
        t.cpu_hours_unused,
        t.cpu_hours_allocated,
        t.gpu_hours_unused,
        t.gpu_hours_allocated
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::gpu::GpuVendor as Vendor;
    use crate::domain::{JobState, SampleDetail, SchedulerInfo};

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn job(nodes: &[&str], cpus: i64, memory_mb: i64, elapsed: i64) -> Job {
        let mut j = Job::new(
            "42".into(),
            "alice".into(),
            nodes.iter().map(|n| n.to_string()).collect(),
            JobState::Completed,
            t0(),
            "c",
            "slurm",
            "prolog-v1",
        );
        j.end_time = Some(t0() + chrono::Duration::seconds(elapsed));
        j.runtime_seconds = Some(elapsed as f64);
        j.allocated_cpus = Some(cpus);
        j.allocated_memory_mb = Some(memory_mb);
        j.scheduler = Some(SchedulerInfo {
            time_limit_minutes: Some(24 * 60),
            submit_time: Some(t0() - chrono::Duration::seconds(90)),
            account: Some("phys".into()),
            ..SchedulerInfo::default()
        });
        j
    }

    fn sample(node: &str, secs: i64, cpu_time: f64, mem: i64) -> MetricSample {
        MetricSample {
            timestamp: t0() + chrono::Duration::seconds(secs),
            cpu_usage: None,
            memory_usage_mb: Some(mem >> 20),
            gpu_usage: None,
            detail: SampleDetail {
                node: Some(node.into()),
                cpu_time_seconds: Some(cpu_time),
                memory_usage_bytes: Some(mem),
                oom_kills: Some(0),
                io_read_bytes: Some(secs * 10),
                ..SampleDetail::default()
            },
        }
    }

    fn report(job: &Job, samples: &[MetricSample]) -> Report {
        let t = Thresholds::default();
        let (nodes, devices) = summarize(job, samples, &t);
        compute(job, &nodes, &devices, t0() + chrono::Duration::days(2), &t)
    }

    #[test]
    fn report_cpu_efficiency_is_cpu_time_over_allocated_time() {
        // 64 CPUs for 1 h; 3.1 CPUs busy: 3.1 * 3600 CPU seconds.
        let j = job(&["n1"], 64, 65536, 3600);
        let samples = [
            sample("n1", 1800, 3.1 * 1800.0, 1 << 30),
            sample("n1", 3600, 3.1 * 3600.0, 2 << 30),
        ];
        let r = report(&j, &samples);
        assert_eq!(r.cpu.efficiency, Some(round(3.1 / 64.0, 4)));
        assert_eq!(r.cpu.cores_busy, Some(3.1));
        assert_eq!(r.cpu.method.as_deref(), Some("cpu_time"));
        assert_eq!(r.memory.peak_bytes, Some(2 << 30));
        assert_eq!(r.memory.use_ratio, Some(round(2.0 / 64.0, 4)));
        assert_eq!(r.io.read_bytes, Some(36000));
        assert_eq!(r.time.queue_wait_seconds, Some(90.0));
        assert!(!r.provisional);
        let texts: Vec<&str> = r.advice.iter().map(|a| a.text.as_str()).collect();
        assert!(
            texts
                .iter()
                .any(|t| t.contains("asked for 64 CPUs, kept 3.1 busy") && t.contains("ask for 4")),
            "{texts:?}"
        );
        assert!(
            texts.iter().any(|t| t.starts_with("peak memory was 3 %")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("ran 1 h 0 min of a 1 d 0 h limit")),
            "{texts:?}"
        );
        assert_eq!(r.grade, Some('F'));
        let unused = r.cpu_hours_unused.unwrap();
        assert!((unused - (64.0 - 3.1)).abs() < 0.01, "{unused}");
        let text = render(&r);
        assert!(
            text.contains("Job 42 (alice, account phys), completed"),
            "{text}"
        );
        assert!(text.contains("4.8 % efficiency, 3.1 of 64 CPUs"), "{text}");
    }

    #[test]
    fn report_an_efficient_job_gets_no_advice() {
        let mut j = job(&["n1"], 4, 1024, 600);
        j.scheduler.as_mut().unwrap().time_limit_minutes = Some(12);
        let r = report(&j, &[sample("n1", 600, 4.0 * 570.0, 900 << 20)]);
        assert_eq!(r.advice, vec![], "{r:?}");
        assert_eq!(r.grade, Some('A'));
        assert!(render(&r).contains("none: the job used what it asked for"));
    }

    #[test]
    fn a_short_job_is_not_said_to_have_used_what_it_asked_for() {
        // The calibrated e2e job: 10 s, one CPU of two busy, 200 MiB of 1 GiB.
        let j = job(&["n1"], 2, 1024, 10);
        let r = report(&j, &[sample("n1", 10, 10.0, 200 << 20)]);
        assert_eq!(r.advice, vec![], "{r:?}");
        let text = render(&r);
        assert!(
            text.contains("none: too short to judge (under 1 min)"),
            "{text}"
        );
        assert!(!text.contains("used what it asked for"), "{text}");
    }

    #[test]
    fn report_without_samples_says_not_measured_and_advises_nothing_from_it() {
        let mut j = job(&["n1"], 8, 4096, 600);
        j.scheduler.as_mut().unwrap().time_limit_minutes = Some(12);
        let r = report(&j, &[]);
        assert_eq!(r.cpu.efficiency, None);
        assert_eq!(r.memory.peak_bytes, None);
        assert_eq!(r.score, None);
        assert_eq!(r.grade, None);
        assert_eq!(r.advice, vec![]);
        assert_eq!(r.not_measured, vec!["CPU usage", "memory"]);
        let text = render(&r);
        assert!(text.contains("CPU:        not measured"), "{text}");
        assert!(text.contains("Grade:      not measured"), "{text}");
    }

    fn gpu(index: u32, util: Option<f64>, energy: f64) -> GpuReading {
        let mut g = GpuReading::new(index, Vendor::Nvidia);
        g.utilization_percent = util;
        g.memory_used_bytes = Some(1 << 30);
        g.memory_total_bytes = Some(80 << 30);
        g.energy_joules = Some(energy);
        g
    }

    #[test]
    fn report_names_an_idle_gpu_and_says_when_gpu_figures_are_missing() {
        let mut j = job(&["g1"], 8, 8192, 3600);
        j.allocated_gpus = Some(2);
        let mut samples = Vec::new();
        for i in 0..10 {
            let mut s = sample("g1", i * 360 + 360, 8.0 * (i * 360 + 360) as f64, 4 << 30);
            s.detail.gpus = vec![
                gpu(0, Some(90.0), 1000.0 * i as f64),
                gpu(1, Some(1.0), 10.0 * i as f64),
            ];
            samples.push(s);
        }
        let r = report(&j, &samples);
        assert_eq!(r.gpu.devices.len(), 2);
        assert!(r.gpu.devices[1].idle && !r.gpu.devices[0].idle);
        assert_eq!(r.gpu.devices[0].energy_joules, Some(9000.0));
        assert_eq!(r.gpu.utilization_mean, Some(45.5));
        assert!(
            r.advice
                .iter()
                .any(|a| a.text.starts_with("GPU 1 on g1 was never used")
                    && a.text.ends_with("ask for 1 GPU")),
            "{:?}",
            r.advice
        );
        let unused = r.gpu_hours_unused.unwrap();
        assert!((unused - 2.0 * (1.0 - 0.455)).abs() < 1e-3, "{unused}");

        // The same job whose agent saw no GPU figures: nothing said about GPUs but that.
        for s in &mut samples {
            s.detail.gpus.clear();
        }
        let r = report(&j, &samples);
        assert_eq!(r.gpu.utilization_mean, None);
        assert!(r.not_measured.contains(&"GPU utilization".to_owned()));
        assert!(r.advice.iter().all(|a| a.topic != "gpu"), "{:?}", r.advice);
        assert!(render(&r).contains("mean utilization not measured"));
    }

    #[test]
    fn report_of_a_three_node_job_sums_its_nodes() {
        // 3 nodes × 4 CPUs for 1000 s: nodes busy 4, 2 and 0 CPUs.
        let j = job(&["a", "b", "c"], 12, 3 * 4096, 1000);
        let samples = [
            sample("a", 1000, 4000.0, 3 << 30),
            sample("b", 1000, 2000.0, 1 << 30),
            sample("c", 1000, 0.0, 1 << 29),
            sample("a", 500, 2000.0, 3 << 30),
        ];
        let r = report(&j, &samples);
        assert_eq!(r.node_count, 3);
        assert_eq!(r.cpu.efficiency, Some(0.5));
        assert_eq!(r.cpu.cores_busy, Some(6.0));
        assert_eq!(r.nodes.len(), 3);
        assert_eq!(r.nodes[0].cpu_efficiency, Some(1.0));
        assert_eq!(r.nodes[1].cpu_efficiency, Some(0.5));
        assert_eq!(r.nodes[2].cpu_efficiency, Some(0.0));
        assert_eq!(r.nodes[0].memory_use, Some(0.75));
        assert_eq!(r.memory.peak_bytes, Some((3 << 30) + (1 << 30) + (1 << 29)));
        assert_eq!(r.io.read_bytes, Some(30000));
        assert!(render(&r).contains("    c: CPU 0.0 %"));
    }

    #[test]
    fn report_of_an_oom_killed_job() {
        let mut j = job(&["n1"], 2, 1024, 300);
        j.state = JobState::Failed;
        let mut s = sample("n1", 300, 500.0, 1024 << 20);
        s.detail.oom_kills = Some(1);
        let r = report(&j, &[s]);
        assert!(r.memory.oom_killed);
        assert_eq!(r.grade, Some('F'));
        assert_eq!(r.advice[0].topic, "oom");
        assert!(r.advice[0].text.contains("1 OOM kill)"), "{:?}", r.advice);
        assert!(r.advice.iter().all(|a| a.topic != "memory"));
        assert!(render(&r).contains("OOM-killed"));
        // The scheduler's word alone also counts.
        let mut j2 = j.clone();
        j2.scheduler.as_mut().unwrap().raw_state = Some("OUT_OF_MEMORY".into());
        assert!(report(&j2, &[]).memory.oom_killed);
    }

    #[test]
    fn since_takes_ages_and_times_and_refuses_the_rest_without_panicking() {
        let now = Utc::now();
        assert_eq!(
            parse_since("7d", now).unwrap(),
            now - chrono::Duration::days(7)
        );
        assert_eq!(
            parse_since("90m", now).unwrap(),
            now - chrono::Duration::minutes(90)
        );
        for bad in ["", "d", "7", "7w", "Ü=Ñº", "7º", "º", "-1d", "yesterday"] {
            assert!(parse_since(bad, now).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn report_of_a_running_job_is_provisional_and_falls_back_to_sampled_percentages() {
        let mut j = job(&["n1", "n2"], 8, 8192, 0);
        j.state = JobState::Running;
        j.end_time = None;
        j.runtime_seconds = None;
        let mut a = sample("n1", 100, 0.0, 1 << 30);
        a.detail.cpu_time_seconds = None;
        a.cpu_usage = Some(60.0);
        let r = report(&j, &[a]);
        assert!(r.provisional);
        // n2 never reported: half the CPUs idle.
        assert_eq!(r.cpu.efficiency, Some(0.3));
        assert_eq!(r.cpu.method.as_deref(), Some("usage_samples"));
        assert!(r.advice.iter().all(|a| a.topic != "time"));
    }

    #[test]
    fn report_thresholds_come_from_toml() {
        let t = Thresholds::from_toml("cpu_efficiency_low = 0.7\ngrade_a = 0.9\n").unwrap();
        assert_eq!(t.cpu_efficiency_low, 0.7);
        assert_eq!(t.grade_a, 0.9);
        assert_eq!(t.memory_use_low, Thresholds::default().memory_use_low);
        assert!(Thresholds::from_toml("cpu_efficiency_low = 2").is_err());
        assert!(Thresholds::from_toml("no_such = 1").is_err());
        assert!(Thresholds::from_toml("grade_a = 0.1").is_err());
    }
}
