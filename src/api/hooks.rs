//! The Slurm lifecycle hooks: `POST /v1/events/job-started` (prolog) and
//! `POST /v1/events/job-finished` (epilog).
//!
//! Both are idempotent, because Slurm runs the hooks on every node of a job and a hook client
//! retries from its spool: a repeat answers `skipped` and writes nothing. Epilogs race prologs,
//! so a job-finished for an unknown job that names its user and nodes creates the job already
//! finished. All events of one job share a correlation id derived from its id unless the caller
//! sends one.

use super::error::{respond, ApiError};
use super::{with_correlation, AppState};
use crate::domain::validate::{self, MAX_GPU_DEVICES, MAX_NODES};
use crate::domain::{now_micros, slurm_state, GpuVendor, Job, JobState, SchedulerInfo};
use crate::log_safe::Esc;
use crate::store::{Applied, AuditContext, Finish, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use warp::reply::{json, Reply, Response};

const SOURCE: &str = "lifecycle-event";
const PROLOG: &str = "slurm-prolog";
const EPILOG: &str = "slurm-epilog";

#[derive(Serialize)]
struct EventOutcome<'a> {
    status: &'a str,
    job_id: &'a str,
    message: &'a str,
}

/// The outcome of a hook, carried in the response's extensions for `/metrics`.
#[derive(Clone, Copy)]
pub(crate) struct HookOutcome(pub(crate) &'static str);

fn outcome(status: &'static str, job_id: &str, message: &str) -> Response {
    let mut response = json(&EventOutcome {
        status,
        job_id,
        message,
    })
    .into_response();
    response.extensions_mut().insert(HookOutcome(status));
    response
}

pub use crate::domain::job::lifecycle_correlation_id;

/// Correlation id of one hook request (an event without a job id is rejected later; it still
/// gets an id so its error response can be traced).
fn event_correlation(given: Option<String>, job_id: Option<&str>) -> String {
    match job_id {
        Some(id) => lifecycle_correlation_id(given, id.trim()),
        None => given.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
    }
}

#[derive(Deserialize)]
pub struct JobStarted {
    job_id: Option<String>,
    user: Option<String>,
    node_list: Option<Vec<String>>,
    timestamp: Option<DateTime<Utc>>,
    cpu_allocation: Option<i64>,
    memory_allocation_mb: Option<i64>,
    gpu_allocation: Option<i64>,
    gpu_vendor: Option<String>,
    gpu_devices: Option<Vec<String>>,
    cgroup_path: Option<String>,
    partition: Option<String>,
    account: Option<String>,
    job_name: Option<String>,
    cluster_name: Option<String>,
    /// Slurm 26.05+'s cluster-unique job id (`SLURM_JOB_SLUID`).
    sluid: Option<String>,
    /// For an array task: the array's job id (`SLURM_ARRAY_JOB_ID`) and the task's index.
    array_job_id: Option<String>,
    array_task_id: Option<i64>,
}

pub async fn job_started(
    who: super::identity::Identity,
    correlation: Option<String>,
    event: JobStarted,
    state: AppState,
) -> Response {
    let correlation = event_correlation(correlation, event.job_id.as_deref());
    let result = started(event, &correlation, who.audit_actor(), &state).await;
    with_correlation(respond(result), &correlation)
}

/// The job a job-started event describes, validated.
fn started_job(e: JobStarted) -> Result<Job, ApiError> {
    let id = validate::required_name("job_id", e.job_id.as_deref(), "job_id is required")?;
    let user = validate::required_name("user", e.user.as_deref(), "user is required")?;
    let nodes = node_list(e.node_list.as_deref())?;
    let cpus = validate::count("cpu_allocation", e.cpu_allocation)?;
    let memory = validate::count("memory_allocation_mb", e.memory_allocation_mb)?;
    let gpus = validate::count("gpu_allocation", e.gpu_allocation)?;
    let gpu_vendor = e
        .gpu_vendor
        .map(|v| {
            v.parse::<GpuVendor>().map_err(|_| {
                ApiError::Validation(
                    "Invalid gpu_vendor (expected none, nvidia, amd or mixed)".into(),
                )
            })
        })
        .transpose()?;
    let gpu_devices = validate::name_list(
        "gpu_devices",
        e.gpu_devices.as_deref().unwrap_or_default(),
        MAX_GPU_DEVICES,
    )?;
    let cgroup_path = validate::optional_name("cgroup_path", e.cgroup_path.as_deref())?;
    if cgroup_path.as_deref().is_some_and(|p| !p.starts_with('/')) {
        return Err(ApiError::Validation(
            "cgroup_path must be an absolute path".into(),
        ));
    }
    let cluster = validate::optional_name("cluster_name", e.cluster_name.as_deref())?;
    let job_name = validate::optional_name("job_name", e.job_name.as_deref())?;
    let array_job_id = validate::optional_name("array_job_id", e.array_job_id.as_deref())?;
    let array_task_id = validate::count("array_task_id", e.array_task_id)?;
    let start = validate::reported_time("timestamp", e.timestamp, now_micros())?;
    let scheduler = SchedulerInfo {
        kind: Some("slurm".into()),
        external_job_id: Some(id.clone()),
        partition: validate::optional_name("partition", e.partition.as_deref())?,
        account: validate::optional_name("account", e.account.as_deref())?,
        sluid: validate::optional_name("sluid", e.sluid.as_deref())?,
        extra: crate::domain::job::scheduler_extra(
            job_name.as_deref(),
            array_job_id.as_deref(),
            array_task_id,
        ),
        ..SchedulerInfo::default()
    };
    let gpu_count = if gpu_devices.is_empty() {
        gpus
    } else {
        Some(gpu_devices.len() as i64)
    };
    let base = Job::new(
        id,
        user,
        nodes,
        JobState::Running,
        start,
        cluster.as_deref().unwrap_or("default"),
        "slurm",
        "prolog-v1",
    );
    Ok(Job {
        requested_cpus: cpus,
        allocated_cpus: cpus,
        requested_memory_mb: memory,
        allocated_memory_mb: memory,
        requested_gpus: gpus,
        allocated_gpus: gpus,
        scheduler: Some(scheduler),
        cgroup_path,
        gpu_vendor,
        gpu_devices,
        gpu_count,
        ..base
    })
}

fn node_list(list: Option<&[String]>) -> Result<Vec<String>, ApiError> {
    match list {
        None | Some([]) => Err(ApiError::Validation("node_list is required".into())),
        Some(nodes) => Ok(validate::name_list("node_list", nodes, MAX_NODES)?),
    }
}

async fn started(
    event: JobStarted,
    correlation: &str,
    actor: Option<String>,
    state: &AppState,
) -> Result<Response, ApiError> {
    let job = started_job(event)?;
    let audit = AuditContext {
        changed_by: PROLOG.into(),
        source: SOURCE.into(),
        correlation_id: correlation.to_owned(),
        actor,
    };
    Ok(
        match state.store.insert_job_if_absent(&job, &audit).await? {
            Applied::Done(_) => {
                tracing::info!(job_id = %Esc(&job.id), user = %Esc(&job.user), nodes = job.nodes.len(), "job started");
                outcome("created", &job.id, "Job created")
            }
            Applied::Filled(_) => outcome(
                "updated",
                &job.id,
                "Job already existed; details it lacked were added",
            ),
            Applied::Skipped => outcome("skipped", &job.id, "Job already exists"),
        },
    )
}

#[derive(Deserialize)]
pub struct JobFinished {
    job_id: Option<String>,
    final_state: Option<String>,
    slurm_state: Option<String>,
    exit_code: Option<i64>,
    signal: Option<i64>,
    timestamp: Option<DateTime<Utc>>,
    user: Option<String>,
    node_list: Option<Vec<String>>,
}

pub async fn job_finished(
    who: super::identity::Identity,
    correlation: Option<String>,
    event: JobFinished,
    state: AppState,
) -> Response {
    // Without a header the epilog continues the trace its prolog started (the store records
    // the change under the job's own correlation id and the response echoes it).
    let inherit = correlation.is_none();
    let fallback = event_correlation(correlation, event.job_id.as_deref());
    let (response, recorded) =
        match finished(event, &fallback, inherit, who.audit_actor(), &state).await {
            Ok((response, recorded)) => (response, recorded),
            Err(err) => (err.into_response(), None),
        };
    with_correlation(response, recorded.as_deref().unwrap_or(&fallback))
}

/// Handles a job-finished event; the response and, when the change continued the job's stored
/// trace, the correlation id it was recorded under.
async fn finished(
    e: JobFinished,
    correlation: &str,
    inherit_correlation: bool,
    actor: Option<String>,
    state: &AppState,
) -> Result<(Response, Option<String>), ApiError> {
    let id = validate::required_name("job_id", e.job_id.as_deref(), "job_id is required")?;
    let exit_code = validate::in_range(
        "exit_code",
        e.exit_code,
        0,
        255,
        " (the exit status, not the raw wait status)",
    )?;
    let signal = validate::in_range("signal", e.signal, 0, 127, "")?;
    let raw_state = validate::optional_name("slurm_state", e.slurm_state.as_deref())?
        .and_then(|s| slurm_state::normalize(&s));
    let final_state = match e.final_state.as_deref().map(str::trim) {
        Some(s) => match s.parse::<JobState>() {
            Ok(st) if st.is_terminal() => st,
            _ => return Err(ApiError::Validation("Invalid final_state".into())),
        },
        None => slurm_state::final_state(raw_state.as_deref(), exit_code, signal),
    };
    let finish = Finish {
        state: final_state,
        end_time: validate::reported_time("timestamp", e.timestamp, now_micros())?,
        exit_code,
        signal,
        raw_state,
        inherit_correlation,
    };
    let audit = AuditContext {
        changed_by: EPILOG.into(),
        source: SOURCE.into(),
        correlation_id: correlation.to_owned(),
        actor,
    };
    match state.store.finish_job(&id, &finish, &audit).await {
        Ok(Applied::Done(job)) => {
            tracing::info!(job_id = %Esc(&id), state = %job.state, exit_code = ?job.exit_code, signal = ?job.signal, "job finished");
            Ok((
                outcome("updated", &id, "Job updated"),
                job.correlation_id.clone(),
            ))
        }
        Ok(Applied::Skipped | Applied::Filled(_)) => Ok((
            outcome("skipped", &id, "Job already in terminal state"),
            None,
        )),
        Err(StoreError::NotFound) if e.user.is_some() && e.node_list.is_some() => {
            let user = validate::required_name("user", e.user.as_deref(), "user is required")?;
            let nodes = node_list(e.node_list.as_deref())?;
            Ok((
                create_finished(id, user, nodes, &finish, &audit, state).await?,
                None,
            ))
        }
        Err(err) => Err(err.into()),
    }
}

/// The epilog arrived first: record the job as already finished. If the prolog lands in the
/// meantime, finish the job it created instead.
async fn create_finished(
    id: String,
    user: String,
    nodes: Vec<String>,
    finish: &Finish,
    audit: &AuditContext,
    state: &AppState,
) -> Result<Response, ApiError> {
    let base = Job::new(
        id.clone(),
        user,
        nodes,
        finish.state,
        finish.end_time,
        "default",
        "slurm",
        "epilog-v1",
    );
    let job = Job {
        end_time: Some(finish.end_time),
        exit_code: finish.exit_code,
        signal: finish.signal,
        scheduler: Some(SchedulerInfo {
            kind: Some("slurm".into()),
            external_job_id: Some(id.clone()),
            raw_state: finish.raw_state.clone(),
            exit_code: finish.exit_code,
            ..SchedulerInfo::default()
        }),
        ..base
    };
    match state.store.insert_job_if_absent(&job, audit).await? {
        Applied::Done(_) => {
            tracing::info!(job_id = %Esc(&id), "job-finished arrived before job-started; created the job finished");
            Ok(outcome(
                "created",
                &id,
                "Job created in its final state (no job-started event seen)",
            ))
        }
        // The prolog landed in the meantime: finish the job it created.
        Applied::Skipped | Applied::Filled(_) => {
            match state.store.finish_job(&id, finish, audit).await? {
                Applied::Done(_) => Ok(outcome("updated", &id, "Job updated")),
                Applied::Skipped | Applied::Filled(_) => {
                    Ok(outcome("skipped", &id, "Job already in terminal state"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_correlation_is_stable_per_job() {
        let a = lifecycle_correlation_id(None, "4242");
        assert_eq!(a, lifecycle_correlation_id(None, "4242"));
        assert_ne!(a, lifecycle_correlation_id(None, "4243"));
        assert_eq!(
            lifecycle_correlation_id(Some("given".into()), "4242"),
            "given"
        );
    }
}
