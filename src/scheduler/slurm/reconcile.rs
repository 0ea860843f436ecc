//! The reconcile loop and one pass of it (see the module above for what a pass does).

use super::client::SlurmRest;
use super::jobs::SlurmJob;
use super::SlurmConfig;
use crate::domain::job::lifecycle_correlation_id;
use crate::domain::{now_micros, slurm_state, Job, JobState, SchedulerInfo};
use crate::store::{Applied, AuditContext, Finish, JobFilter, Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;

pub const CHANGED_BY: &str = "slurm-reconciler";
const SOURCE: &str = "slurmrestd";
/// Raw state of a job Slurm forgot before jobscope heard how it ended.
pub const VANISHED: &str = "VANISHED";

/// What one pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Final states written or corrected.
    pub confirmed: usize,
    /// Jobs created because their prolog never arrived.
    pub created: usize,
    /// Running jobs Slurm no longer knows, finalized as vanished.
    pub vanished: usize,
}

/// Remembers which finished jobs were already confirmed, so each is written at most once.
#[derive(Debug, Default)]
pub struct Reconciler {
    confirmed: HashSet<String>,
}

fn audit(job_id: &str) -> AuditContext {
    AuditContext {
        changed_by: CHANGED_BY.into(),
        source: SOURCE.into(),
        correlation_id: lifecycle_correlation_id(None, job_id),
        actor: None,
    }
}

fn finish_of(j: &SlurmJob) -> Finish {
    Finish {
        state: slurm_state::final_state(Some(&j.state), j.exit_code, j.signal),
        end_time: j.end.unwrap_or_else(now_micros),
        exit_code: j.exit_code.filter(|c| (0..=255).contains(c)),
        signal: j.signal.filter(|s| (0..=127).contains(s)),
        raw_state: Some(j.state.clone()),
        inherit_correlation: true,
    }
}

/// A job as Slurm describes it, for one whose prolog never reached jobscope.
fn job_of(j: &SlurmJob) -> Option<Job> {
    let user = j.user.clone()?;
    let start = j.start?;
    let state = if j.is_terminal() {
        finish_of(j).state
    } else {
        JobState::Running
    };
    let mut job = Job::new(
        j.id.clone(),
        user,
        j.nodes.clone(),
        state,
        start,
        j.cluster.as_deref().unwrap_or("default"),
        "slurm",
        "slurmrestd-v1",
    );
    job.allocated_cpus = j.cpus;
    job.requested_cpus = j.cpus;
    job.requested_memory_mb = j.requested_memory_mb;
    job.allocated_memory_mb = j.allocated_memory_mb;
    job.scheduler = Some(SchedulerInfo {
        kind: Some("slurm".into()),
        external_job_id: Some(j.id.clone()),
        partition: j.partition.clone(),
        account: j.account.clone(),
        raw_state: Some(j.state.clone()),
        extra: crate::domain::job::scheduler_extra(
            j.name.as_deref(),
            j.array_job_id.as_deref(),
            j.array_task_id,
        ),
        ..SchedulerInfo::default()
    });
    if state.is_terminal() {
        let f = finish_of(j);
        job.end_time = Some(f.end_time.max(start));
        job.exit_code = f.exit_code;
        job.signal = f.signal;
    }
    Some(job)
}

/// Whether Slurm knows a figure of the job's allocation that the stored job lacks. The hooks
/// never know memory (no hook environment carries it), so every job the hooks made gets its
/// memory here, while it runs or when it is confirmed.
fn lacks_allocation(stored: &Job, j: &SlurmJob) -> bool {
    let lacks = |mine: Option<i64>, slurm: Option<i64>| mine.is_none() && slurm.is_some();
    lacks(stored.requested_memory_mb, j.requested_memory_mb)
        || lacks(stored.allocated_memory_mb, j.allocated_memory_mb)
        || lacks(stored.allocated_cpus, j.cpus)
}

