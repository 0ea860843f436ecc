//! Rendering the snapshot as Prometheus text: the cluster series (jobs by state), the node
//! series, the partition and waste series, and the per-job series. It reads only the
//! snapshot ([`super::Snapshot`]), never the database.

use super::*;

impl Snapshot {
    /// Writes the cluster and node series, and the per-job series when `per_job`.
    pub fn render(
        &self,
        out: &mut String,
        per_job: bool,
        grace: Duration,
        now: Instant,
        wall: DateTime<Utc>,
    ) {
        self.render_cluster(out);
        self.render_nodes(out);
        self.partitions.render(out);
        self.waste.render(out);
        if per_job {
            self.render_jobs(out, now, grace, wall);
        }
    }

    fn render_cluster(&self, out: &mut String) {
        let state_label = |s: JobState| text::labels(&[("state", s.as_str())]);
        header(
            out,
            "hpc_job_state_total",
            Kind::Untyped,
            "Jobs in each state (the Go service's name; a gauge, see hpc_jobs).",
        );
        for state in JobState::ALL {
            let n = self.counts[state_index(state)].max(0) as f64;
            sample(out, "hpc_job_state_total", &state_label(state), n);
        }
        header(out, "hpc_jobs", Kind::Gauge, "Jobs in each state.");
        for state in JobState::ALL {
            let n = self.counts[state_index(state)].max(0) as f64;
            sample(out, "hpc_jobs", &state_label(state), n);
        }
        header(
            out,
            "hpc_job_total",
            Kind::Counter,
            "Jobs created (all known at start, plus those created since).",
        );
        sample(out, "hpc_job_total", "", self.created as f64);
        header(
            out,
            "hpc_jobs_finished_total",
            Kind::Counter,
            "Jobs that reached a final state while this process watched, by final state.",
        );
        for (i, state) in FINAL_STATES.iter().enumerate() {
            sample(
                out,
                "hpc_jobs_finished_total",
                &state_label(*state),
                self.finished[i] as f64,
            );
        }
        // Per-user totals of running jobs: bounded by the users, and there even when the
        // per-job series are switched off.
        let mut users: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
        for job in self.jobs.values().filter(|j| j.ended.is_none()) {
            let u = users.entry(job.user.as_str()).or_default();
            u.0 += 1.0;
            u.1 += job.allocated_cpus.unwrap_or(0.0);
            u.2 += job.allocated_gpus.unwrap_or(0.0);
        }
        let user_labels: Vec<String> = users.keys().map(|u| text::labels(&[("user", u)])).collect();
        for (name, help, pick) in [
            ("hpc_user_running_jobs", "Running jobs per user.", 0usize),
            (
                "hpc_user_allocated_cpus",
                "CPUs allocated to running jobs, per user.",
                1,
            ),
            (
                "hpc_user_allocated_gpus",
                "GPUs allocated to running jobs, per user.",
                2,
            ),
        ] {
            header(out, name, Kind::Gauge, help);
            for (labels, figures) in user_labels.iter().zip(users.values()) {
                let value = [figures.0, figures.1, figures.2][pick];
                sample(out, name, labels, value);
            }
        }
        header(
            out,
            "hpc_exporter_last_collect_timestamp_seconds",
            Kind::Gauge,
            "When the exported snapshot was last known to be current with the event log (Unix time).",
        );
        if let Some(at) = self.current_at {
            sample(
                out,
                "hpc_exporter_last_collect_timestamp_seconds",
                "",
                at.timestamp_micros() as f64 / 1e6,
            );
        }
    }

