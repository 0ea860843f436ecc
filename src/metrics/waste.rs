//! Cluster counters of what was allocated and left idle: `hpc_idle_cpu_seconds_total` and
//! `hpc_idle_gpu_seconds_total` per user and account, for Grafana's "Waste" row.
//!
//! Each job sample adds the idle share of its node's allocation over the time since that node's
//! previous sample of the job: (1 − CPU use) × the node's CPUs × Δt, and (1 − utilization) × Δt
//! for each GPU. The agent's CPU percentage is itself the mean over that same interval, so the
//! sum is exact up to the first interval of each node (which has no percentage) and gaps longer
//! than [`MAX_GAP_SECONDS`] (a silent agent: nothing is known of that time, nothing is added).
//! Counters of this process: they start at zero, as Prometheus expects of a restarted target.

use super::text::{self, header, Kind};
use std::collections::BTreeMap;

/// Longest interval between two samples of a node that still counts.
pub(crate) const MAX_GAP_SECONDS: f64 = 600.0;

#[derive(Debug, Default)]
pub(crate) struct Waste {
    /// (user, account) → (idle CPU-seconds, idle GPU-seconds, label set).
    owners: BTreeMap<(String, String), (f64, f64, String)>,
}

impl Waste {
    pub(crate) fn add(&mut self, user: &str, account: &str, cpu_seconds: f64, gpu_seconds: f64) {
        if !(cpu_seconds.is_finite() && gpu_seconds.is_finite()) {
            return;
        }
        let entry = self
            .owners
            .entry((user.to_owned(), account.to_owned()))
            .or_insert_with(|| {
                (
                    0.0,
                    0.0,
                    text::labels(&[("user", user), ("account", account)]),
                )
            });
        entry.0 += cpu_seconds.max(0.0);
        entry.1 += gpu_seconds.max(0.0);
    }

    pub(crate) fn render(&self, out: &mut String) {
        header(
            out,
            "hpc_idle_cpu_seconds_total",
            Kind::Counter,
            "Allocated CPU-seconds left idle by running jobs, per user and account.",
        );
        for (cpu, _, labels) in self.owners.values() {
            text::sample(out, "hpc_idle_cpu_seconds_total", labels, *cpu);
        }
        header(
            out,
            "hpc_idle_gpu_seconds_total",
            Kind::Counter,
            "Allocated GPU-seconds left idle by running jobs, per user and account.",
        );
        for (_, gpu, labels) in self.owners.values() {
            text::sample(out, "hpc_idle_gpu_seconds_total", labels, *gpu);
        }
    }
}

/// Idle CPU-seconds and GPU-seconds of one node's sample: `cpu_percent` of `cpus` busy and
/// each of `gpu_utilization` (percent) over `seconds`.
pub(crate) fn idle(
    seconds: f64,
    cpus: Option<f64>,
    cpu_percent: Option<f64>,
    gpu_utilization: impl Iterator<Item = f64>,
) -> (f64, f64) {
    if !(seconds > 0.0 && seconds <= MAX_GAP_SECONDS) {
        return (0.0, 0.0);
    }
    let cpu = match (cpus, cpu_percent) {
        (Some(c), Some(p)) => c * (1.0 - (p / 100.0).clamp(0.0, 1.0)) * seconds,
        _ => 0.0,
    };
    let gpu = gpu_utilization
        .map(|u| (1.0 - (u / 100.0).clamp(0.0, 1.0)) * seconds)
        .sum();
    (cpu, gpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waste_idle_shares_over_the_interval() {
        assert_eq!(
            idle(10.0, Some(4.0), Some(25.0), [90.0, 0.0].into_iter()),
            (30.0, 11.0)
        );
        assert_eq!(
            idle(0.0, Some(4.0), Some(25.0), std::iter::empty()),
            (0.0, 0.0)
        );
        assert_eq!(
            idle(
                MAX_GAP_SECONDS + 1.0,
                Some(4.0),
                Some(0.0),
                std::iter::empty()
            ),
            (0.0, 0.0),
            "a silent agent's gap adds nothing"
        );
        assert_eq!(idle(10.0, None, Some(0.0), std::iter::empty()), (0.0, 0.0));
        let mut w = Waste::default();
        w.add("alice", "phys", 30.0, 11.0);
        w.add("alice", "phys", 10.0, 0.0);
        let mut out = String::new();
        w.render(&mut out);
        assert!(
            out.contains("hpc_idle_cpu_seconds_total{user=\"alice\",account=\"phys\"} 40\n"),
            "{out}"
        );
        assert!(
            out.contains("hpc_idle_gpu_seconds_total{user=\"alice\",account=\"phys\"} 11\n"),
            "{out}"
        );
    }
}
