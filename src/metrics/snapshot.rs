//! The in-memory picture the job, node and cluster series are rendered from: running jobs (and
//! finished ones for the grace period) with the newest sample per node, the nodes' last reports,
//! and the job counts by state.
//!
//! It is fed by event-log rows (`apply_event`, in `serve`) or directly by an agent
//! (`record_sample`, `record_node`, `retain_running`); rendering reads only this structure, so a
//! scrape never touches the database or a file, and its cost grows with the running jobs, never
//! with the jobs ever seen. Payloads are read as the event contract's types
//! ([`crate::events::Payload`]): one that does not read makes that one event be skipped (and
//! logged), never a panic. The Prometheus text is written by the `render` submodule.

use super::text::{self, header, sample, sample_with, Kind};
use crate::collector::GpuReading;
use crate::domain::{Job, JobState, MetricSample, Node};
use crate::events::{EventKind, JobChange, JobSample, Payload};
use crate::store::{NodeReport, StoredEvent};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod render;

const MIB: f64 = 1024.0 * 1024.0;

/// Who a job is, for a sample fed directly (the agent knows this from its cgroup and the
/// server's job list; `serve` reads it from the event payloads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobLabels {
    pub job_id: String,
    pub user: String,
    pub account: Option<String>,
    pub partition: Option<String>,
    pub nodes: Vec<String>,
}

/// The newest sample of one job on one node.
#[derive(Debug, Default)]
struct NodeUsage {
    /// `job_id,user,node`: the Go service's label set.
    labels_user: String,
    /// `job_id,node`.
    labels: String,
    cpu_usage: Option<f64>,
    memory_bytes: Option<f64>,
    gpu_usage: Option<f64>,
    cpu_seconds: Option<f64>,
    cpu_throttled_seconds: Option<f64>,
    memory_peak_bytes: Option<f64>,
    oom_kills: Option<f64>,
    io_read_bytes: Option<f64>,
    io_write_bytes: Option<f64>,
    pids: Option<f64>,
    gpus: Vec<GpuUsage>,
    /// When the newest sample was taken (for the idle counters' intervals).
    sampled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct GpuUsage {
    /// `job_id,node,gpu_vendor,gpu_id` (for a node's own devices: `node,gpu_vendor,gpu_id`).
    labels: String,
    utilization: Option<f64>,
    memory_used: Option<f64>,
    memory_total: Option<f64>,
    power: Option<f64>,
    temperature: Option<f64>,
    energy: Option<f64>,
}

impl GpuUsage {
    fn from_reading(prefix: &[(&str, &str)], gpu: &GpuReading) -> GpuUsage {
        // The `gpu_id` label is the device index.
        let id = gpu.index.to_string();
        let mut pairs = prefix.to_vec();
        pairs.push(("gpu_vendor", gpu.vendor.as_str()));
        pairs.push(("gpu_id", &id));
        GpuUsage {
            labels: text::labels(&pairs),
            utilization: gpu.utilization_percent,
            memory_used: gpu.memory_used_bytes.map(|b| b as f64),
            memory_total: gpu.memory_total_bytes.map(|b| b as f64),
            power: gpu.power_watts,
            temperature: gpu.temperature_celsius,
            energy: gpu.energy_joules,
        }
    }
}

#[derive(Debug)]
struct JobEntry {
    id: String,
    user: String,
    nodes: Vec<String>,
    /// `job_id`.
    labels: String,
    /// `job_id,user,node` with the job's first node (runtime has one series per job).
    labels_runtime: String,
    /// `job_id,user,account,partition` of `hpc_job_info`.
    labels_info: String,
    account: Option<String>,
    partition: Option<String>,
    start_time: Option<DateTime<Utc>>,
    allocated_cpus: Option<f64>,
    allocated_memory_bytes: Option<f64>,
    allocated_gpus: Option<f64>,
    time_limit_seconds: Option<f64>,
    gpu_vendor: Option<String>,
    /// Set when the job left `running`: (when this snapshot learnt it, runtime at the end).
    ended: Option<(Instant, Option<f64>)>,
    /// Newest sample per node name.
    usage: BTreeMap<String, NodeUsage>,
    /// The job's efficiency verdict, once its `job_report` event came (after it finished).
    verdict: Option<super::verdicts::Verdict>,
}

impl JobEntry {
    fn new(id: &str) -> JobEntry {
        JobEntry {
            id: id.to_owned(),
            user: String::new(),
            nodes: Vec::new(),
            labels: String::new(),
            labels_runtime: String::new(),
            labels_info: String::new(),
            account: None,
            partition: None,
            start_time: None,
            allocated_cpus: None,
            allocated_memory_bytes: None,
            allocated_gpus: None,
            time_limit_seconds: None,
            gpu_vendor: None,
            ended: None,
            usage: BTreeMap::new(),
            verdict: None,
        }
    }

