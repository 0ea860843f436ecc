//! The report and the reports list as readable text (`jobscope report`), and the
//! human-readable bytes and durations they use.

use super::*;

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
