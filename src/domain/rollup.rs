//! Rolled-up samples: a job's samples folded into time buckets per node, each numeric figure
//! kept as count / min / sum / max (so buckets merge exactly into coarser ones, and the mean is
//! `sum / count`), GPU figures per device. What `GET /v1/jobs/{id}/metrics?resolution=` serves
//! past the raw samples, and how `auto` picks its bucket width. Pure: the store keeps the 5-minute
//! buckets (`store::rollups`), this module makes, merges and shapes them.

use crate::domain::gpu::GpuReading;
use crate::domain::MetricSample;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// Width of the stored buckets folded from the raw samples, seconds.
pub const STORED_SECONDS: i64 = 300;

/// Widths of the coarser stored levels, each folded from the stored [`STORED_SECONDS`] buckets
/// (so a week's `auto` answer of 15-minute points reads a third of the rows, a month's hourly
/// multiples a twelfth). Each divides the next, and the coarsest divides a day.
pub const COARSE_SECONDS: [i64; 2] = [900, 3600];

/// The coarsest stored level: coarse levels are rebuilt in whole buckets of this width.
pub const COARSEST_SECONDS: i64 = COARSE_SECONDS[COARSE_SECONDS.len() - 1];

/// The coarsest stored level whose buckets make up `width`-second ones exactly
/// ([`STORED_SECONDS`] when no coarse level divides `width`).
pub fn stored_level(width: i64) -> i64 {
    COARSE_SECONDS
        .into_iter()
        .rev()
        .find(|level| width % level == 0)
        .unwrap_or(STORED_SECONDS)
}

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

/// Start of the first `width`-second bucket at or after `t`.
pub fn bucket_ceil(t: DateTime<Utc>, width: i64) -> DateTime<Utc> {
    let start = bucket_start(t, width);
    if start < t {
        start + chrono::Duration::seconds(width)
    } else {
        start
    }
}

/// One figure over a bucket: how many samples had it, and their min, sum and max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub n: i64,
    pub min: f64,
    pub sum: f64,
    pub max: f64,
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

/// Figures by name (names from [`JOB_FIGURES`] and [`GPU_FIGURES`]).
pub type Figures = BTreeMap<&'static str, Stat>;

/// A sample's numeric figures, by their JSON names (pressure flattened); a name's position is
/// its id in the stored form ([`encode`]), so names are only ever added at the end.
pub const JOB_FIGURES: [&str; 26] = [
    "cpu_usage",
    "memory_usage_mb",
    "gpu_usage",
    "cpu_time_seconds",
    "cpu_user_seconds",
    "cpu_system_seconds",
    "cpu_throttled_seconds",
    "cpu_nr_throttled",
    "memory_usage_bytes",
    "memory_peak_bytes",
    "memory_limit_bytes",
    "memory_anon_bytes",
    "memory_file_bytes",
    "memory_shmem_bytes",
    "oom_kills",
    "io_read_bytes",
    "io_write_bytes",
    "io_read_ops",
    "io_write_ops",
    "pids",
    "pressure_cpu_some_avg10",
    "pressure_cpu_some_total_usec",
    "pressure_memory_some_avg10",
    "pressure_memory_some_total_usec",
    "pressure_io_some_avg10",
    "pressure_io_some_total_usec",
];

/// A GPU reading's numeric figures, as [`JOB_FIGURES`].
pub const GPU_FIGURES: [&str; 6] = [
    "utilization_percent",
    "memory_used_bytes",
    "memory_total_bytes",
    "power_watts",
    "energy_joules",
    "temperature_celsius",
];

fn add(figures: &mut Figures, name: &'static str, value: Option<f64>) {
    let Some(v) = value.filter(|v| v.is_finite()) else {
        return;
    };
    figures
        .entry(name)
        .and_modify(|s| s.merge(&Stat::of(v)))
        .or_insert(Stat::of(v));
}

fn merge_figures(into: &mut Figures, from: &Figures) {
    for (name, stat) in from {
        into.entry(name)
            .and_modify(|s| s.merge(stat))
            .or_insert(*stat);
    }
}

