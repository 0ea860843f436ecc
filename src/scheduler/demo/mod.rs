//! The living demo cluster behind `serve --demo`: after the seeder ([`super::mock`]) has put
//! two hours of history in place, this loop keeps a simulated cluster going, so the streams,
//! `/metrics`, `jobscope watch` and the console have something that moves.
//!
//! Everything goes through the store's real write paths, the same calls the API makes: jobs are
//! submitted (`insert_job_if_absent`, the prolog's path, as pending), started (`update_job`,
//! PATCH's path), sampled (a [`crate::collector::SampleBatch`] per node, checked by `prepare`
//! and stored by `ingest_samples`, exactly as `POST /v1/samples` does) and finished
//! (`finish_job`, the epilog's path). Nodes and partitions are written as the Slurm backend writes them
//! (`update_nodes_from_scheduler`, `sync_partitions`). Every job it writes says
//! `scheduler.type = "mock"`; jobs of any other kind are never touched.
//!
//! The mix: efficient and wasteful jobs, a GPU job that leaves its GPUs idle, jobs killed for
//! memory, timeouts, cancellations, failures, array tasks and multi-node jobs, queued in four
//! partitions (a fifth, `interactive`, is listed inactive); one node drained and one down.
//! It keeps about [`JOB_BOUND`] demo jobs, deleting the oldest finished ones, and prunes
//! samples and events older than [`DEMO_RETENTION`].
//! One tick is [`TICK`] divided by `--demo-speed`; every duration counts in ticks.
//!
//! `mix.rs` holds the cluster's fixed make-up (users, partitions and their nodes, the profile
//! mix); `agents.rs` the agents' side of a tick (one sample batch per node that is up); this
//! file the simulation itself and the scheduler's side (submit, start, finish, nodes, prune).

use crate::domain::job::lifecycle_correlation_id;
use crate::domain::{
    now_micros, GpuVendor, Job, JobState, NodeState, Partition, PartitionLimits, PartitionState,
    SchedulerInfo,
};
use crate::store::{AuditContext, Finish, JobFilter, JobPatch, SchedulerNode, Store};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::sync::watch;

/// One tick at `--demo-speed 1`: agents report and the scheduler moves this often.
pub const TICK: Duration = Duration::from_secs(5);
/// Demo jobs kept in the store; the oldest finished ones are deleted beyond it.
pub const JOB_BOUND: usize = 100;
/// Jobs queued or running that the demo aims for.
const ACTIVE_TARGET: usize = 30;
/// Samples and events older than this are pruned while the demo runs.
pub const DEMO_RETENTION: Duration = Duration::from_secs(3 * 3600);
/// Ticks between prunes of old samples and events.
const PRUNE_EVERY_TICKS: u64 = 120;
const GIB: u64 = 1024 * 1024 * 1024;

mod agents;
mod history;
mod mix;

pub use history::{seed, JOB_COUNT};
pub use mix::Profile;
use mix::{ACCOUNTS, INACTIVE_PARTITION, MIX, NAMES, PARTITIONS, UNAVAILABLE, USERS};

// The demo's random draws come from the seeded history's generator.
use history::SplitMix as Rng;

fn node_name(number: usize) -> String {
    format!("node-{number:02}")
}

/// Gives `job` what it asked for and got: `cpus` and `memory_mb` in all, and `gpus_per_node`
/// NVIDIA GPUs on each of its nodes.
fn allocate(job: &mut Job, cpus: i64, memory_mb: i64, gpus_per_node: i64) {
    let gpus = gpus_per_node * job.nodes.len() as i64;
    job.requested_cpus = Some(cpus);
    job.allocated_cpus = Some(cpus);
    job.requested_memory_mb = Some(memory_mb);
    job.allocated_memory_mb = Some(memory_mb);
    job.requested_gpus = Some(gpus);
    job.allocated_gpus = Some(gpus);
    if gpus > 0 {
        job.gpu_vendor = Some(GpuVendor::Nvidia);
        job.gpu_count = Some(gpus);
        job.gpu_devices = (0..gpus_per_node).map(|g| g.to_string()).collect();
    }
}

