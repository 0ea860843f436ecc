//! The efficiency report of a job: did it use what it asked for? CPU, memory, GPUs, time and
//! I/O against the allocation, plain advice backed by its figures, and a grade.
//!
//! Pure computation: the input is the job and a summary of its samples per node
//! ([`NodeSummary`]) and per GPU device ([`DeviceSummary`]), which [`summarize`] computes from
//! a sample series and the store merges ([`SummaryMerge`]) from SQL over its sample rows and
//! each sample pack's stored [`SampleDigest`] (`store/reports.rs`).
//! A figure that was not measured is `None` and says "not measured"; no advice is ever drawn
//! from it. Every threshold lives in [`Thresholds`], which a site may override
//! (`--report-thresholds FILE`, TOML).
//!
//! This file holds the report's types and [`compute`]; the inputs are in `summary`, the
//! thresholds and grades in `thresholds`, the advice in `advice`, the reports list in `list`
//! and the text forms in `render`.

mod advice;
mod list;
mod render;
mod summary;
mod thresholds;

use advice::advise;
pub use list::{parse_since, ListTotals, ReportLine, ReportList};
pub use render::{bytes, duration, render, render_list};
pub use summary::{
    summarize, DeviceFold, DeviceSummary, NodeSummary, NodeTally, SampleDigest, SummaryMerge,
};
pub use thresholds::Thresholds;

use crate::domain::Job;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::gpu::GpuReading;
    use crate::domain::gpu::GpuVendor as Vendor;
    use crate::domain::{JobState, MetricSample, SampleDetail, SchedulerInfo};

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

    #[test]
    fn digests_of_parts_merge_into_the_summary_of_the_whole() {
        let j = job(&["a", "b"], 8, 4096, 3600);
        let t = Thresholds::default();
        let mut series = Vec::new();
        for i in 0..90i64 {
            let node = if i % 3 == 0 { "b" } else { "a" };
            let mut s = sample(node, i * 40, 10.0 * i as f64, (1 << 30) + (i % 17) * 4096);
            s.cpu_usage = (i % 5 != 0).then_some(20.0 + (i % 9) as f64);
            s.detail.gpus = vec![
                gpu(0, Some((i * 7 % 100) as f64), 500.0 * i as f64),
                gpu(1, (i % 4 != 0).then_some(1.0), 3.0 * i as f64),
            ];
            series.push(s);
        }
        let whole = summarize(&j, &series, &t);
        // Parts as packs would hold them (one node, any order inside), merged in any order.
        let mut merge = SummaryMerge::default();
        let mut parts: Vec<(&str, Vec<MetricSample>)> = Vec::new();
        for node in ["a", "b"] {
            let mine: Vec<MetricSample> = series
                .iter()
                .filter(|s| s.detail.node.as_deref() == Some(node))
                .cloned()
                .collect();
            for chunk in mine.chunks(11) {
                let mut chunk = chunk.to_vec();
                chunk.reverse();
                parts.push((node, chunk));
            }
        }
        parts.reverse();
        for (node, mut part) in parts {
            let first_at = part.iter().map(|s| s.timestamp).min().unwrap();
            part.sort_by_key(|s| s.timestamp);
            merge.add_digest(first_at, SampleDigest::of(node, &part, &t));
        }
        let (nodes, devices) = merge.finish();
        assert_eq!(nodes.len(), 2);
        assert_eq!(devices.len(), 4);
        for (merged, expected) in nodes.iter().zip(&whole.0) {
            let mean = |n: &NodeSummary| n.cpu_usage_mean.unwrap();
            assert!((mean(merged) - mean(expected)).abs() < 1e-9);
            let strip = |n: &NodeSummary| NodeSummary {
                cpu_usage_mean: None,
                ..n.clone()
            };
            assert_eq!(strip(merged), strip(expected));
        }
        assert_eq!(
            devices, whole.1,
            "energy from the first to the last part, idle counts summed"
        );
        assert_eq!(
            compute(&j, &nodes, &devices, t0(), &t),
            compute(&j, &whole.0, &whole.1, t0(), &t)
        );
    }
}
