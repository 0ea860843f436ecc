//! Rolled-up samples: a job's samples folded into time buckets per node, each numeric figure
//! kept as count / min / sum / max (so buckets merge exactly into coarser ones, and the mean is
//! `sum / count`), GPU figures per device. What `GET /v1/jobs/{id}/metrics?resolution=` serves
//! past the raw samples, and how `auto` picks its bucket width. Pure: the store keeps the 5-minute
//! buckets (`store::rollups`), this module makes, merges and shapes them.

use crate::domain::gpu::GpuReading;
use crate::domain::MetricSample;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Width of the stored buckets, seconds.
pub const STORED_SECONDS: i64 = 300;

/// `auto` answers at most about this many points.
pub const AUTO_MAX_POINTS: i64 = 1000;

/// Bucket widths `auto` may pick, finest first (the 1-minute one only while raw samples exist).
pub const AUTO_WIDTHS: [i64; 8] = [60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86_400];

/// The `resolution` parameter of `GET /v1/jobs/{id}/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resolution {
    /// Every stored sample, as before rollups existed.
    #[default]
    Raw,
    OneMinute,
    FiveMinutes,
    /// The finest of raw and [`AUTO_WIDTHS`] that fits in [`AUTO_MAX_POINTS`].
    Auto,
}

impl Resolution {
    pub const NAMES: [&'static str; 4] = ["raw", "1m", "5m", "auto"];

    pub fn parse(text: &str) -> Option<Resolution> {
        match text {
            "raw" => Some(Resolution::Raw),
            "1m" => Some(Resolution::OneMinute),
            "5m" => Some(Resolution::FiveMinutes),
            "auto" => Some(Resolution::Auto),
            _ => None,
        }
    }
}

/// The name of a bucket width in answers: `1m`, `5m`, `15m`, `1h`, `1d`.
pub fn width_name(seconds: i64) -> String {
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The finest width of [`AUTO_WIDTHS`] (from `finest` up) whose buckets over `span_seconds`,
/// times `series` (one per node), stay within [`AUTO_MAX_POINTS`]; the coarsest otherwise.
pub fn auto_width(span_seconds: i64, series: i64, finest: i64) -> i64 {
    let series = series.max(1);
    let fits = |w: i64| (span_seconds.max(1) + w - 1) / w * series <= AUTO_MAX_POINTS;
    AUTO_WIDTHS
        .into_iter()
        .filter(|w| *w >= finest)
        .find(|w| fits(*w))
        .unwrap_or(AUTO_WIDTHS[AUTO_WIDTHS.len() - 1])
}

/// Start of the `width`-second bucket holding `t` (buckets are aligned on the Unix epoch).
pub fn bucket_start(t: DateTime<Utc>, width: i64) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(width) * width;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

/// One figure over a bucket: how many samples had it, and their min, sum and max. Stored as
/// `[n, min, sum, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "[f64; 4]", into = "[f64; 4]")]
pub struct Stat {
    pub n: i64,
    pub min: f64,
    pub sum: f64,
    pub max: f64,
}

impl From<[f64; 4]> for Stat {
    fn from([n, min, sum, max]: [f64; 4]) -> Stat {
        Stat {
            n: n as i64,
            min,
            sum,
            max,
        }
    }
}

impl From<Stat> for [f64; 4] {
    fn from(s: Stat) -> [f64; 4] {
        [s.n as f64, s.min, s.sum, s.max]
    }
}

impl Stat {
    fn of(v: f64) -> Stat {
        Stat {
            n: 1,
            min: v,
            sum: v,
            max: v,
        }
    }

    fn merge(&mut self, other: &Stat) {
        self.n += other.n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.n.max(1) as f64
    }
}

/// Figures by name.
pub type Figures = BTreeMap<String, Stat>;

fn add(figures: &mut Figures, name: &str, value: Option<f64>) {
    let Some(v) = value.filter(|v| v.is_finite()) else {
        return;
    };
    match figures.get_mut(name) {
        Some(stat) => stat.merge(&Stat::of(v)),
        None => {
            figures.insert(name.to_owned(), Stat::of(v));
        }
    }
}

fn merge_figures(into: &mut Figures, from: &Figures) {
    for (name, stat) in from {
        match into.get_mut(name) {
            Some(s) => s.merge(stat),
            None => {
                into.insert(name.clone(), *stat);
            }
        }
    }
}

/// A sample's job-level numeric figures, by their JSON names (pressure flattened as
/// `pressure_<resource>_some_avg10` and `..._some_total_usec`).
fn sample_figures(s: &MetricSample, figures: &mut Figures) {
    let d = &s.detail;
    let int = |v: Option<i64>| v.map(|v| v as f64);
    let pairs = [
        ("cpu_usage", s.cpu_usage),
        ("memory_usage_mb", int(s.memory_usage_mb)),
        ("gpu_usage", s.gpu_usage),
        ("cpu_time_seconds", d.cpu_time_seconds),
        ("cpu_user_seconds", d.cpu_user_seconds),
        ("cpu_system_seconds", d.cpu_system_seconds),
        ("cpu_throttled_seconds", d.cpu_throttled_seconds),
        ("cpu_nr_throttled", int(d.cpu_nr_throttled)),
        ("memory_usage_bytes", int(d.memory_usage_bytes)),
        ("memory_peak_bytes", int(d.memory_peak_bytes)),
        ("memory_limit_bytes", int(d.memory_limit_bytes)),
        ("memory_anon_bytes", int(d.memory_anon_bytes)),
        ("memory_file_bytes", int(d.memory_file_bytes)),
        ("memory_shmem_bytes", int(d.memory_shmem_bytes)),
        ("oom_kills", int(d.oom_kills)),
        ("io_read_bytes", int(d.io_read_bytes)),
        ("io_write_bytes", int(d.io_write_bytes)),
        ("io_read_ops", int(d.io_read_ops)),
        ("io_write_ops", int(d.io_write_ops)),
        ("pids", int(d.pids)),
    ];
    for (name, value) in pairs {
        add(figures, name, value);
    }
    if let Some(p) = &d.pressure {
        for (resource, f) in [("cpu", p.cpu), ("memory", p.memory), ("io", p.io)] {
            if let Some(f) = f {
                add(
                    figures,
                    &format!("pressure_{resource}_some_avg10"),
                    Some(f.some_avg10),
                );
                add(
                    figures,
                    &format!("pressure_{resource}_some_total_usec"),
                    Some(f.some_total_usec as f64),
                );
            }
        }
    }
}

fn gpu_figures(g: &GpuReading, figures: &mut Figures) {
    let unsigned = |v: Option<u64>| v.map(|v| v as f64);
    add(figures, "utilization_percent", g.utilization_percent);
    add(figures, "memory_used_bytes", unsigned(g.memory_used_bytes));
    add(
        figures,
        "memory_total_bytes",
        unsigned(g.memory_total_bytes),
    );
    add(figures, "power_watts", g.power_watts);
    add(figures, "energy_joules", g.energy_joules);
    add(figures, "temperature_celsius", g.temperature_celsius);
}

/// One node's samples of one job over one bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    /// The measuring node; empty for samples that named none (the Go service's route).
    pub node: String,
    pub samples: i64,
    pub figures: Figures,
    /// Per GPU index.
    pub gpus: BTreeMap<u32, Figures>,
}

/// What the store keeps of a bucket beside its key: `{"f": figures, "g": {index: figures}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StoredFigures {
    #[serde(default, rename = "f")]
    pub figures: Figures,
    #[serde(default, rename = "g", skip_serializing_if = "BTreeMap::is_empty")]
    pub gpus: BTreeMap<u32, Figures>,
}

