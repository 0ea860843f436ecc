//! Efficiency reports: `GET /v1/jobs/{id}/report` (one job's verdict; provisional while it
//! runs) and `GET /v1/reports?user=&since=&sort=waste&limit=` (one line per job, worst first,
//! with the totals allocated but unused). The computation is `domain::report`; what it reads,
//! `store::reports`. A user sees only their own jobs' reports (a report is made of samples,
//! which `--users-see-all-jobs` never opens): another user's job is a missing job, and the
//! list is theirs whatever `user` they ask for.

use super::auth::{identify, Role, Tokens};
use super::error::ApiError;
use super::identity::Identity;
use super::request::{int_param, job_id, query_map};
use super::{with_state, AppState};
use crate::domain::report::{
    compute, parse_since, ListTotals, Report, ReportLine, ReportList, Thresholds,
};
use crate::domain::{now_micros, validate};
use crate::store::ReportFilter;
use std::collections::HashMap;
use warp::filters::BoxedFilter;
use warp::reply::{json, Reply, Response};
use warp::Filter;

type Handled = Result<Response, ApiError>;

const READ: &[Role] = &[Role::Reader];

/// Both routes, boxed (see the warp note in RULES: nested filter types type-check slowly).
pub fn routes(state: AppState, tokens: Option<Tokens>) -> BoxedFilter<(Response,)> {
    let one = warp::path!("v1" / "jobs" / String / "report")
        .and(warp::get())
        .and(identify(tokens.clone(), READ))
        .and(with_state(state.clone()))
        .then(get)
        .boxed();
    let list = warp::path!("v1" / "reports")
        .and(warp::get())
        .and(identify(tokens, READ))
        .and(query_map())
        .and(with_state(state))
        .then(list)
        .boxed();
    one.or(list).unify().boxed()
}

/// The report of one job, now.
pub async fn report_of(state: &AppState, id: &str) -> Result<Report, ApiError> {
    let t = Thresholds::site();
    let job = state.store.get_job(id).await?;
    let (nodes, devices) = state.store.report_inputs(&job, t).await?;
    Ok(compute(&job, &nodes, &devices, now_micros(), t))
}

async fn get(id: String, who: Identity, state: AppState) -> Response {
    super::error::respond(get_inner(id, who, state).await)
}

async fn get_inner(id: String, who: Identity, state: AppState) -> Handled {
    let state = state.for_reads();
    let id = job_id(&id)?;
    super::jobs::visible_job(&who, &id, false, &state).await?;
    Ok(json(&report_of(&state, &id).await?).into_response())
}

async fn list(who: Identity, params: HashMap<String, String>, state: AppState) -> Response {
    super::error::respond(list_inner(who, params, state).await)
}

async fn list_inner(who: Identity, params: HashMap<String, String>, state: AppState) -> Handled {
    let state = state.for_reads();
    let t = Thresholds::site();
    let now = now_micros();
    let since = match params.get("since") {
        Some(raw) => parse_since(raw, now).map_err(ApiError::Validation)?,
        None => now - chrono::Duration::days(7),
    };
    let sort = params.get("sort").map(|s| s.trim()).unwrap_or("waste");
    if !matches!(sort, "waste" | "start") {
        return Err(ApiError::Validation(
            "sort must be waste or start".to_owned(),
        ));
    }
    let mut user = validate::optional_name("user", params.get("user").map(String::as_str))?;
    let mut nobody = false;
    if let Some(me) = who.user() {
        // Someone else's jobs: an empty list, as GET /v1/jobs answers.
        nobody = user.as_deref().is_some_and(|u| u != me);
        user = Some(me.to_owned());
    }
    let filter = ReportFilter {
        user,
        since,
        limit: int_param(&params, "limit", 200, 1, 2000)?,
    };
    let jobs = if nobody {
        Vec::new()
    } else {
        state.store.report_jobs(&filter).await?
    };
    let mut lines = Vec::with_capacity(jobs.len());
    for job in &jobs {
        // GPU use comes from the job's own mean here: reading every job's GPU lists would
        // make a list cost as much as all its reports.
        let nodes = state.store.report_node_summaries(job).await?;
        lines.push(ReportLine::of(&compute(job, &nodes, &[], now, t)));
    }
    if sort == "waste" {
        lines.sort_by(|a, b| b.waste(t).total_cmp(&a.waste(t)));
    }
    let totals = ListTotals::of(&lines);
    Ok(json(&ReportList {
        since,
        user: filter.user,
        sort: sort.to_owned(),
        jobs: lines,
        totals,
    })
    .into_response())
}
