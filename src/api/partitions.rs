//! The partition resource: `GET /v1/partitions` and `GET /v1/partitions/{name}`, Slurm's queues
//! as the Slurm backend last read them (none without `--scheduler slurm`).

use super::error::ApiError;
use super::AppState;
use crate::domain::{Partition, PartitionState};
use serde::Serialize;
use std::collections::HashMap;
use warp::reply::{json, Reply, Response};

type Handled = Result<Response, ApiError>;

#[derive(Serialize)]
struct PartitionList {
    partitions: Vec<Partition>,
    total: usize,
}

/// A partition state from a query parameter (any case, as Slurm users write `UP`).
pub(super) fn parse_state(raw: &str) -> Result<PartitionState, ApiError> {
    let known: Vec<&str> = PartitionState::ALL.iter().map(|s| s.as_str()).collect();
    super::request::state_param(raw, "partition", &known)
}

pub async fn list(params: HashMap<String, String>, state: AppState) -> Response {
    super::error::respond(list_inner(params, state).await)
}

async fn list_inner(params: HashMap<String, String>, state: AppState) -> Handled {
    let wanted = params
        .get("state")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(parse_state)
        .transpose()?;
    let partitions: Vec<Partition> = state
        .store
        .list_partitions()
        .await?
        .into_iter()
        .filter(|p| wanted.is_none_or(|s| p.state == s))
        .collect();
    Ok(json(&PartitionList {
        total: partitions.len(),
        partitions,
    })
    .into_response())
}

pub async fn get(name: String, state: AppState) -> Response {
    super::error::respond(get_inner(name, state).await)
}

async fn get_inner(name: String, state: AppState) -> Handled {
    let name = super::request::path_name("Partition name", &name)?;
    match state.store.get_partition(&name).await? {
        Some(p) => Ok(json(&p).into_response()),
        None => Err(ApiError::NotFound(format!("Partition {name} not found"))),
    }
}
