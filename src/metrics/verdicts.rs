//! The efficiency verdict of a job that just finished (its `job_report` event, see
//! `crate::report_events`), as gauges: `hpc_job_cpu_efficiency_ratio` and its siblings. They
//! exist only while the job's series are in their grace period (`--metrics-grace`), so the
//! series count stays bounded by the jobs finishing in that window; the stored report is the
//! record (`GET /v1/jobs/{id}/report`), these are for alerts and "worst jobs now" panels.

use super::text::{header, sample, Kind};
use crate::domain::report::Report;

/// The figures of one report that become gauges; `None` where the report says "not measured".
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Verdict {
    cpu_efficiency: Option<f64>,
    memory_use: Option<f64>,
    gpu_utilization: Option<f64>,
    time_use: Option<f64>,
    score: Option<f64>,
}

impl Verdict {
    pub(super) fn of(report: &Report) -> Verdict {
        let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
        Verdict {
            cpu_efficiency: finite(report.cpu.efficiency),
            memory_use: finite(report.memory.use_ratio),
            gpu_utilization: finite(report.gpu.utilization_mean).map(|p| p / 100.0),
            time_use: finite(report.time.use_ratio),
            score: finite(report.score),
        }
    }
}

type Pick = fn(&Verdict) -> Option<f64>;

const GAUGES: [(&str, &str, Pick); 5] = [
    (
        "hpc_job_cpu_efficiency_ratio",
        "A finished job's CPU time over allocated CPUs x elapsed (0-1), from its efficiency report; only during the grace period.",
        |v| v.cpu_efficiency,
    ),
    (
        "hpc_job_memory_use_ratio",
        "A finished job's peak memory over its request, from its efficiency report; only during the grace period.",
        |v| v.memory_use,
    ),
    (
        "hpc_job_gpu_utilization_ratio",
        "A finished job's mean GPU utilization over its devices (0-1), from its efficiency report; only during the grace period.",
        |v| v.gpu_utilization,
    ),
    (
        "hpc_job_time_use_ratio",
        "A finished job's elapsed time over its time limit, from its efficiency report; only during the grace period.",
        |v| v.time_use,
    ),
    (
        "hpc_job_efficiency_score",
        "A finished job's efficiency score (0-1, graded A-F in the report); only during the grace period.",
        |v| v.score,
    ),
];

/// Writes the gauges of `jobs` (each job's `job_id` labels and verdict).
pub(super) fn render<'a>(out: &mut String, jobs: impl Iterator<Item = (&'a str, &'a Verdict)>) {
    let jobs: Vec<(&str, &Verdict)> = jobs.collect();
    for (name, help, pick) in GAUGES {
        header(out, name, Kind::Gauge, help);
        for (labels, verdict) in &jobs {
            if let Some(value) = pick(verdict) {
                sample(out, name, labels, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reports_figures_become_gauges_and_unmeasured_ones_stay_absent() {
        let job = crate::domain::Job::new(
            "1".into(),
            "alice".into(),
            vec!["n1".into()],
            crate::domain::JobState::Completed,
            chrono::Utc::now(),
            "test",
            "test",
            "test",
        );
        let t = crate::domain::report::Thresholds::default();
        let mut report = crate::domain::report::compute(&job, &[], &[], chrono::Utc::now(), &t);
        report.cpu.efficiency = Some(0.5);
        report.memory.use_ratio = Some(0.2);
        report.score = Some(0.43);
        report.gpu.utilization_mean = None;
        let v = Verdict::of(&report);
        let mut out = String::new();
        render(&mut out, [("job_id=\"1\"", &v)].into_iter());
        assert!(
            out.contains("hpc_job_cpu_efficiency_ratio{job_id=\"1\"} 0.5\n"),
            "{out}"
        );
        assert!(
            out.contains("hpc_job_efficiency_score{job_id=\"1\"} 0.43\n"),
            "{out}"
        );
        assert!(!out.contains("hpc_job_gpu_utilization_ratio{"), "{out}");
    }

    #[test]
    fn no_verdicts_write_headers_only() {
        let mut out = String::new();
        render(&mut out, std::iter::empty());
        assert!(
            out.contains("# TYPE hpc_job_cpu_efficiency_ratio gauge\n"),
            "{out}"
        );
        assert!(!out.lines().any(|l| !l.starts_with('#')), "{out}");
    }
}