    fn render_nodes(&self, out: &mut String) {
        // Running jobs per node, from the jobs themselves: right even on nodes without an agent.
        let mut job_count: BTreeMap<&str, f64> =
            self.nodes.keys().map(|n| (n.as_str(), 0.0)).collect();
        for job in self.jobs.values() {
            let running = if job.ended.is_none() { 1.0 } else { 0.0 };
            for node in &job.nodes {
                *job_count.entry(node.as_str()).or_default() += running;
            }
        }
        let node_labels: Vec<String> = job_count
            .keys()
            .map(|node| text::labels(&[("node", node)]))
            .collect();
        // The Go service's name has a histogram's suffix, which promtool rejects on a gauge:
        // untyped, like hpc_job_state_total, with a correctly named gauge beside it.
        for (name, kind, help) in [
            (
                "hpc_node_job_count",
                Kind::Untyped,
                "Running jobs on the node (the Go service's name; a gauge, see hpc_node_running_jobs).",
            ),
            ("hpc_node_running_jobs", Kind::Gauge, "Running jobs on the node."),
        ] {
            header(out, name, kind, help);
            for (labels, n) in node_labels.iter().zip(job_count.values()) {
                sample(out, name, labels, *n);
            }
        }
        type Pick = fn(&NodeEntry) -> Option<f64>;
        let figures: [(&str, &str, Pick); 8] = [
            (
                "hpc_node_cpu_usage_percent",
                "CPU busy on the node, percent of all its CPUs.",
                |n| n.cpu_usage,
            ),
            (
                "hpc_node_memory_usage_bytes",
                "Memory in use on the node.",
                |n| n.memory_used,
            ),
            (
                "hpc_node_gpu_usage_percent",
                "Mean utilization of the node's GPUs, percent.",
                NodeEntry::gpu_usage,
            ),
            ("hpc_node_total_cpus", "CPUs of the node.", |n| n.cpus),
            ("hpc_node_total_memory_bytes", "Memory of the node.", |n| {
                n.memory_total
            }),
            (
                "hpc_node_cpu_load",
                "One-minute load average of the node.",
                |n| n.load_1,
            ),
            (
                "hpc_node_last_report_timestamp_seconds",
                "When the node's agent last reported (Unix time).",
                |n| n.last_report,
            ),
            (
                "hpc_node_report_interval_seconds",
                "The reporting interval the node's agent announced.",
                |n| n.report_interval,
            ),
        ];
        let derived = self.usage_from_jobs();
        for (i, (name, help, pick)) in figures.into_iter().enumerate() {
            header(out, name, Kind::Gauge, help);
            for node in self.nodes.values() {
                if let Some(v) = pick(node) {
                    sample(out, name, &node.labels, v);
                }
            }
            // The first three (usage) also for nodes without an agent, marked as derived.
            for (labels, figures) in &derived {
                if let Some(v) = figures.get(i).copied().flatten() {
                    sample(out, name, labels, v);
                }
            }
        }
        header(
            out,
            "hpc_node_stale",
            Kind::Gauge,
            "1 when the node's agent has been silent for three of its intervals.",
        );
        for node in self.nodes.values() {
            if let Some(stale) = node.stale {
                sample(
                    out,
                    "hpc_node_stale",
                    &node.labels,
                    f64::from(u8::from(stale)),
                );
            }
        }
        header(
            out,
            "hpc_node_state",
            Kind::Gauge,
            "1 for the node's current state, 0 for the others.",
        );
        for node in self.nodes.values() {
            let Some(current) = &node.state else { continue };
            for state in NODE_STATES {
                let value = f64::from(u8::from(current == state));
                sample_with(out, "hpc_node_state", &node.labels, ("state", state), value);
            }
        }
        type GpuPick = fn(&GpuUsage) -> Option<f64>;
        let gpu_figures: [(&str, Kind, &str, GpuPick); 6] = [
            (
                "hpc_node_gpu_device_utilization_percent",
                Kind::Gauge,
                "Utilization of a GPU of the node, percent.",
                |g| g.utilization,
            ),
            (
                "hpc_node_gpu_device_memory_used_bytes",
                Kind::Gauge,
                "Memory in use on a GPU of the node.",
                |g| g.memory_used,
            ),
            (
                "hpc_node_gpu_device_memory_total_bytes",
                Kind::Gauge,
                "Memory of a GPU of the node.",
                |g| g.memory_total,
            ),
            (
                "hpc_node_gpu_device_power_watts",
                Kind::Gauge,
                "Power draw of a GPU of the node.",
                |g| g.power,
            ),
            (
                "hpc_node_gpu_device_temperature_celsius",
                Kind::Gauge,
                "Temperature of a GPU of the node.",
                |g| g.temperature,
            ),
            (
                "hpc_node_gpu_device_energy_joules_total",
                Kind::Counter,
                "Energy used by a GPU of the node since its driver loaded.",
                |g| g.energy,
            ),
        ];
        for (name, kind, help, pick) in gpu_figures {
            header(out, name, kind, help);
            for node in self.nodes.values() {
                for gpu in &node.gpus {
                    if let Some(v) = pick(gpu) {
                        sample(out, name, &gpu.labels, v);
                    }
                }
            }
        }
    }