/// The demo's partitions as the Slurm backend would store them, with `count(partition,
/// queued)` jobs pending (`queued`) or running in each: every partition of the make-up, and
/// the inactive one.
fn partitions(
    now: chrono::DateTime<chrono::Utc>,
    count: impl Fn(&str, bool) -> i64,
) -> Vec<Partition> {
    PARTITIONS
        .iter()
        .chain(std::iter::once(&INACTIVE_PARTITION))
        .map(|p| {
            let names: Vec<String> = (p.first..=p.last).map(node_name).collect();
            Partition {
                name: p.name.into(),
                state: if p.name == INACTIVE_PARTITION.name {
                    PartitionState::Inactive
                } else {
                    PartitionState::Up
                },
                is_default: p.name == "cpu",
                total_nodes: Some(names.len() as i64),
                total_cpus: Some(names.len() as i64 * p.cpus as i64),
                nodes: names,
                limits: PartitionLimits {
                    max_time_minutes: Some(p.max_minutes),
                    default_time_minutes: Some(p.max_minutes.min(60)),
                    max_nodes_per_job: None,
                },
                jobs_running: count(p.name, false),
                jobs_pending: count(p.name, true),
                updated_at: now,
            }
        })
        .collect()
}

struct DemoNode {
    name: String,
    partition: &'static str,
    cpus: u32,
    memory_bytes: u64,
    gpus: u32,
    features: &'static [&'static str],
    /// `None` while it takes jobs; otherwise drained or down, with the reason.
    unavailable: Option<(NodeState, &'static str)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued { start_at: u64 },
    Running { end_at: u64 },
}

struct DemoJob {
    id: String,
    profile: Profile,
    partition: String,
    nodes: Vec<String>,
    cpus_per_node: u32,
    memory_per_node: u64,
    gpus_per_node: u32,
    phase: Phase,
    /// Ticks run so far.
    ran: u64,
    /// CPU level (percent) this job works at.
    level: f64,
    /// Cumulative counters per node, as a cgroup would show them.
    cpu_usec: BTreeMap<String, u64>,
    io_bytes: u64,
    peak: u64,
}

/// The simulation; [`run`] drives it one tick at a time.
pub struct Demo {
    store: Store,
    rng: Rng,
    tick: u64,
    tick_seconds: f64,
    nodes: Vec<DemoNode>,
    jobs: BTreeMap<String, DemoJob>,
    /// Finished demo jobs in the store, oldest end first.
    finished: VecDeque<String>,
    next_id: u64,
}

fn audit(job_id: &str) -> AuditContext {
    AuditContext {
        changed_by: "demo".into(),
        source: "mock-scheduler".into(),
        correlation_id: lifecycle_correlation_id(None, job_id),
        actor: None,
    }
}

fn is_mock(job: &Job) -> bool {
    job.scheduler.as_ref().and_then(|s| s.kind.as_deref()) == Some("mock")
}

impl Demo {
    /// A demo over `store`, adopting the demo jobs it already holds (seeded, or left by a
    /// previous run): queued and running ones carry on and end within minutes.
    pub async fn start(store: Store, speed: f64) -> anyhow::Result<Demo> {
        let nodes = PARTITIONS
            .iter()
            .flat_map(|p| {
                (p.first..=p.last).map(move |n| DemoNode {
                    name: node_name(n),
                    partition: p.name,
                    cpus: p.cpus,
                    memory_bytes: p.memory_gib * GIB,
                    gpus: p.gpus,
                    features: p.features,
                    unavailable: UNAVAILABLE
                        .iter()
                        .find(|(u, _, _)| *u == n)
                        .map(|(_, s, r)| (*s, *r)),
                })
            })
            .collect();
        let seed = now_micros().timestamp_micros() as u64;
        let mut demo = Demo {
            store,
            rng: Rng(seed),
            tick: 0,
            tick_seconds: TICK.as_secs_f64() / speed,
            nodes,
            jobs: BTreeMap::new(),
            finished: VecDeque::new(),
            next_id: 20_001,
        };
        demo.adopt().await?;
        Ok(demo)
    }

