//! A reports list (`GET /v1/reports`, `jobscope report --user`): one line per job, the
//! totals, and the `since` bound.

use super::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