    fn first_node(&self) -> &str {
        self.nodes.first().map(String::as_str).unwrap_or("")
    }

    /// Recomputes the prepared label sets after identity fields changed.
    fn relabel(&mut self) {
        self.labels = text::labels(&[("job_id", &self.id)]);
        self.labels_runtime = text::labels(&[
            ("job_id", &self.id),
            ("user", &self.user),
            ("node", self.first_node()),
        ]);
        self.labels_info = text::labels(&[
            ("job_id", &self.id),
            ("user", &self.user),
            ("account", self.account.as_deref().unwrap_or("")),
            ("partition", self.partition.as_deref().unwrap_or("")),
        ]);
        let (id, user) = (self.id.clone(), self.user.clone());
        for (node, usage) in self.usage.iter_mut() {
            usage.labels_user = text::labels(&[("job_id", &id), ("user", &user), ("node", node)]);
            usage.labels = text::labels(&[("job_id", &id), ("node", node)]);
        }
    }

    fn usage_on(&mut self, node: &str) -> &mut NodeUsage {
        let (id, user) = (&self.id, &self.user);
        self.usage
            .entry(node.to_owned())
            .or_insert_with(|| NodeUsage {
                labels_user: text::labels(&[("job_id", id), ("user", user), ("node", node)]),
                labels: text::labels(&[("job_id", id), ("node", node)]),
                ..NodeUsage::default()
            })
    }

    /// Takes who and where the job is (what is known of it: empty and `None` keep the old),
    /// and relabels when that changed.
    fn update_identity(
        &mut self,
        user: &str,
        nodes: &[String],
        account: Option<&str>,
        partition: Option<&str>,
    ) {
        let identity = (
            self.user.clone(),
            self.nodes.clone(),
            self.account.clone(),
            self.partition.clone(),
        );
        if !user.is_empty() {
            self.user = user.to_owned();
        }
        if !nodes.is_empty() {
            self.nodes = nodes.to_vec();
        }
        if let Some(account) = account {
            self.account = Some(account.to_owned());
        }
        if let Some(partition) = partition {
            self.partition = Some(partition.to_owned());
        }
        let now = (
            self.user.clone(),
            self.nodes.clone(),
            self.account.clone(),
            self.partition.clone(),
        );
        if identity != now || self.labels.is_empty() {
            self.relabel();
        }
    }

    /// Takes what a full job says about identity and allocation.
    fn update_from(&mut self, job: &Job) {
        let scheduler = job.scheduler.as_ref();
        if let Some(minutes) = scheduler.and_then(|s| s.time_limit_minutes) {
            self.time_limit_seconds = Some(minutes as f64 * 60.0);
        }
        let figure = |v: Option<i64>| v.map(|v| v as f64);
        self.start_time = Some(job.start_time);
        self.allocated_cpus =
            figure(job.allocated_cpus.or(job.requested_cpus)).or(self.allocated_cpus);
        self.allocated_memory_bytes = figure(job.allocated_memory_mb.or(job.requested_memory_mb))
            .map(|mb| mb * MIB)
            .or(self.allocated_memory_bytes);
        self.allocated_gpus = figure(job.allocated_gpus.or(job.gpu_count).or(job.requested_gpus))
            .or(self.allocated_gpus);
        if let Some(vendor) = job.gpu_vendor {
            self.gpu_vendor = Some(vendor.as_str().to_owned());
        }
        self.update_identity(
            &job.user,
            &job.nodes,
            scheduler.and_then(|s| s.account.as_deref()),
            scheduler.and_then(|s| s.partition.as_deref()),
        );
        // The job's current compat figures (the newest sample's, or a PATCH's) belong to its
        // first node when no per-node sample has said otherwise. A multi-node job's are the
        // whole job's sums (`domain::figures`), never one node's: its node series come from
        // its samples alone.
        if self.nodes.len() > 1 {
            return;
        }
        let (cpu, mem, gpu) = (
            job.cpu_usage,
            figure(job.memory_usage_bytes).or(figure(job.memory_usage_mb).map(|mb| mb * MIB)),
            job.gpu_usage,
        );
        if cpu.is_some() || mem.is_some() || gpu.is_some() {
            let first = self.first_node().to_owned();
            let usage = self.usage_on(&first);
            usage.cpu_usage = cpu.or(usage.cpu_usage);
            usage.memory_bytes = mem.or(usage.memory_bytes);
            usage.gpu_usage = gpu.or(usage.gpu_usage);
        }
    }