    async fn adopt(&mut self) -> anyhow::Result<()> {
        let filter = JobFilter {
            limit: 100_000,
            ..JobFilter::default()
        };
        let (jobs, _) = self.store.list_jobs(&filter).await?;
        let mut finished: Vec<(chrono::DateTime<chrono::Utc>, String)> = Vec::new();
        for job in jobs.into_iter().filter(is_mock) {
            let number = job.id.split('_').next().and_then(|n| n.parse::<u64>().ok());
            if let Some(n) = number {
                self.next_id = self.next_id.max(n + 1);
            }
            if job.state.is_terminal() {
                finished.push((job.end_time.unwrap_or(job.start_time), job.id));
                continue;
            }
            let phase = if job.state == JobState::Pending {
                Phase::Queued {
                    start_at: self.rng.range(1, 12),
                }
            } else {
                Phase::Running {
                    end_at: self.rng.range(6, 90),
                }
            };
            let nodes = job.nodes.len().max(1) as i64;
            let profile = if self.rng.below(3) == 0 {
                Profile::Wasteful
            } else {
                Profile::Efficient
            };
            let adopted = DemoJob {
                id: job.id.clone(),
                profile,
                partition: job
                    .scheduler
                    .as_ref()
                    .and_then(|s| s.partition.clone())
                    .unwrap_or_else(|| "cpu".into()),
                cpus_per_node: (job.allocated_cpus.unwrap_or(8) / nodes).max(1) as u32,
                memory_per_node: (job.allocated_memory_mb.unwrap_or(8192) / nodes).max(1) as u64
                    * 1024
                    * 1024,
                gpus_per_node: (job.allocated_gpus.unwrap_or(0) / nodes) as u32,
                nodes: job.nodes,
                phase,
                ran: 0,
                level: self.level(profile),
                cpu_usec: BTreeMap::new(),
                io_bytes: 0,
                peak: 0,
            };
            self.jobs.insert(job.id, adopted);
        }
        finished.sort();
        self.finished = finished.into_iter().map(|(_, id)| id).collect();
        Ok(())
    }

    fn level(&mut self, profile: Profile) -> f64 {
        match profile {
            Profile::Wasteful => 3.0 + self.rng.unit() * 9.0,
            Profile::IdleGpu => 25.0 + self.rng.unit() * 20.0,
            Profile::OutOfMemory | Profile::Failed => 60.0 + self.rng.unit() * 30.0,
            _ => 78.0 + self.rng.unit() * 20.0,
        }
    }

    /// Ticks in `minutes` of simulated time (at least one).
    fn ticks(&self, minutes: f64) -> u64 {
        ((minutes * 60.0 / TICK.as_secs_f64()).round() as u64).max(1)
    }

    /// One step: submit, start, sample, finish, write the scheduler's view, prune.
    pub async fn step(&mut self) -> anyhow::Result<()> {
        self.tick += 1;
        let active = self.jobs.len();
        if active < ACTIVE_TARGET {
            let n = if active + 4 < ACTIVE_TARGET { 2 } else { 1 };
            for _ in 0..n {
                self.submit().await?;
            }
        }
        self.start_due().await?;
        self.sample().await?;
        self.finish_due().await?;
        self.write_scheduler_view().await?;
        self.prune().await?;
        Ok(())
    }

    fn pick_profile(&mut self) -> Profile {
        let total: u64 = MIX.iter().map(|(_, w)| w).sum();
        let mut x = self.rng.below(total);
        for (profile, weight) in MIX {
            if x < *weight {
                return *profile;
            }
            x -= weight;
        }
        Profile::Efficient
    }

