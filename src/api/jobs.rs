//! The job resource: `GET/POST /v1/jobs`, `GET/PATCH/DELETE /v1/jobs/{id}`,
//! `GET/POST /v1/jobs/{id}/metrics` (rolled-up resolutions: `api::rollups`) and
//! `GET /v1/jobs/{id}/audit`.

use super::error::ApiError;
use super::identity::Identity;
use super::request::{audited, int_param, job_id, time_param, AuditHeaders};
use super::AppState;
use crate::domain::rollup::Resolution;
use crate::domain::validate::{self, MAX_NODES};
use crate::domain::{now_micros, AuditEvent, Job, JobState, MetricSample, SchedulerInfo};
use crate::store::{AuditContext, JobFilter, JobPatch, JobSort, SampleQuery};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use warp::http::StatusCode;
use warp::reply::{json, with_status, Reply, Response};

type Handled = Result<Response, ApiError>;

#[derive(Serialize)]
struct JobList {
    jobs: Vec<Job>,
    total: i64,
    limit: i64,
    offset: i64,
}

/// Whether users may list every job's lifecycle (`--users-see-all-jobs`).
pub(super) fn users_see_all(state: &AppState) -> bool {
    state.tokens.as_ref().is_some_and(|t| t.users_see_all_jobs)
}

/// Job `id` if `who` may see it with `all_lifecycles`; another user's job is a missing job.
pub(super) async fn visible_job(
    who: &Identity,
    id: &str,
    all_lifecycles: bool,
    state: &AppState,
) -> Result<Job, ApiError> {
    let job = state.store.get_job(id).await?;
    who.check_job(&job, all_lifecycles)?;
    Ok(job)
}

pub async fn list(who: Identity, params: HashMap<String, String>, state: AppState) -> Response {
    super::error::respond(list_inner(who, params, state).await)
}

async fn list_inner(who: Identity, params: HashMap<String, String>, state: AppState) -> Handled {
    let state = state.for_reads();
    let job_state = match params
        .get("state")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        Some(s) => Some(
            s.parse::<JobState>()
                .map_err(|_| ApiError::Validation("Invalid job state".into()))?,
        ),
        None => None,
    };
    let mut user = validate::optional_name("user", params.get("user").map(String::as_str))?;
    let mut nobody = false;
    if let (Some(me), false) = (who.user(), users_see_all(&state)) {
        // A user lists their own jobs, whatever `user` they ask for (someone else's: none).
        nobody = user.as_deref().is_some_and(|u| u != me);
        user = Some(me.to_owned());
    }
    let filter = JobFilter {
        state: job_state,
        user,
        node: validate::optional_name("node", params.get("node").map(String::as_str))?,
        limit: int_param(&params, "limit", 100, 1, 1000)?,
        offset: int_param(&params, "offset", 0, 0, i64::MAX)?,
        partition: validate::optional_name(
            "partition",
            params.get("partition").map(String::as_str),
        )?,
        sort: match params
            .get("sort")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            None => JobSort::default(),
            Some(name) => JobSort::parse(name).ok_or_else(|| {
                ApiError::Validation(format!(
                    "Invalid sort (expected one of {})",
                    JobSort::NAMES.join(", ")
                ))
            })?,
        },
        ascending: match params.get("order").map(|s| s.trim()) {
            None | Some("") | Some("desc") => false,
            Some("asc") => true,
            Some(_) => {
                return Err(ApiError::Validation(
                    "Invalid order (expected asc or desc)".into(),
                ))
            }
        },
    };
    let (jobs, total) = if nobody {
        (Vec::new(), 0)
    } else {
        state.store.list_jobs(&filter).await?
    };
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let mut unavailable = state.store.log_unavailable_of(&ids).await?;
    let mut body = serde_json::to_value(JobList {
        jobs,
        total,
        limit: filter.limit,
        offset: filter.offset,
    })
    .map_err(|_| ApiError::Internal)?;
    if let Some(list) = body["jobs"].as_array_mut() {
        for job in list {
            let reason = job["id"].as_str().and_then(|id| unavailable.remove(id));
            with_log_unavailable(job, reason);
        }
    }
    Ok(json(&body).into_response())
}

#[derive(Deserialize)]
pub struct CreateJob {
    id: Option<String>,
    user: Option<String>,
    #[serde(default)]
    nodes: Vec<String>,
    scheduler: Option<SchedulerInfo>,
}

pub async fn create(
    who: Identity,
    headers: AuditHeaders,
    body: CreateJob,
    state: AppState,
) -> Response {
    audited(headers.by(&who).for_new_job(), |audit| {
        create_inner(audit, body, state)
    })
    .await
}

