//! The efficiency verdict of a job that just finished (its `job_report` event, see
//! `crate::report_events`), as gauges: `hpc_job_cpu_efficiency_ratio` and its siblings. They
//! exist only while the job's series are in their grace period (`--metrics-grace`), so the
//! series count stays bounded by the jobs finishing in that window; the stored report is the
//! record (`GET /v1/jobs/{id}/report`), these are for alerts and "worst jobs now" panels.

use super::text::{header, sample, Kind};
use serde_json::Value;

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
    /// The verdict in a `job_report` payload (`{"job_id", "job", "report"}`), or `None` when it
    /// has no report.
    pub(super) fn from_payload(payload: &Value) -> Option<Verdict> {
        let report = payload.get("report")?.as_object()?;
        let figure = |part: &str, field: &str| {
            report
                .get(part)
                .and_then(|p| p.get(field))
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
        };
        Some(Verdict {
            cpu_efficiency: figure("cpu", "efficiency"),
            memory_use: figure("memory", "use_ratio"),
            gpu_utilization: figure("gpu", "utilization_mean").map(|p| p / 100.0),
            time_use: figure("time", "use_ratio"),
            score: report
                .get("score")
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite()),
        })
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
    use serde_json::json;

    #[test]
    fn a_report_payload_gives_its_figures_and_unmeasured_ones_stay_absent() {
        let payload = json!({"job_id": "1", "report": {
            "cpu": {"efficiency": 0.5}, "memory": {"use_ratio": 0.2},
            "gpu": {"devices": []}, "time": {"use_ratio": 0.1}, "score": 0.43}});
        let v = Verdict::from_payload(&payload).unwrap();
        assert_eq!(v.cpu_efficiency, Some(0.5));
        assert_eq!(v.gpu_utilization, None);
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
        assert_eq!(Verdict::from_payload(&json!({"job_id": "1"})), None);
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