    /// `count` distinct nodes of `partition` that take jobs, least loaded first.
    fn place(&mut self, partition: &str, count: usize) -> Vec<String> {
        let load = self.cpu_load();
        let mut candidates: Vec<(u64, u64, &DemoNode)> = self
            .nodes
            .iter()
            .filter(|n| n.partition == partition && n.unavailable.is_none())
            .map(|n| {
                let used = load.get(n.name.as_str()).copied().unwrap_or(0);
                (used * 100 / n.cpus as u64, 0, n)
            })
            .collect();
        for c in candidates.iter_mut() {
            c.1 = self.rng.next();
        }
        candidates.sort_by_key(|(used, tie, _)| (*used / 25, *tie));
        candidates
            .into_iter()
            .take(count)
            .map(|(_, _, n)| n.name.clone())
            .collect()
    }

    /// CPUs allocated to running jobs, per node.
    fn cpu_load(&self) -> BTreeMap<&str, u64> {
        let mut load = BTreeMap::new();
        for job in self.jobs.values() {
            if matches!(job.phase, Phase::Running { .. }) {
                for n in &job.nodes {
                    *load.entry(n.as_str()).or_default() += job.cpus_per_node as u64;
                }
            }
        }
        load
    }

    /// Submits one job (or one array of tasks), stored as pending.
    async fn submit(&mut self) -> anyhow::Result<()> {
        let profile = self.pick_profile();
        let partition = match profile {
            Profile::IdleGpu => "gpu",
            Profile::OutOfMemory => *self.rng.pick(&["cpu", "bigmem"]),
            Profile::Failed | Profile::Cancelled => *self.rng.pick(&["cpu", "debug", "gpu"]),
            Profile::MultiNode => *self.rng.pick(&["cpu", "cpu", "gpu"]),
            _ => *self.rng.pick(&["cpu", "cpu", "gpu", "bigmem", "debug"]),
        };
        let spec = PARTITIONS
            .iter()
            .find(|p| p.name == partition)
            .expect("a demo partition");
        let node_count = match profile {
            Profile::MultiNode => self.rng.range(2, 4) as usize,
            _ => 1,
        };
        let cpus_per_node = match profile {
            Profile::MultiNode => spec.cpus,
            _ => *self
                .rng
                .pick(&[spec.cpus / 8, spec.cpus / 4, spec.cpus / 2, spec.cpus]),
        }
        .max(1);
        let memory_per_node = spec.memory_gib * GIB * cpus_per_node as u64 / spec.cpus as u64 / 2;
        let gpus_per_node = if spec.gpus == 0 {
            0
        } else if profile == Profile::MultiNode {
            spec.gpus
        } else {
            *self.rng.pick(&[1, 2, 4])
        };
        let user = self.rng.pick(USERS).to_string();
        let account = self.rng.pick(ACCOUNTS).to_string();
        let name = self.rng.pick(NAMES).to_string();
        let time_limit = if profile == Profile::Timeout {
            self.rng.range(3, 6) as i64
        } else {
            *self.rng.pick(&[30, 60, 120, 240])
        }
        .min(spec.max_minutes);
        let id = self.next_id;
        self.next_id += 1;
        let tasks: Vec<(String, Option<i64>)> = if profile == Profile::Array {
            (1..=self.rng.range(3, 5) as i64)
                .map(|t| (format!("{id}_{t}"), Some(t)))
                .collect()
        } else {
            vec![(id.to_string(), None)]
        };
        for (job_id, task) in tasks {
            let nodes = self.place(partition, node_count);
            if nodes.is_empty() {
                return Ok(());
            }
            let now = now_micros();
            let total_nodes = nodes.len() as i64;
            let mut job = Job::new(
                job_id.clone(),
                user.clone(),
                nodes.clone(),
                JobState::Pending,
                now,
                "demo",
                "mock",
                "mock-v1",
            );
            allocate(
                &mut job,
                cpus_per_node as i64 * total_nodes,
                (memory_per_node / (1024 * 1024)) as i64 * total_nodes,
                i64::from(gpus_per_node),
            );
            job.scheduler = Some(SchedulerInfo {
                kind: Some("mock".into()),
                external_job_id: Some(job_id.clone()),
                raw_state: Some("PENDING".into()),
                submit_time: Some(now),
                partition: Some(partition.into()),
                account: Some(account.clone()),
                qos: Some("normal".into()),
                priority: Some(1000 + self.rng.below(9000) as i64),
                state_reason: Some(self.rng.pick(&["Priority", "Resources"]).to_string()),
                time_limit_minutes: Some(time_limit),
                extra: crate::domain::job::scheduler_extra(
                    Some(&name),
                    task.map(|_| id.to_string()).as_deref(),
                    task,
                ),
                ..SchedulerInfo::default()
            });
            self.store
                .insert_job_if_absent(&job, &audit(&job_id))
                .await?;
            let start_at = self.tick + self.rng.range(2, 12);
            let level = self.level(profile);
            self.jobs.insert(
                job_id.clone(),
                DemoJob {
                    id: job_id,
                    profile,
                    partition: partition.into(),
                    nodes,
                    cpus_per_node,
                    memory_per_node,
                    gpus_per_node,
                    phase: Phase::Queued { start_at },
                    ran: 0,
                    level,
                    cpu_usec: BTreeMap::new(),
                    io_bytes: 0,
                    peak: 0,
                },
            );
        }
        Ok(())
    }