    /// CPU (mean), memory (sum) and GPU (mean) of the newest samples of the jobs running on
    /// each node no agent reports, labelled `source="jobs"`: what the Go service exported for
    /// every node, so its dashboards keep working where samples still come only through
    /// `POST /v1/jobs/{id}/metrics`. Measured figures win: once a node's agent has reported,
    /// its series are the agent's alone. A figure no job has is left out, never made up.
    fn usage_from_jobs(&self) -> Vec<(String, [Option<f64>; 3])> {
        let mut per_node: BTreeMap<&str, [(f64, usize); 3]> = BTreeMap::new();
        for job in self.jobs.values().filter(|j| j.ended.is_none()) {
            for (node, usage) in &job.usage {
                let agent = self
                    .nodes
                    .get(node)
                    .is_some_and(|n| n.last_report.is_some());
                if agent {
                    continue;
                }
                let sums = per_node.entry(node.as_str()).or_default();
                for (sum, value) in
                    sums.iter_mut()
                        .zip([usage.cpu_usage, usage.memory_bytes, usage.gpu_usage])
                {
                    if let Some(v) = value {
                        sum.0 += v;
                        sum.1 += 1;
                    }
                }
            }
        }
        per_node
            .into_iter()
            .map(|(node, [cpu, memory, gpu])| {
                let mean = |(sum, n): (f64, usize)| (n > 0).then(|| sum / n as f64);
                let total = |(sum, n): (f64, usize)| (n > 0).then_some(sum);
                (
                    text::labels(&[("node", node), ("source", "jobs")]),
                    [mean(cpu), total(memory), mean(gpu)],
                )
            })
            .collect()
    }

