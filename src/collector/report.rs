//! The agent's report, `POST /v1/samples`: one batch per node per interval, carrying every job
//! sample and the node's own figures exactly as the collector read them (`None` = not measured),
//! and its conversion into what the store keeps. The conversion lives here, beside the wire
//! shape, so the agent's in-process path (`serve --collect`) and the HTTP endpoint store the
//! same thing.

use super::{CgroupSample, GpuReading, NodeSample};
use crate::domain::usage::{NodeReport, SampleItem};
use crate::domain::usage::{Pressure, PressureFigures, SampleDetail};
use crate::domain::validate::{self, Checked, ValidationError};
use crate::domain::MetricSample;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Most job samples in one batch (a node runs far fewer jobs than this at once).
pub const MAX_JOBS_PER_BATCH: usize = 10_000;
/// Most GPUs one job or node may report.
pub const MAX_GPUS: usize = 64;
/// Most pids listed on one GPU.
pub const MAX_GPU_PROCESSES: usize = 4_096;

/// One agent report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleBatch {
    pub node: String,
    pub collected_at: DateTime<Utc>,
    /// The agent's sampling interval; the server calls the node stale after three missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<f64>,
    #[serde(default)]
    pub jobs: Vec<JobReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_stats: Option<NodeStats>,
}

/// One job's sample on the reporting node. Its cgroup figures are inline beside its own fields
/// on the wire; reading them is written out (see the `Deserialize` below).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobReport {
    pub job_id: String,
    /// When this job's cgroup was read; the batch's `collected_at` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected_at: Option<DateTime<Utc>>,
    /// Share of the job's CPUs on this node used since the previous sample, 0..=100; absent on
    /// a job's first sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usage_percent: Option<f64>,
    #[serde(flatten)]
    pub cgroup: CgroupSample,
    /// The job's devices on this node (idle ones included, at 0 %).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuReading>,
}

/// Reads each key into its field as it comes: `serde(flatten)` first gathered every cgroup
/// field of every job into an intermediate map and read them from there, twice the time of the
/// 1,000-job batch's whole parse (2.5 against 1.4 ms, BENCHMARKS.md "At size"). Keys it does not
/// know are skipped, as the derived form skips them.
impl<'de> Deserialize<'de> for JobReport {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<JobReport, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = JobReport;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a job report object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JobReport, A::Error> {
                let mut job_id: Option<String> = None;
                let mut collected_at = None;
                let mut cpu_usage_percent = None;
                let mut cgroup = CgroupSample::default();
                let mut gpus = Vec::new();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    match key.as_ref() {
                        "job_id" => job_id = Some(map.next_value()?),
                        "collected_at" => collected_at = map.next_value()?,
                        "cpu_usage_percent" => cpu_usage_percent = map.next_value()?,
                        "gpus" => gpus = map.next_value()?,
                        other => {
                            if !cgroup.read_field(other, &mut map)? {
                                map.next_value::<serde::de::IgnoredAny>()?;
                            }
                        }
                    }
                }
                Ok(JobReport {
                    job_id: job_id.ok_or_else(|| serde::de::Error::missing_field("job_id"))?,
                    collected_at,
                    cpu_usage_percent,
                    cgroup,
                    gpus,
                })
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// An object key, borrowed from the body unless it holds escapes (serde's own `Cow` always
/// copies).
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// The node's own figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    #[serde(flatten)]
    pub sample: NodeSample,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuReading>,
}