fn sample_figures(s: &MetricSample, figures: &mut Figures) {
    let d = &s.detail;
    let int = |v: Option<i64>| v.map(|v| v as f64);
    let values = [
        s.cpu_usage,
        int(s.memory_usage_mb),
        s.gpu_usage,
        d.cpu_time_seconds,
        d.cpu_user_seconds,
        d.cpu_system_seconds,
        d.cpu_throttled_seconds,
        int(d.cpu_nr_throttled),
        int(d.memory_usage_bytes),
        int(d.memory_peak_bytes),
        int(d.memory_limit_bytes),
        int(d.memory_anon_bytes),
        int(d.memory_file_bytes),
        int(d.memory_shmem_bytes),
        int(d.oom_kills),
        int(d.io_read_bytes),
        int(d.io_write_bytes),
        int(d.io_read_ops),
        int(d.io_write_ops),
        int(d.pids),
    ];
    for (name, value) in JOB_FIGURES.into_iter().zip(values) {
        add(figures, name, value);
    }
    if let Some(p) = &d.pressure {
        for (at, f) in [(20, p.cpu), (22, p.memory), (24, p.io)] {
            if let Some(f) = f {
                add(figures, JOB_FIGURES[at], Some(f.some_avg10));
                add(figures, JOB_FIGURES[at + 1], Some(f.some_total_usec as f64));
            }
        }
    }
}

fn gpu_figures(g: &GpuReading, figures: &mut Figures) {
    let unsigned = |v: Option<u64>| v.map(|v| v as f64);
    let values = [
        g.utilization_percent,
        unsigned(g.memory_used_bytes),
        unsigned(g.memory_total_bytes),
        g.power_watts,
        g.energy_joules,
        g.temperature_celsius,
    ];
    for (name, value) in GPU_FIGURES.into_iter().zip(values) {
        add(figures, name, value);
    }
}

/// One node's samples of one job over one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    /// The measuring node; empty for samples that named none (the Go service's route).
    pub node: String,
    pub samples: i64,
    pub figures: Figures,
    /// Per GPU index.
    pub gpus: BTreeMap<u32, Figures>,
}

/// Version byte of [`encode`]'s layout.
const STORED_VERSION: u8 = 1;

fn put_figures(out: &mut Vec<u8>, figures: &Figures, names: &[&str]) {
    out.push(figures.len() as u8);
    for (name, s) in figures {
        let id = names.iter().position(|n| n == name).unwrap_or(usize::MAX);
        out.push(id as u8);
        out.extend_from_slice(&(s.n as u32).to_le_bytes());
        for v in [s.min, s.sum, s.max] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// A bucket's figures as the store keeps them (`sample_rollups.figures`): a version byte; the
/// job figures (a count byte, then per figure its id in [`JOB_FIGURES`], `n` as u32 and min,
/// sum, max as f64, little-endian); a u16 count of GPUs, then per GPU its index (u32) and its
/// figures the same way (ids in [`GPU_FIGURES`]). 29 bytes a figure, nothing to parse as text.
pub fn encode(b: &Bucket) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 29 * (b.figures.len() + 6 * b.gpus.len()));
    out.push(STORED_VERSION);
    put_figures(&mut out, &b.figures, &JOB_FIGURES);
    out.extend_from_slice(&(b.gpus.len() as u16).to_le_bytes());
    for (index, figures) in &b.gpus {
        out.extend_from_slice(&index.to_le_bytes());
        put_figures(&mut out, figures, &GPU_FIGURES);
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| "truncated rollup figures".to_owned())?;
        self.0 = rest;
        Ok(*head)
    }

    fn figures(&mut self, names: &[&'static str]) -> Result<Figures, String> {
        let [count] = self.take::<1>()?;
        let mut figures = Figures::new();
        for _ in 0..count {
            let [id] = self.take::<1>()?;
            let name = names
                .get(usize::from(id))
                .ok_or_else(|| format!("unknown rollup figure id {id}"))?;
            let n = u32::from_le_bytes(self.take()?);
            let mut values = [0.0; 3];
            for v in &mut values {
                *v = f64::from_le_bytes(self.take()?);
            }
            figures.insert(
                name,
                Stat {
                    n: i64::from(n),
                    min: values[0],
                    sum: values[1],
                    max: values[2],
                },
            );
        }
        Ok(figures)
    }
}