    /// How long a job that starts now runs, in ticks.
    fn run_length(&mut self, profile: Profile, time_limit_ticks: Option<u64>) -> u64 {
        match profile {
            Profile::Timeout => time_limit_ticks.unwrap_or_else(|| self.ticks(4.0)),
            Profile::Failed => self.rng.range(self.ticks(0.5), self.ticks(2.0)),
            Profile::OutOfMemory => self.rng.range(self.ticks(1.5), self.ticks(3.0)),
            Profile::Cancelled => self.rng.range(self.ticks(1.0), self.ticks(4.0)),
            _ => self.rng.range(self.ticks(2.0), self.ticks(10.0)),
        }
    }

    async fn start_due(&mut self) -> anyhow::Result<()> {
        let due: Vec<String> = self
            .jobs
            .values()
            .filter(|j| matches!(j.phase, Phase::Queued { start_at } if start_at <= self.tick))
            .map(|j| j.id.clone())
            .collect();
        for id in due {
            let patch = JobPatch {
                state: Some(JobState::Running),
                ..JobPatch::default()
            };
            match self.store.update_job(&id, &patch, &audit(&id)).await {
                Ok(job) => {
                    let limit = job
                        .scheduler
                        .as_ref()
                        .and_then(|s| s.time_limit_minutes)
                        .map(|m| self.ticks(m as f64));
                    let profile = self.jobs[&id].profile;
                    let length = self.run_length(profile, limit);
                    let end_at = self.tick + length;
                    if let Some(j) = self.jobs.get_mut(&id) {
                        j.phase = Phase::Running { end_at };
                    }
                }
                // Someone else changed or deleted it: it is no longer the demo's to run.
                Err(err) => {
                    tracing::debug!(job_id = %id, error = %err, "demo job could not start");
                    self.jobs.remove(&id);
                }
            }
        }
        Ok(())
    }