/// Counters as the databases store them (BIGINT): a value past `i64::MAX` saturates rather
/// than wrapping negative.
fn stored(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn seconds(usec: Option<u64>) -> Option<f64> {
    usec.map(|u| u as f64 / 1_000_000.0)
}

fn pressure(p: Option<super::Pressure>) -> Option<PressureFigures> {
    p.map(|p| PressureFigures {
        some_avg10: p.some_avg10,
        some_total_usec: p.some_total_usec,
    })
}

fn check_gpus(gpus: &[GpuReading]) -> Checked<()> {
    if gpus.len() > MAX_GPUS {
        return Err(ValidationError::new(format!(
            "at most {MAX_GPUS} GPUs per report"
        )));
    }
    for g in gpus {
        if g.processes.len() > MAX_GPU_PROCESSES {
            return Err(ValidationError::new(format!(
                "at most {MAX_GPU_PROCESSES} processes per GPU"
            )));
        }
        if let Some(u) = g.utilization_percent {
            validate::percent(u, "GPU utilization must be between 0 and 100")?;
        }
        for text in [&g.uuid, &g.pci_bus_id].into_iter().flatten() {
            validate::optional_name("GPU uuid and pci_bus_id", Some(text))?;
        }
    }
    Ok(())
}

/// Mean utilization of the devices that report one: the Go service's single `gpu_usage`.
fn mean_utilization(gpus: &[GpuReading]) -> Option<f64> {
    let known: Vec<f64> = gpus.iter().filter_map(|g| g.utilization_percent).collect();
    (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
}

impl JobReport {
    /// The stored sample of this report from `node`; an error names what is wrong with it.
    pub fn to_item(
        &self,
        node: &str,
        batch_time: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Checked<SampleItem> {
        let job_id = validate::required_name("job_id", Some(&self.job_id), "job_id is required")?;
        let timestamp = match self.collected_at {
            Some(t) => validate::reported_time("jobs[].collected_at", Some(t), now)?,
            None => crate::domain::job::truncate_micros(batch_time),
        };
        let cpu_usage = self
            .cpu_usage_percent
            .map(|v| validate::percent(v, "cpu_usage_percent must be between 0 and 100"))
            .transpose()?;
        check_gpus(&self.gpus)?;
        let c = &self.cgroup;
        let memory_bytes = stored(c.memory_current_bytes);
        let pressure = Pressure {
            cpu: pressure(c.cpu_pressure),
            memory: pressure(c.memory_pressure),
            io: pressure(c.io_pressure),
        };
        let sample = MetricSample {
            timestamp,
            cpu_usage,
            // The Go service's megabytes are MiB, truncated.
            memory_usage_mb: memory_bytes.map(|b| b / (1024 * 1024)),
            gpu_usage: mean_utilization(&self.gpus),
            detail: SampleDetail {
                node: Some(node.to_owned()),
                cpu_time_seconds: seconds(c.cpu_usage_usec),
                cpu_user_seconds: seconds(c.cpu_user_usec),
                cpu_system_seconds: seconds(c.cpu_system_usec),
                cpu_throttled_seconds: seconds(c.cpu_throttled_usec),
                cpu_nr_throttled: stored(c.cpu_nr_throttled),
                memory_usage_bytes: memory_bytes,
                memory_peak_bytes: stored(c.memory_peak_bytes),
                memory_limit_bytes: stored(c.memory_limit_bytes),
                memory_anon_bytes: stored(c.memory_anon_bytes),
                memory_file_bytes: stored(c.memory_file_bytes),
                memory_shmem_bytes: stored(c.memory_shmem_bytes),
                oom_kills: stored(c.oom_kills),
                io_read_bytes: stored(c.io_read_bytes),
                io_write_bytes: stored(c.io_write_bytes),
                io_read_ops: stored(c.io_read_ops),
                io_write_ops: stored(c.io_write_ops),
                pids: stored(c.pids_current),
                pressure: (!pressure.is_empty()).then_some(pressure),
                gpus: self.gpus.clone(),
            },
        };
        Ok(SampleItem { job_id, sample })
    }
}

impl SampleBatch {
    /// The node name and batch time, checked; errors here refuse the whole batch.
    pub fn check_envelope(&self, now: DateTime<Utc>) -> Checked<(String, DateTime<Utc>)> {
        let node = validate::required_name("node", Some(&self.node), "node is required")?;
        let at = validate::reported_time("collected_at", Some(self.collected_at), now)?;
        if self.jobs.len() > MAX_JOBS_PER_BATCH {
            return Err(ValidationError::new(format!(
                "at most {MAX_JOBS_PER_BATCH} job samples per batch"
            )));
        }
        if let Some(i) = self.interval_seconds {
            if !(i.is_finite() && i > 0.0 && i <= 86_400.0) {
                return Err(ValidationError::new(
                    "interval_seconds must be between 0 and 86400",
                ));
            }
        }
        Ok((node, at))
    }

    /// The node's row as the store keeps it; `None` when the batch carries no node figures.
    pub fn node_report(&self, node: &str, at: DateTime<Utc>) -> Checked<Option<NodeReport>> {
        let Some(stats) = &self.node_stats else {
            return Ok(None);
        };
        check_gpus(&stats.gpus)?;
        let s = &stats.sample;
        let cpu_usage_percent = s
            .cpu_usage_percent
            .map(|v| validate::percent(v, "node cpu_usage_percent must be between 0 and 100"))
            .transpose()?;
        let load = |v: Option<f64>| v.filter(|v| v.is_finite() && *v >= 0.0);
        Ok(Some(NodeReport {
            name: node.to_owned(),
            reported_at: at,
            interval_seconds: self.interval_seconds,
            cpus: s.cpu_count.map(i64::from),
            memory_total_bytes: stored(s.memory_total_bytes),
            memory_used_bytes: stored(s.memory_used_bytes),
            cpu_usage_percent,
            load_1: load(s.load_1),
            load_5: load(s.load_5),
            load_15: load(s.load_15),
            gpus: stats.gpus.clone(),
        }))
    }
}

/// A job sample of a batch that could not be used as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidItem {
    pub index: usize,
    pub job_id: String,
    pub message: String,
}

/// A batch turned into what the store takes: the usable samples (with their positions in the
/// batch, so the store's per-item verdicts can be reported against them), the invalid ones, and
/// the node's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedBatch {
    pub node: String,
    pub items: Vec<SampleItem>,
    pub positions: Vec<usize>,
    pub invalid: Vec<InvalidItem>,
    pub node_report: Option<NodeReport>,
}

impl SampleBatch {
    /// Checks the envelope (an error refuses the whole batch) and converts every job sample,
    /// setting aside the invalid ones.
    pub fn prepare(&self, now: DateTime<Utc>) -> Checked<PreparedBatch> {
        let (node, at) = self.check_envelope(now)?;
        let node_report = self.node_report(&node, at)?;
        let mut prepared = PreparedBatch {
            items: Vec::with_capacity(self.jobs.len()),
            positions: Vec::with_capacity(self.jobs.len()),
            invalid: Vec::new(),
            node_report,
            node,
        };
        for (index, report) in self.jobs.iter().enumerate() {
            match report.to_item(&prepared.node, at, now) {
                Ok(item) => {
                    prepared.items.push(item);
                    prepared.positions.push(index);
                }
                Err(err) => prepared.invalid.push(InvalidItem {
                    index,
                    job_id: report.job_id.chars().take(validate::MAX_NAME_LEN).collect(),
                    message: err.0,
                }),
            }
        }
        Ok(prepared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::GpuVendor;

    fn report() -> JobReport {
        JobReport {
            job_id: "42".into(),
            collected_at: None,
            cpu_usage_percent: Some(50.0),
            cgroup: CgroupSample {
                cpu_usage_usec: Some(2_500_000),
                memory_current_bytes: Some(3 * 1024 * 1024 + 17),
                oom_kills: Some(u64::MAX),
                ..CgroupSample::default()
            },
            gpus: vec![
                GpuReading {
                    utilization_percent: Some(0.0),
                    ..GpuReading::new(0, GpuVendor::Nvidia)
                },
                GpuReading {
                    utilization_percent: Some(80.0),
                    ..GpuReading::new(1, GpuVendor::Nvidia)
                },
                GpuReading::new(2, GpuVendor::Nvidia),
            ],
        }
    }

    #[test]
    fn a_report_becomes_a_sample_with_compat_fields_and_exact_figures() {
        let now = Utc::now();
        let item = report().to_item("n1", now, now).unwrap();
        assert_eq!(item.job_id, "42");
        let s = item.sample;
        assert_eq!(s.timestamp, crate::domain::job::truncate_micros(now));
        assert_eq!(s.cpu_usage, Some(50.0));
        assert_eq!(s.memory_usage_mb, Some(3), "MiB, truncated");
        assert_eq!(s.detail.memory_usage_bytes, Some(3 * 1024 * 1024 + 17));
        assert_eq!(s.detail.cpu_time_seconds, Some(2.5));
        assert_eq!(s.detail.oom_kills, Some(i64::MAX), "saturates, never wraps");
        assert_eq!(s.detail.node.as_deref(), Some("n1"));
        // the idle GPU counts at 0 %, the unknown one not at all
        assert_eq!(s.gpu_usage, Some(40.0));
        assert_eq!(s.detail.io_read_bytes, None, "not measured stays unknown");
        assert_eq!(s.detail.pressure, None);
    }

    #[test]
    fn a_first_sample_has_no_percentage_and_bad_figures_are_refused() {
        let now = Utc::now();
        let mut r = report();
        r.cpu_usage_percent = None;
        assert_eq!(r.to_item("n1", now, now).unwrap().sample.cpu_usage, None);
        r.cpu_usage_percent = Some(180.0);
        assert!(r.to_item("n1", now, now).is_err());
        let mut r = report();
        r.gpus[0].utilization_percent = Some(f64::NAN);
        assert!(r.to_item("n1", now, now).is_err());
        let mut r = report();
        r.collected_at = Some(now + chrono::Duration::hours(1));
        assert!(r.to_item("n1", now, now).is_err(), "from the future");
        let mut r = report();
        r.job_id = " ".into();
        assert!(r.to_item("n1", now, now).is_err());
    }

    #[test]
    fn the_wire_shape_is_flat_and_round_trips() {
        let batch = SampleBatch {
            node: "n1".into(),
            collected_at: Utc::now(),
            interval_seconds: Some(15.0),
            jobs: vec![report()],
            node_stats: Some(NodeStats {
                sample: NodeSample {
                    cpu_count: Some(8),
                    ..NodeSample::default()
                },
                gpus: vec![],
            }),
        };
        let json = serde_json::to_value(&batch).unwrap();
        assert_eq!(json["jobs"][0]["cpu_usage_usec"], 2_500_000);
        assert_eq!(json["jobs"][0]["gpus"][1]["utilization_percent"], 80.0);
        assert_eq!(json["node_stats"]["cpu_count"], 8);
        let back: SampleBatch = serde_json::from_value(json).unwrap();
        assert_eq!(back, batch);
        // a minimal report parses: every figure is optional
        let minimal: SampleBatch = serde_json::from_str(
            r#"{"node":"n1","collected_at":"2026-01-01T00:00:00Z","jobs":[{"job_id":"7"}]}"#,
        )
        .unwrap();
        assert_eq!(minimal.jobs[0].cgroup, CgroupSample::default());
    }

    /// The hand-written read of a job report (see its `Deserialize`) takes what the derived,
    /// flattened one took: from text as from a value, unknown keys skipped, escaped keys read.
    #[test]
    fn a_job_report_reads_its_inline_cgroup_fields() {
        let text = serde_json::to_string(&report()).unwrap();
        let from_text: JobReport = serde_json::from_str(&text).unwrap();
        assert_eq!(from_text, report());
        let from_value: JobReport =
            serde_json::from_value(serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(from_value, report());

        let odd: JobReport = serde_json::from_str(
            r#"{"job_id":"7","agent_extra":{"a":[1,2]},"oom_kil\u006cs":3,
                "cpu_pressure":{"some_avg10":1.5,"some_total_usec":9},"vanished":true,
                "memory_peak_bytes":null}"#,
        )
        .unwrap();
        assert_eq!(odd.job_id, "7");
        assert_eq!(
            odd.cgroup.oom_kills,
            Some(3),
            "an escaped key is still its field"
        );
        assert_eq!(odd.cgroup.cpu_pressure.map(|p| p.some_total_usec), Some(9));
        assert!(odd.cgroup.vanished);
        assert_eq!(odd.cgroup.memory_peak_bytes, None);

        for bad in [
            r#"{"collected_at":"2026-01-01T00:00:00Z"}"#,
            r#"{"job_id":"7","cpu_usage_usec":-1}"#,
            r#"{"job_id":"7","gpus":{}}"#,
            r#"["7"]"#,
        ] {
            assert!(serde_json::from_str::<JobReport>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_envelope_is_checked() {
        let now = Utc::now();
        let mut batch = SampleBatch {
            node: "".into(),
            collected_at: now,
            interval_seconds: None,
            jobs: vec![],
            node_stats: None,
        };
        assert!(batch.check_envelope(now).is_err(), "node is required");
        batch.node = "n1".into();
        assert!(batch.check_envelope(now).is_ok());
        batch.interval_seconds = Some(0.0);
        assert!(batch.check_envelope(now).is_err());
        batch.interval_seconds = Some(15.0);
        batch.jobs = vec![report(); MAX_JOBS_PER_BATCH + 1];
        assert!(batch.check_envelope(now).is_err());
    }
}