    /// Keeps the sample; the idle CPU-seconds and GPU-seconds since the node's previous one.
    fn record(&mut self, sample: &MetricSample) -> (f64, f64) {
        let detail = &sample.detail;
        let figure = |v: Option<i64>| v.map(|v| v as f64);
        let node = detail
            .node
            .clone()
            .unwrap_or_else(|| self.first_node().to_owned());
        let id = self.id.clone();
        let cpus = self
            .allocated_cpus
            .map(|c| c / self.nodes.len().max(1) as f64);
        let usage = self.usage_on(&node);
        let mut idle = (0.0, 0.0);
        {
            let at = sample.timestamp;
            if let Some(previous) = usage.sampled_at.filter(|p| *p < at) {
                let seconds = (at - previous).num_milliseconds() as f64 / 1000.0;
                idle = super::waste::idle(
                    seconds,
                    cpus,
                    sample.cpu_usage,
                    detail.gpus.iter().filter_map(|g| g.utilization_percent),
                );
            }
            if usage.sampled_at.is_none_or(|p| p < at) {
                usage.sampled_at = Some(at);
            }
        }
        usage.cpu_usage = sample.cpu_usage.or(usage.cpu_usage);
        usage.memory_bytes = figure(detail.memory_usage_bytes)
            .or(figure(sample.memory_usage_mb).map(|mb| mb * MIB))
            .or(usage.memory_bytes);
        usage.gpu_usage = sample.gpu_usage.or(usage.gpu_usage);
        usage.cpu_seconds = detail.cpu_time_seconds.or(usage.cpu_seconds);
        usage.cpu_throttled_seconds = detail.cpu_throttled_seconds.or(usage.cpu_throttled_seconds);
        usage.memory_peak_bytes = figure(detail.memory_peak_bytes).or(usage.memory_peak_bytes);
        usage.oom_kills = figure(detail.oom_kills).or(usage.oom_kills);
        usage.io_read_bytes = figure(detail.io_read_bytes).or(usage.io_read_bytes);
        usage.io_write_bytes = figure(detail.io_write_bytes).or(usage.io_write_bytes);
        usage.pids = figure(detail.pids).or(usage.pids);
        if !detail.gpus.is_empty() {
            usage.gpus = detail
                .gpus
                .iter()
                .map(|g| GpuUsage::from_reading(&[("job_id", &id), ("node", &node)], g))
                .collect();
        }
        idle
    }

    /// Adds a sample's idle figures to the owner's counters.
    fn count_idle(&self, waste: &mut super::waste::Waste, (cpu, gpu): (f64, f64)) {
        if cpu > 0.0 || gpu > 0.0 {
            waste.add(&self.user, self.account.as_deref().unwrap_or(""), cpu, gpu);
        }
    }

    fn visible(&self, now: Instant, grace: Duration) -> bool {
        match self.ended {
            None => true,
            Some((at, _)) => now.saturating_duration_since(at) < grace,
        }
    }

    fn runtime(&self, wall: DateTime<Utc>) -> Option<f64> {
        match self.ended {
            Some((_, Some(runtime))) => Some(runtime),
            _ => self
                .start_time
                .map(|start| crate::domain::Job::runtime_at(start, None, wall)),
        }
    }
}

#[derive(Debug)]
struct NodeEntry {
    /// `node`.
    labels: String,
    state: Option<String>,
    cpus: Option<f64>,
    memory_total: Option<f64>,
    cpu_usage: Option<f64>,
    memory_used: Option<f64>,
    load_1: Option<f64>,
    last_report: Option<f64>,
    report_interval: Option<f64>,
    stale: Option<bool>,
    gpus: Vec<GpuUsage>,
}

impl NodeEntry {
    /// A node as the store has it (`GET /v1/nodes`, `node_updated`).
    fn from_node(node: &Node) -> NodeEntry {
        NodeEntry {
            state: Some(node.state.as_str().to_owned()),
            stale: Some(node.stale),
            ..NodeEntry::from_figures(
                &node.name,
                (node.cpus, node.memory_total_bytes, node.memory_used_bytes),
                node.cpu_usage_percent,
                node.load_1,
                node.last_report_at,
                node.report_interval_seconds,
                &node.gpus,
            )
        }
    }

    /// An agent's report of its own node: no state (the scheduler's word), and not stale.
    fn from_report(report: &NodeReport) -> NodeEntry {
        NodeEntry {
            stale: Some(false),
            ..NodeEntry::from_figures(
                &report.name,
                (
                    report.cpus,
                    report.memory_total_bytes,
                    report.memory_used_bytes,
                ),
                report.cpu_usage_percent,
                report.load_1,
                Some(report.reported_at),
                report.interval_seconds,
                &report.gpus,
            )
        }
    }

