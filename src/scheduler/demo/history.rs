//! The demo cluster's history, seeded by `serve --demo` before the cluster comes alive: about
//! 100 jobs over every state and a sample per minute over the last two hours for every job that
//! ran, each on nodes of its own partition (the make-up in `mix.rs`, nodes that take jobs only),
//! with that partition's node sizes. Ids are fixed and each job is inserted only if absent, so
//! seeding again on restart neither fails nor duplicates anything. Every demo job says
//! `scheduler.type = "mock"`. The partitions are stored as the living demo stores them, so
//! `/v1/partitions` and `hpc_partition_*` have something to show from the first request.

use super::mix::{PartitionSpec, ACCOUNTS, PARTITIONS, UNAVAILABLE, USERS};
use super::{allocate, node_name, partitions};
use crate::domain::{now_micros, Job, JobState, MetricSample, SchedulerInfo};
use crate::store::{AuditContext, Store, StoreResult};
use chrono::{DateTime, Duration, Utc};

pub const JOB_COUNT: usize = 100;

/// Small deterministic generator (SplitMix64), so the seeded demo is the same on every start;
/// the living demo (`scheduler::demo`) draws from it too.
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// 0..n (0 when n is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// lo..=hi.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// A float in 0..1.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The partition's nodes that take jobs, by number.
fn schedulable(spec: &PartitionSpec) -> Vec<usize> {
    (spec.first..=spec.last)
        .filter(|n| UNAVAILABLE.iter().all(|(u, _, _)| u != n))
        .collect()
}

/// State of demo job `i`: 20 running, 10 pending, 45 completed, 15 failed, 10 cancelled.
fn state_of(i: usize) -> JobState {
    match i % 20 {
        0..=3 => JobState::Running,
        4 | 5 => JobState::Pending,
        6..=14 => JobState::Completed,
        15..=17 => JobState::Failed,
        _ => JobState::Cancelled,
    }
}

/// Builds demo job `i` and its samples, relative to `now`.
pub fn demo_job(i: usize, now: DateTime<Utc>) -> (Job, Vec<MetricSample>) {
    let mut rng = SplitMix(0x6A6F_6273_636F_7065 ^ i as u64);
    let state = state_of(i);
    let spec = rng.pick(PARTITIONS);
    let partition = spec.name;
    let (cpus_per_node, mem_per_node, gpus_per_node) = (
        i64::from(spec.cpus),
        spec.memory_gib as i64 * 1024,
        i64::from(spec.gpus),
    );
    let available = schedulable(spec);
    let widest = if partition == "debug" { 1 } else { 4 };
    let node_count = 1 + rng.below(widest.min(available.len() as u64)) as usize;
    let first = rng.below((available.len() - node_count + 1) as u64) as usize;
    let nodes: Vec<String> = available[first..first + node_count]
        .iter()
        .map(|&n| node_name(n))
        .collect();
    let user = rng.pick(USERS).to_string();
    let account = rng.pick(ACCOUNTS).to_string();

    // Everything happens inside the last two hours; finished jobs end before now.
    let start = now - Duration::seconds(300 + rng.below(6_600) as i64);
    let end = match state {
        JobState::Completed | JobState::Failed | JobState::Cancelled => {
            let span = (now - start).num_seconds().max(120);
            Some(start + Duration::seconds(60 + rng.below(span as u64 - 60) as i64))
        }
        _ => None,
    };
    let (exit_code, signal, raw_state) = match state {
        JobState::Completed => (Some(0), Some(0), Some("COMPLETED")),
        JobState::Failed => match rng.below(3) {
            0 => (Some(1), Some(0), Some("FAILED")),
            1 => (Some(0), Some(9), Some("OUT_OF_MEMORY")),
            _ => (Some(2), Some(0), Some("NODE_FAIL")),
        },
        JobState::Cancelled => match rng.below(2) {
            0 => (Some(0), Some(15), Some("CANCELLED")),
            _ => (Some(0), Some(15), Some("TIMEOUT")),
        },
        JobState::Running => (None, None, Some("RUNNING")),
        JobState::Pending => (None, None, Some("PENDING")),
    };
    let memory = mem_per_node * node_count as i64 / 2;

    let samples = if state == JobState::Pending {
        Vec::new()
    } else {
        demo_samples(
            &mut rng,
            start,
            end.unwrap_or(now),
            memory,
            gpus_per_node > 0,
        )
    };
    let id = format!("demo-{:04}", 1001 + i);
    let mut job = Job::new(
        id.clone(),
        user,
        nodes,
        state,
        start,
        "demo",
        "mock",
        "mock-v1",
    );
    job.end_time = end;
    allocate(
        &mut job,
        cpus_per_node * node_count as i64,
        memory,
        gpus_per_node,
    );
    job.exit_code = exit_code;
    job.signal = signal;
    job.scheduler = Some(SchedulerInfo {
        kind: Some("mock".into()),
        external_job_id: Some(id),
        raw_state: raw_state.map(str::to_owned),
        submit_time: Some(start - Duration::seconds(30 + rng.below(900) as i64)),
        partition: Some(partition.into()),
        account: Some(account),
        qos: Some("normal".into()),
        priority: Some(1000 + rng.below(9000) as i64),
        exit_code,
        state_reason: (state == JobState::Pending).then(|| "Resources".into()),
        time_limit_minutes: Some((*rng.pick(&[60, 120, 240, 1440])).min(spec.max_minutes)),
        extra: None,
        sluid: None,
    });
    apply_aggregates(&mut job, &samples);
    (job, samples)
}