async fn create_inner(audit: AuditContext, body: CreateJob, state: AppState) -> Handled {
    let id = validate::required_name("id", body.id.as_deref(), "Job ID is required")?;
    let user = validate::required_name("user", body.user.as_deref(), "User is required")?;
    if body.nodes.is_empty() {
        return Err(ApiError::Validation("At least one node is required".into()));
    }
    let nodes = validate::name_list("nodes", &body.nodes, MAX_NODES)?;
    let scheduler = body.scheduler.map(check_scheduler).transpose()?;
    let job = Job {
        scheduler,
        ..Job::new(
            id,
            user,
            nodes,
            JobState::Running,
            now_micros(),
            "default",
            "api",
            "api-v1",
        )
    };
    let stored = state.store.create_job(&job, &audit).await?;
    Ok(with_status(json(&stored), StatusCode::CREATED).into_response())
}

/// Scheduler facts given with `POST /v1/jobs`: strings bounded, numbers in range.
fn check_scheduler(s: SchedulerInfo) -> Result<SchedulerInfo, ApiError> {
    let name = |field: &str, v: Option<String>| validate::optional_name(field, v.as_deref());
    Ok(SchedulerInfo {
        kind: name("scheduler.type", s.kind)?,
        external_job_id: name("scheduler.external_job_id", s.external_job_id)?,
        raw_state: name("scheduler.raw_state", s.raw_state)?,
        submit_time: s
            .submit_time
            .map(|t| validate::reported_time("scheduler.submit_time", Some(t), now_micros()))
            .transpose()?,
        partition: name("scheduler.partition", s.partition)?,
        account: name("scheduler.account", s.account)?,
        qos: name("scheduler.qos", s.qos)?,
        priority: validate::count("scheduler.priority", s.priority)?,
        exit_code: validate::in_range("scheduler.exit_code", s.exit_code, 0, 255, "")?,
        state_reason: name("scheduler.state_reason", s.state_reason)?,
        time_limit_minutes: validate::count("scheduler.time_limit_minutes", s.time_limit_minutes)?,
        extra: s.extra,
        sluid: name("scheduler.sluid", s.sluid)?,
    })
}

pub async fn get(id: String, who: Identity, state: AppState) -> Response {
    super::error::respond(get_inner(id, who, state).await)
}

async fn get_inner(id: String, who: Identity, state: AppState) -> Handled {
    let state = state.for_reads();
    let id = job_id(&id)?;
    let job = visible_job(&who, &id, users_see_all(&state), &state).await?;
    // The whole job's figures and each node's (see `domain::figures`).
    let stored = state.store.node_figures(&id).await?;
    let newest = match stored {
        Some(_) => None,
        None => {
            let query = crate::store::SampleQuery {
                start: None,
                end: None,
                limit: 1,
            };
            let newest = state
                .store
                .list_samples(&id, &query)
                .await?
                .0
                .into_iter()
                .next();
            match newest {
                Some(sample) => Some(sample),
                // Its samples expired: the newest one, archived then (`store::rollups`).
                None => state.store.archived_newest_sample(&id).await?,
            }
        }
    };
    let figures = crate::domain::figures::of_job(&job, stored, newest.as_ref());
    let mut body = crate::domain::figures::with_figures(&job, &figures);
    let reason = state
        .store
        .log_unavailable_of(std::slice::from_ref(&id))
        .await?
        .remove(&id);
    with_log_unavailable(&mut body, reason);
    Ok(json(&body).into_response())
}

/// A job's `log_unavailable`: why the agent could not read its output (e.g. "not owned by
/// the job's user"), `null` when it could or has not tried; `GET /v1/jobs/{id}/log` says it
/// per stream.
fn with_log_unavailable(job: &mut serde_json::Value, reason: Option<String>) {
    if let Some(map) = job.as_object_mut() {
        map.insert("log_unavailable".into(), serde_json::Value::from(reason));
    }
}

#[derive(Deserialize)]
pub struct PatchJob {
    state: Option<String>,
    cpu_usage: Option<f64>,
    memory_usage_mb: Option<f64>,
    gpu_usage: Option<f64>,
}

pub async fn patch(
    id: String,
    who: Identity,
    headers: AuditHeaders,
    body: PatchJob,
    state: AppState,
) -> Response {
    let audit = headers.by(&who).for_job(&state.store, &id).await;
    audited(audit, |audit| patch_inner(id, audit, body, state)).await
}

async fn patch_inner(id: String, audit: AuditContext, body: PatchJob, state: AppState) -> Handled {
    let id = job_id(&id)?;
    let patch = JobPatch {
        state: body
            .state
            .map(|s| {
                s.parse::<JobState>()
                    .map_err(|_| ApiError::Validation("Invalid job state".into()))
            })
            .transpose()?,
        cpu_usage: body
            .cpu_usage
            .map(|v| validate::percent(v, "CPU usage must be between 0 and 100"))
            .transpose()?,
        memory_usage_mb: body
            .memory_usage_mb
            .map(|v| validate::megabytes(v, "Memory usage must be non-negative"))
            .transpose()?,
        gpu_usage: body
            .gpu_usage
            .map(|v| validate::percent(v, "GPU usage must be between 0 and 100"))
            .transpose()?,
    };
    Ok(json(&state.store.update_job(&id, &patch, &audit).await?).into_response())
}