    fn render_jobs(&self, out: &mut String, now: Instant, grace: Duration, wall: DateTime<Utc>) {
        let jobs: Vec<&JobEntry> = self
            .jobs
            .values()
            .filter(|j| j.visible(now, grace))
            .collect();

        header(
            out,
            "hpc_job_info",
            Kind::Gauge,
            "Always 1: who a running job belongs to (join on job_id).",
        );
        for job in &jobs {
            sample(out, "hpc_job_info", &job.labels_info, 1.0);
        }
        header(
            out,
            "hpc_job_runtime_seconds",
            Kind::Gauge,
            "Seconds since the job started (its final runtime during the grace period).",
        );
        for job in &jobs {
            if let Some(runtime) = job.runtime(wall) {
                sample(out, "hpc_job_runtime_seconds", &job.labels_runtime, runtime);
            }
        }
        type JobPick = fn(&JobEntry) -> Option<f64>;
        let allocations: [(&str, &str, JobPick); 4] = [
            (
                "hpc_job_allocated_cpus",
                "CPUs allocated to the job.",
                |j| j.allocated_cpus,
            ),
            (
                "hpc_job_allocated_memory_bytes",
                "Memory allocated to (or requested by) the job.",
                |j| j.allocated_memory_bytes,
            ),
            (
                "hpc_job_allocated_gpus",
                "GPUs allocated to the job.",
                |j| j.allocated_gpus,
            ),
            ("hpc_job_time_limit_seconds", "The job's time limit.", |j| {
                j.time_limit_seconds
            }),
        ];
        for (name, help, pick) in allocations {
            header(out, name, Kind::Gauge, help);
            for job in &jobs {
                if let Some(v) = pick(job) {
                    sample(out, name, &job.labels, v);
                }
            }
        }

        type UsagePick = fn(&NodeUsage) -> Option<f64>;
        // (name, kind, help, figure, with the user label as the Go service had it)
        let usage: [(&str, Kind, &str, UsagePick, bool); 10] = [
            (
                "hpc_job_cpu_usage_percent",
                Kind::Gauge,
                "CPU usage of the job on the node, percent.",
                |u| u.cpu_usage,
                true,
            ),
            (
                "hpc_job_memory_usage_bytes",
                Kind::Gauge,
                "Memory in use by the job on the node.",
                |u| u.memory_bytes,
                true,
            ),
            (
                "hpc_job_gpu_usage_percent",
                Kind::Gauge,
                "Mean utilization of the job's GPUs on the node, percent.",
                |u| u.gpu_usage,
                true,
            ),
            (
                "hpc_job_cpu_seconds_total",
                Kind::Counter,
                "CPU time used by the job's cgroup on the node.",
                |u| u.cpu_seconds,
                false,
            ),
            (
                "hpc_job_cpu_throttled_seconds_total",
                Kind::Counter,
                "Time the job's cgroup was throttled by its CPU limit on the node.",
                |u| u.cpu_throttled_seconds,
                false,
            ),
            (
                "hpc_job_memory_peak_bytes",
                Kind::Gauge,
                "Peak memory of the job's cgroup on the node.",
                |u| u.memory_peak_bytes,
                false,
            ),
            (
                "hpc_job_oom_kills_total",
                Kind::Counter,
                "Processes of the job killed for lack of memory on the node.",
                |u| u.oom_kills,
                false,
            ),
            (
                "hpc_job_io_read_bytes_total",
                Kind::Counter,
                "Bytes the job read from block devices on the node.",
                |u| u.io_read_bytes,
                false,
            ),
            (
                "hpc_job_io_write_bytes_total",
                Kind::Counter,
                "Bytes the job wrote to block devices on the node.",
                |u| u.io_write_bytes,
                false,
            ),
            (
                "hpc_job_pids",
                Kind::Gauge,
                "Processes and threads of the job on the node.",
                |u| u.pids,
                false,
            ),
        ];
        for (name, kind, help, pick, with_user) in usage {
            header(out, name, kind, help);
            for job in &jobs {
                for u in job.usage.values() {
                    if let Some(v) = pick(u) {
                        let labels = if with_user { &u.labels_user } else { &u.labels };
                        sample(out, name, labels, v);
                    }
                }
            }
        }

        type GpuPick = fn(&GpuUsage) -> Option<f64>;
        let gpu: [(&str, Kind, &str, GpuPick); 5] = [
            (
                "hpc_job_gpu_device_utilization_percent",
                Kind::Gauge,
                "Utilization of one of the job's GPUs, percent.",
                |g| g.utilization,
            ),
            (
                "hpc_job_gpu_device_memory_used_bytes",
                Kind::Gauge,
                "Memory the job uses on one of its GPUs.",
                |g| g.memory_used,
            ),
            (
                "hpc_job_gpu_device_power_watts",
                Kind::Gauge,
                "Power draw of one of the job's GPUs.",
                |g| g.power,
            ),
            (
                "hpc_job_gpu_device_temperature_celsius",
                Kind::Gauge,
                "Temperature of one of the job's GPUs.",
                |g| g.temperature,
            ),
            (
                "hpc_job_gpu_device_energy_joules_total",
                Kind::Counter,
                "Energy used by one of the job's GPUs since its driver loaded (a device counter).",
                |g| g.energy,
            ),
        ];
        for (name, kind, help, pick) in gpu {
            header(out, name, kind, help);
            for job in &jobs {
                for u in job.usage.values() {
                    for g in &u.gpus {
                        if let Some(v) = pick(g) {
                            sample(out, name, &g.labels, v);
                        }
                    }
                }
            }
        }
        crate::metrics::verdicts::render(
            out,
            jobs.iter()
                .filter_map(|j| Some((j.labels.as_str(), j.verdict.as_ref()?))),
        );
    }
}