impl Bucket {
    fn new(start: DateTime<Utc>, node: String) -> Bucket {
        Bucket {
            start,
            node,
            samples: 0,
            figures: Figures::new(),
            gpus: BTreeMap::new(),
        }
    }

    fn absorb(&mut self, s: &MetricSample) {
        self.samples += 1;
        sample_figures(s, &mut self.figures);
        for g in &s.detail.gpus {
            gpu_figures(g, self.gpus.entry(g.index).or_default());
        }
    }

    fn merge(&mut self, other: &Bucket) {
        self.samples += other.samples;
        merge_figures(&mut self.figures, &other.figures);
        for (index, figures) in &other.gpus {
            merge_figures(self.gpus.entry(*index).or_default(), figures);
        }
    }
}

/// Buckets keyed by (start, node).
pub type Buckets = BTreeMap<(DateTime<Utc>, String), Bucket>;

/// Folds `samples` into `width`-second buckets per node.
pub fn fold(samples: &[MetricSample], width: i64, into: &mut Buckets) {
    for s in samples {
        let start = bucket_start(s.timestamp, width);
        let node = s.detail.node.clone().unwrap_or_default();
        into.entry((start, node.clone()))
            .or_insert_with(|| Bucket::new(start, node))
            .absorb(s);
    }
}

/// Merges finer buckets into `width`-second ones (`width` a multiple of theirs).
pub fn coarsen(buckets: impl IntoIterator<Item = Bucket>, width: i64, into: &mut Buckets) {
    for b in buckets {
        let start = bucket_start(b.start, width);
        into.entry((start, b.node.clone()))
            .or_insert_with(|| Bucket::new(start, b.node.clone()))
            .merge(&b);
    }
}

/// One figure as answered: `{"min", "mean", "max"}` of the samples in the bucket that had it.
#[derive(Debug, Serialize)]
struct Shown {
    min: f64,
    mean: f64,
    max: f64,
}

fn shown(figures: &Figures, map: &mut serde_json::Map<String, serde_json::Value>) {
    for (name, s) in figures {
        let v = Shown {
            min: s.min,
            mean: s.mean(),
            max: s.max,
        };
        map.insert(name.clone(), serde_json::to_value(v).unwrap_or_default());
    }
}