/// Reads back what [`encode`] wrote: (job figures, per-GPU figures).
pub fn decode(bytes: &[u8]) -> Result<(Figures, BTreeMap<u32, Figures>), String> {
    let mut r = Reader(bytes);
    let [version] = r.take::<1>()?;
    if version != STORED_VERSION {
        return Err(format!("unknown rollup figures version {version}"));
    }
    let figures = r.figures(&JOB_FIGURES)?;
    let mut gpus = BTreeMap::new();
    for _ in 0..u16::from_le_bytes(r.take()?) {
        let index = u32::from_le_bytes(r.take()?);
        gpus.insert(index, r.figures(&GPU_FIGURES)?);
    }
    Ok((figures, gpus))
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

/// Merges finer buckets into `width`-second ones (`width` a multiple of theirs). The first
/// piece of a bucket is moved in whole, so buckets already `width` wide cost no merge.
pub fn coarsen(buckets: impl IntoIterator<Item = Bucket>, width: i64, into: &mut Buckets) {
    use std::collections::btree_map::Entry;
    for mut b in buckets {
        b.start = bucket_start(b.start, width);
        match into.entry((b.start, b.node.clone())) {
            Entry::Occupied(mut e) => e.get_mut().merge(&b),
            Entry::Vacant(e) => {
                e.insert(b);
            }
        }
    }
}

/// One figure as answered: `{"min", "mean", "max"}` of the samples in the bucket that had it.
#[derive(Debug, Serialize)]
struct Shown {
    min: f64,
    mean: f64,
    max: f64,
}

impl From<&Stat> for Shown {
    fn from(s: &Stat) -> Shown {
        Shown {
            min: s.min,
            mean: s.mean(),
            max: s.max,
        }
    }
}

/// A bucket as `GET /v1/jobs/{id}/metrics` answers it: `timestamp` (the bucket's start),
/// `node` (absent when the samples named none), `samples`, each figure as
/// `{min, mean, max}`, and `gpus` (per index, the same shape) when any.
pub struct Point<'a>(pub &'a Bucket);

struct GpuPoint<'a>(u32, &'a Figures);

impl Serialize for GpuPoint<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1 + self.1.len()))?;
        map.serialize_entry("index", &self.0)?;
        for (name, s) in self.1 {
            map.serialize_entry(name, &Shown::from(s))?;
        }
        map.end()
    }
}

impl Serialize for Point<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let b = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("timestamp", &b.start)?;
        if !b.node.is_empty() {
            map.serialize_entry("node", &b.node)?;
        }
        map.serialize_entry("samples", &b.samples)?;
        for (name, s) in &b.figures {
            map.serialize_entry(name, &Shown::from(s))?;
        }
        if !b.gpus.is_empty() {
            let gpus: Vec<_> = b.gpus.iter().map(|(i, f)| GpuPoint(*i, f)).collect();
            map.serialize_entry("gpus", &gpus)?;
        }
        map.end()
    }
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
        let mut s = sample(0, "a", 1.5, Some(3.0));
        s.detail.pressure = Some(crate::domain::usage::Pressure {
            io: Some(crate::domain::usage::PressureFigures {
                some_avg10: 2.5,
                some_total_usec: 7,
            }),
            ..Default::default()
        });
        fold(&[s, sample(10, "a", 4.0, None)], 300, &mut buckets);
        let b = buckets.into_values().next().unwrap();
        assert_eq!(b.figures["pressure_io_some_avg10"].max, 2.5);
        let (figures, gpus) = decode(&encode(&b)).unwrap();
        assert_eq!((figures, gpus), (b.figures.clone(), b.gpus.clone()));
        assert!(decode(&encode(&b)[..10]).is_err(), "truncated");
        assert!(decode(&[9]).is_err(), "unknown version");
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
    fn widths_read_the_coarsest_level_that_makes_them_up() {
        assert_eq!(stored_level(300), 300);
        assert_eq!(stored_level(900), 900);
        assert_eq!(stored_level(1800), 900);
        assert_eq!(stored_level(3600), 3600);
        assert_eq!(stored_level(86_400), 3600);
        assert_eq!(stored_level(600), 300);
        let at = |s| DateTime::from_timestamp(s, 0).unwrap();
        assert_eq!(bucket_ceil(at(3600), 3600), at(3600));
        assert_eq!(bucket_ceil(at(3601), 3600), at(7200));
        assert_eq!(bucket_ceil(at(-1), 900), at(0));
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