    fn from_figures(
        name: &str,
        (cpus, memory_total, memory_used): (Option<i64>, Option<i64>, Option<i64>),
        cpu_usage: Option<f64>,
        load_1: Option<f64>,
        last_report_at: Option<DateTime<Utc>>,
        report_interval: Option<f64>,
        gpus: &[GpuReading],
    ) -> NodeEntry {
        let figure = |v: Option<i64>| v.map(|v| v as f64);
        NodeEntry {
            labels: text::labels(&[("node", name)]),
            state: None,
            cpus: figure(cpus),
            memory_total: figure(memory_total),
            cpu_usage,
            memory_used: figure(memory_used),
            load_1,
            last_report: last_report_at.map(|t| t.timestamp_micros() as f64 / 1e6),
            report_interval,
            stale: None,
            gpus: gpus
                .iter()
                .map(|g| GpuUsage::from_reading(&[("node", name)], g))
                .collect(),
        }
    }

    fn gpu_usage(&self) -> Option<f64> {
        let known: Vec<f64> = self.gpus.iter().filter_map(|g| g.utilization).collect();
        (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
    }
}

/// Node states `hpc_node_state` always lists (1 for the node's current one).
const NODE_STATES: [&str; 6] = ["idle", "allocated", "mixed", "down", "drained", "unknown"];
const FINAL_STATES: [JobState; 3] = [JobState::Completed, JobState::Failed, JobState::Cancelled];

fn state_index(state: JobState) -> usize {
    JobState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or_default()
}

/// Everything the job, node and cluster series are rendered from.
#[derive(Debug, Default)]
pub struct Snapshot {
    jobs: BTreeMap<String, JobEntry>,
    nodes: BTreeMap<String, NodeEntry>,
    partitions: super::partitions::PartitionSeries,
    /// Jobs per state, in the order of [`JobState::ALL`].
    counts: [i64; 5],
    /// Jobs created (as loaded at start plus `job_created` events since).
    created: u64,
    /// Jobs that reached each final state while this process watched.
    finished: [u64; 3],
    /// Id of the newest event-log row applied.
    pub(crate) cursor: i64,
    /// When the snapshot was last known to be current with its source.
    pub(crate) current_at: Option<DateTime<Utc>>,
    /// Allocated-but-idle counters (kept across resets: they are counters).
    waste: super::waste::Waste,
}

impl Snapshot {
    /// Starts over from what the store says now: counts by state, every running job, every node.
    pub(crate) fn reset(
        &mut self,
        counts: &BTreeMap<String, i64>,
        running: &[Job],
        nodes: &[Node],
        cursor: i64,
    ) {
        self.jobs.clear();
        self.nodes.clear();
        self.counts = [0; 5];
        for (state, n) in counts {
            if let Ok(state) = state.parse::<JobState>() {
                self.counts[state_index(state)] = *n;
            }
        }
        self.created = self.counts.iter().map(|n| (*n).max(0) as u64).sum();
        for job in running.iter().filter(|j| j.state == JobState::Running) {
            self.upsert_job(job);
        }
        for node in nodes {
            self.record_node(node);
        }
        self.cursor = cursor;
        self.current_at = Some(Utc::now());
    }

    fn upsert_job(&mut self, job: &Job) {
        self.entry(&job.id).update_from(job);
    }

    fn entry(&mut self, id: &str) -> &mut JobEntry {
        self.jobs
            .entry(id.to_owned())
            .or_insert_with(|| JobEntry::new(id))
    }

    /// Applies one event-log row. Payloads that do not read are skipped (and logged).
    pub(crate) fn apply_event(&mut self, event: &StoredEvent, now: Instant) {
        if event.id > self.cursor {
            self.cursor = event.id;
        }
        let payload = match Payload::read(event.kind, &event.payload) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::warn!(id = event.id, kind = %event.kind, error = %err, "metrics: skipped an event it cannot read");
                return;
            }
        };
        match payload {
            Payload::Job(change) => self.apply_job_event(event.kind, &change, now),
            Payload::Sample(sample) => self.apply_sample_event(&sample),
            Payload::Node(change) => self.record_node(&change.node),
            Payload::Partition(change) => self
                .partitions
                .apply_change(&change.partition, event.kind == EventKind::PartitionDeleted),
            Payload::Report(report) => {
                if let Some(entry) = self.jobs.get_mut(report.job_id.as_ref()) {
                    entry.verdict = Some(super::verdicts::Verdict::of(&report.report));
                }
            }
        }
    }

