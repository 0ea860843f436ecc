//! The demo's agents: each tick, one sample batch per node that is up, with the figures of
//! every job running on it, checked and stored as `POST /v1/samples` does.

use super::{Demo, DemoJob, Phase, Profile, GIB};
use crate::collector::{
    CgroupSample, GpuReading, GpuVendor as DeviceVendor, JobReport, NodeSample, NodeStats,
    SampleBatch,
};
use crate::domain::{now_micros, NodeState};
use crate::store::LatePolicy;
use std::collections::BTreeMap;

impl Demo {
    /// The job's figures on one node this tick: (CPU %, memory bytes, GPU utilization).
    fn figures(&mut self, job: &DemoJob, end_at: u64) -> (f64, u64, f64) {
        let wobble = (self.rng.unit() - 0.5) * 10.0;
        let cpu = (job.level + wobble).clamp(0.5, 100.0);
        let progress = (job.ran as f64
            / (end_at.saturating_sub(self.tick) + job.ran).max(1) as f64)
            .clamp(0.0, 1.0);
        let limit = job.memory_per_node as f64;
        let memory = match job.profile {
            // Climbs to its limit, where the kernel kills it.
            Profile::OutOfMemory => limit * (0.3 + 0.7 * progress),
            Profile::Wasteful => limit * (0.04 + 0.02 * self.rng.unit()),
            _ => limit * (0.35 + 0.35 * progress.min(0.3) / 0.3 + 0.05 * self.rng.unit()),
        };
        let gpu = match job.profile {
            Profile::IdleGpu => 0.0,
            Profile::Wasteful => 2.0 + self.rng.unit() * 6.0,
            _ => (job.level + (self.rng.unit() - 0.5) * 14.0).clamp(0.0, 100.0),
        };
        (cpu, (memory.min(limit)) as u64, gpu)
    }

    /// One agent report per node that is up, with every running job on it.
    pub(super) async fn sample(&mut self) -> anyhow::Result<()> {
        let now = now_micros();
        let tick_usec = (self.tick_seconds * 1_000_000.0) as u64;
        let mut reports: BTreeMap<String, Vec<JobReport>> = BTreeMap::new();
        let mut node_gpus: BTreeMap<String, BTreeMap<u32, (f64, u64)>> = BTreeMap::new();
        let mut node_cpu: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        let ids: Vec<String> = self.jobs.keys().cloned().collect();
        for id in ids {
            let Some(mut job) = self.jobs.remove(&id) else {
                continue;
            };
            if let Phase::Running { end_at } = job.phase {
                job.ran += 1;
                for node in job.nodes.clone() {
                    let (cpu, memory, gpu) = self.figures(&job, end_at);
                    let usec = job.cpu_usec.entry(node.clone()).or_default();
                    *usec += (cpu / 100.0 * job.cpus_per_node as f64 * tick_usec as f64) as u64;
                    job.io_bytes += self.rng.range(1, 64) * 1024 * 1024;
                    job.peak = job.peak.max(memory);
                    let oom = job.profile == Profile::OutOfMemory && end_at <= self.tick + 1;
                    let gpus: Vec<GpuReading> = (0..job.gpus_per_node)
                        .map(|index| {
                            let g = GpuReading {
                                utilization_percent: Some(gpu),
                                memory_used_bytes: Some(
                                    (gpu / 100.0 * 60.0 * GIB as f64) as u64 + GIB,
                                ),
                                memory_total_bytes: Some(80 * GIB),
                                power_watts: Some(80.0 + gpu * 6.2),
                                temperature_celsius: Some(35.0 + gpu * 0.45),
                                uuid: Some(format!("GPU-{node}-{index}")),
                                ..GpuReading::new(index, DeviceVendor::Nvidia)
                            };
                            let slot = node_gpus
                                .entry(node.clone())
                                .or_default()
                                .entry(index)
                                .or_default();
                            slot.0 = slot.0.max(gpu);
                            slot.1 += g.memory_used_bytes.unwrap_or(0);
                            g
                        })
                        .collect();
                    let busy = node_cpu.entry(node.clone()).or_default();
                    busy.0 += cpu / 100.0 * job.cpus_per_node as f64;
                    busy.1 += memory;
                    reports.entry(node.clone()).or_default().push(JobReport {
                        job_id: job.id.clone(),
                        collected_at: None,
                        cpu_usage_percent: Some(cpu),
                        cgroup: CgroupSample {
                            cpu_usage_usec: Some(*usec),
                            cpu_user_usec: Some(*usec / 10 * 9),
                            cpu_system_usec: Some(*usec / 10),
                            memory_current_bytes: Some(memory),
                            memory_peak_bytes: Some(job.peak),
                            memory_limit_bytes: Some(job.memory_per_node),
                            oom_kills: Some(u64::from(oom)),
                            io_read_bytes: Some(job.io_bytes),
                            io_write_bytes: Some(job.io_bytes / 3),
                            pids_current: Some(job.cpus_per_node as u64 + 2),
                            ..CgroupSample::default()
                        },
                        gpus,
                    });
                }
            }
            self.jobs.insert(id, job);
        }
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if matches!(node.unavailable, Some((NodeState::Down, _))) {
                continue; // a down node's agent is silent
            }
            let name = node.name.clone();
            let (busy_cpus, used_memory) = node_cpu.get(&name).copied().unwrap_or_default();
            let cpus = node.cpus;
            let memory_total = node.memory_bytes;
            let gpu_count = node.gpus;
            let noise = self.rng.unit();
            let used = (used_memory + 3 * GIB + (noise * GIB as f64) as u64).min(memory_total);
            let usage = (busy_cpus / cpus as f64 * 100.0 + 0.5 + noise).clamp(0.0, 100.0);
            let load = busy_cpus + noise;
            let gpus = (0..gpu_count)
                .map(|index| {
                    let (util, memory) = node_gpus
                        .get(&name)
                        .and_then(|g| g.get(&index))
                        .copied()
                        .unwrap_or_default();
                    GpuReading {
                        utilization_percent: Some(util),
                        memory_used_bytes: Some(memory),
                        memory_total_bytes: Some(80 * GIB),
                        power_watts: Some(60.0 + util * 6.2),
                        temperature_celsius: Some(32.0 + util * 0.45),
                        uuid: Some(format!("GPU-{name}-{index}")),
                        ..GpuReading::new(index, DeviceVendor::Nvidia)
                    }
                })
                .collect();
            let batch = SampleBatch {
                node: name.clone(),
                collected_at: now,
                interval_seconds: Some(self.tick_seconds),
                jobs: reports.remove(&name).unwrap_or_default(),
                node_stats: Some(NodeStats {
                    sample: NodeSample {
                        cpu_usage_percent: Some(usage),
                        memory_total_bytes: Some(memory_total),
                        memory_used_bytes: Some(used),
                        memory_available_bytes: Some(memory_total - used),
                        load_1: Some(load),
                        load_5: Some(load * 0.95),
                        load_15: Some(load * 0.9),
                        cpu_count: Some(cpus),
                    },
                    gpus,
                }),
            };
            // The checks and the write of `POST /v1/samples`.
            let prepared = batch
                .prepare(now)
                .map_err(|e| anyhow::anyhow!("demo batch invalid: {}", e.0))?;
            self.store
                .ingest_samples(
                    &prepared.items,
                    prepared.node_report.as_ref(),
                    LatePolicy::UntilJobEnd,
                )
                .await?;
        }
        Ok(())
    }
}