    async fn finish_due(&mut self) -> anyhow::Result<()> {
        let due: Vec<String> = self
            .jobs
            .values()
            .filter(|j| matches!(j.phase, Phase::Running { end_at } if end_at <= self.tick))
            .map(|j| j.id.clone())
            .collect();
        for id in due {
            let Some(job) = self.jobs.remove(&id) else {
                continue;
            };
            let (state, raw, exit_code, signal) = match job.profile {
                Profile::OutOfMemory => (JobState::Failed, "OUT_OF_MEMORY", 0, 9),
                Profile::Timeout => (JobState::Cancelled, "TIMEOUT", 0, 15),
                Profile::Cancelled => (JobState::Cancelled, "CANCELLED", 0, 15),
                Profile::Failed => (JobState::Failed, "FAILED", 1, 0),
                _ => (JobState::Completed, "COMPLETED", 0, 0),
            };
            let finish = Finish {
                state,
                end_time: now_micros(),
                exit_code: Some(exit_code),
                signal: Some(signal),
                raw_state: Some(raw.into()),
                inherit_correlation: true,
            };
            match self.store.finish_job(&id, &finish, &audit(&id)).await {
                Ok(_) => self.finished.push_back(id),
                Err(crate::store::StoreError::NotFound) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Node states and partitions, as the Slurm backend would write them.
    async fn write_scheduler_view(&mut self) -> anyhow::Result<()> {
        let load = self.cpu_load();
        let nodes: Vec<SchedulerNode> = self
            .nodes
            .iter()
            .map(|n| {
                let used = load.get(n.name.as_str()).copied().unwrap_or(0);
                let (state, reason) = match n.unavailable {
                    Some((state, reason)) => (state, Some(reason.to_string())),
                    None if used == 0 => (NodeState::Idle, None),
                    None if used >= n.cpus as u64 => (NodeState::Allocated, None),
                    None => (NodeState::Mixed, None),
                };
                SchedulerNode {
                    name: n.name.clone(),
                    state,
                    state_reason: reason,
                    partitions: Some(vec![n.partition.to_string()]),
                    features: Some(n.features.iter().map(|f| f.to_string()).collect()),
                    cpus: Some(n.cpus as i64),
                    memory_total_bytes: Some(n.memory_bytes as i64),
                    load_1: None,
                }
            })
            .collect();
        self.store.update_nodes_from_scheduler(&nodes).await?;
        let now = now_micros();
        let partitions = partitions(now, |partition, queued| {
            self.jobs
                .values()
                .filter(|j| {
                    j.partition == partition && matches!(j.phase, Phase::Queued { .. }) == queued
                })
                .count() as i64
        });
        self.store.sync_partitions(&partitions).await?;
        Ok(())
    }

    /// Deletes the oldest finished demo jobs beyond [`JOB_BOUND`]; now and then prunes old
    /// samples and events.
    async fn prune(&mut self) -> anyhow::Result<()> {
        while self.jobs.len() + self.finished.len() > JOB_BOUND {
            let Some(id) = self.finished.pop_front() else {
                break;
            };
            match self.store.delete_job(&id, &audit(&id)).await {
                Ok(()) | Err(crate::store::StoreError::NotFound) => {}
                Err(err) => return Err(err.into()),
            }
        }
        if self.tick.is_multiple_of(PRUNE_EVERY_TICKS) {
            let before = now_micros()
                - chrono::Duration::from_std(DEMO_RETENTION).unwrap_or(chrono::Duration::hours(3));
            self.store.prune(before).await?;
        }
        Ok(())
    }
}

/// Runs the demo until `stop` turns true. A failed tick is logged and the next one tried.
pub async fn run(store: Store, speed: f64, mut stop: watch::Receiver<bool>) {
    let mut demo = match Demo::start(store, speed).await {
        Ok(demo) => demo,
        Err(err) => {
            tracing::error!(error = %err, "the demo cluster could not start");
            return;
        }
    };
    tracing::info!(
        speed,
        tick_seconds = demo.tick_seconds,
        "demo cluster running"
    );
    // The first tick one period after start: the seeded cluster is served as it is first.
    let period = Duration::from_secs_f64(demo.tick_seconds);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if let Err(err) = demo.step().await {
            tracing::warn!(error = %err, "demo tick failed; trying again next tick");
        }
    }
}