impl Reconciler {
    /// One pass over Slurm's job list. `grace`: how long a running job may be missing from
    /// Slurm's list before it counts as vanished (a job just submitted may not be listed yet).
    pub async fn pass(
        &mut self,
        slurm_jobs: &[SlurmJob],
        store: &Store,
        grace: Duration,
    ) -> Result<PassReport, StoreError> {
        let mut report = PassReport::default();
        let known: HashMap<&str, &SlurmJob> =
            slurm_jobs.iter().map(|j| (j.id.as_str(), j)).collect();
        for j in slurm_jobs {
            if j.is_terminal() {
                if !j.ran() || self.confirmed.contains(&j.id) {
                    continue;
                }
                match store
                    .confirm_final(&j.id, &finish_of(j), &audit(&j.id))
                    .await
                {
                    Ok(Applied::Done(job)) => {
                        tracing::info!(job_id = %j.id, slurm_state = %j.state, state = %job.state, exit_code = ?job.exit_code, signal = ?job.signal, "final state confirmed from Slurm");
                        report.confirmed += 1;
                        // A job too short for a pass to see it running.
                        if lacks_allocation(&job, j) {
                            self.fill(j, store).await?;
                        }
                    }
                    Ok(_) => {}
                    Err(StoreError::NotFound) => {
                        if self.create(j, store).await? {
                            report.created += 1;
                        }
                    }
                    Err(e) => return Err(e),
                }
                self.confirmed.insert(j.id.clone());
            } else if j.is_running() && j.ran() {
                match store.get_job(&j.id).await {
                    Err(StoreError::NotFound) => {
                        if self.create(j, store).await? {
                            report.created += 1;
                        }
                    }
                    Err(e) => return Err(e),
                    Ok(stored) => {
                        if lacks_allocation(&stored, j) {
                            self.fill(j, store).await?;
                        }
                    }
                }
            }
        }
        // Memory stays bounded by Slurm's own list.
        self.confirmed.retain(|id| known.contains_key(id.as_str()));

        let cutoff = now_micros() - chrono::Duration::from_std(grace).unwrap_or_default();
        let mut offset = 0;
        loop {
            let filter = JobFilter {
                state: Some(JobState::Running),
                limit: 1000,
                offset,
                ..JobFilter::default()
            };
            let (page, _) = store.list_jobs(&filter).await?;
            let n = page.len() as i64;
            for job in page {
                let from_slurm =
                    job.scheduler.as_ref().and_then(|s| s.kind.as_deref()) == Some("slurm");
                if !from_slurm || known.contains_key(job.id.as_str()) || job.start_time > cutoff {
                    continue;
                }
                let finish = Finish {
                    state: JobState::Failed,
                    end_time: now_micros(),
                    exit_code: None,
                    signal: None,
                    raw_state: Some(VANISHED.into()),
                    inherit_correlation: true,
                };
                if let Ok(Applied::Done(_)) =
                    store.confirm_final(&job.id, &finish, &audit(&job.id)).await
                {
                    tracing::warn!(job_id = %job.id, "Slurm no longer knows this running job; finalized as failed (VANISHED)");
                    report.vanished += 1;
                }
            }
            if n < 1000 {
                break;
            }
            offset += n;
        }
        Ok(report)
    }

    /// Adds what Slurm knows of a job's allocation to the stored job, keeping everything it has
    /// (the hooks' times above all: they are finer than Slurm's whole seconds).
    async fn fill(&self, j: &SlurmJob, store: &Store) -> Result<(), StoreError> {
        let Some(job) = job_of(j) else {
            return Ok(());
        };
        if let Applied::Filled(job) = store.insert_job_if_absent(&job, &audit(&j.id)).await? {
            tracing::debug!(job_id = %j.id, requested_memory_mb = ?job.requested_memory_mb, allocated_memory_mb = ?job.allocated_memory_mb, "allocation filled in from Slurm");
        }
        Ok(())
    }

