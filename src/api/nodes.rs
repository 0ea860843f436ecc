//! The node resource: `GET /v1/nodes`, `GET /v1/nodes/{name}` and `GET /v1/nodes/{name}/jobs`
//! (the running jobs of a node, which node agents read to learn what to sample).

use super::error::ApiError;
use super::request::{int_param, path_name};
use super::AppState;
use crate::domain::validate;
use crate::domain::{Job, JobState, Node, NodeState};
use crate::store::JobFilter;
use serde::Serialize;
use std::collections::HashMap;
use warp::reply::{json, Reply, Response};

type Handled = Result<Response, ApiError>;

#[derive(Serialize)]
struct NodeList {
    nodes: Vec<Node>,
    total: usize,
}

#[derive(Serialize)]
struct NodeJobs {
    node: String,
    jobs: Vec<Job>,
    total: i64,
    limit: i64,
    offset: i64,
}

pub async fn list(params: HashMap<String, String>, state: AppState) -> Response {
    super::error::respond(list_inner(params, state).await)
}

async fn list_inner(params: HashMap<String, String>, state: AppState) -> Handled {
    let wanted_state = match params
        .get("state")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        Some(s) => Some(s.parse::<NodeState>().map_err(|_| {
            ApiError::Validation(
                "state must be one of idle, allocated, mixed, down, drained, unknown".into(),
            )
        })?),
        None => None,
    };
    let partition =
        validate::optional_name("partition", params.get("partition").map(String::as_str))?;
    // Slurm node features, comma-separated: a node with any of them is listed.
    let features = validate::name_list(
        "features",
        &super::stream_filter::comma_list(&params, "features"),
        super::stream_filter::MAX_LIST,
    )?;
    // Nodes are few (a cluster's worth) and their state is derived at read time, so filtering
    // happens here rather than in SQL.
    let nodes: Vec<Node> = state
        .store
        .list_nodes()
        .await?
        .into_iter()
        .filter(|n| wanted_state.is_none_or(|s| n.state == s))
        .filter(|n| {
            partition
                .as_ref()
                .is_none_or(|p| n.partitions.iter().any(|q| q == p))
        })
        .filter(|n| features.is_empty() || features.iter().any(|f| n.features.contains(f)))
        .collect();
    Ok(json(&NodeList {
        total: nodes.len(),
        nodes,
    })
    .into_response())
}

pub async fn get(name: String, state: AppState) -> Response {
    super::error::respond(get_inner(name, state).await)
}

async fn get_inner(name: String, state: AppState) -> Handled {
    let name = path_name("Node name", &name)?;
    match state.store.get_node(&name).await? {
        Some(node) => Ok(json(&node).into_response()),
        None => Err(ApiError::NotFound(format!("Node {name} not found"))),
    }
}

pub async fn jobs(name: String, params: HashMap<String, String>, state: AppState) -> Response {
    super::error::respond(jobs_inner(name, params, state).await)
}

/// Running jobs whose node list names this node. An unknown node is not an error: an agent asks
/// before its first report has created the node.
async fn jobs_inner(name: String, params: HashMap<String, String>, state: AppState) -> Handled {
    let state = state.for_reads();
    let name = path_name("Node name", &name)?;
    let filter = JobFilter {
        state: Some(JobState::Running),
        user: None,
        node: Some(name.clone()),
        limit: int_param(&params, "limit", 1000, 1, 10_000)?,
        offset: int_param(&params, "offset", 0, 0, i64::MAX)?,
        ..JobFilter::default()
    };
    let (jobs, total) = state.store.list_jobs(&filter).await?;
    Ok(json(&NodeJobs {
        node: name,
        jobs,
        total,
        limit: filter.limit,
        offset: filter.offset,
    })
    .into_response())
}