/// One sample a minute from `start` to `end`: CPU around a per-job level, memory ramping up to a
/// plateau, GPU busy when the job has GPUs.
fn demo_samples(
    rng: &mut SplitMix,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    memory_mb: i64,
    gpu: bool,
) -> Vec<MetricSample> {
    let level = 20.0 + rng.unit() * 75.0;
    let plateau = memory_mb as f64 * (0.2 + rng.unit() * 0.7);
    let minutes = (end - start).num_minutes().max(1);
    (0..minutes)
        .map(|m| {
            let ramp = ((m + 1) as f64 / 10.0).min(1.0);
            MetricSample {
                timestamp: start + Duration::seconds(m * 60 + 30),
                cpu_usage: Some((level + (rng.unit() - 0.5) * 20.0).clamp(0.0, 100.0)),
                memory_usage_mb: Some((plateau * ramp) as i64),
                gpu_usage: gpu.then(|| (level * 0.9 + (rng.unit() - 0.5) * 30.0).clamp(0.0, 100.0)),
                detail: Default::default(),
            }
        })
        .collect()
}

/// The job's current values and aggregates, as the store would have computed them sample by sample.
fn apply_aggregates(job: &mut Job, samples: &[MetricSample]) {
    let Some(last) = samples.last() else { return };
    let cpu: Vec<f64> = samples.iter().filter_map(|s| s.cpu_usage).collect();
    let gpu: Vec<f64> = samples.iter().filter_map(|s| s.gpu_usage).collect();
    job.cpu_usage = last.cpu_usage;
    job.memory_usage_mb = last.memory_usage_mb;
    job.gpu_usage = last.gpu_usage;
    job.last_sample_at = Some(last.timestamp);
    job.sample_count = samples.len() as i64;
    if !cpu.is_empty() {
        job.avg_cpu_usage = Some(cpu.iter().sum::<f64>() / cpu.len() as f64);
        job.max_cpu_usage = cpu.iter().copied().reduce(f64::max);
    }
    job.max_memory_usage_mb = samples.iter().filter_map(|s| s.memory_usage_mb).max();
    if !gpu.is_empty() {
        job.avg_gpu_usage = Some(gpu.iter().sum::<f64>() / gpu.len() as f64);
        job.max_gpu_usage = gpu.iter().copied().reduce(f64::max);
    }
}

/// The demo partitions with `jobs` running and waiting in them.
pub fn demo_partitions(jobs: &[Job], now: DateTime<Utc>) -> Vec<crate::domain::Partition> {
    partitions(now, |partition, queued| {
        let state = if queued {
            JobState::Pending
        } else {
            JobState::Running
        };
        jobs.iter()
            .filter(|j| {
                j.state == state
                    && j.scheduler.as_ref().and_then(|s| s.partition.as_deref()) == Some(partition)
            })
            .count() as i64
    })
}