    async fn create(&self, j: &SlurmJob, store: &Store) -> Result<bool, StoreError> {
        let Some(job) = job_of(j) else {
            return Ok(false);
        };
        match store.insert_job_if_absent(&job, &audit(&j.id)).await? {
            Applied::Done(_) => {
                tracing::info!(job_id = %j.id, slurm_state = %j.state, "job created from Slurm (its prolog never arrived)");
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Runs until `stop` turns true: waits for slurmrestd (logging why it cannot reach it), then
/// every `cfg.interval` reconciles jobs and feeds Slurm's node list to the store. Errors are
/// logged, `health` says whether slurmrestd answers, and the next tick tries again.
pub async fn run(
    cfg: SlurmConfig,
    store: Store,
    health: super::SlurmHealth,
    mut stop: watch::Receiver<bool>,
) {
    let client = match SlurmRest::new(&cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "Slurm backend disabled");
            health.set_problem(Some(e.to_string()));
            return;
        }
    };
    health.set_problem(Some(format!(
        "not connected to slurmrestd at {} yet",
        client.url()
    )));
    let retry = cfg.interval.min(Duration::from_secs(5));
    loop {
        match client.negotiate().await {
            Ok(v) => {
                tracing::info!(url = client.url(), version = v, "slurmrestd connected");
                health.set_problem(None);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "waiting for slurmrestd; retrying in {retry:?}");
                health.set_problem(Some(e.to_string()));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    let mut reconciler = Reconciler::default();
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = false;
    let mut nodes_failing = SideFeed {
        what: "nodes",
        failing: false,
    };
    let mut partitions_failing = SideFeed {
        what: "partitions",
        failing: false,
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let jobs = match client.jobs().await {
            Ok(jobs) => jobs,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "slurmrestd unavailable; jobs keep coming from the hooks");
                    failing = true;
                }
                health.set_problem(Some(e.to_string()));
                continue;
            }
        };
        if failing {
            tracing::info!(url = client.url(), "slurmrestd reachable again");
            failing = false;
        }
        health.set_problem(None);
        match reconciler.pass(&jobs, &store, 2 * cfg.interval).await {
            Ok(r) if r != PassReport::default() => {
                tracing::info!(
                    confirmed = r.confirmed,
                    created = r.created,
                    vanished = r.vanished,
                    "reconciled with Slurm"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reconcile pass failed"),
        }
        // Nodes and partitions on their own: a slurmrestd user allowed to read jobs but not
        // nodes still gets its jobs reconciled.
        match client.nodes().await {
            Ok(nodes) => {
                nodes_failing.recovered();
                match store.update_nodes_from_scheduler(&nodes).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(changed = n, "nodes updated from Slurm"),
                    Err(e) => tracing::warn!(error = %e, "storing Slurm's nodes failed"),
                }
            }
            Err(e) => nodes_failing.failed(&e),
        }
        match client.partitions().await {
            Ok(mut partitions) => {
                partitions_failing.recovered();
                super::partitions::count_jobs(&mut partitions, &jobs);
                match store.sync_partitions(&partitions).await {
                    Ok((0, 0)) => {}
                    Ok((changed, deleted)) => {
                        tracing::debug!(changed, deleted, "partitions updated from Slurm")
                    }
                    Err(e) => tracing::warn!(error = %e, "storing Slurm's partitions failed"),
                }
            }
            Err(e) => partitions_failing.failed(&e),
        }
    }
}

/// A feed read besides the jobs (nodes, partitions): its failure is logged once, not every
/// pass, and what the store has of it stays as it is meanwhile.
struct SideFeed {
    what: &'static str,
    failing: bool,
}

impl SideFeed {
    fn failed(&mut self, error: &super::client::RestError) {
        if !self.failing {
            tracing::warn!(error = %error, "cannot read Slurm's {}; what jobscope has of them stays as it is", self.what);
            self.failing = true;
        }
    }

    fn recovered(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!("reading Slurm's {} again", self.what);
        }
    }
}
