//! Plain advice drawn from a computed report: each piece rests on a measured figure and a
//! threshold; a figure that was not measured gives none.

use super::*;

/// Plain advice, each from a measured figure; nothing when the job was efficient.
pub(super) fn advise(r: &Report, t: &Thresholds) -> Vec<Advice> {
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