/// Seeds the demo cluster; returns how many jobs were new.
pub async fn seed(store: &Store) -> StoreResult<usize> {
    let now = now_micros();
    let audit = AuditContext {
        changed_by: "demo-seeder".into(),
        source: "mock-scheduler".into(),
        correlation_id: uuid::Uuid::new_v4().to_string(),
        actor: None,
    };
    let mut created = 0;
    let mut jobs = Vec::with_capacity(JOB_COUNT);
    for i in 0..JOB_COUNT {
        let (job, samples) = demo_job(i, now);
        if store.seed_job(&job, &samples, &audit).await? {
            created += 1;
        }
        jobs.push(job);
    }
    store.sync_partitions(&demo_partitions(&jobs, now)).await?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_covers_every_state_and_never_ends_in_the_future() {
        let now = now_micros();
        let jobs: Vec<(Job, Vec<MetricSample>)> =
            (0..JOB_COUNT).map(|i| demo_job(i, now)).collect();
        for state in JobState::ALL {
            assert!(jobs.iter().any(|(j, _)| j.state == state), "no {state} job");
        }
        for (job, samples) in &jobs {
            assert!(job.start_time >= now - Duration::hours(2), "{}", job.id);
            if let Some(end) = job.end_time {
                assert!(end <= now && end >= job.start_time, "{}", job.id);
            }
            assert_eq!(
                job.state.is_terminal(),
                job.end_time.is_some(),
                "{}",
                job.id
            );
            for s in samples {
                assert!(
                    s.timestamp <= job.end_time.unwrap_or(now),
                    "{} sample after end",
                    job.id
                );
                assert!((0.0..=100.0).contains(&s.cpu_usage.expect("demo samples have CPU")));
            }
            assert_eq!(job.sample_count as usize, samples.len());
            assert_eq!(
                job.state == JobState::Pending,
                samples.is_empty(),
                "{}",
                job.id
            );
        }
        let nodes: std::collections::HashSet<&String> =
            jobs.iter().flat_map(|(j, _)| &j.nodes).collect();
        assert!(nodes.len() > 30, "{} nodes in use", nodes.len());
    }

    /// Each job on nodes of its own partition that take jobs, sized as those nodes are: the
    /// living demo's agents report the same nodes (a GPU job on a node without GPUs would have
    /// its node's GPUs blanked by them).
    #[test]
    fn demo_jobs_fit_their_partitions_nodes() {
        let now = now_micros();
        for i in 0..JOB_COUNT {
            let job = demo_job(i, now).0;
            let partition = job.scheduler.as_ref().and_then(|s| s.partition.clone());
            let spec = PARTITIONS
                .iter()
                .find(|p| Some(p.name) == partition.as_deref())
                .expect("a partition of the make-up");
            let names: Vec<String> = schedulable(spec).into_iter().map(node_name).collect();
            for node in &job.nodes {
                assert!(
                    names.contains(node),
                    "{}: {node} not in {}",
                    job.id,
                    spec.name
                );
            }
            let n = job.nodes.len() as i64;
            assert_eq!(
                job.allocated_cpus,
                Some(i64::from(spec.cpus) * n),
                "{}",
                job.id
            );
            assert_eq!(
                job.allocated_gpus,
                Some(i64::from(spec.gpus) * n),
                "{}",
                job.id
            );
            let limit = job.scheduler.as_ref().and_then(|s| s.time_limit_minutes);
            assert!(limit.is_some_and(|m| m <= spec.max_minutes), "{}", job.id);
        }
    }

    #[test]
    fn demo_partitions_hold_their_jobs() {
        let now = now_micros();
        let jobs: Vec<Job> = (0..JOB_COUNT).map(|i| demo_job(i, now).0).collect();
        let parts = demo_partitions(&jobs, now);
        assert_eq!(parts.len(), PARTITIONS.len() + 1, "and the inactive one");
        let running: i64 = parts.iter().map(|p| p.jobs_running).sum();
        let pending: i64 = parts.iter().map(|p| p.jobs_pending).sum();
        let count = |s| jobs.iter().filter(|j| j.state == s).count() as i64;
        assert_eq!(
            (running, pending),
            (count(JobState::Running), count(JobState::Pending))
        );
        for p in &parts {
            assert!(!p.nodes.is_empty(), "{}", p.name);
            assert_eq!(p.total_nodes, Some(p.nodes.len() as i64));
        }
        assert_eq!(parts.iter().filter(|p| p.is_default).count(), 1);
    }

    #[test]
    fn demo_is_deterministic() {
        let now = now_micros();
        assert_eq!(demo_job(7, now).0, demo_job(7, now).0);
    }
}