    fn apply_job_event(&mut self, kind: EventKind, change: &JobChange<'_>, now: Instant) {
        let job = &*change.job;
        let state = job.state;
        match kind {
            EventKind::JobCreated => {
                self.counts[state_index(state)] += 1;
                self.created += 1;
                if state.is_terminal() {
                    self.count_finished(state);
                }
            }
            EventKind::JobDeleted => {
                self.counts[state_index(state)] -= 1;
                self.jobs.remove(&job.id);
                return;
            }
            _ => {
                if let Some(previous) = change.previous_state {
                    self.counts[state_index(previous)] -= 1;
                    self.counts[state_index(state)] += 1;
                    if state.is_terminal() && !previous.is_terminal() {
                        self.count_finished(state);
                    }
                }
            }
        }
        match state {
            JobState::Running => {
                self.upsert_job(job);
                if let Some(entry) = self.jobs.get_mut(&job.id) {
                    // Running (again, if requeued): an earlier run's verdict is not this one's.
                    entry.ended = None;
                    entry.verdict = None;
                }
            }
            _ => {
                if let Some(entry) = self.jobs.get_mut(&job.id) {
                    entry.update_from(job);
                    let runtime = job.runtime_seconds.or_else(|| {
                        let start = entry.start_time?;
                        Some(Job::runtime_at(start, job.end_time, job.end_time?))
                    });
                    entry.ended.get_or_insert((now, runtime));
                }
            }
        }
    }

    fn count_finished(&mut self, state: JobState) {
        if let Some(i) = FINAL_STATES.iter().position(|s| *s == state) {
            self.finished[i] += 1;
        }
    }

    fn apply_sample_event(&mut self, event: &JobSample<'_>) {
        // The sample is gone (its job deleted, or pruned first): nothing to show.
        let Some(sample) = &event.sample else {
            return;
        };
        let id = event.job_id();
        let job = &event.job;
        if !self.jobs.contains_key(id) {
            // A sample for a running job this snapshot has not seen (it started before a
            // restart and the load missed it): track it with what the payload says.
            if job.state != JobState::Running {
                return;
            }
            self.entry(id).update_identity(
                &job.user,
                &job.nodes,
                None,
                job.scheduler.partition.as_deref(),
            );
        }
        if let Some(entry) = self.jobs.get_mut(id) {
            let idle = entry.record(sample);
            entry.count_idle(&mut self.waste, idle);
        }
    }

    /// A sample fed directly (the agent): tracks the job as running and keeps the sample.
    pub(crate) fn record_sample(&mut self, job: &JobLabels, sample: &MetricSample) {
        let entry = self.entry(&job.job_id);
        entry.update_identity(
            &job.user,
            &job.nodes,
            job.account.as_deref(),
            job.partition.as_deref(),
        );
        entry.ended = None;
        let idle = entry.record(sample);
        if let Some(entry) = self.jobs.get(&job.job_id) {
            entry.count_idle(&mut self.waste, idle);
        }
    }

    /// The agent's view: jobs not in `running` have ended (their grace period starts now).
    pub(crate) fn retain_running<'a>(
        &mut self,
        running: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) {
        let running: std::collections::HashSet<&str> = running.into_iter().collect();
        for (id, entry) in self.jobs.iter_mut() {
            if !running.contains(id.as_str()) && entry.ended.is_none() {
                let wall = Utc::now();
                entry.ended = Some((now, entry.runtime(wall)));
            }
        }
    }

    /// Keeps a node as the store has it.
    pub(crate) fn record_node(&mut self, node: &Node) {
        if !node.name.is_empty() {
            self.nodes
                .insert(node.name.clone(), NodeEntry::from_node(node));
        }
    }

    /// Keeps an agent's report of its own node.
    pub(crate) fn record_node_report(&mut self, report: &NodeReport) {
        if !report.name.is_empty() {
            self.nodes
                .insert(report.name.clone(), NodeEntry::from_report(report));
        }
    }

    /// Starts the partition series over from the store's partitions.
    pub(crate) fn reset_partitions(&mut self, partitions: &[crate::domain::Partition]) {
        self.partitions.reset(partitions);
    }

    /// Forgets jobs whose grace period is over.
    pub(crate) fn expire(&mut self, now: Instant, grace: Duration) {
        self.jobs.retain(|_, job| job.visible(now, grace));
    }

    /// Jobs tracked (running, and finished within the grace period).
    pub fn tracked_jobs(&self) -> usize {
        self.jobs.len()
    }
}
