//! The report's thresholds: every limit the advice and the grade are drawn against, with the
//! defaults, and a site's overrides read from TOML (`--report-thresholds FILE`).

use serde::{Deserialize, Serialize};

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

    pub(super) fn grade(&self, score: f64) -> char {
        match score {
            s if s >= self.grade_a => 'A',
            s if s >= self.grade_b => 'B',
            s if s >= self.grade_c => 'C',
            s if s >= self.grade_d => 'D',
            _ => 'F',
        }
    }
}