/// A bucket as `GET /v1/jobs/{id}/metrics` answers it: `timestamp` (the bucket's start),
/// `node` (absent when the samples named none), `samples`, each figure as
/// `{min, mean, max}`, and `gpus` (per index, the same shape) when any.
pub fn point_json(b: &Bucket) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("timestamp".into(), serde_json::json!(b.start));
    if !b.node.is_empty() {
        map.insert("node".into(), serde_json::json!(b.node));
    }
    map.insert("samples".into(), serde_json::json!(b.samples));
    shown(&b.figures, &mut map);
    if !b.gpus.is_empty() {
        let gpus: Vec<_> = b
            .gpus
            .iter()
            .map(|(index, figures)| {
                let mut g = serde_json::Map::new();
                g.insert("index".into(), serde_json::json!(index));
                shown(figures, &mut g);
                serde_json::Value::Object(g)
            })
            .collect();
        map.insert("gpus".into(), serde_json::Value::Array(gpus));
    }
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::gpu::GpuVendor;
    use crate::domain::SampleDetail;

    fn sample(secs: i64, node: &str, cpu: f64, gpu_util: Option<f64>) -> MetricSample {
        let mut gpus = Vec::new();
        if let Some(u) = gpu_util {
            let mut g = GpuReading::new(1, GpuVendor::Nvidia);
            g.utilization_percent = Some(u);
            gpus.push(g);
        }
        MetricSample {
            timestamp: DateTime::from_timestamp(secs, 0).unwrap(),
            cpu_usage: Some(cpu),
            memory_usage_mb: None,
            gpu_usage: None,
            detail: SampleDetail {
                node: Some(node.into()),
                gpus,
                ..SampleDetail::default()
            },
        }
    }

    #[test]
    fn folds_per_node_and_bucket_with_min_mean_max() {
        let samples = [
            sample(600, "a", 10.0, Some(50.0)),
            sample(615, "a", 30.0, Some(70.0)),
            sample(899, "a", 20.0, None),
            sample(900, "a", 80.0, None),
            sample(610, "b", 5.0, None),
        ];
        let mut buckets = Buckets::new();
        fold(&samples, 300, &mut buckets);
        assert_eq!(buckets.len(), 3);
        let t600 = DateTime::from_timestamp(600, 0).unwrap();
        let a = &buckets[&(t600, "a".to_owned())];
        assert_eq!(a.samples, 3);
        let cpu = a.figures["cpu_usage"];
        assert_eq!((cpu.n, cpu.min, cpu.max, cpu.mean()), (3, 10.0, 30.0, 20.0));
        let util = a.gpus[&1]["utilization_percent"];
        assert_eq!(
            (util.n, util.min, util.max, util.mean()),
            (2, 50.0, 70.0, 60.0)
        );
        assert!(!a.figures.contains_key("memory_usage_mb"));
    }

    #[test]
    fn coarser_buckets_merge_exactly() {
        let samples: Vec<_> = (0..40)
            .map(|i| sample(i * 15, "a", i as f64, None))
            .collect();
        let mut fine = Buckets::new();
        fold(&samples, 60, &mut fine);
        let mut coarse = Buckets::new();
        coarsen(fine.into_values(), 300, &mut coarse);
        let mut direct = Buckets::new();
        fold(&samples, 300, &mut direct);
        assert_eq!(coarse, direct);
    }

    #[test]
    fn stats_round_trip_through_storage() {
        let mut buckets = Buckets::new();
        fold(&[sample(0, "a", 1.5, Some(3.0))], 300, &mut buckets);
        let b = buckets.into_values().next().unwrap();
        let stored = StoredFigures {
            figures: b.figures.clone(),
            gpus: b.gpus.clone(),
        };
        let text = serde_json::to_string(&stored).unwrap();
        let back: StoredFigures = serde_json::from_str(&text).unwrap();
        assert_eq!((back.figures, back.gpus), (b.figures, b.gpus));
    }

    #[test]
    fn auto_picks_the_finest_width_that_fits() {
        assert_eq!(auto_width(3600, 1, 60), 60);
        assert_eq!(auto_width(2 * 86_400, 1, 60), 300);
        assert_eq!(auto_width(7 * 86_400, 1, 60), 900);
        assert_eq!(auto_width(7 * 86_400, 4, 60), 3600);
        assert_eq!(auto_width(3600, 1, 300), 300);
        assert_eq!(auto_width(10 * 365 * 86_400, 1, 60), 86_400);
    }

    #[test]
    fn resolution_names_parse() {
        for name in Resolution::NAMES {
            assert!(Resolution::parse(name).is_some());
        }
        assert_eq!(Resolution::parse("10m"), None);
        assert_eq!(width_name(900), "15m");
        assert_eq!(width_name(3600), "1h");
        assert_eq!(width_name(86_400), "1d");
    }
}