pub async fn delete(id: String, who: Identity, headers: AuditHeaders, state: AppState) -> Response {
    let audit = headers.by(&who).for_job(&state.store, &id).await;
    audited(audit, |audit| delete_inner(id, audit, state)).await
}

async fn delete_inner(id: String, audit: AuditContext, state: AppState) -> Handled {
    let id = job_id(&id)?;
    state.store.delete_job(&id, &audit).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize)]
pub(super) struct SampleList {
    pub job_id: String,
    pub samples: Vec<MetricSample>,
    pub total: i64,
    /// Only with `resolution=auto`, when it picked the raw samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<&'static str>,
}

pub async fn list_samples(
    id: String,
    who: Identity,
    params: HashMap<String, String>,
    state: AppState,
) -> Response {
    super::error::respond(list_samples_inner(id, who, params, state).await)
}

async fn list_samples_inner(
    id: String,
    who: Identity,
    params: HashMap<String, String>,
    state: AppState,
) -> Handled {
    let state = state.for_reads();
    let id = job_id(&id)?;
    if who.user().is_some() {
        visible_job(&who, &id, false, &state).await?;
    }
    let query = SampleQuery {
        start: time_param(&params, "start_time")?,
        end: time_param(&params, "end_time")?,
        limit: int_param(&params, "limit", 1000, 1, 10_000)?,
    };
    if let (Some(start), Some(end)) = (query.start, query.end) {
        if start > end {
            return Err(ApiError::Validation(
                "start_time must not be after end_time".into(),
            ));
        }
    }
    let resolution = super::rollups::resolution_param(&params)?;
    if resolution != Resolution::Raw {
        return super::rollups::answer(&state, id, &query, resolution).await;
    }
    let (samples, total) = state.store.list_samples(&id, &query).await?;
    Ok(json(&SampleList {
        job_id: id,
        samples,
        total,
        resolution: None,
    })
    .into_response())
}

#[derive(Deserialize)]
pub struct RecordSample {
    cpu_usage: Option<f64>,
    memory_usage_mb: Option<f64>,
    gpu_usage: Option<f64>,
    timestamp: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn add_sample(
    id: String,
    headers: AuditHeaders,
    body: RecordSample,
    state: AppState,
) -> Response {
    let audit = headers.for_job(&state.store, &id).await;
    audited(audit, |audit| add_sample_inner(id, audit, body, state)).await
}

/// Stores the sample and counts it as ingested or rejected (`/metrics`).
async fn add_sample_inner(
    id: String,
    // Samples write no audit row; the context only carries the correlation id to the response.
    _audit: AuditContext,
    body: RecordSample,
    state: AppState,
) -> Handled {
    let metrics = state.metrics.clone();
    let result = store_sample(id, body, state).await;
    match &result {
        Ok(_) => metrics.samples_ingested(1),
        Err(ApiError::Validation(_) | ApiError::InvalidRequest(_)) => {
            metrics.samples_rejected("invalid", 1)
        }
        Err(ApiError::NotFound(_)) => metrics.samples_rejected("unknown_job", 1),
        Err(ApiError::Conflict(_)) => metrics.samples_rejected("finished_job", 1),
        Err(_) => {}
    }
    result
}

async fn store_sample(id: String, body: RecordSample, state: AppState) -> Handled {
    let id = job_id(&id)?;
    let cpu = body
        .cpu_usage
        .ok_or_else(|| ApiError::Validation("cpu_usage is required".into()))?;
    let memory = body
        .memory_usage_mb
        .ok_or_else(|| ApiError::Validation("memory_usage_mb is required".into()))?;
    let timestamp = validate::reported_time("timestamp", body.timestamp, now_micros())?;
    let sample = MetricSample {
        timestamp,
        cpu_usage: Some(validate::percent(
            cpu,
            "CPU usage must be between 0 and 100",
        )?),
        memory_usage_mb: Some(validate::megabytes(
            memory,
            "Memory usage must be non-negative",
        )?),
        gpu_usage: body
            .gpu_usage
            .map(|v| validate::percent(v, "GPU usage must be between 0 and 100"))
            .transpose()?,
        detail: Default::default(),
    };
    state.store.add_sample(&id, &sample).await?;
    Ok(with_status(json(&sample), StatusCode::CREATED).into_response())
}

#[derive(Serialize)]
struct AuditTrail {
    job_id: String,
    events: Vec<AuditEvent>,
}

pub async fn audit_trail(id: String, who: Identity, state: AppState) -> Response {
    super::error::respond(audit_trail_inner(id, who, state).await)
}

async fn audit_trail_inner(id: String, who: Identity, state: AppState) -> Handled {
    let state = state.for_reads();
    let id = job_id(&id)?;
    if who.user().is_some() {
        visible_job(&who, &id, false, &state).await?;
    }
    let events = state.store.audit_trail(&id).await?;
    Ok(json(&AuditTrail { job_id: id, events }).into_response())
}
